//! Adoption on libvirt: domains Steward did not define but may manage (issue 15), the same
//! vocabulary as Docker's (`platform::docker::adopt`).
//!
//! An operator who already runs Patroni in VMs names the domains Steward may look after, in
//! `[[platform.libvirt.adopt]]` rules, each either
//! - explicit: one `domain` by name, running the Patroni member `member` (default: the domain's
//!   name), or
//! - a pattern: every domain whose `name` matches a glob (`*` any run of characters, `?` one),
//!   e.g. `pg-*`; the member is the domain's name, or `member` with `{*}` replaced by what the
//!   pattern's one `*` matched (`name = "prod-pg-*"`, `member = "pg-{*}"`: `prod-pg-2` runs
//!   `pg-2`).
//!
//! Optional: `uri` (only on that host, one of `uris`), `role` (`database` by default; the role
//! needs a template, its replacement is made from it), `address` (`{{name}}` is the domain's
//! name; default the role template's address) and `delete_data`.
//!
//! An adopted domain carries no Steward metadata and gets none: it is listed, resized live and
//! fenced (destroyed) like an owned one; its fence is remembered in a separate metadata element
//! ([`FENCED_NS`]) that says nothing about ownership. Unless the rule says `delete_data = true`,
//! "removing" it destroys it (if it runs) and renames it `<name>.retired` ([`RETIRED_SUFFIX`],
//! `virDomainRename`, which needs it shut off), keeping its definition and its disks; a retired
//! domain is never matched again. With `delete_data`, it is undefined: libvirt's undefine never
//! deletes disks, so the disk images stay where they are either way (the log says where).
//!
//! What it is not: a way to take another cluster's domains. A domain carrying Steward's metadata
//! element, of any cluster, is owned (by that cluster), never adopted.

use std::collections::BTreeMap;

use serde::Deserialize;
use steward_model::{ConfigErrors, Role};

use super::{is_safe_name, RoleTemplate};

/// Appended to an adopted domain's name when Steward is done with it and keeps its disks (the
/// same suffix as Docker's retired containers).
pub const RETIRED_SUFFIX: &str = crate::platform::docker::RETIRED_SUFFIX;

/// The XML namespace of the element marking an adopted domain fenced by Steward (a shut-off
/// domain Steward destroyed, as opposed to one that stopped by itself). Not Steward's ownership
/// mark ([`super::METADATA_NS`]): a domain carrying only this one is still adopted.
pub const FENCED_NS: &str = "https://steward.dev/xmlns/fenced/1";

/// `[[platform.libvirt.adopt]]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdopt {
    /// Explicit: the domain's name.
    #[serde(default)]
    pub domain: Option<String>,
    /// The Patroni member it runs. Explicit rule: default the domain's name. Pattern rule: `{*}`
    /// is replaced by what the pattern's one `*` matched; default the domain's name.
    #[serde(default)]
    pub member: Option<String>,
    /// Pattern: a glob over domain names (`*` any run of characters, `?` one), e.g. `pg-*`.
    #[serde(default)]
    pub name: Option<String>,
    /// Only on this host (one of `uris`); default: every host.
    #[serde(default)]
    pub uri: Option<String>,
    /// `database` (default) or `balancer`; the role must have a template.
    #[serde(default)]
    pub role: Option<String>,
    /// The member's address; `{{name}}` is the domain's name. Default: the role template's
    /// `address`, with `{{name}}` the domain's name.
    #[serde(default)]
    pub address: Option<String>,
    /// Whether removing a member of this rule undefines its domain (default false: destroyed,
    /// renamed `<name>.retired`, definition and disks kept). Disks are never deleted: libvirt's
    /// undefine leaves them.
    #[serde(default)]
    pub delete_data: bool,
}

/// Which domains a rule takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Domain {
        domain: String,
        member: String,
    },
    Pattern {
        pattern: String,
        /// The member name, `{*}` standing for what the `*` matched; `None`: the domain's name.
        member: Option<String>,
    },
}

/// A validated adoption rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adopt {
    pub selector: Selector,
    /// Index into the platform's URIs.
    pub host: Option<usize>,
    pub role: Role,
    /// With `{{name}}` for the domain's name.
    pub address: String,
    pub delete_data: bool,
}

impl RawAdopt {
    pub(super) fn validate(
        &self,
        uris: &[String],
        templates: &BTreeMap<Role, RoleTemplate>,
        written: &[Role],
        errors: &mut ConfigErrors,
    ) -> Adopt {
        let selector = match (&self.domain, &self.name) {
            (Some(d), None) => {
                let member = self.member.clone().unwrap_or_else(|| d.clone());
                for (field, v) in [("domain", d), ("member", &member)] {
                    if !is_safe_name(v) {
                        errors.push(
                            field,
                            format!("`{v}`: use letters, digits, `-`, `_` and `.`"),
                        );
                    }
                }
                if d.ends_with(RETIRED_SUFFIX) {
                    errors.push(
                        "domain",
                        format!("`{d}` is a retired domain: Steward is done with it"),
                    );
                }
                Selector::Domain {
                    domain: d.clone(),
                    member,
                }
            }
            (None, Some(p)) => {
                let literal: String = p.chars().filter(|c| !matches!(c, '*' | '?')).collect();
                if literal.is_empty() {
                    errors.push(
                        "name",
                        format!("`{p}` would take every domain: name a fixed part, such as `pg-*`"),
                    );
                } else if !is_safe_name(&literal) {
                    errors.push(
                        "name",
                        format!("`{p}`: use letters, digits, `-`, `_`, `.`, `*` and `?`"),
                    );
                }
                if let Some(m) = &self.member {
                    let stars = p.matches('*').count();
                    if m.contains("{*}") && stars != 1 {
                        errors.push(
                            "member",
                            format!("`{{*}}` needs exactly one `*` in `name` (`{p}` has {stars})"),
                        );
                    }
                    if !m.contains("{*}") {
                        errors.push(
                            "member",
                            format!(
                                "`{m}` would give every domain of the pattern one member name: \
                                 use `{{*}}`, or leave it out (the domain's name)"
                            ),
                        );
                    } else if !is_safe_name(&m.replace("{*}", "x")) {
                        errors.push(
                            "member",
                            format!("`{m}`: use letters, digits, `-`, `_`, `.` and `{{*}}`"),
                        );
                    }
                }
                Selector::Pattern {
                    pattern: p.clone(),
                    member: self.member.clone(),
                }
            }
            (Some(_), Some(_)) => {
                errors.push("name", "give `domain` or `name`, not both");
                Selector::Domain {
                    domain: String::new(),
                    member: String::new(),
                }
            }
            (None, None) => {
                errors.push(
                    "domain",
                    "name a `domain` (one member) or a `name` pattern (every domain matching it)",
                );
                Selector::Domain {
                    domain: String::new(),
                    member: String::new(),
                }
            }
        };
        let host = self
            .uri
            .as_ref()
            .and_then(|u| match uris.iter().position(|s| s == u) {
                Some(i) => Some(i),
                None => {
                    errors.push("uri", format!("`{u}` is not one of the uris {uris:?}"));
                    None
                }
            });
        let role = super::super::adopted_role(self.role.as_deref(), errors);
        let template_address = match templates.get(&role) {
            Some(t) => t.address.clone(),
            None => {
                let role_valid = self
                    .role
                    .as_deref()
                    .is_none_or(|r| r.parse::<Role>().is_ok());
                if role_valid && !written.contains(&role) {
                    errors.push(
                        "role",
                        format!(
                            "there is no `{role}` template: an adopted {role} is replaced from it"
                        ),
                    );
                }
                "{{name}}".to_string()
            }
        };
        let address = match &self.address {
            Some(a) if a.trim().is_empty() || a.contains(char::is_whitespace) => {
                errors.push("address", format!("`{a}` is not an address"));
                template_address
            }
            Some(a) => a.clone(),
            None => template_address,
        };
        Adopt {
            selector,
            host,
            role,
            address,
            delete_data: self.delete_data,
        }
    }
}

/// What each `*` of `pattern` matched in `text`, when the whole of `text` matches (`*` any run
/// of characters, `?` one character, anything else itself).
pub fn glob<'t>(pattern: &str, text: &'t str) -> Option<Vec<&'t str>> {
    fn go<'t>(p: &str, t: &'t str, stars: &mut Vec<&'t str>) -> bool {
        let mut rest = p.chars();
        match rest.next() {
            None => t.is_empty(),
            Some('*') => {
                let after = rest.as_str();
                let ends = t.char_indices().map(|(i, _)| i).chain([t.len()]);
                for end in ends {
                    stars.push(&t[..end]);
                    if go(after, &t[end..], stars) {
                        return true;
                    }
                    stars.pop();
                }
                false
            }
            Some('?') => {
                let mut t = t.chars();
                t.next().is_some() && go(rest.as_str(), t.as_str(), stars)
            }
            Some(c) => t
                .strip_prefix(c)
                .is_some_and(|t| go(rest.as_str(), t, stars)),
        }
    }
    let mut stars = Vec::new();
    go(pattern, text, &mut stars).then_some(stars)
}

/// The first rule that takes the domain `name` on host `host`, and the member it runs. `owned`:
/// the domain carries Steward's metadata element (any cluster's), and is never adopted; nor is a
/// retired one.
pub fn adopted_by(
    rules: &[Adopt],
    host: usize,
    name: &str,
    owned: bool,
) -> Option<(usize, String)> {
    if owned || name.ends_with(RETIRED_SUFFIX) {
        return None;
    }
    rules.iter().enumerate().find_map(|(i, r)| {
        if r.host.is_some_and(|h| h != host) {
            return None;
        }
        match &r.selector {
            Selector::Domain { domain, member } => (domain == name).then(|| (i, member.clone())),
            Selector::Pattern { pattern, member } => {
                let stars = glob(pattern, name)?;
                let member = match member {
                    Some(m) => m.replace("{*}", stars.first().copied().unwrap_or_default()),
                    None => name.to_string(),
                };
                is_safe_name(&member).then_some((i, member))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::libvirt::{LibvirtConfigRaw, RoleTemplateRaw};

    const TEMPLATE: &str = "<domain type='test'><name>{{name}}</name>{{metadata}}\
        <memory unit='KiB'>{{max_memory_kib}}</memory><currentMemory unit='KiB'>{{memory_kib}}</currentMemory>\
        <vcpu current='{{vcpus}}'>{{max_vcpus}}</vcpu><os><type>hvm</type></os></domain>";

    fn raw(adopt: Vec<RawAdopt>) -> LibvirtConfigRaw {
        LibvirtConfigRaw {
            cluster: "demo".into(),
            uris: vec!["test:///a".into(), "test:///b".into()],
            database: RoleTemplateRaw {
                template: TEMPLATE.into(),
                max_vcpus: 4,
                max_memory_bytes: 4 << 30,
                disk_target: None,
                address: "{{name}}.db.internal".into(),
                host_dirs: Vec::new(),
            },
            balancer: None,
            adopt,
            addresses: Vec::new(),
            placement: Default::default(),
        }
    }

    fn rules(adopt: Vec<RawAdopt>) -> Vec<Adopt> {
        raw(adopt).validate().expect("valid").adopt
    }

    #[test]
    fn globs_match_whole_names_and_capture_the_stars() {
        assert_eq!(glob("pg-*", "pg-1"), Some(vec!["1"]));
        assert_eq!(glob("pg-*", "pg-"), Some(vec![""]));
        assert_eq!(glob("prod-*-db?", "prod-eu-db2"), Some(vec!["eu"]));
        assert_eq!(glob("*-pg-*", "a-pg-b-pg-c"), Some(vec!["a", "b-pg-c"]));
        assert_eq!(glob("pg-?", "pg-10"), None);
        assert_eq!(glob("pg-*", "old-pg-1"), None);
        assert_eq!(glob("pg-1", "pg-10"), None);
        assert_eq!(glob("pg-1", "pg-1"), Some(vec![]));
    }

    #[test]
    fn an_explicit_rule_takes_its_domain_only_never_owned_or_retired() {
        let rules = rules(vec![RawAdopt {
            domain: Some("pgdb-1".into()),
            member: Some("pg1".into()),
            uri: Some("test:///b".into()),
            ..Default::default()
        }]);
        assert_eq!(rules[0].address, "{{name}}.db.internal");
        assert_eq!(
            adopted_by(&rules, 1, "pgdb-1", false),
            Some((0, "pg1".into()))
        );
        assert_eq!(adopted_by(&rules, 0, "pgdb-1", false), None, "other host");
        assert_eq!(adopted_by(&rules, 1, "pgdb-1", true), None, "owned");
        assert_eq!(adopted_by(&rules, 1, "pgdb-1.retired", false), None);
        // A similar name is not the same domain.
        assert_eq!(adopted_by(&rules, 1, "pgdb-10", false), None);
        assert_eq!(adopted_by(&rules, 1, "old-pgdb-1", false), None);
    }

    #[test]
    fn a_pattern_rule_names_members_by_the_domain_or_its_star() {
        let rules = rules(vec![
            RawAdopt {
                name: Some("prod-pg-*".into()),
                member: Some("pg-{*}".into()),
                ..Default::default()
            },
            RawAdopt {
                name: Some("lb?".into()),
                role: Some("database".into()),
                address: Some("10.0.0.1".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(
            adopted_by(&rules, 0, "prod-pg-2", false),
            Some((0, "pg-2".into()))
        );
        assert_eq!(adopted_by(&rules, 0, "lb1", false), Some((1, "lb1".into())));
        assert_eq!(rules[1].address, "10.0.0.1");
        assert_eq!(adopted_by(&rules, 0, "lb12", false), None);
        assert_eq!(adopted_by(&rules, 0, "prod-pg-2.retired", false), None);
        assert_eq!(adopted_by(&rules, 0, "prod-pg-2", true), None);
        assert_eq!(adopted_by(&rules, 0, "test-pg-2", false), None);
    }

    #[test]
    fn every_bad_rule_is_told_with_its_field_path() {
        let e = raw(vec![
            RawAdopt::default(),
            RawAdopt {
                domain: Some("a".into()),
                name: Some("a*".into()),
                ..Default::default()
            },
            RawAdopt {
                domain: Some("a b".into()),
                uri: Some("test:///c".into()),
                role: Some("cache".into()),
                address: Some(" ".into()),
                ..Default::default()
            },
            RawAdopt {
                name: Some("*".into()),
                ..Default::default()
            },
            RawAdopt {
                name: Some("pg-*-*".into()),
                member: Some("m-{*}".into()),
                ..Default::default()
            },
            RawAdopt {
                name: Some("pg-*".into()),
                member: Some("pg".into()),
                role: Some("balancer".into()),
                ..Default::default()
            },
            RawAdopt {
                domain: Some("pg-1.retired".into()),
                ..Default::default()
            },
        ])
        .validate()
        .expect_err("invalid");
        let lines: Vec<String> = e.iter().map(|f| f.to_string()).collect();
        let expect = [
            "adopt[0].domain: name a `domain` (one member) or a `name` pattern",
            "adopt[1].name: give `domain` or `name`, not both",
            "adopt[2].domain: `a b`: use letters",
            "adopt[2].member: `a b`: use letters",
            "adopt[2].uri: `test:///c` is not one of the uris",
            "adopt[2].role: `cache`: expected database or balancer",
            "adopt[2].address: ` ` is not an address",
            "adopt[3].name: `*` would take every domain",
            "adopt[4].member: `{*}` needs exactly one `*` in `name` (`pg-*-*` has 2)",
            "adopt[5].member: `pg` would give every domain of the pattern one member name",
            "adopt[5].role: there is no `balancer` template",
            "adopt[6].domain: `pg-1.retired` is a retired domain",
        ];
        for want in expect {
            assert!(
                lines.iter().any(|l| l.starts_with(want)),
                "no `{want}` in {lines:#?}"
            );
        }
        assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = r#"{"cluster":"c","uris":["test:///default"],
            "database":{"template":"x","max_memory_bytes":1},
            "adopt":[{"domain":"pg-1","delete_date":true}]}"#;
        let err = serde_json::from_str::<LibvirtConfigRaw>(text).unwrap_err();
        assert!(err.to_string().contains("delete_date"), "{err}");
    }
}
