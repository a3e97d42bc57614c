//! Recordings to observations: the repair scenarios are written in the recording format.
//!
//! What it is: [`observations`], which groups [`MemberRecord`] lines (one member at one instant)
//! by time into one [`Observation`] per instant, so a recording made live by `steward observe
//! --record` drives the repair core exactly as the live observer would.
//!
//! What it is not: a file reader (the caller parses the JSON lines; this crate does no I/O).
//! Absent fields stay unknown: a member whose line has no `patroni_role` and no `patroni_state`
//! was not answered for by Patroni, which is how a silent REST API is recorded.

use steward_model::observation::Observation;
use steward_model::record::MemberRecord;

/// One observation per distinct `time`, in time order; members keep the order of their lines.
/// Records without a cluster belong to `cluster`.
///
/// The grouping itself is `steward_model::record::group_by_time` (tested there); this name is
/// the one the scenarios read.
pub fn observations(
    records: impl IntoIterator<Item = MemberRecord>,
    cluster: &str,
) -> Vec<Observation> {
    steward_model::record::group_by_time(records, cluster)
}
