//! Leader election and per-cluster ownership on etcd leases, with fencing tokens.
//!
//! With several Steward instances only the lease holder acts (DESIGN.md promise 8). This module
//! builds that from etcd's own primitives only, never a protocol of our own:
//!
//! - a **lease** with a TTL, kept alive every `keepalive` (TTL/3 by default);
//! - a **compare-and-set** transaction (`create_revision(key) == 0`) that writes the key
//!   `/steward/<scope>/leader` = instance id, attached to the lease;
//! - the **fencing token** is that key's `create_revision`: etcd's revision counter only grows,
//!   so every new holder's token is larger than every earlier holder's;
//! - followers **watch** the key and campaign when it disappears (after a resign at once, after a
//!   crash when etcd expires the dead holder's lease, about one TTL later).
//!
//! The holder stops acting *before* etcd could give the lease to someone else: it keeps a local
//! deadline = send time of the last acknowledged keep-alive + TTL - safety margin
//! (`tokio::time::Instant`), and flips to [`LeaderState::Unknown`] when the deadline passes, even
//! if etcd never answers again (cut off, frozen). [`EtcdLeadership::check`] reads the same deadline,
//! so a stalled driver task cannot make a stale leader act. Writes that must only happen under the
//! lease go through [`EtcdLeadership::txn_if_leader`], which makes etcd itself compare the leader
//! key's `create_revision` with the token: a deposed leader's write fails at etcd.
//!
//! [`ClusterLeases`] applies the same election per cluster (`/steward/clusters/<name>/owner`) so that
//! a fleet of instances shares out clusters and picks up a crashed instance's clusters.
//! [`discover_patroni_scopes`] lists the Patroni clusters present in etcd.
//!
//! What this module is not: it does not decide what to do with leadership (the loops do), it does
//! not rebalance clusters when an instance joins (an owner keeps what it holds until it resigns or
//! dies), and it speaks plain HTTP to etcd only (no TLS yet).
//!
//! The same vocabulary ([`LeaseConfig`], [`Leadership`], [`FencingToken`], [`LeaderState`]) serves
//! the election on a Kubernetes Lease object (`[lease] kind = "kubernetes"`,
//! `crate::platform::kubernetes::lease`), which gives the runtime the same contract.

use crate::http::Secret;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};
use steward_model::ports::ErrorKind;
use steward_model::ConfigErrors;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

/// Lease TTL by default: Patroni's own default, and long enough for a busy etcd.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Time to open a connection to etcd, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one request (get, grant, txn), by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Where Patroni keeps its clusters (`namespace` in Patroni's configuration), by default.
pub const DEFAULT_PATRONI_NAMESPACE: &str = "/service";
/// The key prefix of everything Steward writes, by default.
pub const DEFAULT_PREFIX: &str = "/steward";
/// The shortest TTL accepted: etcd 3.4 rounds anything shorter up to its minimum (1.5 s -> 2 s
/// with default heartbeat and election timeouts).
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// The longest `ttl` accepted: one day (issue 16: a TTL beyond what etcd grants validated, then
/// retried "grant lease failed" forever, and its cast to etcd's i64 could wrap).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest `connect_timeout` / `request_timeout` accepted (their sum is a deadline).
pub const MAX_ETCD_TIMEOUT: Duration = Duration::from_secs(300);

// ---- config ---------------------------------------------------------------------------------

/// Where the lease lives (`[lease] kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// A key on an etcd lease (this module).
    #[default]
    Etcd,
    /// A `coordination.k8s.io/v1` Lease object
    /// (`crate::platform::kubernetes::lease`).
    Kubernetes,
}

/// `[lease]`: where the lease is and how it is held. Serializes with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// `etcd` (default) or `kubernetes`: a `coordination.k8s.io/v1` Lease through the same API
    /// client as `[platform.kubernetes]` (else KUBECONFIG, `~/.kube/config` or the pod's
    /// service account).
    #[serde(default)]
    pub kind: LeaseKind,
    /// etcd endpoints, `http://HOST:2379` (an IP address or a DNS name; plain HTTP, etcd over
    /// TLS is not supported yet). Required with `kind = "etcd"`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// `kind = "kubernetes"`: the Lease's namespace. Default: the namespace of
    /// `[platform.kubernetes]`, else the kubeconfig context's or the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `kind = "kubernetes"`: the Lease's name. Default `steward-<scope>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// This instance's id, unique among Steward instances (the leader key's value, the
    /// Lease's holderIdentity). Required, here or through `instance_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The environment variable holding this instance's id instead of `instance`: one config
    /// for every replica of a Deployment, each with its pod's name (`POD_NAME` from the
    /// downward API, `fieldRef: metadata.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_env: Option<String>,
    /// Name of the group of instances electing one leader (`/steward/<scope>/leader`). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Prefix of Steward's keys. Default [`DEFAULT_PREFIX`].
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Lease TTL, whole seconds, at least [`MIN_TTL`]. Default [`DEFAULT_TTL`].
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Keep-alive period. Default TTL/3.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub keepalive: Option<Duration>,
    /// How long before the lease could expire the holder stops acting. Default TTL/3.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub safety_margin: Option<Duration>,
    /// Time to connect. Default [`DEFAULT_CONNECT_TIMEOUT`].
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for one request. Default [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// etcd user (with `password_file` or `password_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the etcd password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the etcd password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Patroni's namespace, for scope discovery. Default [`DEFAULT_PATRONI_NAMESPACE`].
    #[serde(default = "default_namespace")]
    pub patroni_namespace: String,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_string()
}
fn default_ttl() -> Duration {
    DEFAULT_TTL
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_namespace() -> String {
    DEFAULT_PATRONI_NAMESPACE.to_string()
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            kind: LeaseKind::Etcd,
            endpoints: Vec::new(),
            namespace: None,
            name: None,
            instance: None,
            instance_env: None,
            scope: None,
            prefix: default_prefix(),
            ttl: DEFAULT_TTL,
            keepalive: None,
            safety_margin: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            username: None,
            password_file: None,
            password_env: None,
            patroni_namespace: default_namespace(),
        }
    }
}

/// Where the etcd password comes from; read when connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    /// Read from the environment at validation time.
    Value(Secret),
}

/// etcd credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: PasswordSource,
}

/// Where a validated lease lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseBackend {
    /// etcd, at [`LeaseSettings::endpoints`].
    Etcd,
    /// A Kubernetes Lease `name` in `namespace` (`None`: the API connection's default).
    Kubernetes {
        namespace: Option<String>,
        name: String,
    },
}

/// A validated [`LeaseConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub backend: LeaseBackend,
    /// `http://HOST:PORT` (etcd; empty for a Kubernetes Lease).
    pub endpoints: Vec<String>,
    pub instance: String,
    pub scope: String,
    /// Without a trailing `/`.
    pub prefix: String,
    pub ttl: Duration,
    pub keepalive: Duration,
    pub safety_margin: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub credentials: Option<Credentials>,
    /// Without a trailing `/`, with a leading `/` when it had one.
    pub patroni_namespace: String,
}

impl LeaseSettings {
    /// `<prefix>/<scope>/leader`.
    pub fn leader_key(&self) -> String {
        format!("{}/{}/leader", self.prefix, self.scope)
    }

    /// `<prefix>/clusters/<name>/owner`.
    pub fn cluster_key(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}/owner", self.prefix)
    }

    /// `<prefix>/<scope>/instances/`: live instances, one key each, on their own lease.
    pub fn instances_prefix(&self) -> String {
        format!("{}/{}/instances/", self.prefix, self.scope)
    }
}

impl LeaseConfig {
    /// Validates against the process environment (for `password_env`).
    pub fn validate(&self) -> Result<LeaseSettings, ConfigErrors> {
        self.validate_with_env(|name| std::env::var(name).ok())
    }

    /// Validates, reading environment variables through `env`; collects every error.
    pub fn validate_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LeaseSettings, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let kubernetes = self.kind == LeaseKind::Kubernetes;
        if self.endpoints.is_empty() && !kubernetes {
            errors.push("endpoints", "at least one etcd endpoint is required");
        }
        if !self.endpoints.is_empty() && kubernetes {
            errors.push(
                "endpoints",
                "etcd endpoints with kind = \"kubernetes\": the Lease is on the API server",
            );
        }
        if kubernetes {
            for (field, set) in [
                ("username", self.username.is_some()),
                ("password_file", self.password_file.is_some()),
                ("password_env", self.password_env.is_some()),
            ] {
                if set {
                    errors.push(
                        field,
                        "is etcd's; a Kubernetes Lease uses the API client's credentials",
                    );
                }
            }
        } else {
            for (field, set) in [
                ("namespace", self.namespace.is_some()),
                ("name", self.name.is_some()),
            ] {
                if set {
                    errors.push(field, "is for kind = \"kubernetes\" only");
                }
            }
        }
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        let dns_subdomain = |s: &str| s.len() <= 253 && s.split('.').all(dns_label);
        if let Some(ns) = self.namespace.as_deref().filter(|ns| !dns_label(ns)) {
            errors.push(
                "namespace",
                format!("`{ns}` is not a DNS-1123 label (lowercase, digits, `-`, at most 63)"),
            );
        }
        if let Some(name) = self.name.as_deref().filter(|n| !dns_subdomain(n)) {
            errors.push(
                "name",
                format!("`{name}` is not a DNS-1123 subdomain (lowercase, digits, `-`, `.`)"),
            );
        }
        let mut endpoints = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            match parse_endpoint(e) {
                Ok(url) => endpoints.push(url),
                Err(message) => errors.push(format!("endpoints[{i}]"), message),
            }
        }
        let instance = match (&self.instance, &self.instance_env) {
            (Some(_), Some(_)) => {
                errors.push(
                    "instance_env",
                    "give `instance` or `instance_env`, not both",
                );
                String::new()
            }
            (None, Some(var)) => match env(var) {
                Some(value) => required_name(&mut errors, "instance_env", Some(&value)),
                None => {
                    errors.push(
                        "instance_env",
                        format!("environment variable `{var}` is not set"),
                    );
                    String::new()
                }
            },
            (instance, None) => required_name(&mut errors, "instance", instance.as_deref()),
        };
        let scope = required_name(&mut errors, "scope", self.scope.as_deref());
        let prefix = self.prefix.trim_end_matches('/').to_string();
        if !prefix.starts_with('/') {
            errors.push("prefix", "must start with `/`");
        }
        if self.ttl < MIN_TTL {
            errors.push("ttl", format!("must be at least {}s", MIN_TTL.as_secs()));
        }
        if self.ttl > MAX_TTL {
            errors.push(
                "ttl",
                format!(
                    "at most {}s (1 day): a holder that dies is replaced only after its ttl, and \
                     etcd refuses lease TTLs past its own maximum",
                    MAX_TTL.as_secs()
                ),
            );
        }
        if self.ttl.subsec_nanos() != 0 {
            // etcd leases are granted in whole seconds; a fraction would silently change meaning.
            errors.push("ttl", "must be a whole number of seconds");
        }
        let keepalive = self.keepalive.unwrap_or(self.ttl / 3);
        let safety_margin = self.safety_margin.unwrap_or(self.ttl / 3);
        if keepalive.is_zero() {
            errors.push("keepalive", "must be positive");
        }
        if safety_margin.is_zero() {
            errors.push("safety_margin", "must be positive");
        }
        // At least one keep-alive must be able to land before the local deadline, or the holder
        // would give up between two keep-alives.
        // Checked: both come from the file and may each be near `Duration::MAX` (fuzz target
        // `config`).
        if keepalive
            .checked_add(safety_margin)
            .is_none_or(|sum| sum >= self.ttl)
        {
            errors.push(
                "keepalive",
                "keepalive plus safety_margin must be below ttl, or the holder gives up between two keep-alives",
            );
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                errors.push(field, "must be positive");
            } else if value > MAX_ETCD_TIMEOUT {
                errors.push(
                    field,
                    format!(
                        "at most {}s: etcd answers in milliseconds, and a longer wait only \
                         delays noticing that it is gone",
                        MAX_ETCD_TIMEOUT.as_secs()
                    ),
                );
            }
        }
        let credentials = match (&self.username, &self.password_file, &self.password_env) {
            (None, None, None) => None,
            (None, _, _) => {
                errors.push("username", "a password needs a username");
                None
            }
            (Some(_), Some(_), Some(_)) => {
                errors.push(
                    "password_file",
                    "give `password_file` or `password_env`, not both",
                );
                None
            }
            (Some(_), None, None) => {
                errors.push(
                    "password_file",
                    "a username needs a password (`password_file` or `password_env`)",
                );
                None
            }
            (Some(user), Some(file), None) => Some(Credentials {
                username: user.clone(),
                password: PasswordSource::File(file.clone()),
            }),
            (Some(user), None, Some(var)) => match env(var) {
                Some(value) => Some(Credentials {
                    username: user.clone(),
                    password: PasswordSource::Value(Secret::new(value)),
                }),
                None => {
                    // The variable's name is fine to print, its value never is.
                    errors.push(
                        "password_env",
                        format!("environment variable `{var}` is not set"),
                    );
                    None
                }
            },
        };
        let ns = self.patroni_namespace.trim_end_matches('/');
        if ns.is_empty() {
            errors.push("patroni_namespace", "must not be empty");
        }
        let backend = match self.kind {
            LeaseKind::Etcd => LeaseBackend::Etcd,
            LeaseKind::Kubernetes => {
                let name = self
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("steward-{scope}"));
                if self.name.is_none() && !scope.is_empty() && !dns_subdomain(&name) {
                    errors.push(
                        "scope",
                        format!(
                            "the Lease would be named `{name}`, not a DNS-1123 subdomain: give \
                             `name`, or a lowercase scope"
                        ),
                    );
                }
                LeaseBackend::Kubernetes {
                    namespace: self.namespace.clone(),
                    name,
                }
            }
        };
        let settings = LeaseSettings {
            backend,
            endpoints,
            instance,
            scope,
            prefix,
            ttl: self.ttl,
            keepalive,
            safety_margin,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            credentials,
            patroni_namespace: ns.to_string(),
        };
        errors.into_result(settings)
    }
}

fn required_name(errors: &mut ConfigErrors, path: &str, value: Option<&str>) -> String {
    match value {
        None | Some("") => {
            errors.push(path, "is required");
            String::new()
        }
        Some(v) if v.contains('/') || v.chars().any(char::is_whitespace) => {
            errors.push(path, "must not contain `/` or whitespace");
            String::new()
        }
        Some(v) => v.to_string(),
    }
}

/// `http://HOST:PORT` or `HOST:PORT` -> `http://HOST:PORT`, HOST an IP address or a DNS name
/// (the etcd the Patroni cluster uses, wherever it is: loopback was the lab's, never a rule).
fn parse_endpoint(raw: &str) -> Result<String, String> {
    let rest = if let Some(rest) = raw.strip_prefix("http://") {
        rest
    } else if raw.starts_with("https://") {
        return Err(format!(
            "`{raw}`: etcd over TLS is not supported yet; give etcd's plain-HTTP client URL \
             (http://HOST:2379)"
        ));
    } else if raw.contains("://") {
        return Err(format!("unsupported scheme in `{raw}`"));
    } else {
        raw
    };
    let rest = rest.trim_end_matches('/');
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok(format!("http://{addr}"));
    }
    let not_host_port = || format!("`{raw}` is not `http://HOST:PORT`");
    let (host, port) = rest.rsplit_once(':').ok_or_else(not_host_port)?;
    let dns_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && host.parse::<IpAddr>().is_err();
    if !dns_name || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(not_host_port());
    }
    Ok(format!("http://{host}:{port}"))
}

// ---- errors ---------------------------------------------------------------------------------

/// Why an action was refused by the local guard.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotLeader {
    /// This instance does not hold the lease (or not under this token).
    #[error("not the lease holder for token {token}")]
    NotHolder { token: FencingToken },
    /// The lease is held under this token, but the local deadline passed: etcd may already have
    /// expired it.
    #[error("lease deadline passed for token {token}")]
    DeadlinePassed { token: FencingToken },
}

/// A failed lease operation.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot connect to etcd at {endpoints}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("cannot read the etcd password file {}", path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd {operation} failed")]
    Etcd {
        operation: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {operation} timed out after {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    #[error("etcd {operation} stream ended")]
    StreamEnded { operation: &'static str },
    #[error("action refused")]
    NotLeader(#[from] NotLeader),
    /// etcd's compare on the leader key failed: someone else holds it now.
    #[error("fenced write refused by etcd: the lease is no longer held under token {token}")]
    Fenced { token: FencingToken },
    #[error("the election task stopped")]
    Stopped,
    /// A request about the Kubernetes Lease failed.
    #[error("kubernetes lease {operation} failed")]
    Kubernetes {
        operation: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("kubernetes lease {operation} timed out after {after:?}")]
    KubernetesTimeout {
        operation: &'static str,
        after: Duration,
    },
    /// The Lease was written by another instance (a resourceVersion conflict, or another
    /// holder in the answer): it is no longer held under `token`.
    #[error(
        "the kubernetes lease was taken by another instance: no longer held under token {token}"
    )]
    Taken { token: FencingToken },
}

impl LeaseError {
    /// The class of the failure, for backoff-or-give-up decisions.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LeaseError::Connect { source, .. } | LeaseError::Etcd { source, .. } => {
                classify(source)
            }
            LeaseError::Timeout { .. }
            | LeaseError::StreamEnded { .. }
            | LeaseError::KubernetesTimeout { .. } => ErrorKind::Transient,
            LeaseError::NotLeader(_) | LeaseError::Fenced { .. } | LeaseError::Taken { .. } => {
                ErrorKind::Conflict
            }
            LeaseError::Kubernetes { source, .. } => match source {
                kube::Error::Api(status) => ErrorKind::of_http_status(status.code),
                _ => ErrorKind::Transient,
            },
            LeaseError::Credentials { .. } | LeaseError::Stopped => ErrorKind::Permanent,
        }
    }
}

fn classify(e: &etcd_client::Error) -> ErrorKind {
    use etcd_client::Error as E;
    match e {
        // gRPC status codes by number (tonic is not a direct dependency).
        E::GRpcStatus(status) => match i32::from(status.code()) {
            GRPC_UNAUTHENTICATED | GRPC_PERMISSION_DENIED => ErrorKind::Permanent,
            GRPC_INVALID_ARGUMENT | GRPC_FAILED_PRECONDITION => ErrorKind::Refused,
            GRPC_NOT_FOUND => ErrorKind::NotFound,
            _ => ErrorKind::Transient,
        },
        E::InvalidArgs(_) | E::InvalidUri(_) | E::Utf8Error(_) | E::EndpointError(_) => {
            ErrorKind::Permanent
        }
        _ => ErrorKind::Transient,
    }
}

const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_NOT_FOUND: i32 = 5;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_FAILED_PRECONDITION: i32 = 9;
const GRPC_UNAUTHENTICATED: i32 = 16;

fn etcd(operation: &'static str) -> impl FnOnce(etcd_client::Error) -> LeaseError {
    move |source| LeaseError::Etcd { operation, source }
}

/// Runs one request under the request timeout.
async fn bounded<T>(
    operation: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, LeaseError> {
    match timeout(after, fut).await {
        Ok(r) => r.map_err(etcd(operation)),
        Err(_) => Err(LeaseError::Timeout { operation, after }),
    }
}

// ---- vocabulary -----------------------------------------------------------------------------

/// The fencing token: the leader key's `create_revision`. Grows with every new holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FencingToken(pub i64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What this instance knows about the lease, as published on the watch channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderState {
    /// This instance holds the lease under `token` since `since`; it may act.
    Leader { token: FencingToken, since: Instant },
    /// Someone else holds it (`Some(instance)`), or nobody (`None`).
    Follower { leader: Option<String> },
    /// Not known: starting, cut off from etcd, or past the local deadline. Do not act.
    Unknown,
}

impl LeaderState {
    pub fn token(&self) -> Option<FencingToken> {
        match self {
            LeaderState::Leader { token, .. } => Some(*token),
            _ => None,
        }
    }
}

/// One write of a fenced transaction. Keys and values are etcd's bytes (UTF-8 in practice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// Leadership in domain verbs; the loops see only this.
#[async_trait]
pub trait Leadership: Send + Sync {
    /// Takes part in the election and waits until this instance holds the lease.
    async fn campaign(&self) -> Result<FencingToken, LeaseError>;
    /// The state, updated as it changes.
    fn current(&self) -> watch::Receiver<LeaderState>;
    /// `Ok` only if the lease is held under `token` and the local deadline has not passed.
    fn check(&self, token: FencingToken) -> Result<(), NotLeader>;
    /// Gives the lease up at once (revokes it) and stops campaigning until the next
    /// [`Leadership::campaign`].
    async fn resign(&self) -> Result<(), LeaseError>;
}

// ---- connection -----------------------------------------------------------------------------

/// A connection to etcd plus the settings, shared by every election of this instance.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    settings: Arc<LeaseSettings>,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.settings.endpoints)
            .field("instance", &self.settings.instance)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Connects (reading the password file, if any).
    pub async fn connect(settings: LeaseSettings) -> Result<Self, LeaseError> {
        let mut options = ConnectOptions::new().with_connect_timeout(settings.connect_timeout);
        if let Some(c) = &settings.credentials {
            let password = match &c.password {
                PasswordSource::Value(s) => s.clone(),
                PasswordSource::File(path) => Secret::new(
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|source| LeaseError::Credentials {
                            path: path.clone(),
                            source,
                        })?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                ),
            };
            options = options.with_user(c.username.clone(), password.expose());
        }
        let endpoints = settings.endpoints.join(",");
        // The connect itself is bounded too: with credentials it also authenticates.
        let client = match timeout(
            settings.connect_timeout + settings.request_timeout,
            Client::connect(settings.endpoints.clone(), Some(options)),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => return Err(LeaseError::Connect { endpoints, source }),
            Err(_) => {
                return Err(LeaseError::Timeout {
                    operation: "connect",
                    after: settings.connect_timeout + settings.request_timeout,
                })
            }
        };
        debug!(%endpoints, "connected to etcd");
        Ok(Etcd {
            client,
            settings: Arc::new(settings),
        })
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// The election for this instance's scope (`<prefix>/<scope>/leader`); starts campaigning
    /// only on [`Leadership::campaign`], but follows the key from the start.
    pub fn leadership(&self) -> EtcdLeadership {
        EtcdLeadership::start(
            self.clone(),
            self.settings.leader_key(),
            Gate::Always,
            false,
        )
    }

    /// Writes `writes` only if `leader_key` still has `create_revision == token`, checked by etcd
    /// in the same transaction. No local check: see [`EtcdLeadership::txn_if_leader`].
    pub async fn txn_fenced(
        &self,
        leader_key: &str,
        token: FencingToken,
        writes: &[Write],
    ) -> Result<(), LeaseError> {
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match w {
                Write::Put { key, value } => TxnOp::put(key.as_str(), value.clone(), None),
                Write::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key,
                CompareOp::Equal,
                token.0,
            )])
            .and_then(ops);
        let mut kv = self.client.kv_client();
        let resp = bounded("fenced txn", self.settings.request_timeout, kv.txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(LeaseError::Fenced { token })
        }
    }
}

// ---- one election ---------------------------------------------------------------------------

/// When a follower campaigns for an absent key.
#[derive(Clone, Debug)]
enum Gate {
    /// At once.
    Always,
    /// At once if this instance is the preferred owner among the live instances, else only
    /// after the key has been absent for `patience` (the preferred one did not take it).
    Preferred {
        clusters: Arc<Vec<String>>,
        cluster: String,
        patience: Duration,
    },
}

/// Shared between the handle, the guard and the driver task.
struct Shared {
    etcd: Etcd,
    key: String,
    state: watch::Sender<LeaderState>,
    /// Whether to campaign (set by campaign, cleared by resign).
    wanted: watch::Sender<bool>,
    /// The token and its local deadline while held: what `check` reads.
    held: Mutex<Option<(FencingToken, Instant)>>,
}

impl Shared {
    fn publish(&self, state: LeaderState) {
        self.state.send_if_modified(|s| {
            if *s == state {
                false
            } else {
                debug!(key = %self.key, ?state, "lease state");
                *s = state;
                true
            }
        });
    }

    fn set_held(&self, held: Option<(FencingToken, Instant)>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
    }

    fn check(&self, token: FencingToken) -> Result<(), NotLeader> {
        let held = *self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held {
            Some((t, deadline)) if t == token => {
                if Instant::now() < deadline {
                    Ok(())
                } else {
                    Err(NotLeader::DeadlinePassed { token })
                }
            }
            _ => Err(NotLeader::NotHolder { token }),
        }
    }
}

/// The etcd election on one key. Dropping it stops the task without revoking the lease (as a
/// crash would); call [`Leadership::resign`] for a fast handover.
pub struct EtcdLeadership {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for EtcdLeadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLeadership")
            .field("key", &self.shared.key)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl Drop for EtcdLeadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EtcdLeadership {
    fn start(etcd: Etcd, key: String, gate: Gate, wanted: bool) -> Self {
        let (state, _) = watch::channel(LeaderState::Unknown);
        let (wanted, _) = watch::channel(wanted);
        let shared = Arc::new(Shared {
            etcd,
            key,
            state,
            wanted,
            held: Mutex::new(None),
        });
        let span =
            info_span!("lease", key = %shared.key, instance = %shared.etcd.settings.instance);
        let task = tokio::spawn(drive(shared.clone(), gate).instrument(span));
        EtcdLeadership { shared, task }
    }

    /// The key this election is about.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// Checks locally ([`Leadership::check`]), then writes `writes` in one transaction that
    /// etcd applies only if the leader key's `create_revision` is still `token`.
    pub async fn txn_if_leader(
        &self,
        token: FencingToken,
        writes: &[Write],
    ) -> Result<(), LeaseError> {
        self.shared.check(token)?;
        self.txn_fenced(token, writes).await
    }

    /// The etcd half of [`EtcdLeadership::txn_if_leader`] alone (no local check): what protects
    /// the data even when the local deadline is wrong.
    pub async fn txn_fenced(
        &self,
        token: FencingToken,
        writes: &[Write],
    ) -> Result<(), LeaseError> {
        self.shared
            .etcd
            .txn_fenced(&self.shared.key, token, writes)
            .await
    }
}

#[async_trait]
impl Leadership for EtcdLeadership {
    async fn campaign(&self) -> Result<FencingToken, LeaseError> {
        self.shared.wanted.send_replace(true);
        let mut rx = self.shared.state.subscribe();
        loop {
            if let Some(token) = rx.borrow_and_update().token() {
                return Ok(token);
            }
            rx.changed().await.map_err(|_| LeaseError::Stopped)?;
        }
    }

    fn current(&self) -> watch::Receiver<LeaderState> {
        self.shared.state.subscribe()
    }

    fn check(&self, token: FencingToken) -> Result<(), NotLeader> {
        self.shared.check(token)
    }

    async fn resign(&self) -> Result<(), LeaseError> {
        self.shared.wanted.send_replace(false);
        // The driver revokes the lease; wait until it no longer holds it.
        let mut rx = self.shared.state.subscribe();
        loop {
            if rx.borrow_and_update().token().is_none() {
                return Ok(());
            }
            rx.changed().await.map_err(|_| LeaseError::Stopped)?;
        }
    }
}

/// The driver: rounds of read, follow or campaign, hold; on error publish Unknown and retry.
async fn drive(shared: Arc<Shared>, gate: Gate) {
    let mut absent_since: Option<Instant> = None;
    let retry = shared.etcd.settings.keepalive;
    loop {
        if let Err(e) = round(&shared, &gate, &mut absent_since).await {
            shared.set_held(None);
            shared.publish(LeaderState::Unknown);
            warn!(error = %e, kind = %e.kind(), "lease round failed, retrying");
            sleep(retry).await;
        }
    }
}

async fn round(
    shared: &Shared,
    gate: &Gate,
    absent_since: &mut Option<Instant>,
) -> Result<(), LeaseError> {
    let settings = &shared.etcd.settings;
    let mut kv = shared.etcd.client.kv_client();
    let mut wanted = shared.wanted.subscribe();
    let resp = bounded(
        "get leader key",
        settings.request_timeout,
        kv.get(shared.key.as_str(), None),
    )
    .await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    if let Some(current) = resp.kvs().first() {
        *absent_since = None;
        let holder = String::from_utf8_lossy(current.value()).into_owned();
        shared.publish(LeaderState::Follower {
            leader: Some(holder),
        });
        return follow(shared, revision, None).await;
    }
    let since = *absent_since.get_or_insert_with(Instant::now);
    if !*wanted.borrow_and_update() {
        shared.publish(LeaderState::Follower { leader: None });
        return follow(shared, revision, Some(&mut wanted)).await;
    }
    if let Some(wait) = gate_delay(shared, gate, since).await? {
        shared.publish(LeaderState::Follower { leader: None });
        // Re-read after the wait (or sooner if the key changes).
        let _ = timeout(wait, follow(shared, revision, Some(&mut wanted))).await;
        return Ok(());
    }
    campaign_once(shared, &mut wanted).await?;
    *absent_since = None;
    Ok(())
}

/// `Some(wait)` when this instance should not campaign yet.
async fn gate_delay(
    shared: &Shared,
    gate: &Gate,
    absent_since: Instant,
) -> Result<Option<Duration>, LeaseError> {
    let Gate::Preferred {
        clusters,
        cluster,
        patience,
    } = gate
    else {
        return Ok(None);
    };
    let waited = Instant::now().saturating_duration_since(absent_since);
    if waited >= *patience {
        return Ok(None);
    }
    let settings = &shared.etcd.settings;
    let instances = live_instances(&shared.etcd).await?;
    match preferred_owner(clusters, cluster, &instances) {
        Some(owner) if owner == settings.instance => Ok(None),
        // Nobody registered (not even us): take it rather than leave it unowned.
        None => Ok(None),
        Some(_) => Ok(Some(*patience - waited)),
    }
}

/// Watches the key from `revision + 1` until it is deleted or changes owner, or (with `wanted`)
/// until the campaign wish changes.
async fn follow(
    shared: &Shared,
    revision: i64,
    wanted: Option<&mut watch::Receiver<bool>>,
) -> Result<(), LeaseError> {
    let settings = &shared.etcd.settings;
    let mut client = shared.etcd.client.watch_client();
    let mut stream = bounded(
        "watch leader key",
        settings.request_timeout,
        client.watch(
            shared.key.as_str(),
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        ),
    )
    .await?;
    let mut wanted = wanted;
    loop {
        let wanted_changed = async {
            match wanted.as_deref_mut() {
                Some(w) => w.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = stream.message() => {
                let Some(resp) = msg.map_err(etcd("watch leader key"))? else {
                    return Err(LeaseError::StreamEnded { operation: "watch leader key" });
                };
                if resp.canceled() {
                    return Err(LeaseError::StreamEnded { operation: "watch leader key" });
                }
                if !resp.events().is_empty() {
                    // Any change: re-read and decide again.
                    return Ok(());
                }
            }
            changed = wanted_changed => {
                if changed { return Ok(()); }
                return Err(LeaseError::Stopped);
            }
        }
    }
}

/// Grants a lease, tries the compare-and-set, and holds the key while it can.
async fn campaign_once(
    shared: &Shared,
    wanted: &mut watch::Receiver<bool>,
) -> Result<(), LeaseError> {
    let settings = &shared.etcd.settings;
    let mut lease = shared.etcd.client.lease_client();
    let mut kv = shared.etcd.client.kv_client();
    // The deadline counts from before the grant was sent: etcd starts the TTL later than that.
    let sent = Instant::now();
    let grant = bounded(
        "grant lease",
        settings.request_timeout,
        lease.grant(settings.ttl.as_secs() as i64, None),
    )
    .await?;
    let lease_id = grant.id();
    // etcd may round the TTL up, never down; trusting the smaller value is the safe side.
    let ttl = settings
        .ttl
        .min(Duration::from_secs(grant.ttl().max(0) as u64));
    let txn = Txn::new()
        .when([Compare::create_revision(
            shared.key.as_str(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            shared.key.as_str(),
            settings.instance.as_str(),
            Some(PutOptions::new().with_lease(lease_id)),
        )]);
    let resp = match bounded("campaign txn", settings.request_timeout, kv.txn(txn)).await {
        Ok(r) => r,
        Err(e) => {
            revoke_in_background(shared, lease_id);
            return Err(e);
        }
    };
    if !resp.succeeded() {
        debug!("lost the race for the key");
        revoke_in_background(shared, lease_id);
        return Ok(());
    }
    // A transaction with one put creates the key at the transaction's revision.
    let token = FencingToken(resp.header().map(|h| h.revision()).unwrap_or(0));
    let deadline = sent + ttl.saturating_sub(settings.safety_margin);
    let result = hold(shared, wanted, lease_id, ttl, token, deadline).await;
    shared.set_held(None);
    if result.is_err() {
        // Best effort: frees the key early if etcd is still reachable.
        revoke_in_background(shared, lease_id);
    }
    result
}

async fn hold(
    shared: &Shared,
    wanted: &mut watch::Receiver<bool>,
    lease_id: i64,
    ttl: Duration,
    token: FencingToken,
    mut deadline: Instant,
) -> Result<(), LeaseError> {
    let settings = &shared.etcd.settings;
    shared.set_held(Some((token, deadline)));
    shared.publish(LeaderState::Leader {
        token,
        since: Instant::now(),
    });
    info!(%token, "lease acquired");
    let mut lease = shared.etcd.client.lease_client();
    let (mut keeper, mut responses) = timeout_at(deadline, lease.keep_alive(lease_id))
        .await
        .map_err(|_| LeaseError::Timeout {
            operation: "keep-alive",
            after: ttl,
        })?
        .map_err(etcd("keep-alive"))?;
    let mut watch_client = shared.etcd.client.watch_client();
    let mut key_events = timeout_at(
        deadline,
        watch_client.watch(
            shared.key.as_str(),
            Some(WatchOptions::new().with_start_revision(token.0 + 1)),
        ),
    )
    .await
    .map_err(|_| LeaseError::Timeout {
        operation: "watch own key",
        after: ttl,
    })?
    .map_err(etcd("watch own key"))?;
    let mut ticks = tokio::time::interval(settings.keepalive);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Send times of keep-alives not answered yet; answers come back in order.
    let mut pending: VecDeque<Instant> = VecDeque::new();
    loop {
        tokio::select! {
            _ = sleep_until(deadline) => {
                shared.set_held(None);
                shared.publish(LeaderState::Unknown);
                warn!(%token, "no keep-alive acknowledged in time: stopped acting");
                return Err(LeaseError::Timeout { operation: "keep-alive", after: ttl });
            }
            _ = ticks.tick() => {
                let sent = Instant::now();
                // Bounded by the deadline so that a stuck send cannot delay giving up.
                match timeout_at(deadline, keeper.keep_alive()).await {
                    Ok(Ok(())) => pending.push_back(sent),
                    Ok(Err(e)) => return Err(etcd("keep-alive")(e)),
                    Err(_) => {} // the deadline branch fires next
                }
            }
            msg = responses.message() => {
                let Some(resp) = msg.map_err(etcd("keep-alive"))? else {
                    return Err(LeaseError::StreamEnded { operation: "keep-alive" });
                };
                let sent = pending.pop_front().unwrap_or(deadline - ttl);
                if resp.ttl() <= 0 {
                    // etcd says the lease is gone.
                    shared.set_held(None);
                    shared.publish(LeaderState::Unknown);
                    warn!(%token, "lease expired at etcd");
                    return Err(LeaseError::StreamEnded { operation: "keep-alive (lease expired)" });
                }
                deadline = sent + ttl.saturating_sub(settings.safety_margin);
                shared.set_held(Some((token, deadline)));
            }
            event = key_events.message() => {
                let Some(resp) = event.map_err(etcd("watch own key"))? else {
                    return Err(LeaseError::StreamEnded { operation: "watch own key" });
                };
                // Deleted, or rewritten by someone else (a write without our compare-and-set,
                // recreated under another lease): either way the key is not ours any more.
                let lost = resp.events().iter().any(|e| {
                    e.event_type() == EventType::Delete
                        || e.kv().is_some_and(|kv| {
                            kv.lease() != lease_id || kv.create_revision() != token.0
                        })
                });
                if lost {
                    shared.set_held(None);
                    shared.publish(LeaderState::Unknown);
                    warn!(%token, "leader key deleted or taken over under us");
                    return Err(LeaseError::Fenced { token });
                }
            }
            changed = wanted.changed() => {
                if changed.is_err() || !*wanted.borrow_and_update() {
                    shared.set_held(None);
                    let result = bounded("revoke lease", settings.request_timeout, lease.revoke(lease_id)).await;
                    shared.publish(LeaderState::Follower { leader: None });
                    info!(%token, "resigned");
                    return result.map(|_| ());
                }
            }
        }
    }
}

fn revoke_in_background(shared: &Shared, lease_id: i64) {
    let mut lease = shared.etcd.client.lease_client();
    let after = shared.etcd.settings.request_timeout;
    tokio::spawn(async move {
        let _ = timeout(after, lease.revoke(lease_id)).await;
    });
}

// ---- per-cluster leases ---------------------------------------------------------------------

/// The live instances of this scope, sorted.
async fn live_instances(etcd: &Etcd) -> Result<Vec<String>, LeaseError> {
    let prefix = etcd.settings.instances_prefix();
    let mut kv = etcd.client.kv_client();
    let resp = bounded(
        "list instances",
        etcd.settings.request_timeout,
        kv.get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        ),
    )
    .await?;
    let mut out: Vec<String> = resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = String::from_utf8_lossy(kv.key());
            key.strip_prefix(prefix.as_str()).map(str::to_string)
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The instance that should own `cluster`: clusters and instances sorted by name, cluster `i`
/// goes to instance `i mod n`. Every instance computes the same answer from the same lists, and
/// the clusters come out evenly shared. `None` without instances or for an unknown cluster.
pub fn preferred_owner<'a>(
    clusters: &[String],
    cluster: &str,
    instances: &'a [String],
) -> Option<&'a str> {
    if instances.is_empty() {
        return None;
    }
    let sorted: BTreeSet<&str> = clusters.iter().map(String::as_str).collect();
    let index = sorted.iter().position(|c| *c == cluster)?;
    let mut live: Vec<&str> = instances.iter().map(String::as_str).collect();
    live.sort_unstable();
    live.dedup();
    Some(live[index % live.len()])
}

/// An instance's share of a fleet: its presence key and one election per cluster.
///
/// Two steps so that all instances can register before any campaigns: [`ClusterLeases::join`]
/// announces this instance (`<prefix>/<scope>/instances/<id>`, on its own lease), then
/// [`ClusterLeases::claim`] starts an election per cluster. An instance campaigns at once for the
/// clusters [`preferred_owner`] gives it, and for any other cluster only after its key stayed
/// absent for one TTL (its preferred owner is gone), which is how a crashed instance's clusters
/// are picked up.
pub struct ClusterLeases {
    etcd: Etcd,
    presence: EtcdLeadership,
    clusters: BTreeMap<String, EtcdLeadership>,
}

impl fmt::Debug for ClusterLeases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterLeases")
            .field("instance", &self.etcd.settings.instance)
            .field("owned", &self.owned())
            .finish()
    }
}

impl ClusterLeases {
    /// Registers this instance; returns once the presence key is written.
    pub async fn join(etcd: &Etcd) -> Result<Self, LeaseError> {
        let key = format!(
            "{}{}",
            etcd.settings.instances_prefix(),
            etcd.settings.instance
        );
        let presence = EtcdLeadership::start(etcd.clone(), key, Gate::Always, true);
        // A stale presence key of a crashed process with the same id delays this by up to a TTL.
        presence.campaign().await?;
        Ok(ClusterLeases {
            etcd: etcd.clone(),
            presence,
            clusters: BTreeMap::new(),
        })
    }

    /// Starts an election for every cluster of the fleet (the same list on every instance).
    pub fn claim(&mut self, clusters: &[String]) {
        let all = Arc::new(clusters.to_vec());
        for cluster in clusters {
            if self.clusters.contains_key(cluster) {
                continue;
            }
            let gate = Gate::Preferred {
                clusters: all.clone(),
                cluster: cluster.clone(),
                patience: self.etcd.settings.ttl,
            };
            let election = EtcdLeadership::start(
                self.etcd.clone(),
                self.etcd.settings.cluster_key(cluster),
                gate,
                true,
            );
            self.clusters.insert(cluster.clone(), election);
        }
    }

    /// The clusters held now, with their tokens.
    pub fn owned(&self) -> BTreeMap<String, FencingToken> {
        self.clusters
            .iter()
            .filter_map(|(name, e)| {
                let token = e.shared.state.borrow().token()?;
                Some((name.clone(), token))
            })
            .collect()
    }

    /// The election of one cluster (for `current`, `check`, `txn_if_leader`).
    pub fn cluster(&self, name: &str) -> Option<&EtcdLeadership> {
        self.clusters.get(name)
    }

    /// Whether this instance's presence is still held.
    pub fn present(&self) -> bool {
        self.presence.shared.state.borrow().token().is_some()
    }

    /// Gives every cluster and the presence key up.
    pub async fn resign_all(&self) -> Result<(), LeaseError> {
        for e in self.clusters.values() {
            e.resign().await?;
        }
        self.presence.resign().await
    }
}

// ---- Patroni discovery ----------------------------------------------------------------------

/// The Patroni scopes (cluster names) present under `namespace` in etcd: those with a
/// `config`, `initialize`, `leader` or `members/...` key (Patroni's v3 layout
/// `<namespace>/<scope>/...`). Sorted.
pub async fn discover_patroni_scopes(
    etcd: &Etcd,
    namespace: &str,
) -> Result<Vec<String>, LeaseError> {
    let prefix = format!("{}/", namespace.trim_end_matches('/'));
    let mut kv = etcd.client.kv_client();
    let resp = bounded(
        "list patroni keys",
        etcd.settings.request_timeout,
        kv.get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        ),
    )
    .await?;
    let keys: Vec<String> = resp
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    Ok(scopes_from_keys(&prefix, keys.iter().map(String::as_str)))
}

/// The pure half of [`discover_patroni_scopes`].
pub fn scopes_from_keys<'a>(prefix: &str, keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scopes = BTreeSet::new();
    for key in keys {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let Some((scope, tail)) = rest.split_once('/') else {
            continue;
        };
        let patroni_key = matches!(tail, "config" | "initialize" | "leader")
            || tail.strip_prefix("members/").is_some_and(|m| !m.is_empty());
        if !scope.is_empty() && patroni_key {
            scopes.insert(scope.to_string());
        }
    }
    scopes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig {
            endpoints: vec!["http://127.0.0.5:23790".into()],
            instance: Some("a".into()),
            scope: Some("fleet".into()),
            ..LeaseConfig::default()
        }
    }

    fn paths(e: ConfigErrors) -> Vec<String> {
        e.iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn defaults_give_ttl_thirds() {
        let s = config().validate_with_env(|_| None).unwrap();
        assert_eq!(s.ttl, Duration::from_secs(10));
        assert_eq!(s.keepalive, Duration::from_secs(10) / 3);
        assert_eq!(s.safety_margin, Duration::from_secs(10) / 3);
        assert_eq!(s.endpoints, vec!["http://127.0.0.5:23790".to_string()]);
        assert_eq!(s.leader_key(), "/steward/fleet/leader");
        assert_eq!(s.cluster_key("pg1"), "/steward/clusters/pg1/owner");
    }

    #[test]
    fn every_error_has_its_path() {
        let c = LeaseConfig {
            endpoints: vec![
                "unix:///run/etcd.sock".into(),
                "https://127.0.0.1:2379".into(),
                "nonsense".into(),
            ],
            instance: None,
            scope: Some("a/b".into()),
            ttl: Duration::from_millis(1500),
            username: Some("steward".into()),
            password_env: Some("ETCD_PW".into()),
            ..LeaseConfig::default()
        };
        let got = paths(c.validate_with_env(|_| None).unwrap_err());
        for want in [
            "endpoints[0]",
            "endpoints[1]",
            "endpoints[2]",
            "instance",
            "scope",
            "ttl",
            "password_env",
        ] {
            assert!(got.contains(&want.to_string()), "{want} missing in {got:?}");
        }
    }

    #[test]
    fn keepalive_must_fit_before_the_deadline() {
        let c = LeaseConfig {
            ttl: Duration::from_secs(3),
            keepalive: Some(Duration::from_secs(2)),
            ..config()
        };
        assert_eq!(
            paths(c.validate_with_env(|_| None).unwrap_err()),
            ["keepalive"]
        );
    }

    /// Issue 16: every duration of `[lease]` has an upper bound the program can honour, named
    /// by its field (a ttl etcd would refuse, timeouts whose sum overflowed at `run`).
    #[test]
    fn durations_past_their_bounds_are_refused_with_their_field() {
        let raw: LeaseConfig = toml::from_str(
            "endpoints = [\"http://127.0.0.5:23790\"]\ninstance = \"a\"\nscope = \"fleet\"\n\
             ttl = \"500000000000y\"\nkeepalive = \"1s\"\nsafety_margin = \"1s\"\n\
             connect_timeout = \"500000000000y\"\nrequest_timeout = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(
            paths(raw.validate_with_env(|_| None).unwrap_err()),
            ["ttl", "connect_timeout", "request_timeout"]
        );
    }

    /// Found by the `config` fuzz target: `[lease] keepalive` plus `safety_margin` of a few
    /// hundred billion years each overflowed the sum checked here.
    #[test]
    fn huge_keepalive_and_safety_margin_are_refused_not_a_panic() {
        let raw: LeaseConfig = toml::from_str(
            "endpoints = [\"http://127.0.0.5:23790\"]\ninstance = \"a\"\nscope = \"fleet\"\n\
             keepalive = \"500000000000y\"\nsafety_margin = \"500000000000y\"\n",
        )
        .unwrap();
        assert_eq!(
            paths(raw.validate_with_env(|_| None).unwrap_err()),
            ["keepalive"]
        );
    }

    #[test]
    fn password_from_env_is_never_printed() {
        let c = LeaseConfig {
            username: Some("steward".into()),
            password_env: Some("ETCD_PW".into()),
            ..config()
        };
        let s = c
            .validate_with_env(|n| (n == "ETCD_PW").then(|| "hunter2".to_string()))
            .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(
            s.credentials.unwrap().password,
            PasswordSource::Value(Secret::new("hunter2"))
        );
    }

    #[test]
    fn endpoints_are_any_host_and_port_over_plain_http() {
        for (raw, want) in [
            ("127.0.0.2:2379", "http://127.0.0.2:2379"),
            ("http://127.1.2.3:1/", "http://127.1.2.3:1"),
            ("http://192.0.2.10:2379", "http://192.0.2.10:2379"),
            ("http://[::1]:2379", "http://[::1]:2379"),
            ("etcd-1.db.example:2379", "http://etcd-1.db.example:2379"),
            ("http://localhost:2379", "http://localhost:2379"),
        ] {
            assert_eq!(parse_endpoint(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "unix:///run/etcd.sock",
            "https://etcd:2379",
            "http://etcd",
            "http://etcd:0",
            "http://etcd:99999",
            "http://-etcd:2379",
            "http://et cd:2379",
            "http://user@etcd:2379",
            "http://:2379",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_kubernetes_lease_needs_no_endpoints_and_refuses_etcds_fields() {
        let k = LeaseConfig {
            kind: LeaseKind::Kubernetes,
            endpoints: Vec::new(),
            ..config()
        };
        let s = k.validate_with_env(|_| None).unwrap();
        assert_eq!(
            s.backend,
            LeaseBackend::Kubernetes {
                namespace: None,
                name: "steward-fleet".into()
            }
        );
        let named = LeaseConfig {
            namespace: Some("databases".into()),
            name: Some("steward.orders".into()),
            ..k.clone()
        };
        assert_eq!(
            named.validate_with_env(|_| None).unwrap().backend,
            LeaseBackend::Kubernetes {
                namespace: Some("databases".into()),
                name: "steward.orders".into()
            }
        );
        let wrong = LeaseConfig {
            endpoints: vec!["http://127.0.0.5:2379".into()],
            username: Some("root".into()),
            password_file: Some("/etc/steward/etcd-password".into()),
            namespace: Some("Databases".into()),
            ..k.clone()
        };
        let got = paths(wrong.validate_with_env(|_| None).unwrap_err());
        for path in ["endpoints", "username", "password_file", "namespace"] {
            assert!(got.iter().any(|p| p == path), "{path}: {got:?}");
        }
        let upper = LeaseConfig {
            scope: Some("Orders".into()),
            ..k
        };
        let e = upper.validate_with_env(|_| None).unwrap_err();
        assert_eq!(paths(e.clone()), ["scope"]);
        assert!(e.to_string().contains("steward-Orders"), "{e}");
        // One config for every pod: the id from the environment.
        let from_env = LeaseConfig {
            instance: None,
            instance_env: Some("POD_NAME".into()),
            ..config()
        };
        let env = |k: &str| (k == "POD_NAME").then(|| "steward-7c9d8f6b5-x2k4q".to_string());
        assert_eq!(
            from_env.validate_with_env(env).unwrap().instance,
            "steward-7c9d8f6b5-x2k4q"
        );
        let e = from_env.validate_with_env(|_| None).unwrap_err();
        assert_eq!(paths(e.clone()), ["instance_env"]);
        assert!(e.to_string().contains("`POD_NAME` is not set"), "{e}");
        // And the Lease's fields are refused for etcd, by name.
        let etcd = LeaseConfig {
            name: Some("steward-orders".into()),
            ..config()
        };
        assert_eq!(
            paths(etcd.validate_with_env(|_| None).unwrap_err()),
            ["name"]
        );
    }

    #[test]
    fn config_round_trips_with_defaults_filled_in() {
        let c = LeaseConfig {
            keepalive: Some(Duration::from_secs(2)),
            ..config()
        };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""ttl":"10s""#), "{text}");
        assert_eq!(serde_json::from_str::<LeaseConfig>(&text).unwrap(), c);
    }

    #[test]
    fn errors_are_classified() {
        let token = FencingToken(7);
        assert_eq!(LeaseError::Fenced { token }.kind(), ErrorKind::Conflict);
        assert_eq!(
            LeaseError::from(NotLeader::DeadlinePassed { token }).kind(),
            ErrorKind::Conflict
        );
        let timeout = LeaseError::Timeout {
            operation: "get",
            after: Duration::from_secs(1),
        };
        assert_eq!(timeout.kind(), ErrorKind::Transient);
        let bad = LeaseError::Etcd {
            operation: "get",
            source: etcd_client::Error::InvalidArgs("empty key".into()),
        };
        assert_eq!(bad.kind(), ErrorKind::Permanent);
        let cut = LeaseError::Etcd {
            operation: "get",
            source: etcd_client::Error::LeaseKeepAliveError("stream closed".into()),
        };
        assert_eq!(cut.kind(), ErrorKind::Transient);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<LeaseConfig>(r#"{"endpoints": [], "tll": "3s"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tll"), "{err}");
    }

    #[test]
    fn preferred_owners_share_evenly_and_agree() {
        let clusters: Vec<String> = ["d", "a", "c", "b"].map(String::from).to_vec();
        let one_order: Vec<String> = ["x", "y"].map(String::from).to_vec();
        let other_order: Vec<String> = ["y", "x"].map(String::from).to_vec();
        let mut per_instance = BTreeMap::new();
        for c in &clusters {
            let a = preferred_owner(&clusters, c, &one_order).unwrap();
            let b = preferred_owner(&clusters, c, &other_order).unwrap();
            assert_eq!(a, b);
            *per_instance.entry(a).or_insert(0) += 1;
        }
        assert_eq!(per_instance, BTreeMap::from([("x", 2), ("y", 2)]));
        assert_eq!(preferred_owner(&clusters, "zz", &one_order), None);
        assert_eq!(preferred_owner(&clusters, "a", &[]), None);
    }

    #[test]
    fn scopes_need_a_patroni_key() {
        let keys = [
            "/service/alpha/config",
            "/service/alpha/members/pg-1",
            "/service/beta/leader",
            "/service/gamma/members/",
            "/service/delta",
            "/services/epsilon/leader",
            "/service/zeta/initialize",
        ];
        assert_eq!(
            scopes_from_keys("/service/", keys),
            ["alpha", "beta", "zeta"]
        );
    }
}
