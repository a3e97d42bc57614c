//! Tests of the `steward` binary as a user runs it: one integration test binary, modules inside.
mod config;
mod e2e;
mod evaluate;
mod journal;
mod lab;
mod observe;
mod run;
mod server;
