//! The HAProxy Runtime API client against real HAProxy 2.6 processes: one started per test on
//! loopback, with a temp config (runtime API on a unix socket, and on TCP where a test needs it)
//! and backends checked with `OPTIONS /replica` against a tiny HTTP responder the test runs, so
//! a check passes or fails on the test's command. Each HAProxy is killed when its guard drops,
//! also when the test fails.
//!
//! A missing `haproxy` binary fails these tests (`crate::service_missing`; scripts/test.sh
//! installs Debian's `haproxy`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use steward_model::ports::ErrorKind;

use steward_adapters::haproxy::{
    AdminState, Balancer, BalancerSet, Change, CheckResult, CheckWait, Endpoint, HaproxyError,
    HealthCheck, Operational, Refusal, RuntimeApi, ServerSpec, ServerState, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// The `haproxy` binary, or `None` (skip) where `crate::service_missing` allows it.
fn haproxy_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None => {
            crate::service_missing("no haproxy binary (Debian's haproxy)");
            None
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1 (the listener is closed before returning).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A tiny HTTP server standing in for Patroni's REST API: answers every request with the
/// current status (200 or 503) and counts the requests, remembering the last request line.
struct Responder {
    port: u16,
    status: Arc<AtomicU16>,
    requests: Arc<AtomicUsize>,
    last_request: Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    async fn start(status: u16) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(status));
        let requests = Arc::new(AtomicUsize::new(0));
        let last_request = Arc::new(std::sync::Mutex::new(String::new()));
        let (st, rq, last) = (status.clone(), requests.clone(), last_request.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (st, rq, last) = (st.clone(), rq.clone(), last.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = 0;
                    while got < buf.len() {
                        match conn.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let text = String::from_utf8_lossy(&buf[..got]);
                    *last.lock().unwrap() = text.lines().next().unwrap_or_default().to_string();
                    rq.fetch_add(1, Ordering::SeqCst);
                    let code = st.load(Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        Responder {
            port,
            status,
            requests,
            last_request,
            task,
        }
    }

    fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One real HAProxy. Dropping it kills the process (the guard that runs on test failure too).
struct Haproxy {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    frontend: Option<SocketAddr>,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SIGKILL; tokio reaps the child in the background. kill_on_drop is set as well.
        let _ = self.child.start_kill();
    }
}

struct Options {
    /// Also listen for the runtime API on a loopback TCP port.
    tcp: bool,
    /// A frontend on a loopback port that forwards to the `replicas` backend.
    frontend: bool,
}

impl Haproxy {
    async fn start(options: Options) -> Option<Haproxy> {
        let binary = haproxy_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let tcp = if options.tcp {
            Some(SocketAddr::from(([127, 0, 0, 1], free_port().await)))
        } else {
            None
        };
        let frontend = if options.frontend {
            Some(SocketAddr::from(([127, 0, 0, 1], free_port().await)))
        } else {
            None
        };
        let tcp_line = tcp
            .map(|a| format!("    stats socket ipv4@{a} level admin\n"))
            .unwrap_or_default();
        let frontend_section = frontend
            .map(|a| format!("frontend reads\n    bind {a}\n    default_backend replicas\n"))
            .unwrap_or_default();
        // The backends as in lab/haproxy.cfg.tmpl: OPTIONS checks against Patroni's roles.
        let config = format!(
            "global\n\
             \x20   stats socket {sock} mode 600 level admin\n\
             {tcp_line}\
             \x20   stats timeout 10s\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 1s\n\
             \x20   timeout client 10s\n\
             \x20   timeout server 10s\n\
             \x20   timeout check 1s\n\
             {frontend_section}\
             backend replicas\n\
             \x20   balance leastconn\n\
             \x20   option httpchk OPTIONS /replica\n\
             \x20   http-check expect status 200\n\
             backend primary\n\
             \x20   option httpchk OPTIONS /primary\n\
             \x20   http-check expect status 200\n\
             backend fixed\n\
             \x20   balance static-rr\n",
            sock = socket.display(),
        );
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(binary)
            .arg("-f")
            .arg(&config_path)
            .arg("-db")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut haproxy = Haproxy {
            child,
            dir,
            socket,
            tcp,
            frontend,
        };
        haproxy.wait_ready().await;
        Some(haproxy)
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("haproxy exited ({status}): {}", self.log());
            }
            let unix_ok = self.unix().servers("replicas").await.is_ok();
            let tcp_ok = match self.tcp {
                Some(_) => self.tcp_api().servers("replicas").await.is_ok(),
                None => true,
            };
            if unix_ok && tcp_ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "haproxy not ready after 10 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills HAProxy and waits until it has exited: its sockets are closed when this returns.
    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    fn unix(&self) -> RuntimeApi {
        RuntimeApi::new(Endpoint::Unix(self.socket.clone()))
    }

    fn tcp_api(&self) -> RuntimeApi {
        RuntimeApi::new(Endpoint::Tcp(self.tcp.expect("started with tcp")))
    }
}

/// The real client, counting the warm-ups the trait's provided methods ask for.
struct CountingWarmUps {
    inner: RuntimeApi,
    warm_ups: AtomicUsize,
}

#[async_trait::async_trait]
impl Balancer for CountingWarmUps {
    async fn servers(&self, backend: &str) -> Result<Vec<ServerState>, HaproxyError> {
        self.inner.servers(backend).await
    }
    async fn add_server(&self, backend: &str, server: &ServerSpec) -> Result<(), HaproxyError> {
        self.inner.add_server(backend, server).await
    }
    async fn warm_up(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        self.warm_ups.fetch_add(1, Ordering::SeqCst);
        self.inner.warm_up(backend, server).await
    }
    async fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), HaproxyError> {
        self.inner.set_state(backend, server, state).await
    }
    async fn delete_server(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        self.inner.delete_server(backend, server).await
    }
}

/// A fast check against the responder, so a test waits hundreds of milliseconds, not seconds.
fn fast_check(port: u16) -> HealthCheck {
    HealthCheck {
        port: Some(port),
        inter: Duration::from_millis(100),
        fastinter: Duration::from_millis(100),
        downinter: Duration::from_millis(100),
        rise: 2,
        fall: 2,
        shutdown_sessions_on_down: true,
    }
}

fn spec(name: &str, port: u16, check_port: u16) -> ServerSpec {
    ServerSpec {
        name: name.to_string(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        check: Some(fast_check(check_port)),
    }
}

const WAIT: CheckWait = CheckWait {
    timeout: Duration::from_secs(10),
    poll: Duration::from_millis(50),
};

async fn state_of(api: &dyn Balancer, backend: &str, name: &str) -> Option<Status> {
    api.servers(backend)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.status())
}

#[tokio::test]
async fn an_added_server_starts_in_maintenance_and_is_listed_so() {
    let Some(hx) = Haproxy::start(Options {
        tcp: true,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let responder = Responder::start(200).await;
    let api = hx.tcp_api();
    assert_eq!(api.servers("replicas").await.unwrap(), vec![]);

    api.add_server("replicas", &spec("lab-pg-4", 5432, responder.port))
        .await
        .unwrap();

    // Through the other socket too: it is the same process, read another way.
    for reader in [hx.tcp_api(), hx.unix()] {
        let servers = reader.servers("replicas").await.unwrap();
        assert_eq!(servers.len(), 1);
        let s = &servers[0];
        assert_eq!(
            (s.name.as_str(), s.addr.as_str(), s.port),
            ("lab-pg-4", "127.0.0.1", 5432)
        );
        assert_eq!(s.status(), Status::Maint);
        assert_eq!(s.operational, Operational::Down);
        assert!(!s.takes_traffic());
        assert!(s.check_configured, "check was asked for");
        assert!(!s.check_enabled, "a dynamic server's check starts disabled");
    }
    assert_eq!(
        api.servers("primary").await.unwrap(),
        vec![],
        "other backends untouched"
    );
}

#[tokio::test]
async fn enable_after_check_lets_the_server_in_only_after_passing_checks() {
    let Some(hx) = Haproxy::start(Options {
        tcp: false,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let responder = Responder::start(200).await;
    let api = hx.unix();
    api.add_server("replicas", &spec("m1", 5432, responder.port))
        .await
        .unwrap();
    assert_eq!(
        responder.requests(),
        0,
        "no check runs before it is enabled"
    );

    let state = api
        .enable_after_check("replicas", "m1", WAIT)
        .await
        .unwrap();

    assert_eq!(state.status(), Status::Up);
    assert_eq!(state.operational, Operational::Up);
    assert_eq!(state.check_result, CheckResult::Passed);
    assert!(state.check_enabled && state.takes_traffic());
    // Health was forced down, so `rise` (2) passing checks were needed to come up.
    assert!(responder.requests() >= 2, "{} checks", responder.requests());
    let line = responder.last_request.lock().unwrap().clone();
    assert!(
        line.starts_with("OPTIONS /replica "),
        "the backend's check: {line:?}"
    );

    // Level-triggered: a second call leaves a server that takes traffic alone (no new
    // warm-up, which would pull it out of rotation until `rise` checks pass again).
    let counting = CountingWarmUps {
        inner: api.clone(),
        warm_ups: AtomicUsize::new(0),
    };
    let again = counting
        .enable_after_check("replicas", "m1", WAIT)
        .await
        .unwrap();
    assert_eq!(counting.warm_ups.load(Ordering::SeqCst), 0);
    assert!(again.takes_traffic());
}

#[tokio::test]
async fn a_failing_check_keeps_the_server_out_until_it_passes() {
    let Some(hx) = Haproxy::start(Options {
        tcp: false,
        frontend: false,
    })
    .await
    else {
        return;
    };
    // Patroni answers 503 to /replica on a member that is not a streaming replica.
    let responder = Responder::start(503).await;
    let api = hx.unix();
    api.add_server("replicas", &spec("m1", 5432, responder.port))
        .await
        .unwrap();

    let short = CheckWait {
        timeout: Duration::from_millis(1500),
        poll: Duration::from_millis(50),
    };
    let err = api
        .enable_after_check("replicas", "m1", short)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorKind::Transient, "{err}");
    let HaproxyError::CheckNotPassed {
        last: Some(last), ..
    } = &err
    else {
        panic!("expected CheckNotPassed, got {err:?}");
    };
    assert_eq!(last.check_result, CheckResult::Failed);
    assert_eq!(last.operational, Operational::Down);
    assert_eq!(
        last.status(),
        Status::Drain,
        "left warming up: drained, checked"
    );
    assert!(!last.takes_traffic());
    assert!(
        responder.requests() >= 2,
        "checks ran: {}",
        responder.requests()
    );

    // The member becomes a replica: the same call, retried, now lets it in.
    responder.set_status(200);
    let state = api
        .enable_after_check("replicas", "m1", WAIT)
        .await
        .unwrap();
    assert_eq!(state.status(), Status::Up);
}

#[tokio::test]
async fn warming_up_again_forgets_earlier_passing_checks() {
    let Some(hx) = Haproxy::start(Options {
        tcp: false,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let responder = Responder::start(200).await;
    let api = hx.unix();
    api.add_server("replicas", &spec("m1", 5432, responder.port))
        .await
        .unwrap();
    api.enable_after_check("replicas", "m1", WAIT)
        .await
        .unwrap();
    api.set_state("replicas", "m1", AdminState::Maint)
        .await
        .unwrap();
    let parked = api.servers("replicas").await.unwrap().remove(0);
    assert_eq!(
        parked.check_result,
        CheckResult::Passed,
        "the stale verdict"
    );

    // Leaving maintenance would count it UP at once on that stale verdict; warm_up must not.
    api.warm_up("replicas", "m1").await.unwrap();
    let warming = api.servers("replicas").await.unwrap().remove(0);
    assert_eq!(warming.operational, Operational::Down, "{warming:?}");
    assert_eq!(warming.status(), Status::Drain);
    assert_eq!(warming.check_health, 0, "rise passing checks needed again");
}

#[tokio::test]
async fn a_warming_server_takes_no_connection_until_ready() {
    let Some(hx) = Haproxy::start(Options {
        tcp: false,
        frontend: true,
    })
    .await
    else {
        return;
    };
    let responder = Responder::start(200).await;
    // The "database": says hello to whoever connects.
    let db = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let db_port = db.local_addr().unwrap().port();
    let db_task = tokio::spawn(async move {
        while let Ok((mut c, _)) = db.accept().await {
            let _ = c.write_all(b"hello").await;
        }
    });
    let frontend = hx.frontend.unwrap();
    let through_haproxy = || async move {
        let mut c = tokio::net::TcpStream::connect(frontend).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut got)).await;
        match read {
            Ok(Ok(_)) => String::from_utf8_lossy(&got).into_owned(),
            // Reset by HAProxy: no server to send it to.
            Ok(Err(_)) => String::new(),
            Err(_) => panic!("no answer through haproxy within 3 s"),
        }
    };

    let api = hx.unix();
    api.add_server("replicas", &spec("m1", db_port, responder.port))
        .await
        .unwrap();
    assert_eq!(through_haproxy().await, "", "in maintenance");

    // Warm up and wait until its checks pass: up, but drained, so still no connection.
    api.warm_up("replicas", "m1").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = api.servers("replicas").await.unwrap().remove(0);
        if s.operational == Operational::Up {
            assert_eq!(s.status(), Status::Drain);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never came up: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(through_haproxy().await, "", "up but draining");

    api.set_state("replicas", "m1", AdminState::Ready)
        .await
        .unwrap();
    assert_eq!(through_haproxy().await, "hello", "ready");
    db_task.abort();
}

#[tokio::test]
async fn drain_then_delete_and_delete_again() {
    let Some(hx) = Haproxy::start(Options {
        tcp: false,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let responder = Responder::start(200).await;
    let api = hx.unix();
    for name in ["m1", "m2"] {
        api.add_server("replicas", &spec(name, 5432, responder.port))
            .await
            .unwrap();
        api.enable_after_check("replicas", name, WAIT)
            .await
            .unwrap();
    }

    api.set_state("replicas", "m1", AdminState::Drain)
        .await
        .unwrap();
    let m1 = api.servers("replicas").await.unwrap().remove(0);
    assert_eq!(m1.status(), Status::Drain);
    assert_eq!(
        m1.operational,
        Operational::Up,
        "checks go on while draining"
    );
    assert!(!m1.takes_traffic());

    // `del server` alone is refused outside maintenance; the verb puts it there first.
    let api_ref: &dyn Balancer = &api;
    api_ref.delete_server("replicas", "m1").await.unwrap();
    assert_eq!(state_of(api_ref, "replicas", "m1").await, None);
    assert_eq!(state_of(api_ref, "replicas", "m2").await, Some(Status::Up));

    let again = api.delete_server("replicas", "m1").await.unwrap_err();
    assert_eq!(again.refusal(), Some(Refusal::NoSuchServer), "{again}");
    assert_eq!(again.class(), ErrorKind::NotFound);
    // As a change it is idempotent: already gone is done.
    let delete = Change::Delete {
        backend: "replicas".into(),
        server: "m1".into(),
    };
    delete.apply_to(&api).await.unwrap();
}

#[tokio::test]
async fn refusals_are_classified() {
    let Some(hx) = Haproxy::start(Options {
        tcp: true,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let api = hx.tcp_api();
    let s = spec("m1", 5432, 8008);

    let e = api.servers("nope").await.unwrap_err();
    assert_eq!(
        (e.refusal(), e.class()),
        (Some(Refusal::NoSuchBackend), ErrorKind::NotFound),
        "{e}"
    );
    let e = api.add_server("nope", &s).await.unwrap_err();
    assert_eq!(
        (e.refusal(), e.class()),
        (Some(Refusal::NoSuchBackend), ErrorKind::NotFound),
        "{e}"
    );
    let e = api
        .set_state("replicas", "ghost", AdminState::Ready)
        .await
        .unwrap_err();
    assert_eq!(
        (e.refusal(), e.class()),
        (Some(Refusal::NoSuchServer), ErrorKind::NotFound),
        "{e}"
    );

    let e = api.add_server("fixed", &s).await.unwrap_err();
    assert_eq!(
        (e.refusal(), e.class()),
        (Some(Refusal::NotDynamicBackend), ErrorKind::Permanent),
        "static-rr cannot take dynamic servers: {e}"
    );

    api.add_server("replicas", &s).await.unwrap();
    let e = api.add_server("replicas", &s).await.unwrap_err();
    assert_eq!(
        (e.refusal(), e.class()),
        (Some(Refusal::AlreadyExists), ErrorKind::Conflict),
        "{e}"
    );

    let unchecked = ServerSpec {
        check: None,
        ..spec("bare", 5432, 8008)
    };
    api.add_server("replicas", &unchecked).await.unwrap();
    let e = api
        .enable_after_check("replicas", "bare", WAIT)
        .await
        .unwrap_err();
    assert_eq!(
        (e.refusal(), e.class()),
        (Some(Refusal::NoHealthCheck), ErrorKind::Permanent),
        "{e}"
    );

    // Refused before anything is sent: a name that would smuggle a second command.
    let e = api
        .set_state("replicas", "m1;shutdown", AdminState::Maint)
        .await
        .unwrap_err();
    assert!(matches!(e, HaproxyError::Invalid { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorKind::Permanent);
    assert_eq!(
        state_of(&api, "replicas", "m1").await,
        Some(Status::Maint),
        "untouched"
    );
}

#[tokio::test]
async fn haproxy_not_running_is_transient() {
    let Some(hx) = Haproxy::start(Options {
        tcp: true,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let (tcp, unix) = (hx.tcp_api(), hx.unix());
    tcp.servers("replicas").await.unwrap();
    hx.stop().await; // also removes the unix socket's folder

    let err = tcp.servers("replicas").await.unwrap_err();
    assert!(matches!(err, HaproxyError::Connect { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorKind::Transient, "{err:?}");
    let err = unix.servers("replicas").await.unwrap_err();
    assert!(matches!(err, HaproxyError::Connect { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorKind::Transient, "{err:?}");
}

#[tokio::test]
async fn a_socket_that_accepts_but_never_answers_times_out() {
    // What a paused HAProxy looks like: the kernel accepts, nobody answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let api = RuntimeApi::new(Endpoint::Tcp(addr))
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let err = api.servers("replicas").await.unwrap_err();
    assert!(matches!(err, HaproxyError::Timeout { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorKind::Transient);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    hold.abort();
}

#[tokio::test]
async fn a_balancer_set_keeps_both_in_step_and_names_the_one_that_failed() {
    let Some(a) = Haproxy::start(Options {
        tcp: true,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let Some(b) = Haproxy::start(Options {
        tcp: false,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let responder = Responder::start(200).await;
    let gone = Path::new("/nonexistent/steward-test/admin.sock").to_path_buf();
    let dead: Arc<dyn Balancer> = Arc::new(RuntimeApi::new(Endpoint::Unix(gone)));
    let pair = BalancerSet::new()
        .with("lab-haproxy-1", Arc::new(a.tcp_api()))
        .with("lab-haproxy-2", Arc::new(b.unix()));
    let with_dead = pair.clone().with("lab-haproxy-3", dead);

    let add = Change::Add {
        backend: "replicas".into(),
        server: spec("lab-pg-4", 5432, responder.port),
    };
    let report = with_dead.apply(&add).await;
    assert_eq!(report.applied, ["lab-haproxy-1", "lab-haproxy-2"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, "lab-haproxy-3");
    assert_eq!(report.failed[0].1.class(), ErrorKind::Transient);
    assert!(!report.all_applied());

    // A retry is idempotent: already there with the same address is done.
    let again = pair.apply(&add).await;
    assert!(again.all_applied(), "{:?}", again.failed);
    // The same name with another address is not.
    let other = Change::Add {
        backend: "replicas".into(),
        server: spec("lab-pg-4", 6432, responder.port),
    };
    let clash = pair.apply(&other).await;
    assert_eq!(clash.failed.len(), 2);
    for (_, e) in &clash.failed {
        assert!(matches!(e, HaproxyError::AddressMismatch { .. }), "{e:?}");
        assert_eq!(e.class(), ErrorKind::Conflict);
    }

    let enable = Change::EnableAfterCheck {
        backend: "replicas".into(),
        server: "lab-pg-4".into(),
        wait: WAIT,
    };
    assert!(pair.apply(&enable).await.all_applied());
    for api in [a.tcp_api(), b.unix()] {
        assert_eq!(
            state_of(&api, "replicas", "lab-pg-4").await,
            Some(Status::Up)
        );
    }

    let delete = Change::Delete {
        backend: "replicas".into(),
        server: "lab-pg-4".into(),
    };
    assert!(pair.apply(&delete).await.all_applied());
    for api in [a.tcp_api(), b.unix()] {
        assert_eq!(api.servers("replicas").await.unwrap(), vec![]);
    }
}

/// The lab's variables (`eval "$(scripts/lab.sh env)"`), or `None` (skip) when they are
/// missing and `crate::service_missing` allows it.
fn lab_env<const N: usize>(names: [&str; N]) -> Option<[String; N]> {
    let values = names.map(|n| std::env::var(n).ok());
    if values.iter().all(Option::is_some) {
        return Some(values.map(Option::unwrap));
    }
    crate::service_missing("no lab (`scripts/lab.sh up; eval \"$(scripts/lab.sh env)\"`)");
    None
}

/// The lab's two real balancers (scripts/lab.sh; `HAPROXY_RUNTIME_APIS`, `STEWARD_LAB_MEMBERS`):
/// they list the same members, and their real backends take a dynamic server. The probe is
/// added in maintenance and deleted again, so it never takes traffic nor changes the lab's health.
#[tokio::test]
async fn the_lab_balancers_list_the_same_members_and_take_dynamic_servers() {
    let Some([apis, members]) = lab_env(["HAPROXY_RUNTIME_APIS", "STEWARD_LAB_MEMBERS"]) else {
        return;
    };
    let mut set = BalancerSet::new();
    let mut apis_by_name = Vec::new();
    for (i, addr) in apis.split(',').enumerate() {
        let api = RuntimeApi::new(Endpoint::Tcp(addr.parse().unwrap()));
        let name = format!("lab-haproxy-{}", i + 1);
        set = set.with(name.clone(), Arc::new(api.clone()));
        apis_by_name.push((name, api));
    }
    assert_eq!(apis_by_name.len(), 2, "{apis}");
    let mut expected: Vec<&str> = members.split_whitespace().collect();
    expected.sort_unstable();

    for (name, api) in &apis_by_name {
        for backend in ["primary", "replicas"] {
            let mut listed: Vec<String> = api
                .servers(backend)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect();
            listed.sort_unstable();
            assert_eq!(listed, expected, "{name} {backend}");
        }
    }

    let probe = ServerSpec {
        name: "steward-it-probe".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 9)),
        check: Some(HealthCheck::patroni()),
    };
    for backend in ["primary", "replicas"] {
        let delete = Change::Delete {
            backend: backend.into(),
            server: probe.name.clone(),
        };
        // A probe left by an earlier failed run goes first.
        assert!(set.apply(&delete).await.all_applied());
        let add = Change::Add {
            backend: backend.into(),
            server: probe.clone(),
        };
        let report = set.apply(&add).await;
        assert!(report.all_applied(), "{backend}: {:?}", report.failed);
        for (name, api) in &apis_by_name {
            let state = state_of(api, backend, &probe.name).await;
            assert_eq!(state, Some(Status::Maint), "{name} {backend}");
        }
        let report = set.apply(&delete).await;
        assert!(report.all_applied(), "{backend}: {:?}", report.failed);
        for (name, api) in &apis_by_name {
            assert_eq!(
                state_of(api, backend, &probe.name).await,
                None,
                "{name} {backend}"
            );
        }
    }
}

/// A test HAProxy with the production check ([`HealthCheck::patroni`]: `OPTIONS /primary` and
/// `/replica` on port 8008, 1 s / 500 ms / 2 s, rise 2, fall 2) against the lab's real Patroni
/// members: every member is added to both backends and enabled after its check, at once. The
/// leader alone enters `primary`, every other member enters `replicas`; the rest time out,
/// left warming up without traffic. Prints how long entering took.
#[tokio::test]
async fn real_patroni_members_enter_only_the_backend_of_their_role() {
    let Some([urls, names]) = lab_env(["PATRONI_URLS", "STEWARD_LAB_MEMBERS"]) else {
        return;
    };
    let Some(hx) = Haproxy::start(Options {
        tcp: false,
        frontend: false,
    })
    .await
    else {
        return;
    };
    let api = hx.unix();
    // PATRONI_URLS and STEWARD_LAB_MEMBERS list the members in the same order.
    let members: Vec<(String, std::net::IpAddr)> = names
        .split_whitespace()
        .zip(urls.split(','))
        .map(|(name, url)| {
            let host = url.trim_start_matches("http://").split(':').next().unwrap();
            (name.to_string(), host.parse().unwrap())
        })
        .collect();
    assert_eq!(members.len(), 3, "{names} / {urls}");

    let wait = CheckWait {
        timeout: Duration::from_secs(8),
        poll: Duration::from_millis(50),
    };
    let mut attempts = Vec::new();
    for backend in ["primary", "replicas"] {
        for (name, ip) in &members {
            let spec = ServerSpec {
                name: name.clone(),
                addr: SocketAddr::new(*ip, 5432),
                check: Some(HealthCheck::patroni()),
            };
            api.add_server(backend, &spec).await.unwrap();
            let api = api.clone();
            let name = name.clone();
            attempts.push(async move {
                let started = tokio::time::Instant::now();
                let result = api.enable_after_check(backend, &name, wait).await;
                (backend, name, result, started.elapsed())
            });
        }
    }
    let mut entered: Vec<(&str, String)> = Vec::new();
    for (backend, name, result, took) in futures::future::join_all(attempts).await {
        match result {
            Ok(state) => {
                assert!(state.takes_traffic(), "{state:?}");
                eprintln!("{backend}/{name} entered after {took:?}");
                entered.push((backend, name));
            }
            Err(e) => {
                assert!(matches!(e, HaproxyError::CheckNotPassed { .. }), "{e:?}");
                eprintln!("{backend}/{name} stayed out ({took:?})");
            }
        }
    }
    let primaries: Vec<&String> = entered
        .iter()
        .filter(|(b, _)| *b == "primary")
        .map(|(_, n)| n)
        .collect();
    let replicas: Vec<&String> = entered
        .iter()
        .filter(|(b, _)| *b == "replicas")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(primaries.len(), 1, "exactly the leader: {entered:?}");
    assert_eq!(replicas.len(), members.len() - 1, "{entered:?}");
    assert!(!replicas.contains(&primaries[0]), "{entered:?}");
    for backend in ["primary", "replicas"] {
        let up = api
            .servers(backend)
            .await
            .unwrap()
            .iter()
            .filter(|s| s.takes_traffic())
            .count();
        assert_eq!(
            up,
            if backend == "primary" {
                1
            } else {
                members.len() - 1
            }
        );
    }
}
