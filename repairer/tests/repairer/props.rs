//! Property tests: whatever the sequence of observations, action results and ticks,
//! - at most one disruptive command is in flight (the [`Driver`] asserts it on every call);
//! - the member holding the leader lock (the only member claiming it in the latest observation)
//!   is never fenced, so in particular never while no healthy candidate exists;
//! - an old member's data is deleted only after a replacement of it was seen streaming.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use steward_model::observation::{MemberObservation, Observation, PatroniRole};
use steward_model::ports::platform::ErrorKind;
use steward_repairer::{ActionError, CommandKind, Event, RepairConfig};

use crate::support::*;

/// What one member looks like in one observation.
#[derive(Clone, Copy, Debug)]
enum Look {
    Leader,
    LeaderFullDisk,
    Streaming,
    NotStreaming,
    Lagging,
    Unproven,
    Silent,
    Paused,
    PausedClaimingLead,
    Exited,
}

fn look() -> impl Strategy<Value = Look> {
    prop_oneof![
        Just(Look::Leader),
        Just(Look::LeaderFullDisk),
        Just(Look::Streaming),
        Just(Look::Streaming),
        Just(Look::NotStreaming),
        Just(Look::Lagging),
        Just(Look::Unproven),
        Just(Look::Silent),
        Just(Look::Paused),
        Just(Look::PausedClaimingLead),
        Just(Look::Exited),
    ]
}

fn member(name: &str, look: Look) -> MemberObservation {
    match look {
        Look::Leader => leader(name),
        Look::LeaderFullDisk => with_full_disk(leader(name)),
        Look::Streaming => replica(name),
        Look::NotStreaming => MemberObservation {
            streaming: Some(false),
            ..replica(name)
        },
        Look::Lagging => with_lag(replica(name), 1e11),
        Look::Unproven => MemberObservation {
            streaming: None,
            lag_bytes: None,
            ..replica(name)
        },
        Look::Silent => silent(name),
        Look::Paused => paused(name),
        Look::PausedClaimingLead => MemberObservation {
            patroni_role: Some(PatroniRole::Leader),
            ..paused(name)
        },
        Look::Exited => exited(name),
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Observe the three members (and the newest replacement, streaming, if `with_new`).
    Observe {
        advance: u32,
        looks: [Look; 3],
        with_new: bool,
    },
    /// Complete the command in flight, if any: 0 ok, 1 transient, 2 not found, 3 permanent.
    Done {
        advance: u32,
        result: u8,
    },
    Tick {
        advance: u32,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..90u32, [look(), look(), look()], any::<bool>())
            .prop_map(|(advance, looks, with_new)| Step::Observe { advance, looks, with_new }),
        3 => (0..30u32, 0..4u8).prop_map(|(advance, result)| Step::Done { advance, result }),
        1 => (0..600u32).prop_map(|advance| Step::Tick { advance }),
    ]
}

fn sole_leader(o: &Observation) -> Option<&str> {
    let mut claimants = o
        .members
        .iter()
        .filter(|m| m.patroni_role == Some(PatroniRole::Leader));
    match (claimants.next(), claimants.next()) {
        (Some(only), None) => Some(only.name.as_str()),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_event_sequence(steps in prop::collection::vec(step(), 1..80)) {
        let mut d = Driver::new(RepairConfig::default());
        let mut now = t(0);
        let mut last: Option<Observation> = None;
        // replacement name -> the member it replaces, and which replacements were seen streaming.
        let mut replacing: BTreeMap<String, String> = BTreeMap::new();
        let mut streamed: BTreeSet<String> = BTreeSet::new();
        let mut newest: Option<String> = None;
        for s in steps {
            let out = match s {
                Step::Observe { advance, looks, with_new } => {
                    now = now + std::time::Duration::from_secs(u64::from(advance));
                    let mut members: Vec<MemberObservation> = ["pg-1", "pg-2", "pg-3"]
                        .iter()
                        .zip(looks)
                        .map(|(n, l)| member(n, l))
                        .collect();
                    if let (true, Some(name)) = (with_new, &newest) {
                        members.push(replica(name));
                        streamed.insert(name.clone());
                    }
                    let o = obs(now, members);
                    last = Some(o.clone());
                    d.handle(Event::Observed(o), now)
                }
                Step::Done { advance, result } => {
                    now = now + std::time::Duration::from_secs(u64::from(advance));
                    let Some(c) = d.in_flight.clone() else { continue };
                    let result = match result {
                        0 => Ok(()),
                        1 => Err(ActionError::new(ErrorKind::Transient, "busy")),
                        2 => Err(ActionError::new(ErrorKind::NotFound, "gone")),
                        _ => Err(ActionError::new(ErrorKind::Permanent, "refused")),
                    };
                    d.handle(Event::ActionDone { op: c.op, result }, now)
                }
                Step::Tick { advance } => {
                    now = now + std::time::Duration::from_secs(u64::from(advance));
                    d.handle(Event::Tick, now)
                }
            };
            for c in &out {
                match &c.kind {
                    CommandKind::Fence { member } | CommandKind::Drain { member } => {
                        let holder = last.as_ref().and_then(sole_leader);
                        prop_assert_ne!(Some(member.as_str()), holder, "{:?} hits the leader", c);
                    }
                    CommandKind::Create { name, replacing: old, .. } => {
                        replacing.insert(name.clone(), old.clone());
                        newest = Some(name.clone());
                    }
                    CommandKind::Remove { member, delete_data: true } => {
                        let proven = replacing
                            .iter()
                            .any(|(new, old)| old == member && streamed.contains(new));
                        prop_assert!(proven, "{} deleted before a replacement streamed", member);
                    }
                    _ => {}
                }
            }
        }
    }
}
