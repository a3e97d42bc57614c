//! Support for tests that run against real services (a Docker engine, haproxy, etcd, the lab),
//! shared by the adapters' tests and the `steward` binary's. Only with the `testing` feature.

/// A service this test needs is missing (`why` says which and how to start it): a failure, unless
/// the developer opted out with `STEWARD_REQUIRE_SERVICES=0` (`scripts/test.sh --quick`), in which
/// case the test says SKIPPED and the caller returns. `scripts/test.sh` exports
/// `STEWARD_REQUIRE_SERVICES=1` after starting every service; unset counts as required too, so no
/// runner's environment (such as `CI`) decides whether a real-service test runs.
#[track_caller]
pub fn service_missing(why: &str) {
    let skip = std::env::var("STEWARD_REQUIRE_SERVICES")
        .is_ok_and(|v| matches!(v.trim(), "0" | "false" | "no"));
    assert!(
        skip,
        "{why}; scripts/test.sh installs and starts every service the tests need \
         (for a quick run without them: scripts/test.sh --quick, or STEWARD_REQUIRE_SERVICES=0)"
    );
    eprintln!("SKIPPED: {why} (STEWARD_REQUIRE_SERVICES=0)");
}
