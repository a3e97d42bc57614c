//! The daemon's HTTP surface over real loopback sockets: every endpoint, the pause/resume auth
//! paths, the Prometheus SD and text formats, graceful shutdown, the decision log, and that
//! the API token never leaks into a response body or a log line (promise 9).
//!
//! Real sockets, so real time (no paused clock); the only wait is the short `stale_after` of
//! the health test.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use steward_model::observation::PatroniRole;
use steward_model::{Action, Decision, Knob, Resource, Role, Rule, RuleApplied, Timestamp};
use steward_runtime::journal::{Journal, NewOperation, OperationKind};
use steward_runtime::server::{
    serve, BearerToken, GuardStatus, Leadership, MemberStatus, RawServerConfig, ServerConfig,
    Shared,
};
use steward_runtime::telemetry::{
    ActionFinished, DecisionLog, DecisionMade, GuardChanged, LeadershipChanged, Loop, LoopFailed,
    LoopTicked, Metrics, ObservationUsed, StepOutcome,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "tok-8f3a9c1e55d04b7aa1f2";

struct Running {
    base: String,
    shared: Shared,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), steward_runtime::server::ServerError>>,
    client: reqwest::Client,
}

fn config(stale_after: Duration) -> ServerConfig {
    RawServerConfig {
        listen: "127.0.0.1:0".into(),
        stale_after,
        ..RawServerConfig::default()
    }
    .validate()
    .unwrap()
}

async fn start(token: Option<&str>, stale_after: Duration) -> Running {
    let config = config(stale_after);
    let token = config.load_token(|_| token.map(str::to_string)).unwrap();
    let shared = Shared::new(
        "pg",
        &config,
        token,
        Arc::new(Metrics::new()),
        Loop::ALL.to_vec(),
    );
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, shared.clone(), shutdown.clone()));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Running {
        base: format!("http://{addr}"),
        shared,
        shutdown,
        task,
        client,
    }
}

impl Running {
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, auth: Option<&str>) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.base));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        req.send().await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown in time")
            .unwrap()
            .unwrap();
    }
}

fn grow_decision() -> Decision {
    let knob = Knob::Vertical {
        role: Role::Database,
        resource: Resource::Cpu,
    };
    let mut d = Decision::hold(Timestamp::from_secs(1_764_176_570), knob, 2.0);
    d.action = Action::Grow;
    d.raw = Some(2.6);
    d.target = 3.0;
    d.statistic = Some(0.91);
    d.rules.push(RuleApplied {
        rule: Rule::Rounding,
        before: 2.6,
        after: 3.0,
        detail: "rounded up to whole vCPUs".into(),
    });
    d.summary = "cpu 0.91 above 0.80 for 3 min: grow 2 -> 3 vCPU".into();
    d
}

#[tokio::test]
async fn healthz_turns_ok_when_both_loops_tick_and_fails_again_when_they_stall() {
    let s = start(None, Duration::from_millis(400)).await;
    let (code, body) = s.get("/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["loops"]["scaler"]["why"], "has not ticked yet");

    // One loop is not enough.
    s.shared
        .record_tick(Loop::Scaler, Timestamp::from_secs(1), vec![])
        .await;
    let (code, body) = s.get("/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    s.shared
        .record_tick(Loop::Repairer, Timestamp::from_secs(1), vec![])
        .await;
    let (code, body) = s.get("/healthz").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["loops"]["repairer"]["healthy"],
        true
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let (code, body) = s.get("/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["loops"]["scaler"]["why"]
            .as_str()
            .unwrap()
            .contains("last tick"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn status_shows_members_decisions_operations_guards_pause_and_leadership() {
    let s = start(Some(TOKEN), Duration::from_secs(60)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 10).unwrap().journal;
    let op = journal
        .begin(
            NewOperation {
                kind: OperationKind::Replace,
                cluster: "pg".into(),
                targets: vec!["pg-2".into()],
                plan: json!({"steps": ["drain", "stop"]}),
            },
            Timestamp::from_secs(1_764_176_570),
        )
        .unwrap();
    s.shared
        .update_status(|st| {
            st.members = vec![MemberStatus {
                name: "pg-1".into(),
                role: Some(Role::Database),
                patroni_role: Some(PatroniRole::Leader),
                patroni_state: Some("running".into()),
                metrics_target: Some("127.0.0.11:9187".into()),
                ..MemberStatus::default()
            }];
            st.in_flight = vec![op.clone()];
            st.guards.insert(
                "observer_doubt".into(),
                GuardStatus {
                    engaged: true,
                    reason: "2 of 3 members unhealthy at once".into(),
                    since: None,
                },
            );
            st.leadership = Leadership {
                is_leader: true,
                holder: Some("steward-a".into()),
            };
        })
        .await;
    s.shared
        .record_tick(
            Loop::Scaler,
            Timestamp::from_secs(1_764_176_571),
            vec![grow_decision()],
        )
        .await;

    let (code, body) = s.get("/status").await;
    assert_eq!(code, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cluster"], "pg");
    assert_eq!(v["members"][0]["name"], "pg-1");
    assert_eq!(v["members"][0]["patroni_role"], "leader");
    let decision: Decision =
        serde_json::from_value(v["loops"]["scaler"]["last_decisions"][0].clone()).unwrap();
    assert_eq!(decision, grow_decision());
    assert_eq!(v["loops"]["scaler"]["last_tick_at"], "2025-11-26T17:02:51Z");
    assert_eq!(v["in_flight"][0]["id"], op.id.as_str());
    assert_eq!(v["in_flight"][0]["kind"], "replace");
    assert_eq!(v["guards"]["observer_doubt"]["engaged"], true);
    assert_eq!(v["leadership"]["holder"], "steward-a");
    assert_eq!(v["paused"], false);

    // The paused field follows the flag.
    assert_eq!(
        s.post("/pause", Some(&format!("Bearer {TOKEN}")))
            .await
            .status(),
        StatusCode::OK
    );
    let (_, body) = s.get("/status").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["paused"],
        true
    );
    s.stop().await;
}

#[tokio::test]
async fn sd_lists_each_members_metrics_target_in_the_http_sd_format() {
    let s = start(None, Duration::from_secs(60)).await;
    s.shared
        .update_status(|st| {
            st.members = vec![
                MemberStatus {
                    name: "pg-1".into(),
                    role: Some(Role::Database),
                    patroni_role: Some(PatroniRole::Replica),
                    metrics_target: Some("127.0.0.11:9187".into()),
                    ..MemberStatus::default()
                },
                MemberStatus {
                    name: "pg-2".into(),
                    metrics_target: Some("127.0.0.12:9187".into()),
                    ..MemberStatus::default()
                },
                // Without a target, nothing to scrape: not listed.
                MemberStatus {
                    name: "lb-1".into(),
                    role: Some(Role::Balancer),
                    ..MemberStatus::default()
                },
            ];
        })
        .await;
    let (code, body) = s.get("/sd").await;
    assert_eq!(code, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!([
            {"targets": ["127.0.0.11:9187"],
             "labels": {"cluster": "pg", "member": "pg-1", "role": "database", "patroni_role": "replica"}},
            {"targets": ["127.0.0.12:9187"], "labels": {"cluster": "pg", "member": "pg-2"}},
        ])
    );
    s.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_documented_names_and_labels() {
    let s = start(None, Duration::from_secs(60)).await;
    let m = s.shared.metrics().clone();
    let d = grow_decision();
    DecisionMade {
        cluster: "pg",
        r#loop: Loop::Scaler,
        decision: &d,
    }
    .emit(&m);
    DecisionMade {
        cluster: "pg",
        r#loop: Loop::Scaler,
        decision: &d,
    }
    .emit(&m);
    ActionFinished {
        cluster: "pg",
        member: Some("pg-2"),
        kind: "resize",
        outcome: StepOutcome::Success,
        duration: Duration::from_millis(1500),
        operation: None,
    }
    .emit(&m);
    let err = std::io::Error::other("connection refused");
    LoopFailed {
        cluster: "pg",
        r#loop: Loop::Repairer,
        kind: "transient",
        error: &err,
    }
    .emit(&m);
    LoopTicked {
        cluster: "pg",
        r#loop: Loop::Scaler,
        duration: Duration::from_millis(30),
    }
    .emit(&m);
    ObservationUsed {
        cluster: "pg",
        age: Duration::from_millis(2500),
    }
    .emit(&m);
    GuardChanged {
        cluster: "pg",
        guard: "circuit_breaker",
        engaged: true,
        reason: "3 failed",
    }
    .emit(&m);
    LeadershipChanged {
        cluster: "pg",
        leader: true,
        holder: Some("steward-a"),
    }
    .emit(&m);
    s.shared.set_paused(true, "test");

    let r = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let body = r.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "steward_decisions_total",
            &[
                ("loop", "scaler"),
                ("knob", "database.cpu"),
                ("action", "grow")
            ]
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(
            "steward_actions_total",
            &[("kind", "resize"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "steward_failures_total",
            &[("loop", "repairer"), ("kind", "transient")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value("steward_loop_duration_seconds", &[("loop", "scaler")]),
        Some(1.0),
        "{body}"
    );
    assert!(value("steward_loop_duration_seconds", &[("loop", "repairer")]).is_some());
    assert_eq!(value("steward_observation_age_seconds", &[]), Some(2.5));
    assert_eq!(
        value("steward_guard_state", &[("guard", "circuit_breaker")]),
        Some(1.0)
    );
    assert_eq!(value("steward_paused", &[]), Some(1.0));
    assert_eq!(value("steward_leader", &[]), Some(1.0));
    // Every metric name follows the Prometheus naming rule, and every series says its cluster
    // (a fleet's clusters share the registry).
    for sample in &scrape.samples {
        assert!(sample.metric.starts_with("steward_"), "{}", sample.metric);
        assert_eq!(
            sample.labels.get("cluster"),
            Some("pg"),
            "{}",
            sample.metric
        );
        assert!(
            sample
                .metric
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'),
            "{}",
            sample.metric
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn pause_and_resume_need_the_right_bearer_token() {
    let s = start(Some(TOKEN), Duration::from_secs(60)).await;
    let mut flag = s.shared.pause_flag();
    assert!(!*flag.borrow());

    let r = s.post("/pause", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = s.post("/pause", Some(&format!("Basic {TOKEN}"))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .post("/pause", Some("Bearer tok-8f3a9c1e55d04b7aa1f3"))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s.post("/pause", Some("Bearer tok")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!s.shared.is_paused(), "refused requests change nothing");
    // GET is not a way around it.
    assert_eq!(s.get("/pause").await.0, StatusCode::METHOD_NOT_ALLOWED);

    let r = s.post("/pause", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"paused": true}));
    // The loops see it through their receiver.
    tokio::time::timeout(Duration::from_secs(5), flag.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*flag.borrow_and_update());

    let r = s
        .post("/resume", Some("Bearer wrong-token-of-some-length"))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(s.shared.is_paused());
    let r = s.post("/resume", Some(&format!("bearer {TOKEN}"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!s.shared.is_paused());
    s.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_pause_is_disabled() {
    let s = start(None, Duration::from_secs(60)).await;
    let r = s.post("/pause", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("no api token is configured"));
    assert!(!s.shared.is_paused());
    s.stop().await;
}

/// A `MakeWriter` that collects every log line in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// current_thread (the default): the server task runs on this thread, so the thread-local
// subscriber set below sees its events too.
#[tokio::test]
async fn the_token_never_appears_in_status_metrics_or_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = start(Some(TOKEN), Duration::from_secs(60)).await;
    for auth in [
        None,
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {TOKEN}")),
    ] {
        s.post("/pause", auth.as_deref()).await;
    }
    s.post("/resume", Some(&format!("Bearer {TOKEN}"))).await;
    let (_, status) = s.get("/status").await;
    let (_, metrics) = s.get("/metrics").await;
    let (_, health) = s.get("/healthz").await;
    let debug = format!("{:?}", s.shared);
    s.stop().await;
    // An error about a bad token does not quote it either.
    let err = config(Duration::from_secs(1))
        .load_token(|_| Some("tok-8f3a".into()))
        .unwrap_err();
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();

    assert!(
        logs.contains("request refused"),
        "the refusals were logged: {logs}"
    );
    assert!(logs.contains("pause state changed"), "{logs}");
    for (what, text) in [
        ("status", &status),
        ("metrics", &metrics),
        ("healthz", &health),
        ("logs", &logs),
        ("debug", &debug),
        ("error", &err.to_string()),
    ] {
        assert!(
            !text.contains("tok-8f3a"),
            "the token leaked into {what}: {text}"
        );
    }
    // The token type itself cannot be printed.
    let token = BearerToken::new(TOKEN.into(), "test").unwrap();
    assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
}

#[tokio::test]
async fn shutdown_stops_the_server_and_frees_the_port() {
    let s = start(None, Duration::from_secs(60)).await;
    assert_eq!(s.get("/metrics").await.0, StatusCode::OK);
    let base = s.base.clone();
    let client = s.client.clone();
    s.stop().await;
    assert!(client.get(format!("{base}/metrics")).send().await.is_err());
}

#[test]
fn the_decision_log_is_one_json_line_per_decision_with_cluster_and_loop() {
    let dir = tempfile::tempdir().unwrap();
    let log = DecisionLog::open(dir.path()).unwrap();
    let d = grow_decision();
    let hold = Decision::hold(Timestamp::from_secs(5), Knob::Replicas, 3.0);
    log.append("pg", Loop::Scaler, &d).unwrap();
    log.append("pg", Loop::Scaler, &hold).unwrap();
    drop(log);
    // Reopening appends, never truncates.
    let log = DecisionLog::open(dir.path()).unwrap();
    log.append("pg-b", Loop::Repairer, &hold).unwrap();

    let text = std::fs::read_to_string(dir.path().join(DecisionLog::FILE_NAME)).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["cluster"], "pg");
    assert_eq!(lines[0]["loop"], "scaler");
    assert_eq!(lines[2]["cluster"], "pg-b");
    assert_eq!(lines[2]["loop"], "repairer");
    // The rest of each line is the decision itself.
    let back: Decision = serde_json::from_value(lines[0].clone()).unwrap();
    assert_eq!(back, d);
    let back: Decision = serde_json::from_value(lines[1].clone()).unwrap();
    assert_eq!(back, hold);
}
