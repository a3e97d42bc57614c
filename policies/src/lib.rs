//! Steward's policies: pure functions from observations to decisions.
//!
//! What it is: the scaler's judgement, with every reason recorded. [`VerticalPolicy`] sizes CPU
//! and memory of a role (band, windows, cooldown, step, bounds, OOM emergency), [`DiskPolicy`]
//! grows data disks (threshold, forecast, daily budget, WAL alarm), [`ReplicaPolicy`] sets the
//! number of database members (HA minimum, one at a time, which replica to remove). Each returns a
//! [`steward_model::Decision`] carrying the raw recommendation, the rules that changed or blocked
//! it, and one sentence for people. [`config`] holds the two-stage config ([`RawPolicyConfig`] ->
//! [`PolicyConfig`]).
//!
//! What it is deliberately not: anything with I/O. No clock (`now` is always a parameter), no
//! tokio, no HTTP, no logging; the policies do not apply their decisions either: the caller applies
//! a change and then tells the policy with `record_change`. That keeps them deterministic, which is
//! what lets `steward evaluate` replay recordings and the property tests check the promises.
//!
//! Where to start reading: DESIGN.md section 4 for the semantics, then [`vertical`] (the hot path:
//! [`VerticalPolicy::tick`] is allocation-free), then [`disk`] and [`replicas`].

pub mod amount;
pub mod cache;
pub mod config;
pub mod disk;
mod figures;
pub mod replicas;
pub mod rules;
mod seasonal;
pub mod slots;
pub mod vertical;
mod window;

pub use amount::{parse_bytes, parse_cpus, AmountError, RawAmount};
pub use cache::{CacheConfig, CachePolicy, RawCacheConfig};
pub use config::{
    Band, DiskConfig, OomConfig, PolicyConfig, RawBand, RawDiskConfig, RawOomConfig,
    RawPolicyConfig, RawReplicaConfig, RawRolePolicies, RawVerticalConfig, ReplicaConfig,
    RolePolicies, Statistic, VerticalConfig,
};
pub use disk::DiskPolicy;
pub use replicas::{ReplicaDecision, ReplicaPolicy};
pub use rules::RuleSet;
pub use vertical::{Verdict, VerticalPolicy};
