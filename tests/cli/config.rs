//! `steward check-config`: examples stay valid, and a bad file gets every error with its path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn steward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .output()
        .expect("the steward binary runs")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn every_example_config_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = steward(&["check-config", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} is not valid:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // The effective config is itself a valid config with the same meaning.
        let effective = stdout
            .split_once('\n')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let raw =
            steward_runtime::config::parse_raw(effective).expect("the effective config parses");
        raw.validate().expect("the effective config is valid");
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the example configs, found {checked}"
    );
}

#[test]
fn an_invalid_config_lists_every_error_with_its_path_and_exits_2() {
    let file = repo("tests/data/config/invalid.toml");
    let out = steward(&["check-config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cluster.name:"), "{stderr}");
    assert!(stderr.contains("policy.database.cpu"), "{stderr}");
    assert!(
        stderr.contains("low (0.8) must be below high (0.7)"),
        "{stderr}"
    );
    assert!(stderr.contains("policy.replicas"), "{stderr}");
    assert!(
        stderr.contains("policy.database.cpu: low (0.8) must be below target (0.65)"),
        "{stderr}"
    );
    assert!(stderr.contains("4 error(s)"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for an invalid file"
    );
}

#[test]
fn an_unknown_field_names_the_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(
        &file,
        "[policy.database.cpu]\nhigh = 0.9\ncooldwn = \"5m\"\n",
    )
    .unwrap();
    let out = steward(&["check-config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `cooldwn`"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = steward(&["check-config", "/nonexistent/steward.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read config file /nonexistent/steward.toml"),
        "{stderr}"
    );
    assert!(stderr.contains("No such file"), "{stderr}");
}
