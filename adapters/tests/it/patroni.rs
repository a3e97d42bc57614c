//! The Patroni client against wiremock serving the real recorded bodies of Patroni 3.0.2 and
//! 4.1.5 (tests/data/fixtures), and every error path: timeouts, 5xx, 412/503, malformed,
//! truncated and oversized bodies, auth failures.

use std::time::Duration;
use steward_model::ports::ErrorKind;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use steward_adapters::patroni::{
    PatroniApi, PatroniClient, PatroniConfig, PatroniError, PatroniSettings, RestartConditions,
    Switchover, WAITING_ACTION_TIMEOUT,
};
use steward_model::observation::PatroniRole;
use steward_model::Timestamp;
use wiremock::matchers::{basic_auth, body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn fixture(rel: &str) -> Vec<u8> {
    let p = format!(
        "{}/../tests/data/fixtures/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn settings(urls: Vec<String>, extra: serde_json::Value) -> PatroniSettings {
    let mut raw =
        json!({ "urls": urls, "retry_delay": "1ms", "timeout": "2s", "connect_timeout": "500ms" });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        raw[k] = v;
    }
    let cfg: PatroniConfig = serde_json::from_value(raw).unwrap();
    cfg.validate_with_env(&|n| (n == "PATRONI_PW").then(|| "s3cret-pw".to_string()))
        .unwrap()
}

fn client(server: &MockServer, extra: serde_json::Value) -> PatroniClient {
    PatroniClient::new(
        &settings(vec![server.uri()], extra),
        StdRng::seed_from_u64(7),
    )
    .unwrap()
}

fn json_body(status: u16, rel: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(fixture(rel), "application/json")
}

async fn serve(server: &MockServer, verb: &str, p: &str, t: ResponseTemplate) {
    Mock::given(method(verb))
        .and(path(p))
        .respond_with(t)
        .mount(server)
        .await;
}

#[tokio::test]
async fn cluster_of_both_versions_normalizes_roles_and_states() {
    for (version, replica_state) in [("patroni-3.0.2", "running"), ("patroni-4.1.5", "streaming")] {
        let server = MockServer::start().await;
        serve(
            &server,
            "GET",
            "/cluster",
            json_body(200, &format!("{version}/cluster.leader.http200.json")),
        )
        .await;
        let view = client(&server, json!({})).cluster().await.unwrap();
        let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["pg1", "pg2", "pg3"], "{version}");
        let leader = view.leader().unwrap();
        assert_eq!(leader.name, "pg1");
        assert_eq!(leader.api_base().as_deref(), Some("http://127.0.0.11:8008"));
        assert_eq!(leader.address().as_deref(), Some("127.0.0.11:5432"));
        let pg2 = view.member("pg2").unwrap();
        assert_eq!(pg2.role, PatroniRole::Replica);
        assert_eq!(pg2.state, replica_state, "{version}");
        assert_eq!(pg2.lag_bytes, Some(0));
        assert_eq!(pg2.timeline, Some(1));
    }
}

#[tokio::test]
async fn leader_status_says_who_streams_in_both_versions() {
    for (version, name) in [("patroni-3.0.2", None), ("patroni-4.1.5", Some("pg1"))] {
        let server = MockServer::start().await;
        serve(
            &server,
            "GET",
            "/patroni",
            json_body(200, &format!("{version}/patroni.leader.http200.json")),
        )
        .await;
        let st = client(&server, json!({}))
            .member_status(&server.uri())
            .await
            .unwrap();
        assert_eq!(
            st.role,
            PatroniRole::Leader,
            "{version}: master and primary are both the leader"
        );
        assert_eq!(st.name.as_deref(), name);
        assert_eq!(st.wal.location, Some(67108960));
        let streaming = st.streaming_members(["pg2", "pg3"]);
        assert_eq!(streaming.into_iter().collect::<Vec<_>>(), ["pg2", "pg3"]);
        // pg3 is not a name we asked about: a walsender for an unknown application is ignored.
        assert_eq!(st.streaming_members(["pg2"]).len(), 1);
        // One member asked of at a time: the same answers.
        assert!(st.streams_to("pg2") && st.streams_to("pg3"), "{version}");
        assert!(!st.streams_to("pg4") && !st.streams_to("pg1"), "{version}");
    }
}

#[tokio::test]
async fn a_basebackup_stream_is_not_a_streaming_replica() {
    let server = MockServer::start().await;
    let mut body: serde_json::Value =
        serde_json::from_slice(&fixture("patroni-4.1.5/patroni.leader.http200.json")).unwrap();
    // While pg4 is being cloned, pg_basebackup's walsender says `streaming` too.
    body["replication"] = json!([
        {"application_name": "pg2", "client_addr": "127.0.0.1", "state": "streaming", "sync_state": "async", "usename": "replicator"},
        {"application_name": "pg_basebackup", "client_addr": "127.0.0.1", "state": "streaming", "sync_state": "async", "usename": "replicator"},
        {"application_name": "pg3", "client_addr": "127.0.0.1", "state": "catchup", "sync_state": "async", "usename": "replicator"}
    ]);
    serve(
        &server,
        "GET",
        "/patroni",
        ResponseTemplate::new(200).set_body_json(body),
    )
    .await;
    let st = client(&server, json!({}))
        .member_status(&server.uri())
        .await
        .unwrap();
    let streaming = st.streaming_members(["pg2", "pg3", "pg4"]);
    assert_eq!(streaming.into_iter().collect::<Vec<_>>(), ["pg2"]);
    let one_by_one: Vec<&str> = ["pg2", "pg3", "pg4"]
        .into_iter()
        .filter(|m| st.streams_to(m))
        .collect();
    assert_eq!(one_by_one, ["pg2"]);
}

#[tokio::test]
async fn replica_status_of_4x_has_replication_state() {
    let server = MockServer::start().await;
    serve(
        &server,
        "GET",
        "/patroni",
        json_body(200, "patroni-4.1.5/patroni.replica.http200.json"),
    )
    .await;
    let st = client(&server, json!({}))
        .member_status(&server.uri())
        .await
        .unwrap();
    assert_eq!(st.role, PatroniRole::Replica);
    assert_eq!(st.replication_state.as_deref(), Some("streaming"));
    assert_eq!(st.wal.replayed, Some(67108960));
    assert!(st.replication.is_empty());
}

#[tokio::test]
async fn health_503_is_an_answer_not_an_error_and_liveness_200_is_ok() {
    let server = MockServer::start().await;
    serve(
        &server,
        "GET",
        "/health",
        json_body(503, "patroni-4.1.5/primary.replica.http503.json"),
    )
    .await;
    serve(&server, "GET", "/liveness", ResponseTemplate::new(200)).await;
    let c = client(&server, json!({}));
    let h = c.health(&server.uri()).await.unwrap();
    assert!(!h.ok);
    assert_eq!(h.status, 503);
    assert!(c.liveness(&server.uri()).await.unwrap().ok);
}

#[tokio::test]
async fn config_and_history_of_3x_parse() {
    let server = MockServer::start().await;
    serve(
        &server,
        "GET",
        "/config",
        json_body(200, "patroni-3.0.2/config.leader.http200.json"),
    )
    .await;
    serve(
        &server,
        "GET",
        "/history",
        json_body(200, "patroni-3.0.2/history.leader.http200.json"),
    )
    .await;
    let c = client(&server, json!({}));
    let cfg = c.config().await.unwrap();
    assert_eq!(cfg["postgresql"]["parameters"]["max_connections"], 100);
    assert_eq!(cfg["ttl"], 30);
    assert!(c.history().await.unwrap().is_empty());
}

#[tokio::test]
async fn metrics_text_of_both_versions_parses() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/metrics"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture("patroni-4.1.5/metrics.leader.prom"), "text/plain"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/metrics"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture("patroni-3.0.2/metrics.replica.prom"), "text/plain"),
        )
        .mount(&server)
        .await;
    let c = client(&server, json!({}));
    let now = Timestamp::from_secs(1_795_708_800);
    let v4 = c.metrics(&server.uri(), now).await.unwrap();
    let get = |samples: &[steward_adapters::patroni::MetricSample], name: &str| {
        samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.value, s.labels.get("name").cloned()))
    };
    assert_eq!(get(&v4, "patroni_primary"), Some((1.0, Some("pg1".into()))));
    assert_eq!(
        get(&v4, "patroni_xlog_location"),
        Some((67108960.0, Some("pg1".into())))
    );
    assert_eq!(
        get(&v4, "patroni_postgres_state"),
        Some((5.0, Some("pg1".into())))
    );
    let v3 = c.metrics(&server.uri(), now).await.unwrap();
    // 3.x has no `name` label and still exports `patroni_master`.
    assert_eq!(get(&v3, "patroni_master"), Some((0.0, None)));
    assert_eq!(
        get(&v3, "patroni_xlog_replayed_location"),
        Some((67108960.0, None))
    );
    assert_eq!(get(&v3, "patroni_replica"), Some((1.0, None)));
}

#[tokio::test]
async fn a_timeout_is_transient_and_gets_are_retried_a_bounded_number_of_times() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/cluster"))
        .respond_with(
            json_body(200, "patroni-4.1.5/cluster.leader.http200.json")
                .set_delay(Duration::from_secs(3)),
        )
        .expect(3)
        .mount(&server)
        .await;
    let c = client(&server, json!({ "timeout": "150ms", "retries": 2 }));
    let err = c.cluster().await.unwrap_err();
    assert_eq!(err.class(), ErrorKind::Transient);
    assert!(matches!(err, PatroniError::Timeout { .. }), "{err:?}");
    server.verify().await;
}

#[tokio::test]
async fn a_5xx_then_success_is_retried_into_success() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/cluster"))
        .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    serve(
        &server,
        "GET",
        "/cluster",
        json_body(200, "patroni-4.1.5/cluster.leader.http200.json"),
    )
    .await;
    let view = client(&server, json!({ "retries": 2 }))
        .cluster()
        .await
        .unwrap();
    assert!(!view.members.is_empty());
}

/// A member's `/patroni` is asked once per look whatever `retries` says: every observation pass
/// looks again, and a dead member must not cost each pass its retries.
#[tokio::test]
async fn a_members_status_is_asked_once_per_look() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/patroni"))
        .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    serve(
        &server,
        "GET",
        "/patroni",
        json_body(200, "patroni-4.1.5/patroni.leader.http200.json"),
    )
    .await;
    let c = client(&server, json!({ "retries": 3 }));
    let err = c.member_status(&server.uri()).await.unwrap_err();
    assert_eq!(err.class(), ErrorKind::Transient);
    // The next look is the retry.
    let st = c.member_status(&server.uri()).await.unwrap();
    assert_eq!(st.role, PatroniRole::Leader);
    server.verify().await;
}

#[tokio::test]
async fn a_persistent_500_ends_as_transient_with_patronis_message() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/patroni"))
        .respond_with(ResponseTemplate::new(500).set_body_string("Internal Server Error"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server, json!({ "retries": 1 }))
        .member_status(&server.uri())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorKind::Transient);
    assert!(
        err.to_string()
            .contains("answered 500: Internal Server Error"),
        "{err}"
    );
}

#[tokio::test]
async fn switchover_sends_leader_candidate_and_time_and_412_is_a_conflict_not_retried() {
    let server = MockServer::start().await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-26T17:00:00Z")
        .unwrap()
        .to_utc();
    Mock::given(method("POST"))
        .and(path("/switchover"))
        .and(body_json(json!({"leader": "pg1", "candidate": "pg2", "scheduled_at": "2026-11-26T17:00:00+00:00"})))
        .respond_with(ResponseTemplate::new(202).set_body_string("Switchover scheduled"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/switchover"))
        .and(body_json(json!({"leader": "pg9"})))
        .respond_with(ResponseTemplate::new(412).set_body_string("leader name does not match"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, json!({ "retries": 3 }));
    let ok = c
        .switchover(&Switchover {
            leader: "pg1".into(),
            candidate: Some("pg2".into()),
            scheduled_at: Some(at),
        })
        .await
        .unwrap();
    assert_eq!(
        (ok.status, ok.message.as_str()),
        (202, "Switchover scheduled")
    );
    let err = c
        .switchover(&Switchover {
            leader: "pg9".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorKind::Conflict);
    assert!(
        err.to_string().contains("leader name does not match"),
        "{err}"
    );
    server.verify().await;
}

/// Patroni answers `POST /switchover` and `/restart` only once they are done (a switchover polls
/// the DCS up to 20 s): past the client's usual timeout the action is still under way, so those
/// wait longer (`WAITING_ACTION_TIMEOUT`); a GET with the same delay still times out. The lab's
/// rolling restart lost a switchover's answer to the 5 s timeout and failed a plan that had worked.
#[tokio::test]
async fn a_switchover_or_restart_answered_after_the_usual_timeout_is_waited_for() {
    let server = MockServer::start().await;
    let slow = Duration::from_millis(600);
    for p in ["/switchover", "/restart"] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string("done")
                    .set_delay(slow),
            )
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/patroni"))
        .respond_with(json_body(200, "patroni-4.1.5/patroni.leader.http200.json").set_delay(slow))
        .mount(&server)
        .await;
    let c = client(&server, json!({ "timeout": "200ms", "retries": 1 }));
    assert!(WAITING_ACTION_TIMEOUT > slow * 10);
    let ok = c
        .switchover(&Switchover {
            leader: "pg1".into(),
            candidate: Some("pg2".into()),
            scheduled_at: None,
        })
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let ok = c
        .restart(&server.uri(), &RestartConditions::default())
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let err = c.member_status(&server.uri()).await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    server.verify().await;
}

#[tokio::test]
async fn a_503_to_an_action_is_transient_and_sent_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/failover"))
        .and(body_json(json!({"candidate": "pg2"})))
        .respond_with(ResponseTemplate::new(503).set_body_string("Failover failed"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server, json!({ "retries": 3 }))
        .failover("pg2")
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorKind::Transient);
    server.verify().await;
}

#[tokio::test]
async fn restart_reinitialize_reload_and_patch_config_send_what_patroni_expects() {
    let server = MockServer::start().await;
    let expect = |verb: &str, p: &str, body: serde_json::Value, status: u16, text: &str| {
        Mock::given(method(verb))
            .and(path(p.to_string()))
            .and(body_json(body))
            .respond_with(ResponseTemplate::new(status).set_body_string(text.to_string()))
            .expect(1)
    };
    expect(
        "POST",
        "/restart",
        json!({"restart_pending": true, "role": "replica", "timeout": 30}),
        200,
        "restarted successfully",
    )
    .mount(&server)
    .await;
    expect(
        "POST",
        "/reinitialize",
        json!({"force": true}),
        200,
        "reinitialize started",
    )
    .mount(&server)
    .await;
    expect(
        "PATCH",
        "/config",
        json!({"postgresql": {"parameters": {"shared_buffers": "256MB"}}}),
        200,
        r#"{"postgresql": {"parameters": {"shared_buffers": "256MB"}}, "ttl": 30}"#,
    )
    .mount(&server)
    .await;
    Mock::given(method("POST"))
        .and(path("/reload"))
        .respond_with(ResponseTemplate::new(202).set_body_string("reload scheduled"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, json!({}));
    let cond = RestartConditions {
        restart_pending: true,
        role: Some(PatroniRole::Replica),
        timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    assert_eq!(c.restart(&server.uri(), &cond).await.unwrap().status, 200);
    assert_eq!(
        c.reinitialize(&server.uri(), true).await.unwrap().message,
        "reinitialize started"
    );
    assert_eq!(c.reload(&server.uri()).await.unwrap().status, 202);
    let new = c
        .patch_config(&json!({"postgresql": {"parameters": {"shared_buffers": "256MB"}}}))
        .await
        .unwrap();
    assert_eq!(new["ttl"], 30);
    server.verify().await;
}

#[tokio::test]
async fn malformed_json_is_permanent_and_truncated_json_is_transient() {
    let server = MockServer::start().await;
    serve(
        &server,
        "GET",
        "/cluster",
        ResponseTemplate::new(200).set_body_raw("<html>proxy error</html>", "text/html"),
    )
    .await;
    let full = fixture("patroni-4.1.5/patroni.leader.http200.json");
    let half = full[..full.len() / 2].to_vec();
    serve(
        &server,
        "GET",
        "/patroni",
        ResponseTemplate::new(200).set_body_raw(half, "application/json"),
    )
    .await;
    let c = client(&server, json!({ "retries": 0 }));
    let err = c.cluster().await.unwrap_err();
    assert!(matches!(err, PatroniError::Malformed { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorKind::Permanent);
    let err = c.member_status(&server.uri()).await.unwrap_err();
    assert!(matches!(err, PatroniError::Malformed { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorKind::Transient);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let server = MockServer::start().await;
    let big = format!("{{\"members\": [], \"pad\": \"{}\"}}", "x".repeat(8 * 1024));
    serve(
        &server,
        "GET",
        "/cluster",
        ResponseTemplate::new(200).set_body_raw(big, "application/json"),
    )
    .await;
    let err = client(&server, json!({ "max_body_bytes": 4096 }))
        .cluster()
        .await
        .unwrap_err();
    assert!(
        matches!(err, PatroniError::TooLarge { limit: 4096, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorKind::Permanent);
}

#[tokio::test]
async fn basic_auth_is_sent_and_a_401_is_an_auth_error_that_never_shows_the_password() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/reload"))
        .and(basic_auth("steward", "s3cret-pw"))
        .respond_with(ResponseTemplate::new(200).set_body_string("reloaded"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/reload"))
        .respond_with(ResponseTemplate::new(401).set_body_string("no auth header received"))
        .mount(&server)
        .await;
    let with = client(
        &server,
        json!({ "username": "steward", "password_env": "PATRONI_PW" }),
    );
    assert_eq!(
        with.reload(&server.uri()).await.unwrap().message,
        "reloaded"
    );
    assert!(!format!("{with:?}").contains("s3cret-pw"));

    let without = client(&server, json!({}));
    let err = without.reload(&server.uri()).await.unwrap_err();
    assert_eq!(err.class(), ErrorKind::Auth);
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
}

#[tokio::test]
async fn cluster_is_read_from_the_next_url_when_the_first_refuses() {
    // A port that was just bound and released: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let server = MockServer::start().await;
    serve(
        &server,
        "GET",
        "/cluster",
        json_body(200, "patroni-3.0.2/cluster.replica.http200.json"),
    )
    .await;
    let s = settings(vec![dead.clone(), server.uri()], json!({ "retries": 0 }));
    let c = PatroniClient::new(&s, StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(c.cluster().await.unwrap().members.len(), 3);

    let only_dead = PatroniClient::new(
        &settings(vec![dead], json!({ "retries": 0 })),
        StdRng::seed_from_u64(1),
    )
    .unwrap();
    let err = only_dead.cluster().await.unwrap_err();
    assert_eq!(err.class(), ErrorKind::Transient);
}

/// Issue 15, found on a Docker network: a dead member's URL there does not refuse, it times
/// out (with retries). Once another seed answered, cluster-wide requests start from that one,
/// so the dead seed costs its timeout once, not on every tick; back in order if that one fails.
#[tokio::test]
async fn cluster_requests_start_from_the_seed_that_answered_last() {
    let silent = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/cluster"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&silent)
        .await;
    let good = MockServer::start().await;
    serve(
        &good,
        "GET",
        "/cluster",
        json_body(200, "patroni-3.0.2/cluster.replica.http200.json"),
    )
    .await;
    let s = settings(vec![silent.uri(), good.uri()], json!({ "retries": 0 }));
    let c = PatroniClient::new(&s, StdRng::seed_from_u64(1)).unwrap();
    for _ in 0..3 {
        assert_eq!(c.cluster().await.unwrap().members.len(), 3);
    }
    assert_eq!(
        asked(&silent).await,
        1,
        "the silent seed is asked once, not every time"
    );
    assert_eq!(asked(&good).await, 3);
    // The good one goes silent too: back to the others, in order.
    good.reset().await;
    Mock::given(method("GET"))
        .and(path("/cluster"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&good)
        .await;
    assert!(c.cluster().await.is_err());
    assert_eq!(asked(&silent).await, 2);
}

#[test]
fn a_bad_tls_file_is_a_config_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let raw: PatroniConfig = serde_json::from_value(json!({
        "urls": ["https://127.0.0.11:8008"],
        "tls": { "ca_file": bad, "cert_file": dir.path().join("client.pem") }
    }))
    .unwrap();
    let err = raw.validate_with_env(&|_| None).unwrap_err();
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["tls.ca_file", "tls.key_file"], "{err}");
}

mod tls {
    //! Mutual TLS: a blocking rustls server (ring provider) on 127.0.0.1 that requires a
    //! client certificate signed by the test CA (tests/data/fixtures/tls).

    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;

    fn tls_path(name: &str) -> String {
        format!(
            "{}/../tests/data/fixtures/tls/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    /// Serves `/cluster` over TLS to clients with a certificate from the test CA.
    fn start_server() -> String {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(tls_path("ca.pem")).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let certs = vec![CertificateDer::from_pem_file(tls_path("server.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(tls_path("server.key")).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                // A refused handshake surfaces here as a read error: drop the connection.
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.is_empty() {
                    continue;
                }
                let body = fixture("patroni-4.1.5/cluster.leader.http200.json");
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls
                    .write_all(head.as_bytes())
                    .and_then(|_| tls.write_all(&body));
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        url
    }

    fn tls_client(url: &str, tls: serde_json::Value) -> PatroniClient {
        let s = settings(vec![url.to_string()], json!({ "retries": 0, "tls": tls }));
        PatroniClient::new(&s, StdRng::seed_from_u64(3)).unwrap()
    }

    #[tokio::test]
    async fn the_ca_file_and_client_certificate_are_used() {
        let url = start_server();
        let full = json!({
            "ca_file": tls_path("ca.pem"), "cert_file": tls_path("client.pem"), "key_file": tls_path("client.key")
        });
        let view = tls_client(&url, full).cluster().await.unwrap();
        assert_eq!(view.members.len(), 3);

        // Without a client certificate the server refuses the handshake.
        let no_cert = tls_client(&url, json!({ "ca_file": tls_path("ca.pem") }));
        assert!(no_cert.cluster().await.is_err());
        // Without the CA the server's certificate is not trusted.
        let no_ca = tls_client(
            &url,
            json!({ "cert_file": tls_path("client.pem"), "key_file": tls_path("client.key") }),
        );
        assert!(no_ca.cluster().await.is_err());
    }
}

/// How many requests `server` received.
async fn asked(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}
