//! The repairer's operation id, on its own so that the commands (command.rs) and the coordinator
//! (coordinator.rs) both use it without importing each other: commands name the coordinator's
//! refusals, the coordinator names the operation that holds the slot.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id of one operation: `<cluster>-<counter>`, e.g. `demo-7`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpId(pub String);

impl OpId {
    pub fn new(cluster: &str, seq: u64) -> Self {
        OpId(format!("{cluster}-{seq}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
