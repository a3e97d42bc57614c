//! The platform contract: one set of checks every [`Platform`] implementation must pass.
//!
//! A backend's test module implements [`Harness`] (how to get a fresh platform, what a member
//! looks like, how to put a foreign resource beside the members, how to clean up) and calls
//! [`run_all`], or [`run_one`] per [`Check`] to get one test per check. The checks follow the
//! promises of `model::ports::platform`: created members are listed with their labels and size,
//! resizes are all-or-nothing, fencing is idempotent, unknown and unowned names are
//! [`ErrorKind::NotFound`], and create keeps members of one role on different hosts.
//!
//! What a backend cannot do is read from its
//! [`Capabilities`](steward_model::ports::Capabilities): where a change is
//! [`Change::Unsupported`] the contract expects a classified [`ErrorKind::Permanent`] error
//! instead of the change. Hooks that return `None` (no impossible size, no foreign resource, no
//! placement) skip the part of a check that needs them, and say so on stderr.
//!
//! What this is not: a test of a backend's own features (OOM-score env, runc's refusal
//! message, loop-XFS growth); those stay in the backend's test module. The checks panic with a
//! message naming the backend and the check, as test assertions do.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use steward_model::observation::PlatformState;
use steward_model::ports::{
    Change, CreateSpec, ErrorKind, Platform, PlatformError, PlatformMember, ResizeOutcome,
    LABEL_CLUSTER, LABEL_MEMBER, LABEL_OPERATION, LABEL_REPLACES, LABEL_ROLE,
};
use steward_model::{Role, Size};

/// What a backend provides so that the contract can run against it.
///
/// Every method may panic on a setup failure (the harness is test code); `cleanup` is called
/// after every check, also when the check failed, and must not panic on things already gone.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The backend's name in failure messages (`docker`, `simulated`, ...).
    fn name(&self) -> String;

    /// A platform owning [`Harness::cluster`], holding no member of it yet. Called once per check.
    async fn platform(&mut self) -> Arc<dyn Platform>;

    /// The cluster the platform owns.
    fn cluster(&self) -> String;

    /// The spec of database member `index` (0, 1, 2, ...) of the current check. The same index
    /// gives the same spec within one check; names should differ across checks, so that a
    /// leftover of a failed check cannot clash.
    fn database_spec(&mut self, index: usize) -> CreateSpec;

    /// A size `from` can be resized to: different CPU and memory (larger), same disk.
    fn grown_size(&self, from: Size) -> Size;

    /// A size the platform must refuse for a running member made from `database_spec` (e.g.
    /// memory below what the member holds, more CPU than any host has). `None`: the backend
    /// has no such size, and the check is skipped.
    fn impossible_size(&self, from: Size) -> Option<Size>;

    /// How many hosts can hold a database member of one cluster, when `create` enforces
    /// placement itself. `None` (e.g. Kubernetes anti-affinity, decided by the scheduler)
    /// skips the placement check.
    fn database_hosts(&self) -> Option<usize>;

    /// Puts a resource next to the members that the platform must not own (no Steward labels,
    /// or another cluster's) and returns the name the platform would know it by. `None`: the
    /// backend cannot, and the ownership check is skipped.
    async fn add_foreign(&mut self) -> Option<String>;

    /// Whether the foreign resource `name` still exists, untouched (still running where that
    /// applies).
    async fn foreign_intact(&mut self, name: &str) -> bool;

    /// Whether the data of a removed member still exists. `None`: the backend cannot tell.
    async fn data_exists(&mut self, member: &str) -> Option<bool>;

    /// Waits until a just-created member's process holds what `impossible_size` and usage
    /// rely on (e.g. its memory is allocated). Default: nothing to wait for.
    async fn member_ready(&mut self, member: &str) {
        let _ = member;
    }

    /// Removes everything the last check created: members, their data, foreign resources.
    async fn cleanup(&mut self);
}

/// The checks, one per promise. [`Check::ALL`] is the order [`run_all`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// create -> listed with its size, labels (operation id too) and state Running.
    CreateIsListed,
    /// A second create under a taken name -> Conflict, and the first member is unchanged.
    DuplicateCreateConflicts,
    /// Resize CPU and memory together -> the outcome the capabilities announce; list shows it;
    /// resizing back to the first size works too.
    ResizeApplies,
    /// An impossible size -> a classified error (Refused/Permanent) and nothing half-changed.
    ImpossibleResizeChangesNothing,
    /// Disk grows where supported; shrinking is refused where unsupported.
    DiskResize,
    /// fence -> not Running; fencing again succeeds.
    FenceIsIdempotent,
    /// remove -> gone from the list; a second remove is NotFound; data kept unless asked.
    RemoveForgets,
    /// resize/fence/remove of an unknown name -> NotFound.
    UnknownIsNotFound,
    /// Running members have usage figures.
    UsageOfRunningMembers,
    /// A foreign resource is never listed, resized, fenced or removed.
    ForeignIsUntouched,
    /// One database member per host; the next create is refused and says why.
    PlacementSpreadsRoles,
}

impl Check {
    pub const ALL: [Check; 11] = [
        Check::CreateIsListed,
        Check::DuplicateCreateConflicts,
        Check::ResizeApplies,
        Check::ImpossibleResizeChangesNothing,
        Check::DiskResize,
        Check::FenceIsIdempotent,
        Check::RemoveForgets,
        Check::UnknownIsNotFound,
        Check::UsageOfRunningMembers,
        Check::ForeignIsUntouched,
        Check::PlacementSpreadsRoles,
    ];
}

/// Runs every check in [`Check::ALL`], cleaning up after each; panics on the first failure
/// (after cleaning up).
pub async fn run_all(h: &mut dyn Harness) {
    for check in Check::ALL {
        run_one(h, check).await;
    }
}

/// Runs one check on a fresh platform, then [`Harness::cleanup`] even when the check panicked.
pub async fn run_one(h: &mut dyn Harness, check: Check) {
    let platform = h.platform().await;
    let outcome = AssertUnwindSafe(dispatch(h, platform.as_ref(), check))
        .catch_unwind()
        .await;
    h.cleanup().await;
    if let Err(panic) = outcome {
        eprintln!("contract check {check:?} failed on {}", h.name());
        std::panic::resume_unwind(panic);
    }
}

async fn dispatch(h: &mut dyn Harness, p: &dyn Platform, check: Check) {
    match check {
        Check::CreateIsListed => create_is_listed(h, p).await,
        Check::DuplicateCreateConflicts => duplicate_create_conflicts(h, p).await,
        Check::ResizeApplies => resize_applies(h, p).await,
        Check::ImpossibleResizeChangesNothing => impossible_resize_changes_nothing(h, p).await,
        Check::DiskResize => disk_resize(h, p).await,
        Check::FenceIsIdempotent => fence_is_idempotent(h, p).await,
        Check::RemoveForgets => remove_forgets(h, p).await,
        Check::UnknownIsNotFound => unknown_is_not_found(h, p).await,
        Check::UsageOfRunningMembers => usage_of_running_members(h, p).await,
        Check::ForeignIsUntouched => foreign_is_untouched(h, p).await,
        Check::PlacementSpreadsRoles => placement_spreads_roles(h, p).await,
    }
}

// --- helpers ---------------------------------------------------------------------------------

async fn listed(p: &dyn Platform, name: &str) -> Option<PlatformMember> {
    let members = p
        .list()
        .await
        .unwrap_or_else(|e| panic!("list failed: {e}"));
    members.into_iter().find(|m| m.name == name)
}

async fn must_list(h: &dyn Harness, p: &dyn Platform, name: &str) -> PlatformMember {
    listed(p, name)
        .await
        .unwrap_or_else(|| panic!("{}: member {name} is not listed", h.name()))
}

async fn create(h: &dyn Harness, p: &dyn Platform, spec: &CreateSpec) -> PlatformMember {
    p.create(spec).await.unwrap_or_else(|e| {
        panic!(
            "{}: create {} failed: {e} ({:?})",
            h.name(),
            spec.name,
            e.kind
        )
    })
}

/// Sizes compare with the slack of real platforms: CPU to a hundredth of a vCPU, memory to
/// 1 MiB (libvirt counts KiB, Kubernetes quantities round).
fn assert_size(h: &dyn Harness, what: &str, got: Size, want: Size, check_disk: bool) {
    let cpu_ok = (got.cpus - want.cpus).abs() < 0.01;
    let mem_ok = got.memory_bytes.abs_diff(want.memory_bytes) <= 1 << 20;
    let disk_ok = !check_disk || got.disk_bytes == want.disk_bytes;
    assert!(
        cpu_ok && mem_ok && disk_ok,
        "{}: {what}: size is {got:?}, expected {want:?}",
        h.name()
    );
}

fn assert_kind(
    h: &dyn Harness,
    what: &str,
    result: Result<impl std::fmt::Debug, PlatformError>,
    kinds: &[ErrorKind],
) -> PlatformError {
    match result {
        Ok(v) => panic!(
            "{}: {what}: expected an error of kind {kinds:?}, got Ok({v:?})",
            h.name()
        ),
        Err(e) => {
            assert!(
                kinds.contains(&e.kind),
                "{}: {what}: expected kind {kinds:?}, got {e} ({:?})",
                h.name(),
                e.kind
            );
            assert!(
                !e.message.is_empty(),
                "{}: {what}: error without a message",
                h.name()
            );
            e
        }
    }
}

fn disk_checked(p: &dyn Platform) -> bool {
    p.capabilities().disk_grow != Change::Unsupported
}

// --- the checks ------------------------------------------------------------------------------

async fn create_is_listed(h: &mut dyn Harness, p: &dyn Platform) {
    let mut spec = h.database_spec(0);
    // A replacement names what it replaces (a Steward whose journal is lost reads it back).
    spec.replaces = Some(format!("{}-old", spec.name));
    let created = create(h, p, &spec).await;
    assert_eq!(
        created.name,
        spec.name,
        "{}: create returned another name",
        h.name()
    );
    let m = must_list(h, p, &spec.name).await;
    assert_eq!(m.cluster, h.cluster(), "{}: cluster", h.name());
    assert_eq!(m.role, Role::Database, "{}: role", h.name());
    assert_eq!(
        m.state,
        PlatformState::Running,
        "{}: state after create",
        h.name()
    );
    assert_size(h, "after create", m.size, spec.size, disk_checked(p));
    let label = |k: &str| m.labels.get(k).cloned();
    assert_eq!(
        label(LABEL_CLUSTER),
        Some(spec.cluster.clone()),
        "{}: {LABEL_CLUSTER}",
        h.name()
    );
    assert_eq!(
        label(LABEL_ROLE),
        Some("database".to_string()),
        "{}: {LABEL_ROLE}",
        h.name()
    );
    assert_eq!(
        label(LABEL_MEMBER),
        Some(spec.name.clone()),
        "{}: {LABEL_MEMBER}",
        h.name()
    );
    assert_eq!(
        label(LABEL_OPERATION),
        Some(spec.operation_id.clone()),
        "{}: {LABEL_OPERATION}",
        h.name()
    );
    assert_eq!(
        label(LABEL_REPLACES),
        spec.replaces.clone(),
        "{}: {LABEL_REPLACES}",
        h.name()
    );
    assert!(!m.host.is_empty(), "{}: member has no host", h.name());
    assert!(!m.address.is_empty(), "{}: member has no address", h.name());
    let all = p.list().await.expect("list");
    assert_eq!(
        all.iter().filter(|m| m.name == spec.name).count(),
        1,
        "{}: listed twice",
        h.name()
    );
}

async fn duplicate_create_conflicts(h: &mut dyn Harness, p: &dyn Platform) {
    let spec = h.database_spec(0);
    create(h, p, &spec).await;
    let mut again = spec.clone();
    again.operation_id = format!("{}-again", spec.operation_id);
    assert_kind(
        h,
        "duplicate create",
        p.create(&again).await,
        &[ErrorKind::Conflict],
    );
    let m = must_list(h, p, &spec.name).await;
    assert_eq!(
        m.labels.get(LABEL_OPERATION),
        Some(&spec.operation_id),
        "{}: the first member was changed",
        h.name()
    );
    assert_eq!(
        m.state,
        PlatformState::Running,
        "{}: the first member stopped",
        h.name()
    );
}

async fn resize_applies(h: &mut dyn Harness, p: &dyn Platform) {
    let spec = h.database_spec(0);
    create(h, p, &spec).await;
    let target = h.grown_size(spec.size);
    let caps = p.capabilities();
    let result = p.resize(&spec.name, target).await;
    if caps.cpu == Change::Unsupported || caps.memory == Change::Unsupported {
        assert_kind(
            h,
            "resize with an unsupported change",
            result,
            &[ErrorKind::Permanent],
        );
        let m = must_list(h, p, &spec.name).await;
        assert_size(h, "after an unsupported resize", m.size, spec.size, false);
        return;
    }
    let outcome = result.unwrap_or_else(|e| panic!("{}: resize failed: {e}", h.name()));
    let live = caps.cpu == Change::Live && caps.memory == Change::Live;
    if live {
        assert_eq!(
            outcome,
            ResizeOutcome::AppliedLive,
            "{}: live resize outcome",
            h.name()
        );
    } else {
        assert_ne!(
            outcome,
            ResizeOutcome::AppliedLive,
            "{}: capabilities say restart, resize says live",
            h.name()
        );
    }
    let m = must_list(h, p, &spec.name).await;
    if outcome != ResizeOutcome::PendingRestart {
        assert_size(h, "after resize", m.size, target, false);
    }
    if live {
        assert_eq!(
            m.state,
            PlatformState::Running,
            "{}: a live resize stopped the member",
            h.name()
        );
    }
    // And back down: the scaler shrinks too, CPU and memory together.
    if outcome != ResizeOutcome::PendingRestart {
        p.resize(&spec.name, spec.size)
            .await
            .unwrap_or_else(|e| panic!("{}: shrinking back failed: {e}", h.name()));
        let m = must_list(h, p, &spec.name).await;
        assert_size(h, "after shrinking back", m.size, spec.size, false);
    }
}

async fn impossible_resize_changes_nothing(h: &mut dyn Harness, p: &dyn Platform) {
    let spec = h.database_spec(0);
    create(h, p, &spec).await;
    h.member_ready(&spec.name).await;
    let Some(bad) = h.impossible_size(spec.size) else {
        eprintln!("{}: no impossible size, check skipped", h.name());
        return;
    };
    let e = assert_kind(
        h,
        "impossible resize",
        p.resize(&spec.name, bad).await,
        &[ErrorKind::Refused, ErrorKind::Permanent],
    );
    let m = must_list(h, p, &spec.name).await;
    assert_size(
        h,
        &format!("after the refused resize ({e})"),
        m.size,
        spec.size,
        disk_checked(p),
    );
    assert_eq!(
        m.state,
        PlatformState::Running,
        "{}: refused resize stopped the member",
        h.name()
    );
}

async fn disk_resize(h: &mut dyn Harness, p: &dyn Platform) {
    let spec = h.database_spec(0);
    create(h, p, &spec).await;
    let caps = p.capabilities();
    let grown = spec.size.with(
        steward_model::Resource::Disk,
        (spec.size.disk_bytes + (100 << 20)) as f64,
    );
    match caps.disk_grow {
        Change::Unsupported => {
            assert_kind(
                h,
                "disk grow without support",
                p.resize(&spec.name, grown).await,
                &[ErrorKind::Permanent, ErrorKind::Refused],
            );
            return;
        }
        Change::Live | Change::Restart => {
            let outcome = p
                .resize(&spec.name, grown)
                .await
                .unwrap_or_else(|e| panic!("{}: disk grow failed: {e}", h.name()));
            if outcome != ResizeOutcome::PendingRestart {
                let m = must_list(h, p, &spec.name).await;
                assert_eq!(
                    m.size.disk_bytes,
                    grown.disk_bytes,
                    "{}: disk after grow",
                    h.name()
                );
            }
        }
    }
    if caps.disk_shrink == Change::Unsupported {
        let shrunk = spec.size.with(
            steward_model::Resource::Disk,
            (spec.size.disk_bytes / 2) as f64,
        );
        assert_kind(
            h,
            "disk shrink",
            p.resize(&spec.name, shrunk).await,
            &[ErrorKind::Permanent, ErrorKind::Refused],
        );
        let m = must_list(h, p, &spec.name).await;
        assert_eq!(
            m.size.disk_bytes,
            grown.disk_bytes,
            "{}: a refused shrink changed the disk",
            h.name()
        );
    }
}

async fn fence_is_idempotent(h: &mut dyn Harness, p: &dyn Platform) {
    let spec = h.database_spec(0);
    create(h, p, &spec).await;
    p.fence(&spec.name)
        .await
        .unwrap_or_else(|e| panic!("{}: fence failed: {e}", h.name()));
    // Kubernetes deletes the pod: a fenced member may vanish from the list, which also fences.
    if let Some(m) = listed(p, &spec.name).await {
        assert_ne!(
            m.state,
            PlatformState::Running,
            "{}: fenced member still running",
            h.name()
        );
        assert_ne!(
            m.state,
            PlatformState::Paused,
            "{}: a paused member is not fenced",
            h.name()
        );
    }
    p.fence(&spec.name)
        .await
        .unwrap_or_else(|e| panic!("{}: fencing again failed: {e}", h.name()));
    let usage = p.usage().await.expect("usage");
    let running = usage
        .get(&spec.name)
        .and_then(|u| u.cpu_used)
        .unwrap_or(0.0);
    assert!(
        running <= 0.0,
        "{}: fenced member still uses {running} vCPU",
        h.name()
    );
}

async fn remove_forgets(h: &mut dyn Harness, p: &dyn Platform) {
    let keep = h.database_spec(0);
    create(h, p, &keep).await;
    p.fence(&keep.name).await.expect("fence");
    p.remove(&keep.name, false)
        .await
        .unwrap_or_else(|e| panic!("{}: remove failed: {e}", h.name()));
    assert!(
        listed(p, &keep.name).await.is_none(),
        "{}: removed member still listed",
        h.name()
    );
    assert_kind(
        h,
        "remove twice",
        p.remove(&keep.name, false).await,
        &[ErrorKind::NotFound],
    );
    if let Some(exists) = h.data_exists(&keep.name).await {
        assert!(
            exists,
            "{}: data deleted although delete_data was false",
            h.name()
        );
    }
    let drop = h.database_spec(1);
    create(h, p, &drop).await;
    p.fence(&drop.name).await.expect("fence");
    p.remove(&drop.name, true)
        .await
        .unwrap_or_else(|e| panic!("{}: remove with data failed: {e}", h.name()));
    assert!(
        listed(p, &drop.name).await.is_none(),
        "{}: removed member still listed",
        h.name()
    );
    if let Some(exists) = h.data_exists(&drop.name).await {
        assert!(
            !exists,
            "{}: data kept although delete_data was true",
            h.name()
        );
    }
}

async fn unknown_is_not_found(h: &mut dyn Harness, p: &dyn Platform) {
    let spec = h.database_spec(0);
    let ghost = format!("{}-never-created", spec.name);
    assert_kind(
        h,
        "resize unknown",
        p.resize(&ghost, spec.size).await,
        &[ErrorKind::NotFound],
    );
    assert_kind(
        h,
        "fence unknown",
        p.fence(&ghost).await,
        &[ErrorKind::NotFound],
    );
    assert_kind(
        h,
        "remove unknown",
        p.remove(&ghost, false).await,
        &[ErrorKind::NotFound],
    );
    assert!(
        listed(p, &ghost).await.is_none(),
        "{}: an unknown name is listed",
        h.name()
    );
}

async fn usage_of_running_members(h: &mut dyn Harness, p: &dyn Platform) {
    let a = h.database_spec(0);
    create(h, p, &a).await;
    h.member_ready(&a.name).await;
    let usage: BTreeMap<_, _> = p
        .usage()
        .await
        .unwrap_or_else(|e| panic!("{}: usage failed: {e}", h.name()));
    let u = usage
        .get(&a.name)
        .unwrap_or_else(|| panic!("{}: no usage for running {}", h.name(), a.name));
    assert!(
        u.cpu_used.is_some() || u.memory_used.is_some(),
        "{}: usage without a figure: {u:?}",
        h.name()
    );
    if let Some(cpu) = u.cpu_used {
        assert!(
            cpu.is_finite() && cpu >= 0.0,
            "{}: cpu_used {cpu}",
            h.name()
        );
    }
    if let Some(mem) = u.memory_used {
        assert!(
            mem <= a.size.memory_bytes,
            "{}: memory_used {mem} above the limit {}",
            h.name(),
            a.size.memory_bytes
        );
    }
    for name in usage.keys() {
        assert!(
            listed(p, name).await.is_some(),
            "{}: usage for {name}, which is not listed",
            h.name()
        );
    }
}

async fn foreign_is_untouched(h: &mut dyn Harness, p: &dyn Platform) {
    let spec = h.database_spec(0);
    create(h, p, &spec).await;
    let Some(foreign) = h.add_foreign().await else {
        eprintln!("{}: cannot add a foreign resource, check skipped", h.name());
        return;
    };
    assert!(
        listed(p, &foreign).await.is_none(),
        "{}: foreign {foreign} is listed",
        h.name()
    );
    assert!(
        !p.usage().await.expect("usage").contains_key(&foreign),
        "{}: usage of foreign {foreign}",
        h.name()
    );
    assert_kind(
        h,
        "resize foreign",
        p.resize(&foreign, h.grown_size(spec.size)).await,
        &[ErrorKind::NotFound],
    );
    assert_kind(
        h,
        "fence foreign",
        p.fence(&foreign).await,
        &[ErrorKind::NotFound],
    );
    assert_kind(
        h,
        "remove foreign",
        p.remove(&foreign, true).await,
        &[ErrorKind::NotFound],
    );
    assert!(
        h.foreign_intact(&foreign).await,
        "{}: foreign {foreign} was touched",
        h.name()
    );
    // The foreign resource does not take a name from the members either.
    assert!(
        listed(p, &spec.name).await.is_some(),
        "{}: member lost beside a foreign resource",
        h.name()
    );
}

async fn placement_spreads_roles(h: &mut dyn Harness, p: &dyn Platform) {
    let Some(hosts) = h.database_hosts() else {
        eprintln!(
            "{}: placement is not decided by create, check skipped",
            h.name()
        );
        return;
    };
    let mut used = Vec::new();
    for i in 0..hosts {
        let spec = h.database_spec(i);
        let m = create(h, p, &spec).await;
        assert!(
            !used.contains(&m.host),
            "{}: two database members on host {}",
            h.name(),
            m.host
        );
        used.push(m.host);
    }
    let extra = h.database_spec(hosts);
    let e = assert_kind(
        h,
        "create with every host taken",
        p.create(&extra).await,
        &[ErrorKind::Refused],
    );
    assert!(
        e.message.contains("host"),
        "{}: refusal does not say why: {e}",
        h.name()
    );
    assert!(
        listed(p, &extra.name).await.is_none(),
        "{}: refused member is listed",
        h.name()
    );
    // Freeing a host makes room again.
    let first = h.database_spec(0);
    p.fence(&first.name).await.expect("fence");
    p.remove(&first.name, true).await.expect("remove");
    let m = create(h, p, &extra).await;
    assert_eq!(m.host, used[0], "{}: the freed host was not used", h.name());
}
