//! A Prometheus HTTP API answer (`/api/v1/query` and `/api/v1/query_range`), served over
//! HTTP to the real client: an instant query (then assembled into an observation as
//! `steward run` does), a range query, and `steward evaluate --prometheus` (every metric's
//! range query, records, replay, JSON report).
//!
//! Invariants: nothing panics; a JSON report is valid JSON.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use steward_adapters::patroni::ClusterView;
use steward_adapters::prometheus::{Metric, PrometheusClient, PrometheusSettings};
use steward_fuzz::{Answer, BodyServer};
use steward_model::Timestamp;
use steward_runtime::observe::assemble::{assemble, Answers};

const CLUSTER: &[u8] =
    include_bytes!("../../tests/data/fixtures/patroni-4.1.5/cluster.leader.http200.json");
/// `--until` of the evaluate run: the recorded fixtures' time (2026-11-26T10:00:00Z).
const UNTIL: i64 = 1_795_687_200;

struct Fixture {
    server: BodyServer,
    client: PrometheusClient,
    cluster: ClusterView,
}

fuzz_target!(|data: &[u8]| {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    let f = FIXTURE.get_or_init(|| {
        let server = BodyServer::start();
        let settings = PrometheusSettings::with_url(&server.url).expect("a valid url");
        let client = steward_fuzz::runtime()
            .block_on(async { PrometheusClient::new(&settings) })
            .expect("a client");
        let cluster = ClusterView::from_json(CLUSTER).expect("the fixture parses");
        Fixture {
            server,
            client,
            cluster,
        }
    });
    f.server.set(Answer {
        status: 200,
        content_type: "application/json",
        body: data.to_vec(),
    });
    let now = Timestamp::from_secs(UNTIL);
    let matrix = steward_fuzz::runtime().block_on(async {
        if let Ok(reading) = f.client.instant_query(Metric::CpuUsed, now).await {
            let answers = Answers {
                cluster: Some(&f.cluster),
                metrics: BTreeMap::from([(Metric::CpuUsed, reading)]),
                ..Answers::default()
            };
            let obs = assemble("demo", now, &answers);
            let _ = serde_json::to_string(&obs).expect("an observation serializes");
        }
        f.client
            .range_query(
                Metric::MemoryUsed,
                now - Duration::from_secs(300),
                now,
                Duration::from_secs(15),
            )
            .await
            .is_ok_and(|series| !series.is_empty())
    });
    // The command builds two clients (a few ms each: TLS roots): only for an answer the
    // client took as a matrix with series, where the rest of the command has work to do.
    if !matrix {
        return;
    }
    let until = UNTIL.to_string();
    if let Ok(report) = steward_fuzz::evaluate(&[
        "--prometheus",
        &f.server.url,
        "--since",
        "5m",
        "--step",
        "15s",
        "--until",
        &until,
        "--cpus",
        "2",
        "--memory",
        "4GiB",
        "--disk",
        "10GiB",
        "--format",
        "json",
    ]) {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&report) {
            panic!("the JSON report is not JSON: {e}");
        }
    }
});
