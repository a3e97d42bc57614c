//! HAProxy's Runtime API (the "stats socket" CLI of HAProxy 2.6): the balancers' backends kept in
//! step with the members by adding, warming up, draining and deleting servers at run time.
//!
//! Start with [`Balancer`], the narrow trait the loops use, in domain verbs; [`RuntimeApi`]
//! implements it over a TCP or unix socket, one command per connection (HAProxy's
//! non-interactive mode: it answers and closes). [`BalancerSet`] applies one [`Change`] to every
//! balancer at once and reports which ones failed, so both balancers stay in step.
//!
//! Why the verbs look the way they do (all verified on Debian's HAProxy 2.6.12):
//! - `add server` creates the server in forced maintenance (no traffic) and, with `check`, with
//!   its health check configured but not enabled. It reuses nothing from `default-server`, so
//!   every check option is sent explicitly ([`HealthCheck`]). The backend must use a dynamic
//!   load-balancing algorithm (`roundrobin`, `leastconn`, ...; not `static-rr`).
//! - Leaving maintenance with `set server ... state ready` marks a checked server UP *at once*
//!   ("start OK but check immediately"), before any check has passed: a replica added to the
//!   primary's backend would take writes until its first failed check. So
//!   [`Balancer::enable_after_check`] first warms the server up ([`Balancer::warm_up`]: enable
//!   the check, leave maintenance into drain, which takes no load-balanced traffic, and force
//!   the health DOWN), waits until `rise` checks have passed (the server turns UP), and only then
//!   sets it ready.
//! - `del server` needs the server in maintenance and without connections, so
//!   [`Balancer::delete_server`] puts it in maintenance first.
//!
//! Answers carry no status code: success is a known text per command, anything else is
//! HAProxy's refusal, classified by [`Refusal`] and [`ErrorKind`].
//!
//! What this module is not: it decides nothing (which member goes to which backend is the
//! loops' business), it does not edit HAProxy's configuration file (a dynamic server is lost on
//! reload unless the file lists it too), and it does not read traffic statistics.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use steward_model::ports::ErrorKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info_span, warn, Instrument};

/// How long to wait for the socket to accept a connection, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one whole exchange (send, answer, close) may take, by default. A paused HAProxy
/// still accepts connections (the kernel's backlog), so this is what catches it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read, by default: `show servers state` is about 100 bytes per server.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 << 20;

// ---------------------------------------------------------------------------------------------
// Errors

/// Why HAProxy refused a command, recognized from its answer text (HAProxy 2.6 wording).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// "No such backend." / "Can't find backend."
    NoSuchBackend,
    /// "No such server."
    NoSuchServer,
    /// "Already exists a server with the same name in backend."
    AlreadyExists,
    /// "Only servers in maintenance mode can be deleted."
    NotInMaintenance,
    /// "Server still has connections attached to it, cannot remove it."
    HasConnections,
    /// "Backend must use a dynamic load balancing to support dynamic servers."
    NotDynamicBackend,
    /// "Health check was not configured on this server, cannot enable."
    NoHealthCheck,
    /// "Permission denied": the socket is not at the admin level.
    PermissionDenied,
    /// "Unknown command ...": an HAProxy that does not know the command (too old).
    UnknownCommand,
    /// Anything else: syntax errors, unknown keywords.
    Other,
}

impl Refusal {
    /// Recognizes HAProxy's answer. Unknown texts are [`Refusal::Other`] (permanent): guessing
    /// "transient" for an unknown refusal would retry a syntax error forever.
    pub fn of_answer(answer: &str) -> Refusal {
        let a = answer.trim();
        if a.starts_with("No such backend") || a.starts_with("Can't find backend") {
            Refusal::NoSuchBackend
        } else if a.starts_with("No such server") {
            Refusal::NoSuchServer
        } else if a.starts_with("Already exists a server") {
            Refusal::AlreadyExists
        } else if a.starts_with("Only servers in maintenance mode") {
            Refusal::NotInMaintenance
        } else if a.starts_with("Server still has connections") {
            Refusal::HasConnections
        } else if a.starts_with("Backend must use a dynamic load balancing") {
            Refusal::NotDynamicBackend
        } else if a.starts_with("Health check was not configured") {
            Refusal::NoHealthCheck
        } else if a.starts_with("Permission denied") {
            Refusal::PermissionDenied
        } else if a.starts_with("Unknown command") {
            Refusal::UnknownCommand
        } else {
            Refusal::Other
        }
    }

    pub fn class(self) -> ErrorKind {
        match self {
            Refusal::NoSuchBackend | Refusal::NoSuchServer => ErrorKind::NotFound,
            Refusal::AlreadyExists | Refusal::NotInMaintenance | Refusal::HasConnections => {
                ErrorKind::Conflict
            }
            Refusal::NotDynamicBackend
            | Refusal::NoHealthCheck
            | Refusal::PermissionDenied
            | Refusal::UnknownCommand
            | Refusal::Other => ErrorKind::Permanent,
        }
    }
}

/// A failed call to a Runtime API. `endpoint` is the socket's address or path (no secret: the
/// Runtime API has no credentials, access is the socket's).
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("connecting to the runtime api at {endpoint} timed out after {after:?}")]
    ConnectTimeout { endpoint: String, after: Duration },

    #[error("connecting to the runtime api at {endpoint} failed")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` on {endpoint} timed out after {after:?}")]
    Timeout {
        endpoint: String,
        command: String,
        after: Duration,
    },

    #[error("`{command}` on {endpoint} failed mid-exchange")]
    Exchange {
        endpoint: String,
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// The connection closed before any answer: HAProxy stopping, or a torn exchange.
    #[error("`{command}` on {endpoint} got no answer")]
    NoAnswer { endpoint: String, command: String },

    #[error("the answer to `{command}` on {endpoint} is larger than {limit} bytes")]
    TooLarge {
        endpoint: String,
        command: String,
        limit: usize,
    },

    /// HAProxy refused the command; `answer` is its own text (it says why).
    #[error("`{command}` on {endpoint} was refused: {answer}")]
    Refused {
        endpoint: String,
        command: String,
        refusal: Refusal,
        answer: String,
    },

    #[error("the answer to `{command}` on {endpoint} is not the expected format: {reason}")]
    Malformed {
        endpoint: String,
        command: String,
        reason: String,
    },

    #[error("server {backend}/{server} is not listed by the runtime api")]
    ServerMissing { backend: String, server: String },

    /// The server exists already, with another address: not the one we meant to add.
    #[error("server {backend}/{server} exists with address {existing}, not {wanted}")]
    AddressMismatch {
        backend: String,
        server: String,
        existing: String,
        wanted: SocketAddr,
    },

    /// The server stayed down for the whole wait; it is left warming up (drained, checked,
    /// no traffic), so a later call can pick up where this one stopped.
    #[error("server {backend}/{server} did not pass its health check within {waited:?}")]
    CheckNotPassed {
        backend: String,
        server: String,
        waited: Duration,
        last: Option<Box<ServerState>>,
    },
}

impl HaproxyError {
    /// The class a loop uses to choose between backoff and giving up.
    pub fn class(&self) -> ErrorKind {
        match self {
            HaproxyError::Invalid { .. } | HaproxyError::TooLarge { .. } => ErrorKind::Permanent,
            HaproxyError::Connect { source, .. } => match source.kind() {
                // A refused TCP port, or a unix socket path that is gone: HAProxy is not
                // running (yet, or again). Both heal by themselves.
                std::io::ErrorKind::PermissionDenied => ErrorKind::Permanent,
                _ => ErrorKind::Transient,
            },
            HaproxyError::ConnectTimeout { .. }
            | HaproxyError::Timeout { .. }
            | HaproxyError::Exchange { .. }
            | HaproxyError::NoAnswer { .. }
            | HaproxyError::CheckNotPassed { .. } => ErrorKind::Transient,
            HaproxyError::Refused { refusal, .. } => refusal.class(),
            HaproxyError::Malformed { .. } => ErrorKind::Permanent,
            HaproxyError::ServerMissing { .. } => ErrorKind::NotFound,
            HaproxyError::AddressMismatch { .. } => ErrorKind::Conflict,
        }
    }

    /// The refusal, when HAProxy refused the command.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            HaproxyError::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Domain types

/// What the health checks and HAProxy say about a server's ability to serve
/// (`srv_op_state`), whatever the administrator asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operational {
    Down,
    /// Up, but still in its slow start.
    Starting,
    Up,
    /// Up but soft-stopping (e.g. a 404 check).
    Stopping,
}

/// What the administrator asked of a server (`set server ... state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes traffic when its checks say it is up.
    Ready,
    /// No new load-balanced traffic; open sessions go on; checks go on.
    Drain,
    /// No traffic at all and no checks.
    Maint,
}

impl AdminState {
    fn keyword(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// The last health-check verdict (`srv_check_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// No check has finished yet.
    Unknown,
    Neutral,
    Failed,
    Passed,
    /// Passed, but the server asks for no new sessions.
    ConditionallyPassed,
}

/// One server of one backend, as `show servers state` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerState {
    pub backend: String,
    pub name: String,
    /// The address as HAProxy prints it (an IP, or `-`/an FQDN for servers that resolve).
    pub addr: String,
    pub port: u16,
    pub operational: Operational,
    /// Forced, inherited, configured or resolution maintenance (any of them).
    pub maintenance: bool,
    /// Forced or inherited drain.
    pub drain: bool,
    /// The weight the administrator sees; 0 takes no load-balanced traffic.
    pub weight: u32,
    /// Whether a health check is configured (`check` was given).
    pub check_configured: bool,
    /// Whether the configured check is enabled (`enable health`).
    pub check_enabled: bool,
    pub check_result: CheckResult,
    /// HAProxy's rise/fall counter: the server is up from `rise` on, at most `rise + fall - 1`.
    pub check_health: u32,
}

/// A server's state in one word, the way the stats page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// In maintenance: no traffic, whatever its checks say.
    Maint,
    /// Draining: no new load-balanced traffic.
    Drain,
    Down,
    /// Up: takes traffic (starting and stopping count as up, as on the stats page).
    Up,
}

impl ServerState {
    /// Maintenance wins over drain, drain over the operational state.
    pub fn status(&self) -> Status {
        if self.maintenance {
            Status::Maint
        } else if self.drain {
            Status::Drain
        } else if self.operational == Operational::Down {
            Status::Down
        } else {
            Status::Up
        }
    }

    /// Whether the server would take new load-balanced connections now.
    pub fn takes_traffic(&self) -> bool {
        self.status() == Status::Up && self.weight > 0
    }
}

/// The health check of a new server. HAProxy applies no `default-server` line to dynamic
/// servers, so every option is spelled out here. The check itself (e.g. `option httpchk
/// OPTIONS /replica`) comes from the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Where the check connects, e.g. Patroni's REST port 8008; `None` = the server's port.
    pub port: Option<u16>,
    /// Interval between checks while up.
    pub inter: Duration,
    /// Interval while changing state (between the first failure and `fall`, or while rising).
    pub fastinter: Duration,
    /// Interval while down.
    pub downinter: Duration,
    /// Consecutive passes that make a down server up.
    pub rise: u32,
    /// Consecutive failures that make an up server down.
    pub fall: u32,
    /// Cut the server's sessions when it is marked down, so no client keeps writing to a
    /// demoted primary.
    pub shutdown_sessions_on_down: bool,
}

impl HealthCheck {
    /// Patroni's REST API on port 8008, with the lab's timings (1 s, 500 ms, 2 s, rise 2, fall 2).
    ///
    /// With these, [`Balancer::enable_after_check`] lets a healthy member in about 2.5 s after
    /// it starts (measured on the lab: the first check after the forced DOWN waits `downinter`,
    /// the second `fastinter`).
    pub fn patroni() -> HealthCheck {
        HealthCheck {
            port: Some(8008),
            inter: Duration::from_secs(1),
            fastinter: Duration::from_millis(500),
            downinter: Duration::from_secs(2),
            rise: 2,
            fall: 2,
            shutdown_sessions_on_down: true,
        }
    }
}

/// A server to add: its name in the backend, where it listens, how it is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    pub name: String,
    /// An IP address: dynamic servers do not resolve names (HAProxy 2.6 uses `init-addr none`).
    pub addr: SocketAddr,
    /// `None` = unchecked: such a server is up as soon as it leaves maintenance.
    pub check: Option<HealthCheck>,
}

/// How long [`Balancer::enable_after_check`] waits for the check to pass, and how often it looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckWait {
    pub timeout: Duration,
    pub poll: Duration,
}

impl Default for CheckWait {
    fn default() -> Self {
        CheckWait {
            timeout: Duration::from_secs(30),
            poll: Duration::from_millis(250),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The port

/// What the loops ask of one balancer. Backends and servers are addressed by name.
///
/// Every verb is one or a few Runtime API commands; none survives an HAProxy reload (see the
/// module doc). Errors carry an [`ErrorKind`].
#[async_trait]
pub trait Balancer: Send + Sync {
    /// Every server of `backend`.
    async fn servers(&self, backend: &str) -> Result<Vec<ServerState>, HaproxyError>;

    /// Adds a server in maintenance (no traffic, check configured but not enabled).
    async fn add_server(&self, backend: &str, server: &ServerSpec) -> Result<(), HaproxyError>;

    /// Starts a server's health check without giving it traffic: enables the check, moves the
    /// server from maintenance to drain and forces its health DOWN, so only `rise` passing
    /// checks make it UP again. Call [`Balancer::set_state`] `Ready` once it is up.
    async fn warm_up(&self, backend: &str, server: &str) -> Result<(), HaproxyError>;

    /// Sets the administrative state.
    async fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), HaproxyError>;

    /// Puts the server in maintenance, then deletes it. While it still has connections the
    /// delete is refused ([`Refusal::HasConnections`], conflict) and the server stays in
    /// maintenance (no new traffic; open sessions go on): retry once they have ended.
    async fn delete_server(&self, backend: &str, server: &str) -> Result<(), HaproxyError>;

    /// Lets a server take traffic only after its health check has passed: [`Balancer::warm_up`],
    /// wait until it is up, then ready. On timeout the server is left warming up (no traffic)
    /// and the error says what the last check said. A server added without a health check is
    /// refused ([`Refusal::NoHealthCheck`], permanent): nothing could ever pass.
    ///
    /// Level-triggered: a server that already takes traffic with its check enabled is left
    /// alone (a retry on a set of balancers must not pull it out again for a warm-up).
    async fn enable_after_check(
        &self,
        backend: &str,
        server: &str,
        wait: CheckWait,
    ) -> Result<ServerState, HaproxyError> {
        let current = find(self.servers(backend).await?, backend, server)?;
        if current.takes_traffic() && current.check_enabled {
            return Ok(current);
        }
        self.warm_up(backend, server).await?;
        let started = tokio::time::Instant::now();
        loop {
            let state = find(self.servers(backend).await?, backend, server)?;
            if state.operational != Operational::Down && state.check_result == CheckResult::Passed {
                self.set_state(backend, server, AdminState::Ready).await?;
                return find(self.servers(backend).await?, backend, server);
            }
            let waited = started.elapsed();
            if waited >= wait.timeout {
                return Err(HaproxyError::CheckNotPassed {
                    backend: backend.to_string(),
                    server: server.to_string(),
                    waited,
                    last: Some(Box::new(state)),
                });
            }
            tokio::time::sleep(wait.poll.min(wait.timeout - waited)).await;
        }
    }
}

fn find(
    servers: Vec<ServerState>,
    backend: &str,
    server: &str,
) -> Result<ServerState, HaproxyError> {
    servers
        .into_iter()
        .find(|s| s.name == server)
        .ok_or_else(|| HaproxyError::ServerMissing {
            backend: backend.to_string(),
            server: server.to_string(),
        })
}

// ---------------------------------------------------------------------------------------------
// The Runtime API client

/// Where a Runtime API listens (`stats socket ipv4@ADDR:PORT level admin`, or a unix path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One HAProxy's Runtime API. Cheap to clone; holds no connection (each command opens one).
#[derive(Clone, Debug)]
pub struct RuntimeApi {
    endpoint: Endpoint,
    connect_timeout: Duration,
    timeout: Duration,
    max_answer_bytes: usize,
}

impl RuntimeApi {
    /// A client with the default timeouts and answer limit.
    pub fn new(endpoint: Endpoint) -> RuntimeApi {
        RuntimeApi {
            endpoint,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    pub fn with_timeouts(mut self, connect: Duration, exchange: Duration) -> RuntimeApi {
        self.connect_timeout = connect;
        self.timeout = exchange;
        self
    }

    pub fn with_max_answer_bytes(mut self, limit: usize) -> RuntimeApi {
        self.max_answer_bytes = limit;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one command line and returns HAProxy's whole answer. The line must already be
    /// validated: HAProxy splits lines on `;` and newlines, so unchecked input could smuggle a
    /// second command.
    async fn exchange(&self, command: &str) -> Result<String, HaproxyError> {
        debug!(endpoint = %self.endpoint, command, "haproxy runtime api");
        let endpoint = self.endpoint.to_string();
        let answer = match &self.endpoint {
            Endpoint::Tcp(addr) => {
                let stream = self.connect(tokio::net::TcpStream::connect(addr)).await?;
                self.talk(stream, command).await?
            }
            Endpoint::Unix(path) => {
                let stream = self.connect(tokio::net::UnixStream::connect(path)).await?;
                self.talk(stream, command).await?
            }
        };
        if answer.is_empty() {
            // Even a silent success answers an empty line; nothing at all means the exchange
            // was cut (HAProxy stopping or restarting).
            return Err(HaproxyError::NoAnswer {
                endpoint,
                command: command.to_string(),
            });
        }
        Ok(answer)
    }

    async fn connect<S>(
        &self,
        connecting: impl std::future::Future<Output = std::io::Result<S>>,
    ) -> Result<S, HaproxyError> {
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(HaproxyError::Connect {
                endpoint: self.endpoint.to_string(),
                source,
            }),
            Err(_) => Err(HaproxyError::ConnectTimeout {
                endpoint: self.endpoint.to_string(),
                after: self.connect_timeout,
            }),
        }
    }

    async fn talk<S>(&self, mut stream: S, command: &str) -> Result<String, HaproxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limit = self.max_answer_bytes;
        let io = async {
            stream.write_all(command.as_bytes()).await?;
            stream.write_all(b"\n").await?;
            stream.flush().await?;
            // One byte over the limit tells "exactly the limit" from "too large".
            let mut answer = Vec::new();
            (&mut stream)
                .take(limit as u64 + 1)
                .read_to_end(&mut answer)
                .await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(source)) => {
                return Err(HaproxyError::Exchange {
                    endpoint: self.endpoint.to_string(),
                    command: command.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(HaproxyError::Timeout {
                    endpoint: self.endpoint.to_string(),
                    command: command.to_string(),
                    after: self.timeout,
                })
            }
        };
        if answer.len() > limit {
            return Err(HaproxyError::TooLarge {
                endpoint: self.endpoint.to_string(),
                command: command.to_string(),
                limit,
            });
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Runs a command whose success answer is `expected` (empty = a blank answer); any other
    /// answer is a refusal.
    async fn expect(&self, command: &str, expected: &str) -> Result<(), HaproxyError> {
        let answer = self.exchange(command).await?;
        if answer.trim() == expected {
            return Ok(());
        }
        let refusal = Refusal::of_answer(&answer);
        let answer = first_line(&answer);
        warn!(endpoint = %self.endpoint, command, ?refusal, answer, "haproxy refused a command");
        Err(HaproxyError::Refused {
            endpoint: self.endpoint.to_string(),
            command: command.to_string(),
            refusal,
            answer,
        })
    }
}

/// The first line of an answer: "Unknown command" answers go on with the whole help text.
fn first_line(answer: &str) -> String {
    answer.trim().lines().next().unwrap_or_default().to_string()
}

#[async_trait]
impl Balancer for RuntimeApi {
    async fn servers(&self, backend: &str) -> Result<Vec<ServerState>, HaproxyError> {
        let command = format!("show servers state {}", checked_name("backend", backend)?);
        let answer = self.exchange(&command).await?;
        if !answer.starts_with("1\n") {
            let refusal = Refusal::of_answer(&answer);
            if refusal != Refusal::Other {
                return Err(HaproxyError::Refused {
                    endpoint: self.endpoint.to_string(),
                    command,
                    refusal,
                    answer: first_line(&answer),
                });
            }
        }
        parse_servers_state(&answer).map_err(|reason| HaproxyError::Malformed {
            endpoint: self.endpoint.to_string(),
            command,
            reason,
        })
    }

    async fn add_server(&self, backend: &str, server: &ServerSpec) -> Result<(), HaproxyError> {
        let command = add_server_command(backend, server)?;
        self.expect(&command, "New server registered.").await
    }

    async fn warm_up(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        // Order matters. Leaving maintenance resets the check counter to `rise`, i.e. UP at
        // once, so the server leaves into drain (no load-balanced traffic) and only then is its
        // health forced down: from there only `rise` passing checks bring it up. Forcing it down
        // while still in maintenance would be undone on leaving.
        self.expect(&format!("enable health {target}"), "").await?;
        self.expect(&format!("set server {target} state drain"), "")
            .await?;
        self.expect(&format!("set server {target} health down"), "")
            .await
    }

    async fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.expect(
            &format!("set server {target} state {}", state.keyword()),
            "",
        )
        .await
    }

    async fn delete_server(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.expect(&format!("set server {target} state maint"), "")
            .await?;
        self.expect(&format!("del server {target}"), "Server deleted.")
            .await
    }
}

/// HAProxy names: letters, digits, `-`, `_`, `.`, `:` (its own rule for proxy and server names).
/// Checked before anything is sent, which also keeps `;`, spaces and newlines out of commands.
fn checked_name<'a>(what: &'static str, name: &'a str) -> Result<&'a str, HaproxyError> {
    let invalid = |reason| HaproxyError::Invalid {
        what,
        value: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.starts_with('#') {
        // `#12` addresses by numeric id in HAProxy; a name must not look like one.
        return Err(invalid("must not start with '#'"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(invalid(
            "may hold only ascii letters, digits, '-', '_', '.' and ':'",
        ));
    }
    Ok(name)
}

fn target(backend: &str, server: &str) -> Result<String, HaproxyError> {
    Ok(format!(
        "{}/{}",
        checked_name("backend", backend)?,
        checked_name("server", server)?
    ))
}

fn millis(d: Duration) -> String {
    // HAProxy's time format; 0 would mean "no interval", so at least 1 ms.
    format!("{}ms", d.as_millis().max(1))
}

/// The `add server` line. No `disabled` keyword: a dynamic server starts in forced maintenance
/// anyway, and `disabled` would add the "configured" maintenance flag on top.
pub fn add_server_command(backend: &str, server: &ServerSpec) -> Result<String, HaproxyError> {
    let target = target(backend, &server.name)?;
    let addr = match server.addr {
        SocketAddr::V4(a) => a.to_string(),
        // `[::1]:5432`, which HAProxy 2.6 reads as an IPv6 address and a port.
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let mut line = format!("add server {target} {addr}");
    if let Some(check) = &server.check {
        if check.rise == 0 || check.fall == 0 {
            return Err(HaproxyError::Invalid {
                what: "health check",
                value: format!("rise {} fall {}", check.rise, check.fall),
                reason: "rise and fall must be at least 1",
            });
        }
        line.push_str(" check");
        if let Some(port) = check.port {
            line.push_str(&format!(" port {port}"));
        }
        line.push_str(&format!(
            " inter {} fastinter {} downinter {} rise {} fall {}",
            millis(check.inter),
            millis(check.fastinter),
            millis(check.downinter),
            check.rise,
            check.fall
        ));
        if check.shutdown_sessions_on_down {
            line.push_str(" on-marked-down shutdown-sessions");
        }
    }
    Ok(line)
}

/// Reads a `show servers state` answer (format version 1). Columns are found by their header
/// name, not their position, so a later HAProxy that appends columns still parses.
pub fn parse_servers_state(answer: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = answer.lines();
    match lines.next().map(str::trim) {
        Some("1") => {}
        Some(other) => return Err(format!("format version {other:?}, expected 1")),
        None => return Err("empty answer".to_string()),
    }
    let header: Vec<&str> = match lines.next() {
        Some(h) if h.starts_with('#') => h.trim_start_matches('#').split_whitespace().collect(),
        _ => return Err("no column header".to_string()),
    };
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no column {name}"))
    };
    let be_name = column("be_name")?;
    let srv_name = column("srv_name")?;
    let srv_addr = column("srv_addr")?;
    let op_state = column("srv_op_state")?;
    let admin_state = column("srv_admin_state")?;
    let uweight = column("srv_uweight")?;
    let check_result = column("srv_check_result")?;
    let check_health = column("srv_check_health")?;
    let check_state = column("srv_check_state")?;
    let srv_port = column("srv_port")?;

    let mut servers = Vec::new();
    for (i, line) in lines.enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < header.len() {
            return Err(format!(
                "line {} has {} fields, the header {}",
                i + 3,
                fields.len(),
                header.len()
            ));
        }
        let number = |at: usize| {
            fields[at].parse::<u32>().map_err(|_| {
                format!(
                    "line {}: {} is {:?}, not a number",
                    i + 3,
                    header[at],
                    fields[at]
                )
            })
        };
        let operational = match number(op_state)? {
            0 => Operational::Down,
            1 => Operational::Starting,
            2 => Operational::Up,
            3 => Operational::Stopping,
            n => return Err(format!("line {}: unknown srv_op_state {n}", i + 3)),
        };
        // Masks from HAProxy 2.6's management guide (`show servers state`).
        let admin = number(admin_state)?;
        const MAINT_FLAGS: u32 = 0x01 | 0x02 | 0x04 | 0x20; // forced, inherited, config, resolution
        const DRAIN_FLAGS: u32 = 0x08 | 0x10; // forced, inherited
        let check = number(check_state)?;
        const CHK_CONFIGURED: u32 = 0x02;
        const CHK_ENABLED: u32 = 0x04;
        let check_result = match number(check_result)? {
            0 => CheckResult::Unknown,
            1 => CheckResult::Neutral,
            2 => CheckResult::Failed,
            3 => CheckResult::Passed,
            4 => CheckResult::ConditionallyPassed,
            n => return Err(format!("line {}: unknown srv_check_result {n}", i + 3)),
        };
        let port = fields[srv_port]
            .parse::<u16>()
            .map_err(|_| format!("line {}: srv_port is {:?}", i + 3, fields[srv_port]))?;
        servers.push(ServerState {
            backend: fields[be_name].to_string(),
            name: fields[srv_name].to_string(),
            addr: fields[srv_addr].to_string(),
            port,
            operational,
            maintenance: admin & MAINT_FLAGS != 0,
            drain: admin & DRAIN_FLAGS != 0,
            weight: number(uweight)?,
            check_configured: check & CHK_CONFIGURED != 0,
            check_enabled: check & CHK_ENABLED != 0,
            check_result,
            check_health: number(check_health)?,
        });
    }
    Ok(servers)
}

// ---------------------------------------------------------------------------------------------
// Keeping several balancers in step

/// One change to apply to every balancer of a [`BalancerSet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add a server in maintenance. Already there with the same address counts as done.
    Add { backend: String, server: ServerSpec },
    /// [`Balancer::enable_after_check`].
    EnableAfterCheck {
        backend: String,
        server: String,
        wait: CheckWait,
    },
    /// [`Balancer::set_state`].
    SetState {
        backend: String,
        server: String,
        state: AdminState,
    },
    /// Maintenance then delete. Already gone counts as done.
    Delete { backend: String, server: String },
}

impl Change {
    fn describe(&self) -> String {
        match self {
            Change::Add { backend, server } => format!("add {backend}/{}", server.name),
            Change::EnableAfterCheck {
                backend, server, ..
            } => format!("enable {backend}/{server} after check"),
            Change::SetState {
                backend,
                server,
                state,
            } => format!("set {backend}/{server} {}", state.keyword()),
            Change::Delete { backend, server } => format!("delete {backend}/{server}"),
        }
    }

    /// Applies the change to one balancer, idempotently: a retry after a partial failure
    /// succeeds on the balancers that were already done.
    pub async fn apply_to(&self, balancer: &dyn Balancer) -> Result<(), HaproxyError> {
        match self {
            Change::Add { backend, server } => match balancer.add_server(backend, server).await {
                Err(e) if e.refusal() == Some(Refusal::AlreadyExists) => {
                    let existing = find(balancer.servers(backend).await?, backend, &server.name)?;
                    if existing.addr == server.addr.ip().to_string()
                        && existing.port == server.addr.port()
                    {
                        Ok(())
                    } else {
                        Err(HaproxyError::AddressMismatch {
                            backend: backend.clone(),
                            server: server.name.clone(),
                            existing: format!("{}:{}", existing.addr, existing.port),
                            wanted: server.addr,
                        })
                    }
                }
                other => other,
            },
            Change::EnableAfterCheck {
                backend,
                server,
                wait,
            } => balancer
                .enable_after_check(backend, server, *wait)
                .await
                .map(drop),
            Change::SetState {
                backend,
                server,
                state,
            } => balancer.set_state(backend, server, *state).await,
            Change::Delete { backend, server } => {
                match balancer.delete_server(backend, server).await {
                    Err(e) if e.refusal() == Some(Refusal::NoSuchServer) => Ok(()),
                    other => other,
                }
            }
        }
    }
}

/// What [`BalancerSet::apply`] did: the balancers (by name) that applied the change, and the
/// ones that failed with why. Both lists keep the set's order.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: Vec<String>,
    pub failed: Vec<(String, HaproxyError)>,
}

impl ApplyReport {
    /// Every balancer applied the change: they are in step again.
    pub fn all_applied(&self) -> bool {
        self.failed.is_empty()
    }
}

/// The balancers that must stay in step (the design's two active HAProxy), each with a name
/// for reports and logs.
#[derive(Clone, Default)]
pub struct BalancerSet {
    members: Vec<(String, Arc<dyn Balancer>)>,
}

impl fmt::Debug for BalancerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.members.iter().map(|(n, _)| n))
            .finish()
    }
}

impl BalancerSet {
    pub fn new() -> BalancerSet {
        BalancerSet::default()
    }

    pub fn with(mut self, name: impl Into<String>, balancer: Arc<dyn Balancer>) -> BalancerSet {
        self.members.push((name.into(), balancer));
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(n, _)| n.as_str())
    }

    /// Every balancer's servers of `backend`, asked at once, in the set's order, each with the
    /// balancer's name; a balancer that cannot answer gives its error.
    pub async fn servers(
        &self,
        backend: &str,
    ) -> Vec<(String, Result<Vec<ServerState>, HaproxyError>)> {
        let results =
            futures::future::join_all(self.members.iter().map(|(_, b)| b.servers(backend))).await;
        self.members
            .iter()
            .map(|(name, _)| name.clone())
            .zip(results)
            .collect()
    }

    /// Applies `change` to every balancer at once (a slow or dead one does not hold up the
    /// others beyond its own timeouts) and reports which failed. It never stops half-way: the
    /// caller retries the same change, which is idempotent, until the report is complete.
    pub async fn apply(&self, change: &Change) -> ApplyReport {
        let what = change.describe();
        let results = futures::future::join_all(self.members.iter().map(|(name, balancer)| {
            change
                .apply_to(balancer.as_ref())
                .instrument(info_span!("balancer_change", balancer = %name, change = %what))
        }))
        .await;
        let mut report = ApplyReport::default();
        for ((name, _), result) in self.members.iter().zip(results) {
            match result {
                Ok(()) => {
                    debug!(balancer = %name, change = %what, "applied");
                    report.applied.push(name.clone());
                }
                Err(error) => {
                    warn!(balancer = %name, change = %what, class = %error.class(), error = %error, "not applied");
                    report.failed.push((name.clone(), error));
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real answer of HAProxy 2.6.12 (Debian 12), after `add server` and `enable health`.
    const REAL: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n2 replicas 1 m1 127.0.0.78 0 1 1 1 1 15 3 1 6 0 0 0 - 5432 - 0 8008 - - 8008\n2 replicas 2 m2 127.0.0.79 2 8 0 1 0 15 3 3 6 0 0 0 - 5433 - 0 8008 - - 8008\n\n";

    #[test]
    fn parses_a_real_answer() {
        let servers = parse_servers_state(REAL).unwrap();
        assert_eq!(servers.len(), 2);
        let m1 = &servers[0];
        assert_eq!((m1.backend.as_str(), m1.name.as_str()), ("replicas", "m1"));
        assert_eq!((m1.addr.as_str(), m1.port), ("127.0.0.78", 5432));
        assert_eq!(m1.status(), Status::Maint);
        assert!(m1.check_configured && m1.check_enabled);
        assert_eq!(m1.check_result, CheckResult::Passed);
        let m2 = &servers[1];
        assert_eq!(m2.status(), Status::Drain);
        assert_eq!(m2.operational, Operational::Up);
        assert!(!m2.takes_traffic());
        assert_eq!(m2.port, 5433);
    }

    #[test]
    fn an_empty_backend_has_no_servers_and_garbage_is_refused() {
        let header_only = REAL.lines().take(2).collect::<Vec<_>>().join("\n") + "\n\n";
        assert_eq!(parse_servers_state(&header_only).unwrap(), vec![]);
        assert!(parse_servers_state("2\n# be_id\n")
            .unwrap_err()
            .contains("version"));
        assert!(parse_servers_state("1\n2 x\n")
            .unwrap_err()
            .contains("header"));
        let short = REAL.replace(" 8008 - - 8008\n2 replicas", "\n2 replicas");
        assert!(parse_servers_state(&short).unwrap_err().contains("fields"));
    }

    #[test]
    fn names_that_could_smuggle_a_command_are_refused_before_sending() {
        for bad in ["", "a;b", "a b", "a\nshutdown", "#1", "é"] {
            let err = target(bad, "s").unwrap_err();
            assert_eq!(err.class(), ErrorKind::Permanent, "{bad:?}");
        }
        assert_eq!(
            target("pg-primary", "lab-pg_1.x:2").unwrap(),
            "pg-primary/lab-pg_1.x:2"
        );
    }

    #[test]
    fn add_server_spells_out_every_check_option() {
        let spec = ServerSpec {
            name: "lab-pg-4".into(),
            addr: "127.0.0.14:5432".parse().unwrap(),
            check: Some(HealthCheck::patroni()),
        };
        assert_eq!(
            add_server_command("replicas", &spec).unwrap(),
            "add server replicas/lab-pg-4 127.0.0.14:5432 check port 8008 inter 1000ms \
             fastinter 500ms downinter 2000ms rise 2 fall 2 on-marked-down shutdown-sessions"
        );
        let v6 = ServerSpec {
            name: "v6".into(),
            addr: "[::1]:5432".parse().unwrap(),
            check: None,
        };
        assert_eq!(
            add_server_command("b", &v6).unwrap(),
            "add server b/v6 [::1]:5432"
        );
        let mut zero = spec.clone();
        zero.check.as_mut().unwrap().rise = 0;
        assert!(add_server_command("b", &zero).is_err());
    }

    #[test]
    fn refusals_are_recognized_and_classified() {
        let cases = [
            ("No such backend.\n", Refusal::NoSuchBackend, ErrorKind::NotFound),
            ("Can't find backend.\n\n", Refusal::NoSuchBackend, ErrorKind::NotFound),
            ("No such server.\n\n", Refusal::NoSuchServer, ErrorKind::NotFound),
            (
                "Already exists a server with the same name in backend.\n\n",
                Refusal::AlreadyExists,
                ErrorKind::Conflict,
            ),
            (
                "Only servers in maintenance mode can be deleted.\n",
                Refusal::NotInMaintenance,
                ErrorKind::Conflict,
            ),
            (
                "Backend must use a dynamic load balancing to support dynamic servers.\n",
                Refusal::NotDynamicBackend,
                ErrorKind::Permanent,
            ),
            ("unknown keyword 'bogus'.\n\n", Refusal::Other, ErrorKind::Permanent),
            (
                "Unknown command, but maybe one of the following ones is a better match:\n  add map",
                Refusal::UnknownCommand,
                ErrorKind::Permanent,
            ),
        ];
        for (answer, refusal, class) in cases {
            assert_eq!(Refusal::of_answer(answer), refusal, "{answer:?}");
            assert_eq!(refusal.class(), class, "{answer:?}");
        }
    }
}
