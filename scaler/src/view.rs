//! What the scaler sees: one observation joined with the platform's member list, and the
//! questions a plan asks of it (a role's size, whether a member is healthy, who leads).
//!
//! What it is not: a judge of health for repairs (the repairer has its own, stricter, state
//! machine). Here "healthy" only means "good enough to go on with a rollout".

use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::observation::{
    Figure, Freshness, MemberObservation, PatroniRole, PlatformState,
};
use steward_model::ports::platform::{Capabilities, PlatformMember};
use steward_model::{Role, Size};

/// One observation plus what the platform says: the input of [`crate::Event::Observed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub observation: steward_model::observation::Observation,
    /// The platform's members (sizes are authoritative here).
    pub platform: Vec<PlatformMember>,
    pub capabilities: Capabilities,
}

/// Two sizes are the same when CPU agrees to a millicore and bytes agree exactly.
pub fn same_size(a: &Size, b: &Size) -> bool {
    (a.cpus - b.cpus).abs() < 1e-3
        && a.memory_bytes == b.memory_bytes
        && a.disk_bytes == b.disk_bytes
}

/// A role's size: the size most of its members have, and whether all members agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoleSize {
    pub size: Size,
    /// Some members have another size (mid-rollout, a failed plan, or a change from outside).
    pub mixed: bool,
}

/// Whether `a` is the larger of two sizes that are not the same: by memory, then CPU, then disk.
fn larger(a: &Size, b: &Size) -> bool {
    (a.memory_bytes, a.cpus, a.disk_bytes) > (b.memory_bytes, b.cpus, b.disk_bytes)
}

impl Snapshot {
    fn observed(&self, name: &str) -> Option<&MemberObservation> {
        self.observation.members.iter().find(|m| m.name == name)
    }

    fn platform_member(&self, name: &str) -> Option<&PlatformMember> {
        self.platform.iter().find(|m| m.name == name)
    }

    /// The members of a role, seen by either source, sorted by name.
    pub fn members(&self, role: Role) -> Vec<String> {
        self.names(role).into_iter().map(str::to_string).collect()
    }

    /// [`Self::members`], borrowed.
    fn names(&self, role: Role) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .observation
            .members_of(role)
            .map(|m| m.name.as_str())
            .chain(
                self.platform
                    .iter()
                    .filter(|m| m.role == role)
                    .map(|m| m.name.as_str()),
            )
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// How many members `role` has, seen by either source: [`Self::members`]' count.
    pub(crate) fn count(&self, role: Role) -> usize {
        let listed = self.platform.iter().filter(|m| m.role == role).count();
        listed + self.unlisted(role).count()
    }

    /// The observed members of `role` the platform does not list under it.
    fn unlisted(&self, role: Role) -> impl Iterator<Item = &MemberObservation> {
        self.observation.members_of(role).filter(move |o| {
            !self
                .platform
                .iter()
                .any(|m| m.role == role && m.name == o.name)
        })
    }

    /// The known size of each member of `role` ([`Self::members`], in another order): each the
    /// platform lists under the role, then each observed one it does not. Without the sorted
    /// list of names: the scaler asks on every observation, for every role (a fleet of 10,000
    /// spent a tenth of its scaler phase sorting names). Names are unique in each source (the
    /// platform's, Patroni's).
    fn sizes(&self, role: Role) -> impl Iterator<Item = Size> + '_ {
        let listed = self.platform.iter().filter(move |m| m.role == role);
        listed
            .map(|m| m.size)
            .chain(self.unlisted(role).filter_map(|o| self.size_of(&o.name)))
    }

    /// Whether every member of `role` whose size is known has a disk of `disk_bytes`.
    pub fn disks_are(&self, role: Role, disk_bytes: u64) -> bool {
        self.sizes(role).all(|s| s.disk_bytes == disk_bytes)
    }

    /// A member's size: the platform's figure, else the observation's.
    pub fn size_of(&self, name: &str) -> Option<Size> {
        self.platform_member(name)
            .map(|m| m.size)
            .or_else(|| self.observed(name).and_then(|m| m.size))
    }

    /// The size most members of `role` have; on a tie, the larger (by memory, then CPU, then
    /// disk), so a half-done grow is judged against the size it is heading for, whatever order
    /// the members come in. `None` with no known size.
    pub fn role_size(&self, role: Role) -> Option<RoleSize> {
        let sizes: Vec<Size> = self.sizes(role).collect();
        let mut best: Option<(usize, Size)> = None;
        for s in &sizes {
            let n = sizes.iter().filter(|o| same_size(o, s)).count();
            let better = match best {
                None => true,
                Some((bn, b)) => n > bn || n == bn && larger(s, &b),
            };
            if better {
                best = Some((n, *s));
            }
        }
        best.map(|(n, size)| RoleSize {
            size,
            mixed: n < sizes.len(),
        })
    }

    /// The member holding the leader lock, if any is observed.
    pub fn leader(&self) -> Option<&str> {
        self.observation
            .members
            .iter()
            .find(|m| {
                matches!(
                    m.patroni_role,
                    Some(PatroniRole::Leader | PatroniRole::StandbyLeader)
                )
            })
            .map(|m| m.name.as_str())
    }

    pub fn is_leader(&self, name: &str) -> bool {
        self.leader() == Some(name)
    }

    fn platform_state(&self, name: &str) -> Option<PlatformState> {
        self.platform_member(name)
            .map(|m| m.state)
            .or_else(|| self.observed(name).and_then(|m| m.platform_state))
    }

    /// Good enough to go on with a rollout: running on the platform, Patroni running, and for a
    /// database replica, streaming with a fresh lag under `max_lag` bytes. A balancer only needs
    /// to run.
    pub fn healthy(&self, name: &str, max_lag: f64, stale_after: Duration) -> bool {
        if self.platform_state(name) != Some(PlatformState::Running) {
            return false;
        }
        let Some(m) = self.observed(name) else {
            return false;
        };
        if m.role == Some(Role::Balancer) {
            return true;
        }
        let patroni_ok = matches!(m.patroni_state.as_deref(), Some("running" | "streaming"));
        if !patroni_ok {
            return false;
        }
        if self.is_leader(name) {
            return true;
        }
        let lag_ok = matches!(
            Figure::freshness(m.lag_bytes.as_ref(), self.observation.at, stale_after),
            Freshness::Fresh(lag) if lag <= max_lag
        );
        m.streaming == Some(true) && lag_ok
    }

    /// Stopped: fenced or exited on the platform, or gone from it.
    pub fn stopped(&self, name: &str) -> bool {
        match self.platform_member(name) {
            None => self
                .observed(name)
                .is_none_or(|m| m.in_platform == Some(false)),
            Some(m) => matches!(m.state, PlatformState::Fenced | PlatformState::Exited),
        }
    }

    /// Gone from the platform (and not observed as a platform member either).
    pub fn gone(&self, name: &str) -> bool {
        self.platform_member(name).is_none()
            && self
                .observed(name)
                .is_none_or(|m| m.in_platform != Some(true))
    }

    /// Database members that are healthy (leader included), by name.
    pub fn healthy_databases(&self, max_lag: f64, stale_after: Duration) -> Vec<String> {
        self.members(Role::Database)
            .into_iter()
            .filter(|n| self.healthy(n, max_lag, stale_after))
            .collect()
    }

    /// The observed members of `role`, in name order: what [`figures`] reads one figure of
    /// each from. Sorted once for all of a role's figures (the scaler reads four).
    pub fn observed_members(&self, role: Role) -> Vec<&MemberObservation> {
        let mut members: Vec<&MemberObservation> = self.observation.members_of(role).collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }
}

/// One figure of each of `members`, in their order.
pub fn figures(
    members: &[&MemberObservation],
    pick: impl Fn(&MemberObservation) -> Option<Figure>,
) -> Vec<Option<Figure>> {
    members.iter().map(|m| pick(m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_model::observation::Observation;
    use steward_model::ports::platform::Change;

    fn snapshot(sizes: &[(&str, f64)]) -> Snapshot {
        let caps = Capabilities {
            cpu: Change::Live,
            cpu_unit: steward_model::ports::CpuUnit::Quota,
            memory: Change::Live,
            disk_grow: Change::Live,
            disk_shrink: Change::Unsupported,
            multi_host: true,
        };
        let platform = sizes
            .iter()
            .map(|(name, cpus)| PlatformMember {
                name: (*name).into(),
                cluster: "c".into(),
                role: Role::Database,
                size: Size {
                    cpus: *cpus,
                    memory_bytes: 1 << 30,
                    disk_bytes: 1 << 34,
                },
                state: PlatformState::Running,
                address: "127.0.0.2".into(),
                host: "h".into(),
                labels: Default::default(),
                created_at: None,
                restart_count: 0,
            })
            .collect();
        Snapshot {
            observation: Observation::default(),
            platform,
            capabilities: caps,
        }
    }

    #[test]
    fn role_size_is_the_majority_and_says_when_mixed() {
        let uniform = snapshot(&[("a", 2.0), ("b", 2.0), ("c", 2.0)]).role_size(Role::Database);
        assert_eq!(uniform.map(|r| (r.size.cpus, r.mixed)), Some((2.0, false)));
        let mixed = snapshot(&[("a", 3.0), ("b", 2.0), ("c", 2.0)]).role_size(Role::Database);
        assert_eq!(mixed.map(|r| (r.size.cpus, r.mixed)), Some((2.0, true)));
        // A tie goes to the larger size: the one a half-done grow is heading for.
        let tie = snapshot(&[("a", 3.0), ("b", 2.0)]).role_size(Role::Database);
        assert_eq!(tie.map(|r| (r.size.cpus, r.mixed)), Some((3.0, true)));
        assert_eq!(snapshot(&[]).role_size(Role::Database), None);
    }

    #[test]
    fn a_member_without_an_observation_is_not_healthy() {
        let s = snapshot(&[("a", 2.0)]);
        assert!(!s.healthy("a", 1.0, Duration::from_secs(60)));
        assert!(!s.stopped("a"));
        assert!(s.gone("z"));
    }

    /// `count`, `disks_are` and `role_size` go without the sorted names: they must answer as
    /// the names would, for every way three members can be listed and observed (by either
    /// source, under either role, or by Patroni without a role), of two sizes.
    #[test]
    fn sizes_answer_as_the_sorted_names_do() {
        // Two sizes alike but for their disks: a tie is settled by the disk alone.
        let size = |big: bool| Size {
            cpus: 2.0,
            memory_bytes: 1 << 30,
            disk_bytes: if big { 1 << 35 } else { 1 << 34 },
        };
        let roles = [None, Some(Role::Database), Some(Role::Balancer)];
        let mut cases = 0;
        // Per member: how the platform lists it (0 not, 1 database, 2 balancer), how Patroni
        // sees it (0 not, then a role or none), which size each source gives.
        for code in 0..(3 * 4 * 4_usize).pow(3) {
            let mut s = snapshot(&[]);
            let mut c = code;
            for name in ["m1", "m2", "m3"] {
                let (listed, seen, sizes) = (c % 3, (c / 3) % 4, (c / 12) % 4);
                c /= 48;
                if listed > 0 {
                    let mut m = snapshot(&[(name, 0.0)]).platform.remove(0);
                    m.role = roles[listed].expect("a listed role");
                    m.size = size(sizes & 1 == 1);
                    s.platform.push(m);
                }
                if seen > 0 {
                    s.observation.members.push(MemberObservation {
                        name: name.into(),
                        role: roles[seen - 1],
                        size: (sizes & 2 == 2).then(|| size(listed == 0)),
                        ..MemberObservation::default()
                    });
                }
            }
            for role in Role::ALL {
                let names = s.names(role);
                let known: Vec<Size> = names.iter().filter_map(|n| s.size_of(n)).collect();
                assert_eq!(s.count(role), names.len(), "{s:?}");
                for disk in [1 << 34, 1 << 35] {
                    let want = known.iter().all(|z| z.disk_bytes == disk);
                    assert_eq!(s.disks_are(role, disk), want, "{s:?}");
                }
                // The majority, the larger on a tie, in whichever order the sizes come.
                let majority = |sizes: &mut dyn Iterator<Item = &Size>| {
                    let sizes: Vec<&Size> = sizes.collect();
                    let count = |z: &Size| sizes.iter().filter(|o| same_size(o, z)).count();
                    let top = sizes.iter().map(|z| count(z)).max()?;
                    let best = sizes.iter().filter(|z| count(z) == top).fold(
                        None,
                        |b: Option<&Size>, z| match b {
                            Some(b) if !larger(z, b) => Some(b),
                            _ => Some(z),
                        },
                    )?;
                    Some((*best, top < sizes.len()))
                };
                let got = s.role_size(role).map(|r| (r.size, r.mixed));
                assert_eq!(got, majority(&mut known.iter()), "{s:?}");
                assert_eq!(got, majority(&mut known.iter().rev()), "{s:?}");
                let mut sorted = s.sizes(role).collect::<Vec<_>>();
                let mut want = known.clone();
                let key = |z: &Size| (z.memory_bytes, z.disk_bytes, (z.cpus * 1e3) as u64);
                sorted.sort_by_key(key);
                want.sort_by_key(key);
                assert_eq!(sorted, want, "{s:?}");
                cases += 1;
            }
        }
        assert_eq!(cases, 48_usize.pow(3) * Role::ALL.len());
    }
}
