//! The platform port: where members live (Docker, libvirt, Kubernetes, simulated).
//!
//! Architecture invariant: a platform lists, changes and removes only what carries Steward's
//! labels for its cluster ([`LABEL_CLUSTER`] and friends). Anything else is invisible to it.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::observation::PlatformState;
use crate::size::{Role, Size};
use crate::time::Timestamp;

/// Label naming the cluster a resource belongs to.
pub const LABEL_CLUSTER: &str = "io.steward.cluster";
/// Label naming the member's role (`database` or `balancer`).
pub const LABEL_ROLE: &str = "io.steward.role";
/// Label naming the member.
pub const LABEL_MEMBER: &str = "io.steward.member";
/// Label carrying the id of the operation that created or last changed the resource.
pub const LABEL_OPERATION: &str = "io.steward.operation";
/// Label naming the member a replacement was created to replace: with it a Steward whose
/// journal was lost still knows what the replacement is for, and finishes the repair.
pub const LABEL_REPLACES: &str = "io.steward.replaces";

/// Where a platform puts a new member among its hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// One member of a role per host: a create with no such host left is refused.
    #[default]
    Required,
    /// Spread when a host without a member of the role is left, else the host with the fewest
    /// (the first of them): a replacement is never refused for want of a free host, and the
    /// platform says (a warning) that two members of a role now share a host.
    Preferred,
}

impl Placement {
    /// The host a new member of a role goes to, given how many members of the role each host
    /// holds, and whether it shares a host with one; `None` when the placement refuses.
    pub fn pick(self, members_per_host: &[usize]) -> Option<(usize, bool)> {
        if let Some(free) = members_per_host.iter().position(|n| *n == 0) {
            return Some((free, false));
        }
        match self {
            Placement::Required => None,
            Placement::Preferred => members_per_host
                .iter()
                .enumerate()
                .min_by_key(|(i, n)| (**n, *i))
                .map(|(i, _)| (i, true)),
        }
    }
}

/// How the platform can change one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Applied while the member runs.
    Live,
    /// Applied by restarting (or recreating) the member.
    Restart,
    /// The platform cannot do it.
    Unsupported,
}

/// What a CPU size means on a platform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuUnit {
    /// A share of CPU time over the member (CFS quota): fractions of a CPU, changed without
    /// touching its processes (Docker `--cpus`, Kubernetes limits, libvirt LXC `<cputune>`).
    #[default]
    Quota,
    /// Whole virtual CPUs (libvirt QEMU/KVM `setvcpus`).
    Vcpus,
}

/// What a platform can change, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub cpu: Change,
    /// What `cpu` changes: a quota or whole vCPUs (issue 18: libvirt LXC cannot change vCPUs
    /// live, so its CPU is a quota).
    #[serde(default)]
    pub cpu_unit: CpuUnit,
    pub memory: Change,
    pub disk_grow: Change,
    /// Disks never shrink in Steward's policies; platforms report it for completeness.
    pub disk_shrink: Change,
    /// Whether members can be spread over several physical hosts.
    pub multi_host: bool,
}

/// A member as the platform knows it. No vendor type: names, sizes, states, labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlatformMember {
    pub name: String,
    pub cluster: String,
    pub role: Role,
    pub size: Size,
    pub state: PlatformState,
    /// The member's own address (e.g. `127.0.0.12`).
    pub address: String,
    /// The physical host (Docker engine, libvirt URI, Kubernetes node) it runs on.
    pub host: String,
    pub labels: Labels,
    pub created_at: Option<Timestamp>,
    /// How many times the platform restarted it (restart loops are a repair signal).
    pub restart_count: u32,
}

/// A member's labels: a map shared, not copied, between listings. A platform that keeps its
/// members' labels (the simulated one) hands out the same map on every `list`, and the copies
/// kept by the cores share it too. A fleet lists 30,000 members a tick: copying these maps was
/// most of its list phase (benches/fleet.rs: 22-24 -> 8-9 ms). Reads go through `Deref`; a
/// change (`DerefMut`) copies the map first if it is shared, so no other listing sees it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Labels(Arc<BTreeMap<String, String>>);

impl Deref for Labels {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Labels {
    fn deref_mut(&mut self) -> &mut Self::Target {
        Arc::make_mut(&mut self.0)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Labels(Arc::new(map))
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        Labels(Arc::new(BTreeMap::from(pairs)))
    }
}

/// As the map: the type is only how it is held.
impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Labels::from)
    }
}

/// The replacements among `listed` (members of `cluster`, running, carrying [`LABEL_REPLACES`])
/// whose replaced member is listed too, by name -> the member they replace. Outside a repair
/// under way, each is a repair a dead run left half-done.
pub fn unfinished_replacements(
    cluster: &str,
    listed: &[PlatformMember],
) -> std::collections::BTreeMap<String, String> {
    let ours = || listed.iter().filter(|m| m.cluster == cluster);
    ours()
        .filter(|m| m.state == crate::observation::PlatformState::Running)
        .filter_map(|m| {
            let target = m.labels.get(LABEL_REPLACES)?;
            ours()
                .any(|t| t.name == *target)
                .then(|| (m.name.clone(), target.clone()))
        })
        .collect()
}

/// What to create.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateSpec {
    pub cluster: String,
    pub role: Role,
    pub name: String,
    pub size: Size,
    /// The operation creating it; stored in [`LABEL_OPERATION`].
    pub operation_id: String,
    /// The member it replaces, for a repair's replacement; stored in [`LABEL_REPLACES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// How a resize was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeOutcome {
    /// In effect now, the member kept running.
    AppliedLive,
    /// In effect after the member was restarted (the platform did it).
    AppliedWithRestart,
    /// Recorded, takes effect at the member's next restart (which the caller must arrange).
    PendingRestart,
}

/// Resource usage of one member, as the platform measures it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub at: Timestamp,
    /// vCPUs in use (averaged over the platform's sampling interval).
    pub cpu_used: Option<f64>,
    /// Working set: RSS + shared memory, not page cache (ENVIRONMENT.md), bytes.
    pub memory_used: Option<u64>,
    pub disk_used: Option<u64>,
    pub disk_size: Option<u64>,
    /// OOM kills inside the member since it started, when the platform counts them.
    pub oom_kills: Option<u64>,
}

/// The classes of failure a loop tells apart: one vocabulary for every adapter (platforms,
/// Patroni, Prometheus, HAProxy, etcd).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Try again later (timeouts, connection refused, 5xx, a busy engine).
    Transient,
    /// The member (or what it needs) does not exist.
    NotFound,
    /// The state changed under us (name taken, resource version moved): re-read and retry.
    Conflict,
    /// The platform refused the request as asked (e.g. a memory limit below what is in use);
    /// nothing was changed.
    Refused,
    /// Credentials missing or refused (HTTP 401/403): retrying will not help, the config must
    /// be fixed.
    Auth,
    /// Will not succeed by retrying (bad template, unsupported operation, not owned).
    Permanent,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Refused => "refused",
            ErrorKind::Auth => "auth",
            ErrorKind::Permanent => "permanent",
        }
    }
}

impl ErrorKind {
    /// The class of an HTTP status that is an error for the request made.
    pub fn of_http_status(status: u16) -> ErrorKind {
        match status {
            401 | 403 => ErrorKind::Auth,
            404 => ErrorKind::NotFound,
            409 | 412 => ErrorKind::Conflict,
            408 | 429 => ErrorKind::Transient,
            500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed platform operation: which class, what was attempted, and the platform's own message.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({kind}): {message}")]
pub struct PlatformError {
    pub kind: ErrorKind,
    /// What was attempted, e.g. `resize member pg-2`.
    pub operation: String,
    /// The platform's message, kept verbatim where it helps (runc's refusal, a Kubernetes Status).
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PlatformError {
    pub fn new(kind: ErrorKind, operation: impl Into<String>, message: impl Into<String>) -> Self {
        PlatformError {
            kind,
            operation: operation.into(),
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Where members live. One implementation per platform; the loops see only this.
///
/// Every method touches only members this platform owns for its cluster (carrying the Steward
/// labels); a name it does not own is [`ErrorKind::NotFound`], never acted upon.
#[async_trait]
pub trait Platform: Send + Sync {
    /// A short name for logs (`docker`, `libvirt`, `kubernetes`, `simulated`).
    fn kind(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// The members this platform owns for its cluster (both roles).
    async fn list(&self) -> Result<Vec<PlatformMember>, PlatformError>;

    /// Creates and starts a member from its role's template at `spec.size`, on a host that holds
    /// no other member of the same role (refused, saying so, when none is left).
    async fn create(&self, spec: &CreateSpec) -> Result<PlatformMember, PlatformError>;

    /// Changes a member's size. CPU and memory live where the platform can; disk only grows.
    /// Either the whole change is applied or nothing is.
    async fn resize(&self, member: &str, size: Size) -> Result<ResizeOutcome, PlatformError>;

    /// Makes the member unable to serve or write (stop/kill, destroy, delete the pod).
    /// Idempotent: fencing a fenced member succeeds.
    async fn fence(&self, member: &str) -> Result<(), PlatformError>;

    /// Removes a (fenced) member. Its data is kept unless `delete_data`.
    async fn remove(&self, member: &str, delete_data: bool) -> Result<(), PlatformError>;

    /// Resource usage of each running member, by name.
    async fn usage(&self) -> Result<BTreeMap<String, Usage>, PlatformError>;

    /// Members Steward stopped looking after without deleting their data (an adopted member
    /// replaced: its data is not Steward's to delete): where the data is and how to delete it.
    /// Platforms without adoption have none.
    async fn kept(&self) -> Result<Vec<KeptData>, PlatformError> {
        Ok(Vec::new())
    }
}

/// A member retired with its data kept ([`Platform::kept`]), for `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptData {
    /// The member it was.
    pub member: String,
    /// Where it is kept (its container, domain, pod), as the platform names it.
    pub resource: String,
    pub host: String,
    /// Its data: host folders, volumes.
    pub data: Vec<String>,
    /// How an operator deletes it once it is no longer needed.
    pub delete_with: String,
}

#[cfg(test)]
mod placement_tests {
    use super::Placement;

    #[test]
    fn required_spreads_or_refuses_and_preferred_falls_back_to_the_least_loaded_host() {
        assert_eq!(Placement::Required.pick(&[1, 0, 1]), Some((1, false)));
        assert_eq!(Placement::Preferred.pick(&[1, 0, 1]), Some((1, false)));
        assert_eq!(Placement::Required.pick(&[2, 1]), None);
        assert_eq!(Placement::Preferred.pick(&[2, 1]), Some((1, true)));
        assert_eq!(Placement::Preferred.pick(&[1, 1]), Some((0, true)));
        assert_eq!(Placement::Preferred.pick(&[]), None);
    }
}
