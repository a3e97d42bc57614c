//! End-to-end CRASH tests (DESIGN.md promise 7, issue 14): `steward run` (the built binary) is
//! killed at every step boundary of a real replacement on the lab (scripts/lab.sh; a Patroni
//! 4.1.5 cluster in Docker), started again on the same config and state folder, and the cluster
//! must converge as if nothing had happened to Steward.
//!
//! How it dies: the binary's test-only fault injection `STEWARD_TEST_CRASH_AT=repair:<before|
//! after>:<n>` aborts the process (SIGABRT: no clean-up, like a kill) just before or just after
//! the n-th write of the repair's journal record. A replacement of a killed replica writes six:
//! before its drain, its fence, its create, after the create (the wait for streaming), before its
//! remove, and its end. So `after:k` dies with step k announced and not run, and `before:k+1`
//! with step k done in the world but not in the journal. Each of the twelve points is one round:
//! a streaming replica is `docker kill`ed (on whichever engine it lives), Steward dies at the
//! point, starts again, and the round checks, within `REPAIR_TIMEOUT`:
//! - exactly one replacement: three database members on the platform, none fenced, the killed
//!   one gone (no container, no `.fenced` container on either engine, no disk image left);
//! - Patroni lists those three, one leader and two streaming;
//! - both balancers hold exactly those members in both backends, none drained or in maintenance
//!   (`[balancers]` is on, so Steward keeps them in step);
//! - the journal has no operation open, and the decision log no alert (no "failed for good", no
//!   breaker);
//! - the restarted Steward stops cleanly.
//!
//! The same with the state folder LOST with the process (wiped before the restart), at the four
//! points after the replacement was created: the labels (`io.steward.replaces`) are all the new
//! run has, and the rounds check the same convergence.
//!
//! The rounds run one after the other on one lab: every replacement is a new member on the host
//! with the fewest (`placement = "preferred"`), so the lab hosts all twelve. About 10-12 minutes.
//!
//! The same for the scaler (`STEWARD_TEST_CRASH_AT=scale:<before|after>:<n>`): a scale-out (the
//! HA minimum raised to 4) writes its plan twice (before its create, and its end), a scale-in
//! (the minimum back at 3 on an idle lab, data deleted) four times (before its drain, fence,
//! remove, and its end); every point is one round, checked as above with the member count asked
//! for and whichever member left leaving no container nor disk behind.
//!
//! Needs what tests/cli/e2e.rs needs (root, the lab up, `STEWARD_LAB=1`, the lab lock):
//! `flock /tmp/steward-lab.lock cargo nextest run -p steward --test cli -E 'test(/^e2e_crash::/)'`.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use steward_adapters::patroni::PatroniApi;
use steward_model::observation::PlatformState;
use steward_model::ports::Platform;
use tokio::time::Instant;

use crate::e2e::{
    balancer_servers, lab, leader_and_streaming, open_journal_records, patroni, platform, sh,
    with_lab, write_config_with, Steward, LAB_BALANCERS, REPAIR_TIMEOUT,
};

/// The journal records a replacement of a killed replica writes (see the module docs).
const REPLACEMENT_WRITES: u32 = 6;
/// The lab's engines by the platform's host names (tests/data/e2e/lab.toml).
const ENGINES: [(&str, &str); 2] = [
    ("host-a", "unix:///var/run/docker.sock"),
    ("host-b", "unix:///run/steward-docker2.sock"),
];
/// Where the lab's platform keeps members' disk images (`<member>.img`).
const DISKS: &str = "/var/lib/steward-lab/disks";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steward_killed_at_every_step_boundary_of_a_replacement_converges() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        for write in 1..=REPLACEMENT_WRITES {
            for when in ["before", "after"] {
                round(&urls, &format!("repair:{when}:{write}")).await;
            }
        }
    })
    .await;
}

/// Issue 14: the same kill, and the state folder lost with the process (a new disk, a wiped
/// volume): the restarted Steward has no journal at all. At points where the replacement was
/// already made (created but not journaled; waiting for it to stream; its old member about to
/// be removed), what the platform's labels say (`io.steward.replaces`) is enough: the repair is
/// finished, not made again, and the lab converges as in the rounds above (one replacement,
/// the killed member gone, balancers in step, no alert).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steward_whose_state_folder_is_lost_mid_replacement_converges() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        for point in [
            "repair:before:4",
            "repair:after:4",
            "repair:before:5",
            "repair:after:5",
        ] {
            round_with(&urls, point, true).await;
        }
    })
    .await;
}

/// The journal records a scale-out writes (before its create, its end) and a scale-in (before
/// its drain, its fence, its remove, and its end).
const SCALE_OUT_WRITES: u32 = 2;
const SCALE_IN_WRITES: u32 = 4;

/// Promise 7 for the scaler on the real lab: Steward dies at every boundary of a scale-out
/// (the HA minimum raised to 4, which adds a member at once) and of a scale-in (the minimum
/// back at 3 on an idle cluster, which removes one with its data), starts again, and the lab
/// converges: the member count asked for, all running and streaming, both balancers holding
/// exactly them, a removed member's container and disk gone, no operation open, no alert. The
/// eight scale-in points each need a scale-out before them; the first four of those are the
/// scale-out's own kill points, the others run whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steward_killed_at_every_step_boundary_of_a_scale_out_and_in_converges() {
    let Some(urls) = lab() else {
        return;
    };
    let points = |writes: u32| -> Vec<String> {
        (1..=writes)
            .flat_map(|w| ["before", "after"].map(|when| format!("scale:{when}:{w}")))
            .collect()
    };
    let (outs, ins) = (points(SCALE_OUT_WRITES), points(SCALE_IN_WRITES));
    with_lab(urls, move |urls| async move {
        for (i, scale_in) in ins.iter().enumerate() {
            scale_round(&urls, 4, outs.get(i).map(String::as_str)).await;
            scale_round(&urls, 3, Some(scale_in)).await;
        }
    })
    .await;
}

/// One scaling round: Steward with the HA minimum at `members` (scale-out to 4, or scale-in to
/// 3 on an idle cluster), dead at `point` if any and started again; the lab checked.
async fn scale_round(urls: &[String], members: usize, point: Option<&str>) {
    let client = patroni(urls.to_vec());
    let platform = platform().await;
    let from = if members == 4 { 3 } else { 4 };
    settled_at(&client, &platform, from).await;
    let before: BTreeSet<String> = database_members(&platform)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let config = write_config_with(dir.path(), &state_dir, |doc| {
        with_balancers(doc);
        // An idle lab is far below these bands: the minimum alone decides.
        let replicas: toml::Table = toml::from_str(&format!(
            "min_members = {members}\nmax_members = 4\nup_window = \"10s\"\n\
             down_window = \"10s\"\ncooldown = \"5s\"\n\
             cpu = {{ low = 0.5, high = 0.95 }}\nconnections = {{ low = 50.0, high = 95.0 }}\n"
        ))
        .unwrap();
        let policy = doc
            .entry("policy")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("[policy] is a table");
        policy.insert("replicas".into(), toml::Value::Table(replicas));
        let mut scaler = toml::Table::new();
        scaler.insert("delete_data_on_scale_in".into(), true.into());
        doc.insert("scaler".into(), toml::Value::Table(scaler));
        // The lab runs an exporter for its own members only: a member Steward adds would have
        // no connections figure, and a missing figure blocks every scale-in. This query counts
        // such a member's connections as 0 (tests/data/e2e/scaling-replicas.toml says more).
        let queries: toml::Table = toml::from_str(
            "[connections]\nquery = 'sum by (member) (pg_stat_activity_count) or max by \
             (member) (label_replace(pg_stat_replication_pg_wal_lsn_diff, \"member\", \"$1\", \
             \"application_name\", \"(.+)\")) * 0'\nlabel = \"member\"\n",
        )
        .unwrap();
        doc["prometheus"]
            .as_table_mut()
            .expect("[prometheus] is a table")
            .insert("queries".into(), toml::Value::Table(queries));
    });
    let label = point.unwrap_or("no crash");
    let steward = match point {
        Some(point) => {
            let steward = Steward::start_with_env(
                &config,
                dir,
                state_dir.clone(),
                &[("STEWARD_TEST_CRASH_AT", point)],
            );
            restart_after_crash(point, steward, &config, false).await
        }
        None => Steward::start(&config, dir, state_dir.clone()),
    };
    let expect = Expect {
        members,
        before: &before,
        must_go: None,
    };
    let took = converge(label, &client, &platform, &expect, &state_dir, steward).await;
    eprintln!(
        "e2e-crash {label}: {from} -> {members} members, converged {:.1} s after the (re)start",
        took.as_secs_f64()
    );
}

/// One kill point: a replica killed, Steward dead at `point`, started again, the cluster checked.
async fn round(urls: &[String], point: &str) {
    round_with(urls, point, false).await;
}

/// [`round`], the state folder wiped before the restart when `lose_state`.
async fn round_with(urls: &[String], point: &str, lose_state: bool) {
    let client = patroni(urls.to_vec());
    let platform = platform().await;
    let (leader, streaming) = settled(&client, &platform).await;
    let victim = streaming
        .iter()
        .find(|n| **n != leader)
        .expect("a streaming replica")
        .clone();
    let engine = engine_of(&platform, &victim).await;

    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let config = write_config_with(dir.path(), &state_dir, with_balancers);
    let mut steward = Steward::start_with_env(
        &config,
        dir,
        state_dir.clone(),
        &[("STEWARD_TEST_CRASH_AT", point)],
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    steward.assert_alive();
    let out = sh("docker", &["-H", engine, "kill", &victim]).await;
    assert!(
        out.status.success(),
        "{point}: docker kill {victim}: {out:?}"
    );
    eprintln!("e2e-crash {point}: killed {victim} (leader {leader})");

    let steward = restart_after_crash(point, steward, &config, lose_state).await;
    let before: BTreeSet<String> = database_members(&platform)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .chain([victim.clone()])
        .collect();
    let expect = Expect {
        members: 3,
        before: &before,
        must_go: Some(&victim),
    };
    let converged = converge(point, &client, &platform, &expect, &state_dir, steward).await;
    eprintln!(
        "e2e-crash {point}: converged {:.1} s after the restart",
        converged.as_secs_f64()
    );
}

/// Waits for Steward to abort at its crash point (SIGABRT), then starts it again on the same
/// config and state folder (emptied first when `lose_state`), without the crash point.
async fn restart_after_crash(
    point: &str,
    steward: Steward,
    config: &Path,
    lose_state: bool,
) -> Steward {
    let (status, dir, state_dir) =
        steward
            .wait_exit(REPAIR_TIMEOUT)
            .await
            .unwrap_or_else(|output| {
                panic!("{point}: steward never reached its crash point\n{output}")
            });
    assert_eq!(
        status.signal(),
        Some(6),
        "{point}: steward did not abort at its crash point: {status}"
    );
    if lose_state {
        std::fs::remove_dir_all(&state_dir).unwrap();
        std::fs::create_dir_all(&state_dir).unwrap();
        eprintln!("e2e-crash {point}: state folder lost");
    }
    Steward::start(config, dir, state_dir)
}

/// `[balancers]` on the lab's pair, with a short enable wait: a new replica never passes the
/// primary backend's check, so it is set ready (drained of nothing, down by its check) once this
/// wait is over. Short, so a round is short.
fn with_balancers(doc: &mut toml::Table) {
    let mut balancers = toml::Table::new();
    let apis: Vec<toml::Value> = LAB_BALANCERS.iter().map(|(_, a)| (*a).into()).collect();
    balancers.insert("runtime_apis".into(), toml::Value::Array(apis));
    balancers.insert("enable_timeout".into(), "10s".into());
    doc.insert("balancers".into(), toml::Value::Table(balancers));
}

/// Waits for one leader and two streaming replicas with the platform's three members running
/// (a previous round's Steward may have left Patroni a moment to catch up).
async fn settled(
    client: &steward_adapters::patroni::PatroniClient,
    platform: &steward_adapters::platform::docker::DockerPlatform,
) -> (String, Vec<String>) {
    settled_at(client, platform, 3).await
}

/// [`settled`] at `count` members: one leader, the others streaming.
async fn settled_at(
    client: &steward_adapters::patroni::PatroniClient,
    platform: &steward_adapters::platform::docker::DockerPlatform,
    count: usize,
) -> (String, Vec<String>) {
    let deadline = Instant::now() + REPAIR_TIMEOUT;
    loop {
        let members = database_members(platform).await;
        if let Some((leader, streaming)) = leader_and_streaming(client).await {
            if streaming.len() == count - 1 && members.len() == count {
                return (leader, streaming);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the lab did not settle at one leader and {} streaming replicas: {members:?}",
            count - 1
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The database members the platform lists, with their state.
async fn database_members(
    platform: &steward_adapters::platform::docker::DockerPlatform,
) -> Vec<(String, PlatformState)> {
    platform
        .list()
        .await
        .map(|l| {
            l.into_iter()
                .filter(|m| m.role == steward_model::Role::Database)
                .map(|m| (m.name, m.state))
                .collect()
        })
        .unwrap_or_default()
}

/// The Docker endpoint of the engine `member` runs on.
async fn engine_of(
    platform: &steward_adapters::platform::docker::DockerPlatform,
    member: &str,
) -> &'static str {
    let listed = platform.list().await.expect("the platform lists the lab");
    let host = listed
        .iter()
        .find(|m| m.name == member)
        .map(|m| m.host.clone())
        .unwrap_or_else(|| panic!("{member} is not on the platform: {listed:?}"));
    ENGINES
        .iter()
        .find(|(name, _)| *name == host)
        .map(|(_, endpoint)| *endpoint)
        .unwrap_or_else(|| panic!("{member} is on an unknown host {host}"))
}

/// What a round must end with.
struct Expect<'a> {
    /// Database members, all running, one leader and the others streaming.
    members: usize,
    /// The members before the round: whichever of them is no longer a member must have left
    /// no container and no disk behind.
    before: &'a BTreeSet<String>,
    /// A member that must be gone (the killed replica).
    must_go: Option<&'a str>,
}

/// What is wrong with the lab after a round, or None when it converged.
async fn unconverged(
    client: &steward_adapters::patroni::PatroniClient,
    platform: &steward_adapters::platform::docker::DockerPlatform,
    expect: &Expect<'_>,
    state_dir: &Path,
) -> Option<String> {
    let members = database_members(platform).await;
    if members.len() != expect.members || members.iter().any(|(_, s)| *s != PlatformState::Running)
    {
        return Some(format!("the platform lists {members:?}"));
    }
    let names: BTreeSet<String> = members.into_iter().map(|(n, _)| n).collect();
    if let Some(victim) = expect.must_go.filter(|v| names.contains(*v)) {
        return Some(format!("{victim} is still a member"));
    }
    let view = match client.cluster().await {
        Ok(view) => view,
        Err(e) => return Some(format!("patroni's /cluster does not answer: {e}")),
    };
    let in_patroni: BTreeSet<String> = view.members.iter().map(|m| m.name.clone()).collect();
    if in_patroni != names {
        return Some(format!(
            "patroni lists {in_patroni:?}, the platform {names:?}"
        ));
    }
    match leader_and_streaming(client).await {
        Some((_, streaming)) if streaming.len() == expect.members - 1 => {}
        other => {
            return Some(format!(
                "not {} streaming replicas: {other:?}",
                expect.members - 1
            ))
        }
    }
    for (container, api) in LAB_BALANCERS {
        let Some(servers) = balancer_servers(api).await else {
            return Some(format!("{container} does not answer"));
        };
        for backend in ["primary", "replicas"] {
            let held: BTreeSet<String> = servers
                .iter()
                .filter(|(b, _, _)| b == backend)
                .map(|(_, s, _)| s.clone())
                .collect();
            if held != names {
                return Some(format!(
                    "{container} {backend} holds {held:?}, not {names:?}"
                ));
            }
            if let Some((_, s, state)) = servers
                .iter()
                .find(|(b, _, state)| b == backend && state != "0")
            {
                return Some(format!(
                    "{container} {backend}: {s} has admin state {state}"
                ));
            }
        }
    }
    let open = open_journal_records(state_dir);
    if !open.is_empty() {
        return Some(format!("operations open in the journal: {open:?}"));
    }
    for gone in expect.before.difference(&names) {
        for (_, engine) in ENGINES {
            for name in [gone.to_string(), format!("{gone}.fenced")] {
                let out = sh("docker", &["-H", engine, "inspect", "-f", "{{.Id}}", &name]).await;
                if out.status.success() {
                    return Some(format!("container {name} is still on {engine}"));
                }
            }
        }
        if Path::new(DISKS).join(format!("{gone}.img")).exists() {
            return Some(format!("the disk of {gone} is still in {DISKS}"));
        }
    }
    None
}

/// Waits for the lab to converge after the restart, then checks the decision log and stops
/// Steward; the time it took.
async fn converge(
    point: &str,
    client: &steward_adapters::patroni::PatroniClient,
    platform: &steward_adapters::platform::docker::DockerPlatform,
    expect: &Expect<'_>,
    state_dir: &Path,
    mut steward: Steward,
) -> Duration {
    let restarted = Instant::now();
    let deadline = restarted + REPAIR_TIMEOUT;
    loop {
        steward.assert_alive();
        let Some(why) = unconverged(client, platform, expect, state_dir).await else {
            break;
        };
        assert!(
            Instant::now() < deadline,
            "{point}: no convergence {REPAIR_TIMEOUT:?} after the restart: {why}\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let took = restarted.elapsed();
    let alerts: Vec<serde_json::Value> = steward
        .actions()
        .into_iter()
        .filter(|l| l["kind"] == "alert")
        .collect();
    assert!(alerts.is_empty(), "{point}: alerts: {alerts:?}");
    steward.stop_cleanly().await;
    took
}
