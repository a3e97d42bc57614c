//! The operation journal as the loops use it: every operation is journaled whole (the scaler's
//! plans, the repairer's repairs), with its cursor, BEFORE any of its steps runs and again after
//! each one, so a crash at any point leaves a record saying which step was last known done. At
//! start-up, [`Pending`] says what a crash left half-done: the loops resume each operation from
//! its cursor (every step is idempotent). Journals of Stewards from before whole-operation
//! records hold single steps; [`recovery`] still settles those (promise 7).
//!
//! What it is: a small port ([`LoopJournal`]: append an entry, read them all) with a file
//! implementation over the project's state-directory journal ([`StateJournal`] over
//! [`crate::journal::Journal`]: atomic, fsync'd records) and an in-memory one ([`MemoryJournal`]).
//!
//! What it is not: the storage itself (that is `crate::journal`), nor the decision of what to
//! resume (the scaler resumes its plans; [`recovery`] settles the repair steps).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use steward_model::operation::Step;
use steward_model::Timestamp;
use steward_repairer::RepairRecord;
use steward_scaler::Plan;

/// Which loop wrote an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopName {
    Repair,
    Scale,
}

impl LoopName {
    pub fn as_str(self) -> &'static str {
        match self {
            LoopName::Repair => "repair",
            LoopName::Scale => "scale",
        }
    }
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// A step is about to run (written by Stewards before whole-operation records; read so that
    /// what they left half done is settled after an upgrade).
    Begin {
        at: Timestamp,
        op: String,
        by: LoopName,
        #[serde(deserialize_with = "step_or_legacy")]
        work: Step,
    },
    /// The step ended (`result` is `ok` or the error, or how recovery settled it).
    End {
        at: Timestamp,
        op: String,
        result: String,
    },
    /// The scaler's plan, as of now (the newest one of an id wins).
    Plan { at: Timestamp, plan: Plan },
    /// The plan ended.
    PlanEnd { at: Timestamp, op: String },
    /// The repair in progress, as of now (the newest one of an id wins): written before its
    /// first step and after each one.
    Repair { at: Timestamp, repair: RepairRecord },
    /// The repair ended (finished, cleaned up after a failure, or given up).
    RepairEnd {
        at: Timestamp,
        op: String,
        /// How it ended, in a few words.
        outcome: String,
    },
}

/// Journals written before the runtime and the scaler shared one step vocabulary stored a step
/// as `{"work": "fence", ...}` (tag `work`; `restart` for a restart); now a step is stored as the
/// model's `Step` (`{"action": "fence", ...}`, `restart_member`). Both read, so an operation that
/// a Steward of the earlier format left half done is still finished or undone after an upgrade.
fn step_or_legacy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
    use serde::de::Error;
    let mut value = serde_json::Value::deserialize(d)?;
    if let Some(fields) = value.as_object_mut() {
        if !fields.contains_key("action") {
            if let Some(tag) = fields.remove("work") {
                let tag = match tag.as_str() {
                    Some("restart") => serde_json::Value::from("restart_member"),
                    _ => tag,
                };
                fields.insert("action".into(), tag);
            }
        }
    }
    serde_json::from_value(value).map_err(D::Error::custom)
}

/// Why the journal could not be written or read. Writing failures stop the run: a step that
/// cannot be journaled must not run.
#[derive(Debug, thiserror::Error)]
pub enum LoopJournalError {
    /// The state directory's journal failed.
    #[error("the operation journal failed")]
    State(#[source] Box<crate::journal::JournalError>),
    /// Records that could not be read were set aside: operations in an unknown state.
    #[error("{count} journal record(s) could not be read (set aside, first: {path}); look at them before running steward on this cluster")]
    Corrupt { path: PathBuf, count: usize },
    /// A test journal refusing on purpose (to stop a run at a chosen point).
    #[error("journal refused the entry: {0}")]
    Refused(String),
}

/// Where entries go.
pub trait LoopJournal: Send + Sync {
    /// Appends one entry durably (returns once it is on disk).
    fn append(&self, entry: &Entry) -> Result<(), LoopJournalError>;
    /// Every entry, oldest first.
    fn read(&self) -> Result<Vec<Entry>, LoopJournalError>;
    /// The members the recently ended operations concerned (old members replaced or removed,
    /// replacements, new members), newest operations' first: what a previous run may have left
    /// a balancer server of. A journal that keeps no history has none.
    fn recent_members(&self) -> Concerned {
        Concerned::default()
    }
}

/// Members that operations concerned: their balancer servers are ours to delete when the
/// member is gone, and the added ones' to enable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Concerned {
    pub members: Vec<String>,
    /// Members the operations were adding (a replacement, a scale-out's new member).
    pub joining: Vec<String>,
}

/// The project's state-directory journal ([`crate::journal::Journal`]: one fsync'd record per
/// operation, rewritten atomically) behind this port. Each scaler plan and each repair is one
/// record, rewritten as it goes (its `next_step` follows the cursor; a repair's `plan` field is
/// its latest [`RepairRecord`]) and archived when it ends. The record's `plan` field holds the
/// [`Entry`] that last wrote it, so [`LoopJournal::read`] after a crash gives back exactly the
/// half-done operations. Single-step records of earlier Stewards read back as steps.
pub struct StateJournal {
    cluster: String,
    inner: Mutex<StateInner>,
}

struct StateInner {
    journal: crate::journal::Journal,
    /// Records not finished, by this module's key (a step's op, or `plan:<id>`).
    open: BTreeMap<String, crate::journal::Operation>,
    /// What the journal held when opened, as entries.
    found: Vec<Entry>,
}

impl std::fmt::Debug for StateJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateJournal")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn plan_key(id: &str) -> String {
    format!("plan:{id}")
}

fn repair_key(id: &str) -> String {
    format!("repair:{id}")
}

fn kind_of(by: LoopName, work: &Step) -> crate::journal::OperationKind {
    use crate::journal::OperationKind as K;
    match (by, work) {
        (_, Step::Switchover { .. }) => K::Switchover,
        (_, Step::Resize { .. }) => K::Resize,
        (_, Step::PatchConfig { .. } | Step::RestartMember { .. }) => K::Reconfigure,
        (LoopName::Repair, _) => K::Replace,
        (LoopName::Scale, Step::Create { .. }) => K::AddMember,
        (LoopName::Scale, _) => K::RemoveMember,
    }
}

impl StateJournal {
    /// Opens the journal under `dir` for `cluster`. Records that could not be read are set
    /// aside by the journal and returned as an error: an operation in an unknown state needs a
    /// person before Steward acts on the cluster.
    pub fn open(dir: &Path, cluster: &str) -> Result<StateJournal, LoopJournalError> {
        let opened = crate::journal::Journal::open(dir, crate::journal::DEFAULT_KEEP_ARCHIVED)
            .map_err(|e| LoopJournalError::State(Box::new(e)))?;
        if let Some(c) = opened.corrupt.first() {
            return Err(LoopJournalError::Corrupt {
                path: c.quarantined.clone(),
                count: opened.corrupt.len(),
            });
        }
        let mut open = BTreeMap::new();
        let mut found = Vec::new();
        for op in opened
            .unfinished
            .into_iter()
            .filter(|o| o.cluster == cluster)
        {
            let Ok(entry) = serde_json::from_value::<Entry>(op.plan.clone()) else {
                // Another writer's record (not a step of the loops): not ours to settle.
                continue;
            };
            match entry {
                Entry::Begin { op: ref key, .. } => {
                    open.insert(key.clone(), op);
                    found.push(entry);
                }
                Entry::Plan { at, mut plan } => {
                    // Steps before `next_step` are done; the current one is run again
                    // (every step is idempotent).
                    plan.cursor = (op.next_step as usize).min(plan.steps.len());
                    plan.phase = steward_scaler::Phase::Ready;
                    open.insert(plan_key(&plan.id.0), op);
                    found.push(Entry::Plan { at, plan });
                }
                Entry::Repair { ref repair, .. } => {
                    open.insert(repair_key(repair.id.as_str()), op);
                    found.push(entry);
                }
                Entry::End { .. } | Entry::PlanEnd { .. } | Entry::RepairEnd { .. } => {}
            }
        }
        Ok(StateJournal {
            cluster: cluster.to_string(),
            inner: Mutex::new(StateInner {
                journal: opened.journal,
                open,
                found,
            }),
        })
    }
}

impl LoopJournal for StateJournal {
    fn append(&self, entry: &Entry) -> Result<(), LoopJournalError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let StateInner { journal, open, .. } = &mut *inner;
        let state = |e| LoopJournalError::State(Box::new(e));
        let record = |e: &Entry| serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
        match entry {
            Entry::Begin { at, op, by, work } => {
                let new = crate::journal::NewOperation {
                    kind: kind_of(*by, work),
                    cluster: self.cluster.clone(),
                    targets: work.member().map(str::to_string).into_iter().collect(),
                    plan: record(entry),
                };
                let made = journal.begin(new, *at).map_err(state)?;
                open.insert(op.clone(), made);
            }
            Entry::End { at, op, result } => {
                if let Some(mut record) = open.remove(op) {
                    if result.starts_with("recovered: undid") {
                        journal.rolled_back(&mut record, *at).map_err(state)?;
                    } else {
                        journal.finish(&mut record, *at).map_err(state)?;
                    }
                }
            }
            Entry::Plan { at, plan } => {
                let key = plan_key(&plan.id.0);
                if let Some(record) = open.get_mut(&key) {
                    if plan.cursor > 0 {
                        let done = (plan.cursor - 1) as u32;
                        journal.step_done(record, done, *at).map_err(state)?;
                    }
                } else {
                    use crate::journal::OperationKind as K;
                    let kind = match &plan.intent.kind {
                        steward_scaler::IntentKind::Resize { .. } => K::Resize,
                        steward_scaler::IntentKind::ScaleOut { .. } => K::AddMember,
                        steward_scaler::IntentKind::ScaleIn { .. } => K::RemoveMember,
                        steward_scaler::IntentKind::Retune { .. } => K::Reconfigure,
                    };
                    let targets = match &plan.intent.kind {
                        steward_scaler::IntentKind::ScaleOut { member }
                        | steward_scaler::IntentKind::ScaleIn { member } => vec![member.clone()],
                        steward_scaler::IntentKind::Resize { .. }
                        | steward_scaler::IntentKind::Retune { .. } => Vec::new(),
                    };
                    let new = crate::journal::NewOperation {
                        kind,
                        cluster: self.cluster.clone(),
                        targets,
                        plan: record(entry),
                    };
                    let made = journal.begin(new, *at).map_err(state)?;
                    open.insert(key, made);
                }
            }
            Entry::PlanEnd { at, op } => {
                if let Some(mut record) = open.remove(&plan_key(op)) {
                    journal.finish(&mut record, *at).map_err(state)?;
                }
            }
            Entry::Repair { at, repair } => {
                let key = repair_key(repair.id.as_str());
                if let Some(open_record) = open.get_mut(&key) {
                    journal
                        .progress(open_record, record(entry), repair.issued, *at)
                        .map_err(state)?;
                } else {
                    use crate::journal::OperationKind as K;
                    let kind = match repair.kind {
                        steward_repairer::RepairKind::Switchover => K::Switchover,
                        _ => K::Replace,
                    };
                    let new = crate::journal::NewOperation {
                        kind,
                        cluster: self.cluster.clone(),
                        targets: vec![repair.target.clone()],
                        plan: record(entry),
                    };
                    let made = journal.begin(new, *at).map_err(state)?;
                    open.insert(key, made);
                }
            }
            Entry::RepairEnd { at, op, .. } => {
                if let Some(mut record) = open.remove(&repair_key(op)) {
                    journal.finish(&mut record, *at).map_err(state)?;
                }
            }
        }
        Ok(())
    }

    fn read(&self) -> Result<Vec<Entry>, LoopJournalError> {
        Ok(self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .found
            .clone())
    }

    fn recent_members(&self) -> Concerned {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let archived = match inner.journal.archived(&self.cluster) {
            Ok(ops) => ops,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the journal's archive; balancer servers of earlier runs' members are left alone");
                return Concerned::default();
            }
        };
        let mut concerned = Concerned::default();
        for (age, op) in archived.iter().rev().enumerate() {
            // Only the newest operation can have ended with its new member's server still
            // warming up (the sync enables it within a tick or two of the operation's end); an
            // older one's drained server is someone's decision, not a left-over.
            let newest = age == 0;
            concerned.members.extend(op.targets.iter().cloned());
            if newest && op.kind == crate::journal::OperationKind::AddMember {
                concerned.joining.extend(op.targets.iter().cloned());
            }
            if let Ok(Entry::Repair { repair, .. }) = serde_json::from_value(op.plan.clone()) {
                if newest && repair.replacement_created && !repair.failed {
                    concerned.joining.push(repair.replacement.clone());
                }
                concerned.members.push(repair.replacement);
            }
        }
        concerned
    }
}

/// Decides whether an entry is refused (tests stop a run at a chosen step with it).
pub type RefuseFn = dyn Fn(&Entry) -> bool + Send + Sync;

/// An in-memory journal, shared by clones; survives a "crash" of the run that used it.
#[derive(Clone, Default)]
pub struct MemoryJournal {
    entries: Arc<Mutex<Vec<Entry>>>,
    refuse: Arc<Mutex<Option<Box<RefuseFn>>>>,
    /// Whether a refused entry is kept all the same (a crash right after the write).
    keep_refused: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for MemoryJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryJournal")
            .field("entries", &self.entries().len())
            .finish()
    }
}

impl MemoryJournal {
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// From now on, entries for which `refuse` is true fail to be written (and are not kept).
    pub fn refuse_when(&self, refuse: impl Fn(&Entry) -> bool + Send + Sync + 'static) {
        *self.refuse.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(refuse));
    }

    /// Like [`MemoryJournal::refuse_when`], but the entry is kept before the write fails: the
    /// run stops as if it died right after the record reached the disk.
    pub fn fail_after_when(&self, refuse: impl Fn(&Entry) -> bool + Send + Sync + 'static) {
        self.refuse_when(refuse);
        self.keep_refused
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops the run at a [`CrashPoint`]: the `write`-th operation record of its loop fails
    /// (before: not kept; after: kept).
    pub fn crash_at(&self, point: CrashPoint) {
        let seen = std::sync::atomic::AtomicU32::new(0);
        let hit = move |e: &Entry| {
            let by = match e {
                Entry::Repair { .. } | Entry::RepairEnd { .. } => LoopName::Repair,
                Entry::Plan { .. } | Entry::PlanEnd { .. } => LoopName::Scale,
                Entry::Begin { .. } | Entry::End { .. } => return false,
            };
            by == point.by
                && seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == point.write
        };
        if point.after {
            self.fail_after_when(hit);
        } else {
            self.refuse_when(hit);
        }
    }

    /// Loses every entry, as a wiped state folder does.
    pub fn forget_all(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn accept_all(&self) {
        *self.refuse.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.keep_refused
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl LoopJournal for MemoryJournal {
    fn append(&self, entry: &Entry) -> Result<(), LoopJournalError> {
        if let Some(refuse) = self
            .refuse
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if refuse(entry) {
                if self.keep_refused.load(std::sync::atomic::Ordering::Relaxed) {
                    self.entries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(entry.clone());
                }
                return Err(LoopJournalError::Refused(format!("{entry:?}")));
            }
        }
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry.clone());
        Ok(())
    }

    fn read(&self) -> Result<Vec<Entry>, LoopJournalError> {
        Ok(self.entries())
    }
}

/// The test-only fault injection: with this variable set, `steward run` aborts (as if killed)
/// at one operation-record boundary, so an end-to-end test can kill it between any two steps
/// of a real operation. Its value is a [`CrashPoint`].
pub const CRASH_AT_ENV: &str = "STEWARD_TEST_CRASH_AT";

/// Where to die: `<loop>:<before|after>:<n>`: just before or just after the `n`-th (1-based)
/// write of an operation record by the loop (`repair` or `scale`) in this process. A record is
/// written before an operation's first step, after each step (naming the next), and at its end;
/// so `after:k` dies with the journal naming step k as about to run and nothing of it done,
/// and `before:k+1` dies with step k done in the world but not in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashPoint {
    pub by: LoopName,
    pub after: bool,
    pub write: u32,
}

impl std::str::FromStr for CrashPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("`{s}` is not <repair|scale>:<before|after>:<n> (n from 1)");
        let mut parts = s.split(':');
        let (Some(by), Some(when), Some(n), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(usage());
        };
        let by = match by {
            "repair" => LoopName::Repair,
            "scale" => LoopName::Scale,
            _ => return Err(usage()),
        };
        let after = match when {
            "before" => false,
            "after" => true,
            _ => return Err(usage()),
        };
        let write = n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(usage)?;
        Ok(CrashPoint { by, after, write })
    }
}

/// A journal that aborts the process at a [`CrashPoint`] (see [`CRASH_AT_ENV`]).
pub struct CrashingJournal {
    inner: Arc<dyn LoopJournal>,
    point: CrashPoint,
    writes: Mutex<(u32, u32)>,
}

impl CrashingJournal {
    pub fn new(inner: Arc<dyn LoopJournal>, point: CrashPoint) -> Self {
        CrashingJournal {
            inner,
            point,
            writes: Mutex::new((0, 0)),
        }
    }

    fn die(&self, when: &str, n: u32) -> ! {
        tracing::warn!(
            "{CRASH_AT_ENV}: aborting {when} operation record {n} of the {} loop",
            self.point.by.as_str()
        );
        std::process::abort()
    }
}

impl LoopJournal for CrashingJournal {
    fn append(&self, entry: &Entry) -> Result<(), LoopJournalError> {
        let by = match entry {
            Entry::Repair { .. } | Entry::RepairEnd { .. } => LoopName::Repair,
            Entry::Plan { .. } | Entry::PlanEnd { .. } => LoopName::Scale,
            Entry::Begin { .. } | Entry::End { .. } => return self.inner.append(entry),
        };
        if by != self.point.by {
            return self.inner.append(entry);
        }
        let n = {
            let mut w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            let count = if by == LoopName::Repair {
                &mut w.0
            } else {
                &mut w.1
            };
            *count += 1;
            *count
        };
        if n == self.point.write && !self.point.after {
            self.die("before", n);
        }
        self.inner.append(entry)?;
        if n == self.point.write && self.point.after {
            self.die("after", n);
        }
        Ok(())
    }

    fn read(&self) -> Result<Vec<Entry>, LoopJournalError> {
        self.inner.read()
    }
}

/// What a crash left behind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pending {
    /// Single steps begun and never ended, oldest first (journals of earlier Stewards).
    pub steps: Vec<(String, LoopName, Step)>,
    /// The scaler's plans not ended, each as last journaled.
    pub plans: Vec<Plan>,
    /// The repairs not ended, each as last journaled.
    pub repairs: Vec<RepairRecord>,
}

impl Pending {
    pub fn from_entries(entries: &[Entry]) -> Pending {
        let mut steps: BTreeMap<String, (usize, LoopName, Step)> = BTreeMap::new();
        let mut plans: BTreeMap<String, (usize, Plan)> = BTreeMap::new();
        let mut repairs: BTreeMap<String, (usize, RepairRecord)> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            match e {
                Entry::Begin { op, by, work, .. } => {
                    steps.insert(op.clone(), (i, *by, work.clone()));
                }
                Entry::End { op, .. } => {
                    steps.remove(op);
                }
                Entry::Plan { plan, .. } => {
                    let first = plans.get(&plan.id.0).map_or(i, |(f, _)| *f);
                    plans.insert(plan.id.0.clone(), (first, plan.clone()));
                }
                Entry::PlanEnd { op, .. } => {
                    plans.remove(op);
                }
                Entry::Repair { repair, .. } => {
                    let key = repair.id.as_str();
                    let first = repairs.get(key).map_or(i, |(f, _)| *f);
                    repairs.insert(key.to_string(), (first, repair.clone()));
                }
                Entry::RepairEnd { op, .. } => {
                    repairs.remove(op);
                }
            }
        }
        let mut repairs: Vec<_> = repairs.into_values().collect();
        repairs.sort_by_key(|(i, _)| *i);
        let mut steps: Vec<_> = steps.into_iter().collect();
        steps.sort_by_key(|(_, (i, _, _))| *i);
        let mut plans: Vec<_> = plans.into_values().collect();
        plans.sort_by_key(|(i, _)| *i);
        Pending {
            steps: steps
                .into_iter()
                .map(|(op, (_, by, work))| (op, by, work))
                .collect(),
            plans: plans.into_iter().map(|(_, p)| p).collect(),
            repairs: repairs.into_iter().map(|(_, r)| r).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.plans.is_empty() && self.repairs.is_empty()
    }
}

/// What start-up does about one half-done single step (a journal of an earlier Steward).
#[derive(Clone, Debug, PartialEq)]
pub enum Recovery {
    /// Run it again: it is idempotent (fence, drain, remove, resize, a config value).
    Finish(Step),
    /// Take it back: a member created for a repair whose state died with the process. The
    /// fresh repairer repairs the old member again from the start, so the half-made replacement
    /// is fenced and removed (its data kept, as for every member that never streamed).
    Undo(Vec<Step>),
    /// Leave it: Patroni's state says by itself whether it happened (a switchover, a restart),
    /// and the loops judge afresh.
    Abandon,
    /// The scaler's journaled plan covers it: the plan is resumed and re-runs the step.
    WithPlan,
}

/// The recovery of a half-done step of loop `by`.
pub fn recovery(by: LoopName, work: &Step) -> Recovery {
    if by == LoopName::Scale {
        return Recovery::WithPlan;
    }
    match work {
        Step::Create { spec } => Recovery::Undo(vec![
            Step::Drain {
                member: spec.name.clone(),
            },
            Step::Fence {
                member: spec.name.clone(),
            },
            Step::Remove {
                member: spec.name.clone(),
                delete_data: false,
            },
        ]),
        Step::Switchover { .. } | Step::RestartMember { .. } => Recovery::Abandon,
        other => Recovery::Finish(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(op: &str, member: &str) -> Entry {
        Entry::Begin {
            at: Timestamp::from_secs(1),
            op: op.into(),
            by: LoopName::Repair,
            work: Step::Fence {
                member: member.into(),
            },
        }
    }

    #[test]
    fn pending_steps_are_the_begun_and_never_ended() {
        let entries = vec![
            begin("c-1/1", "pg-1"),
            Entry::End {
                at: Timestamp::from_secs(2),
                op: "c-1/1".into(),
                result: "ok".into(),
            },
            begin("c-1/2", "pg-2"),
        ];
        let pending = Pending::from_entries(&entries);
        assert_eq!(pending.steps.len(), 1);
        assert_eq!(pending.steps[0].0, "c-1/2");
    }

    /// What a crash leaves in the state directory comes back on the next open, and what
    /// ended does not.
    #[test]
    fn the_state_journal_gives_back_the_half_done_steps_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = StateJournal::open(dir.path(), "demo").unwrap();
            j.append(&begin("demo-1/1", "pg-1")).unwrap();
            j.append(&Entry::End {
                at: Timestamp::from_secs(2),
                op: "demo-1/1".into(),
                result: "ok".into(),
            })
            .unwrap();
            j.append(&begin("demo-1/2", "pg-2")).unwrap();
            // The process dies here.
        }
        let j = StateJournal::open(dir.path(), "demo").unwrap();
        let found = j.read().unwrap();
        assert_eq!(found, vec![begin("demo-1/2", "pg-2")]);
        j.append(&Entry::End {
            at: Timestamp::from_secs(3),
            op: "demo-1/2".into(),
            result: "recovered: finished".into(),
        })
        .unwrap();
        drop(j);
        let j = StateJournal::open(dir.path(), "demo").unwrap();
        assert!(j.read().unwrap().is_empty());
        // Another cluster's journal in the same directory is not ours.
        let other = StateJournal::open(dir.path(), "other").unwrap();
        assert!(other.read().unwrap().is_empty());
    }

    /// A repair is one record from its first step to its end; after a restart a repair not
    /// ended comes back as a whole (its latest record), and one that ended names its members
    /// (what a balancer may still hold a server of).
    #[test]
    fn a_repair_is_one_record_and_ended_ones_name_their_members() {
        let dir = tempfile::tempdir().unwrap();
        let record = |steps: Vec<steward_repairer::RepairStep>| RepairRecord {
            id: steward_model::operation::OperationId::new("demo", 1),
            started_at: Timestamp::from_secs(1),
            kind: steward_repairer::RepairKind::FenceFirst,
            target: "pg-3".into(),
            role: steward_model::Role::Database,
            replacement: "pg-3-r1".into(),
            why: "it crashed".into(),
            urgent: Default::default(),
            steps,
            issued: 0,
            target_fenced: false,
            replacement_created: false,
            replacement_streams: false,
            failed: false,
            aborted: false,
        };
        use steward_repairer::RepairStep as S;
        let first = record(vec![S::Drain("pg-3".into()), S::Fence("pg-3".into())]);
        let second = record(vec![S::Fence("pg-3".into())]);
        {
            let j = StateJournal::open(dir.path(), "demo").unwrap();
            for repair in [&first, &second] {
                j.append(&Entry::Repair {
                    at: Timestamp::from_secs(2),
                    repair: repair.clone(),
                })
                .unwrap();
            }
        }
        let j = StateJournal::open(dir.path(), "demo").unwrap();
        let pending = Pending::from_entries(&j.read().unwrap());
        assert_eq!(pending.repairs, vec![second.clone()]);
        let records = std::fs::read_dir(dir.path().join("active"))
            .unwrap()
            .count();
        assert_eq!(
            records, 2,
            "one record (and its previous version), not one per step"
        );
        j.append(&Entry::RepairEnd {
            at: Timestamp::from_secs(3),
            op: second.id.to_string(),
            outcome: "finished".into(),
        })
        .unwrap();
        drop(j);
        let j = StateJournal::open(dir.path(), "demo").unwrap();
        assert!(Pending::from_entries(&j.read().unwrap()).is_empty());
        let recent = j.recent_members();
        assert_eq!(recent.members, ["pg-3", "pg-3-r1"]);
        assert!(
            recent.joining.is_empty(),
            "no replacement was created: {recent:?}"
        );
    }

    #[test]
    fn a_repair_create_is_undone_and_a_fence_finished() {
        let create = Step::Create {
            spec: steward_model::ports::CreateSpec {
                cluster: "c".into(),
                role: steward_model::Role::Database,
                name: "pg-3-r1".into(),
                size: steward_model::Size {
                    cpus: 1.0,
                    memory_bytes: 1,
                    disk_bytes: 1,
                },
                operation_id: "c-1/3".into(),
                replaces: None,
            },
        };
        assert!(matches!(recovery(LoopName::Repair, &create), Recovery::Undo(w) if w.len() == 3));
        let fence = Step::Fence {
            member: "pg-3".into(),
        };
        assert_eq!(
            recovery(LoopName::Repair, &fence),
            Recovery::Finish(fence.clone())
        );
        assert_eq!(recovery(LoopName::Scale, &fence), Recovery::WithPlan);
    }

    /// A journal line of the earlier format (`"work": {"work": ...}`, `restart`) still reads,
    /// as the same step; a line of the current format reads too.
    #[test]
    fn begin_entries_of_the_earlier_step_format_still_read() {
        let begin = |work: Step| Entry::Begin {
            at: Timestamp::from_secs(1_000),
            op: "demo-1/2".into(),
            by: LoopName::Repair,
            work,
        };
        for (step, old_tag, new_tag) in [
            (
                Step::Fence {
                    member: "pg-3".into(),
                },
                "fence",
                "fence",
            ),
            (
                Step::RestartMember {
                    member: "pg-1".into(),
                },
                "restart",
                "restart_member",
            ),
        ] {
            let entry = begin(step);
            let new = serde_json::to_string(&entry).unwrap();
            assert!(new.contains(&format!(r#""action":"{new_tag}""#)), "{new}");
            assert_eq!(serde_json::from_str::<Entry>(&new).unwrap(), entry);
            let old = new.replace(
                &format!(r#""action":"{new_tag}""#),
                &format!(r#""work":"{old_tag}""#),
            );
            assert_ne!(old, new);
            assert_eq!(serde_json::from_str::<Entry>(&old).unwrap(), entry, "{old}");
        }
    }
}
