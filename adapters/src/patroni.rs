//! The Patroni REST API: reads (`/cluster`, `/patroni`, `/health`, `/liveness`, `/config`,
//! `/history`, `/metrics`) and actions (`/switchover`, `/failover`, `/restart`,
//! `/reinitialize`, `/reload`, `PATCH /config`), for Patroni 3.x and 4.x.
//!
//! Start with [`PatroniApi`]: the narrow trait the loops use, in domain verbs, with no reqwest
//! type in it, so a loop test can use an in-memory fake. [`PatroniClient`] implements it over
//! HTTP. Answers are normalized ([`types`]): `master`/`primary` are both the leader, states are
//! `running`/`streaming`/`stopped`..., whichever version answered.
//!
//! What this module is not: it does not assemble the observation (the binary's `observe` does)
//! and makes no decision. It judges nothing about health beyond what Patroni says.
//!
//! The HTTP plumbing it shares with the Prometheus client (client builder, TLS, secrets, URL
//! checks) is `crate::http`.

mod client;
mod config;
mod error;
pub mod types;

use async_trait::async_trait;

pub use client::{parse_metrics, PatroniClient, WAITING_ACTION_TIMEOUT};
pub use config::{
    BasicAuth, PatroniConfig, PatroniSettings, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RETRIES, DEFAULT_RETRY_DELAY, DEFAULT_TIMEOUT,
};
pub use error::PatroniError;
pub use types::{
    normalize_role, normalize_state, ActionOutcome, ClusterMember, ClusterView, HistoryEntry,
    MemberStatus, MetricSample, Probe, RestartConditions, Switchover, WalPositions, Walsender,
};

/// What the loops ask of Patroni. Members are addressed by their REST API base URL
/// ([`ClusterMember::api_base`]); cluster-wide verbs go to any member that answers.
///
/// Errors carry an [`ErrorKind`]: transient (retry later), not found, conflict (412: the
/// state moved, re-read), auth, permanent.
#[async_trait]
pub trait PatroniApi: Send + Sync {
    /// The members as the DCS knows them (`GET /cluster` on the first member that answers).
    async fn cluster(&self) -> Result<ClusterView, PatroniError>;

    /// One member about itself (`GET /patroni`); on the leader, `replication` lists who streams.
    /// One attempt, never retried: a member is looked at on every observation pass, so the next
    /// pass is the retry (retries here made a dead member whose address times out cost every
    /// pass its retries).
    async fn member_status(&self, api_base: &str) -> Result<MemberStatus, PatroniError>;

    /// Planned leader change (`POST /switchover`); 200 done, 202 scheduled, 412 refused.
    async fn switchover(&self, request: &Switchover) -> Result<ActionOutcome, PatroniError>;

    /// Unplanned leader change to `candidate` (`POST /failover`), for a cluster without leader.
    async fn failover(&self, candidate: &str) -> Result<ActionOutcome, PatroniError>;

    /// Restarts PostgreSQL on one member when every condition holds (`POST /restart`).
    async fn restart(
        &self,
        api_base: &str,
        conditions: &RestartConditions,
    ) -> Result<ActionOutcome, PatroniError>;

    /// Rebuilds a replica's data from the leader (`POST /reinitialize`).
    async fn reinitialize(
        &self,
        api_base: &str,
        force: bool,
    ) -> Result<ActionOutcome, PatroniError>;

    /// Reloads one member's configuration (`POST /reload`).
    async fn reload(&self, api_base: &str) -> Result<ActionOutcome, PatroniError>;

    /// The dynamic configuration (`GET /config`).
    async fn config(&self) -> Result<serde_json::Value, PatroniError>;

    /// Merges `patch` into the dynamic configuration (`PATCH /config`); returns the new one.
    async fn patch_config(
        &self,
        patch: &serde_json::Value,
    ) -> Result<serde_json::Value, PatroniError>;
}
