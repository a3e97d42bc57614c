//! Platform implementations of [`steward_model::ports::Platform`].

/// The contract suite every platform passes (a test harness that panics on a broken promise):
/// only in builds with the `contract` feature, which the adapters' own tests turn on.
#[cfg(feature = "contract")]
pub mod contract;
pub mod docker;
pub mod kubernetes;
pub mod libvirt;
pub mod simulated;
pub mod volume;
