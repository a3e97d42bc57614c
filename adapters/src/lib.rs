//! Adapters: the concrete sources and platforms behind the ports of `steward-model`.
//!
//! - [`patroni`]: the Patroni REST API client (3.x and 4.x), reads and actions.
//! - [`prometheus`]: batched PromQL instant and range queries, one query per metric for all members.
//! - [`host`]: figures of the machine Steward runs on (sysinfo), for capacity checks.
//! - [`platform`]: the platform implementations ([`platform::simulated`], [`platform::docker`],
//!   [`platform::libvirt`], [`platform::kubernetes`]) and the contract suite they all pass
//!   (with the `testing` feature, like `testing`: support for tests, never in the product).
//!
//! What this crate is not: it makes no decision. Loops and policies live elsewhere and see only
//! the traits of `steward_model::ports`.

pub mod haproxy;
pub mod host;
pub mod http;
pub mod lease;
pub mod patroni;
pub mod platform;
pub mod prometheus;
pub mod simcluster;
#[cfg(feature = "testing")]
pub mod testing;
