//! The scaler loop (not built yet).
//!
//! What will live here: each tick, observation -> policies -> intents, vertical per role
//! (`database`, `balancer`) and horizontal (replica count); live changes applied member by
//! member, replicas first and the primary last; PostgreSQL settings following a resize through
//! Patroni `PATCH /config`. A sans-IO core fed events, plus a thin tokio driver.
