//! Platform implementations of [`steward_model::ports::Platform`].

/// The contract suite every platform passes (a test harness that panics on a broken promise):
/// only in builds with the `testing` feature, which the tests turn on.
#[cfg(feature = "testing")]
pub mod contract;
pub mod docker;
pub mod kubernetes;
pub mod libvirt;
pub mod simulated;
pub mod volume;
