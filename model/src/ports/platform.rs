//! The platform port: where members live (Docker, libvirt, Kubernetes, simulated).
//!
//! Architecture invariant: a platform lists, changes and removes only what carries Steward's
//! labels for its cluster ([`LABEL_CLUSTER`] and friends). Anything else is invisible to it.

use std::collections::BTreeMap;
use std::fmt;
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

/// A member's labels: a small map, shared, not copied, between listings. A platform that keeps
/// its members' labels (the simulated one) hands out the same map on every `list`, and the copies
/// kept by the cores share it too. A fleet lists 30,000 members a tick: copying these maps was
/// most of its list phase (benches/fleet.rs: 22-24 -> 8-9 ms).
///
/// Held as one slice of pairs in key order: a member carries four or five labels, which a
/// `BTreeMap` kept in a node with room for eleven (~880 bytes a member with its keys), and
/// Steward's own keys ([`LABEL_CLUSTER`] and friends) are the constants themselves, not heap
/// strings, so a lookup reads no memory of its own for them (the repairer looks up
/// [`LABEL_REPLACES`] on every member at every observation). A change copies the pairs first if
/// they are shared, so no other listing sees it.
///
/// Which of Steward's keys the member carries is also kept beside the pointer (`own`): asking
/// for one it lacks (most members carry no [`LABEL_REPLACES`]) reads nothing on the heap.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pairs: Arc<[(LabelKey, String)]>,
    /// Bit `i` set when [`OWN_KEYS`]`[i]` is among `pairs`.
    own: u8,
}

/// A label's key: one of Steward's own held as its constant, any other owned.
pub type LabelKey = std::borrow::Cow<'static, str>;

/// Steward's own keys, held as their constants when read from a platform.
const OWN_KEYS: [&str; 5] = [
    LABEL_CLUSTER,
    LABEL_ROLE,
    LABEL_MEMBER,
    LABEL_OPERATION,
    LABEL_REPLACES,
];

/// `key` as its constant when it is one of Steward's own.
fn intern(key: LabelKey) -> LabelKey {
    match OWN_KEYS.iter().find(|own| **own == key) {
        Some(own) => LabelKey::Borrowed(own),
        None => key,
    }
}

/// The bit of `key` in [`Labels::own`], if it is one of Steward's keys (their lengths differ,
/// so this is a few length checks and at most one comparison).
fn own_bit(key: &str) -> Option<u8> {
    OWN_KEYS.iter().position(|own| *own == key).map(|i| 1 << i)
}

impl Labels {
    /// Labels from pairs in key order, each key once.
    fn from_sorted(pairs: Vec<(LabelKey, String)>) -> Labels {
        let own = pairs
            .iter()
            .filter_map(|(k, _)| own_bit(k))
            .fold(0, |bits, bit| bits | bit);
        Labels {
            pairs: pairs.into(),
            own,
        }
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        if own_bit(key).is_some_and(|bit| self.own & bit == 0) {
            return Err(0); // not carried: the caller only needs to know that
        }
        self.pairs.binary_search_by(|(k, _)| k.as_ref().cmp(key))
    }

    /// The value of `key`, if the member carries it.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.find(key).ok().map(|i| &self.pairs[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` (a constant, or an owned key) to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: impl Into<LabelKey>, value: String) -> Option<String> {
        let key = intern(key.into());
        let mut pairs = self.pairs.to_vec();
        let old = match pairs.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut pairs[i].1, value)),
            Err(i) => {
                pairs.insert(i, (key, value));
                None
            }
        };
        *self = Labels::from_sorted(pairs);
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.find(key).ok()?;
        let mut pairs = self.pairs.to_vec();
        let (_, value) = pairs.remove(i);
        *self = Labels::from_sorted(pairs);
        Some(value)
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &String)> {
        self.pairs.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        self.get(key)
            .unwrap_or_else(|| panic!("no label `{key}` on this member"))
    }
}

impl<K: Into<LabelKey>> FromIterator<(K, String)> for Labels {
    /// The last value wins for a key given twice, as in a map.
    fn from_iter<I: IntoIterator<Item = (K, String)>>(pairs: I) -> Self {
        let mut pairs: Vec<(LabelKey, String)> = pairs
            .into_iter()
            .map(|(k, v)| (intern(k.into()), v))
            .collect();
        // Stable: of a key given twice, the later pair stays after the earlier one.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(LabelKey, String)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match unique.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => unique.push(pair),
            }
        }
        Labels::from_sorted(unique)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        map.into_iter().collect()
    }
}

impl<K: Into<LabelKey>, const N: usize> From<[(K, String); N]> for Labels {
    fn from(pairs: [(K, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

/// As a map: the type is only how it is held.
impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(Labels::from)
    }
}

/// The replacements among `listed` (members of `cluster`, running, carrying [`LABEL_REPLACES`])
/// whose replaced member is listed too, by name -> the member they replace. Outside a repair
/// under way, each is a repair a dead run left half-done.
pub fn unfinished_replacements(
    cluster: &str,
    listed: &[PlatformMember],
) -> std::collections::BTreeMap<String, String> {
    let ours = |m: &&PlatformMember| m.cluster == cluster;
    // The label first: most members carry none, and their other strings stay unread.
    listed
        .iter()
        .filter_map(|m| Some((m, m.labels.get(LABEL_REPLACES)?)))
        .filter(|(m, _)| m.state == crate::observation::PlatformState::Running && ours(m))
        .filter(|(_, target)| listed.iter().filter(ours).any(|t| t.name == **target))
        .map(|(m, target)| (m.name.clone(), target.clone()))
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
mod labels_tests {
    use super::*;

    #[test]
    fn steward_keys_are_held_as_their_constants_and_others_owned() {
        let labels: Labels = BTreeMap::from([
            (LABEL_REPLACES.to_string(), "pg-1".to_string()),
            ("app".to_string(), "db".to_string()),
        ])
        .into();
        let keys: Vec<(bool, &str)> = labels
            .pairs
            .iter()
            .map(|(k, _)| (matches!(k, LabelKey::Borrowed(_)), k.as_ref()))
            .collect();
        assert_eq!(keys, [(false, "app"), (true, LABEL_REPLACES)]);
        assert_eq!(labels.get(LABEL_REPLACES).map(String::as_str), Some("pg-1"));
        assert_eq!(labels["app"], "db");
        assert!(labels.get("io.steward").is_none());
    }

    #[test]
    fn labels_change_like_a_map_and_a_shared_copy_does_not_see_it() {
        let mut labels = Labels::from([("b", "2".to_string()), ("a", "1".to_string())]);
        let shared = labels.clone();
        assert_eq!(labels.insert("c", "3".to_string()), None);
        assert_eq!(
            labels.insert("a".to_string(), "one".to_string()),
            Some("1".into())
        );
        assert_eq!(labels.remove("b"), Some("2".into()));
        assert_eq!(labels.remove("b"), None);
        let now: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k, v.as_str())).collect();
        assert_eq!(now, [("a", "one"), ("c", "3")]);
        assert_eq!(shared.len(), 2);
        assert_eq!(shared["b"], "2");
        // Steward's keys are found through the bits kept beside the pairs: kept up to date.
        let mut own = Labels::from([(LABEL_CLUSTER, "pg".to_string())]);
        assert!(own.get(LABEL_REPLACES).is_none() && own.contains_key(LABEL_CLUSTER));
        own.insert(LABEL_REPLACES, "pg-1".to_string());
        assert_eq!(own.get(LABEL_REPLACES).map(String::as_str), Some("pg-1"));
        assert_eq!(own.remove(LABEL_CLUSTER), Some("pg".into()));
        assert!(!own.contains_key(LABEL_CLUSTER) && own.contains_key(LABEL_REPLACES));
        assert_eq!(own, Labels::from([(LABEL_REPLACES, "pg-1".to_string())]));
        // Of a key given twice, the last value stays, as in a map.
        let twice = Labels::from([("k", "1".to_string()), ("k", "2".to_string())]);
        assert_eq!((twice.len(), twice["k"].as_str()), (1, "2"));
    }

    #[test]
    fn labels_read_and_write_as_a_json_object_in_key_order() {
        let labels = Labels::from([(LABEL_ROLE, "database".to_string()), ("a", "x".to_string())]);
        let text = serde_json::to_string(&labels).unwrap();
        assert_eq!(text, r#"{"a":"x","io.steward.role":"database"}"#);
        let back: Labels = serde_json::from_str(&text).unwrap();
        assert_eq!(back, labels);
        assert_eq!(
            format!("{labels:?}"),
            r#"{"a": "x", "io.steward.role": "database"}"#
        );
    }
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
