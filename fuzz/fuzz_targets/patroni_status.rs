//! Patroni's `GET /patroni` (and `/health`) body: parsed, then assembled into an observation
//! as each member's own answer (the leader's decides who streams), turned into recording
//! lines and printed as JSON.
//!
//! Invariant: nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steward_adapters::patroni::{ClusterView, MemberStatus};
use steward_model::Timestamp;
use steward_runtime::observe::assemble::{assemble, to_records, Answers};

const CLUSTER_4: &[u8] =
    include_bytes!("../../tests/data/fixtures/patroni-4.1.5/cluster.leader.http200.json");
const CLUSTER_3: &[u8] =
    include_bytes!("../../tests/data/fixtures/patroni-3.0.2/cluster.leader.http200.json");

fuzz_target!(|data: &[u8]| {
    let Ok(status) = MemberStatus::from_json(data) else {
        return;
    };
    let names: Vec<String> = ["pg1", "pg2", "pg3"].map(String::from).into();
    let _ = status.streaming_members(names.iter().map(String::as_str));
    let now = Timestamp::from_secs(1_795_708_800);
    for cluster in [CLUSTER_4, CLUSTER_3] {
        let view = ClusterView::from_json(cluster).expect("the fixture parses");
        let answers = Answers {
            cluster: Some(&view),
            statuses: view
                .members
                .iter()
                .map(|m| (m.name.clone(), status.clone()))
                .collect(),
            ..Answers::default()
        };
        let obs = assemble("demo", now, &answers);
        let _ = serde_json::to_string(&obs).expect("an observation serializes");
        for r in to_records(&obs, std::time::Duration::from_secs(60)) {
            let _ = serde_json::to_string(&r).expect("a record serializes");
        }
    }
});
