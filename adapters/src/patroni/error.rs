//! Errors of the Patroni client, each with the class a loop acts on.
//!
//! One variant per failure site; messages are lowercase and carry no cause text (the cause is
//! in `#[source]`). URLs in messages never carry credentials: config validation refuses
//! `user:pass@` in URLs, and the basic-auth password lives in a [`super::Secret`].

use serde::Serialize;

/// What a caller can do about a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Try again later: timeouts, refused connections, 5xx, a torn body.
    Transient,
    /// The endpoint or member does not exist (404).
    NotFound,
    /// The state does not allow it now (409, 412: e.g. a switchover candidate that is not
    /// healthy, a leader name that is no longer the leader). Re-read, then decide again.
    Conflict,
    /// Credentials missing or refused (401, 403). Retrying will not help; fix the config.
    Auth,
    /// Will not succeed by retrying (400, a body that is not Patroni's JSON, too large).
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Auth => "auth",
            ErrorClass::Permanent => "permanent",
        }
    }

    /// The class of an HTTP status that is an error for the request made.
    pub fn of_status(status: u16) -> ErrorClass {
        match status {
            401 | 403 => ErrorClass::Auth,
            404 => ErrorClass::NotFound,
            409 | 412 => ErrorClass::Conflict,
            408 | 429 => ErrorClass::Transient,
            500..=599 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call to Patroni's REST API.
#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    #[error("building the http client failed")]
    Build(#[source] reqwest::Error),

    #[error("{method} {url} timed out")]
    Timeout {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{method} {url} could not be sent")]
    Send {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// Patroni answered with a status that is an error for this request. `body` is the start
    /// of Patroni's own answer (its messages say why: "candidate name does not match ...").
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },

    #[error("reading the body of {method} {url} failed")]
    Body {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("the body of {method} {url} is larger than {limit} bytes")]
    TooLarge {
        method: &'static str,
        url: String,
        limit: u64,
    },

    #[error("the body of {method} {url} is not the expected json")]
    Malformed {
        method: &'static str,
        url: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("the metrics text of {url} could not be read")]
    MetricsText {
        url: String,
        #[source]
        source: std::io::Error,
    },

    #[error("no patroni url is configured")]
    NoUrl,

    /// Every given URL failed; the last failure is the source.
    #[error("none of the {tried} patroni urls answered")]
    NoneAnswered {
        tried: usize,
        #[source]
        last: Box<PatroniError>,
    },
}

impl PatroniError {
    /// The class a loop uses to choose between backoff and giving up.
    pub fn class(&self) -> ErrorClass {
        match self {
            PatroniError::Build(_) | PatroniError::NoUrl => ErrorClass::Permanent,
            PatroniError::Timeout { .. }
            | PatroniError::Send { .. }
            | PatroniError::Body { .. } => ErrorClass::Transient,
            PatroniError::Status { status, .. } => ErrorClass::of_status(*status),
            PatroniError::TooLarge { .. } | PatroniError::MetricsText { .. } => {
                ErrorClass::Permanent
            }
            // A body that ends early was torn (a restart mid-answer); garbage is garbage.
            PatroniError::Malformed { source, .. } if source.is_eof() => ErrorClass::Transient,
            PatroniError::Malformed { .. } => ErrorClass::Permanent,
            PatroniError::NoneAnswered { last, .. } => last.class(),
        }
    }
}
