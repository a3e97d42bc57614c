//! The repairer: it finds members that misbehave, fences them and replaces them (DESIGN.md 5).
//!
//! What it is: the pure, sans-IO parts of the repair loop.
//! - [`signal`]: what makes a member look bad ([`Signal`], each with its evidence);
//! - [`health`]: the member state machine, Healthy -> Suspect -> Confirmed -> Fencing -> Fenced
//!   -> Replacing -> Verifying -> Retired ([`Health`]);
//! - [`repairer`]: the repair core, [`Repairer::handle`]`(event, now, coordinator) -> Vec<Command>`,
//!   which owns the rules for the primary (never fence the leader-lock holder; switchover for a
//!   degraded primary; fence a former primary at once when the lock has moved) and the repair
//!   plans. The coordinator (crate `steward-coordinator`: the guards every disruptive action
//!   passes) is not the repairer's: the runtime owns it and hands it to each call, so the scale
//!   loop asks the same one directly;
//! - [`config`]: the `[repair]` config, raw then validated;
//! - [`replay`]: recordings (`MemberRecord` lines) grouped into observations, for scenarios.
//!
//! What it deliberately is not: a driver. No tokio, no clock (`now` is always a parameter), no
//! I/O, no logging: the async driver around it (which executes commands through the platform
//! port, journals them first and logs with `tracing`) comes separately, as does the scaler.
//!
//! Where to start reading: [`Repairer::handle`] in `repairer.rs`.
//!
//! ```
//! use steward_model::observation::{MemberObservation, Observation, PatroniRole, PlatformState};
//! use steward_model::Timestamp;
//! use steward_coordinator::Coordinator;
//! use steward_repairer::{CommandKind, Event, RepairConfig, Repairer};
//!
//! let member = |name: &str, role, state| MemberObservation {
//!     name: name.into(),
//!     patroni_role: role,
//!     platform_state: Some(state),
//!     ..MemberObservation::default()
//! };
//! let snapshot = |secs, third: MemberObservation| Observation {
//!     at: Timestamp::from_secs(secs),
//!     cluster: "demo".into(),
//!     members: vec![
//!         member("pg-1", Some(PatroniRole::Leader), PlatformState::Running),
//!         member("pg-2", Some(PatroniRole::Replica), PlatformState::Running),
//!         third,
//!     ],
//!     notes: vec![],
//!     slots: vec![],
//! };
//! let config = RepairConfig::default();
//! // The runtime owns the cluster's coordinator and hands it to every call.
//! let mut coordinator = Coordinator::new(config.guards.clone());
//! let mut repairer = Repairer::new("demo", config);
//! let dead = member("pg-3", None, PlatformState::Exited);
//! // Bad at 0 s: suspect. Still bad when the 60 s grace window has passed: repaired.
//! assert!(repairer.handle(Event::Observed(snapshot(0, dead.clone())), Timestamp::from_secs(0), &mut coordinator).is_empty());
//! let commands = repairer.handle(Event::Observed(snapshot(60, dead)), Timestamp::from_secs(60), &mut coordinator);
//! assert!(matches!(&commands[0].kind, CommandKind::Drain { member } if member == "pg-3"));
//! // The next step (fence) comes only once the driver reports this one done.
//! let done = Event::ActionDone { op: commands[0].op.clone(), result: Ok(()) };
//! let next = repairer.handle(done, Timestamp::from_secs(61), &mut coordinator);
//! assert!(matches!(&next[0].kind, CommandKind::Fence { member } if member == "pg-3"));
//! ```

pub mod command;
pub mod config;
pub mod health;
pub mod repairer;
pub mod replay;
pub mod signal;

pub use command::{ActionError, Alert, Command, CommandKind, Event, OperationId, OperatorCommand};
pub use config::{RawRepairConfig, RepairConfig};
pub use health::Health;
pub use repairer::{RepairKind, RepairRecord, RepairStep, Repairer};
pub use signal::Signal;
