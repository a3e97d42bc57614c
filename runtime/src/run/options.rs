//! What a `steward run` is asked to do besides the config file (the command line's flags, as
//! plain data), and the async runtime it runs on. Both the one-cluster start-up (start.rs) and
//! the fleet driver (fleet.rs) read them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// The file (in the state directory) of the commands both loops ran, with their reasons.
/// `decisions.jsonl` beside it holds the policies' decisions.
pub const ACTIONS_FILE: &str = "actions.jsonl";

/// The options of one `steward run` (the binary's `--config`, `--dry-run`, `--for`,
/// `--decision-log`, `--quiet`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The TOML config file (relative paths inside it are relative to its folder).
    pub config: PathBuf,
    /// Observe and decide, print every command with its reason, execute nothing.
    pub dry_run: bool,
    /// Stop by itself after this long (simulated time on the simulated platform).
    pub run_for: Option<Duration>,
    /// Also write the commands and their reasons (JSON lines) here; default:
    /// `<state_dir>/actions.jsonl` when not a dry run, nowhere in a dry run.
    pub decision_log: Option<PathBuf>,
    /// Do not print readable decisions on stdout.
    pub quiet: bool,
}

/// The runtime of a `run`: paused, auto-advancing time for a simulation (tokio advances it
/// whenever every task waits, so simulated hours pass as fast as the CPU allows), real time
/// otherwise. A simulation with a lease runs in real time too: etcd's leases expire in real
/// time, and paused time would jump past every TTL (and spin the election's retry waits) while
/// the runtime waits for etcd's answers. The fleet driver (fleet.rs) uses the same rule.
pub(super) fn runtime(paused: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    if paused {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")
}
