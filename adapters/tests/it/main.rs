//! Adapter tests: one integration test binary, one module per adapter.

mod docker;
mod haproxy;
mod host;
mod kubernetes;
mod lab_docker;
mod lease;
mod libvirt;
mod patroni;
mod prometheus;
mod simulated;
