//! The Prometheus source against wiremock serving real Prometheus 2.42 answers recorded in the
//! lab (tests/data/fixtures/prometheus) and hand-written ones in the same format for what the
//! lab does not show (tests/data/fixtures/prometheus-handwritten): one query per metric for all
//! members, NaN/Inf/empty as missing (never zero), old samples as stale, classified errors.

use std::time::Duration;

use serde_json::json;
use steward_adapters::prometheus::{
    Metric, MetricsError, MetricsSource, PrometheusClient, PrometheusConfig, PrometheusError,
    PrometheusSettings, Reading,
};
use steward_model::ports::ErrorKind;
use steward_model::Timestamp;
use wiremock::matchers::{basic_auth, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The time the fixtures were "taken": 2026-11-26T16:00:00Z.
const NOW: Timestamp = Timestamp::from_secs(1_795_708_800);

fn fixture(name: &str) -> Vec<u8> {
    let dir = if name.starts_with("real/") {
        "prometheus"
    } else {
        "prometheus-handwritten"
    };
    let name = name.trim_start_matches("real/");
    let p = format!(
        "{}/../tests/data/fixtures/{dir}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn answer(name: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(fixture(name), "application/json")
}

fn settings(server: &MockServer, extra: serde_json::Value) -> PrometheusSettings {
    let mut raw = json!({ "url": server.uri(), "timeout": "2s" });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        raw[k] = v;
    }
    let cfg: PrometheusConfig = serde_json::from_value(raw).unwrap();
    cfg.validate_with_env(&|n| match n {
        "TOKEN" => Some("tok-123".into()),
        "PROM_PW" => Some("prom-pw".into()),
        _ => None,
    })
    .unwrap()
}

fn client(server: &MockServer, extra: serde_json::Value) -> PrometheusClient {
    PrometheusClient::new(&settings(server, extra)).unwrap()
}

fn default_query(m: Metric) -> String {
    steward_adapters::prometheus::default_query(m)
        .unwrap()
        .query
}

#[tokio::test]
async fn one_instant_query_answers_for_every_member_and_nan_is_missing_not_zero() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .and(query_param("query", default_query(Metric::CpuUsed)))
        .and(query_param("time", "1795708800"))
        .respond_with(answer("query.cpu_used.json"))
        .expect(1)
        .mount(&server)
        .await;
    let r = client(&server, json!({}))
        .instant(Metric::CpuUsed, NOW)
        .await
        .unwrap();
    assert_eq!(r.label, "member");
    let keys: Vec<&str> = r.values.keys().map(String::as_str).collect();
    // The series without a `member` label is skipped, not filed under "".
    assert_eq!(keys, ["pg1", "pg2", "pg3"]);
    assert_eq!(r.values["pg1"].fresh().map(|f| f.value), Some(0.4213));
    assert_eq!(r.values["pg1"].fresh().map(|f| f.at), Some(NOW));
    // A real zero stays a zero...
    assert_eq!(r.values["pg2"].fresh().map(|f| f.value), Some(0.0));
    // ...and NaN is not one.
    assert_eq!(r.values["pg3"], Reading::Missing);
    server.verify().await;
}

#[tokio::test]
async fn a_recorded_answer_is_read_per_member() {
    let server = MockServer::start().await;
    let q = r#"sum by (member) (rate(process_cpu_seconds_total{member!=""}[1m]))"#;
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .and(query_param("query", q))
        .respond_with(answer("real/query.rate_process_cpu_by_member.http200.json"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(
        &server,
        json!({ "queries": { "cpu_used": { "query": q, "label": "member" } } }),
    );
    let at = Timestamp::from_secs(1_795_711_363);
    let r = c
        .instant(Metric::CpuUsed, at + Duration::from_secs(10))
        .await
        .unwrap();
    let keys: Vec<&str> = r.values.keys().map(String::as_str).collect();
    assert_eq!(keys, ["lab-pg-1", "lab-pg-2", "lab-pg-3"]);
    let f = r.values["lab-pg-2"].fresh().unwrap();
    assert_eq!((f.value, f.at), (0.0012727272727272728, at));
    server.verify().await;
}

#[tokio::test]
async fn an_empty_answer_is_missing_for_everyone() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .respond_with(answer("real/query.empty_result.http200.json"))
        .mount(&server)
        .await;
    let r = client(&server, json!({}))
        .instant(Metric::MemoryUsed, NOW)
        .await
        .unwrap();
    assert!(r.values.is_empty());
}

#[tokio::test]
async fn a_sample_older_than_max_age_is_stale() {
    let server = MockServer::start().await;
    // postgres_exporter's own `server` label as the member key (matched to addresses later).
    let q = "sum by (server) (pg_stat_activity_count)";
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .and(query_param("query", q))
        .respond_with(answer("query.connections.json"))
        .mount(&server)
        .await;
    let by_server = |max_age: &str| json!({ "max_age": max_age, "queries": { "connections": { "query": q, "label": "server" } } });
    let r = client(&server, by_server("5m"))
        .instant(Metric::Connections, NOW)
        .await
        .unwrap();
    assert_eq!(r.label, "server");
    assert_eq!(
        r.values["127.0.0.11:5432"].fresh().map(|f| f.value),
        Some(7.0)
    );
    // 600 s old against a 5 min limit.
    assert!(
        matches!(r.values["127.0.0.13:5432"], Reading::Stale(f) if f.value == 5.0),
        "{:?}",
        r.values
    );
    let lenient = client(&server, by_server("11m"))
        .instant(Metric::Connections, NOW)
        .await
        .unwrap();
    assert!(lenient.values["127.0.0.13:5432"].fresh().is_some());
}

#[tokio::test]
async fn instant_all_sends_exactly_one_query_per_configured_metric() {
    let server = MockServer::start().await;
    // Ten metrics have defaults (WAL has none); the override turns OOM kills off: nine queries.
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .respond_with(answer("query.cpu_used.json"))
        .expect(9)
        .mount(&server)
        .await;
    let c = client(
        &server,
        json!({ "queries": { "oom_kills": { "query": "", "label": "member" } } }),
    );
    assert_eq!(c.metrics().len(), 9);
    let (readings, errors) = c.instant_all(NOW).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(readings.len(), 9);
    assert!(!readings.contains_key(&Metric::OomKills));
    server.verify().await;
}

#[tokio::test]
async fn a_configured_query_and_label_replace_the_default() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .and(query_param("query", "my_lag_bytes"))
        .respond_with(answer("query.cpu_used.json"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(
        &server,
        json!({ "queries": { "lag_bytes": { "query": "my_lag_bytes", "label": "member" } } }),
    );
    let r = c.instant(Metric::LagBytes, NOW).await.unwrap();
    assert_eq!(r.values.len(), 3);
    let err = c.instant_query(Metric::WalBytes, NOW).await.unwrap_err();
    assert!(
        matches!(
            err,
            PrometheusError::NotConfigured {
                metric: "wal_bytes"
            }
        ),
        "{err:?}"
    );
    server.verify().await;
}

#[tokio::test]
async fn a_range_query_keeps_finite_points_per_member() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query_range"))
        .and(query_param("start", "1795708740"))
        .and(query_param("end", "1795708800"))
        .and(query_param("step", "30"))
        .respond_with(answer("query_range.cpu_used.json"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, json!({}));
    let start = NOW - Duration::from_secs(60);
    let series = c
        .range(Metric::CpuUsed, start, NOW, Duration::from_secs(30))
        .await
        .unwrap();
    let pg1: Vec<f64> = series["pg1"].iter().map(|f| f.value).collect();
    assert_eq!(pg1, [0.40, 0.41, 0.42]);
    let pg2: Vec<i64> = series["pg2"]
        .iter()
        .map(|f| f.at.as_millis() / 1000)
        .collect();
    assert_eq!(
        pg2,
        [1_795_708_740, 1_795_708_800],
        "the +Inf point is dropped"
    );
    server.verify().await;
}

#[tokio::test]
async fn errors_are_classified() {
    let server = MockServer::start().await;
    let q = |m: Metric| query_param("query", default_query(m));
    Mock::given(path("/api/v1/query"))
        .and(q(Metric::CpuUsed))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            fixture("real/query.bad_syntax.http400.json"),
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/query"))
        .and(q(Metric::MemoryUsed))
        .respond_with(ResponseTemplate::new(503).set_body_raw("Service Unavailable", "text/plain"))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/query"))
        .and(q(Metric::Connections))
        .respond_with(ResponseTemplate::new(401).set_body_raw("Unauthorized", "text/plain"))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/query"))
        .and(q(Metric::ReadRate))
        .respond_with(
            answer("real/query.empty_result.http200.json").set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/query"))
        .and(q(Metric::DiskUsed))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"status":"success","data":{"resultType":"vec"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/query"))
        .and(q(Metric::LagBytes))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"status":"success","data":{"resultType":"scalar","result":[1795708800,"1"]}}),
        ))
        .mount(&server)
        .await;
    let c = client(&server, json!({ "timeout": "300ms" }));
    // Through the port: the metrics port's error keeps Prometheus' classification.
    let class = |r: Result<_, MetricsError>| r.map(|_| ()).unwrap_err().class();
    assert_eq!(
        class(c.instant(Metric::CpuUsed, NOW).await),
        ErrorKind::Permanent
    );
    assert_eq!(
        class(c.instant(Metric::MemoryUsed, NOW).await),
        ErrorKind::Transient
    );
    assert_eq!(
        class(c.instant(Metric::Connections, NOW).await),
        ErrorKind::Auth
    );
    assert_eq!(
        class(c.instant(Metric::ReadRate, NOW).await),
        ErrorKind::Transient
    );
    assert_eq!(
        class(c.instant(Metric::DiskUsed, NOW).await),
        ErrorKind::Permanent
    );
    let scalar = c.instant_query(Metric::LagBytes, NOW).await.unwrap_err();
    assert!(
        matches!(scalar, PrometheusError::ResultType { got: "scalar", .. }),
        "{scalar:?}"
    );
}

#[tokio::test]
async fn bearer_and_basic_auth_are_sent_and_never_shown() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/query"))
        .and(header("authorization", "Bearer tok-123"))
        .respond_with(answer("real/query.empty_result.http200.json"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/query"))
        .and(basic_auth("steward", "prom-pw"))
        .respond_with(answer("real/query.empty_result.http200.json"))
        .expect(1)
        .mount(&server)
        .await;
    let bearer = client(&server, json!({ "bearer_token_env": "TOKEN" }));
    bearer.instant(Metric::CpuUsed, NOW).await.unwrap();
    let basic = client(
        &server,
        json!({ "username": "steward", "password_env": "PROM_PW" }),
    );
    basic.instant(Metric::CpuUsed, NOW).await.unwrap();
    let shown = format!(
        "{bearer:?} {basic:?} {:?}",
        settings(&server, json!({ "bearer_token_env": "TOKEN" }))
    );
    assert!(
        !shown.contains("tok-123") && !shown.contains("prom-pw"),
        "{shown}"
    );
    server.verify().await;
}

#[tokio::test]
async fn an_answer_over_the_limit_is_refused_and_errors_say_what_prometheus_said() {
    let server = MockServer::start().await;
    let big = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        vec![r#"{"metric":{"member":"pg1"},"value":[1795708800,"1"]}"#; 200].join(",")
    );
    Mock::given(path("/api/v1/query"))
        .and(query_param("query", default_query(Metric::CpuUsed)))
        .respond_with(ResponseTemplate::new(200).set_body_raw(big, "application/json"))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/query"))
        .and(query_param("query", default_query(Metric::MemoryUsed)))
        .respond_with(ResponseTemplate::new(422).set_body_json(
            json!({"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/query"))
        .and(query_param("query", default_query(Metric::Connections)))
        .respond_with(ResponseTemplate::new(503).set_body_json(
            json!({"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}),
        ))
        .mount(&server)
        .await;
    let c = client(&server, json!({ "max_body_bytes": 4096 }));
    let err = c.instant_query(Metric::CpuUsed, NOW).await.unwrap_err();
    assert!(
        matches!(err, PrometheusError::TooLarge { limit: 4096, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("4096 bytes")
            && text.contains("max_body_bytes")
            && text.contains(&server.uri()),
        "{text}"
    );
    assert_eq!(err.class(), ErrorKind::Permanent);
    // The same answer within the default limit is read.
    let whole = client(&server, json!({}));
    assert_eq!(
        whole
            .instant_query(Metric::CpuUsed, NOW)
            .await
            .unwrap()
            .values
            .len(),
        1
    );
    let err = c.instant_query(Metric::MemoryUsed, NOW).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("422") && text.contains("execution") && text.contains("many-to-many"),
        "{text}"
    );
    assert_eq!(err.class(), ErrorKind::Permanent);
    let err = c.instant_query(Metric::Connections, NOW).await.unwrap_err();
    assert_eq!(err.class(), ErrorKind::Transient, "{err}");
}

#[test]
fn max_body_bytes_and_durations_have_bounds() {
    let cfg: PrometheusConfig = serde_json::from_value(json!({
        "url": "http://127.0.0.1:9090", "max_body_bytes": 10, "timeout": "1h", "max_age": "30d"
    }))
    .unwrap();
    let text = cfg.validate_with_env(&|_| None).unwrap_err().to_string();
    assert!(
        text.contains("max_body_bytes: must be between 1024"),
        "{text}"
    );
    assert!(text.contains("timeout: at most 5m"), "{text}");
    assert!(text.contains("max_age: at most 1d"), "{text}");
}
