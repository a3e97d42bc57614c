//! Leader election on a `coordination.k8s.io/v1` Lease: `[lease] kind = "kubernetes"`, the
//! alternative to etcd for a Steward that runs beside a Patroni whose state is in the
//! Kubernetes API (Spilo's default), where there is no etcd to elect on.
//!
//! It gives the runtime the contract of [`crate::lease::Leadership`] that the etcd election
//! gives, built from the API server's own primitives only, as client-go's `leaderelection`
//! does:
//!
//! - **one object**, `Lease <namespace>/<name>`, whose `spec.holderIdentity` is the holder's
//!   instance id, `leaseDurationSeconds` the TTL, `renewTime` and `acquireTime` informative
//!   (micro-second RFC 3339 from the wall clock given as input);
//! - **acquire** = `POST` the Lease when absent (a second `POST` is a 409 AlreadyExists), or
//!   `PUT` it naming the `resourceVersion` read (optimistic concurrency: two contenders cannot
//!   both win; the loser gets a 409 Conflict and reads again);
//! - a Lease held by another is taken over only after its `resourceVersion` has **not changed
//!   for a whole `leaseDurationSeconds` on this instance's own clock** (timed from the first
//!   read that saw it). Other clocks' `renewTime` is never compared with ours: only the rate
//!   at which clocks tick matters, not whether they agree. An empty `holderIdentity` (a
//!   resignation) is taken at once. A Lease under this instance's own id that this election
//!   does not hold (an earlier run's, or a renewal whose answer was lost) is waited out like
//!   anyone's, so that two processes wrongly given one id never both act;
//! - the holder **renews** every `keepalive` (`PUT` with the `resourceVersion` of its last
//!   write, a fresh `renewTime`); a 409 means someone else wrote the Lease: lost at once;
//! - the **fencing token** is `spec.leaseTransitions`, which every takeover increments under
//!   the `resourceVersion` compare, so each new holder's token is larger than every earlier
//!   holder's (as long as the Lease object is not deleted: a re-created Lease starts at 0);
//! - the holder **stops acting before another can start**: its local deadline is the *send*
//!   time of its last acknowledged write + TTL - safety margin (`tokio::time::Instant`), read
//!   by [`Leadership::check`]; a follower's takeover comes at the earliest one TTL after it
//!   first saw that write, which is after it was sent.
//!
//! What it guarantees: at most one instance passes [`Leadership::check`] at any time, given
//! that the instances' clocks tick at rates within the safety margin of each other over one
//! TTL, and that every contender runs this code (a `kubectl edit` of the Lease is a takeover
//! this code honours by stopping at once). What it does not: the API server does not check the
//! token on Steward's other writes (a pod patch, a Patroni switchover), as etcd's
//! `txn_fenced` can for etcd keys. A step already sent when the deadline passes (or a process
//! frozen between its check and its request for longer than the margin) can land after another
//! instance took over; the steps are idempotent and journaled, which bounds the harm to a step
//! done twice, not a split brain of decisions. The token is published and logged so such a
//! late write can be told apart afterwards.
//!
//! What it is not: per-cluster ownership for a fleet (`ClusterLeases` is etcd's only) nor a
//! watch-based follower: followers read the Lease every `keepalive`, as client-go's retry
//! period does.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;
use steward_model::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

use super::client::KubeApi;
use crate::lease::{FencingToken, LeaderState, Leadership, LeaseError, NotLeader};

/// The wall clock, for `renewTime` and `acquireTime` only (never for a decision).
pub type WallClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What the election needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeLeaseSettings {
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This instance's id: `holderIdentity` while it holds the Lease.
    pub instance: String,
    /// `leaseDurationSeconds`, whole seconds.
    pub ttl: Duration,
    /// How often the holder renews and a follower reads.
    pub keepalive: Duration,
    /// How long before the TTL ends the holder stops acting.
    pub safety_margin: Duration,
    /// The longest one request may take.
    pub request_timeout: Duration,
}

struct Shared {
    client: kube::Client,
    settings: KubeLeaseSettings,
    clock: WallClock,
    state: watch::Sender<LeaderState>,
    wanted: watch::Sender<bool>,
    held: Mutex<Option<(FencingToken, Instant)>>,
}

impl Shared {
    fn publish(&self, state: LeaderState) {
        self.state.send_if_modified(|s| {
            if *s == state {
                false
            } else {
                debug!(lease = %self.settings.name, ?state, "lease state");
                *s = state;
                true
            }
        });
    }

    fn set_held(&self, held: Option<(FencingToken, Instant)>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
    }

    fn check(&self, token: FencingToken) -> Result<(), NotLeader> {
        let held = *self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held {
            Some((t, deadline)) if t == token => {
                if Instant::now() < deadline {
                    Ok(())
                } else {
                    Err(NotLeader::DeadlinePassed { token })
                }
            }
            _ => Err(NotLeader::NotHolder { token }),
        }
    }

    /// The Leases of the namespace: the one API this election calls (get, create, update:
    /// packaging/kubernetes/rbac.yaml grants exactly these).
    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// The Lease, or None when absent.
    async fn read(&self) -> Result<Option<Lease>, LeaseError> {
        let name = self.settings.name.as_str();
        self.bounded("get", self.leases().get_opt(name)).await
    }

    /// `POST`: 409 AlreadyExists when another made it first.
    async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.bounded(
            "create",
            self.leases().create(&PostParams::default(), lease),
        )
        .await
    }

    /// `PUT` under the `resourceVersion` `lease` carries: 409 Conflict when stale.
    async fn replace(&self, operation: &'static str, lease: &Lease) -> Result<Lease, LeaseError> {
        let name = self.settings.name.as_str();
        self.bounded(
            operation,
            self.leases().replace(name, &PostParams::default(), lease),
        )
        .await
    }

    /// `MicroTime` as the API server writes it.
    fn now_micro(&self) -> String {
        let ms = (self.clock)().as_millis();
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }

    fn ttl_seconds(&self) -> i32 {
        i32::try_from(self.settings.ttl.as_secs()).unwrap_or(i32::MAX)
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        let after = self.settings.request_timeout;
        match timeout(after, fut).await {
            Ok(r) => r.map_err(|source| LeaseError::Kubernetes { operation, source }),
            Err(_) => Err(LeaseError::KubernetesTimeout { operation, after }),
        }
    }
}

/// The election on one Lease. Dropping it stops the task without releasing the Lease (as a
/// crash would); call [`Leadership::resign`] for a fast handover.
pub struct KubeLeadership {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for KubeLeadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeLeadership")
            .field("lease", &self.shared.settings.name)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl Drop for KubeLeadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeLeadership {
    /// Starts following the Lease; campaigns only on [`Leadership::campaign`].
    pub fn start(connection: &KubeApi, settings: KubeLeaseSettings, clock: WallClock) -> Self {
        let (state, _) = watch::channel(LeaderState::Unknown);
        let (wanted, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            client: connection.client.clone(),
            settings,
            clock,
            state,
            wanted,
            held: Mutex::new(None),
        });
        let span = info_span!(
            "lease",
            lease = %format!("{}/{}", shared.settings.namespace, shared.settings.name),
            instance = %shared.settings.instance
        );
        let task = tokio::spawn(drive(Arc::clone(&shared)).instrument(span));
        KubeLeadership { shared, task }
    }
}

#[async_trait]
impl Leadership for KubeLeadership {
    async fn campaign(&self) -> Result<FencingToken, LeaseError> {
        self.shared.wanted.send_replace(true);
        let mut rx = self.shared.state.subscribe();
        loop {
            if let Some(token) = rx.borrow_and_update().token() {
                return Ok(token);
            }
            rx.changed().await.map_err(|_| LeaseError::Stopped)?;
        }
    }

    fn current(&self) -> watch::Receiver<LeaderState> {
        self.shared.state.subscribe()
    }

    fn check(&self, token: FencingToken) -> Result<(), NotLeader> {
        self.shared.check(token)
    }

    async fn resign(&self) -> Result<(), LeaseError> {
        self.shared.wanted.send_replace(false);
        let mut rx = self.shared.state.subscribe();
        loop {
            if rx.borrow_and_update().token().is_none() {
                return Ok(());
            }
            rx.changed().await.map_err(|_| LeaseError::Stopped)?;
        }
    }
}

/// A Lease as last read: who holds it, under which version and transitions count.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    version: String,
    holder: Option<String>,
    transitions: i32,
    /// `leaseDurationSeconds` as written by its holder.
    duration: Duration,
}

fn seen(lease: &Lease) -> Seen {
    let spec = lease.spec.clone().unwrap_or_default();
    Seen {
        version: lease.metadata.resource_version.clone().unwrap_or_default(),
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        transitions: spec.lease_transitions.unwrap_or(0),
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
    }
}

async fn drive(shared: Arc<Shared>) {
    // The version a follower saw and when (local clock) it first saw it.
    let mut observed: Option<(String, Instant)> = None;
    let retry = shared.settings.keepalive;
    loop {
        if let Err(e) = round(&shared, &mut observed).await {
            shared.set_held(None);
            shared.publish(LeaderState::Unknown);
            warn!(error = %format!("{:#}", anyhow::Error::new(e)), "lease round failed, retrying");
            sleep(retry).await;
        }
    }
}

/// One read, and what follows from it: follow for a while, take the Lease, or hold it.
async fn round(
    shared: &Shared,
    observed: &mut Option<(String, Instant)>,
) -> Result<(), LeaseError> {
    let me = shared.settings.instance.as_str();
    let mut wanted = shared.wanted.subscribe();
    let wants = *wanted.borrow_and_update();
    let read = shared.read().await?;
    let Some(lease) = read else {
        *observed = None;
        if !wants {
            shared.publish(LeaderState::Follower { leader: None });
            return wait(shared, &mut wanted).await;
        }
        return create(shared, &mut wanted).await;
    };
    let s = seen(&lease);
    // A Lease held under this instance's own id that this election does not hold (an earlier
    // run's, or its own renewal whose answer was lost) is waited out like anyone's: two
    // processes given the same id must not both act.
    let free = match s.holder.as_deref() {
        None => true,
        Some(_) => {
            let now = Instant::now();
            let since = match observed {
                Some((v, at)) if *v == s.version => *at,
                _ => {
                    *observed = Some((s.version.clone(), now));
                    now
                }
            };
            now.saturating_duration_since(since) >= s.duration.max(Duration::from_secs(1))
        }
    };
    if !free || !wants {
        shared.publish(LeaderState::Follower {
            leader: s.holder.clone(),
        });
        return wait(shared, &mut wanted).await;
    }
    // Takeover: the compare on resourceVersion decides; a new term, a new token.
    let mut next = lease.clone();
    let now = shared.now_micro();
    next.spec = Some(
        serde_json::from_value(json!({
            "holderIdentity": me,
            "leaseDurationSeconds": shared.ttl_seconds(),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": s.transitions.saturating_add(1),
        }))
        .unwrap_or_default(),
    );
    let sent = Instant::now();
    match shared.replace("take over", &next).await {
        Ok(written) => {
            *observed = None;
            if let Some(previous) = s.holder.as_deref() {
                info!(previous, "lease expired unrenewed: taken over");
            }
            hold(shared, &mut wanted, written, sent).await
        }
        Err(e) if conflict(&e) => {
            debug!("lost the race for the lease");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Creates the absent Lease as held by this instance, and holds it.
async fn create(shared: &Shared, wanted: &mut watch::Receiver<bool>) -> Result<(), LeaseError> {
    let now = shared.now_micro();
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": shared.settings.name,
            "namespace": shared.settings.namespace,
            "labels": { "app.kubernetes.io/managed-by": "steward" },
        },
        "spec": {
            "holderIdentity": shared.settings.instance,
            "leaseDurationSeconds": shared.ttl_seconds(),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    }))
    .unwrap_or_default();
    let sent = Instant::now();
    match shared.create(&lease).await {
        Ok(written) => hold(shared, wanted, written, sent).await,
        Err(e) if conflict(&e) => {
            debug!("the lease was created by another instance first");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// 409: AlreadyExists on a create, Conflict on a stale resourceVersion.
fn conflict(e: &LeaseError) -> bool {
    matches!(e, LeaseError::Kubernetes { source: kube::Error::Api(s), .. } if s.code == 409)
}

/// A follower's pause between reads: `keepalive`, or less when the campaign wish changes.
async fn wait(shared: &Shared, wanted: &mut watch::Receiver<bool>) -> Result<(), LeaseError> {
    tokio::select! {
        _ = sleep(shared.settings.keepalive) => Ok(()),
        changed = wanted.changed() => changed.map_err(|_| LeaseError::Stopped),
    }
}

/// Holds the Lease just written (sent at `sent`): renews it, stops acting at the local
/// deadline, releases it on resign.
async fn hold(
    shared: &Shared,
    wanted: &mut watch::Receiver<bool>,
    mut lease: Lease,
    sent: Instant,
) -> Result<(), LeaseError> {
    let settings = &shared.settings;
    let ttl = settings.ttl;
    let margin = settings.safety_margin;
    let token = FencingToken(i64::from(seen(&lease).transitions));
    let mut deadline = sent + ttl.saturating_sub(margin);
    shared.set_held(Some((token, deadline)));
    shared.publish(LeaderState::Leader {
        token,
        since: Instant::now(),
    });
    info!(%token, "lease acquired");
    let mut ticks = tokio::time::interval_at(sent + settings.keepalive, settings.keepalive);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sleep_until(deadline) => {
                shared.set_held(None);
                shared.publish(LeaderState::Unknown);
                warn!(%token, "no renewal acknowledged in time: stopped acting");
                return Err(LeaseError::KubernetesTimeout { operation: "renew", after: ttl });
            }
            _ = ticks.tick() => {
                let mut next = lease.clone();
                if let Some(spec) = next.spec.as_mut() {
                    spec.renew_time = serde_json::from_value(json!(shared.now_micro())).ok();
                    spec.lease_duration_seconds = Some(shared.ttl_seconds());
                }
                let sent = Instant::now();
                let renewed = timeout_at(deadline, shared.replace("renew", &next)).await;
                match renewed {
                    Ok(Ok(written)) => {
                        let s = seen(&written);
                        if s.holder.as_deref() != Some(settings.instance.as_str())
                            || i64::from(s.transitions) != token.0
                        {
                            // Not what was written: someone else's object now.
                            shared.set_held(None);
                            shared.publish(LeaderState::Unknown);
                            return Err(LeaseError::Taken { token });
                        }
                        lease = written;
                        deadline = sent + ttl.saturating_sub(margin);
                        shared.set_held(Some((token, deadline)));
                    }
                    Ok(Err(e)) if conflict(&e) => {
                        shared.set_held(None);
                        shared.publish(LeaderState::Unknown);
                        warn!(%token, "the lease was written by another: stopped acting");
                        return Err(LeaseError::Taken { token });
                    }
                    Ok(Err(e)) => {
                        // Kept until the deadline: the next tick tries again.
                        warn!(%token, error = %e, "lease renewal failed; retrying until the deadline");
                    }
                    Err(_) => {} // the deadline branch fires next
                }
            }
            changed = wanted.changed() => {
                if changed.is_err() || !*wanted.borrow_and_update() {
                    shared.set_held(None);
                    let result = release(shared, &lease).await;
                    shared.publish(LeaderState::Follower { leader: None });
                    info!(%token, "resigned");
                    return result;
                }
            }
        }
    }
}

/// Gives the Lease up: an empty holder, which a follower takes at once.
async fn release(shared: &Shared, lease: &Lease) -> Result<(), LeaseError> {
    let mut next = lease.clone();
    if let Some(spec) = next.spec.as_mut() {
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
    }
    shared.replace("release", &next).await.map(|_| ())
}
