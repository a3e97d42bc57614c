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
fn an_invalid_config_lists_every_error_with_its_path_and_exits_3() {
    let file = repo("tests/data/config/invalid.toml");
    let out = steward(&["check-config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
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
    assert_eq!(out.status.code(), Some(3), "{stderr}");
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

/// `check-config --resolve` asks the engine what each adoption rule takes (issue 15): a container
/// made with plain `docker run` (no Steward label) shows under the explicit rule with its member
/// name, a look-alike name does not, and a label rule that takes nothing says so.
#[test]
fn resolve_shows_what_each_adoption_rule_takes_on_the_real_engine() {
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .expect("the docker CLI runs")
    };
    let image = docker(&["image", "inspect", "steward-empty:1"]);
    if !image.status.success() {
        crate::service_missing("no Docker engine with the steward-empty:1 image");
        return;
    }
    let tag = format!("sttest-resolve-{}", std::process::id());
    let (mine, similar) = (format!("{tag}-db1"), format!("{tag}-db10"));
    for name in [&mine, &similar] {
        let out = docker(&[
            "create",
            "--name",
            name,
            "--network",
            "host",
            "steward-empty:1",
            "/bin/true",
        ]);
        assert!(out.status.success(), "docker create {name}: {out:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    // The lab's config on its first engine only (the second runs only while the lab is up).
    let text: String = std::fs::read_to_string(repo("tests/data/e2e/lab.toml"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"host-b\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = dir.path().join("adopt.toml");
    std::fs::write(
        &config,
        format!(
            "{text}\n[[platform.docker.adopt]]\ncontainer = \"{mine}\"\nmember = \"pg1\"\n\n\
             [[platform.docker.adopt]]\nlabel = \"com.example.project={tag}\"\n"
        ),
    )
    .unwrap();
    let out = steward(&["check-config", "--resolve", config.to_str().unwrap()]);
    for name in [&mine, &similar] {
        docker(&["rm", "-f", name]);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("adopt[")).collect();
    assert_eq!(
        lines,
        [
            format!("#   adopt[0] (container {mine}): member pg1 = container {mine} on host-a")
                .as_str(),
            format!("#   adopt[1] (label com.example.project={tag}): takes nothing").as_str(),
        ],
        "{stdout}"
    );
}

/// Issue 16: one exit code per kind of failure, the same for every command, and `--help` says
/// which is which.
#[test]
fn exit_codes_tell_usage_invalid_input_and_failure_apart() {
    let help = steward(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("Exit codes: 0 done; 1 failed at run time; 2 usage error"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "timestamp,value\n2024-01-01 00:00:00,abc\n").unwrap();
    let csv = csv.to_str().unwrap();
    for (args, code) in [
        (vec!["evaluate", "--no-such-flag"], 2),
        (
            vec![
                "evaluate",
                "--csv",
                csv,
                "--role",
                "database",
                "--resource",
                "cpu",
                "--size",
                "2",
            ],
            3,
        ),
        (vec!["check-config", "/nonexistent/steward.toml"], 1),
        (vec!["observe", "--patroni", "ftp://127.0.0.1:8008"], 2),
        (vec!["observe", "--patroni", "http://127.0.0.1:1"], 1),
    ] {
        let out = steward(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue 15: `check-config --resolve` asks libvirt (its test driver, whose default host holds
/// one domain, `test`) what each `[[platform.libvirt.adopt]]` rule takes.
#[cfg(feature = "libvirt")]
#[test]
fn resolve_shows_what_each_libvirt_adoption_rule_takes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("libvirt.toml");
    let template = "<domain type='test'><name>{{name}}</name>{{metadata}}\
        <memory unit='KiB'>{{max_memory_kib}}</memory>\
        <currentMemory unit='KiB'>{{memory_kib}}</currentMemory>\
        <vcpu current='{{vcpus}}'>{{max_vcpus}}</vcpu>\
        <os><type arch='x86_64'>hvm</type></os></domain>";
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"demo\"\nstate_dir = \"{}\"\n\n\
             [patroni]\nurls = [\"http://127.0.0.1:8008\"]\n\n\
             [platform]\nkind = \"libvirt\"\n\n\
             [platform.libvirt]\ncluster = \"demo\"\nuris = [\"test:///default\"]\n\n\
             [platform.libvirt.database]\ntemplate = \"{template}\"\nmax_vcpus = 4\n\
             max_memory_bytes = 4294967296\n\n\
             [[platform.libvirt.adopt]]\ndomain = \"test\"\nmember = \"pg1\"\n\n\
             [[platform.libvirt.adopt]]\nname = \"legacy-*\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = steward(&["check-config", "--resolve", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("adopt[")).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("#   adopt[0] (domain test): member pg1 = domain test on "),
        "{stdout}"
    );
    assert_eq!(
        lines[1], "#   adopt[1] (name legacy-*): takes nothing",
        "{stdout}"
    );
}
