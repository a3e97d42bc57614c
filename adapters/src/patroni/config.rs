//! The `[patroni]` config section: raw (serde) and validated.
//!
//! Stage one is [`PatroniConfig`], exactly what the TOML says, every field documented, unknown
//! fields refused. Stage two is [`PatroniSettings`], produced by [`PatroniConfig::validate`]
//! after every problem has been collected with its field path; it cannot hold an invalid value
//! (no empty URL list, no zero timeout, a password only with a username).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::ConfigErrors;

use crate::http::{check_url, resolve_secret, Secret, TlsConfig, TlsSettings};

/// Patroni's REST API answers in milliseconds; 5 s tolerates a busy member, and a paused one
/// (which accepts the connection and never answers) costs at most this per request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting over loopback or a LAN takes well under a second; a refused or black-holed
/// address should fail fast so the next URL is tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// GETs are retried twice (three tries): enough to ride over a member's REST restart, short
/// enough to stay inside Patroni's `loop_wait` of 10 s.
pub const DEFAULT_RETRIES: u32 = 2;
/// First backoff; each retry doubles it, with jitter.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The largest body read. Patroni's answers are a few KiB (`/metrics` about 6 KiB for one
/// member); 4 MiB is far above any real answer and far below harm.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// `[patroni]`: how to reach Patroni's REST API. Serializes with every default filled in (the
/// effective config `steward check-config` prints).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatroniConfig {
    /// REST API base URLs of one or more members (`http://127.0.0.11:8008`). Any member's
    /// `/cluster` lists them all; the URLs are tried in order until one answers.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Basic-auth user (Patroni's `restapi.authentication.username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Total time for one request, body included. Default [`DEFAULT_TIMEOUT`].
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time to establish a connection. Default [`DEFAULT_CONNECT_TIMEOUT`].
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of a failed GET (actions are never retried). Default [`DEFAULT_RETRIES`].
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay, doubled per retry, jittered. Default [`DEFAULT_RETRY_DELAY`].
    #[serde(default = "default_retry_delay", with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Bodies larger than this are refused. Default [`DEFAULT_MAX_BODY_BYTES`].
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// TLS: CA and client certificate, for `https://` URLs.
    #[serde(default)]
    pub tls: TlsConfig,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
fn default_retry_delay() -> Duration {
    DEFAULT_RETRY_DELAY
}
fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

impl Default for PatroniConfig {
    fn default() -> Self {
        PatroniConfig {
            urls: Vec::new(),
            username: None,
            password_file: None,
            password_env: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            retry_delay: DEFAULT_RETRY_DELAY,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tls: TlsConfig::default(),
        }
    }
}

/// Basic-auth credentials.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// A validated `[patroni]` section.
#[derive(Clone, Debug)]
pub struct PatroniSettings {
    /// At least one, each `http(s)://host[:port]` without credentials or query.
    pub urls: Vec<String>,
    pub auth: Option<BasicAuth>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_body_bytes: u64,
    pub tls: TlsSettings,
}

/// The members' REST URLs checked, errors at `urls` (none given) and `urls[i]`.
fn check_urls(urls: &[String], errors: &mut ConfigErrors) -> Vec<String> {
    if urls.is_empty() {
        errors.push(
            "urls",
            "give at least one member's REST API URL, e.g. http://127.0.0.11:8008",
        );
    }
    urls.iter()
        .enumerate()
        .filter_map(|(i, u)| match check_url(u) {
            Ok(u) => Some(u),
            Err(msg) => {
                errors.push(format!("urls[{i}]"), msg);
                None
            }
        })
        .collect()
}

impl PatroniSettings {
    /// These settings for other members' URLs (a fleet's cluster: its own URLs, the shared
    /// credentials and timeouts), the URLs checked as `validate` checks them, errors at `urls`
    /// and `urls[i]`. No secret is read again.
    pub fn for_urls(&self, urls: &[String]) -> Result<PatroniSettings, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let urls = check_urls(urls, &mut errors);
        errors.into_result(PatroniSettings {
            urls,
            ..self.clone()
        })
    }

    /// Settings with every default, for the given URLs (used by `steward observe --patroni`).
    pub fn with_urls(urls: Vec<String>) -> Result<PatroniSettings, ConfigErrors> {
        PatroniConfig {
            urls,
            ..PatroniConfig::default()
        }
        .validate()
    }
}

impl PatroniConfig {
    /// Validates, reading secrets from the process environment.
    pub fn validate(&self) -> Result<PatroniSettings, ConfigErrors> {
        self.validate_with_env(&|name| std::env::var(name).ok())
    }

    /// Validates with `env` as the environment (tests pass a map). Paths are relative to the
    /// section (`urls[1]`, `tls.ca_file`): the lead's top-level config prefixes `patroni.`.
    pub fn validate_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PatroniSettings, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let urls = check_urls(&self.urls, &mut errors);
        let password = resolve_secret(
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
            env,
            &mut errors,
        );
        let auth = match (&self.username, password) {
            (Some(u), Some(p)) if !u.is_empty() => Some(BasicAuth {
                username: u.clone(),
                password: p,
            }),
            (Some(_), Some(_)) => {
                errors.push("username", "must not be empty");
                None
            }
            (Some(_), None) if !errors.iter().any(|e| e.path.starts_with("password")) => {
                errors.push(
                    "password_file",
                    "a username needs a password (`password_file` or `password_env`)",
                );
                None
            }
            (None, Some(_)) => {
                errors.push("username", "a password needs a username");
                None
            }
            _ => None,
        };
        // Upper bounds (issue 16): Patroni answers in milliseconds; a longer wait only delays
        // noticing that a member is gone.
        const MAX_TIMEOUT: Duration = Duration::from_secs(300);
        let timeout = errors.positive_at_most("timeout", self.timeout, MAX_TIMEOUT);
        let connect_timeout =
            errors.positive_at_most("connect_timeout", self.connect_timeout, MAX_TIMEOUT);
        if self.retry_delay > Duration::from_secs(60) {
            errors.push("retry_delay", "at most 1m");
        }
        let retries = self.retries;
        if retries > 10 {
            errors.push(
                "retries",
                format!("{retries} is too many (at most 10): a loop must not stall on one source"),
            );
        }
        let max_body_bytes = self.max_body_bytes;
        if !(1024..=1 << 30).contains(&max_body_bytes) {
            errors.push(
                "max_body_bytes",
                "must be between 1024 and 1073741824 (1 GiB)",
            );
        }
        let tls = self.tls.validate_into("tls", &mut errors);
        let settings = PatroniSettings {
            urls,
            auth,
            timeout,
            connect_timeout,
            retries,
            retry_delay: self.retry_delay,
            max_body_bytes,
            tls,
        };
        errors.into_result(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_collected_with_its_path() {
        let raw: PatroniConfig = toml_like(
            r#"{"urls": ["http://127.0.0.11:8008", "ftp://x", "http://u:secretpw@127.0.0.12:8008"],
                "username": "steward", "password_env": "NOT_SET", "timeout": "0s", "retries": 50}"#,
        );
        let err = raw.validate_with_env(&|_| None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("urls[1]: scheme `ftp`"), "{text}");
        assert!(text.contains("urls[2]: credentials in the URL"), "{text}");
        assert!(!text.contains("secretpw"), "{text}");
        assert!(
            text.contains("password_env: environment variable `NOT_SET`"),
            "{text}"
        );
        assert!(text.contains("timeout: must be more than zero"), "{text}");
        assert!(text.contains("retries: 50 is too many"), "{text}");
        assert_eq!(err.len(), 5, "{text}");
    }

    #[test]
    fn defaults_apply_and_password_comes_from_env() {
        let raw: PatroniConfig = toml_like(
            r#"{"urls": ["http://127.0.0.11:8008/"], "username": "u", "password_env": "PW"}"#,
        );
        let s = raw
            .validate_with_env(&|n| (n == "PW").then(|| "pw".into()))
            .unwrap();
        assert_eq!(s.urls, ["http://127.0.0.11:8008"]);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.auth.as_ref().map(|a| a.password.expose()), Some("pw"));
        assert!(!format!("{s:?}").contains("\"pw\""));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<PatroniConfig>(r#"{"urls": [], "password": "inline"}"#)
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `password`"),
            "{err}"
        );
    }

    #[test]
    fn the_effective_config_shows_every_default() {
        let raw: PatroniConfig = toml_like(r#"{"urls": ["http://127.0.0.11:8008"], "retries": 1}"#);
        let effective = serde_json::to_value(&raw).unwrap();
        assert_eq!(
            effective,
            serde_json::json!({"urls": ["http://127.0.0.11:8008"], "timeout": "5s", "connect_timeout": "2s",
                "retries": 1, "retry_delay": "200ms", "max_body_bytes": 4194304, "tls": {}})
        );
        assert_eq!(
            serde_json::from_value::<PatroniConfig>(effective).unwrap(),
            raw
        );
    }

    fn toml_like(json: &str) -> PatroniConfig {
        serde_json::from_str(json).unwrap()
    }
}
