//! The reqwest implementation of [`super::PatroniApi`], plus the reads loops rarely need
//! (`/health`, `/liveness`, `/config`, `/history`, `/metrics`).
//!
//! Every request has a total and a connect timeout. GETs (but a member's `/patroni`, asked on
//! every observation pass) are retried a bounded number of times
//! on transient failures, with exponential backoff and jitter from a seeded RNG the caller
//! passes in (tests stay deterministic, several Stewards do not retry in lockstep). Actions
//! (POST, PATCH) are never retried: a switchover sent twice is not the same as once.
//! Bodies are read in chunks and refused past a size limit before they are parsed.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use steward_model::observation::PatroniRole;
use steward_model::Timestamp;
use tracing::{debug, warn};

#[cfg(test)]
use super::config::DEFAULT_RETRY_DELAY;
use super::config::{BasicAuth, PatroniSettings};
use super::error::PatroniError;
use super::types::*;
use super::PatroniApi;
use crate::http::{build_client, read_limited, BodyError};
use steward_model::ports::ErrorKind;

/// How much of an error body is kept in [`PatroniError::Status`]: Patroni's messages are one
/// line; anything longer is an HTML error page from a proxy.
const ERROR_BODY_CHARS: usize = 200;

/// How long Steward waits for the answer to an action Patroni carries out before it answers:
/// `POST /switchover` and `/failover` poll the DCS for the result up to
/// `2 x max(10 s, loop_wait)` (patroni/api.py `poll_failover_result`: 20 s by default), and
/// `POST /restart` returns once PostgreSQL is back. Past the client's usual timeout (5 s) the
/// action is still under way and the answer is lost: the lab's switchovers took 5-10 s. 65 s
/// covers a `loop_wait` of up to 30 s.
pub const WAITING_ACTION_TIMEOUT: Duration = Duration::from_secs(65);

/// The timeout of an action on `path`, when it is not the client's own.
fn answer_timeout(path: &str) -> Option<Duration> {
    matches!(path, "switchover" | "failover" | "restart").then_some(WAITING_ACTION_TIMEOUT)
}

/// A Patroni REST client for one cluster. Cheap to share (`Arc`) between tasks.
#[derive(Debug)]
pub struct PatroniClient {
    http: reqwest::Client,
    /// Where cluster-wide requests go: tried in order, from the one that answered last.
    seeds: Vec<String>,
    /// The index of the seed that answered last: a dead member's URL on a real network does
    /// not refuse, it times out (with retries), so starting from the first seed every time
    /// would cost each request that long for as long as the member is gone.
    answered: std::sync::atomic::AtomicUsize,
    auth: Option<BasicAuth>,
    retries: u32,
    retry_delay: Duration,
    max_body_bytes: u64,
    /// The usual total timeout of a request (`[patroni] timeout`).
    timeout: Duration,
    rng: Mutex<StdRng>,
}

/// A raw answer: status and body bytes.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl PatroniClient {
    /// `rng` feeds the retry jitter; pass `StdRng::seed_from_u64(..)` in tests.
    pub fn new(settings: &PatroniSettings, rng: StdRng) -> Result<Self, PatroniError> {
        let http = build_client(
            settings.timeout,
            settings.connect_timeout,
            &settings.tls,
            Default::default(),
        )
        .map_err(PatroniError::Build)?;
        Ok(PatroniClient {
            http,
            seeds: settings.urls.clone(),
            answered: std::sync::atomic::AtomicUsize::new(0),
            auth: settings.auth.clone(),
            retries: settings.retries,
            retry_delay: settings.retry_delay,
            max_body_bytes: settings.max_body_bytes,
            timeout: settings.timeout,
            rng: Mutex::new(rng),
        })
    }

    /// [`PatroniClient::new`] with an RNG seeded from `seed`, for callers without `rand`.
    pub fn with_seed(settings: &PatroniSettings, seed: u64) -> Result<Self, PatroniError> {
        Self::new(settings, rand::SeedableRng::seed_from_u64(seed))
    }

    /// The URLs cluster-wide requests are sent to.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// `GET /cluster` from one member's API.
    pub async fn cluster_at(&self, base: &str) -> Result<ClusterView, PatroniError> {
        let wire: WireCluster = self.get_json(base, "cluster").await?;
        Ok(wire.into())
    }

    /// `GET /health`: 200 when PostgreSQL runs, 503 when not.
    pub async fn health(&self, base: &str) -> Result<Probe, PatroniError> {
        self.probe(base, "health").await
    }

    /// `GET /liveness`: 200 while Patroni's own loop is alive.
    pub async fn liveness(&self, base: &str) -> Result<Probe, PatroniError> {
        self.probe(base, "liveness").await
    }

    /// `GET /config`: the dynamic configuration in the DCS, as JSON.
    pub async fn config(&self) -> Result<Value, PatroniError> {
        self.on_any_seed(|base| async move { self.get_json::<Value>(&base, "config").await })
            .await
    }

    /// `GET /history`: the timeline switches.
    pub async fn history(&self) -> Result<Vec<HistoryEntry>, PatroniError> {
        let rows: Vec<Vec<Value>> = self
            .on_any_seed(|base| async move { self.get_json(&base, "history").await })
            .await?;
        Ok(history_from_json(rows))
    }

    /// `GET /metrics` of one member, parsed as the Prometheus text format. `now` stamps the
    /// samples (the text carries no timestamps).
    pub async fn metrics(
        &self,
        base: &str,
        now: Timestamp,
    ) -> Result<Vec<MetricSample>, PatroniError> {
        let answer = self.get_with_retries(base, "metrics", &[]).await?;
        let url = join(base, "metrics");
        let text = String::from_utf8_lossy(&answer.body);
        parse_metrics(&text, now).map_err(|source| PatroniError::MetricsText { url, source })
    }

    async fn probe(&self, base: &str, path: &str) -> Result<Probe, PatroniError> {
        // 503 is an answer here ("not healthy"), not a failure to retry.
        let answer = self.get_with_retries(base, path, &[503]).await?;
        Ok(Probe {
            ok: (200..300).contains(&answer.status),
            status: answer.status,
        })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
    ) -> Result<T, PatroniError> {
        let answer = self.get_with_retries(base, path, &[]).await?;
        parse_json("GET", &join(base, path), &answer.body)
    }

    /// Runs `f` on each seed URL until one succeeds. Moves on only after failures that say
    /// nothing about the cluster (transient ones); a 401 is the same everywhere.
    async fn on_any_seed<T, F, Fut>(&self, f: F) -> Result<T, PatroniError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, PatroniError>>,
    {
        let mut last = None;
        for (i, base) in self.seed_order() {
            match f(base.to_string()).await {
                Ok(v) => {
                    self.answered.store(i, std::sync::atomic::Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.class() == ErrorKind::Transient => {
                    warn!(url = %base, error = %e, "patroni url did not answer, trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(match last {
            Some(e) if self.seeds.len() == 1 => e,
            Some(e) => PatroniError::NoneAnswered {
                tried: self.seeds.len(),
                last: Box::new(e),
            },
            // Validation guarantees at least one seed; say so rather than panic.
            None => PatroniError::NoUrl,
        })
    }

    /// The seeds with their index, starting from the one that answered last, then the others
    /// in their configured order.
    fn seed_order(&self) -> impl Iterator<Item = (usize, &str)> {
        let first = self
            .answered
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(self.seeds.len().saturating_sub(1));
        let rest = (0..self.seeds.len()).filter(move |i| *i != first);
        std::iter::once(first)
            .filter(|_| !self.seeds.is_empty())
            .chain(rest)
            .map(|i| (i, self.seeds[i].as_str()))
    }

    async fn get_with_retries(
        &self,
        base: &str,
        path: &str,
        accept: &[u16],
    ) -> Result<Answer, PatroniError> {
        let mut attempt = 0;
        loop {
            match self.send(Method::GET, base, path, None, accept).await {
                Err(e) if e.class() == ErrorKind::Transient && attempt < self.retries => {
                    let delay = self.backoff(attempt);
                    debug!(url = %join(base, path), attempt, ?delay, error = %e, "retrying patroni get");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Exponential backoff with "equal jitter": half the delay fixed, half random.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self.retry_delay.saturating_mul(1 << attempt.min(10));
        let half = full / 2;
        let jitter = {
            // A poisoned lock only means another task panicked mid-draw: the RNG is still usable.
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            rng.random_range(0.0..=1.0)
        };
        half + half.mul_f64(jitter)
    }

    /// One request, no retry. Statuses in `accept` are answers even if not 2xx.
    async fn send(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: Option<&Value>,
        accept: &[u16],
    ) -> Result<Answer, PatroniError> {
        let url = join(base, path);
        let m = method_name(&method);
        let mut req = self.http.request(method, &url);
        if let Some(t) = answer_timeout(path) {
            req = req.timeout(self.timeout.max(t));
        }
        if let Some(auth) = &self.auth {
            req = req.basic_auth(&auth.username, Some(auth.password.expose()));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let mut resp = req.send().await.map_err(|source| {
            if source.is_timeout() {
                PatroniError::Timeout {
                    method: m,
                    url: url.clone(),
                    source,
                }
            } else {
                PatroniError::Send {
                    method: m,
                    url: url.clone(),
                    source,
                }
            }
        })?;
        let status = resp.status();
        let body = self.read_limited(&mut resp, m, &url).await?;
        if status.is_success() || accept.contains(&status.as_u16()) {
            return Ok(Answer {
                status: status.as_u16(),
                body,
            });
        }
        Err(PatroniError::Status {
            method: m,
            url,
            status: status.as_u16(),
            body: snippet(&body),
        })
    }

    async fn read_limited(
        &self,
        resp: &mut reqwest::Response,
        m: &'static str,
        url: &str,
    ) -> Result<Vec<u8>, PatroniError> {
        read_limited(resp, self.max_body_bytes)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { limit } => PatroniError::TooLarge {
                    method: m,
                    url: url.to_string(),
                    limit,
                },
                BodyError::Timeout(source) => PatroniError::Timeout {
                    method: m,
                    url: url.to_string(),
                    source,
                },
                BodyError::Read(source) => PatroniError::Body {
                    method: m,
                    url: url.to_string(),
                    source,
                },
            })
    }

    /// An action: one request, no retry, on `base` (a member) or on the first seed that can
    /// be reached. Only a failure to connect moves on to the next seed: then the request
    /// certainly never arrived, so sending it elsewhere cannot make it happen twice.
    async fn action(
        &self,
        method: Method,
        base: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, PatroniError> {
        let bases: Vec<&str> = match base {
            Some(b) => vec![b],
            None => self.seed_order().map(|(_, b)| b).collect(),
        };
        let mut last = None;
        for b in &bases {
            match self.send(method.clone(), b, path, body.as_ref(), &[]).await {
                Err(PatroniError::Send {
                    method,
                    url,
                    source,
                }) if source.is_connect() => {
                    warn!(%url, "patroni url refused the connection, trying the next");
                    last = Some(PatroniError::Send {
                        method,
                        url,
                        source,
                    });
                }
                other => {
                    if let Ok(a) = &other {
                        debug!(url = %join(b, path), status = a.status, "patroni action answered");
                    }
                    return other;
                }
            }
        }
        Err(match last {
            Some(e) if bases.len() == 1 => e,
            Some(e) => PatroniError::NoneAnswered {
                tried: bases.len(),
                last: Box::new(e),
            },
            None => PatroniError::NoUrl,
        })
    }
}

#[async_trait]
impl PatroniApi for PatroniClient {
    async fn cluster(&self) -> Result<ClusterView, PatroniError> {
        self.on_any_seed(|base| async move { self.cluster_at(&base).await })
            .await
    }

    async fn member_status(&self, api_base: &str) -> Result<MemberStatus, PatroniError> {
        // One attempt (see the trait): the caller's next pass is the retry.
        let answer = self
            .send(Method::GET, api_base, "patroni", None, &[])
            .await?;
        let wire: WireStatus = parse_json("GET", &join(api_base, "patroni"), &answer.body)?;
        Ok(wire.into())
    }

    async fn switchover(&self, request: &Switchover) -> Result<ActionOutcome, PatroniError> {
        let mut body = json!({ "leader": request.leader });
        if let Some(c) = &request.candidate {
            body["candidate"] = json!(c);
        }
        if let Some(at) = request.scheduled_at {
            body["scheduled_at"] = json!(at.to_rfc3339());
        }
        outcome(
            self.action(Method::POST, None, "switchover", Some(body))
                .await?,
        )
    }

    async fn failover(&self, candidate: &str) -> Result<ActionOutcome, PatroniError> {
        outcome(
            self.action(
                Method::POST,
                None,
                "failover",
                Some(json!({ "candidate": candidate })),
            )
            .await?,
        )
    }

    async fn restart(
        &self,
        api_base: &str,
        conditions: &RestartConditions,
    ) -> Result<ActionOutcome, PatroniError> {
        outcome(
            self.action(
                Method::POST,
                Some(api_base),
                "restart",
                Some(restart_body(conditions)),
            )
            .await?,
        )
    }

    async fn reinitialize(
        &self,
        api_base: &str,
        force: bool,
    ) -> Result<ActionOutcome, PatroniError> {
        outcome(
            self.action(
                Method::POST,
                Some(api_base),
                "reinitialize",
                Some(json!({ "force": force })),
            )
            .await?,
        )
    }

    async fn reload(&self, api_base: &str) -> Result<ActionOutcome, PatroniError> {
        outcome(
            self.action(Method::POST, Some(api_base), "reload", None)
                .await?,
        )
    }

    async fn config(&self) -> Result<Value, PatroniError> {
        PatroniClient::config(self).await
    }

    async fn patch_config(&self, patch: &Value) -> Result<Value, PatroniError> {
        let answer = self
            .action(Method::PATCH, None, "config", Some(patch.clone()))
            .await?;
        parse_json("PATCH", "config", &answer.body)
    }
}

/// The JSON body of `POST /restart`: only the conditions that are set.
pub(crate) fn restart_body(c: &RestartConditions) -> Value {
    let mut body = json!({});
    if let Some(at) = c.schedule {
        body["schedule"] = json!(at.to_rfc3339());
    }
    if c.restart_pending {
        body["restart_pending"] = json!(true);
    }
    if let Some(role) = c.role {
        // 3.x and 4.x both accept `primary` (3.x also `master`, 4.x no longer).
        let r = match role {
            PatroniRole::Leader => "primary",
            PatroniRole::StandbyLeader => "standby_leader",
            _ => "replica",
        };
        body["role"] = json!(r);
    }
    if let Some(v) = &c.postgres_version {
        body["postgres_version"] = json!(v);
    }
    if let Some(t) = c.timeout {
        body["timeout"] = json!(t.as_secs());
    }
    body
}

fn outcome(answer: Answer) -> Result<ActionOutcome, PatroniError> {
    Ok(ActionOutcome {
        status: answer.status,
        message: String::from_utf8_lossy(&answer.body).trim().to_string(),
    })
}

fn parse_json<T: DeserializeOwned>(
    method: &'static str,
    url: &str,
    body: &[u8],
) -> Result<T, PatroniError> {
    serde_json::from_slice(body).map_err(|source| PatroniError::Malformed {
        method,
        url: url.to_string(),
        source,
    })
}

/// Parses the Prometheus text format with `prometheus-parse`; histograms and summaries (which
/// Patroni does not export) are skipped. Public for the fuzz targets (`fuzz/`).
pub fn parse_metrics(text: &str, now: Timestamp) -> Result<Vec<MetricSample>, std::io::Error> {
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(now.as_millis()).unwrap_or_default();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse_at(lines, at)?;
    Ok(scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some(MetricSample {
                name: s.metric,
                labels,
                value,
            })
        })
        .collect())
}

fn join(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path)
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        _ => "request",
    }
}

fn snippet(body: &[u8]) -> String {
    crate::http::snippet(body, ERROR_BODY_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn client(seed: u64) -> PatroniClient {
        let settings = PatroniSettings::with_urls(vec!["http://127.0.0.1:8008".into()]).unwrap();
        PatroniClient::new(&settings, StdRng::seed_from_u64(seed)).unwrap()
    }

    #[test]
    fn backoff_doubles_stays_within_its_bounds_and_is_reproducible_by_seed() {
        let (a, b, c) = (client(42), client(42), client(43));
        let seq = |c: &PatroniClient| (0..4).map(|i| c.backoff(i)).collect::<Vec<_>>();
        let (sa, sb, sc) = (seq(&a), seq(&b), seq(&c));
        assert_eq!(sa, sb, "same seed, same delays");
        assert_ne!(sa, sc, "another seed, other delays");
        for (i, d) in sa.iter().enumerate() {
            let full = DEFAULT_RETRY_DELAY * (1 << i);
            assert!(
                *d >= full / 2 && *d <= full,
                "attempt {i}: {d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[test]
    fn the_3x_metrics_line_with_a_space_before_the_labels_is_not_misread() {
        let text = "# TYPE patroni_postgres_server_version gauge\npatroni_postgres_server_version {scope=\"pglab\"} 150018\npatroni_replica{scope=\"pglab\"} 1\n";
        let samples = parse_metrics(text, Timestamp::from_secs(0)).unwrap();
        let replica = samples
            .iter()
            .find(|s| s.name == "patroni_replica")
            .unwrap();
        assert_eq!(replica.value, 1.0);
        // Whatever the parser makes of the odd line, it must not invent another value for it.
        for s in samples
            .iter()
            .filter(|s| s.name.starts_with("patroni_postgres_server_version"))
        {
            assert_eq!(s.value, 150018.0, "{s:?}");
        }
    }

    #[test]
    fn restart_sends_only_the_conditions_that_are_set() {
        assert_eq!(restart_body(&RestartConditions::default()), json!({}));
        let at = DateTime::parse_from_rfc3339("2026-11-26T18:00:00Z")
            .unwrap()
            .to_utc();
        let all = RestartConditions {
            schedule: Some(at),
            restart_pending: true,
            role: Some(PatroniRole::Leader),
            postgres_version: Some("15.5".into()),
            timeout: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            restart_body(&all),
            json!({"schedule": "2026-11-26T18:00:00+00:00", "restart_pending": true, "role": "primary",
                   "postgres_version": "15.5", "timeout": 60})
        );
    }
}
