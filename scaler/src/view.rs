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

    /// [`Self::members`], borrowed: the scaler asks it on every observation, for every role.
    pub(crate) fn names(&self, role: Role) -> Vec<&str> {
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

    /// Whether every member of `role` whose size is known has a disk of `disk_bytes`.
    pub fn disks_are(&self, role: Role, disk_bytes: u64) -> bool {
        self.names(role)
            .into_iter()
            .filter_map(|n| self.size_of(n))
            .all(|s| s.disk_bytes == disk_bytes)
    }

    /// A member's size: the platform's figure, else the observation's.
    pub fn size_of(&self, name: &str) -> Option<Size> {
        self.platform_member(name)
            .map(|m| m.size)
            .or_else(|| self.observed(name).and_then(|m| m.size))
    }

    /// The size most members of `role` have; on a tie, the larger (by memory, then CPU), so a
    /// half-done grow is judged against the size it is heading for. `None` with no known size.
    pub fn role_size(&self, role: Role) -> Option<RoleSize> {
        let sizes: Vec<Size> = self
            .names(role)
            .into_iter()
            .filter_map(|n| self.size_of(n))
            .collect();
        let mut best: Option<(usize, Size)> = None;
        for s in &sizes {
            let n = sizes.iter().filter(|o| same_size(o, s)).count();
            let better = match best {
                None => true,
                Some((bn, b)) => {
                    n > bn || n == bn && (s.memory_bytes, s.cpus) > (b.memory_bytes, b.cpus)
                }
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

    /// One figure of every observed member of `role`, in name order.
    pub fn figures(
        &self,
        role: Role,
        pick: impl Fn(&MemberObservation) -> Option<Figure>,
    ) -> Vec<Option<Figure>> {
        let mut members: Vec<&MemberObservation> = self.observation.members_of(role).collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members.into_iter().map(pick).collect()
    }
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
}
