//! HAProxy Runtime API answers, served over a unix socket to the real client: each connection
//! (one command) is answered by the next NUL-separated part of the input, in turn. Every verb
//! the balancer sync uses runs once (`show servers state` and its parser, `add server`,
//! `enable health` / `set server` / `del server` and the refusal recognizer), then the sync's
//! plan over what the listing said.
//!
//! Invariant: nothing panics.
#![no_main]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use steward_adapters::haproxy::{
    parse_servers_state, AdminState, Balancer, Change, CheckWait, Endpoint, HealthCheck, Refusal,
    RuntimeApi, ServerSpec,
};
use steward_model::observation::PlatformState;
use steward_model::ports::PlatformMember;
use steward_model::{Role, Size};
use steward_runtime::run::balancers::{plan, Held};

struct Fixture {
    answers: Arc<Mutex<Vec<Vec<u8>>>>,
    next: Arc<AtomicUsize>,
    api: RuntimeApi,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path: PathBuf = steward_fuzz::scratch_dir("haproxy").join("admin.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the socket");
        let answers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let (a, n) = (answers.clone(), next.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // The command line first, as HAProxy reads it.
                let mut command = String::new();
                let _ = BufReader::new(&stream).read_line(&mut command);
                let answers = a.lock().unwrap_or_else(|p| p.into_inner());
                let i = n.fetch_add(1, Ordering::SeqCst);
                if let Some(answer) = answers.get(i % answers.len().max(1)) {
                    let _ = stream.write_all(answer);
                }
            }
        });
        let api = RuntimeApi::new(Endpoint::Unix(path))
            .with_timeouts(Duration::from_secs(5), Duration::from_secs(5));
        Fixture { answers, next, api }
    })
}

fuzz_target!(|data: &[u8]| {
    // The parsers alone, on the whole input.
    let text = String::from_utf8_lossy(data);
    let _ = Refusal::of_answer(&text).class();
    let listing = parse_servers_state(&text);

    let f = fixture();
    *f.answers.lock().unwrap_or_else(|p| p.into_inner()) =
        data.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    f.next.store(0, Ordering::SeqCst);
    let backend = "replicas".to_string();
    let changes = [
        Change::Add {
            backend: backend.clone(),
            server: ServerSpec {
                name: "m1".into(),
                addr: "127.0.0.78:5432".parse().expect("an address"),
                check: Some(HealthCheck::patroni()),
            },
        },
        Change::EnableAfterCheck {
            backend: backend.clone(),
            server: "m1".into(),
            // No waiting: one look, then the verdict.
            wait: CheckWait {
                timeout: Duration::ZERO,
                poll: Duration::ZERO,
            },
        },
        Change::SetState {
            backend: backend.clone(),
            server: "m1".into(),
            state: AdminState::Drain,
        },
        Change::Delete {
            backend: backend.clone(),
            server: "m1".into(),
        },
    ];
    steward_fuzz::runtime().block_on(async {
        let mut listed = None;
        if let Ok(servers) = f.api.servers(&backend).await {
            listed = Some(servers);
        }
        for change in &changes {
            if let Err(e) = change.apply_to(&f.api).await {
                let _ = (e.class(), e.refusal(), e.to_string());
            }
        }
        // What the sync plans over a listing.
        if let Some(servers) = listed.or(listing.ok()) {
            let members: Vec<PlatformMember> = servers
                .iter()
                .map(|s| PlatformMember {
                    name: s.name.clone(),
                    cluster: "demo".into(),
                    role: Role::Database,
                    size: Size {
                        cpus: 1.0,
                        memory_bytes: 1 << 30,
                        disk_bytes: 0,
                    },
                    state: PlatformState::Running,
                    address: s.addr.clone(),
                    host: String::new(),
                    labels: Default::default(),
                    created_at: None,
                    restart_count: 0,
                })
                .collect();
            let mut held = Held::default();
            held.add_listing(servers.clone());
            let names: BTreeSet<String> = servers.iter().map(|s| s.name.clone()).collect();
            let _ = plan(
                &members[..members.len() / 2],
                &held,
                &names,
                &names,
                &names,
                5432,
            );
        }
    });
});
