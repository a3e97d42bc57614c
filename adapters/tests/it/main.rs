//! Adapter tests: one integration test binary, one module per adapter.

mod docker;
mod haproxy;
mod host;
mod kubernetes;
mod kubernetes_lease;
mod lab_docker;
mod lease;
#[cfg(feature = "libvirt")]
mod libvirt;
#[cfg(feature = "libvirt")]
mod libvirt_lxc;
mod patroni;
mod prometheus;
mod simulated;

pub(crate) use steward_adapters::testing::service_missing;
