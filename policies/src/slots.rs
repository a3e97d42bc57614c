//! Replication slots that keep WAL for nobody.
//!
//! Patroni gives every member a physical replication slot on the leader, named after the member
//! ([`slot_name`]), and keeps the slot of a member that left the cluster for `member_slots_ttl`
//! (Patroni 4: 30 min by default; Patroni 3 drops it at once) in case it comes back. While a
//! slot's member does not stream (it is gone, fenced, or stuck), the leader keeps every WAL
//! segment since the slot's position: the disk fills with WAL nobody will read, and growing the
//! disk only buys time. [`held_slots`] names those slots and why; the runtime says so and, with
//! `[policy.slots] release_above`, has Patroni drop the slots of members that are gone.
//!
//! What it is not: a judge of the slots Patroni does not keep for members (permanent slots,
//! logical slots of a CDC tool): those are the operator's, named in `ignore`, and never
//! released; Steward only ever asks Patroni to stop retaining the slots of absent members.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::errors::ConfigErrors;
use steward_model::observation::{Figure, Freshness, Observation, PatroniRole, PlatformState};
use steward_model::size::human_bytes;

use steward_model::Resource;

use crate::amount::RawAmount;

/// The slot Patroni keeps for `member`: its `slot_name_from_member_name` (patroni/dcs), lower
/// case, `-` and `.` as `_`, any other character outside `[a-z0-9_]` as `u` and its code point
/// in four digits, at most 63 characters.
pub fn slot_name(member: &str) -> String {
    let mut out = String::with_capacity(member.len());
    for c in member.to_lowercase().chars() {
        spell(c, &mut |b| {
            out.push(char::from(b));
            true
        });
    }
    // The name is ASCII by now: any cut is on a character boundary.
    out.truncate(63);
    out
}

/// Whether `slot` is the slot Patroni keeps for `member` (`slot_name(member) == slot`), without
/// writing the name out for an ASCII member: an observation ties its leader's slots to its
/// members on every tick (a fleet: two allocations per member and tick for the name alone). A
/// member named in other scripts is compared through [`slot_name`] (lower-casing beyond ASCII
/// depends on context).
pub fn is_slot_of(slot: &str, member: &str) -> bool {
    if !member.is_ascii() {
        return slot_name(member) == slot;
    }
    let want = slot.as_bytes();
    let mut at = 0;
    // Compares the next byte of the name; false once it differs. Past 63 bytes the name is cut.
    let mut next = |b: u8| {
        if at >= 63 {
            return true;
        }
        let same = want.get(at) == Some(&b);
        at += 1;
        same
    };
    member
        .chars()
        .all(|c| spell(c.to_ascii_lowercase(), &mut next))
        && at == want.len()
}

/// How [`slot_name`] spells one lower-cased character, given byte by byte to `put` until it
/// answers false (then false).
fn spell(c: char, put: &mut impl FnMut(u8) -> bool) -> bool {
    match c {
        'a'..='z' | '0'..='9' | '_' => put(c as u8),
        '-' | '.' => put(b'_'),
        other => format!("u{:04}", other as u32).bytes().all(put),
    }
}

/// Why nobody reads a slot's WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// No member of the cluster has that name any more: Patroni keeps it for a member that
    /// left (`member_slots_ttl`).
    Gone,
    /// Its member is fenced: it will never read it.
    Fenced,
    /// Its member is there but does not stream (stuck, stopped, still joining).
    NotStreaming,
}

/// A slot that keeps WAL for a member that does not read it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeldSlot {
    pub slot: String,
    /// The member it is named after, when the cluster still has one.
    pub member: Option<String>,
    pub wal_bytes: f64,
    pub holder: Holder,
}

impl fmt::Display for HeldSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = human_bytes(self.wal_bytes);
        let slot = &self.slot;
        match (&self.member, self.holder) {
            (Some(m), Holder::Fenced) => write!(
                f,
                "replication slot {slot} keeps {held} of WAL for {m}, which is fenced"
            ),
            (Some(m), _) => write!(
                f,
                "replication slot {slot} keeps {held} of WAL for {m}, which does not stream"
            ),
            (None, _) => write!(
                f,
                "replication slot {slot} keeps {held} of WAL for a member that left the cluster \
                 (Patroni keeps it for member_slots_ttl)"
            ),
        }
    }
}

/// `[policy.slots]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSlotsConfig {
    /// A slot keeping less WAL than this is not worth a word (bytes or `"64MiB"`).
    pub report_above: RawAmount,
    /// When a slot of a member that left the cluster keeps more WAL than this, Steward has
    /// Patroni drop the slots of absent members (`member_slots_ttl` set to 0 until they are
    /// gone, then put back). Absent: never; Steward only says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_above: Option<RawAmount>,
    /// Slots that are never judged: names, or prefixes ending in `*` (the operator's slots,
    /// as in Patroni's `ignore_slots`).
    pub ignore: Vec<String>,
}

/// The default `report_above`.
pub const DEFAULT_REPORT_ABOVE: &str = "64MiB";

impl Default for RawSlotsConfig {
    fn default() -> Self {
        RawSlotsConfig {
            report_above: DEFAULT_REPORT_ABOVE.into(),
            release_above: None,
            ignore: Vec::new(),
        }
    }
}

/// `[policy.slots]`, validated: amounts in bytes, above zero.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlotsConfig {
    pub report_above: f64,
    pub release_above: Option<f64>,
    pub ignore: Vec<String>,
}

impl Default for SlotsConfig {
    fn default() -> Self {
        RawSlotsConfig::default()
            .validate_into(&mut ConfigErrors::default())
            .expect("the defaults are valid")
    }
}

impl RawSlotsConfig {
    /// Validates into `errors` (paths `slots.<field>`); `None` when something was wrong.
    pub fn validate_into(&self, errors: &mut ConfigErrors) -> Option<SlotsConfig> {
        let before = errors.len();
        let mut bytes = |field: &str, raw: &RawAmount| -> f64 {
            match raw.resolve(Resource::Disk) {
                Ok(b) if b > 0.0 => b,
                Ok(_) => {
                    errors.push(format!("slots.{field}"), "must be above zero");
                    f64::NAN
                }
                Err(e) => {
                    errors.push(format!("slots.{field}"), e.to_string());
                    f64::NAN
                }
            }
        };
        let report_above = bytes("report_above", &self.report_above);
        let release_above = self
            .release_above
            .as_ref()
            .map(|r| bytes("release_above", r));
        for (i, pattern) in self.ignore.iter().enumerate() {
            if pattern.trim_end_matches('*').is_empty()
                || pattern[..pattern.len() - 1].contains('*')
            {
                errors.push(
                    format!("slots.ignore[{i}]"),
                    format!("`{pattern}` must be a slot name or a prefix followed by one `*`"),
                );
            }
        }
        (errors.len() == before).then(|| SlotsConfig {
            report_above,
            release_above,
            ignore: self.ignore.clone(),
        })
    }
}

impl SlotsConfig {
    fn ignores(&self, slot: &str) -> bool {
        self.ignore.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => slot.starts_with(prefix),
            None => slot == p,
        })
    }

    /// Whether `held` is a reason to have Patroni drop the slots of absent members.
    pub fn releases(&self, held: &HeldSlot) -> bool {
        held.holder == Holder::Gone && self.release_above.is_some_and(|r| held.wal_bytes >= r)
    }
}

/// The slots of `observation` that keep at least `report_above` of WAL for a member that does
/// not read it, largest first. A figure older than `max_age` is not acted on: such a slot is
/// left out. A slot whose member streams, or the leader's own, is in use.
pub fn held_slots(
    observation: &Observation,
    config: &SlotsConfig,
    max_age: Duration,
) -> Vec<HeldSlot> {
    let mut held: Vec<HeldSlot> = observation
        .slots
        .iter()
        .filter(|s| !config.ignores(&s.name))
        .filter_map(|s| {
            let bytes = match Figure::freshness(Some(&s.wal_bytes), observation.at, max_age) {
                Freshness::Fresh(v) => v,
                _ => return None,
            };
            if bytes < config.report_above {
                return None;
            }
            let holder = match &s.member {
                None => Holder::Gone,
                Some(name) => {
                    let m = observation.members.iter().find(|m| &m.name == name)?;
                    if m.platform_state == Some(PlatformState::Fenced) {
                        Holder::Fenced
                    } else if m.patroni_role == Some(PatroniRole::Leader)
                        || m.streaming == Some(true)
                        || m.streaming.is_none()
                    {
                        // In use, or unknown (the leader did not answer): nothing to say.
                        return None;
                    } else {
                        Holder::NotStreaming
                    }
                }
            };
            Some(HeldSlot {
                slot: s.name.clone(),
                member: s.member.clone(),
                wal_bytes: bytes,
                holder,
            })
        })
        .collect();
    held.sort_by(|a, b| b.wal_bytes.total_cmp(&a.wal_bytes));
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_model::observation::{MemberObservation, SlotObservation, Source};
    use steward_model::Timestamp;

    const MIB: f64 = 1024.0 * 1024.0;

    proptest::proptest! {
        /// `is_slot_of` says what comparing with `slot_name` says, for members of any script
        /// and length, and slots that are, nearly are, or are not theirs.
        #[test]
        fn is_slot_of_agrees_with_slot_name(
            member in "[a-zA-Z0-9_.@ -]{0,70}|.{0,8}",
            other in "[a-z0-9_]{0,66}",
            cut in 0usize..70,
        ) {
            let name = slot_name(&member);
            proptest::prop_assert!(is_slot_of(&name, &member));
            let shorter = &name[..cut.min(name.len())];
            proptest::prop_assert_eq!(is_slot_of(shorter, &member), shorter == name);
            let longer = format!("{name}x");
            proptest::prop_assert!(!is_slot_of(&longer, &member));
            proptest::prop_assert_eq!(is_slot_of(&other, &member), other == name);
        }
    }

    #[test]
    fn slot_names_follow_patroni() {
        assert_eq!(slot_name("lab-pg-3"), "lab_pg_3");
        assert_eq!(slot_name("Node.1"), "node_1");
        assert_eq!(slot_name("pg@1"), "pgu00641");
        assert_eq!(slot_name(&"x".repeat(80)).len(), 63);
    }

    fn member(name: &str, role: PatroniRole, streaming: Option<bool>) -> MemberObservation {
        MemberObservation {
            name: name.into(),
            patroni_role: Some(role),
            platform_state: Some(PlatformState::Running),
            streaming,
            ..MemberObservation::default()
        }
    }

    fn world(now: Timestamp, slots: &[(&str, Option<&str>, f64)]) -> Observation {
        let mut fenced = member("pg-4", PatroniRole::Replica, Some(false));
        fenced.platform_state = Some(PlatformState::Fenced);
        Observation {
            at: now,
            cluster: "demo".into(),
            members: vec![
                member("pg-1", PatroniRole::Leader, None),
                member("pg-2", PatroniRole::Replica, Some(true)),
                member("pg-3", PatroniRole::Replica, Some(false)),
                fenced,
            ],
            notes: Vec::new(),
            slots: slots
                .iter()
                .map(|(name, m, bytes)| SlotObservation {
                    name: name.to_string(),
                    wal_bytes: Figure::new(*bytes, Source::Prometheus, now),
                    member: m.map(str::to_string),
                })
                .collect(),
        }
    }

    #[test]
    fn slots_of_members_that_do_not_read_them_are_named_largest_first() {
        let now = Timestamp::from_secs(1_000);
        let obs = world(
            now,
            &[
                ("pg_2", Some("pg-2"), 900.0 * MIB),
                ("pg_3", Some("pg-3"), 100.0 * MIB),
                ("pg_4", Some("pg-4"), 200.0 * MIB),
                ("pg_9", None, 300.0 * MIB),
                ("small", None, MIB),
                ("debezium_orders", None, 5000.0 * MIB),
            ],
        );
        let config = RawSlotsConfig {
            ignore: vec!["debezium_*".into()],
            release_above: Some("256MiB".into()),
            ..RawSlotsConfig::default()
        }
        .validate_into(&mut ConfigErrors::default())
        .unwrap();
        let held = held_slots(&obs, &config, Duration::from_secs(60));
        let names: Vec<(&str, Holder)> = held.iter().map(|h| (&h.slot[..], h.holder)).collect();
        assert_eq!(
            names,
            [
                ("pg_9", Holder::Gone),
                ("pg_4", Holder::Fenced),
                ("pg_3", Holder::NotStreaming)
            ]
        );
        assert!(config.releases(&held[0]));
        // Only a gone member's slot is released, and only above the limit.
        assert!(!config.releases(&held[1]));
        assert_eq!(
            held[0].to_string(),
            "replication slot pg_9 keeps 300.0 MiB of WAL for a member that left the cluster \
             (Patroni keeps it for member_slots_ttl)"
        );
        assert_eq!(
            held[1].to_string(),
            "replication slot pg_4 keeps 200.0 MiB of WAL for pg-4, which is fenced"
        );
        // A stale figure is not acted on.
        let later = Observation {
            at: Timestamp::from_secs(1_000 + 120),
            ..obs
        };
        assert!(held_slots(&later, &config, Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn bad_config_is_refused_by_path() {
        let mut errors = ConfigErrors::default();
        let raw = RawSlotsConfig {
            report_above: RawAmount::Number(0.0),
            release_above: Some("lots".into()),
            ignore: vec!["*".into(), "a*b*".into()],
        };
        assert!(raw.validate_into(&mut errors).is_none());
        let text = errors.to_string();
        for path in [
            "slots.report_above",
            "slots.release_above",
            "slots.ignore[0]",
            "slots.ignore[1]",
        ] {
            assert!(text.contains(path), "{path} in {text}");
        }
    }
}
