//! The Kubernetes platform: members are the Pods of one StatefulSet per role (Patroni's usual
//! shape), driven through the API server with kube-rs.
//!
//! What it is: an implementation of [`Platform`] where
//! - the replica count moves through the StatefulSet's `scale` subresource: create of the next
//!   ordinal's name (`pg-3` beside `pg-0..2`) scales up after creating its PVC at the asked disk
//!   size, and waits until the pod runs. Create of a name that is no ordinal of the set (the
//!   repairer names a replacement after the member it replaces: `pg-1-r1`) makes **a pod of its
//!   own** from the StatefulSet's pod template and volumeClaimTemplates, labelled
//!   [`LABEL_STANDALONE`] (see `create_standalone`): a StatefulSet cannot name a pod, and a
//!   Patroni that takes its name from its pod (Spilo) must join under the name Steward asked
//!   for. Such a pod is resized in place only (no controller brings it back from a template);
//!   removing it deletes it;
//! - vCPU and memory change in place through the Pod `resize` subresource (Kubernetes 1.33+).
//!   When the kubelet answers `PodResizePending`/`Infeasible` (or the API refuses the in-place
//!   change), the StatefulSet template is patched and the pod deleted, so that it comes back at
//!   the new size: [`ResizeOutcome::AppliedWithRestart`]. `Deferred` (it fits the node, just not
//!   now) is [`ResizeOutcome::PendingRestart`]. The template is patched in every case so that
//!   new pods get the role's size, which is why the StatefulSet must use the `OnDelete` update
//!   strategy (with `RollingUpdate` a template change restarts every member: refused);
//! - the data disk grows by PVC expansion (`spec.resources.requests.storage`);
//! - fence = set the serving label to `false` (the Service selects `serving=true`, so the pod
//!   leaves the endpoints), record the member as fenced in an annotation of the StatefulSet
//!   (the controller recreates a deleted pod; a recreated pod of a fenced member stays fenced,
//!   i.e. out of the endpoints and reported [`PlatformState::Fenced`]), then delete the pod with
//!   grace period 0 so the old process dies at once;
//! - remove = forget the fence; scale down when the member is the highest ordinal, else delete
//!   the pod (the StatefulSet brings it back under the same name, with fresh data when its PVC
//!   goes too: a StatefulSet has no holes); delete the PVC when asked.
//!
//! Ownership is by labels: only pods carrying [`LABEL_CLUSTER`] = the configured cluster, in the
//! configured namespace, from the configured StatefulSets, exist for it.
//!
//! Label keys: Kubernetes accepts `[prefix/]name`, the prefix a DNS subdomain (at most 253
//! characters) and the name at most 63 characters of `[A-Za-z0-9._-]`, starting and ending
//! alphanumeric. Steward's keys (`io.steward.cluster`, ...) have no `/`: they are valid
//! name-only keys (see [`is_valid_label_key`] and its test), though by convention unprefixed
//! keys belong to users; `steward.io/cluster` would be the conventional form.
//!
//! Configuration (defaults shown for the optional fields):
//!
//! ```toml
//! cluster = "demo"
//! namespace = "databases"
//! serving_label = "io.steward.serving"
//! pod_wait_seconds = 300
//! resize_wait_seconds = 30
//! poll_millis = 1000
//! # kubeconfig = "/etc/steward/kubeconfig"   # default: KUBECONFIG, ~/.kube/config, in-cluster
//! # context = "prod"                         # default: the kubeconfig's current-context
//! [database]
//! statefulset = "pg"
//! container = "postgres"
//! volume_claim = "data"
//! max_cpus = 8.0
//! max_memory_bytes = 34359738368
//! ```
//!
//! The API client comes from [`client`] (a kubeconfig or the pod's service account); a
//! `coordination.k8s.io/v1` Lease election over the same client is in [`lease`].
//!
//! Pods Steward did not create may be managed on the operator's word: `[[platform.kubernetes.adopt]]`
//! rules ([`adopt`]) name them (a pod, or a label selector such as Spilo's). They are listed,
//! resized in place and fenced like owned pods; removing one never deletes its PVCs unless the
//! rule says `delete_data`, and stops it only where that does not fight its controller (see
//! [`adopt`]).
//!
//! What it is not: a Patroni operator. It creates no StatefulSet, Service or RBAC; it does not
//! move pods between nodes (the scheduler and anti-affinity place them, so `create` does no
//! placement of its own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{json, Value};
use steward_model::observation::PlatformState;
use steward_model::ports::{
    Capabilities, Change, CpuUnit, CreateSpec, ErrorKind, KeptData, Platform, PlatformError,
    PlatformMember, ResizeOutcome, Usage, LABEL_CLUSTER, LABEL_MEMBER, LABEL_OPERATION,
    LABEL_REPLACES, LABEL_ROLE,
};
use steward_model::{ConfigErrors, Role, Size, Timestamp};
use tracing::{info, warn};

use crate::platform::docker::LABEL_ADOPTED;

pub mod adopt;
pub mod client;
pub mod lease;
pub use adopt::{
    Adopt, RawAdopt, Selector, ANNOTATION_RETIRED_MEMBER, ANNOTATION_RETIRED_POD, LABEL_RETIRED,
};

/// The StatefulSet annotation listing fenced members (comma-separated pod names).
pub const ANNOTATION_FENCED: &str = "steward.io/fenced-members";
/// Marks a pod Steward created beside the StatefulSet (a replacement, whose name is not an
/// ordinal of it): see [`KubernetesPlatform`]'s `create`.
pub const LABEL_STANDALONE: &str = "io.steward.standalone";
/// The field manager Steward's patches are recorded under.
const FIELD_MANAGER: &str = "steward";

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The Kubernetes platform's configuration as written; check it with
/// [`KubernetesConfigRaw::validate`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfigRaw {
    /// The cluster (Patroni scope) whose pods this platform owns: the value of
    /// `io.steward.cluster` on the pods (set in the StatefulSet's pod template).
    pub cluster: String,
    /// The namespace holding the StatefulSets.
    pub namespace: String,
    /// The database members' StatefulSet.
    pub database: RoleSetRaw,
    /// The balancers' StatefulSet, when balancers run in Kubernetes too.
    #[serde(default)]
    pub balancer: Option<RoleSetRaw>,
    /// The label the Service selects serving pods by (`true`); fence sets it to `false`.
    #[serde(default = "default_serving_label")]
    pub serving_label: String,
    /// How long create and a restart wait for a pod to run, seconds.
    #[serde(default = "default_pod_wait")]
    pub pod_wait_seconds: u64,
    /// How long a resize waits for the kubelet's verdict on an in-place change, seconds.
    #[serde(default = "default_resize_wait")]
    pub resize_wait_seconds: u64,
    /// How often waits ask the API server again, milliseconds.
    #[serde(default = "default_poll")]
    pub poll_millis: u64,
    /// Answers of the API server larger than this are refused (clients built with
    /// [`KubernetesPlatform::connect`]). Default [`DEFAULT_MAX_BODY_BYTES`].
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Pods Steward did not create but may manage (`[[platform.kubernetes.adopt]]`, see
    /// [`adopt`]).
    #[serde(default)]
    pub adopt: Vec<RawAdopt>,
    /// The kubeconfig file to use. Default: the files in `KUBECONFIG`, else `~/.kube/config`,
    /// else the pod's service account (see [`client`]).
    #[serde(default)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use. Default: its `current-context`.
    #[serde(default)]
    pub context: Option<String>,
}

/// 16 MiB: a list of every pod of a namespace of ~1,000 pods, with room.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// The largest `max_body_bytes` accepted.
pub const MAX_MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

/// One role's StatefulSet.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSetRaw {
    /// The StatefulSet's name; its pods are `<statefulset>-<ordinal>`.
    pub statefulset: String,
    /// The container whose resources are the member's size.
    #[serde(default = "default_container")]
    pub container: String,
    /// The volumeClaimTemplate holding the data; PVCs are `<claim>-<statefulset>-<ordinal>`.
    #[serde(default = "default_claim")]
    pub volume_claim: String,
    /// The most vCPUs a member may ask for (what a node can give); larger sizes are refused.
    pub max_cpus: f64,
    /// The most memory a member may ask for, bytes.
    pub max_memory_bytes: u64,
}

fn default_serving_label() -> String {
    "io.steward.serving".into()
}
fn default_pod_wait() -> u64 {
    300
}
fn default_resize_wait() -> u64 {
    30
}
fn default_poll() -> u64 {
    1000
}
fn default_container() -> String {
    "postgres".into()
}
fn default_claim() -> String {
    "data".into()
}

/// A checked configuration: only [`KubernetesConfigRaw::validate`] makes one.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    cluster: String,
    namespace: String,
    sets: BTreeMap<Role, RoleSetRaw>,
    serving_label: String,
    pod_wait: Duration,
    resize_wait: Duration,
    poll: Duration,
    max_body_bytes: u64,
    adopt: Vec<Adopt>,
    kubeconfig: Option<std::path::PathBuf>,
    context: Option<String>,
}

impl KubernetesConfig {
    /// `kubeconfig`, when the config file names one.
    pub fn kubeconfig(&self) -> Option<&std::path::Path> {
        self.kubeconfig.as_deref()
    }

    /// `context`, when the config file names one.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The adoption rules, in the order written (`adopt[i]`).
    pub fn adopt(&self) -> &[Adopt] {
        &self.adopt
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The largest answer accepted from the API server, bytes.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }
}

impl KubernetesConfigRaw {
    /// Checks everything at once and names each problem by its field path.
    pub fn validate(self) -> Result<KubernetesConfig, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        if !is_valid_label_value(&self.cluster) || self.cluster.is_empty() {
            errors.push(
                "cluster",
                "must be a label value: 1-63 of [A-Za-z0-9._-], alphanumeric at both ends",
            );
        }
        if !is_dns_label(&self.namespace) {
            errors.push(
                "namespace",
                "must be a DNS-1123 label (lowercase, digits, `-`, at most 63)",
            );
        }
        if !is_valid_label_key(&self.serving_label) {
            errors.push("serving_label", "is not a valid label key");
        }
        // Upper bounds the program can honour (issue 16): a wait is added to a clock.
        if !(1..=3600).contains(&self.pod_wait_seconds) {
            errors.push("pod_wait_seconds", "must be between 1 and 3600 (1 h)");
        }
        if self.resize_wait_seconds > 600 {
            errors.push("resize_wait_seconds", "at most 600 (10 min)");
        }
        if !(1..=60_000).contains(&self.poll_millis) {
            errors.push("poll_millis", "must be between 1 and 60000 (1 min)");
        }
        if !(1024..=MAX_MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            errors.push(
                "max_body_bytes",
                format!("must be between 1024 and {MAX_MAX_BODY_BYTES} (1 GiB)"),
            );
        }
        if self.context.as_deref() == Some("") {
            errors.push(
                "context",
                "must not be empty (leave it out for the current-context)",
            );
        }
        if self
            .kubeconfig
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            errors.push(
                "kubeconfig",
                "must not be empty (leave it out to look it up)",
            );
        }
        // The roles written, valid or not, and their containers: what an adoption rule needs.
        let mut containers = BTreeMap::from([(Role::Database, self.database.container.clone())]);
        if let Some(b) = &self.balancer {
            containers.insert(Role::Balancer, b.container.clone());
        }
        let mut adopt = Vec::with_capacity(self.adopt.len());
        for (i, raw) in self.adopt.iter().enumerate() {
            let mut inner = ConfigErrors::default();
            adopt.push(raw.validate(&containers, &mut inner));
            errors.extend_under(&format!("adopt[{i}]"), inner);
        }
        let mut sets = BTreeMap::new();
        let mut names = BTreeSet::new();
        for (role, raw) in [
            (Role::Database, Some(self.database)),
            (Role::Balancer, self.balancer),
        ] {
            let Some(raw) = raw else { continue };
            let mut e = ConfigErrors::default();
            // Pod names are `<sts>-<ordinal>` and must stay a DNS label.
            if !is_dns_label(&raw.statefulset) || raw.statefulset.len() > 52 {
                e.push(
                    "statefulset",
                    "must be a DNS-1123 label of at most 52 characters",
                );
            } else if !names.insert(raw.statefulset.clone()) {
                e.push("statefulset", "is used by both roles");
            }
            if !is_dns_label(&raw.container) {
                e.push("container", "must be a DNS-1123 label");
            }
            if !is_dns_label(&raw.volume_claim) {
                e.push("volume_claim", "must be a DNS-1123 label");
            }
            if !(raw.max_cpus.is_finite() && (0.001..=1024.0).contains(&raw.max_cpus)) {
                e.push("max_cpus", "must be between 0.001 (one millicore) and 1024");
            }
            if !(1 << 20..=64 << 40).contains(&raw.max_memory_bytes) {
                e.push("max_memory_bytes", "must be between 1 MiB and 64 TiB");
            }
            if e.is_empty() {
                sets.insert(role, raw);
            } else {
                errors.extend_under(role.as_str(), e);
            }
        }
        errors.into_result(KubernetesConfig {
            cluster: self.cluster,
            namespace: self.namespace,
            sets,
            serving_label: self.serving_label,
            pod_wait: Duration::from_secs(self.pod_wait_seconds),
            resize_wait: Duration::from_secs(self.resize_wait_seconds),
            poll: Duration::from_millis(self.poll_millis),
            max_body_bytes: self.max_body_bytes,
            adopt,
            kubeconfig: self.kubeconfig,
            context: self.context,
        })
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9._-]` beginning and ending alphanumeric.
pub fn is_valid_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain of at most 253 characters, the name
/// a non-empty label value (Kubernetes' `IsQualifiedName`).
pub fn is_valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    prefix_ok && !name.is_empty() && is_valid_label_value(name)
}

// ---------------------------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------------------------

/// Parses a Kubernetes quantity (`250m`, `1.5`, `2Gi`, `500M`, `1e3`) to a number in base units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    // `1e3` is a decimal exponent; an `E` suffix alone (exa) has no digits after it.
    let (number, suffix) = if suffix.is_empty() && number.ends_with(['e', 'E']) {
        (&number[..number.len() - 1], "E")
    } else {
        (number, suffix)
    };
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(value * factor)
}

/// vCPUs as a quantity: whole millicores (`1500m`).
fn cpu_quantity(cpus: f64) -> Quantity {
    Quantity(format!("{}m", (cpus * 1000.0).round() as u64))
}

/// Bytes as a quantity: a binary suffix when exact, else plain bytes.
fn bytes_quantity(bytes: u64) -> Quantity {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, unit) in UNITS {
        if bytes >= unit && bytes % unit == 0 {
            return Quantity(format!("{}{suffix}", bytes / unit));
        }
    }
    Quantity(bytes.to_string())
}

fn quantity_of(map: Option<&BTreeMap<String, Quantity>>, key: &str) -> Option<f64> {
    map.and_then(|m| m.get(key))
        .and_then(|q| parse_quantity(&q.0))
}

/// The size a container's resources say: limits first (what the container may use), requests
/// where there is no limit.
fn size_of(resources: Option<&ResourceRequirements>, disk_bytes: u64) -> Size {
    let limits = resources.and_then(|r| r.limits.as_ref());
    let requests = resources.and_then(|r| r.requests.as_ref());
    let pick = |key| {
        quantity_of(limits, key)
            .or_else(|| quantity_of(requests, key))
            .unwrap_or(0.0)
    };
    Size {
        cpus: pick("cpu"),
        memory_bytes: pick("memory").round() as u64,
        disk_bytes,
    }
}

/// The resources block for a size: requests = limits, so the QoS class stays what it was for
/// a Guaranteed pod (an in-place resize may not change the QoS class).
fn resources_json(size: Size) -> Value {
    let r = json!({ "cpu": cpu_quantity(size.cpus), "memory": bytes_quantity(size.memory_bytes) });
    json!({ "requests": r, "limits": r })
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Whether `size` grows the disk of `old`; a shrink is refused (PVCs never shrink).
fn disk_grows(size: Size, old: Size, op: &str) -> Result<bool, PlatformError> {
    if size.disk_bytes < old.disk_bytes {
        return Err(PlatformError::new(
            ErrorKind::Refused,
            op,
            format!(
                "PVCs never shrink ({} < {} bytes)",
                size.disk_bytes, old.disk_bytes
            ),
        ));
    }
    Ok(size.disk_bytes > old.disk_bytes)
}

/// The container `name` of `pod`, or a permanent error naming both.
fn container_named<'a>(pod: &'a Pod, name: &str, op: &str) -> Result<&'a Container, PlatformError> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == name))
        .ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "pod {} has no container {name}",
                    pod.metadata.name.as_deref().unwrap_or("?")
                ),
            )
        })
}

/// Classifies a kube-rs error; an API error keeps the server's `Status` message verbatim.
fn kube_error(operation: &str, e: kube::Error) -> PlatformError {
    if let Some(limit) = length_limit(&e) {
        let message = format!(
            "the API server's answer is larger than {limit} bytes ([platform.kubernetes] \
             max_body_bytes): narrow the namespace, or raise the limit"
        );
        return PlatformError::new(ErrorKind::Permanent, operation, message).with_source(e);
    }
    let (kind, message) = match &e {
        kube::Error::Api(status) => {
            let kind = match status.code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                422 => ErrorKind::Refused,
                408 | 429 => ErrorKind::Transient,
                c if c >= 500 => ErrorKind::Transient,
                // 400 bad request, 401/403 (credentials, RBAC), 405, 410 (gone): retrying the
                // same request does not help.
                _ => ErrorKind::Permanent,
            };
            let message = if status.message.is_empty() {
                format!("{} ({})", status.reason, status.code)
            } else {
                status.message.clone()
            };
            (kind, message)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            (ErrorKind::Transient, e.to_string())
        }
        _ => (ErrorKind::Permanent, e.to_string()),
    };
    PlatformError::new(kind, operation, message).with_source(e)
}

/// An answer cut at `limit` bytes by the client [`KubernetesPlatform::connect`] builds.
#[derive(Debug, thiserror::Error)]
#[error("the answer is larger than {limit} bytes")]
struct AnswerTooLarge {
    limit: u64,
}

/// The limit, when the error is an answer cut by [`KubernetesPlatform::connect`]'s limit.
fn length_limit(e: &kube::Error) -> Option<u64> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(too_large) = c.downcast_ref::<AnswerTooLarge>() {
            return Some(too_large.limit);
        }
        cause = c.source();
    }
    None
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The platform
// ---------------------------------------------------------------------------------------------

/// Members as Pods of StatefulSets. See the module doc.
#[derive(Clone)]
pub struct KubernetesPlatform {
    client: Client,
    config: KubernetesConfig,
    /// Adopted members this process fenced, by member: Steward writes no record on another's
    /// StatefulSet, and a fenced pod no controller owns is gone until it is removed.
    fenced_adopted: Arc<Mutex<BTreeMap<String, AdoptedPod>>>,
}

/// An adopted member: its pod as read, and what removing it needs.
#[derive(Clone, Debug)]
struct AdoptedPod {
    /// Index into the config's `adopt`.
    rule: usize,
    member: String,
    pod: Pod,
}

impl AdoptedPod {
    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }
}

/// A pod's PersistentVolumeClaims (its `persistentVolumeClaim` volumes), in volume order.
fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// Whether a pod has generic ephemeral volumes: PVCs the pod owns, deleted with it.
fn has_ephemeral(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.ephemeral.is_some())
}

/// The controller owning an object, as `(kind, name)`.
fn controller_of(meta: &kube::core::ObjectMeta) -> Option<(String, String)> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()))
}

/// What an adoption rule takes, as [`KubernetesPlatform::adopted`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptedMatch {
    /// Index into `adopt`.
    pub rule: usize,
    pub member: String,
    pub pod: String,
    /// The node it runs on (empty while unscheduled).
    pub node: String,
}

/// A client from `kube` that refuses any answer larger than `limit` bytes, counted as it
/// arrives (issue 16). Chooses the process' TLS crypto provider first (see
/// [`client::install_crypto_provider`]).
pub(crate) fn limited_client(kube: kube::Config, limit: u64) -> Result<Client, kube::Error> {
    use http_body_util::BodyExt;
    client::install_crypto_provider();
    let builder = kube::client::ClientBuilder::try_from(kube)?;
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(builder
        .with_layer(&tower::util::MapResponseLayer::new(
            move |answer: http::Response<_>| {
                answer.map(|body| {
                    http_body_util::Limited::new(body, cap).map_err(move |e| -> tower::BoxError {
                        if e.is::<http_body_util::LengthLimitError>() {
                            Box::new(AnswerTooLarge { limit })
                        } else {
                            e
                        }
                    })
                })
            },
        ))
        .build())
}

/// One listed member with the pod it is and the container whose size it has.
struct Listed {
    member: PlatformMember,
    pod: String,
    container: String,
}

/// The kubelet's verdict on an in-place resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InPlace {
    Applied,
    /// `PodResizePending`/`Infeasible`, or the API refused the in-place change.
    Infeasible,
    /// `PodResizePending`/`Deferred`, or no verdict within the wait.
    Pending,
}

impl KubernetesPlatform {
    /// A platform over an API client (from the kubeconfig, the in-cluster config, or a test URL).
    /// Prefer [`KubernetesPlatform::connect`], which limits the size of answers.
    pub fn new(client: Client, config: KubernetesConfig) -> Self {
        KubernetesPlatform {
            client,
            config,
            fenced_adopted: Arc::default(),
        }
    }

    /// A platform whose client is built from `kube` (a kubeconfig's or the in-cluster config)
    /// and refuses any answer larger than `max_body_bytes`, counted as it arrives (issue 16).
    pub fn connect(kube: kube::Config, config: KubernetesConfig) -> Result<Self, PlatformError> {
        let client = limited_client(kube, config.max_body_bytes)
            .map_err(|e| kube_error("connect to the Kubernetes API", e))?;
        Ok(KubernetesPlatform::new(client, config))
    }

    /// A platform over the API connection `api` (shared with a Kubernetes Lease).
    pub fn on(connection: &client::KubeApi, config: KubernetesConfig) -> Self {
        KubernetesPlatform::new(connection.client.clone(), config)
    }

    /// The pods the adoption rules take now, for `check-config --resolve` (a listing: reads
    /// only).
    pub async fn adopted(&self) -> Result<Vec<AdoptedMatch>, PlatformError> {
        Ok(self
            .adopted_pods("resolve the adoption rules")
            .await?
            .into_iter()
            .map(|a| AdoptedMatch {
                rule: a.rule,
                member: a.member.clone(),
                pod: a.name().to_string(),
                node: a
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Deletes `pod` with grace period 0 (the process dies now); one already gone is fine.
    async fn kill_pod(&self, pod: &str, op: &str) -> Result<(), PlatformError> {
        match self
            .pods()
            .delete(pod, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(kube_error(op, e)),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }
    fn sets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }
    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn role_set(&self, role: Role, op: &str) -> Result<&RoleSetRaw, PlatformError> {
        self.config.sets.get(&role).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!("no StatefulSet is configured for role {role}"),
            )
        })
    }

    fn pp() -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        }
    }

    fn claim_name(set: &RoleSetRaw, pod: &str) -> String {
        format!("{}-{pod}", set.volume_claim)
    }

    /// Whether the pod is in the Service's endpoints (its serving label is not `false`).
    fn serving(&self, pod: &Pod) -> bool {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(&self.config.serving_label))
            .map(String::as_str)
            != Some("false")
    }

    /// The role a pod belongs to: its label, checked against the configured StatefulSet.
    fn role_of(&self, pod: &Pod) -> Option<Role> {
        let labels = pod.metadata.labels.as_ref()?;
        if labels.get(LABEL_CLUSTER) != Some(&self.config.cluster) {
            return None;
        }
        let role: Role = labels.get(LABEL_ROLE)?.parse().ok()?;
        let set = self.config.sets.get(&role)?;
        let name = pod.metadata.name.as_deref()?;
        if is_standalone(pod) {
            // Steward's own pod beside the StatefulSet (a replacement): its member label is
            // its name, and no controller owns it.
            return (labels.get(LABEL_MEMBER).map(String::as_str) == Some(name)
                && controller_of(&pod.metadata).is_none())
            .then_some(role);
        }
        // A pod of this cluster's labels but not of the configured StatefulSet is not ours.
        let ordinal = name.strip_prefix(&format!("{}-", set.statefulset))?;
        ordinal.parse::<u32>().ok().map(|_| role)
    }

    /// An owned pod by name, or NotFound (absent and not ours look the same).
    async fn owned_pod(&self, member: &str, op: &str) -> Result<(Pod, Role), PlatformError> {
        let pod = self
            .pods()
            .get_opt(member)
            .await
            .map_err(|e| kube_error(op, e))?;
        let not_found = || {
            PlatformError::new(
                ErrorKind::NotFound,
                op,
                format!("no pod `{member}` owned by cluster {}", self.config.cluster),
            )
        };
        let pod = pod.ok_or_else(not_found)?;
        let role = self.role_of(&pod).ok_or_else(not_found)?;
        Ok((pod, role))
    }

    /// The role of an owned member: from its pod, or, while the StatefulSet has not yet
    /// recreated a fenced member's deleted pod, from the fence record (so that fencing again
    /// and removing still work in that window).
    async fn member_role(&self, member: &str, op: &str) -> Result<Role, PlatformError> {
        match self.owned_pod(member, op).await {
            Ok((_, role)) => Ok(role),
            Err(e) if e.kind == ErrorKind::NotFound => {
                for (role, set) in &self.config.sets {
                    if self.fenced_members(set, op).await?.contains(member) {
                        return Ok(*role);
                    }
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn fenced_members(
        &self,
        set: &RoleSetRaw,
        op: &str,
    ) -> Result<BTreeSet<String>, PlatformError> {
        let sts = self
            .sets()
            .get(&set.statefulset)
            .await
            .map_err(|e| kube_error(op, e))?;
        Ok(fenced_of(&sts))
    }

    /// Writes the fence record, based on the StatefulSet as read (`read`): the patch carries
    /// its resourceVersion, so a concurrent change of the record is a Conflict, not lost.
    async fn set_fenced(
        &self,
        set: &RoleSetRaw,
        read: &StatefulSet,
        fenced: &BTreeSet<String>,
        op: &str,
    ) -> Result<(), PlatformError> {
        let value = if fenced.is_empty() {
            Value::Null
        } else {
            Value::String(fenced.iter().cloned().collect::<Vec<_>>().join(","))
        };
        let patch = json!({ "metadata": {
            "resourceVersion": read.metadata.resource_version,
            "annotations": { ANNOTATION_FENCED: value },
        } });
        self.sets()
            .patch(&set.statefulset, &Self::pp(), &Patch::Merge(&patch))
            .await
            .map_err(|e| kube_error(op, e))?;
        Ok(())
    }

    async fn disk_of(
        &self,
        set: &RoleSetRaw,
        pod: &str,
        op: &str,
    ) -> Result<Option<PersistentVolumeClaim>, PlatformError> {
        self.claims()
            .get_opt(&Self::claim_name(set, pod))
            .await
            .map_err(|e| kube_error(op, e))
    }

    fn member_of(&self, pod: &Pod, role: Role, fenced: bool, disk_bytes: u64) -> PlatformMember {
        let container = self.config.sets[&role].container.clone();
        self.member_in(pod, role, &container, fenced, disk_bytes)
    }

    /// The member a pod is, its size that of `container`.
    fn member_in(
        &self,
        pod: &Pod,
        role: Role,
        container_name: &str,
        fenced: bool,
        disk_bytes: u64,
    ) -> PlatformMember {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == container_name));
        let status = pod.status.as_ref();
        let container_status = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container_name));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut steward_labels: BTreeMap<String, String> = labels
            .iter()
            .filter(|(k, _)| k.starts_with("io.steward."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        steward_labels
            .entry(LABEL_MEMBER.to_string())
            .or_insert_with(|| name.clone());
        PlatformMember {
            name: name.clone(),
            cluster: self.config.cluster.clone(),
            role,
            size: size_of(container.and_then(|c| c.resources.as_ref()), disk_bytes),
            state: if fenced {
                PlatformState::Fenced
            } else {
                pod_state(pod, container_name)
            },
            address: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
            host: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            labels: steward_labels.into(),
            created_at: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| Timestamp::from_millis(t.0.as_millisecond())),
            restart_count: container_status
                .map(|c| c.restart_count.max(0) as u32)
                .unwrap_or(0),
        }
    }

    /// Waits until the pod exists under a uid other than `old_uid` and runs.
    async fn wait_running(
        &self,
        name: &str,
        old_uid: Option<&str>,
        op: &str,
    ) -> Result<Pod, PlatformError> {
        let deadline = tokio::time::Instant::now() + self.config.pod_wait;
        loop {
            if let Some(pod) = self
                .pods()
                .get_opt(name)
                .await
                .map_err(|e| kube_error(op, e))?
            {
                let fresh = old_uid.is_none() || pod.metadata.uid.as_deref() != old_uid;
                let running =
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if fresh && running && pod.metadata.deletion_timestamp.is_none() {
                    return Ok(pod);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PlatformError::new(
                    ErrorKind::Transient,
                    op,
                    format!(
                        "pod {name} was not running after {:?}",
                        self.config.pod_wait
                    ),
                ));
            }
            tokio::time::sleep(self.config.poll).await;
        }
    }

    /// Asks for an in-place resize and waits for the kubelet's verdict.
    async fn resize_in_place(
        &self,
        pod: &str,
        container: &str,
        size: Size,
        op: &str,
    ) -> Result<InPlace, PlatformError> {
        let patch = json!({ "spec": { "containers": [
            { "name": container, "resources": resources_json(size) }
        ] } });
        let result = self
            .pods()
            .patch_subresource("resize", pod, &Self::pp(), &Patch::Strategic(&patch))
            .await;
        let mut current = match result {
            Ok(p) => p,
            // 422: the API refuses this change in place (e.g. a QoS-class change); 404 on a pod
            // that exists: no `resize` subresource before Kubernetes 1.33. Both: restart path.
            Err(e) if matches!(status_code(&e), Some(422) | Some(404)) => {
                warn!(pod, error = %e, "in-place resize refused; falling back to a restart");
                return Ok(InPlace::Infeasible);
            }
            Err(e) => return Err(kube_error(op, e)),
        };
        let deadline = tokio::time::Instant::now() + self.config.resize_wait;
        loop {
            if let Some(verdict) = resize_verdict(&current, container, size) {
                return Ok(verdict);
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    pod,
                    "no in-place resize verdict in time; the change stays recorded"
                );
                return Ok(InPlace::Pending);
            }
            tokio::time::sleep(self.config.poll).await;
            current = self.pods().get(pod).await.map_err(|e| kube_error(op, e))?;
        }
    }

    /// Creates a member whose name is not an ordinal of the StatefulSet (the repairer names a
    /// replacement after the member it replaces, `pg-1-r1`): a pod of its own from the
    /// StatefulSet's pod template, with its PVCs made from the volumeClaimTemplates (the data
    /// claim at the asked size), its hostname and subdomain as the StatefulSet would set them,
    /// and [`LABEL_STANDALONE`]. Its name is its member name, so a Patroni that takes its name
    /// from the pod (Spilo's `POD_NAME`) joins under the name Steward asked for. The
    /// StatefulSet controller leaves it alone (its name carries no ordinal of the set); no
    /// controller brings it back either: Steward replaces it when it fails, as any member.
    async fn create_standalone(
        &self,
        spec: &CreateSpec,
        set: &RoleSetRaw,
        sts: &StatefulSet,
        op: &str,
    ) -> Result<PlatformMember, PlatformError> {
        if !is_dns_label(&spec.name) {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!("`{}` is not a valid pod name (a DNS-1123 label)", spec.name),
            ));
        }
        let sts_spec = sts.spec.clone().unwrap_or_default();
        let mut template = sts_spec.template;
        let mut meta = template.metadata.take().unwrap_or_default();
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in [
            (LABEL_MEMBER, Some(spec.name.clone())),
            (LABEL_OPERATION, Some(spec.operation_id.clone())),
            (LABEL_REPLACES, spec.replaces.clone()),
            (LABEL_STANDALONE, Some("true".to_string())),
        ] {
            if let Some(v) = v {
                labels.insert(k.to_string(), v);
            }
        }
        meta.name = Some(spec.name.clone());
        meta.namespace = Some(self.config.namespace.clone());
        let mut pod_spec = template.spec.unwrap_or_default();
        pod_spec.hostname = Some(spec.name.clone());
        pod_spec.subdomain = sts_spec.service_name.clone();
        let Some(container) = pod_spec
            .containers
            .iter_mut()
            .find(|c| c.name == set.container)
        else {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "the pod template of StatefulSet {} has no container {}",
                    set.statefulset, set.container
                ),
            ));
        };
        container.resources = serde_json::from_value(resources_json(spec.size)).ok();
        // The claims, as the StatefulSet would make them for an ordinal.
        let mut made: Vec<String> = Vec::new();
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        for t in sts_spec.volume_claim_templates.iter().flatten() {
            let Some(template_name) = t.metadata.name.clone() else {
                continue;
            };
            let claim = format!("{template_name}-{}", spec.name);
            volumes.retain(|v| v.name != template_name);
            volumes.push(
                serde_json::from_value(json!({
                    "name": template_name,
                    "persistentVolumeClaim": { "claimName": claim },
                }))
                .unwrap_or_default(),
            );
            if self
                .claims()
                .get_opt(&claim)
                .await
                .map_err(|e| kube_error(op, e))?
                .is_some()
            {
                continue;
            }
            let mut pvc = PersistentVolumeClaim {
                spec: t.spec.clone(),
                ..PersistentVolumeClaim::default()
            };
            pvc.metadata.name = Some(claim.clone());
            pvc.metadata.labels = Some(BTreeMap::from([
                (LABEL_CLUSTER.to_string(), self.config.cluster.clone()),
                (LABEL_ROLE.to_string(), spec.role.to_string()),
                (LABEL_MEMBER.to_string(), spec.name.clone()),
                (LABEL_OPERATION.to_string(), spec.operation_id.clone()),
            ]));
            if template_name == set.volume_claim && spec.size.disk_bytes > 0 {
                pvc.spec
                    .get_or_insert_with(Default::default)
                    .resources
                    .get_or_insert_with(Default::default)
                    .requests
                    .get_or_insert_with(BTreeMap::new)
                    .insert("storage".into(), bytes_quantity(spec.size.disk_bytes));
            }
            let created = self.claims().create(&PostParams::default(), &pvc).await;
            if let Err(e) = created {
                self.undo_claims(&made, &spec.name).await;
                return Err(kube_error(op, e));
            }
            made.push(claim);
        }
        let pod = Pod {
            metadata: meta,
            spec: Some(pod_spec),
            status: None,
        };
        if let Err(e) = self.pods().create(&PostParams::default(), &pod).await {
            self.undo_claims(&made, &spec.name).await;
            return Err(kube_error(op, e));
        }
        info!(member = %spec.name, statefulset = %set.statefulset, "standalone pod created");
        let pod = self.wait_running(&spec.name, None, op).await?;
        let disk = match self.disk_of(set, &spec.name, op).await? {
            Some(pvc) => pvc_bytes(&pvc),
            None => 0,
        };
        Ok(self.member_of(&pod, spec.role, false, disk))
    }

    /// Deletes the PVCs a failed create made (best effort, logged).
    async fn undo_claims(&self, claims: &[String], member: &str) {
        for claim in claims {
            if let Err(e) = self.claims().delete(claim, &DeleteParams::default()).await {
                warn!(member, claim, error = %e, "deleting the PVC of a failed create failed");
            }
        }
    }

    /// Puts a pod's resources back after a failed resize (best effort, logged).
    async fn revert_in_place(&self, pod: &str, container: &str, old: Size) {
        let patch = json!({ "spec": { "containers": [
            { "name": container, "resources": resources_json(old) }
        ] } });
        let result = self
            .pods()
            .patch_subresource("resize", pod, &Self::pp(), &Patch::Strategic(&patch))
            .await;
        if let Err(e) = result {
            warn!(pod, error = %e, "restoring the pod's size failed");
        }
    }

    /// Patches the pod template's resources, so that new and restarted pods get `size`.
    async fn patch_template(
        &self,
        set: &RoleSetRaw,
        size: Size,
        op: &str,
    ) -> Result<(), PlatformError> {
        let patch = json!({ "spec": { "template": { "spec": { "containers": [
            { "name": set.container, "resources": resources_json(size) }
        ] } } } });
        self.sets()
            .patch(&set.statefulset, &Self::pp(), &Patch::Strategic(&patch))
            .await
            .map_err(|e| kube_error(op, e))?;
        Ok(())
    }

    /// Every member, owned and adopted, with its pod and container, sorted by name.
    async fn listing(&self, op: &str) -> Result<Vec<Listed>, PlatformError> {
        let lp = ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", self.config.cluster));
        let pods = self.pods().list(&lp).await.map_err(|e| kube_error(op, e))?;
        let mut fenced = BTreeMap::new();
        for (role, set) in &self.config.sets {
            fenced.insert(*role, self.fenced_members(set, op).await?);
        }
        let mut out = Vec::new();
        for pod in &pods.items {
            let Some(role) = self.role_of(pod) else {
                continue;
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let set = &self.config.sets[&role];
            let disk = match self.disk_of(set, &name, op).await? {
                Some(pvc) => pvc_bytes(&pvc),
                None => 0,
            };
            let is_fenced = fenced.get(&role).is_some_and(|f| f.contains(&name));
            if is_fenced && self.serving(pod) {
                // The StatefulSet recreated a fenced member's pod with the template's labels:
                // take it out of the endpoints again (level-triggered, every list).
                warn!(member = %name, "recreated pod of a fenced member was serving; relabelled");
                let out = json!({ "metadata": { "labels": { self.config.serving_label.as_str(): "false" } } });
                match self
                    .pods()
                    .patch(&name, &Self::pp(), &Patch::Merge(&out))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => return Err(kube_error(op, e)),
                }
            }
            out.push(Listed {
                member: self.member_of(pod, role, is_fenced, disk),
                pod: name,
                container: set.container.clone(),
            });
        }
        for a in self.adopted_pods(op).await? {
            let rule = &self.config.adopt[a.rule];
            let pod = a.name().to_string();
            let is_fenced = self.fenced_adopted().contains_key(&a.member);
            if is_fenced && self.serving(&a.pod) {
                self.unserve(&pod, op).await?;
            }
            let (_, disk) = self.adopted_disk(&a, op).await?;
            let mut member = self.member_in(&a.pod, rule.role, &rule.container, is_fenced, disk);
            member.name = a.member.clone();
            member
                .labels
                .insert(LABEL_MEMBER.to_string(), a.member.clone());
            member
                .labels
                .insert(LABEL_ADOPTED.to_string(), "true".to_string());
            out.push(Listed {
                member,
                pod,
                container: rule.container.clone(),
            });
        }
        out.sort_by(|a, b| a.member.name.cmp(&b.member.name));
        Ok(out)
    }

    fn fenced_adopted(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, AdoptedPod>> {
        self.fenced_adopted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a pod out of the Services selecting on the serving label (gone is fine).
    async fn unserve(&self, pod: &str, op: &str) -> Result<(), PlatformError> {
        let out =
            json!({ "metadata": { "labels": { self.config.serving_label.as_str(): "false" } } });
        match self
            .pods()
            .patch(pod, &Self::pp(), &Patch::Merge(&out))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(kube_error(op, e)),
        }
    }

    /// The PVCs of retired adopted members of this cluster.
    async fn retired_claims(&self, op: &str) -> Result<Vec<PersistentVolumeClaim>, PlatformError> {
        let lp = ListParams::default().labels(&format!("{LABEL_RETIRED}={}", self.config.cluster));
        Ok(self
            .claims()
            .list(&lp)
            .await
            .map_err(|e| kube_error(op, e))?
            .items)
    }

    /// Every pod an adoption rule takes now (none without rules: no request is made).
    async fn adopted_pods(&self, op: &str) -> Result<Vec<AdoptedPod>, PlatformError> {
        if self.config.adopt.is_empty() {
            return Ok(Vec::new());
        }
        let retired: BTreeSet<String> = self
            .retired_claims(op)
            .await?
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for rule in &self.config.adopt {
            let pods = match &rule.selector {
                Selector::Pod { pod, .. } => self
                    .pods()
                    .get_opt(pod)
                    .await
                    .map_err(|e| kube_error(op, e))?
                    .into_iter()
                    .collect(),
                Selector::Labels(_) => {
                    let lp =
                        ListParams::default().labels(&rule.selector.query().unwrap_or_default());
                    self.pods()
                        .list(&lp)
                        .await
                        .map_err(|e| kube_error(op, e))?
                        .items
                }
            };
            for pod in pods {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                if let Some((rule, member)) = adopt::adopted_by(
                    &self.config.adopt,
                    &name,
                    &labels,
                    &claims_of(&pod),
                    &retired,
                ) {
                    out.push(AdoptedPod { rule, member, pod });
                }
            }
        }
        Ok(out)
    }

    /// The adopted member `member`, if a rule takes a pod as it.
    async fn adopted_member(
        &self,
        member: &str,
        op: &str,
    ) -> Result<Option<AdoptedPod>, PlatformError> {
        let mut found: Vec<AdoptedPod> = self
            .adopted_pods(op)
            .await?
            .into_iter()
            .filter(|a| a.member == member)
            .collect();
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found.remove(0))),
            n => Err(PlatformError::new(
                ErrorKind::Conflict,
                op,
                format!("{n} pods claim to be member `{member}`; narrow the adoption rules"),
            )),
        }
    }

    /// An adopted pod's data claim (its first PVC volume, when the PVC exists) and its size.
    async fn adopted_disk(
        &self,
        a: &AdoptedPod,
        op: &str,
    ) -> Result<(Option<String>, u64), PlatformError> {
        let Some(claim) = claims_of(&a.pod).into_iter().next() else {
            return Ok((None, 0));
        };
        let pvc = self
            .claims()
            .get_opt(&claim)
            .await
            .map_err(|e| kube_error(op, e))?;
        Ok(match pvc {
            Some(pvc) => (Some(claim), pvc_bytes(&pvc)),
            None => (None, 0),
        })
    }

    /// Resizes an adopted pod in place only: its controller's template is not Steward's.
    async fn resize_adopted(
        &self,
        a: AdoptedPod,
        size: Size,
        op: &str,
    ) -> Result<ResizeOutcome, PlatformError> {
        let rule = &self.config.adopt[a.rule];
        let set = self.role_set(rule.role, op)?;
        self.check_size(set, size, op)?;
        let pod = a.name().to_string();
        let container = container_named(&a.pod, &rule.container, op)?;
        let (claim, disk) = self.adopted_disk(&a, op).await?;
        let old = size_of(container.resources.as_ref(), disk);
        let grow_disk = disk_grows(size, old, op)?;
        let claim = match (grow_disk, claim) {
            (true, None) => {
                return Err(PlatformError::new(
                    ErrorKind::NotFound,
                    op,
                    format!("pod {pod} has no PersistentVolumeClaim to grow"),
                ))
            }
            (_, claim) => claim,
        };
        let vertical = (old.cpus - size.cpus).abs() >= 0.0005
            || old.memory_bytes.abs_diff(size.memory_bytes) >= 1024;
        let verdict = if vertical {
            Some(
                self.resize_in_place(&pod, &rule.container, size, op)
                    .await?,
            )
        } else {
            None
        };
        if verdict == Some(InPlace::Infeasible) {
            self.revert_in_place(&pod, &rule.container, old).await;
            return Err(PlatformError::new(
                ErrorKind::Refused,
                op,
                format!(
                    "in-place resize of adopted pod {pod} is infeasible: Steward neither changes \
                     its controller's template nor restarts it; size it where it is declared"
                ),
            ));
        }
        if let (true, Some(claim)) = (grow_disk, claim) {
            let patch = json!({ "spec": { "resources": { "requests": { "storage": bytes_quantity(size.disk_bytes) } } } });
            if let Err(e) = self
                .claims()
                .patch(&claim, &Self::pp(), &Patch::Merge(&patch))
                .await
            {
                if verdict.is_some() {
                    self.revert_in_place(&pod, &rule.container, old).await;
                }
                return Err(kube_error(op, e));
            }
        }
        let outcome = match verdict {
            Some(InPlace::Pending) => ResizeOutcome::PendingRestart,
            _ => ResizeOutcome::AppliedLive,
        };
        info!(member = %a.member, pod, ?outcome, cpus = size.cpus, memory_bytes = size.memory_bytes, disk_bytes = size.disk_bytes, "adopted pod resized");
        Ok(outcome)
    }

    /// Fences an adopted member as an owned one is (out of the serving label's Services,
    /// deleted with grace 0), remembering the fence in memory.
    async fn fence_adopted(
        &self,
        member: &str,
        not_found: PlatformError,
        op: &str,
    ) -> Result<(), PlatformError> {
        let Some(a) = self.adopted_member(member, op).await? else {
            // A pod no controller owns stays deleted after its fence: fenced all the same.
            return match self.fenced_adopted().contains_key(member) {
                true => Ok(()),
                false => Err(not_found),
            };
        };
        let pod = a.name().to_string();
        self.unserve(&pod, op).await?;
        self.fenced_adopted().insert(member.to_string(), a);
        self.kill_pod(&pod, op).await?;
        info!(
            member,
            pod, "adopted pod fenced (out of endpoints, deleted with grace 0)"
        );
        Ok(())
    }

    /// Ends Steward's care of an adopted member: stopped where that does not fight its
    /// controller (see [`adopt`]), its PVCs kept and labelled retired unless its rule says
    /// `delete_data` and `delete_data` is asked.
    async fn remove_adopted(
        &self,
        member: &str,
        delete_data: bool,
        not_found: PlatformError,
        op: &str,
    ) -> Result<(), PlatformError> {
        let a = match self.adopted_member(member, op).await? {
            Some(a) => a,
            None => match self.fenced_adopted().get(member).cloned() {
                Some(a) => a,
                None => return Err(not_found),
            },
        };
        let delete = self.config.adopt[a.rule].delete_data && delete_data;
        let pod = a.name().to_string();
        let claims = claims_of(&a.pod);
        let refuse = |why: String| {
            Err(PlatformError::new(
                ErrorKind::Refused,
                op,
                format!("adopted pod {pod} is not stopped: {why}; nothing was changed"),
            ))
        };
        if !delete && has_ephemeral(&a.pod) {
            return refuse(format!(
                "its generic ephemeral volumes are deleted with it (set delete_data on adopt[{}] \
                 to let them go)",
                a.rule
            ));
        }
        // 1. Stopped, the one way its controller does not undo.
        let how = match controller_of(&a.pod.metadata) {
            None => {
                match self.pods().delete(&pod, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => return Err(kube_error(op, e)),
                }
                "deleted (no controller owns it)".to_string()
            }
            Some((kind, set)) if kind == "StatefulSet" => {
                let sts = self.sets().get(&set).await.map_err(|e| kube_error(op, e))?;
                if let Some((kind, owner)) = controller_of(&sts.metadata) {
                    return refuse(format!(
                        "its StatefulSet {set} is controlled by {kind} {owner}, which would scale \
                         it back: scale it down there (its PVCs are kept)"
                    ));
                }
                let when_scaled = sts
                    .spec
                    .as_ref()
                    .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
                    .and_then(|p| p.when_scaled.as_deref());
                if !delete && when_scaled == Some("Delete") {
                    return refuse(format!(
                        "StatefulSet {set} deletes PVCs when it scales down \
                         (persistentVolumeClaimRetentionPolicy.whenScaled = Delete)"
                    ));
                }
                let replicas = replicas_of(&sts);
                let last = pod
                    .strip_prefix(&format!("{set}-"))
                    .and_then(|o| o.parse::<u32>().ok())
                    .is_some_and(|o| o.checked_add(1) == Some(replicas));
                if !last {
                    return refuse(format!(
                        "it is not the highest ordinal of StatefulSet {set} ({replicas} \
                         replicas), and a deleted pod comes back: scale the StatefulSet down \
                         yourself"
                    ));
                }
                let scale = json!({ "spec": { "replicas": replicas - 1 } });
                self.sets()
                    .patch_scale(&set, &Self::pp(), &Patch::Merge(&scale))
                    .await
                    .map_err(|e| kube_error(op, e))?;
                format!(
                    "removed by scaling StatefulSet {set} down to {}",
                    replicas - 1
                )
            }
            Some((kind, owner)) => {
                return refuse(format!(
                    "{kind} {owner} controls it and would bring it back: scale it down there \
                     (its PVCs are kept)"
                ))
            }
        };
        // 2. Its data.
        for claim in &claims {
            let result = if delete {
                self.claims()
                    .delete(claim, &DeleteParams::default())
                    .await
                    .map(|_| ())
            } else {
                let mark = json!({ "metadata": {
                    "labels": { LABEL_RETIRED: self.config.cluster },
                    "annotations": { ANNOTATION_RETIRED_MEMBER: member, ANNOTATION_RETIRED_POD: pod },
                } });
                self.claims()
                    .patch(claim, &Self::pp(), &Patch::Merge(&mark))
                    .await
                    .map(|_| ())
            };
            match result {
                Ok(()) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(kube_error(op, e)),
            }
        }
        self.fenced_adopted().remove(member);
        let ns = &self.config.namespace;
        if delete {
            info!(
                member,
                pod,
                ?claims,
                "adopted member removed with its PVCs (delete_data)"
            );
        } else {
            warn!(
                member,
                pod,
                namespace = %ns,
                ?claims,
                "adopted member retired, nothing deleted: pod {pod} {how}; its data stays in \
                 PVCs {claims:?} of namespace {ns}; once it is no longer needed: `{}`",
                delete_claims_command(ns, &claims)
            );
        }
        Ok(())
    }

    fn check_size(&self, set: &RoleSetRaw, size: Size, op: &str) -> Result<(), PlatformError> {
        let refuse = |m: String| Err(PlatformError::new(ErrorKind::Refused, op, m));
        if !(size.cpus >= 0.001 && size.cpus <= set.max_cpus) {
            return refuse(format!(
                "{} vCPU is outside 0.001..={} (max_cpus)",
                size.cpus, set.max_cpus
            ));
        }
        if size.memory_bytes < 1 << 20 || size.memory_bytes > set.max_memory_bytes {
            return refuse(format!(
                "{} bytes of memory is outside 1 MiB..={} (max_memory_bytes)",
                size.memory_bytes, set.max_memory_bytes
            ));
        }
        Ok(())
    }
}

/// How an operator deletes retired PVCs.
fn delete_claims_command(namespace: &str, claims: &[String]) -> String {
    format!("kubectl -n {namespace} delete pvc {}", claims.join(" "))
}

/// The members a StatefulSet's annotation lists as fenced.
fn fenced_of(sts: &StatefulSet) -> BTreeSet<String> {
    sts.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_FENCED))
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn uses_on_delete(sts: &StatefulSet) -> bool {
    sts.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete")
}

/// What the pod's status says about an in-place resize to `size`, if anything yet.
fn resize_verdict(pod: &Pod, container: &str, size: Size) -> Option<InPlace> {
    let status = pod.status.as_ref()?;
    let pending = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodResizePending" && c.status == "True");
    if let Some(c) = pending {
        return Some(match c.reason.as_deref() {
            Some("Infeasible") => InPlace::Infeasible,
            _ => InPlace::Pending,
        });
    }
    // Applied when the running container's resources (what the kubelet actuated) match.
    let actual = status
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .resources
        .as_ref()?;
    let got = size_of(Some(actual), 0);
    let in_progress = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodResizeInProgress" && c.status == "True");
    let matches = (got.cpus - size.cpus).abs() < 0.0005
        && got.memory_bytes.abs_diff(size.memory_bytes) < 1024;
    (matches && !in_progress).then_some(InPlace::Applied)
}

fn pod_state(pod: &Pod, container: &str) -> PlatformState {
    if pod.metadata.deletion_timestamp.is_some() {
        return PlatformState::Exited;
    }
    let status = pod.status.as_ref();
    let cs = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container));
    if let Some(cs) = cs {
        let state = cs.state.as_ref();
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            if waiting.reason.as_deref() == Some("CrashLoopBackOff") {
                return PlatformState::Restarting;
            }
        }
        let last_oom = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            return if t.reason.as_deref() == Some("OOMKilled") {
                PlatformState::OomKilled
            } else {
                PlatformState::Exited
            };
        }
        if last_oom && state.and_then(|s| s.running.as_ref()).is_none() {
            return PlatformState::OomKilled;
        }
    }
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => PlatformState::Running,
        Some("Pending") => PlatformState::Creating,
        Some("Succeeded") | Some("Failed") => PlatformState::Exited,
        _ => PlatformState::Unknown,
    }
}

/// Whether a pod is one Steward made beside the StatefulSet ([`LABEL_STANDALONE`]).
fn is_standalone(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_STANDALONE))
        .map(String::as_str)
        == Some("true")
}

fn ordinal(set: &RoleSetRaw, pod: &str) -> Option<u32> {
    pod.strip_prefix(&format!("{}-", set.statefulset))?
        .parse()
        .ok()
}

/// Whether `pod` is the highest ordinal of a StatefulSet of `replicas` pods, the one a
/// scale-down removes. Checked: a pod name may carry any ordinal up to `u32::MAX` (fuzz target
/// `kubernetes`).
fn is_last_ordinal(set: &RoleSetRaw, pod: &str, replicas: u32) -> bool {
    ordinal(set, pod).is_some_and(|o| o.checked_add(1) == Some(replicas))
}

fn replicas_of(sts: &StatefulSet) -> u32 {
    sts.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as u32
}

#[async_trait]
impl Platform for KubernetesPlatform {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cpu_unit: CpuUnit::Quota,
            // In place on 1.33+; where the kubelet finds it infeasible, by a restart.
            cpu: Change::Live,
            memory: Change::Live,
            // PVC expansion, online where the CSI driver supports it.
            disk_grow: Change::Live,
            disk_shrink: Change::Unsupported,
            multi_host: true,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "kubernetes", cluster = %self.config.cluster))]
    async fn list(&self) -> Result<Vec<PlatformMember>, PlatformError> {
        Ok(self
            .listing("list members")
            .await?
            .into_iter()
            .map(|l| l.member)
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "kubernetes", cluster = %self.config.cluster, member = %spec.name))]
    async fn create(&self, spec: &CreateSpec) -> Result<PlatformMember, PlatformError> {
        let op = format!("create member {}", spec.name);
        let op = op.as_str();
        if spec.cluster != self.config.cluster {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "this platform owns cluster {}, not {}",
                    self.config.cluster, spec.cluster
                ),
            ));
        }
        let set = self.role_set(spec.role, op)?;
        self.check_size(set, spec.size, op)?;
        if !is_valid_label_value(&spec.operation_id) {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "operation id `{}` is not a valid label value",
                    spec.operation_id
                ),
            ));
        }
        if let Some(replaced) = spec
            .replaces
            .as_deref()
            .filter(|r| !is_valid_label_value(r))
        {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!("the replaced member's name `{replaced}` is not a valid label value"),
            ));
        }
        if self
            .pods()
            .get_opt(&spec.name)
            .await
            .map_err(|e| kube_error(op, e))?
            .is_some()
        {
            return Err(PlatformError::new(
                ErrorKind::Conflict,
                op,
                format!("pod {} already exists", spec.name),
            ));
        }
        let sts = self
            .sets()
            .get(&set.statefulset)
            .await
            .map_err(|e| kube_error(op, e))?;
        // Pods get the template's labels: without Steward's, the new pod would not be ours.
        let template_labels = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        if template_labels.get(LABEL_CLUSTER) != Some(&self.config.cluster)
            || template_labels.get(LABEL_ROLE).map(String::as_str) != Some(spec.role.as_str())
        {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "the pod template of StatefulSet {} must carry {LABEL_CLUSTER}={} and {LABEL_ROLE}={}",
                    set.statefulset, self.config.cluster, spec.role
                ),
            ));
        }
        let replicas = replicas_of(&sts);
        let next = format!("{}-{replicas}", set.statefulset);
        if spec.name != next && ordinal(set, &spec.name).is_none() {
            // Not an ordinal of the StatefulSet (a replacement `pg-1-r1`): a pod of its own.
            return self.create_standalone(spec, set, &sts, op).await;
        }
        if spec.name != next {
            return Err(PlatformError::new(
                ErrorKind::Refused,
                op,
                format!(
                    "StatefulSet {} names its pods: the next {} member is {next}",
                    set.statefulset, spec.role
                ),
            ));
        }
        let template_size = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.iter().find(|c| c.name == set.container))
            .map(|c| size_of(c.resources.as_ref(), 0));
        let differs = template_size.is_none_or(|t| {
            (t.cpus - spec.size.cpus).abs() >= 0.0005
                || t.memory_bytes.abs_diff(spec.size.memory_bytes) >= 1024
        });
        if differs {
            if !uses_on_delete(&sts) {
                return Err(PlatformError::new(
                    ErrorKind::Refused,
                    op,
                    format!(
                        "StatefulSet {} uses RollingUpdate: changing its template to the new size would restart every member (use OnDelete)",
                        set.statefulset
                    ),
                ));
            }
            self.patch_template(set, spec.size, op).await?;
        }
        // The StatefulSet adopts an existing PVC of the right name: create it at the asked size
        // (volumeClaimTemplates are immutable, so this is the only way to choose the size).
        let claim = Self::claim_name(set, &spec.name);
        let mut made_claim = false;
        if spec.size.disk_bytes > 0
            && self
                .claims()
                .get_opt(&claim)
                .await
                .map_err(|e| kube_error(op, e))?
                .is_none()
        {
            let template = sts
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.as_ref())
                .and_then(|t| {
                    t.iter()
                        .find(|c| c.metadata.name.as_deref() == Some(&set.volume_claim))
                });
            let mut pvc = PersistentVolumeClaim {
                spec: template.and_then(|t| t.spec.clone()),
                ..PersistentVolumeClaim::default()
            };
            pvc.metadata.name = Some(claim.clone());
            pvc.metadata.labels = Some(BTreeMap::from([
                (LABEL_CLUSTER.to_string(), self.config.cluster.clone()),
                (LABEL_ROLE.to_string(), spec.role.to_string()),
                (LABEL_MEMBER.to_string(), spec.name.clone()),
                (LABEL_OPERATION.to_string(), spec.operation_id.clone()),
            ]));
            let pvc_spec = pvc.spec.get_or_insert_with(Default::default);
            pvc_spec
                .access_modes
                .get_or_insert_with(|| vec!["ReadWriteOnce".into()]);
            pvc_spec
                .resources
                .get_or_insert_with(Default::default)
                .requests
                .get_or_insert_with(BTreeMap::new)
                .insert("storage".into(), bytes_quantity(spec.size.disk_bytes));
            self.claims()
                .create(&PostParams::default(), &pvc)
                .await
                .map_err(|e| kube_error(op, e))?;
            made_claim = true;
        }
        let scale = json!({ "spec": { "replicas": replicas + 1 } });
        let scaled = self
            .sets()
            .patch_scale(&set.statefulset, &Self::pp(), &Patch::Merge(&scale))
            .await;
        if let Err(e) = scaled {
            // Nothing half-done: the PVC made for a member that was not added goes again.
            if made_claim {
                if let Err(undo) = self.claims().delete(&claim, &DeleteParams::default()).await {
                    warn!(member = %spec.name, error = %undo, "deleting the PVC of a failed create failed");
                }
            }
            return Err(kube_error(op, e));
        }
        info!(member = %spec.name, statefulset = %set.statefulset, replicas = replicas + 1, "scaled up");
        self.wait_running(&spec.name, None, op).await?;
        let labels = json!({ "metadata": { "labels": {
            LABEL_MEMBER: spec.name, LABEL_OPERATION: spec.operation_id,
            LABEL_REPLACES: spec.replaces,
        } } });
        let pod = self
            .pods()
            .patch(&spec.name, &Self::pp(), &Patch::Merge(&labels))
            .await
            .map_err(|e| kube_error(op, e))?;
        let disk = match self.disk_of(set, &spec.name, op).await? {
            Some(pvc) => pvc_bytes(&pvc),
            None => 0,
        };
        Ok(self.member_of(&pod, spec.role, false, disk))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "kubernetes", cluster = %self.config.cluster, member = %member))]
    async fn resize(&self, member: &str, size: Size) -> Result<ResizeOutcome, PlatformError> {
        let op = format!("resize member {member}");
        let op = op.as_str();
        let (pod, role) = match self.owned_pod(member, op).await {
            Ok(found) => found,
            Err(e) if e.kind == ErrorKind::NotFound && !self.config.adopt.is_empty() => {
                return match self.adopted_member(member, op).await? {
                    Some(a) => self.resize_adopted(a, size, op).await,
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let set = self.role_set(role, op)?;
        self.check_size(set, size, op)?;
        let sts = self
            .sets()
            .get(&set.statefulset)
            .await
            .map_err(|e| kube_error(op, e))?;
        let container = container_named(&pod, &set.container, op)?;
        let pvc = self.disk_of(set, member, op).await?;
        let old = size_of(
            container.resources.as_ref(),
            pvc.as_ref().map(pvc_bytes).unwrap_or(0),
        );
        // Check everything before changing anything.
        let grow_disk = disk_grows(size, old, op)?;
        if grow_disk && pvc.is_none() {
            return Err(PlatformError::new(
                ErrorKind::NotFound,
                op,
                format!("pod {member} has no PVC {}", Self::claim_name(set, member)),
            ));
        }
        let vertical = (old.cpus - size.cpus).abs() >= 0.0005
            || old.memory_bytes.abs_diff(size.memory_bytes) >= 1024;
        let standalone = is_standalone(&pod);
        // A standalone pod has no controller to bring it back from the template.
        let on_delete = uses_on_delete(&sts) && !standalone;
        let verdict = if vertical {
            Some(
                self.resize_in_place(member, &set.container, size, op)
                    .await?,
            )
        } else {
            None
        };
        if verdict == Some(InPlace::Infeasible) && standalone {
            self.revert_in_place(member, &set.container, old).await;
            return Err(PlatformError::new(
                ErrorKind::Refused,
                op,
                format!(
                    "in-place resize of {member} is infeasible, and it is a pod of its own (a \
                     replacement beside StatefulSet {}): no controller would bring it back \
                     from a changed template",
                    set.statefulset
                ),
            ));
        }
        if verdict == Some(InPlace::Infeasible) && !on_delete {
            // Nothing half-changed: the pod's spec goes back to what runs.
            self.revert_in_place(member, &set.container, old).await;
            return Err(PlatformError::new(
                ErrorKind::Refused,
                op,
                format!(
                    "in-place resize of {member} is infeasible and StatefulSet {} uses RollingUpdate: a template change would restart every member (use OnDelete)",
                    set.statefulset
                ),
            ));
        }
        if grow_disk {
            let patch = json!({ "spec": { "resources": { "requests": { "storage": bytes_quantity(size.disk_bytes) } } } });
            let claim = Self::claim_name(set, member);
            if let Err(e) = self
                .claims()
                .patch(&claim, &Self::pp(), &Patch::Merge(&patch))
                .await
            {
                // All or nothing: put back a vertical change already asked for.
                if verdict.is_some() {
                    self.revert_in_place(member, &set.container, old).await;
                }
                return Err(kube_error(op, e));
            }
        }
        if vertical && !standalone {
            if on_delete {
                self.patch_template(set, size, op).await?;
            } else {
                warn!(member, statefulset = %set.statefulset, "RollingUpdate StatefulSet: template left unchanged; new pods get the old size");
            }
        }
        let outcome = match verdict {
            None | Some(InPlace::Applied) => ResizeOutcome::AppliedLive,
            Some(InPlace::Pending) => ResizeOutcome::PendingRestart,
            Some(InPlace::Infeasible) => {
                // Graceful delete: Patroni hands leadership over on a clean stop.
                let uid = pod.metadata.uid.clone();
                self.pods()
                    .delete(member, &DeleteParams::default())
                    .await
                    .map_err(|e| kube_error(op, e))?;
                self.wait_running(member, uid.as_deref(), op).await?;
                ResizeOutcome::AppliedWithRestart
            }
        };
        info!(
            member,
            ?outcome,
            cpus = size.cpus,
            memory_bytes = size.memory_bytes,
            disk_bytes = size.disk_bytes,
            "pod resized"
        );
        Ok(outcome)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "kubernetes", cluster = %self.config.cluster, member = %member))]
    async fn fence(&self, member: &str) -> Result<(), PlatformError> {
        let op = format!("fence member {member}");
        let op = op.as_str();
        let role = match self.member_role(member, op).await {
            Ok(role) => role,
            Err(e) if e.kind == ErrorKind::NotFound && !self.config.adopt.is_empty() => {
                return self.fence_adopted(member, e, op).await;
            }
            Err(e) => return Err(e),
        };
        let set = self.role_set(role, op)?;
        // 1. Out of the Service's endpoints, so no client reaches it while it dies.
        let out =
            json!({ "metadata": { "labels": { self.config.serving_label.as_str(): "false" } } });
        match self
            .pods()
            .patch(member, &Self::pp(), &Patch::Merge(&out))
            .await
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(kube_error(op, e)),
        }
        // 2. Remembered, so the pod the StatefulSet recreates stays fenced.
        let sts = self
            .sets()
            .get(&set.statefulset)
            .await
            .map_err(|e| kube_error(op, e))?;
        let mut fenced = fenced_of(&sts);
        if fenced.insert(member.to_string()) {
            self.set_fenced(set, &sts, &fenced, op).await?;
        }
        // 3. The process dies now: grace period 0.
        self.kill_pod(member, op).await?;
        info!(
            member,
            "pod fenced (out of endpoints, deleted with grace 0)"
        );
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "kubernetes", cluster = %self.config.cluster, member = %member))]
    async fn remove(&self, member: &str, delete_data: bool) -> Result<(), PlatformError> {
        let op = format!("remove member {member}");
        let op = op.as_str();
        let role = match self.member_role(member, op).await {
            Ok(role) => role,
            Err(e) if e.kind == ErrorKind::NotFound && !self.config.adopt.is_empty() => {
                return self.remove_adopted(member, delete_data, e, op).await;
            }
            Err(e) => return Err(e),
        };
        let set = self.role_set(role, op)?;
        let sts = self
            .sets()
            .get(&set.statefulset)
            .await
            .map_err(|e| kube_error(op, e))?;
        let replicas = replicas_of(&sts);
        if is_last_ordinal(set, member, replicas) {
            // The highest ordinal: the StatefulSet deletes it when it shrinks.
            let scale = json!({ "spec": { "replicas": replicas - 1 } });
            self.sets()
                .patch_scale(&set.statefulset, &Self::pp(), &Patch::Merge(&scale))
                .await
                .map_err(|e| kube_error(op, e))?;
        } else {
            // A lower ordinal cannot leave a StatefulSet: deleting it makes room for its
            // replacement under the same name (with fresh data when the PVC goes too).
            match self
                .pods()
                .delete(member, &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(kube_error(op, e)),
            }
        }
        if delete_data {
            match self
                .claims()
                .delete(&Self::claim_name(set, member), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(kube_error(op, e)),
            }
        }
        if fenced_of(&sts).contains(member) {
            // Read again: the scale-down changed the StatefulSet's resourceVersion.
            let sts = self
                .sets()
                .get(&set.statefulset)
                .await
                .map_err(|e| kube_error(op, e))?;
            let mut fenced = fenced_of(&sts);
            fenced.remove(member);
            self.set_fenced(set, &sts, &fenced, op).await?;
        }
        info!(member, delete_data, "pod removed");
        Ok(())
    }

    /// Retired adopted members: their PVCs, kept and labelled [`LABEL_RETIRED`].
    async fn kept(&self) -> Result<Vec<KeptData>, PlatformError> {
        if self.config.adopt.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_member: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for claim in self.retired_claims("list retired members").await? {
            let annotations = claim.metadata.annotations.unwrap_or_default();
            let (Some(member), Some(name)) = (
                annotations.get(ANNOTATION_RETIRED_MEMBER),
                claim.metadata.name,
            ) else {
                continue;
            };
            let pod = annotations
                .get(ANNOTATION_RETIRED_POD)
                .cloned()
                .unwrap_or_default();
            by_member
                .entry(member.clone())
                .or_insert_with(|| (pod, Vec::new()))
                .1
                .push(name);
        }
        Ok(by_member
            .into_iter()
            .map(|(member, (pod, data))| KeptData {
                member,
                resource: pod,
                host: self.config.namespace.clone(),
                delete_with: delete_claims_command(&self.config.namespace, &data),
                data,
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "kubernetes", cluster = %self.config.cluster))]
    async fn usage(&self) -> Result<BTreeMap<String, Usage>, PlatformError> {
        let op = "read usage";
        let members = self.listing(op).await?;
        let ar = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.config.namespace, &ar);
        // Adopted pods do not carry Steward's label: with adoption rules, every pod's figures.
        let lp = if self.config.adopt.is_empty() {
            ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", self.config.cluster))
        } else {
            ListParams::default()
        };
        let metrics = api.list(&lp).await.map_err(|e| kube_error(op, e))?;
        let mut out = BTreeMap::new();
        for listed in &members {
            let m = &listed.member;
            if m.state != PlatformState::Running {
                continue;
            }
            let Some(pm) = metrics
                .items
                .iter()
                .find(|pm| pm.metadata.name.as_deref() == Some(&listed.pod))
            else {
                continue;
            };
            let container = &listed.container;
            let usage = pm
                .data
                .get("containers")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
                })
                .and_then(|c| c.get("usage"));
            let figure = |key: &str| {
                usage
                    .and_then(|u| u.get(key))
                    .and_then(Value::as_str)
                    .and_then(parse_quantity)
            };
            let at = pm
                .data
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(|t| Timestamp::parse(t).ok())
                .unwrap_or_default();
            out.insert(
                m.name.clone(),
                Usage {
                    at,
                    cpu_used: figure("cpu"),
                    // metrics-server reports the working set (no page cache), which is what
                    // Steward's memory signal wants.
                    memory_used: figure("memory").map(|b| b.round() as u64),
                    disk_used: None,
                    disk_size: (m.size.disk_bytes > 0).then_some(m.size.disk_bytes),
                    oom_kills: None,
                },
            );
        }
        Ok(out)
    }
}

/// A PVC's size: what the volume has (`status.capacity`) once bound, else what is asked.
fn pvc_bytes(pvc: &PersistentVolumeClaim) -> u64 {
    let capacity = quantity_of(
        pvc.status.as_ref().and_then(|s| s.capacity.as_ref()),
        "storage",
    );
    let requested = quantity_of(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
        "storage",
    );
    // While an expansion is in progress the request is ahead of the capacity; the request is
    // what Steward asked for, and what it compares against.
    requested.or(capacity).unwrap_or(0.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steward_label_keys_are_valid_kubernetes_label_keys() {
        for key in [
            LABEL_CLUSTER,
            LABEL_ROLE,
            LABEL_MEMBER,
            LABEL_OPERATION,
            "io.steward.serving",
        ] {
            assert!(is_valid_label_key(key), "{key}");
        }
        assert!(is_valid_label_key("steward.io/cluster"));
        assert!(
            !is_valid_label_key("Steward.IO/cluster"),
            "the prefix is a lowercase DNS subdomain"
        );
        assert!(
            !is_valid_label_key(&"a".repeat(64)),
            "a name has at most 63 characters"
        );
        assert!(!is_valid_label_key("-cluster"));
        assert!(!is_valid_label_key("a/b/c"));
    }

    #[test]
    fn a_minimal_config_takes_the_documented_defaults() {
        let text = r#"{"cluster":"demo","namespace":"db",
            "database":{"statefulset":"pg","max_cpus":8,"max_memory_bytes":34359738368}}"#;
        let config = serde_json::from_str::<KubernetesConfigRaw>(text)
            .unwrap()
            .validate()
            .unwrap();
        let set = &config.sets[&Role::Database];
        assert_eq!(
            (set.container.as_str(), set.volume_claim.as_str()),
            ("postgres", "data")
        );
        assert_eq!(config.serving_label, "io.steward.serving");
        assert_eq!(config.pod_wait, Duration::from_secs(300));
        let typo = text.replace("\"namespace\"", "\"namespaces\"");
        let err = serde_json::from_str::<KubernetesConfigRaw>(&typo).unwrap_err();
        assert!(err.to_string().contains("namespaces"), "{err}");
    }

    /// Found by the `kubernetes` fuzz target: removing a pod named with the largest ordinal
    /// (`pg-4294967295`) from a StatefulSet of 0 replicas overflowed `ordinal + 1` (and, with
    /// the overflow wrapping in a release build, would have asked for `0 - 1` replicas).
    #[test]
    fn the_largest_ordinal_is_not_the_last_of_an_empty_set() {
        let set = RoleSetRaw {
            statefulset: "pg".into(),
            container: default_container(),
            volume_claim: default_claim(),
            max_cpus: 8.0,
            max_memory_bytes: 1 << 30,
        };
        assert!(!is_last_ordinal(&set, "pg-4294967295", 0));
        assert!(is_last_ordinal(&set, "pg-2", 3));
        assert!(!is_last_ordinal(&set, "pg-1", 3));
    }

    #[test]
    fn quantities_parse_and_format() {
        let cases = [
            ("250m", 0.25),
            ("1.5", 1.5),
            ("1500000n", 0.0015),
            ("2Gi", 2.0 * 1024f64.powi(3)),
            ("500M", 5e8),
            ("1e3", 1000.0),
            ("128Ki", 131072.0),
        ];
        for (q, want) in cases {
            let got = parse_quantity(q).unwrap_or(f64::NAN);
            assert!(
                (got - want).abs() < 1e-9 * want.max(1.0),
                "{q}: {got} != {want}"
            );
        }
        assert_eq!(parse_quantity("12Qi"), None);
        assert_eq!(cpu_quantity(1.5).0, "1500m");
        assert_eq!(bytes_quantity(3 << 30).0, "3Gi");
        assert_eq!(bytes_quantity((1 << 30) + 1).0, "1073741825");
    }

    #[test]
    fn every_config_problem_is_listed_with_its_path() {
        let raw = KubernetesConfigRaw {
            cluster: "-bad-".into(),
            namespace: "Not_A_Label".into(),
            database: RoleSetRaw {
                statefulset: "pg".into(),
                container: "postgres".into(),
                volume_claim: "data".into(),
                max_cpus: 0.0,
                max_memory_bytes: 10,
            },
            balancer: Some(RoleSetRaw {
                statefulset: "pg".into(),
                container: "Haproxy".into(),
                volume_claim: "data".into(),
                max_cpus: 2.0,
                max_memory_bytes: 1 << 30,
            }),
            serving_label: "a/b/c".into(),
            pod_wait_seconds: 0,
            resize_wait_seconds: 1,
            poll_millis: 100,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            adopt: Vec::new(),
            kubeconfig: None,
            context: Some(String::new()),
        };
        let lines: Vec<String> = raw
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.path.clone())
            .collect();
        assert_eq!(
            lines,
            [
                "cluster",
                "namespace",
                "serving_label",
                "pod_wait_seconds",
                "context",
                "database.max_cpus",
                "database.max_memory_bytes",
                "balancer.statefulset",
                "balancer.container",
            ]
        );
    }
}
