//! `steward run` with `[platform] kind = "kubernetes"`, as a user runs it, against a fake API
//! server: no API server can run on this machine (none is packaged for it, and the Go module
//! proxy is out of reach), so a wiremock server plays one on 127.0.0.1, serving objects shaped
//! as recorded from a real one (tests/data/k8s/), with the few behaviours Steward depends on:
//! a StatefulSet controller that keeps `replicas` pods (recreating a deleted one from the
//! template), the kubelet's in-place resize, PVC expansion, optimistic concurrency on
//! `resourceVersion`, and the metrics API. The same server plays each member's Patroni REST
//! API (the recorded Patroni 4.1.5 bodies of tests/data/fixtures, one member per running pod),
//! so the loops see one consistent world.
//!
//! The binary finds the server through a kubeconfig file (`[platform.kubernetes] kubeconfig`),
//! whose bearer token every request must carry. What is asserted is what reached the API
//! server: every write (verb, path, body), in order; reads interleave with them at the
//! observer's pace and are not part of the contract.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use serde_json::{json, Value};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const NS: &str = "db";
const CORE: &str = "/api/v1/namespaces/db/";
const STS: &str = "/apis/apps/v1/namespaces/db/statefulsets/pg";
const METRICS: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/db/pods";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/db/leases/";
const TOKEN: &str = "steward-test-token";

fn k8s(name: &str) -> Value {
    let path = format!("{}/tests/data/k8s/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn patroni_fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/data/fixtures/patroni-4.1.5/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A Kubernetes quantity in base units (the few forms the fake meets).
fn quantity(q: &str) -> f64 {
    let (n, f) = if let Some(n) = q.strip_suffix('m') {
        (n, 1e-3)
    } else if let Some(n) = q.strip_suffix('n') {
        (n, 1e-9)
    } else if let Some(n) = q.strip_suffix("Gi") {
        (n, 1024f64.powi(3))
    } else if let Some(n) = q.strip_suffix("Mi") {
        (n, 1024f64.powi(2))
    } else if let Some(n) = q.strip_suffix("Ki") {
        (n, 1024.0)
    } else {
        (q, 1.0)
    };
    n.parse::<f64>().unwrap_or(f64::NAN) * f
}

// --- the fake world --------------------------------------------------------------------------

struct World {
    sts: Value,
    pods: BTreeMap<String, Value>,
    pvcs: BTreeMap<String, Value>,
    leases: BTreeMap<String, Value>,
    serial: u64,
    /// Members whose PostgreSQL crashes at every start (their pods crash-loop, their Patroni
    /// is gone), by pod name.
    crashed: Vec<String>,
    /// The CPU every container uses, as a share of its limit.
    load: f64,
    /// The Patroni leader.
    leader: String,
    /// Requests without the kubeconfig's bearer token.
    unauthenticated: Vec<String>,
    /// The base URL, for Patroni's `api_url`s.
    base: String,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Respond for Fake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.world().handle(req)
    }
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn not_found(kind: &str, name: &str) -> ResponseTemplate {
    let mut body = k8s("status-404.json");
    body["message"] = json!(format!("{kind} \"{name}\" not found"));
    body["details"] = json!({ "name": name, "kind": kind });
    ResponseTemplate::new(404).set_body_json(body)
}

fn conflict(kind: &str, name: &str) -> ResponseTemplate {
    let mut body = k8s("status-409-conflict.json");
    body["message"] = json!(format!(
        "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; \
         please apply your changes to the latest version and try again"
    ));
    ResponseTemplate::new(409).set_body_json(body)
}

/// JSON merge patch, with `containers` merged by name as a strategic merge patch does.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if k == "containers" && v.is_array() && t.get(k).is_some_and(Value::is_array)
                {
                    let list = t.get_mut(k).and_then(Value::as_array_mut).unwrap();
                    for pc in v.as_array().unwrap() {
                        match list.iter_mut().find(|c| c["name"] == pc["name"]) {
                            Some(c) => merge(c, pc),
                            None => list.push(pc.clone()),
                        }
                    }
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl World {
    fn new() -> World {
        let mut sts = k8s("statefulset.json");
        sts["metadata"]["namespace"] = json!(NS);
        sts["spec"]["replicas"] = json!(3);
        let mut w = World {
            sts,
            pods: BTreeMap::new(),
            pvcs: BTreeMap::new(),
            leases: BTreeMap::new(),
            serial: 0,
            crashed: Vec::new(),
            load: 0.2,
            leader: "pg-0".into(),
            unauthenticated: Vec::new(),
            base: String::new(),
        };
        w.reconcile();
        w
    }

    fn replicas(&self) -> u64 {
        self.sts["spec"]["replicas"].as_u64().unwrap_or(0)
    }

    fn next(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn bump(obj: &mut Value) {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        obj["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
    }

    /// The StatefulSet controller: pods (and PVCs) for the ordinals below `replicas`, from the
    /// template; pods above it go.
    fn reconcile(&mut self) {
        let replicas = self.replicas();
        self.pods.retain(|name, pod| {
            let ordinal = name.strip_prefix("pg-").and_then(|o| o.parse::<u64>().ok());
            let controlled = pod["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet";
            !controlled || ordinal.is_some_and(|o| o < replicas)
        });
        for ordinal in 0..replicas {
            let name = format!("pg-{ordinal}");
            if !self.pods.contains_key(&name) {
                let pod = self.new_pod(ordinal);
                self.pods.insert(name.clone(), pod);
            }
            let claim = format!("data-{name}");
            if !self.pvcs.contains_key(&claim) {
                let mut pvc = k8s("pvc.json");
                pvc["metadata"]["name"] = json!(claim);
                pvc["metadata"]["namespace"] = json!(NS);
                pvc["spec"]["resources"] =
                    self.sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"].clone();
                pvc["status"]["capacity"] = pvc["spec"]["resources"]["requests"].clone();
                self.pvcs.insert(claim, pvc);
            }
        }
        self.sts["status"]["replicas"] = json!(replicas);
    }

    fn uid(&mut self) -> String {
        let serial = self.next();
        format!("00000000-0000-4000-8000-{serial:012}")
    }

    /// What the kubelet reports of a pod just started from `spec`.
    fn start(&mut self, pod: &mut Value, index: u64) {
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        pod["metadata"]["uid"] = json!(self.uid());
        pod["metadata"]["namespace"] = json!(NS);
        pod["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        pod["metadata"]["resourceVersion"] = json!("1");
        pod["spec"]["nodeName"] = json!(format!("node-{index}"));
        let mut status = k8s("pod.json")["status"].clone();
        status["podIP"] = json!(format!("10.244.{index}.10"));
        status["podIPs"] = json!([{ "ip": format!("10.244.{index}.10") }]);
        let resources = pod["spec"]["containers"][0]["resources"].clone();
        status["containerStatuses"][0]["resources"] = resources.clone();
        status["containerStatuses"][0]["allocatedResources"] = resources["requests"].clone();
        if self.crashed.contains(&name) {
            crash_status(&mut status);
        }
        pod["status"] = status;
    }

    fn new_pod(&mut self, ordinal: u64) -> Value {
        let name = format!("pg-{ordinal}");
        let template = self.sts["spec"]["template"].clone();
        let mut pod = k8s("pod.json");
        pod["metadata"]["name"] = json!(name);
        let mut labels = template["metadata"]["labels"].clone();
        labels["statefulset.kubernetes.io/pod-name"] = json!(name);
        labels["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
        pod["metadata"]["labels"] = labels;
        pod["spec"]["containers"] = template["spec"]["containers"].clone();
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] =
            json!(format!("data-{name}"));
        pod["spec"]["hostname"] = json!(name);
        self.start(&mut pod, ordinal);
        pod
    }

    /// The kubelet's answer to an in-place resize: done at once (the node has room).
    fn kubelet_resize(pod: &mut Value) {
        let asked = pod["spec"]["containers"][0]["resources"].clone();
        pod["status"]["containerStatuses"][0]["resources"] = asked.clone();
        pod["status"]["containerStatuses"][0]["allocatedResources"] = asked["requests"].clone();
    }

    /// Members whose Patroni answers: running pods that do not crash, by name.
    fn patroni_members(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(name, pod)| {
                pod["status"]["phase"] == "Running"
                    && !self.crashed.contains(name)
                    && pod["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn handle(&mut self, req: &Request) -> ResponseTemplate {
        let method = req.method.as_str().to_string();
        let path = req.url.path().to_string();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        if let Some(rest) = path.strip_prefix("/m/") {
            let (member, what) = rest.split_once('/').unwrap_or((rest, ""));
            return self.patroni(&method, member, what, &body);
        }
        let authorized = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if !authorized {
            self.unauthenticated.push(format!("{method} {path}"));
            return ResponseTemplate::new(401).set_body_json(json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401
            }));
        }
        let query = |key: &str| {
            req.url
                .query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let pods = format!("{CORE}pods");
        let pvcs = format!("{CORE}persistentvolumeclaims");
        let scale = format!("{STS}/scale");
        match (method.as_str(), path.as_str()) {
            ("GET", p) if p == pods => {
                let selector = query("labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .pods
                    .values()
                    .filter(|p| labels_match(p, &selector))
                    .cloned()
                    .collect();
                ok(json!({ "kind": "PodList", "apiVersion": "v1",
                    "metadata": { "resourceVersion": self.serial.to_string() }, "items": items }))
            }
            ("POST", p) if p == pods => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.pods.contains_key(&name) {
                    return ResponseTemplate::new(409).set_body_json(k8s("status-409.json"));
                }
                let mut pod = body.clone();
                let index = 10 + self.next();
                self.start(&mut pod, index);
                self.pods.insert(name, pod.clone());
                ResponseTemplate::new(201).set_body_json(pod)
            }
            ("GET", p) if p == METRICS => {
                let template = k8s("pod-metrics.json")["items"][0].clone();
                let items: Vec<Value> = self
                    .pods
                    .values()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .map(|p| {
                        let limit = p["spec"]["containers"][0]["resources"]["limits"]["cpu"]
                            .as_str()
                            .map(quantity)
                            .unwrap_or(1.0);
                        let mut m = template.clone();
                        m["metadata"]["name"] = p["metadata"]["name"].clone();
                        m["metadata"]["namespace"] = json!(NS);
                        m["timestamp"] = json!(now_rfc3339());
                        m["containers"][0]["usage"]["cpu"] =
                            json!(format!("{}n", (limit * self.load * 1e9) as u64));
                        m
                    })
                    .collect();
                ok(
                    json!({ "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {}, "items": items }),
                )
            }
            ("GET", STS) => ok(self.sts.clone()),
            ("PATCH", STS) => {
                let mut body = body.clone();
                let asked = body["metadata"]
                    .as_object_mut()
                    .and_then(|m| m.remove("resourceVersion"));
                if asked.is_some_and(|rv| rv != self.sts["metadata"]["resourceVersion"]) {
                    return conflict("statefulsets.apps", "pg");
                }
                merge(&mut self.sts, &body);
                World::bump(&mut self.sts);
                ok(self.sts.clone())
            }
            ("GET", p) if p == scale => ok(self.scale()),
            ("PATCH", p) if p == scale => {
                if let Some(r) = body["spec"]["replicas"].as_u64() {
                    self.sts["spec"]["replicas"] = json!(r);
                    World::bump(&mut self.sts);
                    self.reconcile();
                }
                ok(self.scale())
            }
            ("GET", p) if p == pvcs => {
                let selector = query("labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .pvcs
                    .values()
                    .filter(|c| labels_match(c, &selector))
                    .cloned()
                    .collect();
                ok(
                    json!({ "kind": "PersistentVolumeClaimList", "apiVersion": "v1",
                    "metadata": { "resourceVersion": "1" }, "items": items }),
                )
            }
            ("POST", p) if p == pvcs => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.pvcs.contains_key(&name) {
                    return ResponseTemplate::new(409).set_body_json(k8s("status-409.json"));
                }
                let mut pvc = body.clone();
                pvc["metadata"]["namespace"] = json!(NS);
                pvc["status"] = json!({ "phase": "Bound",
                    "capacity": body["spec"]["resources"]["requests"].clone() });
                self.pvcs.insert(name, pvc.clone());
                ResponseTemplate::new(201).set_body_json(pvc)
            }
            (m, p) if p.starts_with(&format!("{pvcs}/")) => {
                let name = p[pvcs.len() + 1..].to_string();
                let Some(pvc) = self.pvcs.get_mut(&name) else {
                    return not_found("persistentvolumeclaims", &name);
                };
                match m {
                    "GET" => ok(pvc.clone()),
                    "DELETE" => ok(self.pvcs.remove(&name).unwrap_or_default()),
                    "PATCH" => {
                        merge(pvc, &body);
                        pvc["status"]["capacity"] = pvc["spec"]["resources"]["requests"].clone();
                        ok(pvc.clone())
                    }
                    _ => ResponseTemplate::new(405),
                }
            }
            (m, p) if p.starts_with(&format!("{pods}/")) => {
                let rest = &p[pods.len() + 1..];
                let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
                let name = name.to_string();
                let Some(mut pod) = self.pods.get(&name).cloned() else {
                    return not_found("pods", &name);
                };
                match (m, sub) {
                    ("GET", "") => ok(pod),
                    ("PATCH", "") => {
                        merge(&mut pod, &body);
                        World::bump(&mut pod);
                        self.pods.insert(name, pod.clone());
                        ok(pod)
                    }
                    ("PATCH", "resize") => {
                        merge(&mut pod["spec"], &body["spec"]);
                        World::kubelet_resize(&mut pod);
                        World::bump(&mut pod);
                        self.pods.insert(name, pod.clone());
                        ok(pod)
                    }
                    ("DELETE", "") => {
                        self.pods.remove(&name);
                        self.reconcile();
                        ok(pod)
                    }
                    _ => ResponseTemplate::new(405),
                }
            }
            (m, p) if p.starts_with(LEASES) => self.lease(m, &p[LEASES.len()..], &body),
            ("POST", p) if p.strip_suffix('/').unwrap_or(p) == LEASES.trim_end_matches('/') => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.leases.contains_key(&name) {
                    let mut s = k8s("status-409.json");
                    s["message"] = json!(format!(
                        "leases.coordination.k8s.io \"{name}\" already exists"
                    ));
                    return ResponseTemplate::new(409).set_body_json(s);
                }
                let mut lease = body.clone();
                lease["metadata"]["resourceVersion"] = json!(self.next().to_string());
                lease["metadata"]["uid"] = json!(self.uid());
                self.leases.insert(name, lease.clone());
                ResponseTemplate::new(201).set_body_json(lease)
            }
            _ => not_found("resource", &path),
        }
    }

    /// A Lease by name: get, and update under optimistic concurrency.
    fn lease(&mut self, method: &str, name: &str, body: &Value) -> ResponseTemplate {
        match method {
            "GET" => match self.leases.get(name) {
                Some(l) => ok(l.clone()),
                None => not_found("leases.coordination.k8s.io", name),
            },
            "PUT" => {
                let Some(current) = self.leases.get(name).cloned() else {
                    return not_found("leases.coordination.k8s.io", name);
                };
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return conflict("leases.coordination.k8s.io", name);
                }
                let mut lease = body.clone();
                lease["metadata"]["resourceVersion"] = json!(self.next().to_string());
                self.leases.insert(name.to_string(), lease.clone());
                ok(lease)
            }
            _ => ResponseTemplate::new(405),
        }
    }

    fn scale(&self) -> Value {
        let mut s = k8s("scale.json");
        s["metadata"]["namespace"] = json!(NS);
        s["spec"]["replicas"] = json!(self.replicas());
        s["status"]["replicas"] = json!(self.replicas());
        s
    }

    /// Patroni's REST API of `member` (`/m/<member>/<what>`).
    fn patroni(
        &mut self,
        method: &str,
        member: &str,
        what: &str,
        body: &Value,
    ) -> ResponseTemplate {
        let alive = self.patroni_members();
        if !alive.iter().any(|m| m == member) {
            // Nobody listens: Patroni's port answers nothing a client can use.
            return ResponseTemplate::new(503).set_body_string("");
        }
        let dcs_seen = chrono::Utc::now().timestamp();
        let leader = self.leader.clone();
        let is_leader = member == leader;
        match (method, what) {
            ("GET", "cluster") => {
                let recorded = patroni_fixture("cluster.leader.http200.json");
                let members: Vec<Value> = alive
                    .iter()
                    .map(|name| {
                        let mut m = if *name == leader {
                            recorded["members"][0].clone()
                        } else {
                            recorded["members"][1].clone()
                        };
                        m["name"] = json!(name);
                        m["api_url"] = json!(format!("{}/m/{name}/patroni", self.base));
                        m["host"] = self.pods[name]["status"]["podIP"].clone();
                        m
                    })
                    .collect();
                ok(json!({ "members": members, "scope": "demo" }))
            }
            ("GET", "patroni") | ("GET", "health") => {
                let file = match (what, is_leader) {
                    ("patroni", true) => "patroni.leader.http200.json",
                    ("patroni", false) => "patroni.replica.http200.json",
                    (_, true) => "health.leader.http200.json",
                    (_, false) => "health.replica.http200.json",
                };
                let mut b = patroni_fixture(file);
                b["patroni"]["name"] = json!(member);
                b["patroni"]["scope"] = json!("demo");
                b["dcs_last_seen"] = json!(dcs_seen);
                if is_leader {
                    let replication: Vec<Value> = alive
                        .iter()
                        .filter(|n| **n != leader)
                        .map(|n| {
                            let mut r = b["replication"][0].clone();
                            r["application_name"] = json!(n);
                            r
                        })
                        .collect();
                    b["replication"] = json!(replication);
                }
                ok(b)
            }
            ("GET", "config") => ok(json!({ "ttl": 30, "loop_wait": 10, "retry_timeout": 10,
                "postgresql": { "parameters": {} } })),
            ("PATCH", "config") => {
                let mut config = json!({ "ttl": 30, "loop_wait": 10, "retry_timeout": 10,
                    "postgresql": { "parameters": {} } });
                merge(&mut config, body);
                ok(config)
            }
            ("GET", "liveness") | ("GET", "readiness") => ok(json!({})),
            _ => ResponseTemplate::new(404).set_body_string(""),
        }
    }
}

/// A container that crashes at every start.
fn crash_status(status: &mut Value) {
    let cs = &mut status["containerStatuses"][0];
    cs["ready"] = json!(false);
    cs["started"] = json!(false);
    cs["restartCount"] = json!(cs["restartCount"].as_u64().unwrap_or(0) + 3);
    cs["state"] = json!({ "waiting": { "reason": "CrashLoopBackOff",
        "message": "back-off 40s restarting failed container=postgres" } });
    cs["lastState"] = json!({ "terminated": { "exitCode": 1, "reason": "Error",
        "startedAt": now_rfc3339(), "finishedAt": now_rfc3339() } });
}

async fn serve(fake: &Fake) -> MockServer {
    let server = MockServer::start().await;
    fake.world().base = server.uri();
    Mock::given(any())
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    server
}

/// The kubeconfig a user has for the fake server: a token user, a context with a namespace.
fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         users:\n- name: steward\n  user:\n    token: {TOKEN}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: steward\n    namespace: {NS}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// steward.toml for the fake world, with `extra` appended.
fn config(dir: &Path, server: &str, kubeconfig: &Path, extra: &str) -> std::path::PathBuf {
    config_named(dir, "steward", server, kubeconfig, extra)
}

/// `<name>.toml` with its own state folder `<name>-state`.
fn config_named(
    dir: &Path,
    name: &str,
    server: &str,
    kubeconfig: &Path,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"[cluster]
name = "demo"
state_dir = "{state}"

[patroni]
urls = ["{server}/m/pg-0", "{server}/m/pg-1", "{server}/m/pg-2"]

[platform]
kind = "kubernetes"

[platform.kubernetes]
cluster = "demo"
namespace = "{NS}"
kubeconfig = "{kubeconfig}"
pod_wait_seconds = 20
resize_wait_seconds = 2
poll_millis = 100

[platform.kubernetes.database]
statefulset = "pg"
max_cpus = 4.0
max_memory_bytes = 8589934592

[repair]
grace_window = "3s"
silence_limit = "3s"
verify_timeout = "60s"
quiet_period = "2s"

[run]
tick = "1s"

[policy.database.cpu]
window = "4s"
up_window = "5s"
down_window = "1h"
cooldown = "10m"
min = 0.5
max = 2.0

[policy.replicas]
up_window = "1h"
down_window = "2h"
{extra}"#,
        state = dir.join(format!("{name}-state")).display(),
        kubeconfig = kubeconfig.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

struct Running {
    child: Child,
    dir: std::path::PathBuf,
    name: String,
}

impl Running {
    fn start(config: &Path, dir: &Path, name: &str) -> Running {
        Running::start_with(config, dir, name, &[])
    }

    fn start_with(config: &Path, dir: &Path, name: &str, env: &[(&str, &str)]) -> Running {
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["run", "--log", "info,steward=debug", "--config"])
            .arg(config)
            .env_remove("KUBECONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the steward binary runs");
        Running {
            child,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn output(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
        format!(
            "--- stdout\n{}\n--- stderr (tail)\n{}",
            read(&format!("{}.out", self.name)),
            read(&format!("{}.err", self.name))
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("steward run exited early ({status})\n{}", self.output());
        }
    }

    /// SIGKILL: a crash, nothing handed over.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    async fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("steward run did not stop on SIGTERM\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_until(what: &str, secs: u64, steward: &mut Running, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        steward.assert_alive();
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every write that reached the API server, in order: `VERB path` and the body (the operation
/// ids Steward generates replaced by `<op>`).
async fn writes(server: &MockServer, ops: &[String]) -> Vec<(String, Value)> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .filter(|r| r.method.as_str() != "GET" && !r.url.path().starts_with("/m/"))
        .map(|r| {
            let mut body = String::from_utf8_lossy(&r.body).into_owned();
            for op in ops {
                body = body.replace(op.as_str(), "<op>");
            }
            let body = serde_json::from_str(&body).unwrap_or(Value::Null);
            (format!("{} {}", r.method, r.url.path()), body)
        })
        .collect()
}

/// The operation ids on the pods and PVCs Steward made.
fn operation_ids(fake: &Fake) -> Vec<String> {
    let w = fake.world();
    let mut ops: Vec<String> = w
        .pods
        .values()
        .chain(w.pvcs.values())
        .filter_map(|o| o["metadata"]["labels"]["io.steward.operation"].as_str())
        .map(str::to_string)
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

fn cpu_limit(pod: &Value) -> Option<f64> {
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"]
        .as_str()
        .map(quantity)
}

/// The whole path on Kubernetes: the client from a kubeconfig; a crash-looping member (the
/// highest ordinal of the StatefulSet, a replica) is fenced (out of the Service, recorded on
/// the StatefulSet, its pod deleted at once), replaced by a pod of its own named after it
/// (with its PVC), and removed once its replacement streams (the StatefulSet scaled down);
/// then sustained CPU pressure grows every member in place through `pods/resize`, replicas
/// first, the template patched so that future pods match. Every write, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steward_run_on_kubernetes_replaces_a_killed_member_and_resizes_live() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake(Arc::new(Mutex::new(World::new())));
    let server = serve(&fake).await;
    let kubeconfig = kubeconfig(dir.path(), &server.uri());
    let config = config(dir.path(), &server.uri(), &kubeconfig, "");
    let mut steward = Running::start(&config, dir.path(), "steward");

    // Steady: the members are listed (and nothing is written).
    wait_until("a first listing", 20, &mut steward, || {
        fake.world().serial > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(writes(&server, &[]).await, Vec::new());

    // pg-2's PostgreSQL crashes at every start from now on.
    {
        let mut w = fake.world();
        w.crashed.push("pg-2".into());
        let pod = w.pods.get_mut("pg-2").unwrap();
        crash_status(&mut pod["status"]);
    }
    wait_until("pg-2 replaced and removed", 90, &mut steward, || {
        let w = fake.world();
        w.replicas() == 2
            && w.pods.contains_key("pg-2-r1")
            && w.sts["metadata"]["annotations"]["steward.io/fenced-members"].is_null()
    })
    .await;

    // CPU pressure: 95 % of every member's vCPU, held.
    fake.world().load = 0.95;
    // 1 -> 1.5 vCPU: the p95 (0.95) over `grow_at` sized up and rounded to the 0.5 step.
    wait_until("every member grown to 1.5 vCPU", 90, &mut steward, || {
        let w = fake.world();
        ["pg-0", "pg-1", "pg-2-r1"]
            .iter()
            .all(|m| w.pods.get(*m).and_then(cpu_limit) == Some(1.5))
    })
    .await;
    let status = steward.stop().await;
    let output = steward.output();
    assert!(status.success(), "{status}\n{output}");
    assert!(
        output.contains("kubernetes client configured"),
        "the start-up names where the client came from\n{output}"
    );
    assert_eq!(fake.world().unauthenticated, Vec::<String>::new());

    let ops = operation_ids(&fake);
    assert_eq!(ops.len(), 1, "one replacement operation: {ops:?}");
    let mut got = writes(&server, &ops).await;
    // The StatefulSet brought the fenced pg-2 back from its template (serving=true); the next
    // listing takes it out of the Service again, once, whenever that listing runs.
    let unserve = (
        format!("PATCH {CORE}pods/pg-2"),
        json!({ "metadata": { "labels": { "io.steward.serving": "false" } } }),
    );
    let relabels: Vec<usize> = got
        .iter()
        .enumerate()
        .filter(|(_, w)| **w == unserve)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        relabels.len(),
        2,
        "the fence, then the recreated pod: {got:#?}"
    );
    got.remove(relabels[1]);

    let template = k8s("statefulset.json")["spec"]["template"].clone();
    let size = |cpu: &str| {
        json!({ "limits": { "cpu": cpu, "memory": "1Gi" },
        "requests": { "cpu": cpu, "memory": "1Gi" } })
    };
    let mut labels = template["metadata"]["labels"].clone();
    labels["io.steward.member"] = json!("pg-2-r1");
    labels["io.steward.operation"] = json!("<op>");
    labels["io.steward.replaces"] = json!("pg-2");
    labels["io.steward.standalone"] = json!("true");
    let mut spec = template["spec"].clone();
    spec["containers"][0]["resources"] = size("1000m");
    spec["hostname"] = json!("pg-2-r1");
    spec["subdomain"] = json!("pg");
    spec["volumes"] =
        json!([{ "name": "data", "persistentVolumeClaim": { "claimName": "data-pg-2-r1" } }]);
    let mut claim_spec = k8s("statefulset.json")["spec"]["volumeClaimTemplates"][0]["spec"].clone();
    claim_spec["resources"]["requests"]["storage"] = json!("10Gi");
    let resize = |pod: &str| {
        (
            format!("PATCH {CORE}pods/{pod}/resize"),
            json!({ "spec": { "containers": [{ "name": "postgres", "resources": size("1500m") }] } }),
        )
    };
    let template_patch = (
        format!("PATCH {STS}"),
        json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "postgres", "resources": size("1500m") }] } } } }),
    );
    let expected = vec![
        // Fence pg-2: out of the Service, remembered on the StatefulSet (under the version
        // read), its process killed now.
        unserve.clone(),
        (
            format!("PATCH {STS}"),
            json!({ "metadata": { "annotations": { "steward.io/fenced-members": "pg-2" },
                "resourceVersion": "48211" } }),
        ),
        (
            format!("DELETE {CORE}pods/pg-2"),
            json!({ "gracePeriodSeconds": 0 }),
        ),
        // Its replacement: a PVC from the claim template, then a pod from the pod template.
        (
            format!("POST {CORE}persistentvolumeclaims"),
            json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": { "name": "data-pg-2-r1", "labels": {
                    "io.steward.cluster": "demo", "io.steward.member": "pg-2-r1",
                    "io.steward.operation": "<op>", "io.steward.role": "database" } },
                "spec": claim_spec }),
        ),
        (
            format!("POST {CORE}pods"),
            json!({ "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "pg-2-r1", "namespace": NS, "labels": labels },
                "spec": spec }),
        ),
        // pg-2 removed once pg-2-r1 streams: the highest ordinal, so by scaling down; its data
        // too; the fence record forgotten.
        (
            format!("PATCH {STS}/scale"),
            json!({ "spec": { "replicas": 2 } }),
        ),
        (
            format!("DELETE {CORE}persistentvolumeclaims/data-pg-2"),
            json!({}),
        ),
        (
            format!("PATCH {STS}"),
            json!({ "metadata": { "annotations": { "steward.io/fenced-members": null },
                "resourceVersion": "48213" } }),
        ),
        // The CPU grow, in place: replicas first, the leader last; the template follows for
        // the StatefulSet's pods (pg-2-r1 is a pod of its own).
        resize("pg-1"),
        template_patch.clone(),
        resize("pg-2-r1"),
        resize("pg-0"),
        template_patch,
    ];
    assert_eq!(got, expected);
    assert!(
        relabels[1] > 2 && relabels[1] < 7,
        "the recreated pod is taken out of the Service before pg-2 is removed: {relabels:?}"
    );
}

/// `[lease] kind = "kubernetes"`, two instances of `steward run` sharing one Lease: the first
/// creates it and renews it, the second stands by; the first is killed (SIGKILL: nothing handed
/// over), the second takes the Lease over once it has stood still for its duration, with the
/// next token, and only then acts: the crashed member is fenced after the takeover, never
/// before, and by nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_elect_on_a_kubernetes_lease_and_the_survivor_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake(Arc::new(Mutex::new(World::new())));
    let server = serve(&fake).await;
    let kubeconfig = kubeconfig(dir.path(), &server.uri());
    // One [lease] for both, as one ConfigMap for every pod: each its own id from its env.
    let lease = "\n[lease]\nkind = \"kubernetes\"\ninstance_env = \"POD_NAME\"\n\
                 scope = \"orders\"\nttl = \"3s\"\n";
    let holder = |fake: &Fake| {
        fake.world()
            .leases
            .get("steward-orders")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let a_config = config_named(dir.path(), "a", &server.uri(), &kubeconfig, lease);
    let b_config = config_named(dir.path(), "b", &server.uri(), &kubeconfig, lease);
    let mut a = Running::start_with(&a_config, dir.path(), "a", &[("POD_NAME", "steward-a")]);
    wait_until("a holds the lease", 20, &mut a, || {
        holder(&fake).as_deref() == Some("steward-a")
    })
    .await;
    let mut b = Running::start_with(&b_config, dir.path(), "b", &[("POD_NAME", "steward-b")]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    b.assert_alive();
    assert_eq!(
        holder(&fake).as_deref(),
        Some("steward-a"),
        "a renews: b waits"
    );

    a.kill();
    let killed = Instant::now();
    wait_until("b takes the lease over", 20, &mut b, || {
        holder(&fake).as_deref() == Some("steward-b")
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "taken {took:?} after the kill: before its TTL"
    );
    let lease_now = fake.world().leases["steward-orders"].clone();
    assert_eq!(
        lease_now["spec"]["leaseTransitions"],
        json!(1),
        "{lease_now}"
    );
    assert_eq!(
        lease_now["metadata"]["namespace"],
        json!(NS),
        "the platform's namespace"
    );

    {
        let mut w = fake.world();
        w.crashed.push("pg-2".into());
        let pod = w.pods.get_mut("pg-2").unwrap();
        crash_status(&mut pod["status"]);
    }
    wait_until("pg-2 fenced by b", 60, &mut b, || {
        fake.world().pods.contains_key("pg-2-r1")
    })
    .await;
    let status = b.stop().await;
    assert!(status.success(), "{status}\n{}", b.output());
    assert!(
        b.output().contains("became leader: acting"),
        "{}",
        b.output()
    );

    // The order of writes: a's Lease (created, renewed), b's takeover, then b's fence.
    let requests = server.received_requests().await.unwrap_or_default();
    let writes: Vec<String> = requests
        .iter()
        .filter(|r| r.method.as_str() != "GET" && !r.url.path().starts_with("/m/"))
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            match body["spec"]["holderIdentity"].as_str() {
                Some(h) => format!("{} {} {h}", r.method, r.url.path()),
                None => format!("{} {}", r.method, r.url.path()),
            }
        })
        .collect();
    let lease_path = format!("{LEASES}steward-orders");
    assert_eq!(
        writes[0],
        "POST /apis/coordination.k8s.io/v1/namespaces/db/leases steward-a"
    );
    let takeover = writes
        .iter()
        .position(|w| *w == format!("PUT {lease_path} steward-b"))
        .expect("b's takeover");
    assert!(
        writes[1..takeover]
            .iter()
            .all(|w| *w == format!("PUT {lease_path} steward-a")),
        "only a's renewals before the takeover: {writes:#?}"
    );
    assert!(takeover >= 3, "a renewed: {writes:#?}");
    let fence = writes
        .iter()
        .position(|w| *w == format!("PATCH {CORE}pods/pg-2"))
        .expect("the fence");
    assert!(fence > takeover, "{writes:#?}");
    // b's stop released the Lease: no holder, for the next one to take at once.
    assert_eq!(holder(&fake), None);
}

/// `check-config --resolve` asks the API server (through the kubeconfig) what each
/// `[[platform.kubernetes.adopt]]` rule takes now: Spilo's selector takes its pod (recorded
/// from a Zalando operator deployment), the named pod that does not exist takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_resolve_asks_the_api_server_what_each_adoption_rule_takes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake(Arc::new(Mutex::new(World::new())));
    {
        let mut spilo = k8s("spilo-pod.json");
        spilo["metadata"]["namespace"] = json!(NS);
        fake.world()
            .pods
            .insert("acid-minimal-cluster-0".into(), spilo);
    }
    let server = serve(&fake).await;
    let kubeconfig = kubeconfig(dir.path(), &server.uri());
    let config = config(
        dir.path(),
        &server.uri(),
        &kubeconfig,
        "\n[[platform.kubernetes.adopt]]\nselector = \"application=spilo,cluster-name=acid-minimal-cluster\"\n\
         \n[[platform.kubernetes.adopt]]\npod = \"legacy-pg\"\n",
    );
    // The adoption rules live in [platform.kubernetes]: move the appended tables there.
    let text = std::fs::read_to_string(&config).unwrap();
    let (head, rules) = text.split_once("\n[[platform.kubernetes.adopt]]").unwrap();
    let rules = format!("\n[[platform.kubernetes.adopt]]{rules}");
    let text = head.replace(
        "[platform.kubernetes.database]",
        &format!("{rules}\n[platform.kubernetes.database]"),
    );
    std::fs::write(&config, text).unwrap();

    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["check-config", "--resolve"])
            .arg(&config)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("# adoption"))
        .collect();
    assert_eq!(
        resolved,
        [
            "# adoption, as the Kubernetes API answers now:",
            "#   adopt[0] (selector application=spilo,cluster-name=acid-minimal-cluster): member acid-minimal-cluster-0 = pod db/acid-minimal-cluster-0 on node node-b",
            "#   adopt[1] (pod legacy-pg): takes nothing",
        ],
        "{stdout}"
    );
    // Reads only.
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(requests.iter().all(|r| r.method.as_str() == "GET"));
}

/// No kubeconfig where the config says: `steward run` stops at once and says which file, what
/// is wrong with it and what to do; nothing is asked of any server.
#[test]
fn a_missing_kubeconfig_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let config = config(dir.path(), "http://127.0.0.1:9", &missing, "");
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for needle in [
        "setting up the kubernetes client ([platform.kubernetes])",
        &format!("cannot use kubeconfig {}", missing.display()),
        "cannot be read (does it exist, and may this user read it?)",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}
