//! No secret in any output, ever (DESIGN.md promise 9, issue 16): one marker secret, handed to
//! every command in every way a user can give a credential (a file, the environment, inline in
//! the TOML where it is refused, in a URL's user-info, parsable or not), and looked for on
//! stdout, on stderr (debug logs on) and in every file of the state folder.

use std::path::Path;
use std::process::{Command, Output};

/// Unique enough that finding it anywhere means it leaked.
const MARKER: &str = "Zq9mrk-s3cret-77d1";

fn steward(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .args(["--log", "debug"])
        .env("STEWARD_TEST_SECRET", MARKER)
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .output()
        .expect("the steward binary runs")
}

/// Runs one command and checks that the marker is nowhere in what it printed; returns the
/// exit code (the caller checks that the command did what the case is about).
fn clean(case: &str, args: &[&str], dir: &Path) -> Option<i32> {
    let out = steward(args, dir);
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(MARKER),
            "{case}: the secret is on {stream}:\n{text}"
        );
    }
    out.status.code()
}

/// Every file under `dir`, recursively, holds no marker.
fn no_marker_in_files(dir: &Path) -> usize {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            seen += no_marker_in_files(&path);
        } else if !path.ends_with("secret") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(MARKER),
                "the secret is in {}",
                path.display()
            );
            seen += 1;
        }
    }
    seen
}

#[test]
fn a_refused_secret_is_never_echoed_by_any_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let urls = [
        format!("http://steward:{MARKER}@127.0.0.1:8008"),
        // Not a URL (port out of range): its error used to print it whole.
        format!("http://steward:{MARKER}@127.0.0.1:99999"),
        format!("http://{MARKER}@127.0.0.1:8008"),
    ];
    let mut configs = vec![
        format!("[cluster]\nname = \"demo\"\n[patroni]\nurls = [\"http://127.0.0.1:8008\"]\npassword = \"{MARKER}\"\n"),
        format!("[cluster]\nname = \"demo\"\n[server]\ntoken = '{MARKER}'\n"),
        format!("[cluster]\nname = \"demo\"\n[prometheus]\nurl = \"http://127.0.0.1:9090\"\nbearer_token = \"{MARKER}\"\n"),
        format!("[cluster]\nname = \"demo\"\n[lease]\nendpoints = [\"127.0.0.1:2379\"]\npassword = \"\"\"{MARKER}\"\"\"\n"),
    ];
    for url in &urls {
        configs.push(format!(
            "[cluster]\nname = \"demo\"\n[patroni]\nurls = [\"{url}\"]\n"
        ));
        configs.push(format!(
            "[cluster]\nname = \"demo\"\n[prometheus]\nurl = \"{url}\"\n"
        ));
    }
    for (i, text) in configs.iter().enumerate() {
        let file = d.join(format!("bad-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let f = file.to_str().unwrap();
        for args in [
            vec!["check-config", f],
            vec!["evaluate", "--config", f, "--csv", "none.csv"],
            vec!["run", "--config", f, "--dry-run", "--for", "1s"],
        ] {
            let code = clean(&format!("config {i}, {args:?}"), &args, d);
            assert_eq!(code, Some(3), "config {i} must be refused: {args:?}");
        }
    }
    for url in &urls {
        for args in [
            vec!["observe", "--patroni", url],
            vec!["evaluate", "--prometheus", url, "--cpus", "2"],
            vec![
                "observe",
                "--patroni",
                "http://127.0.0.1:1",
                "--prometheus",
                url,
            ],
            vec!["evaluate", "--prometheus", url, "--cpus", "2"],
        ] {
            let code = clean(&format!("{args:?}"), &args, d);
            assert_ne!(code, Some(0), "{args:?} must fail");
        }
    }
}

/// Secrets given the way they should be (files, the environment) reach no output either: the
/// effective config names where they come from, and a run that uses them for real (the
/// simulated platform, the status server's token, Patroni's basic auth in `observe` against a
/// port that refuses) prints and journals none of them.
#[test]
fn secrets_from_files_and_the_environment_reach_no_output_or_journal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("secret"), format!("{MARKER}\n")).unwrap();
    let state = d.join("state");
    let config = format!(
        r#"[cluster]
name = "demo"
state_dir = "{state}"

[platform]
kind = "simulated"

[platform.simulated]
members = 3
hosts = 4
cpus = 2.0
memory = "4GiB"
disk = "20GiB"

[[platform.simulated.faults]]
at = "30s"
fault = "crash"
member = "pg-2"

[server]
listen = "127.0.0.1:0"
token_file = "secret"

[prometheus]
url = "http://127.0.0.1:1"
bearer_token_env = "STEWARD_TEST_SECRET"

[run]
tick = "15s"
"#,
        state = state.display()
    );
    let file = d.join("good.toml");
    std::fs::write(&file, config).unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(clean("check-config", &["check-config", f], d), Some(0));
    assert_eq!(
        clean("run", &["run", "--config", f, "--for", "3m"], d),
        Some(0),
        "the simulated run completes"
    );
    let files = no_marker_in_files(&state);
    assert!(files > 0, "the run journaled nothing to look in");
    // Patroni's basic auth from the environment, sent to a port that refuses.
    let patroni = d.join("observe.toml");
    std::fs::write(
        &patroni,
        "[cluster]\nname = \"demo\"\n[patroni]\nurls = [\"http://127.0.0.1:1\"]\nusername = \"steward\"\npassword_env = \"STEWARD_TEST_SECRET\"\n",
    )
    .unwrap();
    assert_eq!(
        clean(
            "check-config patroni",
            &["check-config", patroni.to_str().unwrap()],
            d
        ),
        Some(0)
    );
    let code = clean(
        "run against a dead patroni",
        &[
            "run",
            "--config",
            patroni.to_str().unwrap(),
            "--dry-run",
            "--for",
            "2s",
        ],
        d,
    );
    assert_ne!(code, Some(3), "a valid config is not refused as invalid");
}
