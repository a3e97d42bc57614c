//! `steward observe` end to end against a tiny local HTTP server that plays a Patroni cluster
//! (the recorded bodies of tests/data/fixtures) and a Prometheus.
//!
//! Not wiremock: the root package does not depend on it. The server routes by path; every
//! member's `api_url` is rewritten to point back at it (`/m/<member>/patroni`), so no test ever
//! reaches a real Patroni on 127.0.0.11:8008 that a lab might be running.

use std::path::PathBuf;
use std::time::Duration;

use steward::observe::{run, Format, ObserveArgs};
use steward_model::observation::{Observation, PatroniRole, Source};
use steward_model::record::MemberRecord;
use steward_model::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn fixture(rel: &str) -> String {
    let p = format!("{}/tests/data/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A fake cluster: which version's recordings to serve, and which members' `/patroni` fail.
#[derive(Clone)]
struct Fake {
    version: &'static str,
    silent: Vec<&'static str>,
}

/// Starts the server; returns its base URL.
async fn start(fake: Fake) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let me = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (fake, me) = (fake.clone(), me.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = route(&fake, &me, &target);
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    base
}

fn route(fake: &Fake, me: &str, target: &str) -> (&'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/cluster" {
        let body = fixture(&format!("{}/cluster.leader.http200.json", fake.version));
        return (
            "200 OK",
            body.replace("http://127.0.0.1", &format!("{me}/m/127.0.0.1")),
        );
    }
    if let Some(rest) = path.strip_prefix("/m/") {
        // `/m/127.0.0.12:8008/patroni`: the member is known by its recorded address.
        let addr = rest.trim_end_matches("/patroni");
        let name = match addr {
            "127.0.0.11:8008" => "pg1",
            "127.0.0.12:8008" => "pg2",
            _ => "pg3",
        };
        if fake.silent.contains(&name) {
            return ("503 Service Unavailable", "{}".into());
        }
        let who = if name == "pg1" { "leader" } else { "replica" };
        return (
            "200 OK",
            fixture(&format!("{}/patroni.{who}.http200.json", fake.version)),
        );
    }
    if path == "/api/v1/query" {
        // Only the CPU query has data here: every other metric is an empty answer.
        if !query.contains("container_cpu_usage_seconds_total") {
            return (
                "200 OK",
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into(),
            );
        }
        // Prometheus stamps an instant query's samples with the evaluation time asked for.
        let time = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("time="))
            .unwrap_or("0");
        let series: Vec<String> = [("pg1", "0.42"), ("pg2", "0.07"), ("pg3", "NaN")]
            .iter()
            .map(|(m, v)| format!(r#"{{"metric":{{"member":"{m}"}},"value":[{time},"{v}"]}}"#))
            .collect();
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            series.join(",")
        );
        return ("200 OK", body);
    }
    ("404 Not Found", "{}".into())
}

fn args(patroni: Vec<String>) -> ObserveArgs {
    ObserveArgs {
        patroni,
        prometheus: None,
        patroni_username: None,
        patroni_password_env: None,
        cluster: None,
        format: Format::Table,
        record: None,
        timeout: Duration::from_secs(2),
    }
}

async fn output(a: &ObserveArgs) -> anyhow::Result<String> {
    let mut out = Vec::new();
    run(a, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

/// A URL where nothing listens (bound, then released).
/// A URL nobody answers: a port the kernel just gave out and took back, on a loopback address
/// no other test binds (on 127.0.0.1 a test's server running beside this one could be given
/// the same port a moment later, and answer).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.255.254:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn the_table_shows_every_member_discovered_from_one_url() {
    let base = start(Fake {
        version: "patroni-4.1.5",
        silent: vec![],
    })
    .await;
    let mut a = args(vec![dead_url(), base.clone()]);
    a.prometheus = Some(base);
    let text = output(&a).await.unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(text.starts_with("cluster pglab at "), "{text}");
    // MEMBER ROLE STATE TL STREAMING LAG CPU ...
    assert_eq!(
        rows[0][..7],
        ["pg1", "leader", "running", "1", "-", "-", "0.42"],
        "{text}"
    );
    assert_eq!(
        rows[1][..8],
        ["pg2", "replica", "streaming", "1", "yes", "0", "B", "0.07"],
        "{text}"
    );
    assert_eq!(
        rows[2][..10],
        [
            "pg3",
            "replica",
            "streaming",
            "1",
            "yes",
            "0",
            "B",
            "-",
            "-",
            "-"
        ],
        "NaN is missing: {text}"
    );
    assert!(
        text.contains("note: memory_used: prometheus answered no series"),
        "{text}"
    );
}

#[tokio::test]
async fn json_output_is_the_observation_with_sources() {
    let base = start(Fake {
        version: "patroni-3.0.2",
        silent: vec!["pg3"],
    })
    .await;
    let mut a = args(vec![base.clone()]);
    a.prometheus = Some(base);
    a.format = Format::Json;
    a.cluster = Some("demo".into());
    let obs: Observation = serde_json::from_str(&output(&a).await.unwrap()).unwrap();
    assert_eq!(obs.cluster, "demo");
    let names: Vec<&str> = obs.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["pg1", "pg2", "pg3"]);
    assert_eq!(
        obs.members[0].patroni_role,
        Some(PatroniRole::Leader),
        "3.x `master` is the leader"
    );
    assert_eq!(obs.members[1].streaming, Some(true));
    let cpu = obs.members[0].cpu_used.unwrap();
    // Stamped with the evaluation time asked for: the observation's time, in whole seconds.
    let asked = Timestamp::from_secs(obs.at.as_millis().div_euclid(1000));
    assert_eq!(
        (cpu.value, cpu.source, cpu.at),
        (0.42, Source::Prometheus, asked)
    );
    assert_eq!(obs.members[2].cpu_used, None);
    assert!(
        obs.notes
            .iter()
            .any(|n| n.starts_with("pg3: /patroni failed (transient)")),
        "{:?}",
        obs.notes
    );
}

/// Patroni 3.x's /cluster has no scope: the name comes from the members' own /patroni, not a
/// made-up "postgres" (issue 15).
#[tokio::test]
async fn a_patroni_3_cluster_is_named_by_its_own_scope() {
    let base = start(Fake {
        version: "patroni-3.0.2",
        silent: vec![],
    })
    .await;
    let mut a = args(vec![base]);
    a.format = Format::Json;
    let obs: Observation = serde_json::from_str(&output(&a).await.unwrap()).unwrap();
    assert_eq!(obs.cluster, "pglab");
}

#[tokio::test]
async fn record_appends_one_line_per_member_per_pass() {
    let base = start(Fake {
        version: "patroni-4.1.5",
        silent: vec![],
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("obs.jsonl");
    let mut a = args(vec![base.clone()]);
    a.prometheus = Some(base);
    a.record = Some(file.clone());
    output(&a).await.unwrap();
    output(&a).await.unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let records: Vec<MemberRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6);
    let pg1 = &records[0];
    assert_eq!(
        (pg1.member.as_str(), pg1.cluster.as_deref(), pg1.cpu_used),
        ("pg1", Some("pglab"), Some(0.42))
    );
    assert_eq!(records[4].streaming, Some(true));
    assert_eq!(records[5].cpu_used, None, "NaN is not recorded as a number");
}

#[tokio::test]
async fn no_patroni_answering_is_an_error_that_says_so() {
    let a = args(vec![dead_url(), dead_url()]);
    let err = output(&a).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.starts_with("asking patroni for /cluster: none of the 2 patroni urls answered"),
        "{text}"
    );
}

#[tokio::test]
async fn a_url_with_credentials_is_refused_without_echoing_them() {
    let a = args(vec!["http://admin:hunter2@127.0.0.1:8008".into()]);
    let text = format!("{:#}", output(&a).await.unwrap_err());
    assert!(
        text.contains("urls[0]: credentials in the URL are not allowed"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}
