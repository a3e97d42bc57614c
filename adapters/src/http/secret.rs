//! Secrets (passwords, bearer tokens) and where they are read from.
//!
//! A [`Secret`] never prints itself: its `Debug` is redacted and it has no `Display`, so a
//! `{:?}` of a config, a client or an error cannot leak it (DESIGN.md promise 9). It is not a
//! vault: the value sits in memory in clear, and [`Secret::expose`] is the one way out.

use std::fmt;
use std::path::Path;

use steward_model::ConfigErrors;

/// A value that must never be logged. `Debug` prints `Secret(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear value, for the one place that must send it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads a secret from a file or an environment variable (exactly one of them), recording
/// problems under `path` (e.g. `patroni.password`). Inline secrets are deliberately not
/// offered: config files get committed and pasted into tickets.
///
/// `env` looks a variable up; the binary passes `std::env::var`, tests pass a map.
pub(crate) fn resolve_secret(
    path: &str,
    file: Option<&Path>,
    env_var: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut ConfigErrors,
) -> Option<Secret> {
    let value = match (file, env_var) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            errors.push(path, "give either a `_file` or an `_env`, not both");
            return None;
        }
        (Some(file), None) => match std::fs::read_to_string(file) {
            // A trailing newline is an artefact of `echo pw > file`, never part of a password.
            Ok(text) => text.trim_end_matches(['\n', '\r']).to_string(),
            Err(e) => {
                errors.push(
                    format!("{path}_file"),
                    format!("cannot read `{}`: {e}", file.display()),
                );
                return None;
            }
        },
        (None, Some(var)) => match env(var) {
            Some(v) => v,
            None => {
                errors.push(
                    format!("{path}_env"),
                    format!("environment variable `{var}` is not set"),
                );
                return None;
            }
        },
    };
    if value.is_empty() {
        errors.push(path, "the secret is empty");
        return None;
    }
    Some(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn env_and_file_are_exclusive_and_missing_env_is_reported() {
        let env = |name: &str| (name == "PW").then(|| "pw\n".to_string());
        let mut errors = ConfigErrors::default();
        let got = resolve_secret("x.password", None, Some("PW"), &env, &mut errors);
        // Only files are trimmed: an env var is taken as is.
        assert_eq!(
            got.map(|s| s.expose().to_string()),
            Some("pw\n".to_string())
        );
        assert!(resolve_secret("x.password", None, Some("NOPE"), &env, &mut errors).is_none());
        let both = resolve_secret(
            "x.password",
            Some(Path::new("/nonexistent")),
            Some("PW"),
            &env,
            &mut errors,
        );
        assert!(both.is_none());
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("x.password_env: "), "{lines:?}");
        assert!(lines[1].starts_with("x.password: "), "{lines:?}");
    }
}
