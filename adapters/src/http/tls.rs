//! TLS and HTTP client settings shared by the Patroni and Prometheus clients.
//!
//! What it is: the raw `[*.tls]` config (CA file, client certificate and key), its validation
//! (the PEM files are read and parsed once, so a bad file is a config error with its field path,
//! not a failure at the first request), and the one function that builds a `reqwest::Client`
//! with timeouts. What it is not: a certificate store or a reloader; files are read at startup.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::ConfigErrors;

/// `[patroni.tls]` / `[prometheus.tls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the server's certificate (added to the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, for servers that require mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (required with `cert_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// Validated TLS material: parsed once, so building a client cannot fail on it later.
#[derive(Clone, Default)]
pub struct TlsSettings {
    pub(crate) ca: Vec<reqwest::Certificate>,
    pub(crate) identity: Option<reqwest::Identity>,
}

impl std::fmt::Debug for TlsSettings {
    // The identity holds a private key: say whether it is there, never what it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_certificates", &self.ca.len())
            .field("client_identity", &self.identity.is_some())
            .finish()
    }
}

impl TlsConfig {
    /// Reads and parses the files, recording problems under `path` (e.g. `patroni.tls`).
    pub fn validate_into(&self, path: &str, errors: &mut ConfigErrors) -> TlsSettings {
        let mut out = TlsSettings::default();
        if let Some(ca) = &self.ca_file {
            match std::fs::read(ca) {
                // `from_pem` defers parsing to the handshake; the bundle parser checks now.
                Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
                    Ok(certs) if !certs.is_empty() => out.ca = certs,
                    _ => errors.push(
                        format!("{path}.ca_file"),
                        format!("`{}` is not a PEM certificate", ca.display()),
                    ),
                },
                Err(e) => errors.push(
                    format!("{path}.ca_file"),
                    format!("cannot read `{}`: {e}", ca.display()),
                ),
            }
        }
        match (&self.cert_file, &self.key_file) {
            (None, None) => {}
            (Some(_), None) => errors.push(format!("{path}.key_file"), "required with `cert_file`"),
            (None, Some(_)) => errors.push(format!("{path}.cert_file"), "required with `key_file`"),
            (Some(cert), Some(key)) => {
                let read =
                    |p: &PathBuf, field: &str, errors: &mut ConfigErrors| match std::fs::read(p) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            errors.push(
                                format!("{path}.{field}"),
                                format!("cannot read `{}`: {e}", p.display()),
                            );
                            None
                        }
                    };
                if let (Some(mut pem), Some(key_pem)) = (
                    read(cert, "cert_file", errors),
                    read(key, "key_file", errors),
                ) {
                    pem.push(b'\n');
                    pem.extend_from_slice(&key_pem);
                    match reqwest::Identity::from_pem(&pem) {
                        Ok(id) => out.identity = Some(id),
                        // The parser's message may quote the key material: keep it out.
                        Err(_) => errors.push(
                            format!("{path}.cert_file"),
                            "the certificate and key do not form a PEM identity (certificate + private key)",
                        ),
                    }
                }
            }
        }
        out
    }
}

/// Builds an HTTP client with a total and a connect timeout. Every client needs both: a paused
/// container still accepts TCP connections (the kernel's backlog) and never answers.
pub(crate) fn build_client(
    timeout: Duration,
    connect_timeout: Duration,
    tls: &TlsSettings,
    headers: reqwest::header::HeaderMap,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .default_headers(headers)
        // Proxies from the environment would route loopback traffic away; Steward talks to
        // members directly.
        .no_proxy();
    for ca in &tls.ca {
        builder = builder.add_root_certificate(ca.clone());
    }
    if let Some(id) = &tls.identity {
        builder = builder.identity(id.clone());
    }
    builder.build()
}
