//! The operation journal: durable records of in-flight operations (DESIGN.md promise 7).
//!
//! Before a multi-step operation (a resize, a replacement, a switchover, ...) touches anything,
//! its record is written to the state directory; after each step the record is rewritten. A
//! crash at any point therefore leaves a record saying which step was last *known* done, and
//! at start-up [`Journal::open`] hands back every operation that is not finished so the caller
//! can resume it or roll it back.
//!
//! What it is not: it does not know how to run, resume or undo an operation (the plan is an
//! opaque [`serde_json::Value`] owned by the loop that made it), and it is not a history
//! database: finished operations are archived and only the newest few per cluster are kept.
//!
//! # Layout and durability
//! ```text
//! <dir>/active/<cluster>.<id>.json         the latest committed record of an operation
//! <dir>/active/<cluster>.<id>.json.prev    the record before it (a fallback, see below)
//! <dir>/active/.<cluster>.<id>.json.tmp    a write in progress (never trusted)
//! <dir>/active/*.corrupt                   records that could not be read, set aside
//! <dir>/archive/<cluster>.<id>.json        finished and rolled-back operations
//! ```
//! Every write goes: temp file in the same directory, `fsync` it, rename the current record to
//! `.prev`, rename the temp file over the record, `fsync` the directory. Renames within one
//! directory are atomic, so a crash leaves either the old or the new record. The `.prev` copy
//! is there for the case rename atomicity does not cover (a file system that lost the data of
//! a renamed file, or bytes damaged on disk): when a record does not parse, the previous one is
//! restored and the damaged file is moved to `*.corrupt` and reported, never silently dropped.
//!
//! # Operation ids
//! `20261126T170250123Z-0000000001`: the UTC start time to the millisecond, then a sequence
//! number. Per cluster both parts never go backwards (the time is clamped to the last id's,
//! even if the clock does), so ids sort in start order as plain strings. They are valid
//! Kubernetes label values (alphanumerics and `-`, at most 63 characters) because platform
//! labels carry them ([`steward_model::ports::platform::LABEL_OPERATION`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use steward_model::Timestamp;

/// The on-disk format version; a record with another version is reported as unreadable
/// rather than guessed at.
pub const FORMAT_VERSION: u32 = 1;

/// Default number of archived operations kept per cluster.
pub const DEFAULT_KEEP_ARCHIVED: usize = 100;

const ACTIVE_DIR: &str = "active";
const ARCHIVE_DIR: &str = "archive";
const RECORD_EXT: &str = ".json";
const PREV_EXT: &str = ".json.prev";
const TMP_EXT: &str = ".tmp";
const CORRUPT_EXT: &str = ".corrupt";
const ID_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%3fZ";

/// Why the journal could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create journal directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list journal directory {path}")]
    ListDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read journal file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write journal file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move journal file {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove journal file {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync journal directory {path}")]
    SyncDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal file {path} is corrupt or truncated")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal file {path} has format version {found}, this steward reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "journal file {path} holds operation {id} of cluster {cluster}, not the one its name says"
    )]
    Misnamed {
        path: PathBuf,
        cluster: String,
        id: OperationId,
    },
    #[error("cluster name `{0}` cannot name a journal file (use letters, digits, `-` and `_`)")]
    InvalidCluster(String),
    #[error("operation {id} of cluster {cluster} is not in the journal")]
    NotActive { cluster: String, id: OperationId },
    #[error("operation {id} is already {state}; it cannot move to {next}")]
    Transition {
        id: OperationId,
        state: &'static str,
        next: &'static str,
    },
}

/// An operation id, unique and monotonic per cluster (see the module docs for the format).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(String);

impl OperationId {
    fn new(at: Timestamp, seq: u64) -> Self {
        // Negative or far-future times cannot be formatted; clamp to the epoch so the id stays
        // well-formed (the sequence number still keeps it unique).
        let dt = DateTime::from_timestamp_millis(at.as_millis().max(0)).unwrap_or_default();
        OperationId(format!("{}-{seq:010}", dt.format(ID_TIME_FORMAT)))
    }

    /// The start time and sequence number encoded in the id, if it is well-formed.
    pub fn parts(&self) -> Option<(Timestamp, u64)> {
        let (time, seq) = self.0.split_once('-')?;
        let dt = chrono::NaiveDateTime::parse_from_str(time, ID_TIME_FORMAT).ok()?;
        Some((
            Timestamp::from_millis(dt.and_utc().timestamp_millis()),
            seq.parse().ok()?,
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of operation a record describes (what the plan means is up to its owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Vertical resize of the members of a role.
    Resize,
    /// Grow a member's disk.
    DiskGrow,
    /// Add a database member (scale out).
    AddMember,
    /// Remove a replica (scale in).
    RemoveMember,
    /// Fence a member and replace it with a new replica.
    Replace,
    /// Ask Patroni for a switchover.
    Switchover,
    /// Change PostgreSQL settings through Patroni (and roll out restarts).
    Reconfigure,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Resize => "resize",
            OperationKind::DiskGrow => "disk_grow",
            OperationKind::AddMember => "add_member",
            OperationKind::RemoveMember => "remove_member",
            OperationKind::Replace => "replace",
            OperationKind::Switchover => "switchover",
            OperationKind::Reconfigure => "reconfigure",
        }
    }
}

/// Where an operation stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum OperationState {
    /// Journaled; no step is known to be done (the first step may have started).
    Started,
    /// Step `step` (0-based) is done; the next one may have started.
    StepDone { step: u32 },
    /// A step failed; the operation still has to be rolled back (or resumed). Not terminal.
    Failed { step: u32, reason: String },
    /// Every step done. Terminal: the record is archived.
    Finished,
    /// Undone after a failure or a crash. Terminal: the record is archived.
    RolledBack,
}

impl OperationState {
    pub fn as_str(&self) -> &'static str {
        match self {
            OperationState::Started => "started",
            OperationState::StepDone { .. } => "step_done",
            OperationState::Failed { .. } => "failed",
            OperationState::Finished => "finished",
            OperationState::RolledBack => "rolled_back",
        }
    }

    /// Finished or rolled back: nothing is left to resume or undo.
    pub fn is_terminal(&self) -> bool {
        matches!(self, OperationState::Finished | OperationState::RolledBack)
    }
}

/// What the caller knows before an operation starts.
#[derive(Clone, Debug, PartialEq)]
pub struct NewOperation {
    pub kind: OperationKind,
    pub cluster: String,
    /// The member(s) the operation acts on.
    pub targets: Vec<String>,
    /// The steps, in the owner's own format (the journal only stores it). It is shown on
    /// `/status`, so it must never hold a secret.
    pub plan: serde_json::Value,
}

/// One journaled operation, exactly as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// [`FORMAT_VERSION`] when written.
    pub format: u32,
    pub id: OperationId,
    pub kind: OperationKind,
    pub cluster: String,
    pub targets: Vec<String>,
    pub plan: serde_json::Value,
    /// The index of the next step to run (0 before any step is done).
    pub next_step: u32,
    pub state: OperationState,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    /// How many times the record was written; each write adds one (for diagnosis).
    pub revision: u64,
}

/// A journal file that could not be read, and where it was set aside.
#[derive(Debug)]
pub struct CorruptRecord {
    /// Where it now is (`*.corrupt`), for the operator to look at.
    pub quarantined: PathBuf,
    /// Why it could not be read (names the original file). `None` for files found already
    /// quarantined by an earlier start.
    pub error: Option<JournalError>,
    /// Whether the previous record of the same operation was restored in its place.
    pub recovered_previous: bool,
}

/// What [`Journal::open`] found.
#[derive(Debug)]
pub struct Opened {
    pub journal: Journal,
    /// Operations not finished nor rolled back, oldest first: resume or roll back each.
    pub unfinished: Vec<Operation>,
    /// Records that could not be read. Each is an operation in an unknown state: the caller
    /// should not act on its cluster without a person looking (they are never dropped).
    pub corrupt: Vec<CorruptRecord>,
}

/// The journal of one state directory (any number of clusters).
#[derive(Debug)]
pub struct Journal {
    active: PathBuf,
    archive: PathBuf,
    keep_archived: usize,
    /// The last id handed out per cluster, to keep ids monotonic.
    last_ids: HashMap<String, (Timestamp, u64)>,
}

impl Journal {
    /// Opens (creating if needed) the journal under `dir`, finishes any interrupted archiving,
    /// sets unreadable records aside and returns the unfinished operations.
    ///
    /// `keep_archived` is the number of archived operations kept per cluster (at least one is
    /// always kept, so ids stay monotonic across restarts).
    pub fn open(dir: &Path, keep_archived: usize) -> Result<Opened, JournalError> {
        let mut journal = Journal {
            active: dir.join(ACTIVE_DIR),
            archive: dir.join(ARCHIVE_DIR),
            keep_archived: keep_archived.max(1),
            last_ids: HashMap::new(),
        };
        for d in [dir, journal.active.as_path(), journal.archive.as_path()] {
            fs::create_dir_all(d).map_err(|source| JournalError::CreateDir {
                path: d.to_path_buf(),
                source,
            })?;
        }

        let mut corrupt = Vec::new();
        let mut records: BTreeMap<String, Operation> = BTreeMap::new();
        let names = list_names(&journal.active)?;
        for name in &names {
            let path = journal.active.join(name);
            if name.ends_with(TMP_EXT) {
                // A write that never got renamed into place: it was never committed, so the
                // record it belongs to (or its absence) is the last complete state.
                tracing::info!(file = %path.display(), "removing an interrupted journal write");
                remove(&path)?;
            } else if name.ends_with(CORRUPT_EXT) {
                corrupt.push(CorruptRecord {
                    quarantined: path,
                    error: None,
                    recovered_previous: false,
                });
            } else if let Some(stem) = name.strip_suffix(RECORD_EXT) {
                match read_named_record(&path, stem) {
                    Ok(op) => {
                        records.insert(stem.to_string(), op);
                    }
                    Err(error) => {
                        let quarantined = journal.quarantine(&path)?;
                        let prev = journal.active.join(format!("{stem}{PREV_EXT}"));
                        let recovered = match read_named_record(&prev, stem) {
                            Ok(op) => {
                                rename(&prev, &path)?;
                                records.insert(stem.to_string(), op);
                                true
                            }
                            Err(_) => false,
                        };
                        tracing::error!(
                            file = %quarantined.display(),
                            error = %error,
                            recovered_previous = recovered,
                            "journal record unreadable; set aside"
                        );
                        corrupt.push(CorruptRecord {
                            quarantined,
                            error: Some(error),
                            recovered_previous: recovered,
                        });
                    }
                }
            }
        }
        // A `.prev` without its record: the crash came between the two renames of a write.
        // The `.prev` is then the last committed state.
        for name in &names {
            if let Some(stem) = name.strip_suffix(PREV_EXT) {
                let prev = journal.active.join(name);
                if records.contains_key(stem) || !prev.exists() {
                    continue;
                }
                let path = journal.active.join(format!("{stem}{RECORD_EXT}"));
                match read_named_record(&prev, stem) {
                    Ok(op) => {
                        rename(&prev, &path)?;
                        records.insert(stem.to_string(), op);
                    }
                    Err(error) => {
                        let quarantined = journal.quarantine(&prev)?;
                        corrupt.push(CorruptRecord {
                            quarantined,
                            error: Some(error),
                            recovered_previous: false,
                        });
                    }
                }
            }
        }
        sync_dir(&journal.active)?;

        for name in list_names(&journal.archive)? {
            if let Some(stem) = name.strip_suffix(RECORD_EXT) {
                if let Some((cluster, id)) = split_stem(stem) {
                    journal.note_id(cluster, &OperationId(id.to_string()));
                }
            }
        }
        let mut unfinished = Vec::new();
        for op in records.into_values() {
            journal.note_id(&op.cluster, &op.id);
            if op.state.is_terminal() {
                // Crashed between marking it terminal and archiving it: finish the move.
                journal.archive_record(&op)?;
            } else {
                unfinished.push(op);
            }
        }
        unfinished.sort_by(|a, b| (&a.started_at, &a.id).cmp(&(&b.started_at, &b.id)));
        let clusters: Vec<String> = journal.last_ids.keys().cloned().collect();
        for cluster in clusters {
            journal.prune(&cluster)?;
        }
        Ok(Opened {
            journal,
            unfinished,
            corrupt,
        })
    }

    /// Journals a new operation durably, before any of its steps runs.
    pub fn begin(&mut self, new: NewOperation, now: Timestamp) -> Result<Operation, JournalError> {
        check_cluster(&new.cluster)?;
        let id = self.next_id(&new.cluster, now);
        let op = Operation {
            format: FORMAT_VERSION,
            id,
            kind: new.kind,
            cluster: new.cluster,
            targets: new.targets,
            plan: new.plan,
            next_step: 0,
            state: OperationState::Started,
            started_at: now,
            updated_at: now,
            revision: 1,
        };
        self.write_active(&op)?;
        tracing::info!(
            cluster = %op.cluster,
            operation = %op.id,
            kind = op.kind.as_str(),
            targets = ?op.targets,
            "operation journaled"
        );
        Ok(op)
    }

    /// Records that step `step` (0-based) is done; the next step to run is `step + 1`.
    pub fn step_done(
        &mut self,
        op: &mut Operation,
        step: u32,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        self.transition(
            op,
            OperationState::StepDone { step },
            step.saturating_add(1),
            now,
        )
    }

    /// Records an operation's progress with its plan as it now stands (an operation whose plan
    /// changes as it runs, like a repair that appends clean-up steps): `next_step` is where it
    /// stands, for diagnosis; the plan says what is left.
    pub fn progress(
        &mut self,
        op: &mut Operation,
        plan: serde_json::Value,
        next_step: u32,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let previous = std::mem::replace(&mut op.plan, plan);
        let state = match next_step.checked_sub(1) {
            Some(step) => OperationState::StepDone { step },
            None => OperationState::Started,
        };
        let result = self.transition(op, state, next_step, now);
        if result.is_err() {
            op.plan = previous;
        }
        result
    }

    /// Records that step `step` failed; the operation stays unfinished until rolled back.
    pub fn fail(
        &mut self,
        op: &mut Operation,
        step: u32,
        reason: impl Into<String>,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let state = OperationState::Failed {
            step,
            reason: reason.into(),
        };
        self.transition(op, state, step, now)
    }

    /// Records that every step is done, and archives the record.
    pub fn finish(&mut self, op: &mut Operation, now: Timestamp) -> Result<(), JournalError> {
        let next = op.next_step;
        self.transition(op, OperationState::Finished, next, now)?;
        self.archive_record(op)?;
        self.prune(&op.cluster)
    }

    /// Records that the operation was undone, and archives the record.
    pub fn rolled_back(&mut self, op: &mut Operation, now: Timestamp) -> Result<(), JournalError> {
        let next = op.next_step;
        self.transition(op, OperationState::RolledBack, next, now)?;
        self.archive_record(op)?;
        self.prune(&op.cluster)
    }

    /// The archived operations of a cluster, oldest first.
    pub fn archived(&self, cluster: &str) -> Result<Vec<Operation>, JournalError> {
        let mut ops = Vec::new();
        for name in list_names(&self.archive)? {
            let Some(stem) = name.strip_suffix(RECORD_EXT) else {
                continue;
            };
            if split_stem(stem).is_some_and(|(c, _)| c == cluster) {
                ops.push(read_record(&self.archive.join(&name))?);
            }
        }
        ops.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(ops)
    }

    fn transition(
        &mut self,
        op: &mut Operation,
        state: OperationState,
        next_step: u32,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        if op.state.is_terminal() {
            return Err(JournalError::Transition {
                id: op.id.clone(),
                state: op.state.as_str(),
                next: state.as_str(),
            });
        }
        let stem = stem(&op.cluster, &op.id);
        if !self.active.join(format!("{stem}{RECORD_EXT}")).exists() {
            return Err(JournalError::NotActive {
                cluster: op.cluster.clone(),
                id: op.id.clone(),
            });
        }
        // Build the new record aside so that a failed write leaves `op` as it is on disk.
        let mut next = op.clone();
        next.state = state;
        next.next_step = next_step;
        next.updated_at = now;
        next.revision = op.revision.saturating_add(1);
        self.write_active(&next)?;
        tracing::info!(
            cluster = %next.cluster,
            operation = %next.id,
            state = next.state.as_str(),
            next_step = next.next_step,
            "operation journaled"
        );
        *op = next;
        Ok(())
    }

    fn next_id(&mut self, cluster: &str, now: Timestamp) -> OperationId {
        let (last_at, last_seq) = self
            .last_ids
            .get(cluster)
            .copied()
            .unwrap_or((Timestamp::from_millis(0), 0));
        let at = now.max(last_at);
        let seq = last_seq.saturating_add(1);
        self.last_ids.insert(cluster.to_string(), (at, seq));
        OperationId::new(at, seq)
    }

    fn note_id(&mut self, cluster: &str, id: &OperationId) {
        if let Some(parts) = id.parts() {
            let entry = self
                .last_ids
                .entry(cluster.to_string())
                .or_insert((Timestamp::from_millis(0), 0));
            entry.0 = entry.0.max(parts.0);
            entry.1 = entry.1.max(parts.1);
        }
    }

    /// The durable write: temp file, fsync, current -> `.prev`, temp -> current, fsync dir.
    fn write_active(&self, op: &Operation) -> Result<(), JournalError> {
        let stem = stem(&op.cluster, &op.id);
        let path = self.active.join(format!("{stem}{RECORD_EXT}"));
        let prev = self.active.join(format!("{stem}{PREV_EXT}"));
        let tmp = self.active.join(format!(".{stem}{RECORD_EXT}{TMP_EXT}"));
        write_synced(&tmp, op)?;
        if path.exists() {
            rename(&path, &prev)?;
        }
        rename(&tmp, &path)?;
        sync_dir(&self.active)
    }

    /// Moves a terminal record to the archive: write it there durably, then remove it (and its
    /// `.prev`) from `active`. A crash in between leaves a terminal record in `active`, which
    /// `open` archives again (the archive write is idempotent).
    fn archive_record(&self, op: &Operation) -> Result<(), JournalError> {
        let stem = stem(&op.cluster, &op.id);
        let path = self.archive.join(format!("{stem}{RECORD_EXT}"));
        let tmp = self.archive.join(format!(".{stem}{RECORD_EXT}{TMP_EXT}"));
        write_synced(&tmp, op)?;
        rename(&tmp, &path)?;
        sync_dir(&self.archive)?;
        for name in [format!("{stem}{RECORD_EXT}"), format!("{stem}{PREV_EXT}")] {
            let p = self.active.join(name);
            if p.exists() {
                remove(&p)?;
            }
        }
        sync_dir(&self.active)
    }

    /// Keeps the newest `keep_archived` archived records of a cluster; also removes leftover
    /// temp files of interrupted archive writes.
    fn prune(&self, cluster: &str) -> Result<(), JournalError> {
        let mut mine = Vec::new();
        for name in list_names(&self.archive)? {
            if name.ends_with(TMP_EXT) {
                remove(&self.archive.join(&name))?;
            } else if let Some(stem) = name.strip_suffix(RECORD_EXT) {
                if let Some((c, id)) = split_stem(stem) {
                    if c == cluster {
                        mine.push((id.to_string(), name.clone()));
                    }
                }
            }
        }
        if mine.len() <= self.keep_archived {
            return Ok(());
        }
        // Ids sort in start order as strings (fixed-width fields).
        mine.sort();
        let excess = mine.len() - self.keep_archived;
        for (_, name) in mine.into_iter().take(excess) {
            remove(&self.archive.join(name))?;
        }
        sync_dir(&self.archive)
    }

    /// Moves an unreadable file to `<name>.corrupt` (or `<name>.N.corrupt` if taken).
    fn quarantine(&self, path: &Path) -> Result<PathBuf, JournalError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut target = self.active.join(format!("{name}{CORRUPT_EXT}"));
        let mut n = 1;
        while target.exists() {
            target = self.active.join(format!("{name}.{n}{CORRUPT_EXT}"));
            n += 1;
        }
        rename(path, &target)?;
        Ok(target)
    }
}

fn stem(cluster: &str, id: &OperationId) -> String {
    format!("{cluster}.{id}")
}

fn split_stem(stem: &str) -> Option<(&str, &str)> {
    stem.split_once('.')
}

fn check_cluster(cluster: &str) -> Result<(), JournalError> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 200
        && cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(JournalError::InvalidCluster(cluster.to_string()))
    }
}

fn read_record(path: &Path) -> Result<Operation, JournalError> {
    let bytes = fs::read(path).map_err(|source| JournalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let op: Operation = serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    if op.format != FORMAT_VERSION {
        return Err(JournalError::Version {
            path: path.to_path_buf(),
            found: op.format,
        });
    }
    Ok(op)
}

/// Reads a record and checks that it belongs under its file name: a record copied or renamed
/// by hand would otherwise be rewritten under another name and exist twice.
fn read_named_record(path: &Path, file_stem: &str) -> Result<Operation, JournalError> {
    let op = read_record(path)?;
    if stem(&op.cluster, &op.id) != file_stem {
        return Err(JournalError::Misnamed {
            path: path.to_path_buf(),
            cluster: op.cluster,
            id: op.id,
        });
    }
    Ok(op)
}

fn write_synced(path: &Path, op: &Operation) -> Result<(), JournalError> {
    let err = |source| JournalError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Serializing these types cannot fail (string keys, no non-finite floats in a Value).
    let mut bytes = serde_json::to_vec_pretty(op).map_err(|e| err(io::Error::other(e)))?;
    bytes.push(b'\n');
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

fn rename(from: &Path, to: &Path) -> Result<(), JournalError> {
    fs::rename(from, to).map_err(|source| JournalError::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

fn remove(path: &Path) -> Result<(), JournalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(JournalError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Makes renames and removals in `dir` durable (on Linux a directory can be opened and
/// fsynced like a file).
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| JournalError::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// File names in `dir`, sorted (names that are not UTF-8 are not ours and are skipped).
fn list_names(dir: &Path) -> Result<Vec<String>, JournalError> {
    let entries = fs::read_dir(dir).map_err(|source| JournalError::ListDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| JournalError::ListDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Ok(name) = entry.file_name().into_string() {
            if entry.path().is_file() {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_in_start_order() {
        let a = OperationId::new(Timestamp::from_millis(1_764_176_570_123), 1);
        assert_eq!(a.as_str(), "20251126T170250123Z-0000000001");
        assert_eq!(
            a.parts(),
            Some((Timestamp::from_millis(1_764_176_570_123), 1))
        );
        let b = OperationId::new(Timestamp::from_millis(1_764_176_570_124), 2);
        assert!(a < b);
        assert!(a.as_str().len() <= 63);
    }

    #[test]
    fn cluster_names_that_would_escape_the_directory_are_refused() {
        for bad in ["", "a/b", "..", "a.b", "a b"] {
            assert!(check_cluster(bad).is_err(), "{bad:?}");
        }
        assert!(check_cluster("pg-main_1").is_ok());
    }
}
