//! The Kubernetes platform against a small stateful fake API server (wiremock + a `Respond`
//! holding pods, PVCs and one StatefulSet), built from real API payloads in
//! `tests/data/k8s/`. The fake plays three parts of a real cluster, just enough to round-trip:
//! the API server (objects, merge patches, `Status` errors), the StatefulSet controller (scale
//! reconciles pods and PVCs by ordinal; a deleted pod below `replicas` comes back with a new
//! uid) and the kubelet (an in-place resize above the node's CPUs gets `PodResizePending`/
//! `Infeasible`, taken from the recorded payload; otherwise the container status follows).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use steward_adapters::platform::contract::{self, Harness};
use steward_adapters::platform::kubernetes::{
    parse_quantity, KubernetesConfigRaw, KubernetesPlatform, RoleSetRaw, ANNOTATION_FENCED,
};
use steward_model::observation::PlatformState;
use steward_model::ports::{CreateSpec, ErrorKind, Platform, ResizeOutcome};
use steward_model::{Role, Size};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const GIB: u64 = 1 << 30;
const CORE: &str = "/api/v1/namespaces/steward-test/";
const APPS: &str = "/apis/apps/v1/namespaces/steward-test/statefulsets/pg";
const METRICS: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/steward-test/pods";

fn data(name: &str) -> Value {
    let path = format!("{}/../tests/data/k8s/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// kube-rs builds a rustls client even for `http://`; with both ring and aws-lc compiled in,
/// it needs one provider chosen (ENVIRONMENT.md).
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

// --- the fake API server -------------------------------------------------------------------

/// A canned failure: the next `times` requests `method path` get the `Status` in `file`.
struct Fault {
    method: &'static str,
    path: String,
    file: &'static str,
    times: usize,
}

struct FakeState {
    sts: Value,
    pods: BTreeMap<String, Value>,
    pvcs: BTreeMap<String, Value>,
    serial: u64,
    /// What the kubelet can give one pod in place.
    node_cpus: f64,
    /// Whether the storage class allows expansion.
    expandable: bool,
    /// Whether the StatefulSet controller recreates deleted pods at once (false: it lags).
    recreate: bool,
    faults: Vec<Fault>,
    /// `METHOD path` of every request, in order.
    log: Vec<String>,
    /// StatefulSets Steward does not own (an operator's), by name: get and scale only.
    others: BTreeMap<String, Value>,
    /// Their pods as first made, which their controller brings back when deleted below
    /// `replicas`.
    originals: BTreeMap<String, Value>,
}

#[derive(Clone)]
struct FakeApi(Arc<Mutex<FakeState>>);

impl FakeApi {
    fn new() -> Self {
        FakeApi(Arc::new(Mutex::new(FakeState {
            sts: data("statefulset.json"),
            pods: BTreeMap::new(),
            pvcs: BTreeMap::new(),
            serial: 0,
            node_cpus: 8.0,
            expandable: true,
            recreate: true,
            faults: Vec::new(),
            log: Vec::new(),
            others: BTreeMap::new(),
            originals: BTreeMap::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn fail(&self, method: &'static str, path: &str, file: &'static str) {
        self.state().faults.push(Fault {
            method,
            path: path.into(),
            file,
            times: 1,
        });
    }
}

impl Respond for FakeApi {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.state().handle(req)
    }
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn status(file: &str) -> ResponseTemplate {
    let body = data(file);
    let code = body["code"].as_u64().unwrap_or(500) as u16;
    ResponseTemplate::new(code).set_body_json(body)
}

fn not_found(kind: &str, name: &str) -> ResponseTemplate {
    let mut body = data("status-404.json");
    body["message"] = json!(format!("{kind} \"{name}\" not found"));
    body["details"] = json!({ "name": name, "kind": kind });
    ResponseTemplate::new(404).set_body_json(body)
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

impl FakeState {
    fn replicas(&self) -> u64 {
        self.sts["spec"]["replicas"].as_u64().unwrap_or(0)
    }

    fn bump_sts(&mut self) {
        let rv = self.sts["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        self.sts["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
    }

    fn next(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// The StatefulSet controller: pods (and their PVCs) for ordinals below `replicas`.
    fn reconcile(&mut self) {
        let replicas = self.replicas();
        self.pods.retain(|name, _| {
            name.strip_prefix("pg-")
                .and_then(|o| o.parse::<u64>().ok())
                .is_none_or(|o| o < replicas)
        });
        for ordinal in 0..replicas {
            let name = format!("pg-{ordinal}");
            if !self.pods.contains_key(&name) {
                let pod = self.new_pod(ordinal);
                self.pods.insert(name.clone(), pod);
            }
            let claim = format!("data-{name}");
            if !self.pvcs.contains_key(&claim) {
                let mut pvc = data("pvc.json");
                pvc["metadata"]["name"] = json!(claim);
                pvc["spec"]["resources"] =
                    self.sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"].clone();
                pvc["status"]["capacity"] = pvc["spec"]["resources"]["requests"].clone();
                self.pvcs.insert(claim, pvc);
            }
        }
        self.sts["status"]["replicas"] = json!(replicas);
    }

    fn new_pod(&mut self, ordinal: u64) -> Value {
        let serial = self.next();
        let name = format!("pg-{ordinal}");
        let template = &self.sts["spec"]["template"];
        let mut pod = data("pod.json");
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{serial:012}"));
        pod["metadata"]["creationTimestamp"] = json!(format!(
            "2026-11-20T10:{:02}:{:02}Z",
            serial / 60 % 60,
            serial % 60
        ));
        let mut labels = template["metadata"]["labels"].clone();
        labels["statefulset.kubernetes.io/pod-name"] = json!(name);
        labels["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
        pod["metadata"]["labels"] = labels;
        pod["spec"]["containers"] = template["spec"]["containers"].clone();
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] =
            json!(format!("data-{name}"));
        pod["spec"]["nodeName"] = json!(format!("node-{ordinal}"));
        pod["spec"]["hostname"] = json!(name);
        pod["status"]["podIP"] = json!(format!("10.244.{ordinal}.10"));
        let resources = pod["spec"]["containers"][0]["resources"].clone();
        pod["status"]["containerStatuses"][0]["resources"] = resources.clone();
        pod["status"]["containerStatuses"][0]["allocatedResources"] = resources["requests"].clone();
        pod
    }

    /// Another's StatefulSet controller: a deleted pod of it below `replicas` comes back.
    fn recreate_foreign(&mut self, name: &str) {
        let Some(mut pod) = self.originals.get(name).cloned() else {
            return;
        };
        let owner = pod["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let replicas = self
            .others
            .get(&owner)
            .and_then(|s| s["spec"]["replicas"].as_u64())
            .unwrap_or(0);
        let below = name
            .strip_prefix(&format!("{owner}-"))
            .and_then(|o| o.parse::<u64>().ok())
            .is_some_and(|o| o < replicas);
        if below {
            let serial = self.next();
            pod["metadata"]["uid"] = json!(format!("00000000-0000-4000-9000-{serial:012}"));
            self.pods.insert(name.to_string(), pod);
        }
    }

    /// The kubelet's answer to an in-place resize.
    fn kubelet_resize(&self, pod: &mut Value) {
        let asked = pod["spec"]["containers"][0]["resources"].clone();
        let cpus = asked["limits"]["cpu"]
            .as_str()
            .and_then(parse_quantity)
            .unwrap_or(0.0);
        let conditions = pod["status"]["conditions"].as_array_mut().unwrap();
        conditions.retain(|c| c["type"] != "PodResizePending");
        if cpus > self.node_cpus {
            let recorded = data("pod-resize-infeasible.json");
            let mut pending = recorded["status"]["conditions"][0].clone();
            pending["message"] = json!(format!(
                "Node didn't have enough capacity: cpu, requested: {}, capacity: {}",
                (cpus * 1000.0) as u64,
                (self.node_cpus * 1000.0) as u64
            ));
            conditions.push(pending);
        } else {
            pod["status"]["containerStatuses"][0]["resources"] = asked.clone();
            pod["status"]["containerStatuses"][0]["allocatedResources"] = asked["requests"].clone();
        }
    }

    fn handle(&mut self, req: &Request) -> ResponseTemplate {
        let method = req.method.as_str().to_string();
        let path = req.url.path().to_string();
        self.log.push(format!("{method} {path}"));
        if let Some(i) = self
            .faults
            .iter()
            .position(|f| f.method == method && f.path == path && f.times > 0)
        {
            self.faults[i].times -= 1;
            return status(self.faults[i].file);
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let query = |key: &str| {
            req.url
                .query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let pods = format!("{CORE}pods");
        let pvcs = format!("{CORE}persistentvolumeclaims");
        let scale = format!("{APPS}/scale");
        let sets = "/apis/apps/v1/namespaces/steward-test/statefulsets/";
        let other = path
            .strip_prefix(sets)
            .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
            .filter(|(name, _)| self.others.contains_key(*name))
            .map(|(name, sub)| (name.to_string(), sub.to_string()));

        match (method.as_str(), path.as_str()) {
            ("GET", p) if p == pods => {
                let selector = query("labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .pods
                    .values()
                    .filter(|p| labels_match(p, &selector))
                    .cloned()
                    .collect();
                ok(
                    json!({ "kind": "PodList", "apiVersion": "v1", "metadata": { "resourceVersion": "1" }, "items": items }),
                )
            }
            ("POST", p) if p == pods => {
                // A pod Steward makes itself (a replacement): the kubelet starts it at once.
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.pods.contains_key(&name) {
                    return status("status-409.json");
                }
                let serial = self.next();
                let mut pod = body.clone();
                pod["metadata"]["uid"] = json!(format!("00000000-0000-4000-7000-{serial:012}"));
                pod["spec"]["nodeName"] = json!("node-9");
                let mut st = data("pod.json")["status"].clone();
                st["podIP"] = json!("10.244.9.10");
                let resources = pod["spec"]["containers"][0]["resources"].clone();
                st["containerStatuses"][0]["resources"] = resources.clone();
                st["containerStatuses"][0]["allocatedResources"] = resources["requests"].clone();
                pod["status"] = st;
                self.pods.insert(name, pod.clone());
                ResponseTemplate::new(201).set_body_json(pod)
            }
            ("GET", p) if p == METRICS => {
                let template = data("pod-metrics.json")["items"][0].clone();
                let items: Vec<Value> = self
                    .pods
                    .values()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .map(|p| {
                        let mut m = template.clone();
                        m["metadata"]["name"] = p["metadata"]["name"].clone();
                        m
                    })
                    .collect();
                ok(
                    json!({ "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items }),
                )
            }
            ("GET", p) if p == APPS => ok(self.sts.clone()),
            ("GET", _) if other.as_ref().is_some_and(|(_, sub)| sub.is_empty()) => {
                let (name, _) = other.unwrap();
                ok(self.others[&name].clone())
            }
            ("PATCH", _) if other.as_ref().is_some_and(|(_, sub)| sub == "scale") => {
                let (name, _) = other.unwrap();
                let replicas = body["spec"]["replicas"].as_u64().unwrap_or(0);
                self.others.get_mut(&name).unwrap()["spec"]["replicas"] = json!(replicas);
                self.pods.retain(|pod, _| {
                    pod.strip_prefix(&format!("{name}-"))
                        .and_then(|o| o.parse::<u64>().ok())
                        .is_none_or(|o| o < replicas)
                });
                let mut s = data("scale.json");
                s["metadata"]["name"] = json!(name);
                s["spec"]["replicas"] = json!(replicas);
                s["status"]["replicas"] = json!(replicas);
                ok(s)
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
                    json!({ "kind": "PersistentVolumeClaimList", "apiVersion": "v1", "metadata": { "resourceVersion": "1" }, "items": items }),
                )
            }
            ("PATCH", p) if p == APPS => {
                // Optimistic concurrency: a patch naming an old resourceVersion is a Conflict.
                let mut body = body.clone();
                let asked = body["metadata"]
                    .as_object_mut()
                    .and_then(|m| m.remove("resourceVersion"));
                if asked.is_some_and(|rv| rv != self.sts["metadata"]["resourceVersion"]) {
                    return status("status-409-conflict.json");
                }
                merge(&mut self.sts, &body);
                self.bump_sts();
                ok(self.sts.clone())
            }
            ("GET", p) if p == scale => ok(self.scale()),
            ("PATCH", p) if p == scale => {
                if let Some(r) = body["spec"]["replicas"].as_u64() {
                    self.sts["spec"]["replicas"] = json!(r);
                    self.bump_sts();
                    self.reconcile();
                }
                ok(self.scale())
            }
            ("POST", p) if p == pvcs => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.pvcs.contains_key(&name) {
                    return status("status-409.json");
                }
                let mut pvc = body.clone();
                pvc["status"] = json!({ "phase": "Pending" });
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
                    "DELETE" => {
                        let gone = self.pvcs.remove(&name).unwrap();
                        ok(gone)
                    }
                    "PATCH" => {
                        let storage = |v: &Value| {
                            v["spec"]["resources"]["requests"]["storage"]
                                .as_str()
                                .and_then(parse_quantity)
                        };
                        if let (Some(new), Some(old)) = (storage(&body), storage(pvc)) {
                            if !self.expandable {
                                return status("status-422.json");
                            }
                            if new < old {
                                let mut s = data("status-422.json");
                                s["message"] = json!(format!("PersistentVolumeClaim \"{name}\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"));
                                return ResponseTemplate::new(422).set_body_json(s);
                            }
                        }
                        merge(pvc, &body);
                        // Online expansion, done at once by this "CSI driver".
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
                        self.pods.insert(name, pod.clone());
                        ok(pod)
                    }
                    ("PATCH", "resize") => {
                        merge(&mut pod["spec"], &body["spec"]);
                        self.kubelet_resize(&mut pod);
                        self.pods.insert(name, pod.clone());
                        ok(pod)
                    }
                    ("DELETE", "") => {
                        self.pods.remove(&name);
                        // The StatefulSet controller brings back what is below `replicas`.
                        if self.recreate {
                            self.reconcile();
                        }
                        self.recreate_foreign(&name);
                        ok(pod)
                    }
                    _ => ResponseTemplate::new(405),
                }
            }
            _ => not_found("resource", &path),
        }
    }

    fn scale(&self) -> Value {
        let mut s = data("scale.json");
        s["spec"]["replicas"] = json!(self.replicas());
        s["status"]["replicas"] = json!(self.replicas());
        s
    }
}

async fn serve(fake: &FakeApi) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    server
}

fn config() -> KubernetesConfigRaw {
    KubernetesConfigRaw {
        cluster: "demo".into(),
        namespace: "steward-test".into(),
        database: RoleSetRaw {
            statefulset: "pg".into(),
            container: "postgres".into(),
            volume_claim: "data".into(),
            max_cpus: 16.0,
            max_memory_bytes: 16 * GIB,
        },
        balancer: None,
        serving_label: "io.steward.serving".into(),
        pod_wait_seconds: 5,
        resize_wait_seconds: 1,
        poll_millis: 10,
        max_body_bytes: 1 << 20,
        adopt: Vec::new(),
        kubeconfig: None,
        context: None,
    }
}

async fn platform_for(server: &MockServer, raw: KubernetesConfigRaw) -> KubernetesPlatform {
    install_crypto();
    let url = server.uri().parse().unwrap();
    KubernetesPlatform::connect(
        kube::Config::new(url),
        raw.validate().expect("valid config"),
    )
    .unwrap()
}

fn spec(name: &str) -> CreateSpec {
    CreateSpec {
        cluster: "demo".into(),
        role: Role::Database,
        name: name.into(),
        size: Size {
            cpus: 1.0,
            memory_bytes: GIB,
            disk_bytes: 10 * GIB,
        },
        operation_id: format!("op-{name}"),
        replaces: None,
    }
}

// --- the contract --------------------------------------------------------------------------

struct K8sHarness {
    fake: FakeApi,
    server: Option<MockServer>,
    names: BTreeMap<usize, String>,
}

#[async_trait]
impl Harness for K8sHarness {
    fn name(&self) -> String {
        "kubernetes".into()
    }

    async fn platform(&mut self) -> Arc<dyn Platform> {
        self.fake = FakeApi::new();
        self.names.clear();
        let server = serve(&self.fake).await;
        let p = platform_for(&server, config()).await;
        self.server = Some(server);
        Arc::new(p)
    }

    fn cluster(&self) -> String {
        "demo".into()
    }

    fn database_spec(&mut self, index: usize) -> CreateSpec {
        // A StatefulSet names its pods by ordinal: a new index gets the next free ordinal.
        let next = format!("pg-{}", self.fake.state().replicas());
        spec(&self.names.entry(index).or_insert(next).clone())
    }

    fn grown_size(&self, from: Size) -> Size {
        Size {
            cpus: from.cpus + 1.0,
            memory_bytes: from.memory_bytes + GIB / 2,
            ..from
        }
    }

    fn impossible_size(&self, from: Size) -> Option<Size> {
        Some(Size { cpus: 64.0, ..from })
    }

    fn database_hosts(&self) -> Option<usize> {
        // The scheduler places pods (anti-affinity), not create.
        None
    }

    async fn add_foreign(&mut self) -> Option<String> {
        let mut pod = data("pod.json");
        pod["metadata"]["name"] = json!("stranger");
        pod["metadata"]["labels"] = json!({ "app.kubernetes.io/name": "pgbouncer" });
        self.fake.state().pods.insert("stranger".into(), pod);
        Some("stranger".into())
    }

    async fn foreign_intact(&mut self, name: &str) -> bool {
        let state = self.fake.state();
        state.pods.get(name).is_some_and(|p| {
            p["status"]["phase"] == "Running"
                && p["metadata"]["labels"] == json!({ "app.kubernetes.io/name": "pgbouncer" })
                && p["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"
        })
    }

    async fn data_exists(&mut self, member: &str) -> Option<bool> {
        Some(
            self.fake
                .state()
                .pvcs
                .contains_key(&format!("data-{member}")),
        )
    }

    async fn cleanup(&mut self) {
        self.server = None;
    }
}

#[tokio::test]
async fn kubernetes_passes_the_platform_contract() {
    let mut h = K8sHarness {
        fake: FakeApi::new(),
        server: None,
        names: BTreeMap::new(),
    };
    contract::run_all(&mut h).await;
}

// --- Kubernetes' own behaviour ---------------------------------------------------------------

#[tokio::test]
async fn create_scales_the_statefulset_and_labels_the_pod() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    let e = p.create(&spec("pg-3")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused);
    assert!(
        e.message.contains("the next database member is pg-0"),
        "{e}"
    );
    let big = CreateSpec {
        size: Size {
            cpus: 2.0,
            memory_bytes: 2 * GIB,
            disk_bytes: 20 * GIB,
        },
        ..spec("pg-0")
    };
    let m = p.create(&big).await.unwrap();
    assert_eq!((m.state, m.size), (PlatformState::Running, big.size));
    assert_eq!(
        (m.host.as_str(), m.address.as_str()),
        ("node-0", "10.244.0.10")
    );
    let state = fake.state();
    assert_eq!(state.replicas(), 1);
    // The template now carries the role's size; the PVC was made at the asked size first.
    assert_eq!(
        state.sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "2000m"
    );
    assert_eq!(
        state.pvcs["data-pg-0"]["spec"]["resources"]["requests"]["storage"],
        "20Gi"
    );
    assert_eq!(
        state.pods["pg-0"]["metadata"]["labels"]["io.steward.operation"],
        "op-pg-0"
    );
    let order: Vec<&String> = state.log.iter().filter(|l| !l.starts_with("GET")).collect();
    assert_eq!(
        order,
        [
            "PATCH /apis/apps/v1/namespaces/steward-test/statefulsets/pg",
            "POST /api/v1/namespaces/steward-test/persistentvolumeclaims",
            "PATCH /apis/apps/v1/namespaces/steward-test/statefulsets/pg/scale",
            "PATCH /api/v1/namespaces/steward-test/pods/pg-0",
        ]
    );
}

/// A replacement named after the member it replaces (`pg-1-r1`, the repairer's name) is no
/// ordinal of the StatefulSet: it becomes a pod of its own, made from the pod template and the
/// claim template (the asked size), which the StatefulSet leaves alone. It is listed, resized
/// in place (never restarted through a template no controller would apply: refused and put
/// back), fenced (gone for good: nothing recreates it) and removed with its data.
#[tokio::test]
async fn a_replacement_is_a_pod_of_its_own_made_from_the_statefulsets_templates() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    p.create(&spec("pg-0")).await.unwrap();
    p.create(&spec("pg-1")).await.unwrap();
    fake.state().log.clear();
    let replacement = CreateSpec {
        replaces: Some("pg-1".into()),
        size: Size {
            disk_bytes: 20 * GIB,
            ..spec("pg-1-r1").size
        },
        ..spec("pg-1-r1")
    };
    let m = p.create(&replacement).await.unwrap();
    assert_eq!(
        (m.name.as_str(), m.state, m.size),
        ("pg-1-r1", PlatformState::Running, replacement.size)
    );
    assert_eq!(m.labels["io.steward.replaces"], "pg-1");
    {
        let state = fake.state();
        assert_eq!(state.replicas(), 2, "the StatefulSet is not scaled");
        let pod = &state.pods["pg-1-r1"];
        assert_eq!(pod["metadata"]["labels"]["io.steward.standalone"], "true");
        assert_eq!(
            pod["metadata"]["labels"]["app.kubernetes.io/name"],
            "patroni"
        );
        assert_eq!(pod["metadata"]["ownerReferences"], Value::Null);
        assert_eq!(
            (&pod["spec"]["hostname"], &pod["spec"]["subdomain"]),
            (&json!("pg-1-r1"), &json!("pg"))
        );
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{ "name": "data", "persistentVolumeClaim": { "claimName": "data-pg-1-r1" } }])
        );
        assert_eq!(
            state.pvcs["data-pg-1-r1"]["spec"]["storageClassName"],
            "standard-expandable"
        );
        assert_eq!(
            state.pvcs["data-pg-1-r1"]["spec"]["resources"]["requests"]["storage"],
            "20Gi"
        );
        let order: Vec<&String> = state.log.iter().filter(|l| !l.starts_with("GET")).collect();
        assert_eq!(
            order,
            [
                "POST /api/v1/namespaces/steward-test/persistentvolumeclaims",
                "POST /api/v1/namespaces/steward-test/pods",
            ]
        );
    }
    let names: Vec<String> = p
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["pg-0", "pg-1", "pg-1-r1"]);

    // In place: fine. Infeasible (above the node's 8 vCPUs): refused, and the pod put back.
    let grown = Size {
        cpus: 2.0,
        ..replacement.size
    };
    assert_eq!(
        p.resize("pg-1-r1", grown).await.unwrap(),
        ResizeOutcome::AppliedLive
    );
    let e = p
        .resize(
            "pg-1-r1",
            Size {
                cpus: 12.0,
                ..grown
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused);
    assert!(e.message.contains("a pod of its own"), "{e}");
    {
        let state = fake.state();
        let pod = &state.pods["pg-1-r1"];
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "2000m"
        );
        assert_eq!(
            state.sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1",
            "a standalone pod's size is not the template's business"
        );
    }

    p.fence("pg-1-r1").await.unwrap();
    assert!(
        !fake.state().pods.contains_key("pg-1-r1"),
        "nothing recreates it"
    );
    p.fence("pg-1-r1").await.unwrap();
    p.remove("pg-1-r1", true).await.unwrap();
    let state = fake.state();
    assert!(!state.pvcs.contains_key("data-pg-1-r1"));
    assert_eq!(
        state.sts["metadata"]["annotations"][ANNOTATION_FENCED],
        Value::Null
    );
    assert_eq!(state.replicas(), 2);
}

#[tokio::test]
async fn an_infeasible_in_place_resize_restarts_the_pod_from_the_patched_template() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    p.create(&spec("pg-0")).await.unwrap();
    let old_uid = fake.state().pods["pg-0"]["metadata"]["uid"].clone();
    // 12 vCPUs is within max_cpus (16) but above what the node gives in place (8).
    let target = Size {
        cpus: 12.0,
        memory_bytes: 2 * GIB,
        disk_bytes: 10 * GIB,
    };
    assert_eq!(
        p.resize("pg-0", target).await.unwrap(),
        ResizeOutcome::AppliedWithRestart
    );
    assert_eq!(p.list().await.unwrap()[0].size, target);
    let state = fake.state();
    let pod = &state.pods["pg-0"];
    assert_ne!(pod["metadata"]["uid"], old_uid, "the pod was recreated");
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "12000m"
    );
    assert_eq!(
        state.sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "2Gi"
    );
    assert!(state
        .log
        .contains(&"PATCH /api/v1/namespaces/steward-test/pods/pg-0/resize".to_string()));
}

#[tokio::test]
async fn with_rolling_update_an_infeasible_resize_is_refused_and_undone() {
    let fake = FakeApi::new();
    fake.state().sts["spec"]["updateStrategy"] = json!({ "type": "RollingUpdate" });
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    // The template already has the asked size: create needs no template change.
    let m = p.create(&spec("pg-0")).await.unwrap();
    let uid = fake.state().pods["pg-0"]["metadata"]["uid"].clone();
    let e = p
        .resize(
            "pg-0",
            Size {
                cpus: 12.0,
                ..m.size
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert!(e.message.contains("RollingUpdate"), "{e}");
    let state = fake.state();
    assert_eq!(state.pods["pg-0"]["metadata"]["uid"], uid, "no restart");
    assert_eq!(
        state.pods["pg-0"]["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1000m",
        "spec put back"
    );
    assert_eq!(
        state.sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "1"
    );
}

#[tokio::test]
async fn a_refused_pvc_expansion_undoes_the_in_place_change_and_keeps_the_message() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    let m = p.create(&spec("pg-0")).await.unwrap();
    fake.state().expandable = false;
    let target = Size {
        cpus: 2.0,
        memory_bytes: 2 * GIB,
        disk_bytes: 11 * GIB,
    };
    let e = p.resize("pg-0", target).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert!(
        e.message
            .contains("only dynamically provisioned pvc can be resized")
            || e.message.contains("is invalid"),
        "{e}"
    );
    assert_eq!(
        p.list().await.unwrap()[0].size,
        m.size,
        "nothing half-changed"
    );
    let state = fake.state();
    let resizes = state
        .log
        .iter()
        .filter(|l| l.ends_with("/pods/pg-0/resize"))
        .count();
    assert_eq!(resizes, 2, "the in-place change and its undo");
    assert_eq!(
        state.sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "1"
    );
}

#[tokio::test]
async fn fence_takes_the_pod_out_of_the_endpoints_and_keeps_its_recreation_fenced() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    p.create(&spec("pg-0")).await.unwrap();
    p.create(&spec("pg-1")).await.unwrap();
    let uid = fake.state().pods["pg-0"]["metadata"]["uid"].clone();
    p.fence("pg-0").await.unwrap();
    {
        let state = fake.state();
        let log: Vec<&String> = state
            .log
            .iter()
            .filter(|l| !l.starts_with("GET") && (l.contains("pg-0") || l.ends_with("/pg")))
            .collect();
        let tail: Vec<&str> = log.iter().rev().take(3).rev().map(|s| s.as_str()).collect();
        assert_eq!(
            tail,
            [
                "PATCH /api/v1/namespaces/steward-test/pods/pg-0",
                "PATCH /apis/apps/v1/namespaces/steward-test/statefulsets/pg",
                "DELETE /api/v1/namespaces/steward-test/pods/pg-0",
            ],
            "label out of the endpoints, remember, then delete"
        );
        assert_eq!(
            state.sts["metadata"]["annotations"][ANNOTATION_FENCED],
            "pg-0"
        );
        // The controller recreated it, with the template's labels (serving again).
        assert_ne!(state.pods["pg-0"]["metadata"]["uid"], uid);
        assert_eq!(
            state.pods["pg-0"]["metadata"]["labels"]["io.steward.serving"],
            "true"
        );
    }
    let members = p.list().await.unwrap();
    assert_eq!(members[0].state, PlatformState::Fenced);
    assert_eq!(members[1].state, PlatformState::Running);
    assert_eq!(
        fake.state().pods["pg-0"]["metadata"]["labels"]["io.steward.serving"],
        "false",
        "relabelled by list"
    );
    assert!(
        !p.usage().await.unwrap().contains_key("pg-0"),
        "no usage for a fenced member"
    );
    // Removing a lower ordinal deletes the pod (the set cannot drop it) and forgets the fence.
    p.remove("pg-0", true).await.unwrap();
    let state = fake.state();
    assert_eq!(state.replicas(), 2);
    assert!(state.sts["metadata"]["annotations"]
        .get(ANNOTATION_FENCED)
        .is_none());
}

#[tokio::test]
async fn api_errors_are_classified_and_keep_the_servers_message() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    p.create(&spec("pg-0")).await.unwrap();
    let pod = format!("{CORE}pods/pg-0");
    let size = Size {
        cpus: 2.0,
        memory_bytes: GIB,
        disk_bytes: 10 * GIB,
    };

    fake.fail("GET", &pod, "status-500.json");
    let e = p.resize("pg-0", size).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.message.contains("error reading from server"), "{e}");

    fake.fail("PATCH", &format!("{pod}/resize"), "status-403.json");
    let e = p.resize("pg-0", size).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message.contains("cannot patch resource \"pods/resize\""),
        "{e}"
    );

    fake.fail(
        "PATCH",
        &format!("{APPS}/scale"),
        "status-409-conflict.json",
    );
    let e = p.create(&spec("pg-1")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("the object has been modified"), "{e}");

    fake.fail(
        "POST",
        &format!("{CORE}persistentvolumeclaims"),
        "status-409.json",
    );
    let e = p.create(&spec("pg-1")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("already exists"), "{e}");

    let e = p.fence("pg-9").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let state = fake.state();
    assert_eq!(state.replicas(), 1, "failed creates did not scale");
    assert!(
        !state.pvcs.contains_key("data-pg-1"),
        "the PVC of the failed create was deleted"
    );
}

#[tokio::test]
async fn an_api_server_that_does_not_answer_is_transient() {
    install_crypto();
    // A port nobody listens on (wiremock recycles its servers, so not a dropped one).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}").parse().unwrap();
    let p =
        KubernetesPlatform::connect(kube::Config::new(url), config().validate().unwrap()).unwrap();
    let e = p.list().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "connection refused: {e}");
    assert_eq!(
        p.fence("pg-0").await.unwrap_err().kind,
        ErrorKind::Transient
    );
}

#[tokio::test]
async fn an_answer_over_the_limit_is_refused_with_the_limit() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let roomy = platform_for(&server, config()).await;
    for n in 0..3 {
        roomy.create(&spec(&format!("pg-{n}"))).await.unwrap();
    }
    assert_eq!(roomy.list().await.unwrap().len(), 3);
    // Three pods' list is a few KiB: the same answer through a 1 KiB limit is refused.
    let mut raw = config();
    raw.max_body_bytes = 1024;
    let tight = platform_for(&server, raw).await;
    let e = tight.list().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("larger than 1024 bytes") && text.contains("max_body_bytes"),
        "{text}"
    );
}

#[test]
fn waits_and_limits_have_bounds() {
    let mut raw = config();
    raw.pod_wait_seconds = u64::MAX;
    raw.poll_millis = 0;
    raw.max_body_bytes = u64::MAX;
    raw.database.max_cpus = 1e300;
    let text = raw.validate().unwrap_err().to_string();
    for field in [
        "pod_wait_seconds",
        "poll_millis",
        "max_body_bytes",
        "database.max_cpus",
    ] {
        assert!(
            text.contains(&format!("{field}: must be between")),
            "{field}: {text}"
        );
    }
}

#[tokio::test]
async fn usage_comes_from_the_metrics_api() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    p.create(&spec("pg-0")).await.unwrap();
    let u = p.usage().await.unwrap()["pg-0"];
    // pod-metrics.json: cpu 137491278n, memory 84632Ki (the working set).
    assert!((u.cpu_used.unwrap() - 0.137491278).abs() < 1e-9, "{u:?}");
    assert_eq!(u.memory_used, Some(84632 * 1024));
    assert_eq!(u.disk_size, Some(10 * GIB));
    assert_eq!(u.at.to_rfc3339(), "2026-11-20T10:14:52Z");
}

#[test]
fn recorded_payloads_are_the_typed_api_objects() {
    let pod: Pod = serde_json::from_value(data("pod.json")).unwrap();
    assert_eq!(
        pod.status.unwrap().container_statuses.unwrap()[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()["cpu"]
            .0,
        "1"
    );
    let pending: Pod = serde_json::from_value(data("pod-resize-infeasible.json")).unwrap();
    let condition = pending.status.unwrap().conditions.unwrap().remove(0);
    assert_eq!(
        (condition.type_.as_str(), condition.reason.as_deref()),
        ("PodResizePending", Some("Infeasible"))
    );
    let sts: StatefulSet = serde_json::from_value(data("statefulset.json")).unwrap();
    assert_eq!(
        sts.spec.unwrap().update_strategy.unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    let scale: Scale = serde_json::from_value(data("scale.json")).unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    let pvc: PersistentVolumeClaim = serde_json::from_value(data("pvc.json")).unwrap();
    assert_eq!(pvc.status.unwrap().capacity.unwrap()["storage"].0, "10Gi");
    // The Service's endpoints list the serving pods only (pg-0 fenced, out of them).
    let endpoints: Endpoints = serde_json::from_value(data("endpoints.json")).unwrap();
    let slice: EndpointSlice = serde_json::from_value(data("endpointslice.json")).unwrap();
    let in_endpoints: Vec<String> = endpoints.subsets.unwrap()[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.target_ref.as_ref().unwrap().name.clone().unwrap())
        .collect();
    let in_slice: Vec<String> = slice
        .endpoints
        .iter()
        .map(|e| e.target_ref.as_ref().unwrap().name.clone().unwrap())
        .collect();
    assert_eq!(in_endpoints, ["pg-1", "pg-2"]);
    assert_eq!(in_slice, in_endpoints);
    for file in [
        "status-403.json",
        "status-404.json",
        "status-409.json",
        "status-409-conflict.json",
        "status-422.json",
        "status-500.json",
    ] {
        let s: kube::core::Status = serde_json::from_value(data(file)).unwrap();
        assert!(
            s.is_failure() && s.code >= 400 && !s.message.is_empty(),
            "{file}"
        );
    }
}

#[tokio::test]
async fn a_fenced_member_whose_pod_is_not_back_yet_can_be_fenced_again_and_removed() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    p.create(&spec("pg-0")).await.unwrap();
    fake.state().recreate = false;
    p.fence("pg-0").await.unwrap();
    assert!(
        p.list().await.unwrap().is_empty(),
        "the pod is gone until the controller acts"
    );
    p.fence("pg-0")
        .await
        .expect("fencing a fenced member succeeds");
    p.remove("pg-0", false).await.unwrap();
    let state = fake.state();
    assert_eq!(
        state.replicas(),
        0,
        "the highest ordinal leaves by a scale-down"
    );
    assert!(state.pvcs.contains_key("data-pg-0"), "data kept");
    assert!(state.sts["metadata"]["annotations"]
        .get(ANNOTATION_FENCED)
        .is_none());
}

#[tokio::test]
async fn create_refuses_another_cluster_and_a_template_without_stewards_labels() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    let other = CreateSpec {
        cluster: "other".into(),
        ..spec("pg-0")
    };
    assert_eq!(
        p.create(&other).await.unwrap_err().kind,
        ErrorKind::Permanent
    );
    fake.state().sts["spec"]["template"]["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("io.steward.role");
    let e = p.create(&spec("pg-0")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("io.steward.role=database"), "{e}");
    assert_eq!(fake.state().replicas(), 0, "nothing scaled");
}

#[tokio::test]
async fn a_fence_record_changed_underneath_is_a_conflict_not_a_lost_update() {
    let fake = FakeApi::new();
    let server = serve(&fake).await;
    let p = platform_for(&server, config()).await;
    p.create(&spec("pg-0")).await.unwrap();
    // Another writer changes the StatefulSet between our read and our patch.
    fake.fail("PATCH", APPS, "status-409-conflict.json");
    let e = p.fence("pg-0").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    // Retrying (as a loop does on Conflict) reads again and succeeds.
    p.fence("pg-0").await.unwrap();
    assert_eq!(
        fake.state().sts["metadata"]["annotations"][ANNOTATION_FENCED],
        "pg-0"
    );
}

// --- adoption (issue 15) -------------------------------------------------------------------

/// A PVC of `size` carrying `labels` (none of Steward's).
fn foreign_pvc(name: &str, size: &str, labels: Value) -> Value {
    let mut pvc = data("pvc.json");
    pvc["metadata"]["name"] = json!(name);
    pvc["metadata"]["labels"] = labels;
    pvc["spec"]["resources"]["requests"]["storage"] = json!(size);
    pvc["status"]["capacity"]["storage"] = json!(size);
    pvc
}

/// Spilo's pod `ordinal` of StatefulSet `cluster`, with its PVC.
fn spilo(state: &mut FakeState, cluster: &str, ordinal: u64) {
    let name = format!("{cluster}-{ordinal}");
    let claim = format!("pgdata-{name}");
    let mut pod = data("spilo-pod.json");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["uid"] = json!(format!("6a0c2b9e-41d3-4f7a-9c55-{ordinal:012}"));
    pod["metadata"]["labels"]["cluster-name"] = json!(cluster);
    pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
    if ordinal > 0 {
        pod["metadata"]["labels"]["spilo-role"] = json!("replica");
    }
    pod["metadata"]["ownerReferences"][0]["name"] = json!(cluster);
    pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = json!(claim);
    pod["status"]["podIP"] = json!(format!("10.244.{}.21", ordinal + 2));
    let labels = json!({ "application": "spilo", "cluster-name": cluster, "team": "acid" });
    state
        .pvcs
        .insert(claim.clone(), foreign_pvc(&claim, "1Gi", labels));
    state.originals.insert(name.clone(), pod.clone());
    state.pods.insert(name, pod);
}

/// A pod no controller owns, its data in PVC `claim`.
fn bare_pod(state: &mut FakeState, name: &str, claim: &str) {
    let mut pod = data("pod.json");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["labels"] = json!({ "app": "legacy-pg" });
    pod["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    pod["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("generateName");
    pod["spec"]["volumes"] = json!([
        { "name": "data", "persistentVolumeClaim": { "claimName": claim } },
        { "name": "scratch", "emptyDir": {} }
    ]);
    state.pvcs.insert(
        claim.into(),
        foreign_pvc(claim, "10Gi", json!({ "app": "legacy-pg" })),
    );
    state.pods.insert(name.into(), pod);
}

#[tokio::test]
async fn adopted_pods_are_managed_and_their_pvcs_are_never_deleted() {
    use steward_adapters::platform::docker::LABEL_ADOPTED;
    use steward_adapters::platform::kubernetes::{RawAdopt, LABEL_RETIRED};

    // tests/data/k8s/spilo-*.json are written in the shape the Zalando operator gives a Spilo
    // cluster's pod and StatefulSet (no API server runs here to record them); they must at
    // least be what the API types read.
    serde_json::from_value::<Pod>(data("spilo-pod.json")).expect("a Pod");
    serde_json::from_value::<StatefulSet>(data("spilo-statefulset.json")).expect("a StatefulSet");
    let fake = FakeApi::new();
    {
        let mut state = fake.state();
        let mut sts = data("spilo-statefulset.json");
        state
            .others
            .insert("acid-minimal-cluster".into(), sts.clone());
        spilo(&mut state, "acid-minimal-cluster", 0);
        spilo(&mut state, "acid-minimal-cluster", 1);
        // Another Spilo cluster, a look-alike pod, and a Spilo pod that is Steward's own.
        sts["metadata"]["name"] = json!("acid-test");
        state.others.insert("acid-test".into(), sts);
        spilo(&mut state, "acid-test", 0);
        bare_pod(&mut state, "legacy-pg", "legacy-data");
        bare_pod(&mut state, "legacy-pg-0", "legacy-data-0");
        spilo(&mut state, "stolen", 0);
        state.pods.get_mut("stolen-0").unwrap()["metadata"]["labels"]["cluster-name"] =
            json!("acid-minimal-cluster");
        state.pods.get_mut("stolen-0").unwrap()["metadata"]["labels"]["io.steward.cluster"] =
            json!("other");
    }
    let foreign = ["acid-test-0", "legacy-pg-0", "stolen-0"];
    let before: Vec<Value> = foreign
        .iter()
        .map(|n| fake.state().pods[*n].clone())
        .collect();
    let server = serve(&fake).await;
    let mut raw = config();
    raw.adopt = vec![
        RawAdopt {
            pod: Some("legacy-pg".into()),
            member: Some("legacy1".into()),
            ..Default::default()
        },
        RawAdopt {
            selector: Some("application=spilo,cluster-name=acid-minimal-cluster".into()),
            ..Default::default()
        },
    ];
    let p = platform_for(&server, raw).await;

    // Listed as members, marked adopted, sized by their container and PVC.
    let listed = p.list().await.expect("list");
    let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "acid-minimal-cluster-0",
            "acid-minimal-cluster-1",
            "legacy1"
        ],
        "{listed:#?}"
    );
    for m in &listed {
        assert_eq!(
            m.labels.get(LABEL_ADOPTED).map(String::as_str),
            Some("true")
        );
        assert_eq!((m.role, m.state), (Role::Database, PlatformState::Running));
        assert_eq!((m.size.cpus, m.size.memory_bytes), (1.0, GIB));
    }
    assert_eq!(listed[1].address, "10.244.3.21");
    assert_eq!(listed[1].size.disk_bytes, GIB);
    assert_eq!(listed[2].size.disk_bytes, 10 * GIB);
    assert_eq!(
        listed[2].labels.get("io.steward.member").unwrap(),
        "legacy1"
    );
    let usage = p.usage().await.expect("usage");
    assert_eq!(
        usage.keys().map(String::as_str).collect::<Vec<_>>(),
        names,
        "every adopted pod's figures, by member"
    );

    // Resized in place; their controller's template is never touched.
    let uid = |name: &str| fake.state().pods[name]["metadata"]["uid"].clone();
    let old_uid = uid("acid-minimal-cluster-1");
    let grown = Size {
        cpus: 2.0,
        memory_bytes: 2 * GIB,
        disk_bytes: GIB,
    };
    assert_eq!(
        p.resize("acid-minimal-cluster-1", grown)
            .await
            .expect("resize"),
        ResizeOutcome::AppliedLive
    );
    assert_eq!(uid("acid-minimal-cluster-1"), old_uid, "not restarted");
    // What the kubelet cannot do in place is refused and undone, not done by a restart.
    let e = p
        .resize(
            "acid-minimal-cluster-1",
            Size {
                cpus: 12.0,
                ..grown
            },
        )
        .await
        .expect_err("infeasible");
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert_eq!(
        fake.state().pods["acid-minimal-cluster-1"]["spec"]["containers"][0]["resources"]["limits"]
            ["cpu"],
        "2000m"
    );
    assert_eq!(uid("acid-minimal-cluster-1"), old_uid);
    // Its PVC grows.
    p.resize(
        "legacy1",
        Size {
            cpus: 1.0,
            memory_bytes: GIB,
            disk_bytes: 20 * GIB,
        },
    )
    .await
    .expect("grow legacy1's disk");
    assert_eq!(
        fake.state().pvcs["legacy-data"]["spec"]["resources"]["requests"]["storage"],
        "20Gi"
    );
    let template_writes: Vec<String> = fake
        .state()
        .log
        .iter()
        .filter(|l| l.starts_with("PATCH /apis/apps/"))
        .cloned()
        .collect();
    assert_eq!(template_writes, Vec::<String>::new());

    // Fenced as owned pods are: out of the serving label, deleted; what its controller brings
    // back stays fenced.
    p.fence("acid-minimal-cluster-1").await.expect("fence");
    assert_ne!(uid("acid-minimal-cluster-1"), old_uid, "deleted, recreated");
    let listed = p.list().await.unwrap();
    let state = |name: &str| listed.iter().find(|m| m.name == name).map(|m| m.state);
    assert_eq!(state("acid-minimal-cluster-1"), Some(PlatformState::Fenced));
    assert_eq!(
        fake.state().pods["acid-minimal-cluster-1"]["metadata"]["labels"]["io.steward.serving"],
        "false"
    );

    // A lower ordinal of a StatefulSet comes back when deleted: refused, nothing changed.
    let e = p
        .remove("acid-minimal-cluster-0", true)
        .await
        .expect_err("a lower ordinal");
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert!(e.message.contains("highest ordinal"), "{e}");
    assert!(fake.state().pods.contains_key("acid-minimal-cluster-0"));

    // The highest: its StatefulSet scales down; delete_data asked, the rule keeps the PVC.
    p.remove("acid-minimal-cluster-1", true)
        .await
        .expect("remove");
    {
        let state = fake.state();
        assert_eq!(state.others["acid-minimal-cluster"]["spec"]["replicas"], 1);
        assert!(!state.pods.contains_key("acid-minimal-cluster-1"));
        let pvc = &state.pvcs["pgdata-acid-minimal-cluster-1"];
        assert_eq!(pvc["metadata"]["labels"][LABEL_RETIRED], "demo");
    }

    // A pod no controller owns: fenced (deleted), then removed; its PVC is kept.
    p.fence("legacy1").await.expect("fence legacy1");
    assert!(!fake.state().pods.contains_key("legacy-pg"));
    p.fence("legacy1").await.expect("fencing again is done");
    p.remove("legacy1", true).await.expect("remove legacy1");
    assert_eq!(
        fake.state().pvcs["legacy-data"]["metadata"]["labels"][LABEL_RETIRED],
        "demo"
    );
    assert_eq!(
        p.remove("legacy1", true).await.unwrap_err().kind,
        ErrorKind::NotFound
    );

    // ... and where the data is and how to delete it (what /status shows).
    let kept = p.kept().await.expect("kept");
    let kept: Vec<(&str, &str, &str, Vec<String>, &str)> = kept
        .iter()
        .map(|k| {
            (
                k.member.as_str(),
                k.resource.as_str(),
                k.host.as_str(),
                k.data.clone(),
                k.delete_with.as_str(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            (
                "acid-minimal-cluster-1",
                "acid-minimal-cluster-1",
                "steward-test",
                vec!["pgdata-acid-minimal-cluster-1".to_string()],
                "kubectl -n steward-test delete pvc pgdata-acid-minimal-cluster-1"
            ),
            (
                "legacy1",
                "legacy-pg",
                "steward-test",
                vec!["legacy-data".to_string()],
                "kubectl -n steward-test delete pvc legacy-data"
            ),
        ]
    );

    // Its operator scales the StatefulSet back: the pod on a retired PVC is not taken again.
    {
        let mut state = fake.state();
        state.others.get_mut("acid-minimal-cluster").unwrap()["spec"]["replicas"] = json!(2);
        state.recreate_foreign("acid-minimal-cluster-1");
        assert!(state.pods.contains_key("acid-minimal-cluster-1"));
    }
    let names: Vec<String> = p
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["acid-minimal-cluster-0"]);

    // Another cluster's pods, a look-alike and Steward's own: never members, never touched.
    for (name, was) in foreign.iter().zip(&before) {
        assert_eq!(&fake.state().pods[*name], was, "{name} was touched");
    }
    assert!(fake.state().pvcs.contains_key("legacy-data-0"));
}
