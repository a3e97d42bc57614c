//! Builders for observations and a driver that plays the executor's part.

use steward_coordinator::Coordinator;
use steward_model::observation::{
    Figure, MemberObservation, Observation, PatroniRole, PlatformState, Source,
};
use steward_model::{Role, Size, Timestamp};
use steward_repairer::{
    ActionError, Command, CommandKind, Event, OperationId, RepairConfig, Repairer,
};

pub const CLUSTER: &str = "demo";

/// Seconds after a fixed epoch, so failures print readable times.
pub fn t(s: i64) -> Timestamp {
    Timestamp::from_secs(1_795_000_000 + s)
}

/// A healthy leader.
pub fn leader(name: &str) -> MemberObservation {
    MemberObservation {
        name: name.into(),
        role: Some(Role::Database),
        patroni_role: Some(PatroniRole::Leader),
        patroni_state: Some("running".into()),
        platform_state: Some(PlatformState::Running),
        timeline: Some(1),
        ..MemberObservation::default()
    }
}

/// A healthy replica, streaming with no lag.
pub fn replica(name: &str) -> MemberObservation {
    MemberObservation {
        name: name.into(),
        role: Some(Role::Database),
        patroni_role: Some(PatroniRole::Replica),
        patroni_state: Some("streaming".into()),
        platform_state: Some(PlatformState::Running),
        streaming: Some(true),
        lag_bytes: Some(Figure::new(0.0, Source::Prometheus, Timestamp::default())),
        timeline: Some(1),
        ..MemberObservation::default()
    }
}

/// A member whose container exited: Patroni has nothing to say about it.
pub fn exited(name: &str) -> MemberObservation {
    MemberObservation {
        name: name.into(),
        role: Some(Role::Database),
        platform_state: Some(PlatformState::Exited),
        ..MemberObservation::default()
    }
}

/// A member the platform runs but whose REST API does not answer.
pub fn silent(name: &str) -> MemberObservation {
    MemberObservation {
        name: name.into(),
        role: Some(Role::Database),
        platform_state: Some(PlatformState::Running),
        ..MemberObservation::default()
    }
}

/// A frozen (paused) member.
pub fn paused(name: &str) -> MemberObservation {
    MemberObservation {
        platform_state: Some(PlatformState::Paused),
        ..silent(name)
    }
}

pub fn with_lag(mut m: MemberObservation, bytes: f64) -> MemberObservation {
    m.lag_bytes = Some(Figure::new(bytes, Source::Prometheus, Timestamp::default()));
    m
}

/// The member's WAL position (written on a leader, received on a replica).
pub fn at_wal(mut m: MemberObservation, position: f64) -> MemberObservation {
    m.wal_position = Some(Figure::new(position, Source::Patroni, Timestamp::default()));
    m
}

pub fn with_full_disk(mut m: MemberObservation) -> MemberObservation {
    m.size = Some(Size {
        cpus: 1.0,
        memory_bytes: 1 << 30,
        disk_bytes: 1000,
    });
    m.disk_used = Some(Figure::new(990.0, Source::Platform, Timestamp::default()));
    m
}

/// A member as the platform lists it: 1 vCPU, 1 GiB, 10 GiB, no labels, no restarts.
pub fn listed(name: &str, state: PlatformState) -> steward_model::ports::platform::PlatformMember {
    steward_model::ports::platform::PlatformMember {
        name: name.into(),
        cluster: CLUSTER.into(),
        role: Role::Database,
        size: Size {
            cpus: 1.0,
            memory_bytes: 1 << 30,
            disk_bytes: 10 << 30,
        },
        state,
        address: "127.0.0.13".into(),
        host: "local".into(),
        labels: Default::default(),
        created_at: None,
        restart_count: 0,
    }
}

/// An observation at `at`; every figure is stamped with `at` (fresh).
pub fn obs(at: Timestamp, members: Vec<MemberObservation>) -> Observation {
    let members = members
        .into_iter()
        .map(|mut m| {
            for f in [&mut m.lag_bytes, &mut m.disk_used, &mut m.wal_position]
                .into_iter()
                .flatten()
            {
                f.at = at;
            }
            m
        })
        .collect();
    Observation {
        at,
        cluster: CLUSTER.into(),
        members,
        notes: Vec::new(),
        slots: Vec::new(),
    }
}

/// The repairer under test plus what a driver would remember: the command in flight and every
/// command seen. It asserts promise 1 on every call: a disruptive command is only ever issued
/// when none is in flight, and never two at once.
pub struct Driver {
    pub repairer: Repairer,
    /// The cluster's coordinator, which a runtime owns beside the repairer.
    pub coordinator: Coordinator,
    pub in_flight: Option<Command>,
    pub log: Vec<(Timestamp, Command)>,
}

impl Driver {
    pub fn new(config: RepairConfig) -> Self {
        Driver {
            coordinator: Coordinator::new(config.guards.clone()),
            repairer: Repairer::new(CLUSTER, config),
            in_flight: None,
            log: Vec::new(),
        }
    }

    pub fn handle(&mut self, event: Event, now: Timestamp) -> Vec<Command> {
        if let Event::ActionDone { op, .. } = &event {
            if self.in_flight.as_ref().is_some_and(|c| c.op == *op) {
                self.in_flight = None;
            }
        }
        let out = self.repairer.handle(event, now, &mut self.coordinator);
        let disruptive: Vec<&Command> = out.iter().filter(|c| c.is_disruptive()).collect();
        assert!(
            disruptive.len() <= 1,
            "two disruptive commands at once: {out:#?}"
        );
        if let Some(c) = disruptive.first() {
            assert!(
                self.in_flight.is_none(),
                "{c:?} issued while {:?} is in flight",
                self.in_flight
            );
            self.in_flight = Some((*c).clone());
        }
        for c in &out {
            self.log.push((now, c.clone()));
        }
        out
    }

    pub fn observe(&mut self, at: Timestamp, members: Vec<MemberObservation>) -> Vec<Command> {
        self.handle(Event::Observed(obs(at, members)), at)
    }

    /// Completes the command in flight with `result`.
    pub fn complete(&mut self, now: Timestamp, result: Result<(), ActionError>) -> Vec<Command> {
        let op: OperationId = self
            .in_flight
            .as_ref()
            .expect("a command in flight")
            .op
            .clone();
        self.handle(Event::ActionDone { op, result }, now)
    }

    /// Acknowledges commands as successful until none is in flight; returns all of them.
    pub fn ack_all(&mut self, now: Timestamp) -> Vec<Command> {
        let mut all = Vec::new();
        while self.in_flight.is_some() {
            all.extend(self.complete(now, Ok(())));
        }
        all
    }

    pub fn in_flight_kind(&self) -> Option<&CommandKind> {
        self.in_flight.as_ref().map(|c| &c.kind)
    }
}

/// The compact form of the disruptive commands: `["drain pg-3", "fence pg-3"]`.
pub fn summary(commands: &[Command]) -> Vec<String> {
    commands.iter().map(|c| c.kind.to_string()).collect()
}
