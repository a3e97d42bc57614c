//! The simulated platform: the contract suite, then its load model and injected faults.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use steward_adapters::platform::contract::{self, Check, Harness};
use steward_adapters::platform::simulated::{
    Load, Signal, SimClock, SimConfig, SimOp, SimulatedPlatform, Trace,
};
use steward_model::observation::PlatformState;
use steward_model::ports::{Change, CreateSpec, ErrorKind, Platform, ResizeOutcome};
use steward_model::{Role, Size, Timestamp};

const GIB: u64 = 1 << 30;

fn size() -> Size {
    Size {
        cpus: 1.0,
        memory_bytes: GIB,
        disk_bytes: 10 * GIB,
    }
}

struct SimHarness {
    config: SimConfig,
    platform: Option<Arc<SimulatedPlatform>>,
    foreign: Vec<String>,
    round: usize,
}

impl SimHarness {
    fn new(config: SimConfig) -> Self {
        SimHarness {
            config,
            platform: None,
            foreign: Vec::new(),
            round: 0,
        }
    }

    fn sim(&self) -> &SimulatedPlatform {
        self.platform.as_ref().expect("platform() was called first")
    }
}

#[async_trait]
impl Harness for SimHarness {
    fn name(&self) -> String {
        "simulated".into()
    }

    async fn platform(&mut self) -> Arc<dyn Platform> {
        self.round += 1;
        let p = Arc::new(SimulatedPlatform::new(
            self.config.clone(),
            SimClock::new(Timestamp::from_secs(1_000)),
        ));
        self.platform = Some(p.clone());
        p
    }

    fn cluster(&self) -> String {
        self.config.cluster.clone()
    }

    fn database_spec(&mut self, index: usize) -> CreateSpec {
        CreateSpec {
            cluster: self.config.cluster.clone(),
            role: Role::Database,
            name: format!("pg-{}-{index}", self.round),
            size: size(),
            operation_id: format!("op-{}-{index}", self.round),
            replaces: None,
        }
    }

    fn grown_size(&self, from: Size) -> Size {
        Size {
            cpus: from.cpus * 2.0,
            memory_bytes: from.memory_bytes * 2,
            ..from
        }
    }

    fn impossible_size(&self, from: Size) -> Option<Size> {
        // The default load holds a quarter of the memory: a tenth is below what is in use.
        Some(Size {
            cpus: from.cpus * 2.0,
            memory_bytes: from.memory_bytes / 10,
            ..from
        })
    }

    fn database_hosts(&self) -> Option<usize> {
        Some(self.config.hosts.len())
    }

    async fn add_foreign(&mut self) -> Option<String> {
        let name = format!("foreign-{}", self.round);
        self.sim().add_foreign(&name);
        self.foreign.push(name.clone());
        Some(name)
    }

    async fn foreign_intact(&mut self, name: &str) -> bool {
        self.sim().foreign(name) == Some(PlatformState::Running)
    }

    async fn data_exists(&mut self, member: &str) -> Option<bool> {
        Some(self.sim().kept_data(member))
    }

    async fn cleanup(&mut self) {
        // Everything lives in the platform, which the next check replaces.
        self.platform = None;
        self.foreign.clear();
    }
}

#[tokio::test]
async fn simulated_passes_the_contract() {
    contract::run_all(&mut SimHarness::new(SimConfig::new("sim-contract", 3))).await;
}

#[tokio::test]
async fn simulated_with_restart_and_no_disk_passes_the_contract() {
    let mut config = SimConfig::new("sim-restart", 2);
    config.capabilities.cpu = Change::Restart;
    config.capabilities.memory = Change::Restart;
    config.capabilities.disk_grow = Change::Unsupported;
    contract::run_all(&mut SimHarness::new(config)).await;
}

#[tokio::test]
async fn a_broken_platform_fails_the_contract() {
    // The contract must be able to fail: a platform that cannot place two members cannot pass
    // the placement check when the harness claims three hosts.
    let mut h = SimHarness::new(SimConfig::new("sim-broken", 1));
    h.config.hosts = vec!["h".into()];
    struct Lying(SimHarness);
    #[async_trait]
    impl Harness for Lying {
        fn name(&self) -> String {
            "lying".into()
        }
        async fn platform(&mut self) -> Arc<dyn Platform> {
            self.0.platform().await
        }
        fn cluster(&self) -> String {
            self.0.cluster()
        }
        fn database_spec(&mut self, i: usize) -> CreateSpec {
            self.0.database_spec(i)
        }
        fn grown_size(&self, s: Size) -> Size {
            self.0.grown_size(s)
        }
        fn impossible_size(&self, s: Size) -> Option<Size> {
            self.0.impossible_size(s)
        }
        fn database_hosts(&self) -> Option<usize> {
            Some(3)
        }
        async fn add_foreign(&mut self) -> Option<String> {
            self.0.add_foreign().await
        }
        async fn foreign_intact(&mut self, n: &str) -> bool {
            self.0.foreign_intact(n).await
        }
        async fn data_exists(&mut self, m: &str) -> Option<bool> {
            self.0.data_exists(m).await
        }
        async fn cleanup(&mut self) {
            self.0.cleanup().await
        }
    }
    let mut lying = Lying(h);
    let run =
        tokio::spawn(
            async move { contract::run_one(&mut lying, Check::PlacementSpreadsRoles).await },
        );
    let panic = run
        .await
        .expect_err("the placement check passed on a one-host platform");
    assert!(panic.is_panic());
}

fn spec(cluster: &str, name: &str) -> CreateSpec {
    CreateSpec {
        cluster: cluster.into(),
        role: Role::Database,
        name: name.into(),
        size: size(),
        operation_id: "op".into(),
        replaces: None,
    }
}

#[tokio::test]
async fn trace_drives_cpu_and_growing_lowers_utilization() {
    // A NAB trace kept in the repository (examples/traces, with its licence).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/traces/ec2_cpu_utilization_fe7f93.csv"
    );
    let text = std::fs::read_to_string(path).expect("the example trace is in the repository");
    let trace = Arc::new(Trace::from_csv(&text).expect("trace parses"));
    let start = trace.start();
    let clock = SimClock::new(start);
    let p = SimulatedPlatform::new(SimConfig::new("c", 3), clock.clone());
    p.create(&spec("c", "pg-1")).await.expect("create");
    // A base of 4 vCPUs: demand = trace% / 100 x 4, capped at the member's 1 vCPU.
    let base = Size {
        cpus: 4.0,
        ..size()
    };
    p.set_load(
        "pg-1",
        Load {
            cpu: Signal::TracePercent(trace.clone()),
            memory: Signal::Constant(0.5),
            base,
        },
    )
    .expect("set load");
    for step in [0u64, 7, 500, 3_000] {
        clock.set(start + Duration::from_secs(step * 300));
        let want = (trace.at(clock.now()) / 100.0 * 4.0).min(1.0);
        let u = p.usage().await.expect("usage")["pg-1"];
        assert!(
            (u.cpu_used.expect("cpu") - want).abs() < 1e-9,
            "step {step}: {u:?} vs {want}"
        );
        assert_eq!(u.memory_used, Some(GIB / 2));
    }
    // Find an instant where the demand exceeds 1 vCPU, then grow: usage follows the demand.
    let busy = (0..4_000u64)
        .map(|i| start + Duration::from_secs(i * 300))
        .find(|t| trace.at(*t) > 30.0)
        .expect("the trace has a busy sample");
    clock.set(busy);
    assert_eq!(
        p.usage().await.expect("usage")["pg-1"].cpu_used,
        Some(1.0),
        "capped at the size"
    );
    p.resize(
        "pg-1",
        Size {
            cpus: 4.0,
            ..size()
        },
    )
    .await
    .expect("grow");
    let used = p.usage().await.expect("usage")["pg-1"]
        .cpu_used
        .expect("cpu");
    assert!(
        (used - trace.at(busy) / 100.0 * 4.0).abs() < 1e-9 && used > 1.0,
        "{used}"
    );
}

#[tokio::test]
async fn faults_show_in_list_and_usage() {
    let clock = SimClock::new(Timestamp::from_secs(0));
    let p = SimulatedPlatform::new(SimConfig::new("c", 3), clock.clone());
    for n in ["a", "b", "c"] {
        let mut s = spec("c", n);
        s.role = if n == "c" {
            Role::Balancer
        } else {
            Role::Database
        };
        p.create(&s).await.expect("create");
    }
    let state = |name: &'static str| {
        let p = &p;
        async move {
            p.list()
                .await
                .expect("list")
                .into_iter()
                .find(|m| m.name == name)
                .expect("listed")
                .state
        }
    };
    p.crash("a").expect("fault injected");
    assert_eq!(state("a").await, PlatformState::Exited);
    assert!(
        !p.usage().await.expect("usage").contains_key("a"),
        "a crashed member has no usage"
    );
    p.recover("a").expect("fault injected");
    assert_eq!(state("a").await, PlatformState::Running);
    let a = p
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|m| m.name == "a")
        .expect("a");
    assert_eq!(a.restart_count, 1);

    p.hang("b").expect("fault injected");
    assert_eq!(state("b").await, PlatformState::Paused);
    assert_eq!(p.usage().await.expect("usage")["b"].cpu_used, Some(0.0));

    // Disk filling: 1 MiB/s for 100 s on top of the initial 20 %.
    let before = p.usage().await.expect("usage")["c"]
        .disk_used
        .expect("disk");
    p.fill_disk("c", (1 << 20) as f64).expect("fault injected");
    clock.advance(Duration::from_secs(100));
    let after = p.usage().await.expect("usage")["c"]
        .disk_used
        .expect("disk");
    assert_eq!(after - before, 100 << 20);
    clock.advance(Duration::from_secs(1_000_000));
    assert_eq!(
        p.usage().await.expect("usage")["c"].disk_used,
        Some(10 * GIB),
        "a full disk stays full"
    );

    p.slow_disk("c", 20.0).expect("fault injected");
    assert_eq!(p.faults("c").expect("c").slow_disk, Some(20.0));

    p.oom_kill("a", false).expect("fault injected");
    assert_eq!(p.usage().await.expect("usage")["a"].oom_kills, Some(1));
    p.oom_kill("a", true).expect("fault injected");
    assert_eq!(state("a").await, PlatformState::OomKilled);
    assert_eq!(
        p.crash("nobody").map_err(|e| e.kind),
        Err(ErrorKind::NotFound)
    );
}

#[tokio::test]
async fn memory_demand_over_the_limit_counts_one_oom_per_excursion() {
    let clock = SimClock::new(Timestamp::from_secs(0));
    let p = SimulatedPlatform::new(SimConfig::new("c", 1), clock);
    p.create(&spec("c", "pg")).await.expect("create");
    let load = |f| Load {
        cpu: Signal::Constant(0.1),
        memory: Signal::Constant(f),
        base: size(),
    };
    p.set_load("pg", load(1.5)).expect("load");
    for _ in 0..3 {
        p.usage().await.expect("usage");
    }
    assert_eq!(p.usage().await.expect("usage")["pg"].oom_kills, Some(1));
    p.set_load("pg", load(0.5)).expect("load");
    p.usage().await.expect("usage");
    p.set_load("pg", load(2.0)).expect("load");
    let u = p.usage().await.expect("usage")["pg"];
    assert_eq!(u.oom_kills, Some(2));
    assert_eq!(
        u.memory_used,
        Some(GIB),
        "working set is capped at the limit"
    );
}

#[tokio::test]
async fn injected_failures_fail_once_with_their_class() {
    let p = SimulatedPlatform::new(SimConfig::new("c", 3), SimClock::default());
    p.create(&spec("c", "pg")).await.expect("create");
    p.fail_next(SimOp::Resize, ErrorKind::Transient);
    let e = p
        .resize(
            "pg",
            Size {
                cpus: 2.0,
                ..size()
            },
        )
        .await
        .expect_err("injected");
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(
        p.list().await.expect("list")[0].size,
        size(),
        "a failed resize changes nothing"
    );
    assert_eq!(
        p.resize(
            "pg",
            Size {
                cpus: 2.0,
                ..size()
            }
        )
        .await
        .expect("retry"),
        ResizeOutcome::AppliedLive
    );
    assert_eq!(p.history(), ["create pg", "resize pg"]);
    // Another cluster's spec is not this platform's to create.
    assert_eq!(
        p.create(&spec("other", "x"))
            .await
            .map_err(|e| e.kind)
            .err(),
        Some(ErrorKind::Permanent)
    );
}

#[tokio::test]
async fn ten_thousand_clusters_of_three_are_cheap() {
    // The scale benchmark's shape: one clock, 10,000 platforms, 30,000 members, one usage pass.
    let started = tokio::time::Instant::now();
    let clock = SimClock::new(Timestamp::from_secs(0));
    let mut platforms = Vec::with_capacity(10_000);
    for c in 0..10_000 {
        let cluster = format!("c{c}");
        let p = SimulatedPlatform::new(SimConfig::new(cluster.clone(), 3), clock.clone());
        for m in 0..3 {
            p.create(&spec(&cluster, &format!("pg-{m}")))
                .await
                .expect("create");
        }
        platforms.push(p);
    }
    clock.advance(Duration::from_secs(60));
    let mut members = 0;
    for p in &platforms {
        members += p.usage().await.expect("usage").len();
    }
    assert_eq!(members, 30_000);
    eprintln!(
        "10,000 simulated clusters: created and read in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_tokio_clock_ages_the_simulation_and_latency_keeps_actions_in_flight() {
    // Real (not paused) tokio time: the crate's tokio has no `test-util`. Only lower bounds
    // are asserted, with generous upper ones, so a slow machine cannot make this flaky.
    let start = Timestamp::from_secs(1_000);
    let clock = SimClock::following_tokio(start);
    let mut config = SimConfig::new("c", 3);
    config.latency = Duration::from_millis(300);
    let p = Arc::new(SimulatedPlatform::new(config, clock.clone()));
    let creating = {
        let p = p.clone();
        tokio::spawn(async move { p.create(&spec("c", "pg")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        p.list().await.expect("list").is_empty(),
        "still in flight after 50 ms"
    );
    let created = creating.await.expect("task").expect("create");
    let at = created.created_at.expect("created_at");
    assert!(
        at >= start + Duration::from_millis(300),
        "the clock followed tokio: {at}"
    );
    assert!(at < start + Duration::from_secs(30), "{at}");
    let before = clock.now();
    clock.advance(Duration::from_secs(3_600));
    assert!(
        clock.now() >= before + Duration::from_secs(3_600),
        "and can be moved by hand"
    );
    // A manual clock does not move by itself.
    let manual = SimClock::new(start);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(manual.now(), start);
}
