//! The repairer loop (not built yet).
//!
//! What will live here: the member state machine of DESIGN.md section 5 (Healthy, Suspect,
//! Confirmed, Fencing, Fenced, Replacing, Verifying, Retired), fed platform state, Patroni state
//! and metrics; fencing before replacing; never fencing the leader-lock holder while there is no
//! healthy candidate; fencing a former primary as soon as the leader lock has moved.
