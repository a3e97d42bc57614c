//! The `steward` binary's library: command implementations the thin `main` calls.
//!
//! - [`config`]: the TOML config file, raw and validated.
//! - [`evaluate`]: `steward evaluate`, the dry run of the policies over recorded history.
//! - [`observe`]: `steward observe`, one live pass over the sources.
//! - [`run`]: `steward run`, the two loops (repair and scale) and their drivers.

pub mod config;
pub mod evaluate;
pub mod journal;
pub mod observe;
pub mod run;
pub mod server;
pub mod telemetry;
