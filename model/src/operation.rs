//! The vocabulary of operations: what the cores emit, the journal stores and the executor runs.
//!
//! - [`OperationId`]: the id of one operation (a resize, a rollout, a scale-out or scale-in); the
//!   platform labels what an operation creates with it.
//! - [`Step`]: one thing to do to the world (resize, switchover, restart, create, drain, fence,
//!   remove, a Patroni config patch). The scaler's plans are made of steps, the repairer's commands
//!   become steps, and the runtime's executor runs exactly this enum.
//! - [`ConfigPatch`] and [`ParamValue`]: the body of Patroni's `PATCH /config`.
//!
//! What it is not: a plan (the scaler's `Plan` orders steps with checks and guards) or an executor.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::ports::platform::CreateSpec;
use crate::Size;

/// The id of one operation; every command of its plan carries it (and the platform labels what
/// it creates with it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(pub String);

impl OperationId {
    /// `<prefix>-<counter>`, e.g. `demo-7` (the repairer's ids: the cluster and a counter).
    pub fn new(prefix: &str, seq: u64) -> Self {
        OperationId(format!("{prefix}-{seq}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a platform label value (what [`CreateSpec::operation_id`] carries) for an
    /// operation started at `started`: `1392388200-demo-1`. The start (seconds) goes in front
    /// because a core's counter restarts with every process; `/` (not allowed in a Kubernetes
    /// label value) becomes `.`; at most 63 characters, keeping the distinctive end. The same
    /// operation resumed after a restart gets the same label, so a create it re-runs recognizes
    /// the member it made before the crash.
    pub fn label(&self, started: crate::Timestamp) -> String {
        let label = format!(
            "{}-{}",
            started.as_millis().div_euclid(1000),
            self.0.replace('/', ".")
        );
        let skip = label.len().saturating_sub(63);
        let mut start = skip;
        while !label.is_char_boundary(start) {
            start += 1;
        }
        label[start..]
            .trim_start_matches(['-', '.', '_'])
            .to_string()
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing to do to the world: the scaler's `Command::Execute` carries one, the repairer's
/// commands become one, the journal stores it and the executor runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Step {
    /// `Platform::resize(member, size)`.
    Resize { member: String, size: Size },
    /// Patroni `PATCH /config` with this body (`{"postgresql":{"parameters":{...}}}`).
    PatchConfig { patch: ConfigPatch },
    /// Patroni `POST /switchover` from the leader to the candidate (or to one Patroni chooses).
    Switchover {
        leader: String,
        candidate: Option<String>,
    },
    /// Patroni `POST /restart` on this member (applies pending restart-only settings).
    RestartMember { member: String },
    /// `Platform::create(spec)`.
    Create { spec: CreateSpec },
    /// Drain the member from both balancers (HAProxy runtime API), so no new session lands on it.
    Drain { member: String },
    /// Put a drained member back into both balancers: the undo of a scale-in stopped after its
    /// drain (the member stays, so it must serve again; if it was promoted meanwhile, it is
    /// the primary and a drained primary would refuse every write).
    Undrain { member: String },
    /// `Platform::fence(member)`.
    Fence { member: String },
    /// `Platform::remove(member, delete_data)`.
    Remove { member: String, delete_data: bool },
}

impl Step {
    /// The member the action is about, if one.
    pub fn member(&self) -> Option<&str> {
        match self {
            Step::Resize { member, .. }
            | Step::RestartMember { member }
            | Step::Drain { member }
            | Step::Undrain { member }
            | Step::Fence { member }
            | Step::Remove { member, .. } => Some(member),
            Step::Switchover { leader, .. } => Some(leader),
            Step::Create { spec } => Some(&spec.name),
            Step::PatchConfig { .. } => None,
        }
    }
}

impl fmt::Display for Step {
    /// A compact form for logs and the action log: `fence pg-1`, `resize pg-2 to 2 vCPU, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Switchover {
                leader,
                candidate: Some(c),
            } => write!(f, "switchover {leader} -> {c}"),
            Step::Switchover { leader, .. } => write!(f, "switchover {leader}"),
            Step::Drain { member } => write!(f, "drain {member}"),
            Step::Undrain { member } => write!(f, "undrain {member}"),
            Step::Fence { member } => write!(f, "fence {member}"),
            Step::Create { spec } => write!(
                f,
                "create {} {} ({} vCPU, {} MiB)",
                spec.role,
                spec.name,
                spec.size.cpus,
                spec.size.memory_bytes >> 20
            ),
            Step::Remove {
                member,
                delete_data,
            } => write!(
                f,
                "remove {member} ({})",
                if *delete_data {
                    "delete data"
                } else {
                    "keep data"
                }
            ),
            Step::Resize { member, size } => write!(
                f,
                "resize {member} to {} vCPU, {} MiB, {} GiB disk",
                size.cpus,
                size.memory_bytes >> 20,
                size.disk_bytes >> 30
            ),
            Step::PatchConfig { patch } => write!(f, "patch config {patch}"),
            Step::RestartMember { member } => write!(f, "restart {member}"),
        }
    }
}

/// One parameter's value, in the unit PostgreSQL reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamValue {
    /// An amount of memory in MB (PostgreSQL's MB: 1024 kB); written as `"2048MB"`.
    Megabytes(u64),
    /// A plain count; written as a JSON number.
    Count(u64),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Megabytes(mb) => write!(f, "{mb}MB"),
            ParamValue::Count(n) => write!(f, "{n}"),
        }
    }
}

/// The body of Patroni's `PATCH /config`: `{"postgresql":{"parameters":{name: value, ...}}}`.
///
/// It serializes to exactly that shape (the driver sends it as is); in a journaled plan it is the
/// same JSON, and it deserializes back from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigPatch(pub BTreeMap<String, ParamValue>);

impl ConfigPatch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigPatch {
    /// `{shared_buffers=2048MB, work_mem=8MB}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value}")?;
        }
        f.write_str("}")
    }
}

/// `{name: "2048MB" | 8}`: the parameters as PostgreSQL and Patroni read them.
struct Parameters<'a>(&'a BTreeMap<String, ParamValue>);

impl Serialize for Parameters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v {
                ParamValue::Megabytes(_) => map.serialize_entry(k, &v.to_string())?,
                ParamValue::Count(n) => map.serialize_entry(k, n)?,
            }
        }
        map.end()
    }
}

impl Serialize for ConfigPatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Postgresql<'a> {
            parameters: Parameters<'a>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            postgresql: Postgresql<'a>,
        }
        Body {
            postgresql: Postgresql {
                parameters: Parameters(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ConfigPatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Postgresql {
            parameters: BTreeMap<String, Raw>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            postgresql: Postgresql,
        }
        let body = Body::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in body.postgresql.parameters {
            let value = match v {
                Raw::Count(n) => ParamValue::Count(n),
                Raw::Text(t) => match t.strip_suffix("MB").and_then(|n| n.parse().ok()) {
                    Some(mb) => ParamValue::Megabytes(mb),
                    None => {
                        return Err(serde::de::Error::custom(format!(
                            "parameter `{k}`: `{t}` is not an amount in MB"
                        )))
                    }
                },
            };
            out.insert(k, value);
        }
        Ok(ConfigPatch(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_labels_are_valid_label_values_and_differ_between_starts() {
        let op = OperationId::new("demo", 1);
        let a = op.label(crate::Timestamp::from_secs(1_000));
        assert_eq!(a, "1000-demo-1");
        assert_ne!(a, op.label(crate::Timestamp::from_secs(2_000)));
        let step = OperationId("demo-1/3".into());
        assert_eq!(
            step.label(crate::Timestamp::from_secs(1_000)),
            "1000-demo-1.3"
        );
        let long = OperationId(format!("{}-1", "c".repeat(70)));
        let label = long.label(crate::Timestamp::from_secs(1));
        assert!(label.len() <= 63 && label.ends_with("c-1"), "{label}");
    }

    /// Journals written before `candidate` became optional (a plain string) still read.
    #[test]
    fn a_switchover_reads_with_or_without_a_candidate() {
        let old: Step =
            serde_json::from_str(r#"{"action":"switchover","leader":"pg-1","candidate":"pg-2"}"#)
                .unwrap();
        assert_eq!(
            old,
            Step::Switchover {
                leader: "pg-1".into(),
                candidate: Some("pg-2".into())
            }
        );
        let json = serde_json::to_string(&old).unwrap();
        assert_eq!(
            json,
            r#"{"action":"switchover","leader":"pg-1","candidate":"pg-2"}"#
        );
        let any: Step =
            serde_json::from_str(r#"{"action":"switchover","leader":"pg-1","candidate":null}"#)
                .unwrap();
        assert_eq!(any.to_string(), "switchover pg-1");
    }

    #[test]
    fn a_config_patch_is_patronis_body_and_reads_back() {
        let patch = ConfigPatch(BTreeMap::from([
            ("shared_buffers".to_string(), ParamValue::Megabytes(256)),
            ("max_worker_processes".to_string(), ParamValue::Count(8)),
        ]));
        let json = serde_json::to_string(&patch).unwrap();
        assert_eq!(
            json,
            r#"{"postgresql":{"parameters":{"max_worker_processes":8,"shared_buffers":"256MB"}}}"#
        );
        assert_eq!(serde_json::from_str::<ConfigPatch>(&json).unwrap(), patch);
        assert_eq!(
            patch.to_string(),
            "{max_worker_processes=8, shared_buffers=256MB}"
        );
    }
}
