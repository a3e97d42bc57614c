//! Packaging (`packaging/`, `scripts/image.sh`), checked as a user would meet it:
//!
//! - the Kubernetes manifests: the Role grants exactly the (group, resource, verb) the Kubernetes
//!   platform adapter calls, read from the adapter's source, so the test fails when the adapter
//!   starts calling something new (or stops calling something granted); the Deployment, its
//!   ServiceAccount, RoleBinding and ConfigMap agree, and the ConfigMap's steward.toml passes
//!   `steward check-config`. The YAML is read by PyYAML (no YAML crate is a dependency; Debian's
//!   python3-yaml, which scripts/test.sh installs);
//! - the systemd unit: its sandbox and state folder, and `systemd-analyze verify` where installed;
//! - `e2e_*`: the image `scripts/image.sh` builds runs `steward run` as a sidecar container of the
//!   lab (host network, the Docker sockets mounted, a state folder), serves `/healthz` and
//!   `/status`, sees the lab's members and stops cleanly. It needs the lab and the image
//!   (`scripts/test.sh` builds it from the test build's binary), and runs with the other lab
//!   tests, one at a time (.config/nextest.toml).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::e2e::{free_port, lab, open_journal_records, repo, restore, write_config_with, Api};

// ---------------------------------------------------------------------------------------------
// What the Kubernetes adapter calls
// ---------------------------------------------------------------------------------------------

/// One permission: API group (`""` is core), resource (`pods`, `pods/resize`), verb.
type Grant = (String, String, String);

fn grant(group: &str, resource: &str, verb: &str) -> Grant {
    (group.into(), resource.into(), verb.into())
}

/// The Kubernetes adapter's source as code only ([`code_only`] of its files).
fn adapter_code() -> String {
    [
        "adapters/src/platform/kubernetes.rs",
        "adapters/src/platform/kubernetes/adopt.rs",
        "adapters/src/platform/kubernetes/client.rs",
        "adapters/src/platform/kubernetes/lease.rs",
    ]
    .iter()
    .map(|file| code_only(&std::fs::read_to_string(repo().join(file)).expect(file)))
    .collect()
}

/// Rust source as code only: comment lines and the unit tests dropped, and white space dropped
/// except between two identifier characters (`fn pods`), so that a call split over lines reads
/// `self.pods().get_opt(`.
fn code_only(text: &str) -> String {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut code = String::new();
    let mut space = false;
    for line in text.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for c in line.chars().chain(['\n']) {
            if c.is_whitespace() {
                space = true;
                continue;
            }
            if space && ident(c) && code.ends_with(ident) {
                code.push(' ');
            }
            space = false;
            code.push(c);
        }
    }
    code
}

/// The identifier ending right before byte `end` of `code`.
fn ident_before(code: &str, end: usize) -> &str {
    let start = code[..end]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    &code[start..end]
}

/// The identifier starting at byte `start` of `code`.
fn ident_at(code: &str, start: usize) -> &str {
    let end = code[start..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(code.len(), |i| start + i);
    &code[start..end]
}

/// The first string literal at or after `start`.
fn string_after(code: &str, start: usize) -> &str {
    let open = start + code[start..].find('"').expect("a string literal");
    let close = open + 1 + code[open + 1..].find('"').expect("a closed string literal");
    &code[open + 1..close]
}

/// The RBAC (resource, verb) of a kube-rs `Api` method called on `resource`; panics on a method
/// this test does not know, so that a new call is mapped (and granted) on purpose.
fn rbac_of(resource: &str, method: &str, code: &str, args_at: usize) -> (String, String) {
    let (sub, verb) = match method {
        "get" | "get_opt" | "get_metadata" | "get_metadata_opt" => (None, "get"),
        "list" | "list_metadata" => (None, "list"),
        "watch" | "watch_metadata" => (None, "watch"),
        "create" => (None, "create"),
        "patch" | "patch_metadata" => (None, "patch"),
        "replace" => (None, "update"),
        "delete" => (None, "delete"),
        "delete_collection" => (None, "deletecollection"),
        "get_scale" => (Some("scale".to_string()), "get"),
        "patch_scale" => (Some("scale".to_string()), "patch"),
        "replace_scale" => (Some("scale".to_string()), "update"),
        "get_status" => (Some("status".to_string()), "get"),
        "patch_status" => (Some("status".to_string()), "patch"),
        "replace_status" => (Some("status".to_string()), "update"),
        "patch_subresource" => (Some(string_after(code, args_at).to_string()), "patch"),
        "get_subresource" => (Some(string_after(code, args_at).to_string()), "get"),
        "create_subresource" => (Some(string_after(code, args_at).to_string()), "create"),
        "replace_subresource" => (Some(string_after(code, args_at).to_string()), "update"),
        other => panic!(
            "the Kubernetes adapter calls `Api::{other}` on {resource}, which this test does not \
             map to an RBAC verb: add it to `rbac_of` and grant it in packaging/kubernetes/rbac.yaml"
        ),
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    (resource, verb.to_string())
}

/// Every (group, resource, verb) the adapter calls, read from its source: the typed APIs it
/// builds in accessors (`fn pods(&self) -> Api<Pod>`) and calls as `self.pods().get_opt(..)`,
/// and the dynamic ones (`Api<DynamicObject>` over an `ApiResource { group, plural }`).
fn adapter_calls() -> BTreeSet<Grant> {
    calls_in(&adapter_code())
}

/// [`adapter_calls`] of any code (as [`code_only`] gives it).
fn calls_in(code: &str) -> BTreeSet<Grant> {
    let code = code.to_string();
    let typed: BTreeMap<&str, (&str, &str)> = BTreeMap::from([
        ("Pod", ("", "pods")),
        ("StatefulSet", ("apps", "statefulsets")),
        ("PersistentVolumeClaim", ("", "persistentvolumeclaims")),
        ("Lease", ("coordination.k8s.io", "leases")),
    ]);
    let mut calls = BTreeSet::new();
    let mut constructors = 0;

    // Accessors: `fn NAME(&self)->Api<TYPE>{Api::namespaced(..)}`.
    let mut accessors = Vec::new();
    for (at, _) in code.match_indices("(&self)->Api<") {
        let name = ident_before(&code, at);
        let ty = ident_at(&code, at + "(&self)->Api<".len());
        let (group, resource) = *typed.get(ty).unwrap_or_else(|| {
            panic!(
                "the Kubernetes adapter builds an Api<{ty}> (fn {name}), which this test does not \
                 know: add its group and resource to `adapter_calls` and grant what it calls in \
                 packaging/kubernetes/rbac.yaml"
            )
        });
        accessors.push((name, group, resource));
        constructors += 1;
    }
    assert!(
        accessors.len() >= 3,
        "found only {accessors:?} in the adapter's source: has its shape changed?"
    );
    for (name, group, resource) in &accessors {
        let call = format!("self.{name}()");
        for (at, _) in code.match_indices(&call) {
            let after = at + call.len();
            assert!(
                code[after..].starts_with('.'),
                "`{call}` is used in a way this test cannot follow: {}",
                &code[at..(after + 40).min(code.len())]
            );
            let method = ident_at(&code, after + 1);
            let args_at = after + 1 + method.len();
            let (resource, verb) = rbac_of(resource, method, &code, args_at);
            calls.insert(grant(group, &resource, &verb));
        }
    }

    // Dynamic APIs: `let VAR: Api<DynamicObject> = Api::namespaced_with(..)` over the one
    // `ApiResource { group: "..", plural: "..", .. }`, called as `VAR.METHOD(`.
    let resources: Vec<usize> = code
        .match_indices("ApiResource{")
        .map(|(at, _)| at)
        .collect();
    let dynamic: Vec<usize> = code
        .match_indices(":Api<DynamicObject>=")
        .map(|(at, _)| at)
        .collect();
    assert!(
        resources.len() == 1 && dynamic.len() == 1,
        "this test follows one dynamic API (metrics.k8s.io); the adapter now has {} ApiResource \
         and {} Api<DynamicObject>: extend `adapter_calls`",
        resources.len(),
        dynamic.len()
    );
    let literal = &code[resources[0]..resources[0] + code[resources[0]..].find('}').unwrap()];
    let field = |name: &str| {
        let at = literal
            .find(&format!("{name}:"))
            .unwrap_or_else(|| panic!("ApiResource without `{name}`: {literal}"));
        string_after(literal, at).to_string()
    };
    let (group, plural) = (field("group"), field("plural"));
    let var = ident_before(&code, dynamic[0]);
    constructors += 1;
    let call = format!("{var}.");
    for (at, _) in code.match_indices(&call) {
        // `api.list(` but not `self.api.` or `the_api.`.
        if at > 0 && {
            let c = code.as_bytes()[at - 1];
            c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
        } {
            continue;
        }
        let method = ident_at(&code, at + call.len());
        let (resource, verb) = rbac_of(&plural, method, &code, at + call.len() + method.len());
        calls.insert(grant(&group, &resource, &verb));
    }

    // Nothing else reaches the API server: every `Api::` constructor is one of those above, and
    // the client is used by them only.
    let built = code
        .match_indices("Api::")
        .filter(|(at, _)| *at == 0 || !ident_before(&code, *at).ends_with(char::is_alphanumeric))
        .count();
    assert_eq!(
        built, constructors,
        "the Kubernetes adapter builds an Api this test does not follow (`Api::...` outside the \
         accessors and the one dynamic API): extend `adapter_calls`"
    );
    let client_uses = code.matches("self.client.").count();
    assert_eq!(
        client_uses, constructors,
        "the Kubernetes adapter uses its client other than through an Api (`self.client.`): \
         extend `adapter_calls`"
    );
    calls
}

// ---------------------------------------------------------------------------------------------
// The manifests
// ---------------------------------------------------------------------------------------------

/// Every document of the YAML files, as JSON, read by PyYAML; None (after saying why) when no
/// Python with PyYAML is found.
fn yaml_documents(files: &[&Path]) -> Option<Vec<Value>> {
    const READ: &str = "import sys, json, yaml\n\
        json.dump([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d is not None], sys.stdout)";
    // PATH's python3 first; Debian's (python3-yaml) when PATH has another; the lab's Patroni venv.
    for python in [
        "python3",
        "/usr/bin/python3",
        "/opt/steward-lab/venv/bin/python",
    ] {
        let Ok(out) = Command::new(python)
            .arg("-c")
            .arg(READ)
            .args(files)
            .output()
        else {
            continue;
        };
        if out.status.success() {
            return Some(serde_json::from_slice(&out.stdout).expect("PyYAML's JSON"));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("No module named 'yaml'"),
            "{python} could not read {files:?}:\n{stderr}"
        );
    }
    crate::service_missing(
        "no python3 with PyYAML to read the manifests (apt-get install python3-yaml)",
    );
    None
}

fn manifests() -> Option<Vec<Value>> {
    let dir = repo().join("packaging/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("packaging/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let kustomization = dir.join("kustomization.yaml");
    let docs = yaml_documents(&files.iter().map(|p| p.as_path()).collect::<Vec<_>>())?;
    // kustomization.yaml lists every other file: `kubectl apply -k` applies them all.
    let listed = docs
        .iter()
        .find(|d| d["kind"] == "Kustomization")
        .expect("kustomization.yaml");
    let listed: BTreeSet<&str> = listed["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let present: BTreeSet<String> = files
        .iter()
        .filter(|p| **p != kustomization)
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed,
        present.iter().map(String::as_str).collect(),
        "kustomization.yaml must list every manifest"
    );
    Some(
        docs.into_iter()
            .filter(|d| d["kind"] != "Kustomization")
            .collect(),
    )
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in packaging/kubernetes");
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The ConfigMap's steward.toml.
fn configmap_toml(docs: &[Value]) -> String {
    one(docs, "ConfigMap")["data"]["steward.toml"]
        .as_str()
        .expect("the ConfigMap holds steward.toml")
        .to_string()
}

/// The source reader notices what a change of the adapter would bring: a new call, a new verb
/// it cannot map, an API built outside the accessors.
#[test]
fn the_source_reader_sees_new_calls() {
    let source = r#"
        fn pods(&self) -> Api<Pod> { Api::namespaced(self.client.clone(), &self.config.namespace) }
        fn sets(&self) -> Api<StatefulSet> { Api::namespaced(self.client.clone(), &ns) }
        fn claims(&self) -> Api<PersistentVolumeClaim> { Api::namespaced(self.client.clone(), &ns) }
        async fn f(&self) {
            // self.pods().watch(&lp) in a comment is not a call
            let _ = self.pods()
                .evict(&name, &params);
        }
    "#;
    let evict = std::panic::catch_unwind(|| calls_in(&code_only(source)));
    assert!(evict.is_err(), "an unknown method must stop the test");

    let with_calls = |body: &str| {
        let code = code_only(&source.replace(".evict(&name, &params)", body));
        std::panic::catch_unwind(move || calls_in(&code))
    };
    let ok = r#".get_opt(&name).await; self.sets().patch_subresource("resize", &n, &pp, &p).await;
        let ar = ApiResource { group: "metrics.k8s.io".into(), plural: "nodes".into() };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
        api.get("x")"#;
    let calls = with_calls(ok).expect("known calls");
    assert_eq!(
        calls,
        BTreeSet::from([
            grant("", "pods", "get"),
            grant("apps", "statefulsets/resize", "patch"),
            grant("metrics.k8s.io", "nodes", "get"),
        ])
    );
    let inline = format!("{ok}; Api::<Lease>::namespaced(client, &ns).create(&pp, &l)");
    assert!(
        with_calls(&inline).is_err(),
        "an API built outside the accessors must stop the test"
    );
}

#[test]
fn the_role_grants_exactly_what_the_kubernetes_adapter_calls() {
    let calls = adapter_calls();
    // The parse found the calls the adapter is known for (a sanity check of the parse itself).
    for expected in [
        grant("", "pods", "list"),
        grant("", "pods/resize", "patch"),
        grant("apps", "statefulsets/scale", "patch"),
        grant("", "persistentvolumeclaims", "create"),
        grant("metrics.k8s.io", "pods", "list"),
        grant("coordination.k8s.io", "leases", "update"),
    ] {
        assert!(
            calls.contains(&expected),
            "{expected:?} not found in {calls:?}"
        );
    }
    let Some(docs) = manifests() else { return };
    let role = one(&docs, "Role");
    let config: toml::Table = toml::from_str(&configmap_toml(&docs)).expect("steward.toml");
    let kube = &config["platform"]["kubernetes"];
    let sets: BTreeSet<&str> = ["database", "balancer"]
        .iter()
        .filter_map(|role| kube.get(role)?.get("statefulset")?.as_str())
        .collect();
    // The Lease of `[lease] kind = "kubernetes"`: `name`, else `steward-<scope>`.
    let lease = &config["lease"];
    assert_eq!(lease["kind"].as_str(), Some("kubernetes"), "{lease}");
    let lease_name = match lease.get("name") {
        Some(name) => name.as_str().unwrap().to_string(),
        None => format!("steward-{}", lease["scope"].as_str().unwrap()),
    };
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let (groups, resources, verbs) = (
            strings(&rule["apiGroups"]),
            strings(&rule["resources"]),
            strings(&rule["verbs"]),
        );
        for list in [&groups, &resources, &verbs] {
            assert!(!list.contains(&"*"), "no wildcard in the Role: {rule}");
        }
        if let Some(names) = rule.get("resourceNames") {
            // Only the configured StatefulSets, or the one Lease, by name.
            let names: BTreeSet<&str> = strings(names).into_iter().collect();
            let expected = if resources == ["leases"] {
                BTreeSet::from([lease_name.as_str()])
            } else {
                sets.clone()
            };
            assert_eq!(
                names, expected,
                "resourceNames must be the ConfigMap's StatefulSets or Lease: {rule}"
            );
        } else {
            // A create is authorized before its object has a name: it cannot be narrowed.
            assert!(
                !resources.contains(&"leases") || verbs == ["create"],
                "leases other than create are narrowed to the Lease's name: {rule}"
            );
        }
        for g in &groups {
            for r in &resources {
                for v in &verbs {
                    granted.insert(grant(g, r, v));
                }
            }
        }
    }
    let missing: Vec<_> = calls.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&calls).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "packaging/kubernetes/rbac.yaml must grant exactly what the adapter calls\n\
         called, not granted: {missing:?}\ngranted, not called: {unused:?}"
    );
}

#[test]
fn the_kubernetes_manifests_agree_and_their_config_is_valid() {
    let Some(docs) = manifests() else { return };
    let namespace = "databases";
    for d in &docs {
        assert_eq!(
            d["metadata"]["namespace"], namespace,
            "{} {} in namespace {namespace}",
            d["kind"], d["metadata"]["name"]
        );
    }
    let account = one(&docs, "ServiceAccount")["metadata"]["name"].clone();
    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(
        binding["roleRef"]["name"],
        one(&docs, "Role")["metadata"]["name"]
    );
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], account);

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let image = format!("steward:{}", env!("CARGO_PKG_VERSION"));
    let steward = pod["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "steward"))
        .expect("a container named steward");
    assert_eq!(steward["image"], image.as_str(), "scripts/image.sh's tag");
    assert_eq!(steward["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        strings(&steward["args"])[..3],
        ["run", "--config", "/etc/steward/steward.toml"]
    );

    // The config: valid, in the namespace of the manifests, its state folder a mounted volume,
    // its server where the probes look.
    let text = configmap_toml(&docs);
    let config: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        config["platform"]["kubernetes"]["namespace"].as_str(),
        Some(namespace)
    );
    let state_dir = config["cluster"]["state_dir"].as_str().unwrap();
    let mounted: Vec<&str> = steward["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(
        mounted.contains(&state_dir),
        "{state_dir} is a volume: {mounted:?}"
    );
    let port = steward["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(
        config["server"]["listen"].as_str(),
        Some(format!("0.0.0.0:{port}").as_str())
    );
    assert_eq!(steward["livenessProbe"]["httpGet"]["path"], "/healthz");
    // Each pod's lease instance is its own name, from the downward API: one ConfigMap for
    // every replica (`[lease] instance_env`), checked by the init container as by `run`.
    let env_var = config["lease"]["instance_env"]
        .as_str()
        .expect("[lease] instance_env");
    let init = pod["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "check-config"))
        .expect("an init container check-config");
    for container in [steward, init] {
        let from_pod_name = container["env"].as_array().is_some_and(|env| {
            env.iter().any(|e| {
                e["name"] == env_var && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            })
        });
        assert!(
            from_pod_name,
            "{} sets {env_var} from metadata.name",
            container["name"]
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["check-config", path.to_str().unwrap()])
        .env(env_var, "steward-7d9f8-abcde")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the ConfigMap's steward.toml is not valid:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the variable (not in a pod): refused, naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["check-config", path.to_str().unwrap()])
        .env_remove(env_var)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("`{env_var}` is not set")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The systemd unit
// ---------------------------------------------------------------------------------------------

#[test]
fn the_systemd_unit_is_sandboxed_and_keeps_its_state_in_its_state_directory() {
    let unit_path = repo().join("packaging/systemd/steward.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let has = |key: &str, value: &str| settings.contains(&(key, value));
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "steward"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("Restart", "on-failure"),
        (
            "ExecStartPre",
            "/usr/local/bin/steward check-config /etc/steward/steward.toml",
        ),
    ] {
        assert!(has(key, value), "steward.service must say {key}={value}");
    }
    // The example config's state folder is the StateDirectory.
    assert!(
        unit.contains("#   state_dir = \"/var/lib/steward\""),
        "the example config names /var/lib/steward"
    );

    // `systemd-analyze verify` needs no running systemd; it checks that ExecStart's program
    // exists, so a copy points at the test's binary. Not every machine has it: said, not failed.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("steward.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/steward", env!("CARGO_BIN_EXE_steward")),
    )
    .unwrap();
    let drop_in = dir.path().join("steward.service.d");
    std::fs::create_dir(&drop_in).unwrap();
    std::fs::copy(
        repo().join("packaging/systemd/loop-xfs.conf"),
        drop_in.join("loop-xfs.conf"),
    )
    .unwrap();
    for (what, env, arg) in [
        ("the unit", "", copy.to_str().unwrap()),
        (
            "the unit with loop-xfs.conf",
            dir.path().to_str().unwrap(),
            "steward.service",
        ),
    ] {
        let mut verify = Command::new("systemd-analyze");
        verify.args(["verify", arg]);
        if !env.is_empty() {
            verify.env("SYSTEMD_UNIT_PATH", format!("{env}:"));
        }
        match verify.output() {
            Err(_) => {
                eprintln!("systemd-analyze is not installed: {what} not verified");
                return;
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success() && stderr.trim().is_empty(),
                    "systemd-analyze verify {what}:\n{stderr}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The image as the lab's sidecar
// ---------------------------------------------------------------------------------------------

/// The image the e2e test runs: `STEWARD_IMAGE`, else scripts/image.sh's default tag.
fn image() -> String {
    std::env::var("STEWARD_IMAGE")
        .unwrap_or_else(|_| format!("steward:{}", env!("CARGO_PKG_VERSION")))
}

/// The image's user (scripts/image.sh): the files it is handed are made its own.
const IMAGE_USER: u32 = 65532;

/// `steward run` from the image, as the lab's sidecar container: host networking (Patroni,
/// Prometheus and the API on loopback), the lab's two Docker engines' sockets (the image's
/// non-root user in the sockets' group), the config read-only, a state folder from the host.
/// It must serve `/healthz` and `/status`, see the lab's members through Patroni and Docker, and
/// stop cleanly on `docker stop`.
#[tokio::test]
async fn e2e_the_image_runs_steward_as_a_sidecar_of_the_lab() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let Some(urls) = lab() else { return };
    let image = image();
    let inspect = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", &image])
        .output()
        .expect("docker runs");
    assert!(
        inspect.status.success(),
        "no image {image}: build it with scripts/image.sh (scripts/test.sh does, from the test \
         build's binary: scripts/image.sh --binary target/debug/steward)"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chown(&state, Some(IMAGE_USER), Some(IMAGE_USER)).unwrap();
    let token = dir.path().join("api.token");
    std::fs::write(&token, "sidecar-token-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(&token, Some(IMAGE_USER), Some(IMAGE_USER)).unwrap();
    let port = free_port();
    // tests/data/e2e/lab.toml with paths as the container sees them.
    let config = write_config_with(dir.path(), Path::new("/var/lib/steward"), |doc| {
        let mut server = toml::Table::new();
        server.insert("listen".into(), format!("127.0.0.1:{port}").into());
        server.insert("token_file".into(), "/etc/steward/api.token".into());
        doc.insert("server".into(), toml::Value::Table(server));
    });
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    // Every engine of the config, mounted where the config says; the user in their group.
    let text = std::fs::read_to_string(&config).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let sockets: Vec<String> = doc["platform"]["docker"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["endpoint"].as_str()?.strip_prefix("unix://"))
        .map(str::to_string)
        .collect();
    assert_eq!(sockets.len(), 2, "the lab's two engines");
    let group = std::fs::metadata(&sockets[0]).unwrap().gid().to_string();
    let name = format!("steward-sidecar-{port}");
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "--user",
        &format!("{IMAGE_USER}:{IMAGE_USER}"),
        "--group-add",
        &group,
        "--read-only",
        "-v",
        &format!("{}:/etc/steward/steward.toml:ro", config.display()),
        "-v",
        &format!("{}:/etc/steward/api.token:ro", token.display()),
        "-v",
        &format!("{}:/var/lib/steward", state.display()),
        // The members' OOM-kill counters.
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        // The loop-xfs images' sizes (growing them needs root and mount tools the image lacks).
        "-v",
        "/var/lib/steward-lab/disks:/var/lib/steward-lab/disks:ro",
    ]
    .map(String::from)
    .to_vec();
    for socket in &sockets {
        args.extend(["-v".into(), format!("{socket}:{socket}")]);
    }
    args.extend(
        [
            &image,
            "run",
            "--config",
            "/etc/steward/steward.toml",
            "--log",
            "info",
        ]
        .map(String::from),
    );
    let started = Command::new("docker").args(&args).output().unwrap();
    assert!(
        started.status.success(),
        "docker {args:?}:\n{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let container = Container(name.clone());

    let api = Api::new(port);
    // Every lab member seen through Patroni (host network) and the platform (the mounted
    // sockets), one leader, and no note that the platform failed: the first observation may
    // still lack a late source, so wait for one that has them all.
    let seen = |status: &Value| -> Result<(), String> {
        let members = status["members"].as_array().ok_or("no members")?;
        for lab_member in crate::e2e::LAB_MEMBERS {
            let m = members
                .iter()
                .find(|m| m["name"] == lab_member)
                .ok_or(format!("{lab_member} not listed"))?;
            if m["patroni_role"].is_null() || m["platform_state"] != "running" {
                return Err(format!("{lab_member}: {m}"));
            }
        }
        let leaders = members
            .iter()
            .filter(|m| m["patroni_role"] == "leader")
            .count();
        let notes = status["notes"].to_string();
        match leaders {
            1 if !notes.contains("platform list") && !notes.contains("platform usage") => Ok(()),
            1 => Err(format!("the platform did not answer: {notes}")),
            n => Err(format!("{n} leaders")),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let why = match api.try_status().await {
            Some(s) if !s["observed_at"].is_null() => match seen(&s) {
                Ok(()) => break s,
                Err(why) => format!("{why}; /status: {s}"),
            },
            Some(_) => "no observation yet".to_string(),
            None => "/status does not answer".to_string(),
        };
        assert!(
            container.running(),
            "the sidecar exited:\n{}",
            container.logs()
        );
        assert!(
            Instant::now() < deadline,
            "the sidecar's /status did not show the lab within 60 s: {why}\n{}",
            container.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(api.healthz().await, 200, "{}", container.logs());
    assert_eq!(status["cluster"], "steward-lab");

    // `docker stop` is SIGTERM: exit 0, nothing left open in the journal on the host's folder.
    let stop = Command::new("docker")
        .args(["stop", "-t", "60", &name])
        .output()
        .unwrap();
    assert!(stop.status.success(), "docker stop {name}");
    let code = Command::new("docker")
        .args(["inspect", "-f", "{{.State.ExitCode}}", &name])
        .output()
        .unwrap();
    let logs = container.logs();
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "exit code on SIGTERM:\n{logs}"
    );
    assert!(
        open_journal_records(&state).is_empty(),
        "operations left open:\n{logs}"
    );
    assert!(
        state.join("active").is_dir(),
        "the journal is in the mounted state folder:\n{logs}"
    );
    drop(container);
    // Whatever the sidecar did to the lab is undone for the next test.
    restore(&crate::e2e::platform().await, &crate::e2e::patroni(urls)).await;
}

/// A named container, removed when dropped (also when the test fails).
struct Container(String);

impl Container {
    fn running(&self) -> bool {
        Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", &self.0])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
    }

    fn logs(&self) -> String {
        Command::new("docker")
            .args(["logs", &self.0])
            .output()
            .map(|o| {
                format!(
                    "--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}
