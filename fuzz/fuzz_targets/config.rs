//! The config file: any bytes through the loader `steward check-config` and `steward run` use
//! (read, TOML, every section's validation, `[lease]` and `[fleet]` included).
//!
//! Invariants: nothing panics; the effective config of a valid file (what `check-config`
//! prints) loads back and is valid too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use steward_runtime::config::{load, parse_raw};

fuzz_target!(|data: &[u8]| {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| steward_fuzz::scratch_dir("config").join("steward.toml"));
    std::fs::write(path, data).expect("write the config file");
    let loaded = load(path);

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = parse_raw(text) else {
        return;
    };
    let effective = raw.to_toml();
    let valid = raw.validate().is_ok();
    assert_eq!(
        valid,
        loaded.is_ok(),
        "load and parse_raw + validate disagree"
    );
    if valid {
        let again = parse_raw(&effective)
            .unwrap_or_else(|e| panic!("the effective config does not parse: {e}\n{effective}"));
        if let Err(e) = again.validate() {
            panic!("the effective config does not validate: {e}\n{effective}");
        }
    }
});
