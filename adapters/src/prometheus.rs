//! Prometheus as a source: one batched instant query per metric for all members, and range
//! queries for the dry-run over history.
//!
//! Each [`Metric`] has a PromQL query (configurable, with defaults for the usual stack:
//! cAdvisor for container CPU/memory/OOM, postgres_exporter for connections/size/read rate,
//! Patroni's `/metrics` for lag; see [`default_query`]) and the label that names the
//! member in its answer. A query
//! answers for every member at once; results are keyed by that label's value, and the
//! observation matches them to members by name or address. Never one query per member.
//!
//! Missing is never zero (KEDA's bug: an empty answer read as 0 scaled things down): an empty
//! result, NaN and ±Inf are [`Reading::Missing`]; a sample older than `max_age` is
//! [`Reading::Stale`]. Note that an instant query's sample time is the evaluation time, and
//! Prometheus itself drops series not scraped for its lookback (5 min by default): `Stale`
//! catches answers that are old as a whole (a lagging remote store, clock skew), the lookback
//! catches dead targets, which then come back empty, hence missing.
//!
//! What this module is not: it does not know members or clusters, and it never fills a gap.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use steward_model::observation::{Figure, Source};
use steward_model::{ConfigErrors, Timestamp};
use tracing::debug;

use crate::http::{
    build_client, check_url, read_limited, resolve_secret, snippet, BodyError, Secret, TlsConfig,
    TlsSettings,
};

mod answer;
mod scan;
use answer::{Answer, Data};
use scan::{Kind, Streamed};
pub use steward_model::ports::metrics::{
    Metric, MetricReading, MetricsError, MetricsSource, Reading,
};
use steward_model::ports::ErrorKind;

/// Prometheus evaluates a query in milliseconds to seconds; 10 s bounds a slow range query.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// See [`crate::patroni::DEFAULT_CONNECT_TIMEOUT`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Two scrape intervals of Prometheus's default 1 min, plus slack: older means the pipeline
/// behind the figure has stopped, not that the figure is a bit late.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(150);
/// An answer larger than this is refused. 64 MiB holds an instant query over ~400,000 series
/// (a fleet of 100,000 clusters) or a range query of 11,000 points (Prometheus' own cap per
/// series) for ~150 members.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// The largest `max_body_bytes` accepted: past this a single answer is a memory hazard.
pub const MAX_MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// The longest `timeout` and `connect_timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest `max_age` accepted: older figures describe another day's cluster.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How much of an error answer's body an error message quotes.
const ERROR_BODY_CHARS: usize = 200;

/// A PromQL query and the label naming the member in its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricQuery {
    /// PromQL, answering one series per member.
    pub query: String,
    /// The label whose value names the member (its name or `host:port`).
    pub label: String,
}

// ---- config ------------------------------------------------------------------------------

/// `[prometheus]`: where Prometheus is and what to ask it. Serializes with every default
/// filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL of Prometheus (`http://127.0.0.1:9090`). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Basic-auth user (with `password_file` or `password_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding a bearer token (exclusive with basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Environment variable holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// Total time for one query. Default [`DEFAULT_TIMEOUT`].
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time to connect. Default [`DEFAULT_CONNECT_TIMEOUT`].
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A sample older than this is stale. Default [`DEFAULT_MAX_AGE`].
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Answers larger than this are refused. Default [`DEFAULT_MAX_BODY_BYTES`].
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Per-metric overrides of [`default_query`], keyed by [`Metric::as_str`]. An empty
    /// `query` turns the metric off.
    #[serde(default)]
    pub queries: BTreeMap<String, MetricQuery>,
    /// TLS: CA and client certificate.
    #[serde(default)]
    pub tls: TlsConfig,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_max_age() -> Duration {
    DEFAULT_MAX_AGE
}
fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: None,
            username: None,
            password_file: None,
            password_env: None,
            bearer_token_file: None,
            bearer_token_env: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_age: DEFAULT_MAX_AGE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            queries: BTreeMap::new(),
            tls: TlsConfig::default(),
        }
    }
}

/// How requests authenticate.
#[derive(Clone, Debug)]
pub enum PrometheusAuth {
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

/// A validated `[prometheus]` section.
#[derive(Clone, Debug)]
pub struct PrometheusSettings {
    pub url: String,
    pub auth: Option<PrometheusAuth>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_age: Duration,
    pub max_body_bytes: u64,
    /// The metrics asked for; a metric absent here is not queried (and stays missing).
    pub queries: BTreeMap<Metric, MetricQuery>,
    pub tls: TlsSettings,
}

impl PrometheusSettings {
    /// These settings for one cluster of several sharing this Prometheus (a fleet): a default
    /// query becomes its [`cluster_query`], and `{cluster}` in a query of the config file
    /// becomes the cluster's name.
    pub fn for_cluster(&self, cluster: &str) -> PrometheusSettings {
        let queries = self
            .queries
            .iter()
            .map(|(metric, q)| {
                let own = if default_query(*metric).as_ref() == Some(q) {
                    cluster_query(*metric, cluster).unwrap_or_else(|| q.clone())
                } else {
                    MetricQuery {
                        query: q.query.replace("{cluster}", cluster),
                        label: q.label.clone(),
                    }
                };
                (*metric, own)
            })
            .collect();
        PrometheusSettings {
            queries,
            ..self.clone()
        }
    }

    /// Every default, for `url` (used by `steward observe --prometheus`).
    pub fn with_url(url: &str) -> Result<PrometheusSettings, ConfigErrors> {
        PrometheusConfig {
            url: Some(url.into()),
            ..Default::default()
        }
        .validate()
    }
}

impl PrometheusConfig {
    /// Validates, reading secrets from the process environment.
    pub fn validate(&self) -> Result<PrometheusSettings, ConfigErrors> {
        self.validate_with_env(&|n| std::env::var(n).ok())
    }

    /// Validates with `env` as the environment; paths are relative to the section.
    pub fn validate_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PrometheusSettings, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let url = match self.url.as_deref().map(check_url) {
            None => {
                errors.push("url", "required, e.g. http://127.0.0.1:9090");
                String::new()
            }
            Some(Ok(u)) => u,
            Some(Err(msg)) => {
                errors.push("url", msg);
                String::new()
            }
        };
        let password = resolve_secret(
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
            env,
            &mut errors,
        );
        let token = resolve_secret(
            "bearer_token",
            self.bearer_token_file.as_deref(),
            self.bearer_token_env.as_deref(),
            env,
            &mut errors,
        );
        let auth = match (&self.username, password, token) {
            (_, _, Some(_)) if self.username.is_some() => {
                errors.push(
                    "bearer_token_file",
                    "give either basic auth or a bearer token, not both",
                );
                None
            }
            (None, None, Some(t)) => Some(PrometheusAuth::Bearer(t)),
            (None, Some(_), _) => {
                errors.push("username", "a password needs a username");
                None
            }
            (Some(u), Some(p), None) => Some(PrometheusAuth::Basic {
                username: u.clone(),
                password: p,
            }),
            (Some(_), None, None) => {
                if !errors.iter().any(|e| e.path.starts_with("password")) {
                    errors.push(
                        "password_file",
                        "a username needs a password (`password_file` or `password_env`)",
                    );
                }
                None
            }
            _ => None,
        };
        let mut queries: BTreeMap<Metric, MetricQuery> = Metric::ALL
            .into_iter()
            .filter_map(|m| default_query(m).map(|q| (m, q)))
            .collect();
        for (key, q) in &self.queries {
            let Some(metric) = Metric::from_key(key) else {
                let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                errors.push(
                    format!("queries.{key}"),
                    format!("unknown metric (known: {})", known.join(", ")),
                );
                continue;
            };
            if q.query.trim().is_empty() {
                queries.remove(&metric);
                continue;
            }
            if q.label.trim().is_empty() {
                errors.push(
                    format!("queries.{key}.label"),
                    "must name the label that identifies the member",
                );
            }
            queries.insert(metric, q.clone());
        }
        let timeout = errors.positive_at_most("timeout", self.timeout, MAX_TIMEOUT);
        let connect_timeout =
            errors.positive_at_most("connect_timeout", self.connect_timeout, MAX_TIMEOUT);
        let max_age = errors.positive_at_most("max_age", self.max_age, MAX_MAX_AGE);
        let max_body_bytes = self.max_body_bytes;
        if !(1024..=MAX_MAX_BODY_BYTES).contains(&max_body_bytes) {
            errors.push(
                "max_body_bytes",
                format!("must be between 1024 and {MAX_MAX_BODY_BYTES} (1 GiB)"),
            );
        }
        let tls = self.tls.validate_into("tls", &mut errors);
        errors.into_result(PrometheusSettings {
            url,
            auth,
            timeout,
            connect_timeout,
            max_age,
            max_body_bytes,
            queries,
            tls,
        })
    }
}

// ---- errors ------------------------------------------------------------------------------

/// A failed Prometheus query. `url` is the configured base URL (credentials are refused in
/// it, so it is safe to show).
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("building the prometheus client failed")]
    Build(#[source] reqwest::Error),

    #[error("the prometheus url `{url}` is not usable: {reason}")]
    Url { url: String, reason: String },

    #[error("the {metric} query to prometheus at {url} got no answer")]
    Send {
        metric: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "prometheus at {url} refused the {metric} query (HTTP {status}, {error_type}): {message}"
    )]
    Api {
        metric: &'static str,
        url: String,
        status: u16,
        error_type: String,
        message: String,
    },

    #[error("prometheus at {url} answered the {metric} query with HTTP {status}: {body}")]
    Status {
        metric: &'static str,
        url: String,
        status: u16,
        body: String,
    },

    #[error(
        "the answer of prometheus at {url} to the {metric} query is larger than {limit} bytes \
         ([prometheus] max_body_bytes): narrow the query, or raise the limit"
    )]
    TooLarge {
        metric: &'static str,
        url: String,
        limit: u64,
    },

    #[error("the answer of prometheus at {url} to the {metric} query is not Prometheus' JSON")]
    Decode {
        metric: &'static str,
        url: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("the {metric} query answered a {got} where a {expected} was expected")]
    ResultType {
        metric: &'static str,
        got: &'static str,
        expected: &'static str,
    },

    #[error("{metric} is not queried (no query configured)")]
    NotConfigured { metric: &'static str },
}

impl PrometheusError {
    pub fn class(&self) -> ErrorKind {
        match self {
            // Connect refused, timed out, cut mid-answer: the next tick may get through.
            PrometheusError::Send { .. } => ErrorKind::Transient,
            // Prometheus' own error types (web/api/v1/api.go): these pass, the rest are the
            // query's fault.
            PrometheusError::Api {
                error_type, status, ..
            } => match error_type.as_str() {
                "timeout" | "canceled" | "unavailable" | "internal" => ErrorKind::Transient,
                "not_found" => ErrorKind::NotFound,
                "bad_data" | "execution" => ErrorKind::Permanent,
                _ => ErrorKind::of_http_status(*status),
            },
            PrometheusError::Status { status, .. } => ErrorKind::of_http_status(*status),
            PrometheusError::Build(_)
            | PrometheusError::Url { .. }
            | PrometheusError::TooLarge { .. }
            | PrometheusError::Decode { .. }
            | PrometheusError::ResultType { .. }
            | PrometheusError::NotConfigured { .. } => ErrorKind::Permanent,
        }
    }
}

/// The default query for the usual stack, or `None` where the stack has no such metric.
///
/// - Scrape targets carry a `member` label naming the Patroni member (Steward's HTTP
///   service discovery sets it, DESIGN.md 7; the lab sets it with file_sd), so exporter
///   queries group `by (member)`: postgres_exporter for connections, size and read rate,
///   Patroni's `/metrics` for lag (the query the lab recorded against Prometheus 2.42).
/// - cAdvisor is one target per host, not per member: it exports Docker labels as
///   `container_label_<name>`, so Steward's `io.steward.member` becomes the member label
///   (and only owned containers count). Memory is RSS + mapped files, which holds the
///   touched part of shared_buffers, never the page cache (ENVIRONMENT.md).
/// - `pg_database_size_bytes` is a lower bound of disk used (no WAL, no overhead): point
///   `disk_used` at node_exporter's filesystem metrics where the data disk is a mount.
/// - WAL bytes need a custom exporter query (`pg_ls_waldir()`), so there is no default.
/// - Slots: postgres_exporter's `pg_replication_slots_pg_wal_lsn_diff`, keyed by `slot_name`.
/// - The buffer cache: postgres_exporter's `pg_stat_database_blks_hit`/`_read` (a hit ratio
///   over 5 minutes) and `pg_settings_shared_buffers_bytes`.
/// - With several clusters in one Prometheus, [`cluster_query`] narrows each to one cluster.
pub fn default_query(metric: Metric) -> Option<MetricQuery> {
    query_for(metric, None)
}

/// [`default_query`] narrowed to one cluster's members, for clusters that share a Prometheus
/// (a fleet): cAdvisor's series by the containers' `io.steward.cluster` label, Patroni's by its
/// `scope` label (the cluster's name is Patroni's scope), postgres_exporter's (which say no
/// cluster) by their member having Patroni series of that scope. Without it, the leader's WAL
/// position behind every lag would be the highest of any cluster.
pub fn cluster_query(metric: Metric, cluster: &str) -> Option<MetricQuery> {
    query_for(metric, Some(cluster))
}

fn query_for(metric: Metric, cluster: Option<&str>) -> Option<MetricQuery> {
    // PromQL label matchers: nothing, or this cluster's (a cluster name is a label value:
    // letters, digits, `-`, `_`, `.`; nothing to escape).
    let scope = cluster.map_or(String::new(), |c| format!("scope=\"{c}\""));
    let patroni = |name: &str| format!("{name}{{{scope}}}").replace("{}", "");
    let cadvisor = |expr: &str| {
        MetricQuery {
        query: format!(
            "sum by (member) (label_replace({expr}, \"member\", \"$1\", \"container_label_io_steward_member\", \"(.+)\"))"
        ),
        label: "member".into(),
    }
    };
    let owned = match cluster {
        None => "{container_label_io_steward_member!=\"\"}".to_string(),
        Some(c) => format!(
            "{{container_label_io_steward_member!=\"\",container_label_io_steward_cluster=\"{c}\"}}"
        ),
    };
    // An exporter series counts when its member has Patroni series of this scope.
    let of_cluster = |query: String| match cluster {
        None => query,
        Some(_) => format!("({query}) and on (member) {}", patroni("patroni_version")),
    };
    let by_member = |query: &str| MetricQuery {
        query: of_cluster(query.to_string()),
        label: "member".into(),
    };
    Some(match metric {
        Metric::CpuUsed => cadvisor(&format!("rate(container_cpu_usage_seconds_total{owned}[1m])")),
        Metric::MemoryUsed => {
            cadvisor(&format!("container_memory_rss{owned} + container_memory_mapped_file{owned}"))
        }
        Metric::OomKills => cadvisor(&format!("container_oom_events_total{owned}")),
        Metric::DiskUsed => by_member("sum by (member) (pg_database_size_bytes)"),
        Metric::Connections => by_member("sum by (member) (pg_stat_activity_count)"),
        Metric::ReadRate => by_member(
            "sum by (member) (rate(pg_stat_database_xact_commit[1m]) + rate(pg_stat_database_xact_rollback[1m]))",
        ),
        // clamp_min: with no primary (etcd down, Patroni demoted it) the leader's position
        // is stale and the difference went negative (-169 MB measured on the lab).
        Metric::LagBytes => MetricQuery {
            query: format!(
                "clamp_min(scalar(max({})) - max by (member) ({} and on (member) {} == 1), 0)",
                patroni("patroni_xlog_location"),
                patroni("patroni_xlog_replayed_location"),
                patroni("patroni_replica"),
            ),
            label: "member".into(),
        },
        // Keyed by slot, not member; the replicas' copies of the slots (Patroni 4 keeps them)
        // are left out: what fills a disk is the leader's.
        Metric::SlotWalBytes => MetricQuery {
            query: format!(
                "max by (slot_name) ({})",
                of_cluster(
                    "pg_replication_slots_pg_wal_lsn_diff unless on (member) patroni_replica == 1"
                        .to_string()
                )
            ),
            label: "slot_name".into(),
        },
        // Idle (no block read at all) is 0/0: NaN, missing, not a bad ratio.
        Metric::CacheHitRatio => by_member(
            "sum by (member) (rate(pg_stat_database_blks_hit[5m])) / sum by (member) (rate(pg_stat_database_blks_hit[5m]) + rate(pg_stat_database_blks_read[5m]))",
        ),
        Metric::SharedBuffers => by_member("max by (member) (pg_settings_shared_buffers_bytes)"),
        Metric::WalBytes => return None,
    })
}

/// The two API endpoints Steward asks.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Query,
    Range,
}

/// The Prometheus HTTP API client: GET `/api/v1/query` and `/api/v1/query_range`, bodies read
/// with a size limit and decoded with borrowed strings (see `answer`).
pub struct PrometheusClient {
    http: reqwest::Client,
    /// The base URL, no trailing `/`.
    url: String,
    query_url: reqwest::Url,
    range_url: reqwest::Url,
    queries: BTreeMap<Metric, MetricQuery>,
    timeout: Duration,
    max_age: Duration,
    max_body_bytes: u64,
}

impl PrometheusClient {
    pub fn new(settings: &PrometheusSettings) -> Result<Self, PrometheusError> {
        let mut headers = HeaderMap::new();
        if let Some(value) = auth_header(settings.auth.as_ref()) {
            headers.insert(AUTHORIZATION, value);
        }
        let http = build_client(
            settings.timeout,
            settings.connect_timeout,
            &settings.tls,
            headers,
        )
        .map_err(PrometheusError::Build)?;
        let url = settings.url.trim_end_matches('/').to_string();
        let endpoint = |path: &str| {
            reqwest::Url::parse(&format!("{url}{path}")).map_err(|e| PrometheusError::Url {
                url: url.clone(),
                reason: e.to_string(),
            })
        };
        Ok(PrometheusClient {
            http,
            query_url: endpoint("/api/v1/query")?,
            range_url: endpoint("/api/v1/query_range")?,
            url,
            queries: settings.queries.clone(),
            timeout: settings.timeout,
            max_age: settings.max_age,
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// One GET of `endpoint` with `params`; the body of a 2xx answer, else the answer's error.
    async fn fetch(
        &self,
        metric: Metric,
        endpoint: Endpoint,
        params: &[(&str, &str)],
    ) -> Result<Vec<u8>, PrometheusError> {
        let metric = metric.as_str();
        let url = || self.url.clone();
        let send = |source| PrometheusError::Send {
            metric,
            url: url(),
            source,
        };
        let mut target = match endpoint {
            Endpoint::Query => self.query_url.clone(),
            Endpoint::Range => self.range_url.clone(),
        };
        target.query_pairs_mut().extend_pairs(params);
        let mut resp = self.http.get(target).send().await.map_err(send)?;
        let status = resp.status().as_u16();
        let body = read_limited(&mut resp, self.max_body_bytes)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { limit } => PrometheusError::TooLarge {
                    metric,
                    url: url(),
                    limit,
                },
                BodyError::Timeout(source) | BodyError::Read(source) => send(source),
            })?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        // Prometheus says why in JSON (400 bad_data, 422 execution, 503 timeout, ...); a proxy
        // in front of it may answer anything.
        Err(match answer::decode(&body) {
            Ok(Answer {
                error_type: Some(t),
                error,
                ..
            }) => PrometheusError::Api {
                metric,
                url: url(),
                status,
                error_type: t.into_owned(),
                message: snippet(error.unwrap_or_default().as_bytes(), ERROR_BODY_CHARS),
            },
            _ => PrometheusError::Status {
                metric,
                url: url(),
                status,
                body: snippet(&body, ERROR_BODY_CHARS),
            },
        })
    }

    /// A body the scanner refused, as a [`PrometheusError::Decode`]: serde_json's error where
    /// it refuses the body too (the message users know, with its line and column), else the
    /// scanner's own with its position (the two agree on what they refuse: `scan`'s tests).
    fn scan_error(&self, metric: Metric, body: &[u8], e: &scan::ScanError) -> PrometheusError {
        let source = answer::decode(body).err().unwrap_or_else(|| {
            let (line, column) = e.position(body);
            <serde_json::Error as serde::de::Error>::custom(format_args!(
                "{} at line {line} column {column}",
                e.what
            ))
        });
        PrometheusError::Decode {
            metric: metric.as_str(),
            url: self.url.clone(),
            source,
        }
    }

    /// Decodes a 2xx body into its data; an `"status": "error"` answer is an API error.
    fn data<'a>(&self, metric: Metric, body: &'a [u8]) -> Result<Data<'a>, PrometheusError> {
        let decoded = answer::decode(body).map_err(|source| PrometheusError::Decode {
            metric: metric.as_str(),
            url: self.url.clone(),
            source,
        })?;
        match decoded {
            Answer {
                data: Some(data), ..
            } if decoded.status == "success" => Ok(data),
            Answer {
                error_type, error, ..
            } => Err(self.api_error(metric, error_type, error)),
        }
    }

    /// Every configured metric, queried concurrently (one query each). Failures are returned
    /// beside the readings: one broken query must not hide the others.
    pub async fn instant_all(
        &self,
        now: Timestamp,
    ) -> (
        BTreeMap<Metric, MetricReading>,
        Vec<(Metric, PrometheusError)>,
    ) {
        let results = futures::future::join_all(
            self.queries
                .keys()
                .map(|&m| async move { (m, self.instant_query(m, now).await) }),
        )
        .await;
        let mut readings = BTreeMap::new();
        let mut errors = Vec::new();
        for (m, r) in results {
            match r {
                Ok(reading) => {
                    readings.insert(m, reading);
                }
                Err(e) => errors.push((m, e)),
            }
        }
        (readings, errors)
    }

    fn query_of(&self, metric: Metric) -> Result<&MetricQuery, PrometheusError> {
        self.queries
            .get(&metric)
            .ok_or(PrometheusError::NotConfigured {
                metric: metric.as_str(),
            })
    }
}

impl std::fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusClient")
            .field("url", &self.url)
            .field("metrics", &self.queries.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn auth_header(auth: Option<&PrometheusAuth>) -> Option<HeaderValue> {
    let mut value = match auth? {
        PrometheusAuth::Bearer(t) => {
            HeaderValue::from_str(&format!("Bearer {}", t.expose())).ok()?
        }
        PrometheusAuth::Basic { username, password } => {
            // Let reqwest do the base64 rather than pull in a crate for one header.
            let req = reqwest::Client::new()
                .get("http://127.0.0.1/")
                .basic_auth(username, Some(password.expose()))
                .build()
                .ok()?;
            req.headers().get(AUTHORIZATION)?.clone()
        }
    };
    // Marked sensitive: hyper and reqwest then redact it in their Debug output.
    value.set_sensitive(true);
    Some(value)
}

/// Judges one sample: non-finite is missing, older than `max_age` at `now` is stale.
pub fn judge(value: f64, sample_secs: f64, now: Timestamp, max_age: Duration) -> Reading {
    if !value.is_finite() {
        return Reading::Missing;
    }
    let at = Timestamp::from_millis(secs_to_millis(sample_secs));
    let figure = Figure::new(value, Source::Prometheus, at);
    if now.since(at) > max_age {
        Reading::Stale(figure)
    } else {
        Reading::Fresh(figure)
    }
}

impl PrometheusClient {
    /// A `"status": "error"` answer (or one without data) as the error that says so.
    fn api_error(
        &self,
        metric: Metric,
        error_type: Option<Cow<'_, str>>,
        error: Option<Cow<'_, str>>,
    ) -> PrometheusError {
        PrometheusError::Api {
            metric: metric.as_str(),
            url: self.url.clone(),
            status: 200,
            error_type: error_type.map_or_else(|| "none".into(), Cow::into_owned),
            message: snippet(
                error.as_deref().unwrap_or("no data").as_bytes(),
                ERROR_BODY_CHARS,
            ),
        }
    }
    /// [`MetricsSource::instant`], with Prometheus' own error.
    pub async fn instant_query(
        &self,
        metric: Metric,
        now: Timestamp,
    ) -> Result<MetricReading, PrometheusError> {
        let mut values = BTreeMap::new();
        self.instant_each(metric, now, |key, reading| {
            values.insert(key.to_string(), reading);
        })
        .await?;
        Ok(MetricReading {
            metric,
            label: self.query_of(metric)?.label.clone(),
            values,
        })
    }

    /// [`Self::instant_query`] without the map: each series' key (the value of the metric's
    /// member label, borrowed from the answer) and its judged reading go to `each` as the
    /// answer is decoded, in the answer's order. For a fleet, whose answers hold a series per
    /// member of every cluster: the caller files each where it belongs, and nothing is
    /// allocated per series. A key seen twice is handed over twice (the map keeps the last).
    ///
    /// On an error, `each` may have seen some of the series (Prometheus names the status
    /// first, but a proxy may not): drop what it collected.
    pub async fn instant_each(
        &self,
        metric: Metric,
        now: Timestamp,
        mut each: impl FnMut(&str, Reading),
    ) -> Result<(), PrometheusError> {
        let q = self.query_of(metric)?;
        let time = now.as_millis().div_euclid(1000).to_string();
        let timeout = format!("{}ms", self.timeout.as_millis());
        let body = self
            .fetch(
                metric,
                Endpoint::Query,
                &[("query", &q.query), ("time", &time), ("timeout", &timeout)],
            )
            .await?;
        let mut hand = |key: Option<&str>, sample: Option<answer::Sample>| {
            // A series without the member label cannot be attributed to anyone: skip it
            // rather than guess (it would otherwise collapse onto the key "").
            let Some(key) = key else {
                debug!(metric = metric.as_str(), label = %q.label, "series without the member label skipped");
                return;
            };
            let Some(s) = sample else { return };
            each(key, judge(s.value, s.at_secs, now, self.max_age));
        };
        let streamed = match scan::each_instant(&body, &q.label, &mut hand) {
            Ok(s) if s.kind != Some(Kind::Unordered) => s,
            // `result` before `resultType` (not Prometheus' order; nothing was handed over):
            // decoded whole.
            Ok(_) => {
                return match self.data(metric, &body)? {
                    Data::Vector(v) => {
                        for series in v {
                            hand(series.metric.get(&q.label), series.value);
                        }
                        Ok(())
                    }
                    other => Err(PrometheusError::ResultType {
                        metric: metric.as_str(),
                        got: other.kind(),
                        expected: "vector",
                    }),
                };
            }
            Err(e) => return Err(self.scan_error(metric, &body, &e)),
        };
        match streamed {
            Streamed {
                kind: Some(Kind::Vector),
                ref status,
                ..
            } if status == "success" => Ok(()),
            Streamed {
                kind: Some(kind),
                ref status,
                ..
            } if status == "success" => Err(PrometheusError::ResultType {
                metric: metric.as_str(),
                got: kind.as_str(),
                expected: "vector",
            }),
            Streamed {
                error_type, error, ..
            } => Err(self.api_error(metric, error_type, error)),
        }
    }

    /// [`MetricsSource::range`], with Prometheus' own error.
    pub async fn range_query(
        &self,
        metric: Metric,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<BTreeMap<String, Vec<Figure>>, PrometheusError> {
        let q = self.query_of(metric)?;
        let start = start.as_millis().div_euclid(1000).to_string();
        let end = end.as_millis().div_euclid(1000).to_string();
        let step = step.as_secs_f64().to_string();
        let timeout = format!("{}ms", self.timeout.as_millis());
        let body = self
            .fetch(
                metric,
                Endpoint::Range,
                &[
                    ("query", &q.query),
                    ("start", &start),
                    ("end", &end),
                    ("step", &step),
                    ("timeout", &timeout),
                ],
            )
            .await?;
        let matrix = match self.data(metric, &body)? {
            Data::Matrix(m) => m,
            other => {
                return Err(PrometheusError::ResultType {
                    metric: metric.as_str(),
                    got: other.kind(),
                    expected: "matrix",
                })
            }
        };
        let mut out: BTreeMap<String, Vec<Figure>> = BTreeMap::new();
        for series in matrix {
            let Some(key) = series.metric.get(&q.label) else {
                continue;
            };
            let points = series
                .values
                .iter()
                .filter(|s| s.value.is_finite())
                .map(|s| {
                    Figure::new(
                        s.value,
                        Source::Prometheus,
                        Timestamp::from_millis(secs_to_millis(s.at_secs)),
                    )
                });
            out.entry(key.to_string()).or_default().extend(points);
        }
        Ok(out)
    }
}

/// Unix seconds from an answer as milliseconds; a time no clock can hold saturates (`as`
/// does, NaN gives 0) rather than wrapping.
fn secs_to_millis(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

impl From<PrometheusError> for MetricsError {
    fn from(e: PrometheusError) -> Self {
        MetricsError::new(e.class(), e)
    }
}

#[async_trait]
impl MetricsSource for PrometheusClient {
    fn metrics(&self) -> Vec<Metric> {
        self.queries.keys().copied().collect()
    }

    async fn instant(&self, metric: Metric, now: Timestamp) -> Result<MetricReading, MetricsError> {
        Ok(self.instant_query(metric, now).await?)
    }

    async fn range(
        &self,
        metric: Metric,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<BTreeMap<String, Vec<Figure>>, MetricsError> {
        Ok(self.range_query(metric, start, end, step).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: clusters sharing a Prometheus. Every default query of one cluster names it
    /// (Patroni's scope, the containers' cluster label, or the member's Patroni series);
    /// a single cluster's queries are the recorded ones, unchanged.
    #[test]
    fn a_clusters_queries_select_its_own_series_and_the_defaults_stay() {
        assert_eq!(
            default_query(Metric::LagBytes).unwrap().query,
            "clamp_min(scalar(max(patroni_xlog_location)) - max by (member) \
             (patroni_xlog_replayed_location and on (member) patroni_replica == 1), 0)"
        );
        for metric in Metric::ALL {
            let Some(own) = cluster_query(metric, "orders") else {
                assert!(default_query(metric).is_none());
                continue;
            };
            let all = default_query(metric).unwrap();
            assert_eq!(own.label, all.label);
            let named = own.query.contains("scope=\"orders\"")
                || own
                    .query
                    .contains("container_label_io_steward_cluster=\"orders\"");
            assert!(named, "{metric:?}: {}", own.query);
            assert!(!all.query.contains("orders"), "{metric:?}: {}", all.query);
        }
        // The leader's position is this cluster's, not the highest of any.
        let lag = cluster_query(Metric::LagBytes, "orders").unwrap().query;
        assert!(
            lag.starts_with("clamp_min(scalar(max(patroni_xlog_location{scope=\"orders\"}))"),
            "{lag}"
        );
    }

    #[test]
    fn settings_for_a_cluster_scope_defaults_and_fill_in_the_configs_own_queries() {
        let raw: PrometheusConfig = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.3:9090",
            "queries": {"connections": {
                "query": "sum by (pod) (pg_stat_activity_count{cluster=\"{cluster}\"})",
                "label": "pod"
            }}
        }))
        .unwrap();
        let settings = raw.validate().unwrap();
        let own = settings.for_cluster("billing");
        assert_eq!(
            own.queries[&Metric::Connections].query,
            "sum by (pod) (pg_stat_activity_count{cluster=\"billing\"})"
        );
        assert_eq!(
            own.queries[&Metric::LagBytes],
            cluster_query(Metric::LagBytes, "billing").unwrap()
        );
        assert_eq!(own.queries.len(), settings.queries.len());
        assert_eq!(own.url, settings.url);
    }

    #[test]
    fn nan_inf_are_missing_and_old_is_stale() {
        let now = Timestamp::from_secs(1000);
        let age = Duration::from_secs(60);
        assert_eq!(judge(f64::NAN, 1000.0, now, age), Reading::Missing);
        assert_eq!(judge(f64::INFINITY, 1000.0, now, age), Reading::Missing);
        assert!(matches!(judge(1.0, 900.0, now, age), Reading::Stale(f) if f.value == 1.0));
        assert_eq!(
            judge(0.0, 990.0, now, age).fresh().map(|f| f.value),
            Some(0.0)
        );
    }

    #[test]
    fn config_collects_errors_and_overrides_queries() {
        let raw: PrometheusConfig = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:9090",
            "username": "u", "bearer_token_env": "TOKEN",
            "max_age": "0s",
            "queries": {
                "cpu": {"query": "up", "label": "x"},
                "connections": {"query": "sum by (instance) (pg_stat_activity_count)", "label": ""},
                "oom_kills": {"query": "", "label": "member"}
            }
        }))
        .unwrap();
        let err = raw
            .validate_with_env(&|n| (n == "TOKEN").then(|| "t".into()))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bearer_token_file: give either"), "{text}");
        assert!(text.contains("queries.cpu: unknown metric"), "{text}");
        assert!(
            text.contains("queries.connections.label: must name"),
            "{text}"
        );
        assert!(text.contains("max_age: must be more than zero"), "{text}");
        assert_eq!(err.len(), 4, "{text}");

        let ok: PrometheusConfig = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:9090/", "queries": {"oom_kills": {"query": "", "label": "m"}}
        }))
        .unwrap();
        let s = ok.validate_with_env(&|_| None).unwrap();
        assert!(!s.queries.contains_key(&Metric::OomKills));
        assert!(!s.queries.contains_key(&Metric::WalBytes));
        // Ten metrics have defaults (WAL has none), less the one turned off.
        assert_eq!(s.queries.len(), 9);
        assert_eq!(s.url, "http://127.0.0.1:9090");
    }

    #[test]
    fn missing_url_is_an_error() {
        let err = PrometheusConfig::default()
            .validate_with_env(&|_| None)
            .unwrap_err();
        assert_eq!(err.iter().next().map(|e| e.path.as_str()), Some("url"));
    }
}
