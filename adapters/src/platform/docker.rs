//! The Docker platform: members are containers on one or more Docker engines (one engine = one
//! host), reached with bollard.
//!
//! - Members come from a per-role [`Template`] (image, command, env, bind mounts, numeric user),
//!   each with its own address from a configured pool, and carry Steward's labels from birth.
//!   By default a member is on the host network and its address is one of the host's (a
//!   loopback alias on a one-machine lab, the host's own address on real hosts); with
//!   `network = "NAME"` it joins that Docker network (a bridge, macvlan, ipvlan or overlay
//!   network the deployment made) with its address as a static IP there. Only containers with this cluster's labels are ever
//!   listed or touched; any other name is [`ErrorKind::NotFound`].
//! - CPU and memory change live with `docker update`, memory and swap together (Docker refuses
//!   the whole update, CPU included, otherwise). A memory limit below what the container holds
//!   is refused by runc: that is [`ErrorKind::Refused`] with runc's message, and nothing changed.
//! - Fencing stops with a short grace, then kills; a paused (frozen) container is killed at once.
//! - Usage comes from the stats API; memory is the working set, RSS + shared memory from
//!   `memory.stat` ([`working_set`]), never the raw usage, which counts page cache.
//! - Disks go through a [`VolumeProvider`]: `fixed` folders or growable `loop-xfs` images.
//!
//! Configuration is two-staged: [`RawDockerConfig`] (serde, `deny_unknown_fields`) and
//! [`RawDockerConfig::validate`], which lists every problem with its path at once.
//!
//! What this is not: an image builder or a registry client (there is no registry here; see
//! ENVIRONMENT.md for running host programs from an empty imported image), nor a PostgreSQL
//! supervisor. Which containers were fenced is remembered in memory only: after a restart of
//! Steward a fenced container lists as [`PlatformState::Exited`], which is still not running.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerStatsResponse, ContainerUpdateBody, EndpointIpamConfig, EndpointSettings, HostConfig,
    NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use serde::Deserialize;
use steward_model::observation::PlatformState;
use steward_model::ports::{
    Capabilities, Change, CpuUnit, CreateSpec, ErrorKind, KeptData, Placement, Platform,
    PlatformError, PlatformMember, ResizeOutcome, Usage, LABEL_CLUSTER, LABEL_MEMBER,
    LABEL_OPERATION, LABEL_REPLACES, LABEL_ROLE,
};
use steward_model::{ConfigErrors, Role, Size, Timestamp};

use super::volume::{FixedVolumes, LoopXfsVolumes, VolumeError, VolumeProvider};

mod adopt;
pub use adopt::{Adopt, RawAdopt, Selector, RETIRED_SUFFIX};

/// Set in the listed labels of a member Steward adopted (not on the container: Docker labels
/// cannot change), so `/status` and the decision log can tell it from an owned one.
pub const LABEL_ADOPTED: &str = "io.steward.adopted";

/// Label carrying the member's address (the pool is shared by the cluster's members).
pub const LABEL_ADDRESS: &str = "io.steward.address";

/// Appended to a container's name when it is fenced (see [`DockerPlatform::fence`]).
pub const FENCED_SUFFIX: &str = ".fenced";

/// Where local engines' cgroups are visible, for the OOM-kill counters.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Seconds bollard waits for one engine request.
const REQUEST_TIMEOUT_SECS: u64 = 30;

// --- configuration -------------------------------------------------------------------------

/// The Docker platform's configuration as written (TOML or JSON), before validation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerConfig {
    /// The cluster this platform owns (the value of the `io.steward.cluster` label).
    pub cluster: String,
    /// The engines, one per physical host. Members of one role go to different hosts.
    pub hosts: Vec<RawHost>,
    /// Addresses members get (host networking: each must be an address of the host the member
    /// lands on, e.g. a loopback alias on a one-machine lab), each `a.b.c.d` or a range
    /// `127.0.0.10-127.0.0.99`. Every member needs one; the pool belongs to this cluster alone.
    pub addresses: Vec<String>,
    /// How long fencing waits after SIGTERM before SIGKILL (e.g. `2s`). Default 2 s.
    #[serde(default = "default_fence_grace", with = "humantime_serde")]
    pub fence_grace: Duration,
    /// Prefix of container names (`<prefix><member>`), e.g. `steward-demo-`. Default empty.
    #[serde(default)]
    pub name_prefix: String,
    /// Where members' data disks live.
    pub volumes: RawVolumes,
    /// The template of database members.
    pub database: RawTemplate,
    /// The template of balancer members; without it, balancers cannot be created.
    #[serde(default)]
    pub balancer: Option<RawTemplate>,
    /// `required` (default): one member of a role per host, a create with no such host left is
    /// refused. `preferred`: spread when possible, else the host with the fewest (with a warning).
    #[serde(default)]
    pub placement: Placement,
    /// Containers Steward did not create but may manage (`[[platform.docker.adopt]]`).
    #[serde(default)]
    pub adopt: Vec<RawAdopt>,
    /// The Docker network members join: `host` (default: host networking, `addresses` are the
    /// hosts' own) or the name of a network that exists on every engine (a macvlan or ipvlan
    /// network on the hosts' LAN, an overlay across them, a bridge on one host), whose subnet
    /// holds `addresses`: each member gets its address there as a static IP. Steward never
    /// creates or removes networks.
    #[serde(default)]
    pub network: Option<String>,
}

fn default_fence_grace() -> Duration {
    Duration::from_secs(2)
}

/// One engine.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    /// The host's name in listings and placement (e.g. `host-a`).
    pub name: String,
    /// `unix:///var/run/docker.sock`; `tcp://HOST:2376` with `tls` (a remote engine, as
    /// `dockerd --tlsverify` serves it); `http://127.0.0.1:PORT` or plain `tcp://` only with
    /// `insecure = true` (unless loopback `http://`).
    pub endpoint: String,
    /// The client certificate, its key and the CA that signed the engine's certificate (PEM
    /// files), as `docker --tlsverify` takes them.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// Allows a plain (unencrypted, unauthenticated) TCP engine that is not on loopback.
    #[serde(default)]
    pub insecure: bool,
}

/// `hosts[].tls`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The data disk provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVolumes {
    /// `fixed` (a folder per member, cannot grow) or `loop-xfs` (an XFS image per member,
    /// grown online; at least 300 MiB).
    pub kind: String,
    /// An absolute folder on the machine running the engines, holding every member's volume.
    pub root: PathBuf,
    /// The data disk of a member whose size nobody knows: a replacement of an adopted member
    /// (its disk is not Steward's volume, so its size is unknown). Bytes, or `"20GiB"`.
    #[serde(default)]
    pub default_size: Option<serde_json::Value>,
}

/// `"20GiB"`, `"512MiB"`, `"1TiB"`, `"1000000"` or a plain number: bytes.
fn parse_size(v: &serde_json::Value) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let text = v
        .as_str()
        .ok_or_else(|| format!("`{v}`: expected bytes or a size such as \"20GiB\""))?
        .trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a whole number and a unit such as 20GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// How a member of one role is made.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    /// The image (e.g. `steward-empty:1` imported from an empty tar).
    pub image: String,
    /// The command and its arguments. `{member}`, `{address}`, `{cluster}`, `{role}` and
    /// `{data}` (the data path inside) are replaced in every argument and env value.
    pub command: Vec<String>,
    /// Environment variables (values take the same placeholders).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Bind mounts `/host/path:/container/path[:ro|:rw]`, e.g. the host's `/usr:/usr:ro`.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Numeric `uid[:gid]` (names are looked up in the image, which may be empty).
    #[serde(default)]
    pub user: Option<String>,
    /// Where the member's data volume is mounted inside (absolute); none without it.
    #[serde(default)]
    pub data_path: Option<String>,
    /// A host folder under which each member gets its own `/tmp` (mode 1777); a tmpfs `/tmp`
    /// loses its mode after a restart (ENVIRONMENT.md).
    #[serde(default)]
    pub tmp_root: Option<PathBuf>,
    /// The `oom_score_adj` postgres gives its backends (`PG_OOM_ADJUST_VALUE`, with
    /// `PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj`, and `STEWARD_PG_OOM_SCORE_ADJ` for an
    /// entrypoint): the OOM killer then takes a backend, not Patroni. -1000..=1000; databases only.
    #[serde(default)]
    pub postgres_oom_score_adj: Option<i32>,
    /// Docker restart policy: `no` (default), `on-failure`, `unless-stopped` or `always`.
    #[serde(default = "default_restart")]
    pub restart_policy: String,
}

/// Env values may hold secrets (a replication password): `Debug` shows the names only.
struct EnvNames<'a>(&'a BTreeMap<String, String>);

impl std::fmt::Debug for EnvNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

impl std::fmt::Debug for RawTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTemplate")
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &EnvNames(&self.env))
            .field("mounts", &self.mounts)
            .field("user", &self.user)
            .field("data_path", &self.data_path)
            .field("tmp_root", &self.tmp_root)
            .field("postgres_oom_score_adj", &self.postgres_oom_score_adj)
            .field("restart_policy", &self.restart_policy)
            .finish()
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &EnvNames(&self.env))
            .field("mounts", &self.mounts)
            .field("user", &self.user)
            .field("data_path", &self.data_path)
            .field("tmp_root", &self.tmp_root)
            .field("postgres_oom_score_adj", &self.postgres_oom_score_adj)
            .field("restart_policy", &self.restart_policy)
            .finish()
    }
}

fn default_restart() -> String {
    "no".to_string()
}

/// A validated engine address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// Plain HTTP: `http://127.x.y.z:port` (wiremock in tests), or any `tcp://`/`http://` engine
    /// the config marked `insecure`.
    Http(String),
    /// `tcp://host:port` over TLS with a client certificate.
    Tls {
        address: String,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
}

/// A validated engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub endpoint: Endpoint,
}

/// Which volume provider, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    Fixed(PathBuf),
    LoopXfs(PathBuf),
}

/// A validated bind mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub host: String,
    pub container: String,
    pub read_only: bool,
}

/// A validated template.
#[derive(Clone, PartialEq)]
pub struct Template {
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Bind>,
    pub user: Option<String>,
    pub data_path: Option<String>,
    pub tmp_root: Option<PathBuf>,
    pub postgres_oom_score_adj: Option<i32>,
    pub restart_policy: RestartPolicyNameEnum,
}

/// The validated configuration: what it says can be done.
#[derive(Clone, Debug, PartialEq)]
pub struct DockerConfig {
    pub cluster: String,
    pub hosts: Vec<HostSpec>,
    pub addresses: Vec<Ipv4Addr>,
    pub fence_grace: Duration,
    pub name_prefix: String,
    pub volumes: VolumeKind,
    /// `volumes.default_size`: the disk of a member whose size is unknown.
    pub default_disk_bytes: Option<u64>,
    pub database: Template,
    pub balancer: Option<Template>,
    pub placement: Placement,
    pub adopt: Vec<Adopt>,
    pub network: Network,
}

/// Where members' containers are attached (`network`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// Host networking: a member's address is one of its host's.
    #[default]
    Host,
    /// A named Docker network; a member's address is its static IP there.
    Named(String),
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn validate_endpoint(h: &RawHost) -> Result<Endpoint, String> {
    let text = h.endpoint.as_str();
    if let Some(path) = text.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!("`{text}`: the socket path must be absolute"));
        }
        if h.tls.is_some() {
            return Err(format!("`{text}`: a unix socket takes no `tls`"));
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    let Some((scheme, rest)) = text
        .split_once("://")
        .filter(|(s, _)| matches!(*s, "tcp" | "http" | "https"))
    else {
        return Err(format!(
            "`{text}`: expected unix:///path/to/docker.sock, tcp://HOST:2376 (with `tls`) or \
             http://127.0.0.1:PORT"
        ));
    };
    let authority = rest.trim_end_matches('/');
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => {
            return Err(format!(
                "`{text}`: give the engine's port (tcp://HOST:2376)"
            ))
        }
    };
    if host.is_empty() || authority.contains(['/', '@']) {
        return Err(format!("`{text}`: expected tcp://HOST:PORT"));
    }
    if let Some(tls) = &h.tls {
        for (field, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
            if !path.is_absolute() {
                return Err(format!(
                    "tls.{field}: `{}` must be an absolute path",
                    path.display()
                ));
            }
        }
        return Ok(Endpoint::Tls {
            address: format!("{host}:{}", &authority[host.len() + 1..]),
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        });
    }
    if scheme == "https" {
        return Err(format!(
            "`{text}`: an https engine needs `tls` (ca, cert, key)"
        ));
    }
    let loopback = host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback());
    if !loopback && !h.insecure {
        return Err(format!(
            "`{text}`: a plain TCP engine lets anyone who reaches it run containers as root; give \
             `tls = {{ ca = ..., cert = ..., key = ... }}` (dockerd --tlsverify), or \
             `insecure = true` if the network is yours alone"
        ));
    }
    Ok(Endpoint::Http(format!("http://{authority}")))
}

impl RawTemplate {
    fn validate(&self, role: Role, errors: &mut ConfigErrors) -> Template {
        if self.image.trim().is_empty() {
            errors.push("image", "must not be empty");
        }
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            errors.push("command", "must name a program");
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') {
                errors.push(
                    format!("env.{key}"),
                    "a variable name must be non-empty and without `=`",
                );
            }
        }
        let mut mounts = Vec::new();
        for (i, m) in self.mounts.iter().enumerate() {
            let parts: Vec<&str> = m.split(':').collect();
            let mode_ok = parts.len() == 2 || (parts.len() == 3 && matches!(parts[2], "ro" | "rw"));
            if !mode_ok
                || !parts[0].starts_with('/')
                || !parts.get(1).is_some_and(|p| p.starts_with('/'))
            {
                errors.push(
                    format!("mounts[{i}]"),
                    format!("`{m}`: expected /host/path:/container/path[:ro|:rw]"),
                );
                continue;
            }
            mounts.push(Bind {
                host: parts[0].into(),
                container: parts[1].into(),
                read_only: parts.get(2) == Some(&"ro"),
            });
        }
        if let Some(user) = &self.user {
            let numeric = user.split(':').count() <= 2
                && user
                    .split(':')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            if !numeric {
                errors.push(
                    "user",
                    format!(
                        "`{user}`: must be numeric uid[:gid] (names are looked up in the image)"
                    ),
                );
            }
        }
        if let Some(p) = &self.data_path {
            if !p.starts_with('/') {
                errors.push("data_path", format!("`{p}` must be absolute"));
            }
        }
        if let Some(p) = &self.tmp_root {
            if !p.is_absolute() {
                errors.push("tmp_root", format!("`{}` must be absolute", p.display()));
            }
        }
        if let Some(score) = self.postgres_oom_score_adj {
            if !(-1000..=1000).contains(&score) {
                errors.push(
                    "postgres_oom_score_adj",
                    format!("{score} is outside -1000..=1000"),
                );
            }
            if role != Role::Database {
                errors.push(
                    "postgres_oom_score_adj",
                    "only database members run postgres",
                );
            }
        }
        let restart_policy = match self.restart_policy.as_str() {
            "no" => RestartPolicyNameEnum::NO,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "always" => RestartPolicyNameEnum::ALWAYS,
            other => {
                errors.push(
                    "restart_policy",
                    format!("`{other}`: expected no, on-failure, unless-stopped or always"),
                );
                RestartPolicyNameEnum::NO
            }
        };
        Template {
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            mounts,
            user: self.user.clone(),
            data_path: self.data_path.clone(),
            tmp_root: self.tmp_root.clone(),
            postgres_oom_score_adj: self.postgres_oom_score_adj,
            restart_policy,
        }
    }
}

impl RawDockerConfig {
    /// Checks everything, collecting every problem with its path (`hosts[1].endpoint`,
    /// `database.user`, ...).
    pub fn validate(&self) -> Result<DockerConfig, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        if !valid_name(&self.cluster) {
            errors.push(
                "cluster",
                format!("`{}`: use letters, digits, `-`, `_` and `.`", self.cluster),
            );
        }
        if self.hosts.is_empty() {
            errors.push("hosts", "at least one engine is needed");
        }
        let mut hosts = Vec::new();
        let mut names = BTreeSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if !valid_name(&h.name) {
                errors.push(
                    format!("hosts[{i}].name"),
                    format!("`{}`: use letters, digits, `-`, `_` and `.`", h.name),
                );
            } else if !names.insert(h.name.clone()) {
                errors.push(
                    format!("hosts[{i}].name"),
                    format!("`{}` is listed twice", h.name),
                );
            }
            match validate_endpoint(h) {
                Ok(endpoint) => hosts.push(HostSpec {
                    name: h.name.clone(),
                    endpoint,
                }),
                Err(e) => errors.push(format!("hosts[{i}].endpoint"), e),
            }
        }
        let mut addresses = Vec::new();
        for (i, a) in self.addresses.iter().enumerate() {
            match super::parse_address_range(a) {
                Ok(mut list) => addresses.append(&mut list),
                Err(e) => errors.push(format!("addresses[{i}]"), e),
            }
        }
        let unique: BTreeSet<_> = addresses.iter().collect();
        if unique.len() != addresses.len() {
            errors.push("addresses", "an address is listed twice");
        }
        if self.addresses.is_empty() {
            errors.push("addresses", "at least one address is needed");
        }
        if self.fence_grace > Duration::from_secs(60) {
            errors.push("fence_grace", "at most 60s: a fence must be quick");
        }
        if !self.name_prefix.is_empty() && !valid_name(&self.name_prefix) {
            errors.push(
                "name_prefix",
                format!(
                    "`{}`: use letters, digits, `-`, `_` and `.`",
                    self.name_prefix
                ),
            );
        }
        if !self.volumes.root.is_absolute() {
            errors.push(
                "volumes.root",
                format!("`{}` must be absolute", self.volumes.root.display()),
            );
        }
        let default_disk_bytes = self.volumes.default_size.as_ref().and_then(|v| {
            parse_size(v)
                .map_err(|e| errors.push("volumes.default_size", e))
                .ok()
        });
        let volumes = match self.volumes.kind.as_str() {
            "fixed" => VolumeKind::Fixed(self.volumes.root.clone()),
            "loop-xfs" => VolumeKind::LoopXfs(self.volumes.root.clone()),
            other => {
                errors.push(
                    "volumes.kind",
                    format!("`{other}`: expected fixed or loop-xfs"),
                );
                VolumeKind::Fixed(self.volumes.root.clone())
            }
        };
        let mut inner = ConfigErrors::default();
        let database = self.database.validate(Role::Database, &mut inner);
        errors.extend_under("database", inner);
        let balancer = self.balancer.as_ref().map(|b| {
            let mut inner = ConfigErrors::default();
            let t = b.validate(Role::Balancer, &mut inner);
            errors.extend_under("balancer", inner);
            t
        });
        let adopt = self
            .adopt
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut inner = ConfigErrors::default();
                let rule = a.validate(&hosts, &mut inner);
                errors.extend_under(&format!("adopt[{i}]"), inner);
                rule
            })
            .collect();
        let network = match self.network.as_deref() {
            None | Some("host") => Network::Host,
            Some(name) if valid_name(name) => Network::Named(name.to_string()),
            Some(name) => {
                errors.push(
                    "network",
                    format!("`{name}`: a Docker network name (letters, digits, `-`, `_`, `.`) or `host`"),
                );
                Network::Host
            }
        };
        errors.into_result(DockerConfig {
            network,
            cluster: self.cluster.clone(),
            hosts,
            addresses,
            fence_grace: self.fence_grace,
            name_prefix: self.name_prefix.clone(),
            volumes,
            default_disk_bytes,
            database,
            balancer,
            placement: self.placement,
            adopt,
        })
    }
}

// --- errors and pure helpers ---------------------------------------------------------------

/// The CPU limit in vCPUs: `NanoCpus` (what Steward sets), else `CpuQuota / CpuPeriod` (what
/// `docker run --cpu-quota` or Compose may have set on an adopted container); 0 when unlimited.
fn cpus_of(hc: &HostConfig) -> f64 {
    match (hc.nano_cpus, hc.cpu_quota, hc.cpu_period) {
        (Some(n), _, _) if n > 0 => n as f64 / 1e9,
        (_, Some(q), Some(p)) if q > 0 && p > 0 => q as f64 / p as f64,
        _ => 0.0,
    }
}

/// Where an adopted container serves: what its Patroni environment advertises, else its first
/// Docker network address ([`adopt::address_of`]).
fn inspected_address(c: &ContainerInspectResponse) -> Option<String> {
    let env = c
        .config
        .as_ref()
        .and_then(|cfg| cfg.env.clone())
        .unwrap_or_default();
    let networks: Vec<String> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| {
            n.values()
                .filter_map(|e| e.ip_address.clone())
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default();
    adopt::address_of(&env, &networks)
}

/// Checks that `network` exists on the engine and that its IPv4 subnets hold every address
/// of the pool: a member created there with an address outside would be refused by the engine
/// at the worst moment (a repair), so it is said at start.
async fn check_network(
    client: &Docker,
    network: &str,
    addresses: &[Ipv4Addr],
) -> Result<(), String> {
    let inspected = match client.inspect_network(network, None).await {
        Ok(n) => n,
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(format!(
                "network `{network}` does not exist: create it (`docker network create \
                 --subnet CIDR {network}`, or the macvlan/overlay network the hosts share) or \
                 remove `network` to use host networking"
            ))
        }
        Err(e) => return Err(format!("cannot inspect network `{network}`: {e}")),
    };
    let subnets: Vec<String> = inspected
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.subnet)
        .collect();
    let outside: Vec<String> = addresses
        .iter()
        .filter(|a| !subnets.iter().any(|s| subnet_contains(s, **a)))
        .map(Ipv4Addr::to_string)
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(format!(
        "network `{network}` (subnets {}) does not hold the addresses {}: give `addresses` \
         from its subnet",
        if subnets.is_empty() {
            "none".to_string()
        } else {
            subnets.join(", ")
        },
        shorten(&outside)
    ))
}

/// Whether the IPv4 CIDR `subnet` (`10.1.2.0/24`) holds `address`; false for IPv6 subnets.
fn subnet_contains(subnet: &str, address: Ipv4Addr) -> bool {
    let Some((base, bits)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(bits)) = (base.parse::<Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    if bits > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(base) & mask == u32::from(address) & mask
}

/// A long list said by its first few.
fn shorten(items: &[String]) -> String {
    const SHOWN: usize = 4;
    if items.len() <= SHOWN {
        return items.join(", ");
    }
    format!(
        "{} and {} more",
        items[..SHOWN].join(", "),
        items.len() - SHOWN
    )
}

/// Classifies an engine error. `refusal`: a 500 on this call means the engine (runc) refused
/// the request as asked, not that it is unwell (true for `update`).
fn classify(operation: &str, e: DockerError, refusal: bool) -> PlatformError {
    let (kind, message) = match &e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let kind = match status_code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                500 if refusal => ErrorKind::Refused,
                400 | 403 | 406 => ErrorKind::Permanent,
                _ => ErrorKind::Transient,
            };
            (kind, message.clone())
        }
        DockerError::RequestTimeoutError
        | DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        // Connection refused or reset: the engine is down or restarting.
        | DockerError::HyperLegacyError { .. }
        | DockerError::SocketNotFoundError(_) => (ErrorKind::Transient, e.to_string()),
        _ => (ErrorKind::Permanent, e.to_string()),
    };
    PlatformError::new(kind, operation, message).with_source(e)
}

fn volume_error(operation: &str, e: VolumeError) -> PlatformError {
    let kind = match e {
        VolumeError::CannotGrow | VolumeError::Shrink { .. } | VolumeError::TooSmall { .. } => {
            ErrorKind::Permanent
        }
        // The container exists but its volume does not: not a missing member, and not
        // something a retry fixes.
        VolumeError::Missing(_) => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    };
    PlatformError::new(kind, operation, e.to_string()).with_source(e)
}

/// Where a container writes: its writable mounts' host folders (or volume names).
fn written_mounts(mounts: Option<Vec<bollard::models::MountPoint>>) -> Vec<String> {
    mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.rw != Some(false))
        .filter_map(|m| m.source.or(m.name))
        .collect()
}

fn not_found(operation: &str, member: &str, cluster: &str) -> PlatformError {
    PlatformError::new(
        ErrorKind::NotFound,
        operation,
        format!("no container of cluster `{cluster}` is member `{member}`"),
    )
}

/// The memory a container really holds: RSS + shared memory (postgres' shared_buffers), from
/// `memory.stat`. Page cache is left out: a freshly cloned replica shows 1.4 GiB of cache
/// (ENVIRONMENT.md), which a memory policy must not read as demand. cgroup v1 names the figures
/// `rss` and `shmem` (`mapped_file` on kernels without `shmem`); cgroup v2 `anon` and `shmem`.
pub fn working_set(stats: &HashMap<String, u64>) -> Option<u64> {
    let anon = stats
        .get("rss")
        .or_else(|| stats.get("total_rss"))
        .or_else(|| stats.get("anon"))?;
    let shared = stats
        .get("shmem")
        .or_else(|| stats.get("total_shmem"))
        .or_else(|| stats.get("mapped_file"))
        .copied()
        .unwrap_or(0);
    Some(anon + shared)
}

/// vCPUs used between the two samples of one stats answer (`docker stats` arithmetic).
pub fn cpu_used(stats: &ContainerStatsResponse) -> Option<f64> {
    let now = stats.cpu_stats.as_ref()?;
    let pre = stats.precpu_stats.as_ref()?;
    let cpu =
        now.cpu_usage.as_ref()?.total_usage? as f64 - pre.cpu_usage.as_ref()?.total_usage? as f64;
    let system = now.system_cpu_usage? as f64 - pre.system_cpu_usage? as f64;
    let cpus = now.online_cpus.filter(|n| *n > 0)? as f64;
    (system > 0.0 && cpu >= 0.0).then(|| cpu / system * cpus)
}

/// The kernel's OOM-kill counter of a container's cgroup: `oom_kill N` in cgroup v1's
/// `memory.oom_control` or v2's `memory.events`. It counts kills of any process inside, which
/// is the signal that matters: with postgres raising its backends' `oom_score_adj`, the kernel
/// kills a backend and the container keeps running (ENVIRONMENT.md), so the container state
/// never shows it. `None` when the cgroup is not visible (remote engine, other layout).
async fn oom_kills(root: &Path, id: &str) -> Option<u64> {
    let candidates = [
        root.join("memory/docker")
            .join(id)
            .join("memory.oom_control"),
        root.join("docker").join(id).join("memory.events"),
        root.join("system.slice")
            .join(format!("docker-{id}.scope"))
            .join("memory.events"),
    ];
    for path in candidates {
        if let Ok(text) = tokio::fs::read_to_string(&path).await {
            return parse_oom_kill(&text);
        }
    }
    None
}

/// Reads the `oom_kill N` line of `memory.oom_control` / `memory.events`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

fn substitute(text: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(text.to_string(), |acc, (k, v)| {
        acc.replace(&format!("{{{k}}}"), v)
    })
}

// --- the platform --------------------------------------------------------------------------

/// One engine with its name.
#[derive(Clone, Debug)]
pub struct Engine {
    pub name: String,
    pub client: Docker,
}

/// An owned container found on an engine.
#[derive(Clone, Debug)]
struct Found {
    host: usize,
    id: String,
    member: String,
    role: Option<Role>,
    address: Option<String>,
    /// Running or paused: it has a cgroup and usage (a paused one uses no CPU).
    alive: bool,
    /// The adoption rule (index into `config.adopt`) that took it; `None` when Steward made it.
    adopted: Option<usize>,
    /// The container's name on its engine.
    container: String,
}

/// What an adoption rule took (`steward check-config --resolve`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptedMatch {
    /// Index into `[[platform.docker.adopt]]`.
    pub rule: usize,
    pub member: String,
    pub container: String,
    pub host: String,
}

/// The Docker [`Platform`] for one cluster.
#[derive(Debug)]
pub struct DockerPlatform {
    config: DockerConfig,
    engines: Vec<Engine>,
    volumes: Arc<dyn VolumeProvider>,
    /// Members this process fenced (Docker labels cannot change after creation).
    fenced: Mutex<BTreeSet<String>>,
}

/// Connecting to an engine failed, or it lacks what the configuration needs.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach docker engine `{host}`")]
    Unreachable {
        host: String,
        #[source]
        source: DockerError,
    },
    /// `network` names a network the engine does not have, or whose subnets do not hold the
    /// address pool.
    #[error("docker engine `{host}`: {message}")]
    Network { host: String, message: String },
}

impl DockerPlatform {
    /// Connects to every engine of `config` (negotiating the API version: Debian's engine
    /// speaks 1.41) and builds the configured volume provider.
    pub async fn connect(config: DockerConfig) -> Result<Self, ConnectError> {
        let mut engines = Vec::new();
        for h in &config.hosts {
            let err = |source| ConnectError::Unreachable {
                host: h.name.clone(),
                source,
            };
            let client = match &h.endpoint {
                Endpoint::Unix(path) => Docker::connect_with_unix(
                    &path.to_string_lossy(),
                    REQUEST_TIMEOUT_SECS,
                    bollard::API_DEFAULT_VERSION,
                ),
                Endpoint::Http(url) => Docker::connect_with_http(
                    url,
                    REQUEST_TIMEOUT_SECS,
                    bollard::API_DEFAULT_VERSION,
                ),
                Endpoint::Tls {
                    address,
                    ca,
                    cert,
                    key,
                } => Docker::connect_with_ssl(
                    address,
                    key,
                    cert,
                    ca,
                    REQUEST_TIMEOUT_SECS,
                    bollard::API_DEFAULT_VERSION,
                ),
            }
            .map_err(err)?;
            let client = client.negotiate_version().await.map_err(err)?;
            if let Network::Named(network) = &config.network {
                check_network(&client, network, &config.addresses)
                    .await
                    .map_err(|message| ConnectError::Network {
                        host: h.name.clone(),
                        message,
                    })?;
            }
            engines.push(Engine {
                name: h.name.clone(),
                client,
            });
        }
        let volumes: Arc<dyn VolumeProvider> = match &config.volumes {
            VolumeKind::Fixed(root) => Arc::new(FixedVolumes::new(root)),
            VolumeKind::LoopXfs(root) => Arc::new(LoopXfsVolumes::new(root)),
        };
        Ok(Self::with_engines(config, engines, volumes))
    }

    /// A platform over engines connected elsewhere (tests, or a wiremock engine).
    pub fn with_engines(
        config: DockerConfig,
        engines: Vec<Engine>,
        volumes: Arc<dyn VolumeProvider>,
    ) -> Self {
        DockerPlatform {
            config,
            engines,
            volumes,
            fenced: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// This platform for another cluster of a fleet: the same engines, over the same
    /// connections, and the same templates, volumes and placement, for the members labelled
    /// `cluster`, which get their addresses from `addresses`. Adoption rules are not carried
    /// over (a rule that matched one cluster's containers would match them for every cluster).
    pub fn for_cluster(&self, cluster: &str, addresses: Vec<Ipv4Addr>) -> DockerPlatform {
        let config = DockerConfig {
            cluster: cluster.to_string(),
            addresses,
            adopt: Vec::new(),
            ..self.config.clone()
        };
        DockerPlatform::with_engines(config, self.engines.clone(), Arc::clone(&self.volumes))
    }

    /// Every container the adoption rules take now, with the rule that took it: a read-only
    /// listing of every engine (`steward check-config --resolve`).
    pub async fn adopted(&self) -> Result<Vec<AdoptedMatch>, PlatformError> {
        let found = self.find("resolve adoption rules", None).await?;
        Ok(found
            .into_iter()
            .filter_map(|f| {
                Some(AdoptedMatch {
                    rule: f.adopted?,
                    member: f.member,
                    container: f.container,
                    host: self.engines[f.host].name.clone(),
                })
            })
            .collect())
    }

    fn container_name(&self, member: &str) -> String {
        format!("{}{member}", self.config.name_prefix)
    }

    fn template(&self, role: Role) -> Option<&Template> {
        match role {
            Role::Database => Some(&self.config.database),
            Role::Balancer => self.config.balancer.as_ref(),
        }
    }

    fn fenced(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every container (running or not) on every engine that passes `filters`, with its
    /// engine's index.
    async fn containers(
        &self,
        operation: &str,
        filters: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<(usize, bollard::models::ContainerSummary)>, PlatformError> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(filters)
            .build();
        let lists = futures::future::join_all(
            self.engines
                .iter()
                .map(|e| e.client.list_containers(Some(options.clone()))),
        )
        .await;
        let mut all = Vec::new();
        for (host, list) in lists.into_iter().enumerate() {
            let list = list.map_err(|e| classify(operation, e, false))?;
            all.extend(list.into_iter().map(|c| (host, c)));
        }
        Ok(all)
    }

    /// Every container carrying this cluster's label, and every container an adoption rule
    /// takes, on every engine; `member` narrows to one.
    async fn find(
        &self,
        operation: &str,
        member: Option<&str>,
    ) -> Result<Vec<Found>, PlatformError> {
        // Without adoption rules the engine filters by label; with them it lists everything
        // (one call, not two), and the rules pick.
        let filters = if self.config.adopt.is_empty() {
            let mut labels = vec![format!("{LABEL_CLUSTER}={}", self.config.cluster)];
            if let Some(m) = member {
                labels.push(format!("{LABEL_MEMBER}={m}"));
            }
            HashMap::from([("label".to_string(), labels)])
        } else {
            HashMap::new()
        };
        let mut found = Vec::new();
        for (host, c) in self.containers(operation, &filters).await? {
            let labels = c.labels.unwrap_or_default();
            let container_name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(String::as_str)
                .unwrap_or_default();
            // The engine filtered already; checking again keeps ownership independent of it
            // (a wiremock engine, or an engine that ignores filters).
            let (name, role, address, adopted) =
                if labels.get(LABEL_CLUSTER) == Some(&self.config.cluster) {
                    let Some(name) = labels.get(LABEL_MEMBER).cloned() else {
                        continue;
                    };
                    let role = labels.get(LABEL_ROLE).and_then(|r| r.parse().ok());
                    (name, role, labels.get(LABEL_ADDRESS).cloned(), None)
                } else if let Some((rule, name)) =
                    adopt::adopted_by(&self.config.adopt, host, container_name, &labels)
                {
                    let r = &self.config.adopt[rule];
                    (
                        name,
                        Some(r.role),
                        r.address.map(|a| a.to_string()),
                        Some(rule),
                    )
                } else {
                    continue;
                };
            if member.is_some_and(|m| m != name) {
                continue;
            }
            found.push(Found {
                host,
                id: c.id.unwrap_or_default(),
                member: name,
                role,
                address,
                alive: c.state.is_some_and(|s| {
                    use bollard::models::ContainerSummaryStateEnum as S;
                    matches!(s, S::RUNNING | S::PAUSED)
                }),
                adopted,
                container: container_name.trim_start_matches('/').to_string(),
            });
        }
        Ok(found)
    }

    async fn resolve(&self, operation: &str, member: &str) -> Result<Found, PlatformError> {
        let mut found = self.find(operation, Some(member)).await?;
        match found.len() {
            0 => Err(not_found(operation, member, &self.config.cluster)),
            1 => Ok(found.remove(0)),
            n => Err(PlatformError::new(
                ErrorKind::Conflict,
                operation,
                format!("{n} containers claim to be member `{member}`; remove the extra ones"),
            )),
        }
    }

    async fn inspect(
        &self,
        operation: &str,
        f: &Found,
    ) -> Result<ContainerInspectResponse, PlatformError> {
        self.engines[f.host]
            .client
            .inspect_container(&f.id, None)
            .await
            .map_err(|e| classify(operation, e, false))
    }

    async fn to_member(&self, f: &Found, c: &ContainerInspectResponse) -> PlatformMember {
        let hc = c.host_config.clone().unwrap_or_default();
        let mut labels: BTreeMap<String, String> = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        if f.adopted.is_some() {
            labels.insert(LABEL_ADOPTED.into(), "true".into());
        }
        let st = c.state.clone().unwrap_or_default();
        let state = if st.running == Some(true) && st.paused == Some(true) {
            PlatformState::Paused
        } else if st.restarting == Some(true) {
            PlatformState::Restarting
        } else if st.running == Some(true) {
            PlatformState::Running
        } else if c
            .name
            .as_deref()
            .is_some_and(|n| n.ends_with(FENCED_SUFFIX))
            || self.fenced().contains(&f.member)
        {
            PlatformState::Fenced
        } else if st.oom_killed == Some(true) {
            PlatformState::OomKilled
        } else if st.status == Some(ContainerStateStatusEnum::CREATED) {
            PlatformState::Creating
        } else if matches!(
            st.status,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
        ) {
            PlatformState::Exited
        } else {
            PlatformState::Unknown
        };
        // The date's Rust type depends on bollard's features; its JSON form does not.
        let created_at = serde_json::to_value(&c.created)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .and_then(|s| Timestamp::parse(&s).ok());
        // An adopted member's disk is not one of Steward's volumes: its size is unknown (0).
        let disk_bytes = match f.adopted {
            None => self.volumes.size(&f.member).await.unwrap_or(0),
            Some(_) => 0,
        };
        PlatformMember {
            name: f.member.clone(),
            cluster: self.config.cluster.clone(),
            role: f.role.unwrap_or(Role::Database),
            size: Size {
                cpus: cpus_of(&hc),
                memory_bytes: hc.memory.unwrap_or(0).max(0) as u64,
                disk_bytes,
            },
            state,
            address: f
                .address
                .clone()
                .or_else(|| f.adopted.and_then(|_| inspected_address(c)))
                .unwrap_or_default(),
            host: self.engines[f.host].name.clone(),
            labels: labels.into(),
            created_at,
            restart_count: c.restart_count.unwrap_or(0).max(0) as u32,
        }
    }

    fn body(
        &self,
        spec: &CreateSpec,
        template: &Template,
        address: &str,
        data: Option<&Path>,
        tmp: Option<&Path>,
    ) -> ContainerCreateBody {
        let data_inside = template.data_path.clone().unwrap_or_default();
        let vars = [
            ("member", spec.name.as_str()),
            ("address", address),
            ("cluster", spec.cluster.as_str()),
            ("role", spec.role.as_str()),
            ("data", data_inside.as_str()),
        ];
        let mut env: BTreeMap<String, String> = template
            .env
            .iter()
            .map(|(k, v)| (k.clone(), substitute(v, &vars)))
            .collect();
        env.insert("STEWARD_CLUSTER".into(), spec.cluster.clone());
        env.insert("STEWARD_MEMBER".into(), spec.name.clone());
        env.insert("STEWARD_ADDRESS".into(), address.to_string());
        if let (Role::Database, Some(score)) = (spec.role, template.postgres_oom_score_adj) {
            // PostgreSQL's own knobs: the postmaster writes VALUE into FILE in each child it
            // forks, so the OOM killer takes a backend (postgres recovers) rather than Patroni.
            env.insert(
                "PG_OOM_ADJUST_FILE".into(),
                "/proc/self/oom_score_adj".into(),
            );
            env.insert("PG_OOM_ADJUST_VALUE".into(), score.to_string());
            env.insert("STEWARD_PG_OOM_SCORE_ADJ".into(), score.to_string());
        }
        let mut binds: Vec<String> = template
            .mounts
            .iter()
            .map(|b| {
                format!(
                    "{}:{}:{}",
                    b.host,
                    b.container,
                    if b.read_only { "ro" } else { "rw" }
                )
            })
            .collect();
        if let (Some(host), Some(inside)) = (data, &template.data_path) {
            binds.push(format!("{}:{inside}:rw", host.display()));
        }
        if let Some(tmp) = tmp {
            binds.push(format!("{}:/tmp:rw", tmp.display()));
        }
        let mut labels = HashMap::from([
            (LABEL_CLUSTER.to_string(), spec.cluster.clone()),
            (LABEL_ROLE.to_string(), spec.role.as_str().to_string()),
            (LABEL_MEMBER.to_string(), spec.name.clone()),
            (LABEL_OPERATION.to_string(), spec.operation_id.clone()),
            (LABEL_ADDRESS.to_string(), address.to_string()),
        ]);
        if let Some(replaced) = &spec.replaces {
            labels.insert(LABEL_REPLACES.to_string(), replaced.clone());
        }
        let memory = spec.size.memory_bytes as i64;
        let (network_mode, networking_config) = match &self.config.network {
            Network::Host => ("host".to_string(), None),
            Network::Named(name) => (
                name.clone(),
                Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        name.clone(),
                        EndpointSettings {
                            ipam_config: Some(EndpointIpamConfig {
                                ipv4_address: Some(address.to_string()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    )])),
                }),
            ),
        };
        ContainerCreateBody {
            image: Some(template.image.clone()),
            cmd: Some(
                template
                    .command
                    .iter()
                    .map(|a| substitute(a, &vars))
                    .collect(),
            ),
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            user: template.user.clone(),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network_mode),
                binds: Some(binds),
                nano_cpus: Some((spec.size.cpus * 1e9).round() as i64),
                memory: Some(memory),
                // Swap equal to memory: no swap on top, and `update` must send both anyway.
                memory_swap: Some(memory),
                restart_policy: Some(RestartPolicy {
                    name: Some(template.restart_policy),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        }
    }

    async fn make_tmp(
        &self,
        template: &Template,
        member: &str,
    ) -> Result<Option<PathBuf>, PlatformError> {
        let Some(root) = &template.tmp_root else {
            return Ok(None);
        };
        let dir = root.join(member);
        let op = format!("create member {member}");
        let io = |e: std::io::Error| {
            PlatformError::new(
                ErrorKind::Transient,
                op.clone(),
                format!("{}: {e}", dir.display()),
            )
            .with_source(e)
        };
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))
            .await
            .map_err(io)?;
        Ok(Some(dir))
    }

    /// Create without the span (see [`Platform::create`]).
    async fn create_member(&self, spec: &CreateSpec) -> Result<PlatformMember, PlatformError> {
        let op = format!("create member {}", spec.name);
        if spec.cluster != self.config.cluster {
            let msg = format!(
                "this platform owns cluster `{}`, not `{}`",
                self.config.cluster, spec.cluster
            );
            return Err(PlatformError::new(ErrorKind::Permanent, op, msg));
        }
        if !valid_name(&spec.name) {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!("`{}` is not a valid member name", spec.name),
            ));
        }
        let template = self.template(spec.role).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Permanent,
                op.clone(),
                format!("no template for {} members", spec.role),
            )
        })?;
        let owned = self.find(&op, None).await?;
        if owned.iter().any(|f| f.member == spec.name) {
            return Err(PlatformError::new(
                ErrorKind::Conflict,
                op,
                format!("member `{}` exists already", spec.name),
            ));
        }
        let per_host: Vec<usize> = (0..self.engines.len())
            .map(|h| {
                owned
                    .iter()
                    .filter(|f| f.host == h && f.role == Some(spec.role))
                    .count()
            })
            .collect();
        let (host, shared) = self.config.placement.pick(&per_host).ok_or_else(|| {
            let msg = format!(
                "no host left without a {} member of cluster `{}` ({} hosts, each holds one; \
                 `placement = \"preferred\"` lets members share a host)",
                spec.role,
                self.config.cluster,
                self.engines.len()
            );
            PlatformError::new(ErrorKind::Refused, op.clone(), msg)
        })?;
        if shared {
            tracing::warn!(
                member = %spec.name,
                host = %self.engines[host].name,
                sharing_with = per_host[host],
                "no host without a {} member is left: placed beside another (placement = preferred)",
                spec.role
            );
        }
        let mut taken: BTreeSet<String> = owned.iter().filter_map(|f| f.address.clone()).collect();
        // An adopted member's address is not on a label: ask its container.
        for f in owned
            .iter()
            .filter(|f| f.adopted.is_some() && f.address.is_none())
        {
            if let Some(a) = self
                .inspect(&op, f)
                .await
                .ok()
                .as_ref()
                .and_then(inspected_address)
            {
                taken.insert(a);
            }
        }
        let address = self
            .config
            .addresses
            .iter()
            .map(|a| a.to_string())
            .find(|a| !taken.contains(a))
            .ok_or_else(|| {
                let msg = format!(
                    "no address left in the pool ({} addresses, all taken)",
                    self.config.addresses.len()
                );
                PlatformError::new(ErrorKind::Refused, op.clone(), msg)
            })?;
        let data = match template.data_path {
            Some(_) => Some(
                self.volumes
                    .ensure(&spec.name, self.disk_for(spec)?)
                    .await
                    .map_err(|e| volume_error(&op, e))?,
            ),
            None => None,
        };
        let tmp = self.make_tmp(template, &spec.name).await?;
        let body = self.body(
            spec,
            template,
            &address,
            data.as_ref().map(|v| v.host_path.as_path()),
            tmp.as_deref(),
        );
        let engine = &self.engines[host];
        let name = self.container_name(&spec.name);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = match engine.client.create_container(Some(options), body).await {
            Ok(c) => c,
            Err(e) => {
                if data.is_some() {
                    let _ = self.volumes.release(&spec.name).await;
                }
                if let Some(dir) = &tmp {
                    let _ = tokio::fs::remove_dir_all(dir).await;
                }
                let mut e = classify(&op, e, false);
                if e.kind == ErrorKind::Conflict {
                    e.message = format!(
                        "container name `{name}` is taken on host {}: {}",
                        engine.name, e.message
                    );
                }
                return Err(e);
            }
        };
        if let Err(e) = engine.client.start_container(&created.id, None).await {
            // Nothing half-made: a container that never ran is removed again.
            let rm = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = engine.client.remove_container(&created.id, Some(rm)).await;
            if data.is_some() {
                let _ = self.volumes.release(&spec.name).await;
            }
            if let Some(dir) = &tmp {
                let _ = tokio::fs::remove_dir_all(dir).await;
            }
            return Err(classify(&op, e, false));
        }
        self.fenced().remove(&spec.name);
        tracing::info!(host = %engine.name, %address, "member created");
        let found = Found {
            host,
            id: created.id,
            member: spec.name.clone(),
            role: Some(spec.role),
            address: Some(address),
            alive: true,
            adopted: None,
            container: name.clone(),
        };
        let inspected = self.inspect(&op, &found).await?;
        Ok(self.to_member(&found, &inspected).await)
    }

    /// The size of a new member's data disk: the one asked for, or, when nobody knows it (a
    /// replacement of an adopted member, whose disk is not Steward's volume: 0),
    /// `volumes.default_size` for volumes that have a size (`loop-xfs`).
    fn disk_for(&self, spec: &CreateSpec) -> Result<u64, PlatformError> {
        if spec.size.disk_bytes > 0 {
            return Ok(spec.size.disk_bytes);
        }
        if !self.volumes.can_grow() {
            // A folder (`fixed`) has no size of its own.
            return Ok(0);
        }
        self.config.default_disk_bytes.ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Permanent,
                format!("create member {}", spec.name),
                "its disk size is unknown (it replaces a member whose disk is not one of \
                 Steward's volumes, e.g. an adopted one): set [platform.docker.volumes] \
                 default_size",
            )
        })
    }

    /// `docker stop` with the fence grace (SIGTERM, then SIGKILL after it); a container that
    /// stopped in the meantime (304) is what was wanted.
    async fn stop(&self, f: &Found) -> Result<(), DockerError> {
        let grace = self.config.fence_grace.as_secs().max(1) as i32;
        let stop = StopContainerOptionsBuilder::new().t(grace).build();
        match self.engines[f.host]
            .client
            .stop_container(&f.id, Some(stop))
            .await
        {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Ends Steward's care of an adopted member without deleting anything it did not create:
    /// stopped (it is fenced already when a repair gets here), renamed `<name>.retired` so no
    /// rule takes it again, and a log line saying where its data is and how to delete it.
    async fn retire(&self, op: &str, f: &Found) -> Result<(), PlatformError> {
        let client = &self.engines[f.host].client;
        let c = self.inspect(op, f).await?;
        if c.state.as_ref().and_then(|s| s.running) == Some(true) {
            self.stop(f).await.map_err(|e| classify(op, e, false))?;
        }
        let current = c
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/');
        let base = current.strip_suffix(FENCED_SUFFIX).unwrap_or(current);
        let retired = format!("{base}{RETIRED_SUFFIX}");
        if current != retired {
            let options = RenameContainerOptionsBuilder::new().name(&retired).build();
            client
                .rename_container(&f.id, options)
                .await
                .map_err(|e| classify(op, e, false))?;
        }
        self.fenced().remove(&f.member);
        let data = written_mounts(c.mounts);
        tracing::warn!(
            member = %f.member,
            container = %retired,
            host = %self.engines[f.host].name,
            data = ?data,
            "adopted member retired, nothing deleted: its container is kept stopped as `{retired}` \
             and its data stays in {data:?} on host {}; once it is no longer needed: `docker rm \
             -v {retired}` and delete those folders",
            self.engines[f.host].name
        );
        Ok(())
    }

    /// `docker update` of CPU and memory. `quota_period`: the container's CPU limit is a quota
    /// over this period (an adopted container made with `--cpu-quota`), which Docker does not
    /// let `NanoCpus` replace: the quota changes instead.
    async fn update(
        &self,
        operation: &str,
        f: &Found,
        size: Size,
        quota_period: Option<i64>,
    ) -> Result<(), PlatformError> {
        // A 0 is "no limit" kept as it is: the field is not sent.
        let memory = (size.memory_bytes > 0).then_some(size.memory_bytes as i64);
        let (nano_cpus, cpu_quota) = match quota_period {
            _ if size.cpus == 0.0 => (None, None),
            Some(period) => (None, Some((size.cpus * period as f64).round() as i64)),
            None => (Some((size.cpus * 1e9).round() as i64), None),
        };
        let body = ContainerUpdateBody {
            nano_cpus,
            cpu_quota,
            memory,
            memory_swap: memory,
            ..Default::default()
        };
        self.engines[f.host]
            .client
            .update_container(&f.id, body)
            .await
            .map_err(|e| classify(operation, e, true))
    }
}

#[async_trait]
impl Platform for DockerPlatform {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        let grow = if self.volumes.can_grow() {
            Change::Live
        } else {
            Change::Unsupported
        };
        Capabilities {
            cpu_unit: CpuUnit::Quota,
            cpu: Change::Live,
            memory: Change::Live,
            disk_grow: grow,
            disk_shrink: Change::Unsupported,
            multi_host: self.engines.len() > 1,
        }
    }

    async fn list(&self) -> Result<Vec<PlatformMember>, PlatformError> {
        let op = "list members";
        let found = self.find(op, None).await?;
        let inspected = futures::future::join_all(found.iter().map(|f| self.inspect(op, f))).await;
        let mut out = Vec::with_capacity(found.len());
        for (f, c) in found.iter().zip(inspected) {
            match c {
                Ok(c) => out.push(self.to_member(f, &c).await),
                // Removed between the list and the inspect: it is gone, not an error.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create(&self, spec: &CreateSpec) -> Result<PlatformMember, PlatformError> {
        use tracing::Instrument;
        let span =
            tracing::info_span!("docker_create", cluster = %spec.cluster, member = %spec.name);
        self.create_member(spec).instrument(span).await
    }

    async fn resize(&self, member: &str, size: Size) -> Result<ResizeOutcome, PlatformError> {
        let op = format!("resize member {member}");
        let f = self.resolve(&op, member).await?;
        let c = self.inspect(&op, &f).await?;
        let current = self.to_member(&f, &c).await.size;
        let hc = c.host_config.clone().unwrap_or_default();
        let quota_period = hc
            .cpu_period
            .filter(|p| *p > 0 && hc.nano_cpus.unwrap_or(0) == 0 && hc.cpu_quota.unwrap_or(0) > 0);
        // 0 is "no limit": kept where there is none (an adopted container run without
        // `--cpus` or `--memory`), never asked for where there is one.
        let takes_off = |asked: f64, now: f64| asked == 0.0 && now != 0.0;
        if size.cpus.is_nan()
            || size.cpus < 0.0
            || takes_off(size.cpus, current.cpus)
            || takes_off(size.memory_bytes as f64, current.memory_bytes as f64)
        {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "{size:?} has no CPU or no memory (a limit is never taken off; 0 stays only \
                     where there is none)"
                ),
            ));
        }
        let disk_grows = size.disk_bytes > current.disk_bytes;
        if size.disk_bytes < current.disk_bytes {
            let msg = format!(
                "disks never shrink ({} bytes now, {} asked)",
                current.disk_bytes, size.disk_bytes
            );
            return Err(PlatformError::new(ErrorKind::Permanent, op, msg));
        }
        if disk_grows && !self.volumes.can_grow() {
            let msg = format!("{} volumes cannot grow", self.volumes.kind());
            return Err(PlatformError::new(ErrorKind::Permanent, op, msg));
        }
        if disk_grows && f.adopted.is_some() {
            let msg = "an adopted member's disk is not one of Steward's volumes: grow it where \
                       it lives, or let Steward replace the member with one it made";
            return Err(PlatformError::new(ErrorKind::Permanent, op, msg));
        }
        let has_volume = f
            .role
            .and_then(|r| self.template(r))
            .is_some_and(|t| t.data_path.is_some());
        if disk_grows && !has_volume {
            let msg = format!(
                "{} members have no data volume (no data_path in their template)",
                f.role.map(Role::as_str).unwrap_or("these")
            );
            return Err(PlatformError::new(ErrorKind::Permanent, op, msg));
        }
        let cpu_mem_change =
            (size.cpus - current.cpus).abs() > 1e-9 || size.memory_bytes != current.memory_bytes;
        if cpu_mem_change {
            self.update(&op, &f, size, quota_period).await?;
        }
        if disk_grows {
            if let Err(e) = self.volumes.grow(member, size.disk_bytes).await {
                // All or nothing: put CPU and memory back before reporting the disk failure.
                if cpu_mem_change {
                    if let Err(undo) = self.update(&op, &f, current, quota_period).await {
                        tracing::error!(error = %undo, "could not undo the CPU/memory part of a failed resize");
                    }
                }
                return Err(volume_error(&op, e));
            }
        }
        tracing::info!(
            member,
            cpus = size.cpus,
            memory = size.memory_bytes,
            disk = size.disk_bytes,
            "member resized live"
        );
        Ok(ResizeOutcome::AppliedLive)
    }

    async fn fence(&self, member: &str) -> Result<(), PlatformError> {
        let op = format!("fence member {member}");
        let f = self.resolve(&op, member).await?;
        let client = &self.engines[f.host].client;
        let c = self.inspect(&op, &f).await?;
        let st = c.state.clone().unwrap_or_default();
        if st.running == Some(true) {
            if st.paused == Some(true) {
                // A frozen member gets no chance to act on a SIGTERM: kill it at once.
                let kill = KillContainerOptionsBuilder::new().signal("KILL").build();
                client
                    .kill_container(&f.id, Some(kill))
                    .await
                    .map_err(|e| classify(&op, e, false))?;
            } else {
                match self.stop(&f).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "stop failed, killing");
                        let kill = KillContainerOptionsBuilder::new().signal("KILL").build();
                        client
                            .kill_container(&f.id, Some(kill))
                            .await
                            .map_err(|e| classify(&op, e, false))?;
                    }
                }
            }
            // Confirm: fencing is only done when the engine says the container is not running.
            let after = self.inspect(&op, &f).await?.state.unwrap_or_default();
            if after.running == Some(true) {
                return Err(PlatformError::new(
                    ErrorKind::Transient,
                    op,
                    "the container still runs after stop and kill",
                ));
            }
        }
        self.fenced().insert(member.to_string());
        // Labels cannot change after creation, but names can: the suffix keeps "fenced by
        // Steward" (as opposed to "exited by itself") across a restart of Steward.
        let current = c
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/');
        if !current.ends_with(FENCED_SUFFIX) {
            let renamed = format!("{current}{FENCED_SUFFIX}");
            let options = RenameContainerOptionsBuilder::new().name(&renamed).build();
            if let Err(e) = client.rename_container(&f.id, options).await {
                tracing::warn!(member, error = %e, "fenced, but the fenced name could not be set");
            }
        }
        tracing::info!(member, "member fenced");
        Ok(())
    }

    async fn remove(&self, member: &str, delete_data: bool) -> Result<(), PlatformError> {
        let op = format!("remove member {member}");
        let f = self.resolve(&op, member).await?;
        if let Some(rule) = f.adopted {
            if !self.config.adopt[rule].delete_data {
                return self.retire(&op, &f).await;
            }
        }
        let rm = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(delete_data)
            .build();
        self.engines[f.host]
            .client
            .remove_container(&f.id, Some(rm))
            .await
            .map_err(|e| classify(&op, e, false))?;
        self.fenced().remove(member);
        if f.adopted.is_some() {
            tracing::info!(
                member,
                "adopted member removed with its anonymous volumes (delete_data); bind-mounted \
                 folders are left where they are"
            );
            return Ok(());
        }
        let template = f.role.and_then(|r| self.template(r));
        if template.is_some_and(|t| t.data_path.is_some()) {
            let result = if delete_data {
                self.volumes.delete(member).await
            } else {
                self.volumes.release(member).await
            };
            result.map_err(|e| volume_error(&op, e))?;
        }
        if let Some(root) = template.and_then(|t| t.tmp_root.as_ref()) {
            let _ = tokio::fs::remove_dir_all(root.join(member)).await;
        }
        tracing::info!(member, delete_data, "member removed");
        Ok(())
    }

    async fn usage(&self) -> Result<BTreeMap<String, Usage>, PlatformError> {
        let op = "read usage";
        let found: Vec<Found> = self
            .find(op, None)
            .await?
            .into_iter()
            .filter(|f| f.alive)
            .collect();
        let reads = found.iter().map(|f| async move {
            // stream=false: one answer with two samples a second apart, so CPU has a delta.
            let options = StatsOptionsBuilder::new()
                .stream(false)
                .one_shot(false)
                .build();
            let mut stream = self.engines[f.host].client.stats(&f.id, Some(options));
            let stats = stream.next().await;
            let disk = match f.adopted {
                None => self.volumes.usage(&f.member).await.ok().flatten(),
                Some(_) => None,
            };
            let ooms = match self.config.hosts[f.host].endpoint {
                Endpoint::Unix(_) => oom_kills(Path::new(CGROUP_ROOT), &f.id).await,
                Endpoint::Http(_) | Endpoint::Tls { .. } => None,
            };
            (f, stats, disk, ooms)
        });
        let mut out = BTreeMap::new();
        for (f, stats, disk, ooms) in futures::future::join_all(reads).await {
            let stats = match stats {
                Some(Ok(s)) => s,
                // Stopped between the list and the stats: no usage, as for any stopped member.
                Some(Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }))
                | None => continue,
                Some(Err(e)) => return Err(classify(op, e, false)),
            };
            let at = serde_json::to_value(&stats.read)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .and_then(|s| Timestamp::parse(&s).ok())
                .unwrap_or_default();
            let memory_used = stats
                .memory_stats
                .as_ref()
                .and_then(|m| m.stats.as_ref())
                .and_then(working_set);
            out.insert(
                f.member.clone(),
                Usage {
                    at,
                    cpu_used: cpu_used(&stats),
                    memory_used,
                    disk_used: disk.map(|d| d.used_bytes),
                    disk_size: disk.map(|d| d.size_bytes),
                    oom_kills: ooms,
                },
            );
        }
        Ok(out)
    }

    /// Retired adopted members (`<name>.retired` whose base an adoption rule takes): stopped,
    /// everything kept, Steward's no more. One list call per engine, only with adoption rules.
    async fn kept(&self) -> Result<Vec<KeptData>, PlatformError> {
        if self.config.adopt.is_empty() {
            return Ok(Vec::new());
        }
        let mut kept = Vec::new();
        for (host, c) in self
            .containers("list retired members", &HashMap::new())
            .await?
        {
            let labels = c.labels.unwrap_or_default();
            let Some(name) = c.names.as_ref().and_then(|n| n.first()) else {
                continue;
            };
            let Some(base) = name.strip_suffix(adopt::RETIRED_SUFFIX) else {
                continue;
            };
            let Some((_, member)) = adopt::adopted_by(&self.config.adopt, host, base, &labels)
            else {
                continue;
            };
            let container = name.trim_start_matches('/').to_string();
            let data = written_mounts(c.mounts);
            // On that host's engine and filesystem.
            let delete_with = format!(
                "docker rm -v {container}{}",
                if data.is_empty() {
                    String::new()
                } else {
                    format!(" && rm -rf {}", data.join(" "))
                }
            );
            kept.push(KeptData {
                member,
                resource: container,
                host: self.engines[host].name.clone(),
                data,
                delete_with,
            });
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawDockerConfig {
        toml_like(
            r#"{
            "cluster": "demo",
            "hosts": [{"name": "a", "endpoint": "unix:///var/run/docker.sock"}],
            "addresses": ["127.0.0.10-127.0.0.12", "127.0.1.1"],
            "volumes": {"kind": "fixed", "root": "/var/lib/steward"},
            "database": {"image": "steward-empty:1", "command": ["/bin/sleep", "infinity"], "user": "999:999",
                         "mounts": ["/usr:/usr:ro"], "postgres_oom_score_adj": 900}
        }"#,
        )
    }

    fn toml_like(json: &str) -> RawDockerConfig {
        serde_json::from_str(json).expect("test config parses")
    }

    #[test]
    fn a_good_config_validates_with_defaults() {
        let c = raw().validate().expect("valid");
        assert_eq!(c.addresses.len(), 4);
        assert_eq!(c.addresses[3], Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(c.fence_grace, Duration::from_secs(2));
        assert_eq!(
            c.database.mounts,
            [Bind {
                host: "/usr".into(),
                container: "/usr".into(),
                read_only: true
            }]
        );
        assert_eq!(c.database.restart_policy, RestartPolicyNameEnum::NO);
    }

    #[test]
    fn every_error_is_listed_with_its_path() {
        let mut r = raw();
        r.hosts.push(RawHost {
            name: "a".into(),
            endpoint: "tcp://192.0.2.1:2375".into(),
            tls: None,
            insecure: false,
        });
        r.addresses = vec!["0.0.0.0".into(), "127.0.0.9-127.0.0.1".into()];
        r.volumes.kind = "nfs".into();
        r.database.user = Some("postgres".into());
        r.database.mounts = vec!["usr:/usr".into()];
        r.database.postgres_oom_score_adj = Some(5000);
        r.database.restart_policy = "sometimes".into();
        let e = r.validate().expect_err("invalid");
        let paths: Vec<&str> = e.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "hosts[1].name",
                "hosts[1].endpoint",
                "addresses[0]",
                "addresses[1]",
                "volumes.kind",
                "database.mounts[0]",
                "database.user",
                "database.postgres_oom_score_adj",
                "database.restart_policy"
            ],
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("`0.0.0.0` cannot be a member's address"),
            "{e}"
        );
    }

    #[test]
    fn a_network_is_host_by_default_or_named() {
        assert_eq!(raw().validate().expect("valid").network, Network::Host);
        let mut r = raw();
        r.network = Some("host".into());
        assert_eq!(r.validate().expect("valid").network, Network::Host);
        r.network = Some("pg_lan".into());
        assert_eq!(
            r.validate().expect("valid").network,
            Network::Named("pg_lan".into())
        );
        r.network = Some("pg lan".into());
        let e = r.validate().expect_err("a space is not in a network name");
        assert_eq!(
            e.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["network"]
        );
    }

    #[test]
    fn a_subnet_holds_the_addresses_its_prefix_covers() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(subnet_contains("10.213.47.0/24", a("10.213.47.14")));
        assert!(!subnet_contains("10.213.47.0/24", a("10.213.48.14")));
        assert!(subnet_contains("192.0.2.0/25", a("192.0.2.127")));
        assert!(!subnet_contains("192.0.2.0/25", a("192.0.2.128")));
        assert!(subnet_contains("0.0.0.0/0", a("198.51.100.1")));
        assert!(subnet_contains("198.51.100.7/32", a("198.51.100.7")));
        for bad in ["fd00::/64", "10.0.0.0", "10.0.0.0/33", "x/8"] {
            assert!(!subnet_contains(bad, a("10.0.0.1")), "{bad}");
        }
        let many: Vec<String> = (1..=6).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(
            shorten(&many),
            "10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4 and 2 more"
        );
    }

    #[test]
    fn a_default_disk_size_reads_as_people_write_it() {
        for (v, want) in [
            (serde_json::json!("20GiB"), Ok(20u64 << 30)),
            (serde_json::json!("512MiB"), Ok(512 << 20)),
            (serde_json::json!(1000), Ok(1000)),
        ] {
            assert_eq!(parse_size(&v), want, "{v}");
        }
        for (v, want) in [
            (serde_json::json!("20GB"), "unknown unit `GB`"),
            (serde_json::json!("lots"), "whole number"),
            (serde_json::json!("99999999999TiB"), "too large"),
            (serde_json::json!(-1), "expected bytes"),
        ] {
            let e = parse_size(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        let mut r = raw();
        r.volumes.default_size = Some(serde_json::json!("1GiB"));
        assert_eq!(r.validate().unwrap().default_disk_bytes, Some(1 << 30));
        r.volumes.default_size = Some(serde_json::json!("1 parsec"));
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("volumes.default_size"), "{e}");
    }

    /// Remote engines (issue 15): TLS with client certificates as `dockerd --tlsverify` serves
    /// them; plain TCP off loopback only when the config says `insecure`. Validation only: no
    /// connection is made.
    #[test]
    fn a_remote_engine_needs_tls_or_an_explicit_insecure() {
        let host = |endpoint: &str, tls: bool, insecure: bool| RawHost {
            name: "remote".into(),
            endpoint: endpoint.into(),
            tls: tls.then(|| RawTls {
                ca: "/etc/steward/ca.pem".into(),
                cert: "/etc/steward/cert.pem".into(),
                key: "/etc/steward/key.pem".into(),
            }),
            insecure,
        };
        assert_eq!(
            validate_endpoint(&host("tcp://192.0.2.7:2376", true, false)),
            Ok(Endpoint::Tls {
                address: "192.0.2.7:2376".into(),
                ca: "/etc/steward/ca.pem".into(),
                cert: "/etc/steward/cert.pem".into(),
                key: "/etc/steward/key.pem".into(),
            })
        );
        let plain = validate_endpoint(&host("tcp://192.0.2.7:2375", false, false)).unwrap_err();
        assert!(
            plain.contains("insecure = true") && plain.contains("tls"),
            "{plain}"
        );
        assert_eq!(
            validate_endpoint(&host("tcp://192.0.2.7:2375", false, true)),
            Ok(Endpoint::Http("http://192.0.2.7:2375".into()))
        );
        assert_eq!(
            validate_endpoint(&host("http://127.0.0.1:2375", false, false)),
            Ok(Endpoint::Http("http://127.0.0.1:2375".into()))
        );
        for (bad, want) in [
            ("tcp://192.0.2.7", "port"),
            ("https://192.0.2.7:2376", "needs `tls`"),
            ("ssh://192.0.2.7", "expected unix://"),
            ("tcp://user@192.0.2.7:2376", "expected tcp://HOST:PORT"),
        ] {
            let e = validate_endpoint(&host(bad, false, false)).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let relative = RawHost {
            tls: Some(RawTls {
                ca: "ca.pem".into(),
                cert: "/c".into(),
                key: "/k".into(),
            }),
            ..host("tcp://192.0.2.7:2376", false, false)
        };
        assert!(validate_endpoint(&relative)
            .unwrap_err()
            .contains("tls.ca: `ca.pem` must be an absolute path"));
    }

    /// The loopback rule was the tests' (they may only use loopback), never the product's: a
    /// real deployment's members live at its hosts' addresses (issue 15). Parsed only; nothing
    /// here sends a packet.
    #[test]
    fn member_addresses_are_whatever_the_deployment_uses() {
        let mut r = raw();
        r.addresses = vec!["192.0.2.10-192.0.2.12".into(), "198.51.100.7".into()];
        let c = r.validate().expect("valid");
        assert_eq!(c.addresses.len(), 4);
        assert_eq!(c.addresses[3], Ipv4Addr::new(198, 51, 100, 7));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<RawDockerConfig>(r#"{"cluster":"x","hosts":[],"addresses":[],"volumes":{"kind":"fixed","root":"/x"},"database":{"image":"i","command":["c"],"imgae":"typo"}}"#)
            .expect_err("typo refused");
        assert!(e.to_string().contains("imgae"), "{e}");
    }

    #[test]
    fn working_set_is_rss_plus_shared_memory_not_cache() {
        let v1 = HashMap::from([
            ("rss".to_string(), 100),
            ("shmem".to_string(), 30),
            ("cache".to_string(), 5000),
        ]);
        assert_eq!(working_set(&v1), Some(130));
        let old = HashMap::from([
            ("rss".to_string(), 100),
            ("mapped_file".to_string(), 7),
            ("cache".to_string(), 5000),
        ]);
        assert_eq!(working_set(&old), Some(107));
        let v2 = HashMap::from([
            ("anon".to_string(), 50),
            ("shmem".to_string(), 20),
            ("file".to_string(), 999),
        ]);
        assert_eq!(working_set(&v2), Some(70));
        assert_eq!(
            working_set(&HashMap::from([("cache".to_string(), 1)])),
            None
        );
    }

    #[test]
    fn cpu_is_the_share_of_the_system_delta_times_cpus() {
        let stats: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 18_000_000_000u64}
        }))
        .expect("stats parse");
        // 1 s of CPU in 2 s of system time (2 CPUs x 1 s): half the machine = 1 vCPU.
        assert_eq!(cpu_used(&stats), Some(1.0));
    }

    #[test]
    fn oom_kill_counter_is_read_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kill(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\n";
        assert_eq!(parse_oom_kill(v2), Some(2));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn debug_output_never_shows_env_values() {
        let mut r = raw();
        r.database
            .env
            .insert("PGPASSWORD".into(), "s3cret-value".into());
        let c = r.validate().expect("valid");
        for text in [format!("{r:?}"), format!("{c:?}")] {
            assert!(text.contains("PGPASSWORD"), "{text}");
            assert!(!text.contains("s3cret-value"), "{text}");
        }
    }

    #[test]
    fn placeholders_are_replaced() {
        assert_eq!(
            substitute(
                "--bind {address} {member}",
                &[("address", "127.0.0.5"), ("member", "pg-1")]
            ),
            "--bind 127.0.0.5 pg-1"
        );
    }
}
