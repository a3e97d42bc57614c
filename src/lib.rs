//! The `steward` binary's library: the commands the thin `main` calls.
//!
//! - [`evaluate`]: `steward evaluate`, the dry run of the policies over recorded history.
//! - [`observe`]: `steward observe`, one live pass over the sources.
//! - [`run`]: `steward run`'s flags; what it runs is the `steward-runtime` crate.
//!
//! `steward check-config` is `main.rs` over `steward_runtime::config`.

pub mod evaluate;
pub mod observe;
pub mod run;

/// A combination of flags or arguments a command refuses after clap parsed them (e.g. a flag
/// that needs another): the binary exits 2, like clap's own usage errors. Return it through
/// `anyhow` (`Err(UsageError(..).into())`); its text is the whole message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
