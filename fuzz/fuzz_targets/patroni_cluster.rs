//! Patroni's `GET /cluster` body (3.x and 4.x): parsed, then assembled into an observation
//! with a real `/patroni` answer of the leader (what `steward observe` and `steward run`'s
//! observer do), turned into recording lines and printed as JSON.
//!
//! Invariants: nothing panics; every member of the answer is in the observation.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use steward_adapters::patroni::{ClusterView, MemberStatus};
use steward_model::Timestamp;
use steward_runtime::observe::assemble::{assemble, to_records, Answers};

const LEADER_STATUS: &[u8] =
    include_bytes!("../../tests/data/fixtures/patroni-4.1.5/patroni.leader.http200.json");

fuzz_target!(|data: &[u8]| {
    let Ok(view) = ClusterView::from_json(data) else {
        return;
    };
    let _ = view.leader();
    for m in &view.members {
        let _ = (m.api_base(), m.address(), view.member(&m.name));
    }
    let status = MemberStatus::from_json(LEADER_STATUS).expect("the fixture parses");
    let statuses: BTreeMap<String, MemberStatus> = view
        .members
        .iter()
        .map(|m| (m.name.clone(), status.clone()))
        .collect();
    let now = Timestamp::from_secs(1_795_708_800);
    for statuses in [BTreeMap::new(), statuses] {
        let answers = Answers {
            cluster: Some(&view),
            statuses,
            ..Answers::default()
        };
        let obs = assemble("demo", now, &answers);
        for m in &view.members {
            assert!(
                obs.members.iter().any(|o| o.name == m.name),
                "member {:?} lost",
                m.name
            );
        }
        let _ = serde_json::to_string(&obs).expect("an observation serializes");
        for r in to_records(&obs, std::time::Duration::from_secs(60)) {
            let _ = serde_json::to_string(&r).expect("a record serializes");
        }
    }
});
