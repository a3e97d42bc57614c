//! Patroni's `GET /metrics` text (the Prometheus exposition format), through the parser the
//! client uses, with the body decoded as the client decodes it (lossy UTF-8).
//!
//! Invariant: nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steward_adapters::patroni::parse_metrics;
use steward_model::Timestamp;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for now in [
        Timestamp::from_secs(1_795_708_800),
        Timestamp::from_millis(i64::MIN),
        Timestamp::from_millis(i64::MAX),
    ] {
        let _ = parse_metrics(&text, now);
    }
});
