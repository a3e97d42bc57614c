//! `steward run`'s command line. Everything it starts is the runtime's
//! (`steward_runtime::run::start::execute`); this module only turns flags into [`RunOptions`].

use std::path::PathBuf;
use std::time::Duration;

use steward_runtime::run::options::RunOptions;

/// `steward run`
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The TOML config file; its `[platform]` section says where the members live.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,

    /// Observe and decide, print every command with its reason, execute nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Stop by itself after this long (simulated time on the simulated platform), e.g. `2m`.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub run_for: Option<Duration>,

    /// Also write the commands and their reasons (JSON lines) here; default:
    /// `<state_dir>/actions.jsonl` when not a dry run, nowhere in a dry run.
    #[arg(long, value_name = "FILE")]
    pub decision_log: Option<PathBuf>,

    /// Do not print readable decisions on stdout.
    #[arg(long)]
    pub quiet: bool,
}

impl From<&RunArgs> for RunOptions {
    fn from(args: &RunArgs) -> Self {
        RunOptions {
            config: args.config.clone(),
            dry_run: args.dry_run,
            run_for: args.run_for,
            decision_log: args.decision_log.clone(),
            quiet: args.quiet,
        }
    }
}
