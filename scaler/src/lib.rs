//! The scaler's pure core: observations in, rollout plans and commands out.
//!
//! What it is: a sans-IO state machine ([`Scaler`], quinn-proto style) fed [`Event`]s (an
//! observation joined with the platform's members, the coordinator's answer, an action's result, a
//! tick) that returns [`Command`]s (propose a plan, journal it, execute one step, report the end).
//! Inside, the policies of `steward-policies` decide (CPU and memory per role, disk per role,
//! the replica count); a changing decision becomes a [`Plan`]: ordered, checked steps, replicas
//! first and the primary last, a Patroni switchover before the primary is interrupted, and the
//! PostgreSQL settings ([`settings`]) patched after a grow or before a shrink.
//!
//! What it is deliberately not: a driver. No tokio, no clock (`now` is a parameter), no I/O, no
//! logging, no Patroni or platform client: commands name Patroni actions (switchover, `PATCH
//! /config`, restart) and platform actions (resize, create, fence, remove) and the driver runs
//! them. Nor is it the coordinator: the core *proposes* each operation and starts it only when
//! told [`Event::Permitted`], so the one place that arbitrates between the scaler and the repairer
//! stays outside.
//!
//! Dry-run: the core is the same. A dry-run driver feeds observations, logs every
//! [`Command::Propose`] (the whole plan, with the decision and its reasons) and answers
//! [`Event::Refused`] with reason `dry-run`. Nothing is executed, no plan advances, and no success
//! is ever fed back: a synthetic success would make the core believe the world changed (it would
//! wait for sizes that never come, and start cooldowns for changes never made). The policies'
//! windows and cooldowns therefore evolve exactly as with no action taken.
//!
//! Where to start reading: [`core`] (the event loop and its invariants), then [`plan`] (the
//! rollout order and why), then [`settings`] (the formulas).

pub mod config;
pub mod core;
pub mod plan;
pub mod settings;
pub mod view;

pub use crate::config::{RawScalerConfig, ScalerConfig};
pub use crate::core::{ActionError, Command, Event, PlanOutcome, Report, ResumeError, Scaler};
pub use crate::plan::{
    Check, Guard, Intent, IntentKind, OperationId, Phase, Plan, PlanError, PlanStep, Step,
};
pub use crate::settings::{ConfigPatch, ParamValue, RawSettingsConfig, Settings, SettingsConfig};
pub use crate::view::{RoleSize, Snapshot};
