//! A list of problems with a path each: config validation reports every error at once.

use std::fmt;

/// One problem: where (a dotted field path such as `policy.database.cpu`) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found while validating; empty means valid.
///
/// ```
/// use steward_model::ConfigErrors;
/// let mut errors = ConfigErrors::default();
/// errors.push("policy.database.cpu", "low (0.8) must be below high (0.7)");
/// assert_eq!(errors.to_string(), "policy.database.cpu: low (0.8) must be below high (0.7)");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigErrors {
    errors: Vec<FieldError>,
}

impl ConfigErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Adds every error of `other`, prefixing its paths with `prefix.`.
    pub fn extend_under(&mut self, prefix: &str, other: ConfigErrors) {
        for e in other.errors {
            let path = if e.path.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{}", e.path)
            };
            self.errors.push(FieldError {
                path,
                message: e.message,
            });
        }
    }

    /// `d`, checked to be more than zero and at most `max` (issue 16: every value from outside
    /// has a bound the program can honour; arithmetic on it then cannot overflow).
    pub fn positive_at_most(
        &mut self,
        path: &str,
        d: std::time::Duration,
        max: std::time::Duration,
    ) -> std::time::Duration {
        if d.is_zero() {
            self.push(path, "must be more than zero");
        } else if d > max {
            self.push(path, format!("at most {}", short_duration(max)));
        }
        d
    }

    /// These errors but those at `prefix` or under it (`urls` drops `urls` and `urls[0]`): for
    /// a section whose field another section checks and reports.
    pub fn without_path_prefix(mut self, prefix: &str) -> ConfigErrors {
        self.errors.retain(|e| {
            let under = e.path.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            });
            !under
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.errors.iter()
    }

    /// `Ok(value)` when no error was collected, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// `300s` as `5m`, `86400s` as `24h`: the largest unit that divides it.
pub fn short_duration(d: std::time::Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if nanos != 0 {
        return format!("{}ms", d.as_millis());
    }
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_under_a_path_prefix_are_dropped_and_no_others() {
        let mut errors = ConfigErrors::default();
        for path in ["urls", "urls[1]", "urls.x", "urlsx", "timeout"] {
            errors.push(path, "bad");
        }
        let kept: Vec<String> = errors
            .without_path_prefix("urls")
            .iter()
            .map(|e| e.path.clone())
            .collect();
        assert_eq!(kept, ["urlsx", "timeout"]);
    }

    #[test]
    fn extend_under_prefixes_paths() {
        let mut inner = ConfigErrors::default();
        inner.push("cpu", "bad");
        inner.push("", "whole section bad");
        let mut outer = ConfigErrors::default();
        outer.extend_under("policy.database", inner);
        let lines: Vec<String> = outer.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            lines,
            [
                "policy.database.cpu: bad",
                "policy.database: whole section bad"
            ]
        );
        assert!(outer.into_result(()).is_err());
    }
}
