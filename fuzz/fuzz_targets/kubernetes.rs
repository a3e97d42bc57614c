//! Kubernetes API bodies, fed to the real Kubernetes platform through a kube client whose
//! transport is an in-memory fake (no socket): the input is up to five NUL-separated bodies,
//! answered by path:
//!
//! 0. `GET pods?labelSelector=...` (a PodList)
//! 1. `statefulsets/<name>` and its `scale` subresource (a StatefulSet)
//! 2. `persistentvolumeclaims/...` (a PersistentVolumeClaim)
//! 3. `pods/<name>` and its `resize` subresource (a Pod)
//! 4. `metrics.k8s.io` pods (a PodMetricsList)
//!
//! A body starting `!NNN ` is answered with status NNN (e.g. `!404 {...Status...}`), else 200.
//! Every verb of the platform runs once (list, usage, resize, fence, remove, create), under
//! paused tokio time so that its waits cost nothing.
//!
//! Invariant: nothing panics.
#![no_main]

use std::convert::Infallible;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use steward_adapters::platform::kubernetes::{KubernetesConfigRaw, KubernetesPlatform, RoleSetRaw};
use steward_model::ports::{CreateSpec, Platform};
use steward_model::{Role, Size};

const GIB: u64 = 1 << 30;

/// The bodies of the current input, by the index in the module doc.
static BODIES: Mutex<Vec<(u16, Vec<u8>)>> = Mutex::new(Vec::new());

fn answer(path: &str) -> (u16, Vec<u8>) {
    let index = if path.starts_with("/apis/metrics.k8s.io/") {
        4
    } else if path.contains("/statefulsets/") {
        1
    } else if path.contains("/persistentvolumeclaims") {
        2
    } else if path.contains("/pods/") {
        3
    } else if path.ends_with("/pods") {
        0
    } else {
        return (404, br#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404,"reason":"NotFound"}"#.to_vec());
    };
    let bodies = BODIES.lock().unwrap_or_else(|p| p.into_inner());
    bodies.get(index).cloned().unwrap_or((200, Vec::new()))
}

/// `!NNN rest` -> (NNN, rest); anything else -> (200, all).
fn status_and_body(part: &[u8]) -> (u16, Vec<u8>) {
    if let Some(rest) = part.strip_prefix(b"!") {
        if rest.len() >= 4 && rest[3] == b' ' {
            if let Some(code) = std::str::from_utf8(&rest[..3])
                .ok()
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (100..600).contains(c))
            {
                return (code, rest[4..].to_vec());
            }
        }
    }
    (200, part.to_vec())
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
}

fn platform() -> KubernetesPlatform {
    let service = tower::service_fn(|req: http::Request<kube::client::Body>| async move {
        let (status, body) = answer(req.uri().path());
        let response = http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a response");
        Ok::<_, Infallible>(response)
    });
    let client = kube::Client::new(service, "steward-test");
    let set = |statefulset: &str, container: &str| RoleSetRaw {
        statefulset: statefulset.into(),
        container: container.into(),
        volume_claim: "data".into(),
        max_cpus: 16.0,
        max_memory_bytes: 16 * GIB,
    };
    let config = KubernetesConfigRaw {
        cluster: "demo".into(),
        namespace: "steward-test".into(),
        database: set("pg", "postgres"),
        balancer: Some(set("haproxy", "haproxy")),
        serving_label: "io.steward.serving".into(),
        pod_wait_seconds: 2,
        resize_wait_seconds: 1,
        poll_millis: 500,
        max_body_bytes: 1 << 20,
        adopt: Vec::new(),
        kubeconfig: None,
        context: None,
    }
    .validate()
    .expect("a valid config");
    KubernetesPlatform::new(client, config)
}

fuzz_target!(|data: &[u8]| {
    *BODIES.lock().unwrap_or_else(|p| p.into_inner()) = steward_fuzz::parts(data, 5)
        .into_iter()
        .map(status_and_body)
        .collect();
    // The next ordinal, as `create` must name it (a harness shortcut, not the platform's code).
    let sts: Option<serde_json::Value> = serde_json::from_slice(&answer("/statefulsets/").1).ok();
    let replicas = sts
        .as_ref()
        .and_then(|s| s.pointer("/spec/replicas"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    runtime().block_on(async {
        let platform = platform();
        let mut names: Vec<String> = match platform.list().await {
            Ok(members) => members.into_iter().map(|m| m.name).take(2).collect(),
            Err(e) => {
                let _ = e.to_string();
                Vec::new()
            }
        };
        if names.is_empty() {
            names.push("pg-0".into());
        }
        let _ = platform.usage().await;
        let size = Size {
            cpus: 2.0,
            memory_bytes: 2 * GIB,
            disk_bytes: 20 * GIB,
        };
        for name in &names {
            let _ = platform.resize(name, size).await;
            let _ = platform.fence(name).await;
            let _ = platform.remove(name, true).await;
        }
        let _ = platform
            .create(&CreateSpec {
                cluster: "demo".into(),
                role: Role::Database,
                name: format!("pg-{replicas}"),
                size,
                operation_id: "20261126T100000000Z-0000000001".into(),
                replaces: None,
            })
            .await;
    });
});
