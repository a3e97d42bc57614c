//! The HTTP plumbing every HTTP source shares (Patroni, Prometheus; etcd's secrets too): one
//! client builder with the connect and request timeouts and the TLS settings ([`TlsConfig`] ->
//! [`TlsSettings`], [`build_client`]), base-URL checking that refuses credentials in a URL
//! ([`check_url`]), answer bodies read with a size limit ([`read_limited`]), and secrets read
//! from files or the environment that never print themselves ([`Secret`], DESIGN.md promise 9).
//!
//! What it is not: a client of any one service. Retries and error classes belong to
//! each client (Patroni's `client.rs`, `prometheus.rs`), which build on this.

mod body;
mod secret;
mod tls;

pub(crate) use body::{read_limited, snippet, BodyError};

pub(crate) use secret::resolve_secret;
pub use secret::Secret;
pub(crate) use tls::build_client;
pub use tls::{TlsConfig, TlsSettings};

/// Checks a base URL (`http(s)://host[:port][/prefix]`) and returns it without a trailing `/`.
/// Credentials in the URL are refused: they would end up in logs and error messages.
pub(crate) fn check_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("`{}` is not a URL: {e}", redact_userinfo(text)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if url.host_str().is_none() {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo the URL: it holds the credentials.
        return Err(
            "credentials in the URL are not allowed; use username and password_file".into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL takes no query or fragment".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `text` with whatever stands between `://` and the last `@` of its authority replaced by
/// `***`: a URL that fails to parse may still carry `user:password@` (issue 16).
pub fn redact_userinfo(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***@{}{tail}", &authority[at + 1..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    /// A URL with credentials that does not parse (the port is out of range) used to be printed
    /// whole in the error, password included.
    #[test]
    fn a_bad_url_is_never_echoed_with_its_credentials() {
        let e = check_url("http://admin:hunter2@127.0.0.1:99999/x").unwrap_err();
        assert!(!e.contains("hunter2") && !e.contains("admin"), "{e}");
        assert!(e.contains("http://***@127.0.0.1:99999/x"), "{e}");
        assert_eq!(
            redact_userinfo("http://a:b@c@h:1/p?q"),
            "http://***@h:1/p?q"
        );
        assert_eq!(redact_userinfo("http://h:1/p@x"), "http://h:1/p@x");
        assert_eq!(redact_userinfo("not a url"), "not a url");
    }
}
