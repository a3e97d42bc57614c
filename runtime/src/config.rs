//! The config file: one TOML file, read in two stages.
//!
//! Stage one is [`RawConfig`]: serde structs that reject unknown fields and fill in named
//! defaults. Stage two is [`RawConfig::validate`]: it checks every invariant, collects EVERY
//! problem with its field path (`policy.database.cpu: low (0.8) must be below high (0.7)`), and
//! returns a [`Config`] in which invalid states can't be expressed.
//!
//! `steward check-config FILE` prints either all the errors or the effective config (the raw
//! config with every default filled in, which is what [`RawConfig`] serializes to).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use steward_adapters::patroni::{PatroniConfig, PatroniSettings};
use steward_adapters::prometheus::{PrometheusConfig, PrometheusSettings};
use steward_model::ConfigErrors;
use steward_policies::{PolicyConfig, RawPolicyConfig};
use steward_repairer::{RawRepairConfig, RepairConfig};
use steward_scaler::{RawScalerConfig, ScalerConfig};

use crate::run::config::{PlatformSettings, RawPlatformConfig, RawRunConfig, RunConfig};

/// Default cluster name: Patroni's own default `scope` is unset, and most deployments (the
/// Patroni docs, Spilo) call the cluster after the service; we pick a neutral `postgres`.
pub const DEFAULT_CLUSTER_NAME: &str = "postgres";

/// Default state directory (the journal of in-flight operations): the FHS place for a daemon's
/// persistent state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/steward";

/// The whole config file, as written (stage one).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Which cluster Steward looks after, and where it keeps its state.
    #[serde(default)]
    pub cluster: RawCluster,
    /// The scaling policies: `[policy.database.cpu]`, `[policy.database.memory]`,
    /// `[policy.database.disk]`, the same under `policy.balancer`, and `[policy.replicas]`.
    #[serde(default)]
    pub policy: RawPolicyConfig,
    /// How to reach Patroni's REST API (`[patroni]`). Needed by the commands that look at a
    /// live cluster; `evaluate` does without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniConfig>,
    /// How to reach Prometheus (`[prometheus]`), and the PromQL of each metric. Without it,
    /// figures come from Patroni and the platform only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusConfig>,
    /// Where the members live (`[platform]`, `kind` and its sub-section). Needed by `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<RawPlatformConfig>,
    /// The repairer: grace windows, lag limit, guards (`[repair]`).
    #[serde(default)]
    pub repair: RawRepairConfig,
    /// The scaler's rollout: PostgreSQL settings, step timeouts (`[scaler]`).
    #[serde(default)]
    pub scaler: RawScalerConfig,
    /// The loops' pace (`[run]`).
    #[serde(default)]
    pub run: RawRunConfig,
    /// The HTTP API of `steward run` (`[server]`): `/healthz`, `/metrics`, `/status`, `/sd`,
    /// pause and resume. Without the section, `run` serves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::server::RawServerConfig>,
    /// The HAProxy balancers whose backends `steward run` keeps in step with the members
    /// (`[balancers]`): Runtime API endpoints, backend names, ports. Without it, nothing is
    /// added to or removed from a balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancers: Option<crate::run::config::RawBalancersConfig>,
    /// Leader election among several `steward run` instances on an etcd lease (`[lease]`).
    /// Without it, this instance acts alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<steward_adapters::lease::LeaseConfig>,
    /// Many clusters in one `steward run` (`[fleet]`): a count of simulated clusters, or
    /// `[[fleet.cluster]]` entries. Without it, `run` looks after `[cluster]` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::run::config::RawFleetConfig>,
}

/// `[cluster]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// The cluster's name: Patroni's `scope`. Every resource Steward creates or adopts carries it
    /// as a label, so it must be a valid label value: 1-63 characters of `a-z 0-9 - _ .`,
    /// starting and ending with a letter or digit.
    pub name: String,
    /// Where Steward journals in-flight operations (created if missing).
    pub state_dir: PathBuf,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            name: DEFAULT_CLUSTER_NAME.to_string(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

/// The validated config (stage two).
#[derive(Clone, Debug)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub policy: PolicyConfig,
    pub patroni: Option<PatroniSettings>,
    pub prometheus: Option<PrometheusSettings>,
    pub platform: Option<PlatformSettings>,
    pub repair: RepairConfig,
    /// Shared (an `Arc`): a fleet's clusters copy the config, and their scalers share this.
    pub scaler: Arc<ScalerConfig>,
    pub run: RunConfig,
    pub server: Option<crate::server::ServerConfig>,
    pub balancers: Option<crate::run::config::BalancersConfig>,
    pub lease: Option<steward_adapters::lease::LeaseSettings>,
    pub fleet: Option<crate::run::config::FleetSettings>,
}

/// The validated `[cluster]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    pub state_dir: PathBuf,
}

impl RawConfig {
    /// Checks everything and returns every problem at once.
    pub fn validate(self) -> Result<Config, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        // A listed fleet's clusters name their own Patroni URLs; `[patroni]` then holds what they
        // share (credentials, timeouts, TLS), checked here with the first cluster's URLs.
        let listed = self.fleet.as_ref().filter(|f| f.is_listed());
        let patroni_section = match (listed, &self.patroni) {
            (Some(f), Some(p)) => {
                if !p.urls.is_empty() {
                    errors.push(
                        "patroni.urls",
                        "leave it out with [[fleet.cluster]]: each cluster lists its own \
                         patroni_urls",
                    );
                }
                Some(PatroniConfig {
                    urls: f.cluster[0].patroni_urls.clone(),
                    ..p.clone()
                })
            }
            _ => self.patroni.clone(),
        };
        // Checked here, filed in its place below: the fleet's clusters take what it shares.
        let patroni_checked = patroni_section.as_ref().map(|p| {
            p.validate().map_err(|e| match listed {
                // The URLs' errors are the cluster entries' (reported under `fleet`).
                Some(_) => e.without_path_prefix("urls"),
                None => e,
            })
        });
        // Checked before the sections it reads are moved, filed after them.
        let fleet = self.fleet.as_ref().map(|f| {
            f.validate(crate::run::config::FleetContext {
                cluster_name: &self.cluster.name,
                platform: self.platform.as_ref().map(|p| p.kind),
                patroni: patroni_checked.as_ref().and_then(|r| r.as_ref().ok()),
                balancers: self.balancers.is_some(),
                adopts: self
                    .platform
                    .as_ref()
                    .and_then(|p| p.docker.as_ref())
                    .and_then(|d| d.get("adopt"))
                    .and_then(|a| a.as_array())
                    .is_some_and(|a| !a.is_empty()),
            })
        });
        let cluster = self.cluster.validate(&mut errors);
        let policy = match self.policy.validate() {
            Ok(p) => Some(p),
            Err(e) => {
                errors.extend_under("policy", e);
                None
            }
        };
        let patroni = section(&mut errors, "patroni", patroni_checked);
        let prometheus = section(
            &mut errors,
            "prometheus",
            self.prometheus.as_ref().map(PrometheusConfig::validate),
        );
        let platform = section(
            &mut errors,
            "platform",
            self.platform.as_ref().map(RawPlatformConfig::validate),
        );
        let repair = section(&mut errors, "repair", Some(self.repair.validate()));
        // The scaler's errors already carry their `scaler.` prefix.
        let scaler = match &policy {
            Some(p) => match self.scaler.validate(p.clone()) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    for fe in e.iter() {
                        errors.push(fe.path.clone(), fe.message.clone());
                    }
                    None
                }
            },
            None => None,
        };
        let run = section(&mut errors, "run", Some(self.run.validate()));
        let server = section(
            &mut errors,
            "server",
            self.server.map(crate::server::RawServerConfig::validate),
        );
        let balancers = section(
            &mut errors,
            "balancers",
            self.balancers
                .as_ref()
                .map(crate::run::config::RawBalancersConfig::validate),
        );
        let lease = section(
            &mut errors,
            "lease",
            self.lease
                .as_ref()
                .map(steward_adapters::lease::LeaseConfig::validate),
        );
        let fleet = section(&mut errors, "fleet", fleet);
        match (cluster, policy, repair, scaler, run) {
            (Some(cluster), Some(policy), Some(repair), Some(scaler), Some(run))
                if errors.is_empty() =>
            {
                Ok(Config {
                    cluster,
                    policy,
                    patroni,
                    prometheus,
                    platform,
                    repair,
                    scaler,
                    run,
                    server,
                    balancers,
                    lease,
                    fleet,
                })
            }
            _ => Err(errors),
        }
    }

    /// The effective config as TOML: what the file said, with every default filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

/// An optional section's validation result, its errors filed under `name`.
fn section<T>(
    errors: &mut ConfigErrors,
    name: &str,
    result: Option<Result<T, ConfigErrors>>,
) -> Option<T> {
    match result? {
        Ok(settings) => Some(settings),
        Err(e) => {
            errors.extend_under(name, e);
            None
        }
    }
}

impl RawCluster {
    fn validate(self, errors: &mut ConfigErrors) -> Option<ClusterConfig> {
        let before = errors.len();
        if let Err(why) = check_label_value(&self.name) {
            errors.push("cluster.name", why);
        }
        if self.state_dir.as_os_str().is_empty() {
            errors.push(
                "cluster.state_dir",
                "must not be empty (e.g. /var/lib/steward)",
            );
        } else if self.state_dir.is_relative() {
            errors.push(
                "cluster.state_dir",
                format!(
                    "`{}` must be an absolute path (a daemon's working directory changes)",
                    self.state_dir.display()
                ),
            );
        }
        (errors.len() == before).then_some(ClusterConfig {
            name: self.name,
            state_dir: self.state_dir,
        })
    }
}

/// A label value every platform accepts (Kubernetes is the strictest: 63 characters,
/// alphanumerics, `-`, `_`, `.`, alphanumeric at both ends).
fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 63 {
        return Err(format!(
            "`{value}` is {} characters long; at most 63 are allowed (it is used as a label)",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("`{value}` contains `{c}`; use only letters, digits, `-`, `_` and `.` (it is used as a label)"));
    }
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !ends_ok(value.chars().next()) || !ends_ok(value.chars().last()) {
        return Err(format!(
            "`{value}` must start and end with a letter or digit (it is used as a label)"
        ));
    }
    Ok(())
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} error(s):\n{errors}", errors.len())]
    Invalid { path: PathBuf, errors: ConfigErrors },
}

/// Reads and parses a config file (stage one only).
pub fn read_raw(path: &Path) -> Result<RawConfig, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let column = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        LoadError::Parse {
            path: path.to_path_buf(),
            message: format!(
                "line {line}, column {column}: not UTF-8 text (a config file is UTF-8 TOML)"
            ),
        }
    })?;
    parse_raw(&text).map_err(|message| LoadError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses config text (stage one). The message names the line and column of the problem; it
/// shows the line itself only when the line does not look like it holds a credential
/// ([`looks_secret`]): an inline `password = "..."` is refused, and its refusal must not print it.
pub fn parse_raw(text: &str) -> Result<RawConfig, String> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let Some(span) = e.span() else {
            return e.to_string().trim_end().to_string();
        };
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_text = &text[line_start..line_end];
        if !looks_secret(line_text) {
            return e.to_string().trim_end().to_string();
        }
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let key = line_text.split('=').next().unwrap_or_default().trim();
        format!(
            "line {line}, column {column}, key `{key}`: {} (the line is not shown: it looks like it \
             holds a credential; give secrets through the *_file or *_env settings)",
            scrub_quoted(e.message())
        )
    })
}

/// Whether a config line's key names a credential (password, token, secret, private key).
fn looks_secret(line: &str) -> bool {
    let key = line
        .split('=')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    [
        "password",
        "passwd",
        "token",
        "secret",
        "credential",
        "private_key",
        "api_key",
    ]
    .iter()
    .any(|w| key.contains(w))
}

/// `message` with every double-quoted part replaced by `"***"` (a type error quotes the value).
fn scrub_quoted(message: &str) -> String {
    let mut out = String::new();
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('"');
        out.push_str(if i % 2 == 0 { "***" } else { part });
    }
    out
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    read_raw(path)?
        .validate()
        .map_err(|errors| LoadError::Invalid {
            path: path.to_path_buf(),
            errors,
        })
}

impl fmt::Display for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (state in {})", self.name, self.state_dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: an inline secret is refused (unknown field, or a wrong type) and the refusal
    /// names line, column and key but never prints the line or the value.
    #[test]
    fn a_refused_secret_is_never_printed() {
        for text in [
            "[patroni]\nurls = [\"http://127.0.0.1:8008\"]\npassword = \"hunter2-marker\"\n",
            "[server]\nlisten = \"127.0.0.1:0\"\ntoken = \"hunter2-marker\"\n",
            "[lease]\npassword_env = 12\n[cluster]\napi_token = [\"hunter2-marker\"]\n",
        ] {
            let e = parse_raw(text).expect_err("refused");
            assert!(!e.contains("hunter2-marker"), "{e}");
            assert!(e.contains("line ") && e.contains("key `"), "{e}");
        }
        // A line without a credential keeps TOML's own message, snippet and all.
        let e = parse_raw("[run]\ntick = 5\n").unwrap_err();
        assert!(e.contains("tick = 5"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_a_parse_error_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, b"[cluster]\nname = \"ok\"\nstate_dir = \"/x\xff\"\n").unwrap();
        let e = read_raw(&path).unwrap_err();
        assert!(matches!(e, LoadError::Parse { .. }), "{e:?}");
        assert!(e.to_string().contains("line 3, column 16"), "{e}");
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = parse_raw("").unwrap().validate().unwrap();
        assert_eq!(config.cluster.name, DEFAULT_CLUSTER_NAME);
        assert_eq!(config.cluster.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn unknown_fields_name_the_field_and_line() {
        let err = parse_raw("[cluster]\nname = \"a\"\nnmae = \"b\"\n").unwrap_err();
        assert!(err.contains("unknown field `nmae`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn every_error_is_collected_with_its_path() {
        let text = "[cluster]\nname = \"Bad Name!\"\nstate_dir = \"relative/dir\"\n";
        let errors = parse_raw(text).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["cluster.name", "cluster.state_dir"], "{errors}");
    }

    #[test]
    fn source_sections_are_validated_under_their_names() {
        let text = "[patroni]\nurls = [\"http://127.0.0.11:8008\", \"ftp://x\"]\n[prometheus]\nurl = \"\"\n";
        let errors = parse_raw(text).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.iter().any(|p| p.starts_with("patroni.urls")),
            "{errors}"
        );
        assert!(
            paths.iter().any(|p| p.starts_with("prometheus")),
            "{errors}"
        );
    }

    /// Issue 19: a listed fleet's clusters bring their own Patroni URLs; `[patroni]` holds what
    /// they share, is checked once, and may not list URLs of its own.
    #[test]
    fn a_listed_fleet_takes_patroni_urls_from_its_clusters_only() {
        let fleet = "[platform]\nkind = \"docker\"\n[platform.docker]\ncluster = \"x\"\n\
                     hosts = [{name = \"h\", endpoint = \"unix:///var/run/docker.sock\"}]\n\
                     addresses = [\"10.0.0.10\"]\nvolumes = {kind = \"fixed\", root = \"/srv\"}\n\
                     database = {image = \"i\", command = [\"c\"]}\n\
                     [[fleet.cluster]]\nname = \"a\"\npatroni_urls = [\"http://10.0.1.1:8008\"]\n\
                     addresses = [\"10.0.1.10-10.0.1.19\"]\n";
        let shared = format!("{fleet}[patroni]\ntimeout = \"3s\"\n");
        let config = parse_raw(&shared).unwrap().validate().expect("valid");
        let Some(crate::run::config::FleetSettings::Listed { clusters }) = config.fleet else {
            panic!("a listed fleet");
        };
        assert_eq!(clusters[0].patroni.urls, ["http://10.0.1.1:8008"]);
        assert_eq!(
            clusters[0].patroni.timeout,
            std::time::Duration::from_secs(3)
        );
        let both = format!("{fleet}[patroni]\nurls = [\"http://10.0.2.1:8008\"]\n");
        let errors = parse_raw(&both).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["patroni.urls"], "{errors}");
        // A bad URL of a cluster is reported once, under the cluster.
        let bad = fleet.replace("http://10.0.1.1:8008", "ftp://10.0.1.1");
        let errors = parse_raw(&bad).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["fleet.cluster[0].patroni_urls[0]"], "{errors}");
    }

    #[test]
    fn label_values_follow_kubernetes_rules() {
        assert!(check_label_value("pg-main_1.a").is_ok());
        assert!(check_label_value("-pg").is_err());
        assert!(check_label_value(&"a".repeat(64)).is_err());
        assert!(check_label_value("").is_err());
    }

    #[test]
    fn the_effective_config_parses_back_to_itself() {
        let raw = RawConfig::default();
        let text = raw.to_toml();
        let again = parse_raw(&text).unwrap();
        assert_eq!(again.to_toml(), text);
        again.validate().unwrap();
    }

    proptest::proptest! {
        /// No text makes the loader panic: it either parses or says why.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            if let Ok(raw) = parse_raw(&text) {
                let _ = raw.validate();
            }
        }

        /// Plausible-looking TOML (keys and values the config uses) never panics either.
        #[test]
        fn toml_shaped_text_never_panics(
            lines in proptest::collection::vec(
                ("(cluster|policy|policy\\.database|policy\\.database\\.cpu|policy\\.replicas)",
                 "(name|low|high|target|min|max|step|cooldown|up_window)",
                 "(\"x\"|-1|0|0\\.5|1e309|\"5m\"|\"2GiB\"|true|\\[\\])"), 0..8)
        ) {
            let text: String = lines.iter().map(|(t, k, v)| format!("[{t}]\n{k} = {v}\n")).collect();
            if let Ok(raw) = parse_raw(&text) {
                let _ = raw.validate();
            }
        }
    }
}

/// Issue 16: every duration of the config has an upper bound, checked at validation with its
/// field path. This walks the effective config of every example (every default filled in),
/// sets each duration in turn to ten thousand years, and expects validation to refuse exactly
/// that field.
#[cfg(test)]
mod bound_tests {
    use super::*;

    fn durations(value: &toml::Value, path: String, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    durations(v, p, out);
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    durations(v, format!("{path}[{i}]"), out);
                }
            }
            toml::Value::String(s) if humantime::parse_duration(s).is_ok() => out.push(path),
            _ => {}
        }
    }

    fn set(value: &mut toml::Value, path: &str, to: toml::Value) {
        let mut cur = value;
        for part in path.split('.') {
            let (key, index) = match part.split_once('[') {
                Some((k, i)) => (k, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
                None => (part, None),
            };
            cur = cur.get_mut(key).unwrap();
            if let Some(i) = index {
                cur = cur.get_mut(i).unwrap();
            }
        }
        *cur = to;
    }

    #[test]
    fn every_duration_has_an_upper_bound_named_by_its_path() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut files = Vec::new();
        let mut dirs = vec![
            format!("{root}/examples").into(),
            format!("{root}/tests/data").into(),
        ];
        while let Some(dir) = dirs.pop() {
            let dir: std::path::PathBuf = dir;
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    files.push(path);
                }
            }
        }
        let mut unbounded = std::collections::BTreeSet::new();
        let mut checked = 0;
        for file in files {
            // Every valid config of the examples and the tests' data: between them they hold
            // every section.
            let text = std::fs::read_to_string(&file).unwrap();
            let Ok(raw) = parse_raw(&text) else { continue };
            let effective = raw.to_toml();
            if raw.validate().is_err() {
                continue;
            }
            let base: toml::Value = toml::from_str(&effective).unwrap();
            let mut paths = Vec::new();
            durations(&base, String::new(), &mut paths);
            for path in paths {
                let mut v = base.clone();
                set(&mut v, &path, toml::Value::String("10000years".into()));
                let text = toml::to_string(&v).unwrap();
                checked += 1;
                match parse_raw(&text) {
                    // Refused while parsing (the value does not fit the field's type): fine.
                    Err(_) => {}
                    Ok(raw) => match raw.validate() {
                        Err(errors)
                            if errors.iter().any(|e| {
                                path.ends_with(&e.path) || e.path.ends_with(&path) || e.path == path
                            }) => {}
                        _ => {
                            unbounded.insert(path);
                        }
                    },
                }
            }
        }
        assert!(checked > 20, "only {checked} durations found");
        assert!(
            unbounded.is_empty(),
            "durations without an upper bound: {unbounded:#?}"
        );
    }
}
