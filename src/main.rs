//! The `steward` binary: parse the command line, set up logging, call the command, exit.
//!
//! Everything of substance lives in the library (`src/lib.rs`) and the workspace crates; this
//! file only wires them together.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use steward::evaluate::EvaluateArgs;
use steward::observe::ObserveArgs;
use steward::run::RunArgs;
use steward_policies::PolicyConfig;
use steward_runtime::config;

/// mimalloc, not glibc's malloc: a fleet's tick allocates and frees ~100 small blocks a cluster
/// (names, figures, decisions), and with mimalloc the tick takes 30 % less CPU (benches/fleet.rs;
/// README, issue 19).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes (also in `--help` and the README):
/// - 0: done;
/// - 1: a failure at run time (a service not reachable, a platform refusal, an I/O error);
/// - 2: a usage error (an unknown flag, a missing or bad argument), clap's own code;
/// - 3: a config file or an input file that is not valid (every problem is printed first).
const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INVALID: u8 = 3;

const EXIT_CODES_HELP: &str = "Exit codes: 0 done; 1 failed at run time; 2 usage error \
(flags or arguments); 3 invalid config or input file.";

/// Steward: autoscaling and self-healing for PostgreSQL clusters run by Patroni.
///
/// The scaler resizes balancers and databases (vCPU, RAM, disk) and changes the number of
/// replicas; the repairer fences members that misbehave and replaces them. Before trusting it
/// with a cluster, run `steward evaluate` over recorded metrics to see what it would have done,
/// and `steward observe` to check what it sees.
#[derive(Debug, Parser)]
#[command(
    name = "steward",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `steward=debug,warn`).
    #[arg(
        long,
        global = true,
        env = "STEWARD_LOG",
        default_value = "warn",
        help_heading = "Logging"
    )]
    log: String,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    log_format: LogFormat,

    /// Colour in the logs: `auto` colours only when stderr is a terminal and `NO_COLOR` is unset
    /// (a log file or a pipe gets plain text).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, help_heading = "Logging")]
    color: ColorChoice,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    /// Colour when stderr is a terminal and `NO_COLOR` is not set.
    Auto,
    /// Always colour, even into a file or a pipe.
    Always,
    /// Never colour.
    Never,
}

impl ColorChoice {
    /// Whether log lines carry ANSI colour codes, given what stderr is and the environment.
    fn ansi(self, stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            // https://no-color.org: set and not empty means no colour.
            ColorChoice::Auto => stderr_is_terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file: print every error with its field path and exit 3, or print the
    /// effective config (every default filled in) and exit 0.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
        /// Also ask the platform (read-only) what each adoption rule
        /// (`[[platform.docker.adopt]]`, `[[platform.libvirt.adopt]]`) takes now: which
        /// container or domain, on which host, as which member.
        #[arg(long)]
        resolve: bool,
    },

    /// Dry-run the policies over recorded metrics: what Steward would have done, and why,
    /// decision by decision, side by side with the Kubernetes HPA and VPA, a naive threshold
    /// rule and a fixed size.
    ///
    /// Example: steward evaluate --csv cpu.csv --role database --resource cpu --size 2 --baseline all
    Evaluate {
        /// Config file whose `[policy]` section to evaluate (default: the built-in defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,

        // Boxed: these flags are most of the enum's size, and the other commands need few.
        #[command(flatten)]
        args: Box<EvaluateArgs>,
    },

    /// One live pass over Patroni (and Prometheus, if given): every member with its role,
    /// state, lag and resource figures, each with its source and age.
    ///
    /// Example: steward observe --patroni http://127.0.0.11:8008 --prometheus http://127.0.0.1:9090
    Observe(ObserveArgs),

    /// Run both loops (repair and scale) against the platform of the config's `[platform]`
    /// section. With the simulated platform, time is simulated and runs as fast as it can.
    ///
    /// Example: steward run --config examples/simulated.toml --dry-run --for 2m
    Run(RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ansi = cli.color.ansi(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    init_logging(&cli.log, cli.log_format, ansi);
    match run(cli.command) {
        Ok(code) => code,
        // `steward evaluate ... | head`: the reader has all it wanted.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole chain of causes on one line: "what failed: because: because".
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code_of(&err))
        }
    }
}

/// [`EXIT_INVALID`] when what failed is a config or input the user gave that is not valid
/// (anywhere in the chain of causes), [`EXIT_USAGE`] for a combination of flags a command
/// refuses, else [`EXIT_FAILURE`].
fn exit_code_of(err: &anyhow::Error) -> u8 {
    use steward::evaluate::input::InputError;
    for cause in err.chain() {
        if cause.is::<steward::UsageError>() {
            return EXIT_USAGE;
        }
        if let Some(config::LoadError::Invalid { .. } | config::LoadError::Parse { .. }) =
            cause.downcast_ref::<config::LoadError>()
        {
            return EXIT_INVALID;
        }
        if let Some(InputError::Row { .. } | InputError::Empty { .. }) =
            cause.downcast_ref::<InputError>()
        {
            return EXIT_INVALID;
        }
    }
    EXIT_FAILURE
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    match command {
        Command::CheckConfig { file, resolve } => check_config(&file, resolve),
        Command::Evaluate { config, args } => {
            let policy = match config {
                Some(path) => config::load(&path)?.policy,
                None => PolicyConfig::default(),
            };
            let mut out = stdout.lock();
            steward::evaluate::run(&args, policy, &mut out)?;
            out.flush().context("cannot write to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Observe(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let mut out = std::io::stdout();
            runtime.block_on(steward::observe::run(&args, &mut out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let config = config::load(&args.config)?;
            steward_runtime::run::start::execute(&(&args).into(), config)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `steward check-config FILE`: all errors on stderr (exit 3), or the effective config on stdout.
fn check_config(file: &std::path::Path, resolve: bool) -> anyhow::Result<ExitCode> {
    let raw = config::read_raw(file)?;
    let effective = raw.to_toml();
    match raw.validate() {
        Ok(valid) => {
            print!(
                "# {}: valid. The effective config, every default filled in:\n{effective}",
                file.display()
            );
            if resolve {
                resolve_adoption(valid.platform.as_ref())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{}: {} error(s):", file.display(), errors.len());
            for e in errors.iter() {
                eprintln!("  {e}");
            }
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}

/// `check-config --resolve`: what each adoption rule takes now, asked of the platform
/// (read-only: a listing).
fn resolve_adoption(
    platform: Option<&steward_runtime::run::config::PlatformSettings>,
) -> anyhow::Result<()> {
    use steward_runtime::run::config::PlatformSettings;
    match platform {
        Some(PlatformSettings::Docker(docker)) => resolve_docker(docker),
        Some(PlatformSettings::Libvirt(config)) => resolve_libvirt(config),
        Some(PlatformSettings::Kubernetes(config)) => resolve_kubernetes(config),
        _ => {
            println!(
                "# --resolve: the simulated platform has no adoption rules; nothing to resolve"
            );
            Ok(())
        }
    }
}

/// One adoption rule's catch, as `--resolve` prints it: member, resource, host.
struct Taken {
    rule: usize,
    member: String,
    resource: String,
    host: String,
}

/// Prints what each rule (described by `rules`) takes, asked of `source` now.
fn print_adoption(source: &str, section: &str, rules: &[String], taken: &[Taken]) {
    println!("# adoption, as {source} answers now:");
    if rules.is_empty() {
        println!("#   no [[{section}]] rule");
    }
    for (i, what) in rules.iter().enumerate() {
        let mine: Vec<&Taken> = taken.iter().filter(|t| t.rule == i).collect();
        if mine.is_empty() {
            println!("#   adopt[{i}] ({what}): takes nothing");
        }
        for t in mine {
            println!(
                "#   adopt[{i}] ({what}): member {} = {} on {}",
                t.member, t.resource, t.host
            );
        }
    }
}

/// Runs one async listing for `--resolve`.
fn block_on<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(work)
}

fn resolve_docker(docker: &steward_adapters::platform::docker::DockerConfig) -> anyhow::Result<()> {
    use steward_adapters::platform::docker::{DockerPlatform, Selector};
    let matches = block_on(async {
        let p = DockerPlatform::connect(docker.clone())
            .await
            .context("connecting to docker to resolve the adoption rules")?;
        p.adopted()
            .await
            .context("listing containers to resolve the adoption rules")
    })?;
    let rules: Vec<String> = docker
        .adopt
        .iter()
        .map(|rule| match &rule.selector {
            Selector::Container { container, .. } => format!("container {container}"),
            Selector::Label { key, value, .. } => match value {
                Some(v) => format!("label {key}={v}"),
                None => format!("label {key}"),
            },
        })
        .collect();
    let taken: Vec<Taken> = matches
        .into_iter()
        .map(|m| Taken {
            rule: m.rule,
            member: m.member,
            resource: format!("container {}", m.container),
            host: m.host,
        })
        .collect();
    print_adoption("the engines", "platform.docker.adopt", &rules, &taken);
    Ok(())
}

fn resolve_kubernetes(
    config: &steward_adapters::platform::kubernetes::KubernetesConfig,
) -> anyhow::Result<()> {
    use steward_adapters::platform::kubernetes::client::KubeApi;
    use steward_adapters::platform::kubernetes::{KubernetesPlatform, Selector};
    if config.adopt().is_empty() {
        println!("# adoption: no [[platform.kubernetes.adopt]] rule; nothing to resolve");
        return Ok(());
    }
    let matches = block_on(async {
        let api = KubeApi::connect(
            config.kubeconfig(),
            config.context(),
            config.max_body_bytes(),
            |k| std::env::var(k).ok(),
        )
        .await
        .context("setting up the kubernetes client to resolve the adoption rules")?;
        KubernetesPlatform::on(&api, config.clone())
            .adopted()
            .await
            .context("listing pods to resolve the adoption rules")
    })?;
    let rules: Vec<String> = config
        .adopt()
        .iter()
        .map(|rule| match &rule.selector {
            Selector::Pod { pod, .. } => format!("pod {pod}"),
            Selector::Labels(_) => {
                format!("selector {}", rule.selector.query().unwrap_or_default())
            }
        })
        .collect();
    let taken: Vec<Taken> = matches
        .into_iter()
        .map(|m| Taken {
            rule: m.rule,
            member: m.member,
            resource: format!("pod {}/{}", config.namespace(), m.pod),
            host: if m.node.is_empty() {
                "no node yet".to_string()
            } else {
                format!("node {}", m.node)
            },
        })
        .collect();
    print_adoption(
        "the Kubernetes API",
        "platform.kubernetes.adopt",
        &rules,
        &taken,
    );
    Ok(())
}

#[cfg(feature = "libvirt")]
fn resolve_libvirt(
    config: &steward_adapters::platform::libvirt::LibvirtConfig,
) -> anyhow::Result<()> {
    use steward_adapters::platform::libvirt::{LibvirtPlatform, Selector};
    if config.adopt().is_empty() {
        println!("# adoption: no [[platform.libvirt.adopt]] rule; nothing to resolve");
        return Ok(());
    }
    let matches = block_on(async {
        // A listing reads no time of day.
        let clock = std::sync::Arc::new(steward_model::Timestamp::default);
        let p = LibvirtPlatform::connect(config.clone(), clock)
            .await
            .context("connecting to libvirt to resolve the adoption rules")?;
        p.adopted()
            .await
            .context("listing domains to resolve the adoption rules")
    })?;
    let rules: Vec<String> = config
        .adopt()
        .iter()
        .map(|rule| match &rule.selector {
            Selector::Domain { domain, .. } => format!("domain {domain}"),
            Selector::Pattern { pattern, .. } => format!("name {pattern}"),
        })
        .collect();
    let taken: Vec<Taken> = matches
        .into_iter()
        .map(|m| Taken {
            rule: m.rule,
            member: m.member,
            resource: format!("domain {}", m.domain),
            host: m.host,
        })
        .collect();
    print_adoption("libvirt", "platform.libvirt.adopt", &rules, &taken);
    Ok(())
}

#[cfg(not(feature = "libvirt"))]
fn resolve_libvirt(
    config: &steward_adapters::platform::libvirt::LibvirtConfig,
) -> anyhow::Result<()> {
    if config.adopt().is_empty() {
        println!("# adoption: no [[platform.libvirt.adopt]] rule; nothing to resolve");
    } else {
        println!(
            "# --resolve: this steward was built without the libvirt platform, which asks \
             libvirt; rebuild it with `--features libvirt` to resolve the {} \
             [[platform.libvirt.adopt]] rule(s)",
            config.adopt().len()
        );
    }
    Ok(())
}

fn init_logging(filter: &str, format: LogFormat, ansi: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: log filter `{filter}` is not valid ({e}); using `warn`");
        EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::ColorChoice;

    #[test]
    fn colour_only_on_a_terminal_unless_asked() {
        assert!(ColorChoice::Auto.ansi(true, None));
        assert!(
            !ColorChoice::Auto.ansi(false, None),
            "a file or a pipe gets plain text"
        );
        assert!(
            !ColorChoice::Auto.ansi(true, Some("1".into())),
            "NO_COLOR turns it off"
        );
        assert!(
            ColorChoice::Auto.ansi(true, Some("".into())),
            "an empty NO_COLOR does not"
        );
        assert!(ColorChoice::Always.ansi(false, Some("1".into())));
        assert!(!ColorChoice::Never.ansi(true, None));
    }
}
