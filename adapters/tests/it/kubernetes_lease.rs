//! The election on a `coordination.k8s.io/v1` Lease (`platform::kubernetes::lease`) against a
//! fake API server holding one Lease with the API server's own rules for it: `POST` of an
//! existing Lease is 409 AlreadyExists, `PUT` naming a stale `resourceVersion` is 409 Conflict,
//! every write a new `resourceVersion`. The Lease starts from a recorded object
//! (tests/data/k8s/lease.json). Real time with short durations (real sockets: no paused time):
//! TTL 2 s, renewal every 300 ms, stop 600 ms before the TTL ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{json, Value};
use steward_adapters::lease::{FencingToken, LeaderState, Leadership, NotLeader};
use steward_adapters::platform::kubernetes::client::KubeApi;
use steward_adapters::platform::kubernetes::lease::{KubeLeadership, KubeLeaseSettings, WallClock};
use steward_model::Timestamp;
use tokio::time::{sleep, Instant};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/steward-test/leases";
const NAME: &str = "steward-orders";

fn data(name: &str) -> Value {
    let path = format!("{}/../tests/data/k8s/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Default)]
struct State {
    lease: Option<Value>,
    version: u64,
    /// `METHOD path` and body of every write, in order.
    writes: Vec<(String, Value)>,
    /// Answer every PUT with this status (an API server in trouble).
    failing: Option<u16>,
}

#[derive(Clone, Default)]
struct FakeLeases(Arc<Mutex<State>>);

impl FakeLeases {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// The Lease as another holder (or `kubectl`) writes it: a new version.
    fn write_as(&self, holder: Option<&str>, transitions: i64) {
        let mut s = self.state();
        s.version += 1;
        let version = s.version.to_string();
        let lease = s.lease.get_or_insert_with(|| data("lease.json"));
        lease["metadata"]["resourceVersion"] = json!(version);
        lease["spec"]["holderIdentity"] = json!(holder);
        lease["spec"]["leaseTransitions"] = json!(transitions);
    }

    fn holder(&self) -> Option<String> {
        self.state()
            .lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }

    fn puts(&self) -> Vec<Value> {
        self.state()
            .writes
            .iter()
            .filter(|(w, _)| w.starts_with("PUT"))
            .map(|(_, b)| b.clone())
            .collect()
    }
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
        "details": { "name": NAME, "group": "coordination.k8s.io", "kind": "leases" }
    }))
}

impl Respond for FakeLeases {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut s = self.state();
        let path = req.url.path().to_string();
        let method = req.method.as_str().to_string();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        if method != "GET" {
            s.writes.push((format!("{method} {path}"), body.clone()));
        }
        let one = format!("{LEASES}/{NAME}");
        match (method.as_str(), path.as_str()) {
            ("GET", p) if p == one => match &s.lease {
                Some(l) => ResponseTemplate::new(200).set_body_json(l.clone()),
                None => status(
                    404,
                    "NotFound",
                    &format!("leases.coordination.k8s.io \"{NAME}\" not found"),
                ),
            },
            ("POST", LEASES) => {
                if s.lease.is_some() {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("leases.coordination.k8s.io \"{NAME}\" already exists"),
                    );
                }
                s.version += 1;
                let mut lease = body;
                lease["metadata"]["resourceVersion"] = json!(s.version.to_string());
                lease["metadata"]["uid"] = json!("9d3c2b1a-5e4f-4a7b-8c6d-1f2e3d4c5b6a");
                s.lease = Some(lease.clone());
                ResponseTemplate::new(201).set_body_json(lease)
            }
            ("PUT", p) if p == one => {
                if let Some(code) = s.failing {
                    return status(code, "InternalError", "etcdserver: request timed out");
                }
                let current = s
                    .lease
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current != Some(body["metadata"]["resourceVersion"].clone()) {
                    return status(
                        409,
                        "Conflict",
                        &format!(
                        "Operation cannot be fulfilled on leases.coordination.k8s.io \"{NAME}\": \
                         the object has been modified; please apply your changes to the latest \
                         version and try again"),
                    );
                }
                s.version += 1;
                let mut lease = body;
                lease["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.lease = Some(lease.clone());
                ResponseTemplate::new(200).set_body_json(lease)
            }
            _ => status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        }
    }
}

async fn serve(fake: &FakeLeases) -> MockServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    server
}

fn settings(instance: &str) -> KubeLeaseSettings {
    KubeLeaseSettings {
        namespace: "steward-test".into(),
        name: NAME.into(),
        instance: instance.into(),
        ttl: Duration::from_secs(2),
        keepalive: Duration::from_millis(300),
        safety_margin: Duration::from_millis(600),
        request_timeout: Duration::from_secs(1),
    }
}

fn election(server: &MockServer, instance: &str) -> KubeLeadership {
    let client = kube::Client::try_from(kube::Config::new(server.uri().parse().unwrap())).unwrap();
    let api = KubeApi::from_client(client, "steward-test");
    let clock: WallClock = Arc::new(|| Timestamp::from_millis(1_795_708_800_000));
    KubeLeadership::start(&api, settings(instance), clock)
}

async fn campaign_within(e: &KubeLeadership, secs: u64) -> Option<FencingToken> {
    tokio::time::timeout(Duration::from_secs(secs), e.campaign())
        .await
        .ok()
        .map(|r| r.expect("campaign"))
}

/// Absent: created with this instance as holder (token 0, the API server's MicroTime format),
/// renewed under the version of each answer, and released (no holder) on resign.
#[tokio::test]
async fn an_absent_lease_is_created_renewed_under_its_version_and_released() {
    let fake = FakeLeases::default();
    let server = serve(&fake).await;
    let a = election(&server, "steward-a");
    let token = campaign_within(&a, 5).await.expect("elected");
    assert_eq!(token, FencingToken(0));
    assert_eq!(a.check(token), Ok(()));
    let created = fake.state().writes[0].clone();
    assert_eq!(created.0, format!("POST {LEASES}"));
    let lease: Lease = serde_json::from_value(created.1.clone()).expect("a Lease");
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("steward-a"));
    assert_eq!(
        (spec.lease_duration_seconds, spec.lease_transitions),
        (Some(2), Some(0))
    );
    assert_eq!(
        created.1["spec"]["renewTime"],
        json!("2026-11-26T16:00:00.000000Z")
    );

    sleep(Duration::from_millis(1000)).await;
    let puts = fake.puts();
    assert!(puts.len() >= 2, "renewed every 300 ms: {puts:?}");
    for (i, put) in puts.iter().enumerate() {
        // Each renewal names the version the previous write returned: 1 (the create), 2, ...
        assert_eq!(
            put["metadata"]["resourceVersion"],
            json!((i + 1).to_string())
        );
        assert_eq!(put["spec"]["holderIdentity"], json!("steward-a"));
        assert_eq!(put["spec"]["leaseTransitions"], json!(0));
    }
    assert_eq!(a.check(token), Ok(()), "renewed: still within the deadline");

    a.resign().await.unwrap();
    assert!(a.check(token).is_err());
    assert_eq!(
        *a.current().borrow(),
        LeaderState::Follower { leader: None }
    );
    let last = fake.puts().pop().unwrap();
    assert!(last["spec"]["holderIdentity"].is_null(), "released: {last}");
    assert_eq!(fake.holder(), None);
}

/// Held by another: not taken while its holder renews (its version moves), taken once it has
/// stood still for a whole leaseDurationSeconds on this instance's clock, with the transitions
/// count (the token) one higher, under the version read.
#[tokio::test]
async fn a_lease_is_taken_over_only_after_standing_still_for_its_duration() {
    let fake = FakeLeases::default();
    fake.write_as(Some("steward-7c9d8f6b5-x2k4q"), 2);
    let server = serve(&fake).await;
    let b = election(&server, "steward-b");
    let campaign = b.campaign();
    tokio::pin!(campaign);
    // The holder renews every 500 ms for 3 s: B follows and writes nothing.
    for _ in 0..6 {
        tokio::select! {
            r = &mut campaign => panic!("took a renewed lease: {r:?}"),
            _ = sleep(Duration::from_millis(500)) => fake.write_as(Some("steward-7c9d8f6b5-x2k4q"), 2),
        }
    }
    assert_eq!(
        *b.current().borrow(),
        LeaderState::Follower {
            leader: Some("steward-7c9d8f6b5-x2k4q".into())
        }
    );
    assert!(fake.state().writes.is_empty());
    // The holder stops renewing: taken 2 s (its duration) after B first saw the last version.
    let stopped = Instant::now();
    let token = tokio::time::timeout(Duration::from_secs(5), &mut campaign)
        .await
        .expect("taken over")
        .unwrap();
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "taken after {waited:?}"
    );
    assert_eq!(token, FencingToken(3));
    let take = fake.puts().remove(0);
    assert_eq!(take["metadata"]["resourceVersion"], json!("7"));
    assert_eq!(take["spec"]["holderIdentity"], json!("steward-b"));
    assert_eq!(take["spec"]["leaseTransitions"], json!(3));
}

/// Someone else writes the Lease under the holder (a `kubectl edit`, another contender): the
/// holder's next renewal is a 409 and it stops acting at once, then follows the new holder.
#[tokio::test]
async fn a_conflict_on_renewal_stops_acting_at_once() {
    let fake = FakeLeases::default();
    let server = serve(&fake).await;
    let a = election(&server, "steward-a");
    let token = campaign_within(&a, 5).await.expect("elected");
    fake.write_as(Some("intruder"), 5);
    let lost = Instant::now();
    let mut states = a.current();
    tokio::time::timeout(
        Duration::from_secs(2),
        states.wait_for(|s| s.token().is_none()),
    )
    .await
    .expect("lost within one renewal")
    .unwrap();
    assert!(
        lost.elapsed() < Duration::from_millis(700),
        "{:?}",
        lost.elapsed()
    );
    assert!(matches!(a.check(token), Err(NotLeader::NotHolder { .. })));
    tokio::time::timeout(
        Duration::from_secs(2),
        states.wait_for(|s| {
            *s == LeaderState::Follower {
                leader: Some("intruder".into()),
            }
        }),
    )
    .await
    .expect("follows the new holder")
    .unwrap();
}

/// The API server stops taking renewals: the holder stops acting at its deadline (the send
/// time of its last acknowledged renewal + TTL - margin), before the TTL could let another in.
#[tokio::test]
async fn a_holder_cut_off_stops_acting_before_its_lease_could_pass_on() {
    let fake = FakeLeases::default();
    let server = serve(&fake).await;
    let a = election(&server, "steward-a");
    let token = campaign_within(&a, 5).await.expect("elected");
    sleep(Duration::from_millis(400)).await;
    fake.state().failing = Some(500);
    let cut = Instant::now();
    // The last acknowledged renewal was sent at most 300 ms before the cut.
    let mut states = a.current();
    tokio::time::timeout(
        Duration::from_secs(3),
        states.wait_for(|s| s.token().is_none()),
    )
    .await
    .expect("stops acting")
    .unwrap();
    let after = cut.elapsed();
    assert!(
        after <= Duration::from_millis(1400 + 100),
        "stopped {after:?} after the cut: past TTL - margin (1.4 s) from the last renewal"
    );
    assert!(matches!(
        a.check(token),
        Err(NotLeader::NotHolder { .. } | NotLeader::DeadlinePassed { .. })
    ));
    // Back: the Lease still names it, but this election no longer holds it: waited out like
    // anyone's (two processes given one id must not both act), then taken in a new term.
    fake.state().failing = None;
    let back = Instant::now();
    let again = campaign_within(&a, 5).await.expect("elected again");
    assert!(
        back.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(again, FencingToken(token.0 + 1), "a new term, a new token");
}

/// Two contenders for an absent Lease: one create wins (the other gets AlreadyExists), and at
/// no moment do both pass `check`. The winner resigns; the other takes it at once (no holder),
/// with the next token.
#[tokio::test]
async fn two_contenders_never_both_hold_and_a_resignation_hands_over_at_once() {
    let fake = FakeLeases::default();
    let server = serve(&fake).await;
    let a = election(&server, "steward-a");
    let b = election(&server, "steward-b");
    let (ta, tb) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), a.campaign()),
        tokio::time::timeout(Duration::from_secs(2), b.campaign()),
    );
    let (winner, loser, token) = match (ta, tb) {
        (Ok(Ok(t)), Err(_)) => (&a, &b, t),
        (Err(_), Ok(Ok(t))) => (&b, &a, t),
        other => panic!("exactly one winner: {other:?}"),
    };
    assert_eq!(token, FencingToken(0));
    let posts = fake
        .state()
        .writes
        .iter()
        .filter(|(w, _)| w.starts_with("POST"))
        .count();
    assert_eq!(posts, 2, "both tried to create");
    for _ in 0..10 {
        let both = winner.check(token).is_ok() && loser.current().borrow().token().is_some();
        assert!(!both);
        sleep(Duration::from_millis(100)).await;
    }
    let handover = Instant::now();
    let next = loser.campaign();
    tokio::pin!(next);
    winner.resign().await.unwrap();
    let t = tokio::time::timeout(Duration::from_secs(2), &mut next)
        .await
        .expect("taken at once after the resignation")
        .unwrap();
    assert!(
        handover.elapsed() < Duration::from_millis(1000),
        "{:?}",
        handover.elapsed()
    );
    assert_eq!(t, FencingToken(1));
    assert!(winner.check(token).is_err());
}
