//! The config sections `steward run` adds: `[platform]` (which platform, and its own section),
//! `[run]` (the loops' pace) and the simulated platform's `[platform.simulated]` (members,
//! hosts, a load trace, scripted faults).
//!
//! What it is: raw serde structs (`deny_unknown_fields`, every field documented) and their
//! validation into settings, errors collected with paths relative to the section (the caller
//! files them under `platform` or `run`).
//!
//! What it is not: the construction of a platform (that needs I/O and lives in [`super::cli`]
//! and [`super::sim`]). The Docker, libvirt and Kubernetes sub-sections are the adapters' own
//! raw config structs; they are kept as TOML values here and parsed at validation, so that the
//! effective config `check-config` prints shows them as written.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_adapters::patroni::PatroniSettings;
use steward_adapters::platform::docker::{DockerConfig, RawDockerConfig};
use steward_adapters::platform::kubernetes::{KubernetesConfig, KubernetesConfigRaw};
use steward_adapters::platform::libvirt::{LibvirtConfig, LibvirtConfigRaw};
use steward_model::{ConfigErrors, Size, Timestamp};

/// 15 s: Prometheus' usual scrape interval, so each tick sees a new sample.
pub const DEFAULT_TICK: Duration = Duration::from_secs(15);
/// The simulated cluster starts at the first point of the NAB traces' fortnight, a fixed
/// instant so that runs are reproducible.
pub const DEFAULT_SIM_START: &str = "2014-02-14 14:30:00";

/// `[run]`: the pace of the loops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRunConfig {
    /// How often each loop observes and decides (e.g. `15s`).
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
}

impl Default for RawRunConfig {
    fn default() -> Self {
        RawRunConfig { tick: DEFAULT_TICK }
    }
}

/// The validated `[run]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub tick: Duration,
}

impl RawRunConfig {
    pub fn validate(&self) -> Result<RunConfig, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        if self.tick < Duration::from_secs(1) {
            errors.push("tick", "must be at least 1s");
        } else if self.tick > Duration::from_secs(3_600) {
            // A loop that looks once an hour repairs nothing in time.
            errors.push("tick", "at most 1h");
        }
        errors.into_result(RunConfig { tick: self.tick })
    }
}

/// Which platform the members live on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformKind {
    Simulated,
    Docker,
    Libvirt,
    Kubernetes,
}

/// `[platform]`: `kind` and the sub-section of that kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlatformConfig {
    /// `simulated`, `docker`, `libvirt` or `kubernetes`; the sub-section of the same name is
    /// required (except for `simulated`, whose every field has a default).
    pub kind: PlatformKind,
    /// `[platform.simulated]`: the in-process cluster of the demo and the loop tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<RawSimulated>,
    /// `[platform.docker]`: the Docker adapter's own section (engines, addresses, templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<toml::Value>,
    /// `[platform.libvirt]`: the libvirt adapter's own section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt: Option<toml::Value>,
    /// `[platform.kubernetes]`: the Kubernetes adapter's own section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<toml::Value>,
}

/// `[platform.simulated]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSimulated {
    /// Database members at start (`<prefix>1..`); the first one leads.
    pub members: u32,
    /// Member name prefix.
    pub prefix: String,
    /// Simulated hosts; one more than the members leaves room for a replacement.
    pub hosts: u32,
    /// vCPUs of each member at start.
    pub cpus: f64,
    /// Memory of each member at start (`4GiB`).
    pub memory: String,
    /// Data disk of each member at start (`20GiB`).
    pub disk: String,
    /// HAProxy-like balancer members at start (`<balancer_prefix>1..`), each on a host of its
    /// own; the loops resize them on their CPU and replace a crashed one. 0 = none.
    pub balancers: u32,
    /// Balancer name prefix.
    pub balancer_prefix: String,
    /// vCPUs of each balancer at start.
    pub balancer_cpus: f64,
    /// Memory of each balancer at start.
    pub balancer_memory: String,
    /// CPU load trace (NAB CSV, percent) every member follows; without it, a constant 10 %.
    pub trace: Option<PathBuf>,
    /// Multiplies the trace (2.0 = twice the load).
    pub load_factor: f64,
    /// When the simulation starts (`YYYY-MM-DD HH:MM:SS`, UTC); the trace's time axis.
    pub start: String,
    /// Patroni's leader ttl in the simulation.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long a new member takes to stream.
    #[serde(with = "humantime_serde")]
    pub join_delay: Duration,
    /// Scripted faults, each at a time after the start.
    pub faults: Vec<RawFault>,
}

impl Default for RawSimulated {
    fn default() -> Self {
        RawSimulated {
            members: 3,
            prefix: "pg-".into(),
            hosts: 4,
            cpus: 2.0,
            memory: "4GiB".into(),
            disk: "20GiB".into(),
            balancers: 0,
            balancer_prefix: "lb-".into(),
            balancer_cpus: 1.0,
            balancer_memory: "1GiB".into(),
            trace: None,
            load_factor: 1.0,
            start: DEFAULT_SIM_START.into(),
            ttl: steward_adapters::simcluster::DEFAULT_TTL,
            join_delay: steward_adapters::simcluster::DEFAULT_JOIN_DELAY,
            faults: Vec::new(),
        }
    }
}

/// What a scripted fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The member's process dies.
    Crash,
    /// The member freezes (like `docker pause`).
    Hang,
    /// A hung member thaws, a crashed one is restarted by the platform.
    Recover,
    /// The member's memory demand doubles (an OOM kill follows if it does not fit).
    MemorySpike,
    /// The load factor of every member becomes `value`.
    Load,
    /// The member's replication lag becomes `value` bytes.
    Lag,
}

/// `[[platform.simulated.faults]]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    /// Time after the start (`90s`, `5m`).
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    pub fault: FaultKind,
    /// The member it hits (not needed for `load`).
    #[serde(default)]
    pub member: Option<String>,
    /// The amount for `load` (factor) and `lag` (bytes).
    #[serde(default)]
    pub value: Option<f64>,
}

/// The validated simulated platform.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSettings {
    pub members: u32,
    pub prefix: String,
    pub hosts: u32,
    pub size: Size,
    pub balancers: u32,
    pub balancer_prefix: String,
    /// A balancer's size (no disk of its own).
    pub balancer_size: Size,
    pub trace: Option<PathBuf>,
    pub load_factor: f64,
    pub start: Timestamp,
    pub ttl: Duration,
    pub join_delay: Duration,
    pub faults: Vec<RawFault>,
}

/// The validated `[platform]`.
#[derive(Clone, Debug)]
pub enum PlatformSettings {
    Simulated(SimSettings),
    /// Boxed: the Docker config is large and the others are not.
    Docker(Box<DockerConfig>),
    Libvirt(LibvirtConfig),
    Kubernetes(KubernetesConfig),
}

impl PlatformSettings {
    pub fn kind(&self) -> PlatformKind {
        match self {
            PlatformSettings::Simulated(_) => PlatformKind::Simulated,
            PlatformSettings::Docker(_) => PlatformKind::Docker,
            PlatformSettings::Libvirt(_) => PlatformKind::Libvirt,
            PlatformSettings::Kubernetes(_) => PlatformKind::Kubernetes,
        }
    }
}

/// Parses an adapter's sub-section, reporting a parse error under its name.
fn sub<T: serde::de::DeserializeOwned>(
    errors: &mut ConfigErrors,
    name: &str,
    value: Option<&toml::Value>,
) -> Option<T> {
    let Some(value) = value else {
        errors.push(name, format!("is required when kind = \"{name}\""));
        return None;
    };
    match value.clone().try_into::<T>() {
        Ok(raw) => Some(raw),
        Err(e) => {
            errors.push(name, e.to_string().trim_end().to_string());
            None
        }
    }
}

impl RawPlatformConfig {
    /// Checks the section of the chosen kind; paths are relative to `[platform]`.
    pub fn validate(&self) -> Result<PlatformSettings, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let settings = match self.kind {
            PlatformKind::Simulated => {
                let raw = self.simulated.clone().unwrap_or_default();
                match raw.validate() {
                    Ok(s) => Some(PlatformSettings::Simulated(s)),
                    Err(e) => {
                        errors.extend_under("simulated", e);
                        None
                    }
                }
            }
            PlatformKind::Docker => {
                sub::<RawDockerConfig>(&mut errors, "docker", self.docker.as_ref()).and_then(
                    |raw| match raw.validate() {
                        Ok(c) => Some(PlatformSettings::Docker(Box::new(c))),
                        Err(e) => {
                            errors.extend_under("docker", e);
                            None
                        }
                    },
                )
            }
            PlatformKind::Libvirt => {
                sub::<LibvirtConfigRaw>(&mut errors, "libvirt", self.libvirt.as_ref()).and_then(
                    |raw| match raw.validate() {
                        Ok(c) => Some(PlatformSettings::Libvirt(c)),
                        Err(e) => {
                            errors.extend_under("libvirt", e);
                            None
                        }
                    },
                )
            }
            PlatformKind::Kubernetes => {
                sub::<KubernetesConfigRaw>(&mut errors, "kubernetes", self.kubernetes.as_ref())
                    .and_then(|raw| match raw.validate() {
                        Ok(c) => Some(PlatformSettings::Kubernetes(c)),
                        Err(e) => {
                            errors.extend_under("kubernetes", e);
                            None
                        }
                    })
            }
        };
        match settings {
            Some(s) if errors.is_empty() => Ok(s),
            _ => Err(errors),
        }
    }
}

impl RawSimulated {
    pub fn validate(self) -> Result<SimSettings, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        // Upper bounds (issue 16): each member, balancer and host is simulated in memory, so a
        // typo of four billion would be an allocation of that many, not a cluster.
        if self.members == 0 {
            errors.push("members", "must be at least 1");
        } else if self.members > 100 {
            errors.push(
                "members",
                "at most 100 (a Patroni cluster, not a fleet: see [fleet])",
            );
        }
        if self.balancers > 100 {
            errors.push("balancers", "at most 100");
        }
        if self.hosts > 1000 {
            errors.push("hosts", "at most 1000");
        }
        for (path, cpus) in [("cpus", self.cpus), ("balancer_cpus", self.balancer_cpus)] {
            if cpus > 1024.0 {
                errors.push(path, "at most 1024");
            }
        }
        if self.load_factor > 1e6 {
            errors.push("load_factor", "at most 1000000");
        }
        if self.hosts < self.members {
            errors.push(
                "hosts",
                format!(
                    "{} hosts cannot hold {} members (one database member per host)",
                    self.hosts, self.members
                ),
            );
        }
        if self.hosts < self.balancers {
            errors.push(
                "hosts",
                format!(
                    "{} hosts cannot hold {} balancers (one balancer per host)",
                    self.hosts, self.balancers
                ),
            );
        }
        if self.balancers > 0 && self.balancer_prefix == self.prefix {
            errors.push(
                "balancer_prefix",
                format!(
                    "must differ from the members' prefix {:?}: names tell the roles apart",
                    self.prefix
                ),
            );
        }
        for (path, cpus) in [("cpus", self.cpus), ("balancer_cpus", self.balancer_cpus)] {
            if !(cpus.is_finite() && cpus > 0.0) {
                errors.push(path, "must be above zero");
            }
        }
        let mut bytes = |path: &str, text: &str| match steward_policies::parse_bytes(text) {
            Ok(b) if b >= 1.0 => b as u64,
            Ok(_) => {
                errors.push(path, "must be above zero");
                0
            }
            Err(e) => {
                errors.push(path, e.to_string());
                0
            }
        };
        let memory_bytes = bytes("memory", &self.memory);
        let disk_bytes = bytes("disk", &self.disk);
        let balancer_memory = bytes("balancer_memory", &self.balancer_memory);
        if !(self.load_factor.is_finite() && self.load_factor >= 0.0) {
            errors.push("load_factor", "must be zero or more");
        }
        let start = match Timestamp::parse(&self.start) {
            Ok(t) => t,
            Err(e) => {
                errors.push("start", e);
                Timestamp::from_secs(0)
            }
        };
        for (path, d) in [("ttl", self.ttl), ("join_delay", self.join_delay)] {
            errors.positive_at_most(path, d, Duration::from_secs(3_600));
        }
        for (i, f) in self.faults.iter().enumerate() {
            // A simulated year is more than any demo or test needs, and keeps `start + at`
            // far from overflowing.
            if f.at > Duration::from_secs(365 * 86_400) {
                errors.push(format!("faults[{i}].at"), "at most 365d after the start");
            }
            let needs_member = f.fault != FaultKind::Load;
            if needs_member && f.member.is_none() {
                errors.push(format!("faults[{i}].member"), "is required for this fault");
            }
            if matches!(f.fault, FaultKind::Load | FaultKind::Lag)
                && !f.value.is_some_and(|v| v.is_finite() && v >= 0.0)
            {
                errors.push(
                    format!("faults[{i}].value"),
                    "a number of 0 or more is required",
                );
            }
        }
        errors.into_result(SimSettings {
            members: self.members,
            prefix: self.prefix,
            hosts: self.hosts,
            size: Size {
                cpus: self.cpus,
                memory_bytes,
                disk_bytes,
            },
            balancers: self.balancers,
            balancer_prefix: self.balancer_prefix,
            balancer_size: Size {
                cpus: self.balancer_cpus,
                memory_bytes: balancer_memory,
                disk_bytes: 0,
            },
            trace: self.trace,
            load_factor: self.load_factor,
            start,
            ttl: self.ttl,
            join_delay: self.join_delay,
            faults: self.faults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_defaults_are_valid() {
        let s = RawSimulated::default().validate().unwrap();
        assert_eq!(s.members, 3);
        assert_eq!(s.size.memory_bytes, 4 << 30);
    }

    /// Issue 16: counts and sizes that would be allocations, not clusters, are refused.
    #[test]
    fn simulated_counts_have_upper_bounds() {
        let raw = RawSimulated {
            members: u32::MAX,
            hosts: u32::MAX,
            balancers: u32::MAX,
            cpus: 1e300,
            load_factor: f64::MAX,
            ..RawSimulated::default()
        };
        let errors = raw.validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for p in ["members", "balancers", "hosts", "cpus", "load_factor"] {
            assert!(paths.contains(&p), "{p}: {errors}");
        }
    }

    #[test]
    fn simulated_errors_carry_their_paths() {
        let raw = RawSimulated {
            members: 4,
            hosts: 2,
            memory: "4 parsecs".into(),
            faults: vec![RawFault {
                at: Duration::from_secs(1),
                fault: FaultKind::Crash,
                member: None,
                value: None,
            }],
            ..RawSimulated::default()
        };
        let errors = raw.validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["hosts", "memory", "faults[0].member"], "{errors}");
    }

    #[test]
    fn simulated_balancers_need_hosts_a_prefix_of_their_own_and_a_size() {
        let raw = RawSimulated {
            balancers: 5,
            balancer_prefix: "pg-".into(),
            balancer_cpus: 0.0,
            balancer_memory: "lots".into(),
            ..RawSimulated::default()
        };
        let errors = raw.validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "hosts",
                "balancer_prefix",
                "balancer_cpus",
                "balancer_memory"
            ],
            "{errors}"
        );
        let ok = RawSimulated {
            balancers: 2,
            ..RawSimulated::default()
        }
        .validate()
        .unwrap();
        assert_eq!((ok.balancers, ok.balancer_size.cpus), (2, 1.0));
        assert_eq!(ok.balancer_size.memory_bytes, 1 << 30);
    }

    #[test]
    fn a_platform_kind_needs_its_section() {
        let raw = RawPlatformConfig {
            kind: PlatformKind::Docker,
            simulated: None,
            docker: None,
            libvirt: None,
            kubernetes: None,
        };
        let errors = raw.validate().unwrap_err();
        assert_eq!(errors.iter().next().unwrap().path, "docker");
    }
}

/// Default backends a database member is a server of: the lab's (and the usual Patroni
/// template's) `primary` on 5432 and `replicas` on 5433; Patroni's checks route within them.
pub const DEFAULT_BACKENDS: [&str; 2] = ["primary", "replicas"];
/// Default PostgreSQL port of the members.
pub const DEFAULT_MEMBER_PORT: u16 = 5432;
/// Default port of Patroni's REST API, where the balancers' checks go.
pub const DEFAULT_CHECK_PORT: u16 = 8008;
/// Default time a new server gets to pass its check before it is left out of traffic.
pub const DEFAULT_ENABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `[balancers]`: the HAProxy instances whose backends follow the members.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalancersConfig {
    /// Each balancer's Runtime API (`stats socket ... level admin`): `127.0.0.21:9999` or
    /// `unix:/run/haproxy/admin.sock`, or the balancer's address on its network
    /// (`10.1.2.3:9999`). Required.
    #[serde(default)]
    pub runtime_apis: Vec<String>,
    /// The backends every database member is a server of; each backend's own check
    /// (`OPTIONS /primary`, `OPTIONS /replica`) decides which server takes traffic.
    #[serde(default = "default_backends")]
    pub backends: Vec<String>,
    /// The members' PostgreSQL port, where the servers point.
    #[serde(default = "default_member_port")]
    pub port: u16,
    /// Patroni's REST port, where the checks go.
    #[serde(default = "default_check_port")]
    pub check_port: u16,
    /// How long a new server may take to pass its check before Steward stops waiting (it stays
    /// out of traffic and is tried again on a later tick).
    #[serde(default = "default_enable_timeout", with = "humantime_serde")]
    pub enable_timeout: Duration,
    /// The Runtime API port of the platform's `balancer` members (owned or adopted): each
    /// running one is a balancer at its address and this port, besides `runtime_apis`, so a
    /// balancer Steward makes in place of a dead one is kept in step from its first pass.
    #[serde(default)]
    pub member_api_port: Option<u16>,
}

fn default_backends() -> Vec<String> {
    DEFAULT_BACKENDS.iter().map(|b| b.to_string()).collect()
}
fn default_member_port() -> u16 {
    DEFAULT_MEMBER_PORT
}
fn default_check_port() -> u16 {
    DEFAULT_CHECK_PORT
}
fn default_enable_timeout() -> Duration {
    DEFAULT_ENABLE_TIMEOUT
}

/// The validated `[balancers]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BalancersConfig {
    /// Name (the endpoint as written) and where its Runtime API listens.
    pub runtime_apis: Vec<(String, steward_adapters::haproxy::Endpoint)>,
    pub backends: Vec<String>,
    pub port: u16,
    pub check_port: u16,
    pub enable_timeout: Duration,
    pub member_api_port: Option<u16>,
}

impl RawBalancersConfig {
    pub fn validate(&self) -> Result<BalancersConfig, ConfigErrors> {
        use steward_adapters::haproxy::Endpoint;
        let mut errors = ConfigErrors::default();
        if self.runtime_apis.is_empty() && self.member_api_port.is_none() {
            errors.push(
                "runtime_apis",
                "list each balancer's Runtime API, e.g. [\"127.0.0.21:9999\", \"127.0.0.22:9999\"], \
                 or give `member_api_port` to follow the platform's balancer members",
            );
        }
        if self.member_api_port == Some(0) {
            errors.push("member_api_port", "must be a port number (1-65535)");
        }
        let mut apis = Vec::new();
        for (i, text) in self.runtime_apis.iter().enumerate() {
            let path = format!("runtime_apis[{i}]");
            if let Some(unix) = text.strip_prefix("unix:") {
                if unix.is_empty() || !unix.starts_with('/') {
                    errors.push(path, format!("{text:?}: a unix socket needs an absolute path, e.g. unix:/run/haproxy/admin.sock"));
                } else {
                    apis.push((text.clone(), Endpoint::Unix(PathBuf::from(unix))));
                }
                continue;
            }
            // Any address: a balancer on another host serves its Runtime API on that host's
            // network (the API has no authentication of its own: who may reach it is the
            // network's business, as `stats socket ... level admin` says).
            match text.parse::<std::net::SocketAddr>() {
                Ok(addr) => apis.push((text.clone(), Endpoint::Tcp(addr))),
                Err(_) => errors.push(
                    path,
                    format!("{text:?} is neither IP:PORT (127.0.0.21:9999) nor unix:/path"),
                ),
            }
        }
        if self.backends.is_empty() {
            errors.push(
                "backends",
                "name at least one backend, e.g. [\"primary\", \"replicas\"]",
            );
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.is_empty() || b.chars().any(|c| c.is_whitespace()) {
                errors.push(
                    format!("backends[{i}]"),
                    format!("{b:?} is not a backend name"),
                );
            }
        }
        if self.port == 0 {
            errors.push("port", "must be a port number (1-65535)");
        }
        if self.check_port == 0 {
            errors.push("check_port", "must be a port number (1-65535)");
        }
        if self.enable_timeout < Duration::from_secs(1) {
            errors.push("enable_timeout", "must be at least 1s");
        } else if self.enable_timeout > Duration::from_secs(3_600) {
            errors.push("enable_timeout", "at most 1h");
        }
        errors.into_result(BalancersConfig {
            runtime_apis: apis,
            backends: self.backends.clone(),
            port: self.port,
            check_port: self.check_port,
            enable_timeout: self.enable_timeout,
            member_api_port: self.member_api_port,
        })
    }
}

/// The most clusters one `[fleet]` may name or count: far above what one process should look
/// after (benches/fleet.rs measures a tick for 10,000), low enough that a typo (`clusters =
/// 5000000`) is refused instead of filling memory.
pub const MAX_FLEET_CLUSTERS: u32 = 10_000;

/// `[fleet]`: one `steward run` looking after many clusters, each with its own loops, journal
/// (`<state_dir>/<cluster>/`) and decision log. Exactly one of the two forms:
/// - `clusters = N` with `[platform] kind = "simulated"`: clusters `<cluster.name>-1..N`, each
///   its own simulated world built from the same `[platform.simulated]`;
/// - `[[fleet.cluster]]` entries for a real platform (Docker): each names its cluster (Patroni's
///   scope), its Patroni URLs, its own address pool and, if it has them, its balancers; the
///   rest (`[platform]`'s engines and templates, `[patroni]`'s credentials and timeouts,
///   `[prometheus]`, the policies) is shared by every cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetConfig {
    /// How many simulated clusters (`<cluster.name>-1` .. `<cluster.name>-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<u32>,
    /// The clusters of a real platform, one `[[fleet.cluster]]` each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<RawFleetCluster>,
}

/// `[[fleet.cluster]]`: one cluster of a real platform.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetCluster {
    /// The cluster's name (Patroni's `scope`); a label value like `[cluster] name`. Its
    /// members carry it as `io.steward.cluster`.
    pub name: String,
    /// Its Patroni REST API base URLs (`http://10.1.0.11:8008`); the rest of `[patroni]`
    /// (credentials, timeouts, TLS) is shared by all clusters.
    #[serde(default)]
    pub patroni_urls: Vec<String>,
    /// The addresses its new members get (`a.b.c.d` or `a.b.c.d-a.b.c.e`), in place of
    /// `[platform.docker] addresses`: each cluster needs a pool of its own, and no two pools
    /// may share an address. Required with the Docker platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The HAProxy backends kept in step with this cluster's members (`[balancers]`'s fields).
    /// Clusters may share balancers, each with backends of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancers: Option<RawBalancersConfig>,
}

/// The validated `[fleet]`.
#[derive(Clone, Debug)]
pub enum FleetSettings {
    /// Simulated clusters, named in order.
    Simulated { clusters: Vec<String> },
    /// Clusters of a real platform, in the order listed.
    Listed { clusters: Vec<ListedCluster> },
}

/// One validated `[[fleet.cluster]]`.
#[derive(Clone, Debug)]
pub struct ListedCluster {
    pub name: String,
    /// `[patroni]` with this cluster's URLs.
    pub patroni: PatroniSettings,
    /// Its own address pool (empty: the platform's).
    pub addresses: Vec<std::net::Ipv4Addr>,
    pub balancers: Option<BalancersConfig>,
}

impl FleetSettings {
    /// The clusters' names, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            FleetSettings::Simulated { clusters } => clusters.clone(),
            FleetSettings::Listed { clusters } => clusters.iter().map(|c| c.name.clone()).collect(),
        }
    }
}

/// What the rest of the config says that `[fleet]` depends on.
#[derive(Clone, Copy, Debug)]
pub struct FleetContext<'a> {
    /// `[cluster] name`: the simulated clusters' prefix.
    pub cluster_name: &'a str,
    /// `[platform] kind`, when there is a `[platform]`.
    pub platform: Option<PlatformKind>,
    /// `[patroni]` validated, when present and valid: what every listed cluster shares but its
    /// URLs (without it, the defaults).
    pub patroni: Option<&'a PatroniSettings>,
    /// Whether `[balancers]` is present (a fleet's balancers are per cluster).
    pub balancers: bool,
    /// Whether `[platform.docker]` has adoption rules (not shared by a fleet's clusters).
    pub adopts: bool,
}

impl RawFleetConfig {
    /// Whether this is the listed form (`[[fleet.cluster]]`), whose clusters carry their own
    /// Patroni URLs (so `[patroni] urls` may be left out).
    pub fn is_listed(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// Checks the section against the rest of the config; paths are relative to `[fleet]`.
    pub fn validate(&self, context: FleetContext<'_>) -> Result<FleetSettings, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        if context.balancers {
            errors.push(
                "",
                "cannot be combined with [balancers]: a fleet's balancers are per cluster; give \
                 each cluster its backends in [fleet.cluster.balancers]",
            );
        }
        let simulated = context.platform == Some(PlatformKind::Simulated);
        let settings = match (self.clusters, self.cluster.is_empty()) {
            (Some(_), false) => {
                errors.push(
                    "clusters",
                    "give either a count (simulated) or [[fleet.cluster]] entries, not both",
                );
                None
            }
            (None, true) => {
                errors.push(
                    "clusters",
                    "is required: a count (`clusters = 50`, simulated) or [[fleet.cluster]] entries",
                );
                None
            }
            (Some(n), true) => {
                if !simulated {
                    errors.push(
                        "clusters",
                        "a count of clusters needs [platform] kind = \"simulated\"; list real \
                         clusters as [[fleet.cluster]] entries",
                    );
                }
                if n == 0 || n > MAX_FLEET_CLUSTERS {
                    errors.push(
                        "clusters",
                        format!("{n} is not between 1 and {MAX_FLEET_CLUSTERS}"),
                    );
                }
                // The longest name decides: every cluster name is a label value.
                let longest = format!("{}-{n}", context.cluster_name);
                if longest.len() > 63 {
                    errors.push(
                        "clusters",
                        format!(
                            "the cluster names ({}-1 .. {longest}) must stay within 63 \
                             characters; shorten [cluster] name",
                            context.cluster_name
                        ),
                    );
                }
                let clusters = (1..=n.min(MAX_FLEET_CLUSTERS))
                    .map(|i| format!("{}-{i}", context.cluster_name))
                    .collect();
                Some(FleetSettings::Simulated { clusters })
            }
            (None, false) => self.validate_listed(&context, &mut errors),
        };
        match settings {
            Some(s) if errors.is_empty() => Ok(s),
            _ => Err(errors),
        }
    }

    fn validate_listed(
        &self,
        context: &FleetContext<'_>,
        errors: &mut ConfigErrors,
    ) -> Option<FleetSettings> {
        if context.adopts {
            errors.push(
                "cluster",
                "cannot be combined with [[platform.docker.adopt]] rules: a rule would take the \
                 same containers into every cluster; a fleet looks after members Steward's labels \
                 name",
            );
        }
        match context.platform {
            Some(PlatformKind::Docker) => {}
            Some(PlatformKind::Simulated) => errors.push(
                "cluster",
                "listed clusters need a real platform; with kind = \"simulated\" give \
                 `clusters = N`",
            ),
            Some(kind) => errors.push(
                "cluster",
                format!(
                    "a fleet of listed clusters is built for [platform] kind = \"docker\" only, \
                     not {kind:?} yet: run one steward per cluster there"
                ),
            ),
            None => errors.push(
                "cluster",
                "listed clusters need a [platform] section (kind = \"docker\")",
            ),
        }
        if self.cluster.len() > MAX_FLEET_CLUSTERS as usize {
            errors.push(
                "cluster",
                format!(
                    "{} clusters listed; at most {MAX_FLEET_CLUSTERS}",
                    self.cluster.len()
                ),
            );
        }
        let shared = context.patroni.cloned();
        let mut seen = std::collections::BTreeSet::new();
        // Which cluster each address went to, to refuse pools that overlap.
        let mut pools: std::collections::BTreeMap<std::net::Ipv4Addr, usize> = Default::default();
        let mut clusters = Vec::new();
        for (i, c) in self.cluster.iter().enumerate() {
            let at = |field: &str| format!("cluster[{i}].{field}");
            if let Err(why) = fleet_label(&c.name) {
                errors.push(at("name"), why);
            } else if !seen.insert(c.name.as_str()) {
                errors.push(at("name"), format!("`{}` is listed twice", c.name));
            }
            // The URLs are this entry's; `[patroni]`'s own errors are reported under it.
            let own = match &shared {
                Some(shared) => shared.for_urls(&c.patroni_urls),
                // No `[patroni]`: every default (no secret to read).
                None => PatroniSettings::with_urls(c.patroni_urls.clone()),
            };
            let patroni = match own {
                Ok(settings) => Some(settings),
                Err(e) => {
                    for fe in e.iter() {
                        let rest = fe.path.strip_prefix("urls").unwrap_or_default();
                        errors.push(
                            format!("cluster[{i}].patroni_urls{rest}"),
                            fe.message.clone(),
                        );
                    }
                    None
                }
            };
            let mut addresses = Vec::new();
            if c.addresses.is_empty() && context.platform == Some(PlatformKind::Docker) {
                errors.push(
                    at("addresses"),
                    "each cluster needs an address pool of its own for the members it adds \
                     (`[\"10.1.0.20-10.1.0.29\"]`)",
                );
            }
            for (j, text) in c.addresses.iter().enumerate() {
                match steward_adapters::platform::parse_address_range(text) {
                    Ok(range) => addresses.extend(range),
                    Err(why) => errors.push(format!("cluster[{i}].addresses[{j}]"), why),
                }
            }
            for a in &addresses {
                match pools.insert(*a, i) {
                    Some(k) if k != i => {
                        errors.push(
                            at("addresses"),
                            format!(
                                "{a} is also in the pool of cluster[{k}] (`{}`)",
                                self.cluster[k].name
                            ),
                        );
                        break;
                    }
                    _ => {}
                }
            }
            let balancers = match c.balancers.as_ref().map(RawBalancersConfig::validate) {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    errors.extend_under(&at("balancers"), e);
                    None
                }
                None => None,
            };
            if let Some(patroni) = patroni {
                clusters.push(ListedCluster {
                    name: c.name.clone(),
                    patroni,
                    addresses,
                    balancers,
                });
            }
        }
        Some(FleetSettings::Listed { clusters })
    }
}

/// A cluster name is a label value (the rules of `[cluster] name`).
fn fleet_label(value: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if value.is_empty() || value.len() > 63 {
        Err(format!(
            "`{value}` must be 1-63 characters (it is used as a label)"
        ))
    } else if !value.chars().all(ok_char) {
        Err(format!(
            "`{value}`: use only letters, digits, `-`, `_` and `.` (it is used as a label)"
        ))
    } else if !ok_end(value.chars().next()) || !ok_end(value.chars().last()) {
        Err(format!(
            "`{value}` must start and end with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod balancers_tests {
    use super::*;
    use steward_adapters::haproxy::Endpoint;

    fn raw(apis: &[&str]) -> RawBalancersConfig {
        RawBalancersConfig {
            runtime_apis: apis.iter().map(|a| a.to_string()).collect(),
            backends: default_backends(),
            port: default_member_port(),
            check_port: default_check_port(),
            enable_timeout: default_enable_timeout(),
            member_api_port: None,
        }
    }

    /// Issue 15: a balancer on another host is reached at its address there; loopback was the
    /// lab's, never a rule.
    #[test]
    fn runtime_apis_are_any_ip_port_or_an_absolute_unix_socket() {
        let ok = raw(&[
            "127.0.0.21:9999",
            "10.213.47.3:9999",
            "[fd00::3]:9999",
            "unix:/run/haproxy/admin.sock",
        ])
        .validate()
        .expect("valid");
        let endpoints: Vec<&Endpoint> = ok.runtime_apis.iter().map(|(_, e)| e).collect();
        assert!(matches!(endpoints[1], Endpoint::Tcp(a) if a.to_string() == "10.213.47.3:9999"));
        assert!(matches!(endpoints[2], Endpoint::Tcp(a) if a.ip().is_ipv6()));
        assert!(
            matches!(endpoints[3], Endpoint::Unix(p) if p.as_os_str() == "/run/haproxy/admin.sock")
        );
        let errors = raw(&["balancer-1:9999", "unix:admin.sock", "10.0.0.1"])
            .validate()
            .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["runtime_apis[0]", "runtime_apis[1]", "runtime_apis[2]"],
            "{errors}"
        );
        assert!(raw(&[]).validate().is_err());
        let followed = RawBalancersConfig {
            member_api_port: Some(9999),
            ..raw(&[])
        };
        assert_eq!(
            followed.validate().expect("valid").member_api_port,
            Some(9999)
        );
    }
}

#[cfg(test)]
mod fleet_tests {
    use super::*;
    use steward_adapters::patroni::PatroniConfig;

    fn context(platform: Option<PlatformKind>) -> FleetContext<'static> {
        FleetContext {
            cluster_name: "demo",
            platform,
            patroni: None,
            balancers: false,
            adopts: false,
        }
    }

    fn entry(name: &str, urls: &[&str], pool: &[&str]) -> RawFleetCluster {
        RawFleetCluster {
            name: name.into(),
            patroni_urls: urls.iter().map(|u| u.to_string()).collect(),
            addresses: pool.iter().map(|a| a.to_string()).collect(),
            balancers: None,
        }
    }

    fn listed(entries: Vec<RawFleetCluster>) -> RawFleetConfig {
        RawFleetConfig {
            clusters: None,
            cluster: entries,
        }
    }

    fn paths(errors: &ConfigErrors) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn a_count_names_the_simulated_clusters_in_order() {
        let raw = RawFleetConfig {
            clusters: Some(3),
            cluster: Vec::new(),
        };
        let settings = raw
            .validate(context(Some(PlatformKind::Simulated)))
            .unwrap();
        assert_eq!(settings.names(), ["demo-1", "demo-2", "demo-3"]);
    }

    #[test]
    fn fleet_errors_carry_their_paths() {
        let raw = RawFleetConfig {
            clusters: Some(0),
            cluster: Vec::new(),
        };
        let errors = raw
            .validate(context(Some(PlatformKind::Docker)))
            .unwrap_err();
        assert_eq!(paths(&errors), ["clusters", "clusters"], "{errors}");

        let raw = listed(vec![
            entry("a", &["http://127.0.0.11:8008"], &["127.0.0.41-127.0.0.45"]),
            entry("a", &["ftp://10.0.0.1:8008"], &["127.0.0.45"]),
            entry("-b", &[], &[]),
            entry("c", &["http://db-c:8008"], &["not-an-address"]),
        ]);
        let errors = raw
            .validate(context(Some(PlatformKind::Docker)))
            .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "cluster[1].name",
                "cluster[1].patroni_urls[0]",
                "cluster[1].addresses",
                "cluster[2].name",
                "cluster[2].patroni_urls",
                "cluster[2].addresses",
                "cluster[3].addresses[0]",
            ],
            "{errors}"
        );
        let overlap = errors.iter().nth(2).unwrap();
        assert!(overlap.message.contains("127.0.0.45"), "{overlap}");
        assert!(overlap.message.contains("`a`"), "{overlap}");
    }

    /// Issue 19: listed clusters of a real platform, anywhere on the network (loopback is the
    /// tests' rule, not the product's), each with its own pool and balancers.
    #[test]
    fn listed_clusters_get_their_own_urls_pools_and_balancers_and_share_the_rest() {
        let mut b = entry(
            "billing",
            &["https://10.1.0.21:8008"],
            &["10.1.0.30-10.1.0.39"],
        );
        b.balancers = Some(RawBalancersConfig {
            runtime_apis: vec!["10.1.0.5:9999".into()],
            backends: vec!["billing_primary".into(), "billing_replicas".into()],
            port: default_member_port(),
            check_port: default_check_port(),
            enable_timeout: default_enable_timeout(),
            member_api_port: None,
        });
        let raw = listed(vec![
            entry(
                "orders",
                &["http://10.1.0.11:8008"],
                &["10.1.0.20-10.1.0.29"],
            ),
            b,
        ]);
        // `[patroni]` as validated (with the first cluster's URLs, as the whole config does).
        let shared = PatroniConfig {
            urls: vec!["http://10.1.0.11:8008".into()],
            timeout: Duration::from_secs(3),
            ..PatroniConfig::default()
        }
        .validate()
        .unwrap();
        let ctx = FleetContext {
            patroni: Some(&shared),
            ..context(Some(PlatformKind::Docker))
        };
        let FleetSettings::Listed { clusters } = raw.validate(ctx).expect("valid") else {
            panic!("listed");
        };
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[0].patroni.urls, ["http://10.1.0.11:8008"]);
        assert_eq!(clusters[1].patroni.urls, ["https://10.1.0.21:8008"]);
        assert_eq!(clusters[1].patroni.timeout, Duration::from_secs(3));
        assert_eq!(clusters[0].addresses.len(), 10);
        assert_eq!(clusters[1].addresses[0].to_string(), "10.1.0.30");
        assert!(clusters[0].balancers.is_none());
        let billing = clusters[1].balancers.as_ref().expect("balancers");
        assert_eq!(billing.backends, ["billing_primary", "billing_replicas"]);
    }

    #[test]
    fn a_fleet_refuses_what_it_cannot_serve_and_needs_one_form() {
        let both = RawFleetConfig {
            clusters: Some(2),
            cluster: vec![entry("a", &["http://127.0.0.11:8008"], &["127.0.0.41"])],
        };
        let mut ctx = context(Some(PlatformKind::Simulated));
        ctx.balancers = true;
        let errors = both.validate(ctx).unwrap_err();
        let text = errors.to_string();
        assert!(text.contains("[fleet.cluster.balancers]"), "{text}");
        assert!(text.contains("not both"), "{text}");
        let neither = RawFleetConfig::default();
        assert!(neither.validate(context(None)).is_err());
        let long = RawFleetConfig {
            clusters: Some(10),
            cluster: Vec::new(),
        };
        let ctx = FleetContext {
            cluster_name: &"c".repeat(61),
            ..context(Some(PlatformKind::Simulated))
        };
        let errors = long.validate(ctx).unwrap_err();
        assert!(errors.to_string().contains("63"), "{errors}");
        // Listed clusters: Docker only, and no adoption rules shared among them.
        let one = listed(vec![entry(
            "a",
            &["http://127.0.0.11:8008"],
            &["127.0.0.41"],
        )]);
        let errors = one
            .validate(context(Some(PlatformKind::Kubernetes)))
            .unwrap_err();
        assert!(errors.to_string().contains("docker"), "{errors}");
        let ctx = FleetContext {
            adopts: true,
            ..context(Some(PlatformKind::Docker))
        };
        let errors = one.validate(ctx).unwrap_err();
        assert!(errors.to_string().contains("adopt"), "{errors}");
        assert!(one.validate(context(Some(PlatformKind::Docker))).is_ok());
    }
}
