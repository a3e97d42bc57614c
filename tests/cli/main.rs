//! Tests of the `steward` binary as a user runs it: one integration test binary, modules inside.
mod config;
mod e2e;
mod e2e_adopt;
mod e2e_crash;
mod e2e_fleet;
#[cfg(feature = "libvirt")]
mod e2e_libvirt;
mod e2e_scaling;
mod evaluate;
mod ha;
mod journal;
mod kubernetes;
mod lab;
mod observe;
mod packaging;
mod run;
mod secrets;
mod server;

pub(crate) use steward_adapters::testing::service_missing;
