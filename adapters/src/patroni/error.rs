//! Errors of the Patroni client, each with the class a loop acts on.
//!
//! One variant per failure site; messages are lowercase and carry no cause text (the cause is
//! in `#[source]`). URLs in messages never carry credentials: config validation refuses
//! `user:pass@` in URLs, and the basic-auth password lives in a [`super::Secret`].

use steward_model::ports::ErrorKind;

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
    pub fn class(&self) -> ErrorKind {
        match self {
            PatroniError::Build(_) | PatroniError::NoUrl => ErrorKind::Permanent,
            PatroniError::Timeout { .. }
            | PatroniError::Send { .. }
            | PatroniError::Body { .. } => ErrorKind::Transient,
            PatroniError::Status { status, .. } => ErrorKind::of_http_status(*status),
            PatroniError::TooLarge { .. } | PatroniError::MetricsText { .. } => {
                ErrorKind::Permanent
            }
            // A body that ends early was torn (a restart mid-answer); garbage is garbage.
            PatroniError::Malformed { source, .. } if source.is_eof() => ErrorKind::Transient,
            PatroniError::Malformed { .. } => ErrorKind::Permanent,
            PatroniError::NoneAnswered { last, .. } => last.class(),
        }
    }
}
