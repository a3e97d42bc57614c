//! The recording format: JSON lines, one member at one instant per line.
//!
//! `steward evaluate --jsonl` reads it, `steward observe --record` appends it, and the loop
//! scenarios under `tests/data/` are written in it, so an incident recorded live becomes a
//! regression test. Absent fields are unknown, never zero.
//!
//! ```json
//! {"time":"2026-11-26T10:00:00Z","cluster":"demo","member":"pg-1","role":"database",
//!  "patroni_role":"leader","cpu_used":0.42,"memory_used":536870912,
//!  "size":{"cpus":2.0,"memory_bytes":2147483648,"disk_bytes":10737418240}}
//! ```

use serde::{Deserialize, Serialize};

use crate::observation::{PatroniRole, PlatformState};
use crate::size::{Role, Size};
use crate::time::Timestamp;

/// One line of a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    pub time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub member: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni_role: Option<PatroniRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_state: Option<PlatformState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// Bytes behind the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<f64>,
    /// vCPUs in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_used: Option<f64>,
    /// Working-set bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_bytes: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let line = r#"{"time":"2026-11-26T10:00:00Z","cluster":"demo","member":"pg-1","role":"database","patroni_role":"leader","cpu_used":0.42,"memory_used":536870912,"size":{"cpus":2.0,"memory_bytes":2147483648,"disk_bytes":10737418240}}"#;
        let r: MemberRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.member, "pg-1");
        assert_eq!(r.patroni_role, Some(PatroniRole::Leader));
        assert_eq!(r.disk_used, None);
        let back = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<MemberRecord>(&back).unwrap(), r);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let line = r#"{"time":"2026-11-26T10:00:00Z","member":"pg-1","role":"database","cpu":1}"#;
        let err = serde_json::from_str::<MemberRecord>(line)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cpu`"), "{err}");
    }
}
