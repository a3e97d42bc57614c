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
