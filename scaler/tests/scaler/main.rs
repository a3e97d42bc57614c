//! The scaler core's tests: one binary, one module per concern, all driven through the fake world
//! in `world` (deterministic: time is a counter, nothing sleeps, nothing touches a network).

mod world;

mod journal;
mod properties;
mod replicas;
mod rollout;
mod safety;
mod scenarios;
mod settings;
