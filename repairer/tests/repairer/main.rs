//! The repairer's integration tests: one binary, one module per concern.
//!
//! - `support`: observation builders and a tiny driver that acknowledges commands;
//! - `promises`: one test per promise of the issue, each naming the promise it proves;
//! - `scenarios`: the recorded scenarios under `tests/data/scenarios/` with their transcripts;
//! - `props`: property tests over arbitrary event sequences.

mod promises;
mod props;
mod scenarios;
mod support;
