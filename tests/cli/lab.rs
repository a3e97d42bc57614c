//! End-to-end: `steward observe` against the real lab (Patroni 4.1.5, etcd, Prometheus in Docker).
//!
//! `scripts/test.sh` brings the lab up and exports its addresses (`scripts/lab.sh env`) with
//! `STEWARD_LAB=1`. Without them these tests fail (see `crate::service_missing` for the opt-out).

use std::process::{Command, Output};

use steward_model::observation::{Observation, PatroniRole};
use steward_model::record::MemberRecord;

/// The lab's Patroni URLs and Prometheus URL, or None (after saying why) when the lab is not up.
fn lab() -> Option<(String, String)> {
    let vars = (
        std::env::var("PATRONI_URLS"),
        std::env::var("PROMETHEUS_URL"),
    );
    match (std::env::var("STEWARD_LAB").as_deref(), vars) {
        (Ok("1"), (Ok(patroni), Ok(prometheus))) => Some((patroni, prometheus)),
        _ => {
            crate::service_missing("the lab is not up (`scripts/lab.sh up`, `eval \"$(scripts/lab.sh env)\"` and STEWARD_LAB=1)");
            None
        }
    }
}

fn steward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .output()
        .expect("the steward binary runs")
}

/// Patroni can be between loops right after `lab.sh up`; ask a few times for a settled view.
#[allow(clippy::disallowed_methods)] // waits on a real cluster's clock, in a test: a thread sleep is right
fn observe_settled(patroni: &str, prometheus: &str) -> Observation {
    let mut last = String::new();
    for _ in 0..20 {
        let out = steward(&[
            "observe",
            "--patroni",
            patroni,
            "--prometheus",
            prometheus,
            "--format",
            "json",
        ]);
        assert!(
            out.status.success(),
            "observe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let obs: Observation =
            serde_json::from_slice(&out.stdout).expect("observe --format json is an Observation");
        let leaders = obs
            .members
            .iter()
            .filter(|m| m.patroni_role == Some(PatroniRole::Leader))
            .count();
        let streaming = obs
            .members
            .iter()
            .filter(|m| m.streaming == Some(true))
            .count();
        if obs.members.len() == 3 && leaders == 1 && streaming == 2 {
            return obs;
        }
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("the lab never looked healthy to observe; last answer:\n{last}");
}

#[test]
fn observe_sees_the_real_cluster_from_one_member_url() {
    let Some((patroni, prometheus)) = lab() else {
        return;
    };
    // Any one member's URL is enough: the others are discovered from its /cluster.
    let one = patroni.split(',').nth(1).unwrap().to_string();
    let obs = observe_settled(&one, &prometheus);
    assert_eq!(obs.cluster, "steward-lab");
    let mut names: Vec<&str> = obs.members.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["lab-pg-1", "lab-pg-2", "lab-pg-3"]);
    for m in &obs.members {
        assert_eq!(m.in_patroni, Some(true), "{}", m.name);
        assert!(
            m.api_url
                .as_deref()
                .is_some_and(|u| u.starts_with("http://127.0.0.1")),
            "{m:?}"
        );
        assert!(m.timeline.is_some(), "{}: no timeline", m.name);
        // The exporters are scraped by the lab's Prometheus: connections and disk are there.
        let connections = m
            .connections
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no connections figure", m.name));
        assert!(connections.value >= 1.0, "{}: {connections:?}", m.name);
        assert!(
            m.disk_used.as_ref().is_some_and(|d| d.value > 1e6),
            "{}: {:?}",
            m.name,
            m.disk_used
        );
        if m.patroni_role == Some(PatroniRole::Replica) {
            assert_eq!(m.streaming, Some(true), "{}", m.name);
            assert!(m.lag_bytes.is_some(), "{}: no lag figure", m.name);
        }
    }
}

#[test]
fn a_live_recording_replays_through_evaluate() {
    let Some((patroni, prometheus)) = lab() else {
        return;
    };
    observe_settled(&patroni, &prometheus);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.jsonl");
    for _ in 0..2 {
        let out = steward(&[
            "observe",
            "--patroni",
            &patroni,
            "--prometheus",
            &prometheus,
            "--record",
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let records: Vec<MemberRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a MemberRecord line"))
        .collect();
    assert_eq!(records.len(), 6, "two passes of three members:\n{text}");
    assert!(records
        .iter()
        .all(|r| r.cluster.as_deref() == Some("steward-lab")));

    let out = steward(&[
        "evaluate",
        "--jsonl",
        file.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "evaluate --jsonl on a live recording failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("evaluate --format json prints JSON");
    assert!(report.get("summary").is_some(), "{report}");
}

/// Issue 19: clusters sharing a Prometheus (a fleet). On the lab's real Prometheus, which
/// scrapes the lab's cluster (`steward-lab`), that cluster's queries see its members' series
/// and those of a cluster named otherwise see none: the default queries select one cluster's
/// series by Patroni's `scope` (and, for postgres_exporter's, their member's).
#[tokio::test]
async fn each_clusters_queries_see_only_its_own_series_on_the_labs_prometheus() {
    use steward_adapters::prometheus::{MetricsSource, PrometheusClient, PrometheusSettings};
    use steward_model::ports::metrics::Metric;
    let Some((_, prometheus)) = lab() else {
        return;
    };
    let settings = PrometheusSettings::with_url(&prometheus).expect("the lab's URL is valid");
    let now = steward_model::Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
    let ask = |cluster: &str, metric: Metric| {
        let client = PrometheusClient::new(&settings.for_cluster(cluster)).expect("client");
        async move {
            let reading = client
                .instant(metric, now)
                .await
                .expect("prometheus answers");
            reading.values.keys().cloned().collect::<Vec<String>>()
        }
    };
    let members = ["lab-pg-1", "lab-pg-2", "lab-pg-3"];
    let connections = ask("steward-lab", Metric::Connections).await;
    assert_eq!(connections, members, "the lab's own exporter series");
    let lagging = ask("steward-lab", Metric::LagBytes).await;
    assert_eq!(lagging.len(), 2, "the lab's two replicas: {lagging:?}");
    for metric in [Metric::Connections, Metric::LagBytes, Metric::SlotWalBytes] {
        let other = ask("not-the-lab", metric).await;
        assert!(
            other.is_empty(),
            "{metric:?}: another cluster's series: {other:?}"
        );
    }
    // Unscoped, as one cluster alone asks: everything Prometheus has.
    let client = PrometheusClient::new(&settings).expect("client");
    let all = client.instant(Metric::Connections, now).await.unwrap();
    assert_eq!(all.values.len(), 3);
}
