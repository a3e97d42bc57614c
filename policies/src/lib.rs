//! Steward's policies: pure functions from observations to decisions.
//!
//! (Being built: vertical CPU/memory, disk, replica count.)
