//! What is being sized: roles, resources, and a member's size.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fixed::Fixed;

/// The two kinds of member Steward sizes. Members of one role share one size (DESIGN.md 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A PostgreSQL instance run by Patroni (primary or replica).
    Database,
    /// An HAProxy load balancer in front of the databases.
    Balancer,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Database, Role::Balancer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Database => "database",
            Role::Balancer => "balancer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "database" => Ok(Role::Database),
            "balancer" => Ok(Role::Balancer),
            other => Err(format!(
                "unknown role `{other}` (expected `database` or `balancer`)"
            )),
        }
    }
}

/// A resource a member is given. Units: CPU in vCPUs, memory and disk in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
    Memory,
    Disk,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Disk];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Disk => "disk",
        }
    }

    /// The unit amounts of this resource are counted in.
    pub fn unit(self) -> &'static str {
        match self {
            Resource::Cpu => "vCPU",
            Resource::Memory | Resource::Disk => "bytes",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Resource::Cpu),
            "memory" | "mem" | "ram" => Ok(Resource::Memory),
            "disk" => Ok(Resource::Disk),
            other => Err(format!(
                "unknown resource `{other}` (expected `cpu`, `memory` or `disk`)"
            )),
        }
    }
}

/// The size of one member.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Size {
    /// vCPUs (fractions allowed: Docker `--cpus 1.5`).
    pub cpus: f64,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Data disk size in bytes (0 when the platform has no resizable disk for the member).
    pub disk_bytes: u64,
}

impl Size {
    /// The amount of one resource, in its unit (see [`Resource::unit`]).
    pub fn get(&self, resource: Resource) -> f64 {
        match resource {
            Resource::Cpu => self.cpus,
            Resource::Memory => self.memory_bytes as f64,
            Resource::Disk => self.disk_bytes as f64,
        }
    }

    /// A copy with one resource set to `amount` (in its unit; bytes are rounded).
    pub fn with(mut self, resource: Resource, amount: f64) -> Self {
        match resource {
            Resource::Cpu => self.cpus = amount,
            Resource::Memory => self.memory_bytes = amount.round().max(0.0) as u64,
            Resource::Disk => self.disk_bytes = amount.round().max(0.0) as u64,
        }
        self
    }
}

/// Formats an amount of a resource for people: `1.5 vCPU`, `2.0 GiB`.
pub fn human_amount(resource: Resource, amount: f64) -> String {
    Amount(resource, amount).to_string()
}

/// Formats bytes with a binary unit: `512.0 MiB`, `2.0 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    Bytes(bytes).to_string()
}

/// [`human_amount`]'s text, written straight into the sentence it is part of: the policies
/// write a few such figures into every decision on every observation, and a `String` each
/// was a tenth of a fleet's allocations (benches/fleet.rs). Formatting options are ignored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Amount(pub Resource, pub f64);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Resource::Cpu => write!(f, "{:.2} vCPU", Fixed(self.1)),
            Resource::Memory | Resource::Disk => Bytes(self.1).fmt(f),
        }
    }
}

/// [`human_bytes`]'s text, written where it is needed (see [`Amount`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bytes(pub f64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0;
        let mut unit = 0;
        while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{:.0} B", Fixed(v))
        } else {
            write!(f, "{:.1} {}", Fixed(v), UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_resources_parse_their_display() {
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>().unwrap(), r);
        }
        for r in Resource::ALL {
            assert_eq!(r.to_string().parse::<Resource>().unwrap(), r);
        }
        assert!("primary".parse::<Role>().unwrap_err().contains("database"));
    }

    #[test]
    fn human_bytes_picks_a_binary_unit() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_amount(Resource::Cpu, 1.5), "1.50 vCPU");
        assert_eq!(human_amount(Resource::Memory, 1536.0 * 1024.0), "1.5 MiB");
        assert_eq!(format!("[{}]", Amount(Resource::Disk, 3.0)), "[3 B]");
        assert_eq!(human_bytes(2.0 * 1024.0 * 1024.0 * 1024.0), "2.0 GiB");
    }

    #[test]
    fn size_get_with_round_trip() {
        let s = Size {
            cpus: 2.0,
            memory_bytes: 1 << 30,
            disk_bytes: 10 << 30,
        };
        for r in Resource::ALL {
            assert_eq!(s.with(r, s.get(r)), s);
        }
    }
}
