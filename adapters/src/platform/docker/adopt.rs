//! Adoption: containers Steward did not create but may manage (issue 15).
//!
//! An operator who already runs Patroni names the containers Steward may look after, in
//! `[[platform.docker.adopt]]` rules, each either
//! - explicit: one `container` by name, running the Patroni member `member` (default: the
//!   container's name), or
//! - a selector: every container carrying a `label` the deployment already has (`key=value`,
//!   or `key` for any value; a Compose project is `com.docker.compose.project=NAME`), the member
//!   name taken from `member_label` (default: the container's name).
//!
//! An adopted member is listed, resized live, fenced and replaced like an owned one; its
//! replacement is made from the role's template and carries Steward's labels from birth. What
//! differs is the end: Steward never deletes what it did not create. Unless the rule says
//! `delete_data = true`, "removing" an adopted member stops it and renames it
//! `<name>.retired` ([`RETIRED_SUFFIX`]); its container and data stay where they were, and the
//! log says where (see `DockerPlatform::remove`). Retired containers are never matched again.
//!
//! What it is not: a way to take containers of another cluster. A container carrying Steward's
//! cluster label is owned (by that label's cluster), never adopted.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;
use steward_model::{ConfigErrors, Role};

use super::{HostSpec, FENCED_SUFFIX};

/// Appended to an adopted container's name when Steward is done with it and keeps its data.
pub const RETIRED_SUFFIX: &str = ".retired";

/// `[[platform.docker.adopt]]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdopt {
    /// Explicit: the container's name.
    #[serde(default)]
    pub container: Option<String>,
    /// Explicit: the Patroni member it runs (default: the container's name).
    #[serde(default)]
    pub member: Option<String>,
    /// Selector: `key=value` (or `key`, any value) of a label the containers carry.
    #[serde(default)]
    pub label: Option<String>,
    /// Selector: the label holding the Patroni member name (default: the container's name).
    #[serde(default)]
    pub member_label: Option<String>,
    /// Only on this engine (a `hosts[].name`); default: every engine.
    #[serde(default)]
    pub host: Option<String>,
    /// `database` (default) or `balancer`.
    #[serde(default)]
    pub role: Option<String>,
    /// The member's address, when neither its Patroni environment
    /// (`PATRONI_POSTGRESQL_CONNECT_ADDRESS`) nor its Docker network tells it.
    #[serde(default)]
    pub address: Option<String>,
    /// Whether removing a member of this rule deletes its container and anonymous volumes
    /// (default false: stopped, renamed `<name>.retired`, everything kept). Bind-mounted host
    /// folders are never deleted.
    #[serde(default)]
    pub delete_data: bool,
}

/// Which containers a rule takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Container {
        container: String,
        member: String,
    },
    Label {
        key: String,
        value: Option<String>,
        member_label: Option<String>,
    },
}

/// A validated adoption rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adopt {
    pub selector: Selector,
    /// Index into the platform's engines.
    pub host: Option<usize>,
    pub role: Role,
    pub address: Option<IpAddr>,
    pub delete_data: bool,
}

impl RawAdopt {
    pub fn validate(&self, hosts: &[HostSpec], errors: &mut ConfigErrors) -> Adopt {
        let selector = match (&self.container, &self.label) {
            (Some(c), None) => {
                if self.member_label.is_some() {
                    errors.push(
                        "member_label",
                        "goes with `label`; a `container` has `member`",
                    );
                }
                let member = self.member.clone().unwrap_or_else(|| c.clone());
                for (field, v) in [("container", c), ("member", &member)] {
                    if !super::valid_name(v) {
                        errors.push(
                            field,
                            format!("`{v}`: use letters, digits, `-`, `_` and `.`"),
                        );
                    }
                }
                Selector::Container {
                    container: c.clone(),
                    member,
                }
            }
            (None, Some(l)) => {
                if self.member.is_some() {
                    errors.push(
                        "member",
                        "goes with `container`; a `label` rule names members by `member_label`",
                    );
                }
                let (key, value) = match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (l.clone(), None),
                };
                if key.trim().is_empty() {
                    errors.push("label", format!("`{l}`: expected key=value or key"));
                }
                Selector::Label {
                    key,
                    value,
                    member_label: self.member_label.clone(),
                }
            }
            (Some(_), Some(_)) => {
                errors.push("label", "give `container` or `label`, not both");
                Selector::Container {
                    container: String::new(),
                    member: String::new(),
                }
            }
            (None, None) => {
                errors.push(
                    "container",
                    "name a `container` (one member) or a `label` (every container carrying it)",
                );
                Selector::Container {
                    container: String::new(),
                    member: String::new(),
                }
            }
        };
        let host = self
            .host
            .as_ref()
            .and_then(|h| match hosts.iter().position(|s| &s.name == h) {
                Some(i) => Some(i),
                None => {
                    let known: Vec<&str> = hosts.iter().map(|s| s.name.as_str()).collect();
                    errors.push("host", format!("`{h}` is not one of the hosts {known:?}"));
                    None
                }
            });
        let role = super::super::adopted_role(self.role.as_deref(), errors);
        let address = self
            .address
            .as_ref()
            .and_then(|a| match a.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errors.push("address", format!("`{a}` is not an IP address"));
                    None
                }
            });
        Adopt {
            selector,
            host,
            role,
            address,
            delete_data: self.delete_data,
        }
    }
}

/// The name a container had before Steward fenced it (`pg2.fenced` -> `pg2`); `None` for a
/// retired one, which is never adopted again.
pub fn base_name(name: &str) -> Option<&str> {
    let name = name.trim_start_matches('/');
    if name.ends_with(RETIRED_SUFFIX) {
        return None;
    }
    Some(name.strip_suffix(FENCED_SUFFIX).unwrap_or(name))
}

/// The first rule that takes the container `name` on engine `host` with these labels, and the
/// member it runs. A container with Steward's cluster label is never adopted (it is owned).
pub fn adopted_by(
    rules: &[Adopt],
    host: usize,
    name: &str,
    labels: &HashMap<String, String>,
) -> Option<(usize, String)> {
    if labels.contains_key(steward_model::ports::LABEL_CLUSTER) {
        return None;
    }
    let base = base_name(name)?;
    rules.iter().enumerate().find_map(|(i, r)| {
        if r.host.is_some_and(|h| h != host) {
            return None;
        }
        match &r.selector {
            Selector::Container { container, member } => {
                (container == base).then(|| (i, member.clone()))
            }
            Selector::Label {
                key,
                value,
                member_label,
            } => {
                let v = labels.get(key)?;
                if value.as_ref().is_some_and(|want| want != v) {
                    return None;
                }
                let member = match member_label {
                    Some(l) => labels.get(l)?.clone(),
                    None => base.to_string(),
                };
                super::valid_name(&member).then_some((i, member))
            }
        }
    })
}

/// The address an adopted member serves on, from its environment (what Patroni advertises),
/// else its first Docker network address.
pub fn address_of(env: &[String], networks: &[String]) -> Option<String> {
    const KEYS: [&str; 2] = [
        "PATRONI_POSTGRESQL_CONNECT_ADDRESS=",
        "PATRONI_RESTAPI_CONNECT_ADDRESS=",
    ];
    for key in KEYS {
        if let Some(v) = env.iter().find_map(|e| e.strip_prefix(key)) {
            let host = match v.rsplit_once(':') {
                Some((h, _)) => h,
                None => v,
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.parse::<IpAddr>().is_ok() {
                return Some(host.to_string());
            }
        }
    }
    networks
        .iter()
        .find(|a| a.parse::<IpAddr>().is_ok())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::docker::Endpoint;

    fn hosts() -> Vec<HostSpec> {
        ["a", "b"]
            .into_iter()
            .map(|n| HostSpec {
                name: n.into(),
                endpoint: Endpoint::Unix("/var/run/docker.sock".into()),
            })
            .collect()
    }

    fn rule(raw: RawAdopt) -> Adopt {
        let mut errors = ConfigErrors::default();
        let r = raw.validate(&hosts(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        r
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_explicit_rule_takes_its_container_fenced_or_not_never_retired() {
        let rules = [rule(RawAdopt {
            container: Some("pgdb-1".into()),
            member: Some("pg1".into()),
            ..Default::default()
        })];
        let none = labels(&[]);
        assert_eq!(
            adopted_by(&rules, 0, "/pgdb-1", &none),
            Some((0, "pg1".into()))
        );
        assert_eq!(
            adopted_by(&rules, 1, "pgdb-1.fenced", &none),
            Some((0, "pg1".into()))
        );
        assert_eq!(adopted_by(&rules, 0, "pgdb-1.retired", &none), None);
        // A similar name is not the same container.
        assert_eq!(adopted_by(&rules, 0, "pgdb-10", &none), None);
        assert_eq!(adopted_by(&rules, 0, "old-pgdb-1", &none), None);
    }

    #[test]
    fn a_label_rule_takes_what_carries_the_label_and_names_members_by_another() {
        let rules = [rule(RawAdopt {
            label: Some("com.docker.compose.project=pgprod".into()),
            member_label: Some("patroni.name".into()),
            host: Some("b".into()),
            ..Default::default()
        })];
        let ours = labels(&[
            ("com.docker.compose.project", "pgprod"),
            ("patroni.name", "pg2"),
        ]);
        assert_eq!(
            adopted_by(&rules, 1, "pgprod-db-2", &ours),
            Some((0, "pg2".into()))
        );
        // Another engine, another project, no member label: not taken.
        assert_eq!(adopted_by(&rules, 0, "pgprod-db-2", &ours), None);
        let other = labels(&[
            ("com.docker.compose.project", "pgtest"),
            ("patroni.name", "pg2"),
        ]);
        assert_eq!(adopted_by(&rules, 1, "pgtest-db-2", &other), None);
        let unnamed = labels(&[("com.docker.compose.project", "pgprod")]);
        assert_eq!(adopted_by(&rules, 1, "pgprod-db-2", &unnamed), None);
        // Steward's own containers are owned, never adopted.
        let mut owned = ours.clone();
        owned.insert(steward_model::ports::LABEL_CLUSTER.into(), "prod".into());
        assert_eq!(adopted_by(&rules, 1, "pg-4", &owned), None);
    }

    #[test]
    fn every_bad_rule_is_told_with_its_field() {
        let mut errors = ConfigErrors::default();
        for raw in [
            RawAdopt::default(),
            RawAdopt {
                container: Some("a".into()),
                label: Some("k=v".into()),
                ..Default::default()
            },
            RawAdopt {
                container: Some("a b".into()),
                host: Some("c".into()),
                role: Some("cache".into()),
                address: Some("nowhere".into()),
                member_label: Some("x".into()),
                ..Default::default()
            },
            RawAdopt {
                label: Some("=v".into()),
                member: Some("pg1".into()),
                ..Default::default()
            },
        ] {
            raw.validate(&hosts(), &mut errors);
        }
        let text = format!("{errors:?}");
        for want in [
            "name a `container`",
            "not both",
            "`a b`",
            "`c` is not one of the hosts",
            "`cache`",
            "`nowhere` is not an IP address",
            "goes with `label`",
            "`=v`",
            "goes with `container`",
        ] {
            assert!(text.contains(want), "no `{want}` in {text}");
        }
    }

    #[test]
    fn the_address_is_what_patroni_advertises_else_the_network_s() {
        let env = [
            "PATRONI_NAME=pg1".to_string(),
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS=192.0.2.10:5432".to_string(),
        ];
        assert_eq!(address_of(&env, &[]).as_deref(), Some("192.0.2.10"));
        let named = ["PATRONI_POSTGRESQL_CONNECT_ADDRESS=db1.example:5432".to_string()];
        assert_eq!(
            address_of(&named, &["192.0.2.20".to_string()]).as_deref(),
            Some("192.0.2.20")
        );
        assert_eq!(address_of(&[], &[]), None);
    }
}
