//! Steward's runtime: everything `steward run` is, between the command line and the cores.
//!
//! - [`run`]: the drivers of both loops around their sans-IO cores (`steward_scaler::Scaler`,
//!   `steward_repairer::Repairer`), the executor of their commands through the ports, the
//!   observer, the journal port, the decision log, the balancer sync, the etcd-lease wrapper,
//!   fleets, the simulated world, and the start-up that builds the ports from the config
//!   ([`run::start::execute`]).
//! - [`config`]: the TOML config file, raw and validated (the runtime's one input).
//! - [`journal`]: operations written durably before they start.
//! - [`observe`]: how sources' answers become one `Observation` (shared with `steward observe`).
//! - [`server`]: the HTTP surface (`/healthz`, `/metrics`, `/status`, `/sd`, pause/resume).
//! - [`telemetry`]: typed events that log and count.
//!
//! What it is not: a decision maker (policies and the cores decide), an adapter (the ports'
//! implementations live in `steward-adapters`), or the command line (the `steward` package's
//! `src/` parses flags and calls [`run::start::execute`]). Start reading at `run.rs`.

pub mod config;
pub mod journal;
pub mod observe;
pub mod run;
pub mod server;
pub mod telemetry;
