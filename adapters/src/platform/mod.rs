//! Platform implementations of [`steward_model::ports::Platform`].

pub mod contract;
pub mod docker;
pub mod kubernetes;
pub mod libvirt;
pub mod simulated;
pub mod volume;
