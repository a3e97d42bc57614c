//! Ports: the narrow traits the loops drive and the adapters implement.
//!
//! Vendor types never cross these traits; errors are classified ([`ErrorKind`]) so that a loop
//! can choose between backing off and giving up.

pub mod metrics;
pub mod platform;

pub use platform::{
    Capabilities, Change, CpuUnit, CreateSpec, ErrorKind, KeptData, Labels, Placement, Platform,
    PlatformError, PlatformMember, ResizeOutcome, Usage, LABEL_CLUSTER, LABEL_MEMBER,
    LABEL_OPERATION, LABEL_REPLACES, LABEL_ROLE,
};
