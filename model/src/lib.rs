//! Steward's vocabulary: the small types every other crate speaks.
//!
//! What lives here: time ([`Timestamp`]), what is being sized ([`Role`], [`Resource`], [`Size`]),
//! what was seen ([`observation`]), what was decided and why ([`decision`]), the path-collecting
//! error list used by config validation ([`ConfigErrors`]), and the ports ([`ports`]): the narrow
//! traits that adapters implement and the loops drive.
//!
//! What does not: any I/O, any clock, any vendor type. This crate has no dependency heavier than
//! serde, so that `policies` can stay pure.
//!
//! Start with [`decision::Decision`]: it is what every policy returns.

pub mod decision;
pub mod errors;
pub mod fixed;
pub mod names;
pub mod observation;
pub mod operation;
pub mod ports;
pub mod record;
pub mod size;
pub mod time;

pub use decision::{Action, Decision, Explain, Knob, Part, Rule, RuleApplied, Text};
pub use errors::ConfigErrors;
pub use fixed::Fixed;
pub use names::NameMap;
pub use size::{Resource, Role, Size};
pub use time::Timestamp;
