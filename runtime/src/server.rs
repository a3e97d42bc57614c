//! The daemon's HTTP surface: `/healthz`, `/metrics`, `/status`, the Prometheus service
//! discovery endpoint `/sd`, and the operator's `POST /pause` and `POST /resume`.
//!
//! The loops' drivers own the truth; they publish it into [`Shared`] (the [`Status`] behind a
//! `tokio::sync::RwLock`, loop ticks, the pause flag as a `watch` channel) and the handlers
//! only read it. The pause flag is the one thing that flows the other way: an operator flips
//! it here and the loops read it through [`Shared::pause_flag`].
//!
//! What it is not: no TLS and no user management. It listens on 127.0.0.1 by default and
//! refuses any other address unless `allow_non_loopback` says so; the only credential is one
//! bearer token (from a file or an environment variable) guarding the two POST endpoints.
//! The token is compared in constant time and never appears in a log, an error or a response
//! (promise 9): [`BearerToken`] has no `Display`, `Serialize` or readable `Debug`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use steward_model::observation::{MemberObservation, PatroniRole, PlatformState};
use steward_model::{ConfigErrors, Decision, Role, Timestamp};
use tokio::net::TcpListener;
use tokio::sync::{watch, RwLock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::journal::Operation;
use crate::telemetry::{AuthRejected, Loop, Metrics, PauseChanged};

pub mod fleet;

/// Default listen address: loopback only, a port no neighbour uses (Patroni 8008, exporters
/// 9100/9187, Prometheus 9090, HAProxy stats 8404).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9650";

/// Default environment variable read for the API token when no token file is given.
pub const DEFAULT_TOKEN_ENV: &str = "STEWARD_API_TOKEN";

/// Default time without a loop tick after which `/healthz` answers 503: a few missed ticks of
/// the default 15 s interval, so one slow iteration does not get the pod restarted.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(60);

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The `[server]` section as written (stage one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServerConfig {
    /// Address and port to listen on. Default `127.0.0.1:9650`.
    pub listen: String,
    /// Allow a listen address that is not loopback (the API is then reachable from the
    /// network without TLS). Default `false`.
    pub allow_non_loopback: bool,
    /// A file holding the bearer token for `POST /pause` and `/resume` (surrounding white
    /// space is ignored). Takes precedence over `token_env`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The environment variable holding the token when `token_file` is unset. Default
    /// `STEWARD_API_TOKEN`. Without a token, pause and resume are disabled (403).
    pub token_env: String,
    /// `/healthz` answers 503 once a loop has not ticked for this long. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
}

impl Default for RawServerConfig {
    fn default() -> Self {
        RawServerConfig {
            listen: DEFAULT_LISTEN.to_string(),
            allow_non_loopback: false,
            token_file: None,
            token_env: DEFAULT_TOKEN_ENV.to_string(),
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

/// Where the token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

/// The validated server config (stage two).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub token: TokenSource,
    pub stale_after: Duration,
}

impl RawServerConfig {
    /// Checks every field; paths in the errors are relative to the section.
    pub fn validate(self) -> Result<ServerConfig, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let listen = match self.listen.parse::<SocketAddr>() {
            Ok(addr) if !addr.ip().is_loopback() && !self.allow_non_loopback => {
                errors.push(
                    "listen",
                    format!(
                        "{addr} is not a loopback address; set allow_non_loopback = true to \
                         expose the API beyond this host"
                    ),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.push(
                    "listen",
                    format!(
                        "`{}` is not an address and port like 127.0.0.1:9650",
                        self.listen
                    ),
                );
                None
            }
        };
        let token = match self.token_file {
            Some(path) if path.as_os_str().is_empty() => {
                errors.push("token_file", "must not be empty");
                None
            }
            Some(path) => Some(TokenSource::File(path)),
            None if !valid_env_name(&self.token_env) => {
                errors.push(
                    "token_env",
                    format!(
                        "`{}` is not an environment variable name (letters, digits, `_`)",
                        self.token_env
                    ),
                );
                None
            }
            None => Some(TokenSource::Env(self.token_env)),
        };
        if self.stale_after.is_zero() {
            errors.push("stale_after", "must be longer than zero");
        } else if self.stale_after > Duration::from_secs(86_400) {
            // A health check that waits a day for a loop's tick checks nothing.
            errors.push("stale_after", "at most 1d");
        }
        match (listen, token) {
            (Some(listen), Some(token)) if errors.is_empty() => Ok(ServerConfig {
                listen,
                token,
                stale_after: self.stale_after,
            }),
            _ => Err(errors),
        }
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What went wrong setting up or running the server. No variant carries the token.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read the api token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the api token from {origin} is empty")]
    TokenEmpty { origin: String },
    #[error("the api token from {origin} is shorter than {MIN_TOKEN_LEN} characters")]
    TokenTooShort { origin: String },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the http server failed")]
    Serve(#[source] std::io::Error),
}

/// The bearer token for the protected endpoints. Its value can only be compared, never shown.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token, refusing empty and short ones (`origin` names where it came from).
    pub fn new(value: String, origin: &str) -> Result<Self, ServerError> {
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(ServerError::TokenEmpty {
                origin: origin.to_string(),
            });
        }
        if value.len() < MIN_TOKEN_LEN {
            return Err(ServerError::TokenTooShort {
                origin: origin.to_string(),
            });
        }
        Ok(BearerToken(value))
    }

    /// Constant-time comparison (the length is not hidden; a token's length is no secret).
    fn matches(&self, offered: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(offered.as_bytes()).into()
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl ServerConfig {
    /// Loads the token from its source. `env` looks a variable up (pass
    /// `|k| std::env::var(k).ok()`); an unset or empty variable means no token, which disables
    /// pause and resume; an unreadable, empty or short token file is an error.
    pub fn load_token(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<BearerToken>, ServerError> {
        match &self.token {
            TokenSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ServerError::TokenFile {
                        path: path.clone(),
                        source,
                    })?;
                BearerToken::new(text, &path.display().to_string()).map(Some)
            }
            TokenSource::Env(name) => match env(name) {
                Some(v) if !v.trim().is_empty() => {
                    BearerToken::new(v, &format!("${name}")).map(Some)
                }
                _ => Ok(None),
            },
        }
    }
}

/// One member as `/status` and `/sd` show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub role: Option<Role>,
    pub patroni_role: Option<PatroniRole>,
    pub patroni_state: Option<String>,
    pub platform_state: Option<PlatformState>,
    /// Replication lag behind the leader, bytes.
    pub lag_bytes: Option<f64>,
    /// Where Prometheus scrapes the member's exporter (`host:port`), listed on `/sd`.
    pub metrics_target: Option<String>,
}

impl MemberStatus {
    pub fn from_observation(member: &MemberObservation, metrics_target: Option<String>) -> Self {
        MemberStatus {
            name: member.name.clone(),
            role: member.role,
            patroni_role: member.patroni_role,
            patroni_state: member.patroni_state.clone(),
            platform_state: member.platform_state,
            lag_bytes: member.lag_bytes.as_ref().map(|f| f.value),
            metrics_target,
        }
    }
}

/// One loop's latest iteration.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoopStatus {
    pub last_tick_at: Option<Timestamp>,
    /// The decisions of the last iteration, with their reasons.
    pub last_decisions: Vec<Decision>,
}

/// A guard's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GuardStatus {
    pub engaged: bool,
    pub reason: String,
    pub since: Option<Timestamp>,
}

/// Who leads (with several Steward instances only the lease holder acts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Leadership {
    /// Whether this instance holds the lease.
    pub is_leader: bool,
    /// The holder's identity, when known.
    pub holder: Option<String>,
}

/// The lease as this instance sees it (`[lease]`: several instances, one acting).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeaseStatus {
    /// This instance's id.
    pub instance: String,
    /// `leader` (holds the lease and may act), `follower` (hot standby) or `unknown` (starting,
    /// or cut off from etcd: it does not act).
    pub role: String,
    /// The holder's id, when known.
    pub leader: Option<String>,
    /// The fencing token this instance acts under, while it leads.
    pub token: Option<i64>,
}

/// What `/status` shows. The drivers update it through [`Shared::update_status`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    pub cluster: String,
    /// When the members were last observed.
    pub observed_at: Option<Timestamp>,
    /// What that observation could not see, in words: a source that did not answer (Patroni,
    /// the platform, a Prometheus query), a stale or missing figure, no leader. Empty when every
    /// source answered. Without it a metrics outage is invisible here: `observed_at` moves on
    /// each tick whatever the sources said, and the loops only hold still.
    pub notes: Vec<String>,
    pub members: Vec<MemberStatus>,
    pub loops: BTreeMap<Loop, LoopStatus>,
    pub in_flight: Vec<Operation>,
    pub guards: BTreeMap<String, GuardStatus>,
    /// Filled from the pause flag when served; what is stored here is ignored.
    pub paused: bool,
    pub leadership: Leadership,
    /// With `[lease]` only: this instance, its role and who leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
    /// While the cluster has fewer database members than its floor (`min_members`): how many
    /// and why it matters, in words (issue 15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below_floor: Option<String>,
    /// Replication slots keeping WAL for a member that does not read it, in words (issue 14).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_slots: Vec<String>,
    /// Members retired with their data kept (an adopted member replaced, issue 15): where the
    /// data is and how to delete it once it is no longer needed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_data: Vec<steward_model::ports::KeptData>,
}

struct Inner {
    /// The cluster served (also in `status`, which is behind a lock).
    cluster: String,
    status: RwLock<Status>,
    /// When each loop last ticked, on tokio's clock (health needs an age, not a date).
    ticks: RwLock<HashMap<Loop, Instant>>,
    paused: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    token: Option<BearerToken>,
    stale_after: Duration,
    expected_loops: Vec<Loop>,
}

/// The state shared by the loops' drivers and the HTTP handlers. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("stale_after", &self.inner.stale_after)
            .field("expected_loops", &self.inner.expected_loops)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// `expected_loops` are the loops `/healthz` waits for (both, unless one is disabled).
    pub fn new(
        cluster: impl Into<String>,
        config: &ServerConfig,
        token: Option<BearerToken>,
        metrics: Arc<Metrics>,
        expected_loops: Vec<Loop>,
    ) -> Self {
        let cluster = cluster.into();
        metrics.add_cluster(&cluster);
        let status = Status {
            cluster: cluster.clone(),
            ..Status::default()
        };
        let (paused, _) = watch::channel(false);
        Shared {
            inner: Arc::new(Inner {
                cluster,
                status: RwLock::new(status),
                ticks: RwLock::new(HashMap::new()),
                paused,
                metrics,
                token,
                stale_after: config.stale_after,
                expected_loops,
            }),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The cluster this state belongs to.
    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    /// Changes the status in place (members, in-flight operations, guards, leadership).
    pub async fn update_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut *self.inner.status.write().await);
    }

    /// A copy of the status, with the pause flag filled in.
    pub async fn status(&self) -> Status {
        let mut status = self.inner.status.read().await.clone();
        status.paused = self.is_paused();
        status
    }

    /// Records a finished loop iteration: its wall-clock time (`at`, shown) and its decisions;
    /// the health check uses tokio's clock.
    pub async fn record_tick(&self, r#loop: Loop, at: Timestamp, decisions: Vec<Decision>) {
        self.inner
            .ticks
            .write()
            .await
            .insert(r#loop, Instant::now());
        let mut status = self.inner.status.write().await;
        let entry = status.loops.entry(r#loop).or_default();
        entry.last_tick_at = Some(at);
        entry.last_decisions = decisions;
    }

    /// The flag the loops read: `true` while paused. Wait for changes with `changed()`.
    pub fn pause_flag(&self) -> watch::Receiver<bool> {
        self.inner.paused.subscribe()
    }

    pub fn is_paused(&self) -> bool {
        *self.inner.paused.borrow()
    }

    /// Sets the pause flag; emits [`PauseChanged`] when it really changes.
    pub fn set_paused(&self, paused: bool, via: &str) {
        let changed = self.inner.paused.send_if_modified(|p| {
            let changed = *p != paused;
            *p = paused;
            changed
        });
        if changed {
            PauseChanged {
                cluster: &self.inner.cluster,
                paused,
                via,
            }
            .emit(&self.inner.metrics);
        }
    }

    /// The health verdict: every expected loop ticked within `stale_after`.
    pub(crate) async fn health(&self) -> (bool, BTreeMap<Loop, serde_json::Value>) {
        let ticks = self.inner.ticks.read().await;
        let now = Instant::now();
        let mut healthy = true;
        let mut loops = BTreeMap::new();
        for l in &self.inner.expected_loops {
            let entry = match ticks.get(l) {
                None => {
                    healthy = false;
                    json!({"healthy": false, "why": "has not ticked yet"})
                }
                Some(at) => {
                    let age = now.saturating_duration_since(*at);
                    if age > self.inner.stale_after {
                        healthy = false;
                        json!({
                            "healthy": false,
                            "seconds_since_tick": age.as_secs_f64(),
                            "why": format!(
                                "last tick {:.0} s ago, more than {} s",
                                age.as_secs_f64(),
                                self.inner.stale_after.as_secs()
                            ),
                        })
                    } else {
                        json!({"healthy": true, "seconds_since_tick": age.as_secs_f64()})
                    }
                }
            };
            loops.insert(*l, entry);
        }
        (healthy, loops)
    }
}

/// The routes, over `shared`.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sd", get(service_discovery))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(shared)
}

/// Binds the listen address.
pub async fn bind(config: &ServerConfig) -> Result<TcpListener, ServerError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })
}

/// Serves until `shutdown` is cancelled, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "http api listening");
    }
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServerError::Serve)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the daemon's cue to shut down gracefully.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT will stop steward");
            }
        }
    }
    if let Err(error) = tokio::signal::ctrl_c().await {
        // Without any signal handler, never resolve: stopping for no reason would be worse.
        tracing::error!(%error, "cannot listen for SIGINT");
        std::future::pending::<()>().await;
    }
    tracing::info!("SIGINT received, shutting down");
}

async fn healthz(State(shared): State<Shared>) -> Response {
    let (healthy, loops) = shared.health().await;
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"healthy": healthy, "loops": loops}))).into_response()
}

async fn metrics(State(shared): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        shared.metrics().encode(),
    )
        .into_response()
}

async fn status(State(shared): State<Shared>) -> Response {
    Json(shared.status().await).into_response()
}

/// One target group of Prometheus' HTTP service discovery format.
#[derive(Debug, Serialize)]
pub(crate) struct TargetGroup {
    targets: Vec<String>,
    labels: BTreeMap<&'static str, String>,
}

async fn service_discovery(State(shared): State<Shared>) -> Response {
    Json(target_groups(&*shared.inner.status.read().await)).into_response()
}

/// A cluster's members that have a metrics target, one group each, labelled with the cluster,
/// member and roles.
pub(crate) fn target_groups(status: &Status) -> Vec<TargetGroup> {
    status
        .members
        .iter()
        .filter_map(|m| {
            let target = m.metrics_target.clone()?;
            let mut labels = BTreeMap::from([
                ("cluster", status.cluster.clone()),
                ("member", m.name.clone()),
            ]);
            if let Some(role) = m.role {
                labels.insert("role", role.as_str().to_string());
            }
            if let Some(r) = m.patroni_role {
                // The same snake_case name the JSON uses.
                if let Ok(serde_json::Value::String(s)) = serde_json::to_value(r) {
                    labels.insert("patroni_role", s);
                }
            }
            Some(TargetGroup {
                targets: vec![target],
                labels,
            })
        })
        .collect()
}

async fn pause(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    set_pause(&shared, &headers, true, "/pause")
}

async fn resume(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    set_pause(&shared, &headers, false, "/resume")
}

fn set_pause(shared: &Shared, headers: &HeaderMap, paused: bool, path: &str) -> Response {
    if let Some(refusal) = refusal(shared, headers, path) {
        return refusal;
    }
    shared.set_paused(paused, "api");
    Json(json!({"paused": shared.is_paused()})).into_response()
}

/// The refusal, if any: 401 without a bearer token, 403 with a wrong one (or when no token is
/// configured). `None` lets the request through.
fn refusal(shared: &Shared, headers: &HeaderMap, path: &str) -> Option<Response> {
    refusal_for(shared.inner.token.as_ref(), headers, path)
}

/// [`refusal`] against the token `expected` (a fleet's one token).
pub(crate) fn refusal_for(
    expected: Option<&BearerToken>,
    headers: &HeaderMap,
    path: &str,
) -> Option<Response> {
    let refuse = |code: StatusCode, reason: &'static str| {
        AuthRejected { path, reason }.emit();
        let mut response = (code, Json(json!({"error": reason}))).into_response();
        if code == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    };
    let Some(expected) = expected else {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "no api token is configured: pause and resume are disabled",
        ));
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match offered {
        None => Some(refuse(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer <token>)",
        )),
        Some(token) if expected.matches(token) => None,
        Some(_) => Some(refuse(StatusCode::FORBIDDEN, "the bearer token is wrong")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_to_loopback() {
        let config = RawServerConfig::default().validate().unwrap();
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.token, TokenSource::Env(DEFAULT_TOKEN_ENV.into()));
    }

    #[test]
    fn non_loopback_is_refused_unless_allowed_and_every_error_is_reported() {
        let raw = RawServerConfig {
            listen: "0.0.0.0:9650".into(),
            token_env: "1BAD".into(),
            stale_after: Duration::ZERO,
            ..RawServerConfig::default()
        };
        let errors = raw.clone().validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["listen", "token_env", "stale_after"]);
        let allowed = RawServerConfig {
            allow_non_loopback: true,
            token_env: "OK_NAME".into(),
            stale_after: Duration::from_secs(5),
            ..raw
        };
        assert!(allowed.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml::from_str::<RawServerConfig>("listne = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let ok: RawServerConfig = toml::from_str("stale_after = \"2m\"").unwrap();
        assert_eq!(ok.stale_after, Duration::from_secs(120));
    }

    #[test]
    fn tokens_are_checked_and_never_printed() {
        let config = RawServerConfig::default().validate().unwrap();
        let secret = "s3cret-token-value-0123";
        let token = config
            .load_token(|k| (k == DEFAULT_TOKEN_ENV).then(|| secret.to_string()))
            .unwrap()
            .unwrap();
        assert!(token.matches(secret));
        assert!(!token.matches("s3cret-token-value-0124"));
        assert!(!format!("{token:?}").contains(secret));
        assert!(config.load_token(|_| None).unwrap().is_none());
        let short = config.load_token(|_| Some("abc12".into())).unwrap_err();
        assert!(!short.to_string().contains("abc12"), "{short}");
    }
}
