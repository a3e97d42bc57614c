//! Replication slots that keep WAL for nobody (issue 14), watched on every repair tick.
//!
//! Each slot that keeps more than `[policy.slots] report_above` of WAL for a member that is gone,
//! fenced or not streaming is said once on the action log (a `notice`) and in the log, with the
//! member and why ([`steward_policies::slots`] judges). With `release_above`, a slot of a member
//! that LEFT the cluster and keeps more than that makes Steward ask Patroni to drop the slots it
//! retains for absent members: `PATCH /config {"member_slots_ttl": 0}` (Patroni 4 keeps them
//! `member_slots_ttl`, 30 min by default; Patroni 3 drops them at once), and, once no such slot
//! is left, the value the cluster had is put back. Patroni, not Steward, drops the slot: the
//! slots of members still in the cluster, permanent slots and `ignore_slots` are Patroni's to
//! keep, and Steward never touches them. Growing the disk for such WAL only buys time.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use steward_model::observation::Observation;
use steward_model::Timestamp;
use steward_policies::slots::{held_slots, HeldSlot, Holder, SlotsConfig};
use tracing::warn;

use super::actions::Kind;
use super::journal::LoopName;
use super::Shared;

/// The key of Patroni's dynamic configuration that Steward lowers.
const TTL_KEY: &str = "member_slots_ttl";

/// How long Patroni gets to drop the slots after `member_slots_ttl` went to 0 (a few of its
/// loops): a slot still there after that is not one it retains for an absent member.
const RELEASE_DEADLINE: Duration = Duration::from_secs(120);

/// What the watcher remembers between ticks.
#[derive(Debug, Default)]
pub(super) struct SlotWatch {
    /// Slots already said, so each is said once while it holds WAL.
    said: BTreeSet<String>,
    /// While Steward has lowered `member_slots_ttl`: the value to put back (`null` when the
    /// cluster had none, which deletes the key again), when it was lowered, and for which slots.
    restore: Option<(Value, Timestamp, BTreeSet<String>)>,
    /// Slots Patroni does not drop for `member_slots_ttl`: its permanent or ignored slots (its
    /// config says so), or slots still there after [`RELEASE_DEADLINE`]. Never a reason again.
    not_patronis: BTreeSet<String>,
}

impl SlotWatch {
    /// One tick: judges the observation's slots, says what is new, and releases or restores.
    pub(super) async fn tick(
        &mut self,
        shared: &Shared,
        observation: &Observation,
        config: &SlotsConfig,
        max_age: Duration,
    ) -> Vec<HeldSlot> {
        let held = held_slots(observation, config, max_age);
        self.said.retain(|s| held.iter().any(|h| h.slot == *s));
        for h in &held {
            if self.said.contains(&h.slot) {
                continue;
            }
            warn!(cluster = %shared.cluster, slot = %h.slot, wal_bytes = h.wal_bytes, "{h}");
            notice(shared, h, advice(h, config));
            self.said.insert(h.slot.clone());
        }
        let release: Vec<&HeldSlot> = held
            .iter()
            .filter(|h| config.releases(h) && !self.not_patronis.contains(&h.slot))
            .collect();
        let may_act = shared
            .exec
            .guard
            .as_ref()
            .is_none_or(|g| g.may_act().is_ok());
        if !may_act {
            return held;
        }
        let now = shared.clock.now();
        match &self.restore {
            None if !release.is_empty() => self.release(shared, &release, now).await,
            None => {}
            Some((_, since, released)) => {
                let left: Vec<&HeldSlot> =
                    held.iter().filter(|h| released.contains(&h.slot)).collect();
                let overdue = now.since(*since) >= RELEASE_DEADLINE;
                if overdue {
                    for h in &left {
                        let why = format!(
                            "{h}: Patroni did not drop it with {TTL_KEY} at 0, so it is not a \
                             slot Patroni keeps for an absent member (someone else's?): not \
                             released again; drop it yourself or add it to [policy.slots] ignore"
                        );
                        notice(shared, h, why);
                        self.not_patronis.insert(h.slot.clone());
                    }
                }
                if left.is_empty() || overdue {
                    self.put_back(shared).await;
                }
            }
        }
        held
    }

    async fn release(&mut self, shared: &Shared, release: &[&HeldSlot], now: Timestamp) {
        let config = match shared.exec.patroni.config().await {
            Ok(c) => c,
            Err(e) => {
                warn!(cluster = %shared.cluster, error = %e, "reading patroni's config to release slots failed");
                return;
            }
        };
        // Patroni's permanent and ignored slots are never dropped for member_slots_ttl.
        let keeps = kept_by_patroni(&config);
        let (theirs, release): (Vec<&&HeldSlot>, Vec<&&HeldSlot>) =
            release.iter().partition(|h| keeps.contains(&h.slot));
        for h in theirs {
            let why = format!(
                "{h}: a permanent or ignored slot in Patroni's config (slots, ignore_slots): not \
                 released"
            );
            notice(shared, h, why);
            self.not_patronis.insert(h.slot.clone());
        }
        if release.is_empty() {
            return;
        }
        let slots: BTreeSet<String> = release.iter().map(|h| h.slot.clone()).collect();
        let why = release
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let current = config.get(TTL_KEY).cloned().unwrap_or(Value::Null);
        if is_zero(&current) {
            // Patroni drops them on its own next loop; nothing to lower.
            return;
        }
        let what = format!("{TTL_KEY} {} -> 0", show(&current));
        if shared.dry_run {
            shared.line(LoopName::Repair, Kind::Command, "slots", what, why);
            self.restore = Some((current, now, slots));
            return;
        }
        shared.line(LoopName::Repair, Kind::Command, "slots", what.clone(), why);
        match shared
            .exec
            .patroni
            .patch_config(&json!({ TTL_KEY: 0 }))
            .await
        {
            Ok(_) => {
                shared.line(
                    LoopName::Repair,
                    Kind::Result,
                    "slots",
                    what,
                    format!(
                        "ok: patroni drops the slots of absent members; {TTL_KEY} goes back to {} \
                         once none keeps WAL (if Steward stops first: `patronictl edit-config -s \
                         {TTL_KEY}={}`)",
                        show(&current),
                        match &current {
                            // Patroni's default (global_config.member_slots_ttl).
                            Value::Null => "1800".to_string(),
                            other => show(other),
                        }
                    ),
                );
                self.restore = Some((current, now, slots));
            }
            Err(e) => shared.line(LoopName::Repair, Kind::Result, "slots", what, e.to_string()),
        }
    }

    async fn put_back(&mut self, shared: &Shared) {
        let Some((previous, _, _)) = self.restore.clone() else {
            return;
        };
        let what = format!("{TTL_KEY} 0 -> {}", show(&previous));
        let why = "no slot of an absent member keeps WAL any more".to_string();
        shared.line(LoopName::Repair, Kind::Command, "slots", what.clone(), why);
        if shared.dry_run {
            self.restore = None;
            return;
        }
        match shared
            .exec
            .patroni
            .patch_config(&json!({ TTL_KEY: previous }))
            .await
        {
            Ok(_) => {
                shared.line(LoopName::Repair, Kind::Result, "slots", what, "ok".into());
                self.restore = None;
            }
            Err(e) => shared.line(LoopName::Repair, Kind::Result, "slots", what, e.to_string()),
        }
    }
}

/// A `notice` line of the action log about `h`.
fn notice(shared: &Shared, h: &HeldSlot, why: String) {
    shared.line(
        LoopName::Repair,
        Kind::Notice,
        "slots",
        format!("slot {}", h.slot),
        why,
    );
}

/// What to do about a held slot, in words.
fn advice(h: &HeldSlot, config: &SlotsConfig) -> String {
    match (h.holder, config.release_above) {
        (Holder::Gone, Some(limit)) if h.wal_bytes < limit => format!(
            "{h}: released when it passes {} ([policy.slots] release_above)",
            steward_model::size::human_bytes(limit)
        ),
        (Holder::Gone, Some(_)) => format!("{h}: released now"),
        (Holder::Gone, None) => format!(
            "{h}: set [policy.slots] release_above to have Patroni drop it, or lower the \
             cluster's {TTL_KEY}"
        ),
        (Holder::Fenced, _) => {
            format!("{h}: Patroni drops it once the member's key expires and {TTL_KEY} has passed")
        }
        (Holder::NotStreaming, _) => format!(
            "{h}: the repairer replaces a member stuck this way; a member still joining catches up"
        ),
    }
}

/// The slots Patroni's dynamic config names as its own: permanent `slots` (a map by name) and
/// `ignore_slots` (a list of matchers; those with a name).
fn kept_by_patroni(config: &Value) -> BTreeSet<String> {
    let permanent = config
        .get("slots")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys().cloned());
    let ignored = config
        .get("ignore_slots")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_string));
    permanent.chain(ignored).collect()
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.trim().trim_end_matches('s').trim() == "0",
        _ => false,
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(unset: patroni's default)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
