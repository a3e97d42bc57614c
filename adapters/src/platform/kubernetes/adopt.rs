//! Adoption on Kubernetes: pods Steward did not create but may manage (issue 15), the same
//! vocabulary as Docker's (`platform::docker::adopt`).
//!
//! `[[platform.kubernetes.adopt]]` rules, each either
//! - explicit: one `pod` by name, running the Patroni member `member` (default: the pod's name),
//! - a label `selector` the deployment already has (`key=value` terms joined by `,`, or `key`
//!   for any value): every pod of the namespace carrying it, the member being the pod's name
//!   (Spilo/Zalando: `application=spilo,cluster-name=acid-minimal-cluster`; Spilo's member
//!   name IS the pod name).
//!
//! Optional: `role` (`database` by default; the role needs a StatefulSet, its replacement is
//! made there), `container` (whose resources are the size; default the role's `container`) and
//! `delete_data`.
//!
//! Adopted pods are listed, resized in place and fenced like owned ones. What differs:
//! - their controller's template is not Steward's: a resize the kubelet cannot make in place is
//!   refused (and undone), not made by patching the template and restarting the pod;
//! - a fence is remembered in memory only (Steward writes nothing on another's StatefulSet):
//!   after a restart of Steward a fenced adopted pod lists by its own state;
//! - "removing" one never deletes data unless the rule says `delete_data = true`. A pod cannot
//!   be renamed or stopped, so Steward stops it the one way that does not fight its controller:
//!   a pod no controller owns is deleted; a pod a StatefulSet owns (a StatefulSet no controller
//!   of its own owns, e.g. an operator) is its highest ordinal and the StatefulSet is scaled
//!   down by one, unless its PVC retention policy deletes PVCs on scale-down. Anything else (a
//!   lower ordinal, another controller, an operator's StatefulSet) is refused, nothing changed,
//!   saying whom to ask. Its PersistentVolumeClaims (the pod's `persistentVolumeClaim` volumes)
//!   are kept and labelled [`LABEL_RETIRED`]; [`Platform::kept`] lists them with the
//!   `kubectl delete pvc` that deletes them, and a pod using a retired claim is never adopted
//!   again. A pod with generic ephemeral volumes (PVCs deleted with the pod) is refused unless
//!   `delete_data`: Steward cannot keep them. `emptyDir` volumes are scratch space: they go
//!   with the pod, as on any restart.
//!
//! What it is not: a way to take another cluster's pods. A pod carrying Steward's cluster label
//! ([`LABEL_CLUSTER`]), of any cluster, is owned, never adopted.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
#[cfg(doc)]
use steward_model::ports::Platform;
use steward_model::ports::LABEL_CLUSTER;
use steward_model::{ConfigErrors, Role};

use super::{is_dns_label, is_valid_label_key, is_valid_label_value};

/// Label on the PVCs of a retired adopted member: the cluster that retired it.
pub const LABEL_RETIRED: &str = "io.steward.retired";
/// Annotation on those PVCs: the member they held.
pub const ANNOTATION_RETIRED_MEMBER: &str = "io.steward.retired-member";
/// Annotation on those PVCs: the pod that used them.
pub const ANNOTATION_RETIRED_POD: &str = "io.steward.retired-pod";

/// `[[platform.kubernetes.adopt]]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdopt {
    /// Explicit: the pod's name.
    #[serde(default)]
    pub pod: Option<String>,
    /// Explicit: the Patroni member it runs (default: the pod's name).
    #[serde(default)]
    pub member: Option<String>,
    /// Selector: `key=value` terms joined by `,` (or `key`, any value), e.g.
    /// `application=spilo,cluster-name=acid-minimal-cluster`.
    #[serde(default)]
    pub selector: Option<String>,
    /// `database` (default) or `balancer`; the role must have a StatefulSet.
    #[serde(default)]
    pub role: Option<String>,
    /// The container whose resources are the member's size (default: the role's `container`).
    #[serde(default)]
    pub container: Option<String>,
    /// Whether removing a member of this rule deletes its PVCs (default false: kept, labelled
    /// retired).
    #[serde(default)]
    pub delete_data: bool,
}

/// Which pods a rule takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Pod {
        pod: String,
        member: String,
    },
    /// `(key, value)` terms, all of which a pod must carry (`None`: any value).
    Labels(Vec<(String, Option<String>)>),
}

impl Selector {
    /// The label selector as the API server takes it (`labelSelector=`).
    pub fn query(&self) -> Option<String> {
        match self {
            Selector::Pod { .. } => None,
            Selector::Labels(terms) => Some(
                terms
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }
}

/// A validated adoption rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adopt {
    pub selector: Selector,
    pub role: Role,
    /// The container whose resources are the size.
    pub container: String,
    pub delete_data: bool,
}

/// A pod name: a DNS subdomain (lowercase labels joined by `.`), at most 253 characters.
fn is_pod_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

impl RawAdopt {
    /// `containers`: the container each configured role's StatefulSet uses.
    pub(super) fn validate(
        &self,
        containers: &BTreeMap<Role, String>,
        errors: &mut ConfigErrors,
    ) -> Adopt {
        let selector = match (&self.pod, &self.selector) {
            (Some(p), None) => {
                if !is_pod_name(p) {
                    errors.push("pod", format!("`{p}` is not a pod name"));
                }
                let member = self.member.clone().unwrap_or_else(|| p.clone());
                // A replacement carries the replaced member's name in a label.
                if !is_valid_label_value(&member) || member.is_empty() {
                    errors.push(
                        "member",
                        format!("`{member}`: a member name must be a label value (1-63 of [A-Za-z0-9._-])"),
                    );
                }
                Selector::Pod {
                    pod: p.clone(),
                    member,
                }
            }
            (None, Some(text)) => {
                if self.member.is_some() {
                    errors.push(
                        "member",
                        "goes with `pod`; a `selector` rule's members are its pods' names",
                    );
                }
                let mut terms = Vec::new();
                for term in text.split(',').map(str::trim) {
                    let (key, value) = match term.split_once('=') {
                        Some((k, v)) => (k.trim(), Some(v.trim())),
                        None => (term, None),
                    };
                    let set_based = ['!', '(', ' '].iter().any(|c| term.contains(*c));
                    if set_based || key.ends_with('=') || value.is_some_and(|v| v.contains('=')) {
                        errors.push(
                            "selector",
                            format!("`{term}`: only `key=value` and `key` terms are taken"),
                        );
                    } else if !is_valid_label_key(key) {
                        errors.push("selector", format!("`{term}`: `{key}` is not a label key"));
                    } else if value.is_some_and(|v| !is_valid_label_value(v)) {
                        errors.push("selector", format!("`{term}`: not a label value"));
                    } else if key == LABEL_CLUSTER {
                        errors.push(
                            "selector",
                            format!("`{term}`: pods with {LABEL_CLUSTER} are owned, never adopted"),
                        );
                    }
                    terms.push((key.to_string(), value.map(str::to_string)));
                }
                Selector::Labels(terms)
            }
            (Some(_), Some(_)) => {
                errors.push("selector", "give `pod` or `selector`, not both");
                Selector::Labels(Vec::new())
            }
            (None, None) => {
                errors.push(
                    "pod",
                    "name a `pod` (one member) or a label `selector` (every pod carrying it)",
                );
                Selector::Labels(Vec::new())
            }
        };
        let role = super::super::adopted_role(self.role.as_deref(), errors);
        let role_container = containers.get(&role);
        if role_container.is_none()
            && self
                .role
                .as_deref()
                .is_none_or(|r| r.parse::<Role>().is_ok())
        {
            errors.push(
                "role",
                format!("there is no `{role}` StatefulSet: an adopted {role} is replaced there"),
            );
        }
        let container = match (&self.container, role_container) {
            (Some(c), _) => {
                if !is_dns_label(c) {
                    errors.push("container", format!("`{c}` is not a container name"));
                }
                c.clone()
            }
            (None, Some(c)) => c.clone(),
            (None, None) => String::new(),
        };
        Adopt {
            selector,
            role,
            container,
            delete_data: self.delete_data,
        }
    }
}

/// The first rule that takes the pod `name` with these labels, and the member it runs. A pod
/// with Steward's cluster label (any cluster's) is never adopted, nor one using a `retired`
/// claim.
pub fn adopted_by(
    rules: &[Adopt],
    name: &str,
    labels: &BTreeMap<String, String>,
    claims: &[String],
    retired: &BTreeSet<String>,
) -> Option<(usize, String)> {
    if labels.contains_key(LABEL_CLUSTER) || claims.iter().any(|c| retired.contains(c)) {
        return None;
    }
    rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| match &r.selector {
            Selector::Pod { pod, member } => (pod == name).then(|| (i, member.clone())),
            Selector::Labels(terms) => {
                let all = !terms.is_empty()
                    && terms.iter().all(|(k, v)| match (labels.get(k), v) {
                        (Some(have), Some(want)) => have == want,
                        (Some(_), None) => true,
                        (None, _) => false,
                    });
                (all && is_valid_label_value(name)).then(|| (i, name.to_string()))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kubernetes::KubernetesConfigRaw;

    fn raw(adopt: &str) -> KubernetesConfigRaw {
        let text = format!(
            r#"{{"cluster":"demo","namespace":"db",
                "database":{{"statefulset":"pg","max_cpus":8,"max_memory_bytes":34359738368}},
                "adopt":{adopt}}}"#
        );
        serde_json::from_str(&text).expect("parses")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_spilo_selector_takes_its_pods_by_name_and_never_an_owned_or_retired_one() {
        let config = raw(
            r#"[{"selector":"application=spilo,cluster-name=acid-minimal-cluster"},
                {"pod":"legacy-pg","member":"legacy1","container":"pg"}]"#,
        )
        .validate()
        .expect("valid");
        let rules = &config.adopt;
        assert_eq!(
            rules[0].selector.query().as_deref(),
            Some("application=spilo,cluster-name=acid-minimal-cluster")
        );
        assert_eq!(
            (rules[0].container.as_str(), rules[1].container.as_str()),
            ("postgres", "pg")
        );
        let spilo = labels(&[
            ("application", "spilo"),
            ("cluster-name", "acid-minimal-cluster"),
            ("spilo-role", "master"),
        ]);
        let none = BTreeSet::new();
        let claims = ["pgdata-acid-minimal-cluster-0".to_string()];
        assert_eq!(
            adopted_by(rules, "acid-minimal-cluster-0", &spilo, &claims, &none),
            Some((0, "acid-minimal-cluster-0".into()))
        );
        let retired = BTreeSet::from([claims[0].clone()]);
        assert_eq!(
            adopted_by(rules, "acid-minimal-cluster-0", &spilo, &claims, &retired),
            None
        );
        let mut owned = spilo.clone();
        owned.insert(LABEL_CLUSTER.into(), "other".into());
        assert_eq!(
            adopted_by(rules, "acid-minimal-cluster-0", &owned, &[], &none),
            None
        );
        let other = labels(&[("application", "spilo"), ("cluster-name", "acid-test")]);
        assert_eq!(adopted_by(rules, "acid-test-0", &other, &[], &none), None);
        let plain = labels(&[]);
        assert_eq!(
            adopted_by(rules, "legacy-pg", &plain, &[], &none),
            Some((1, "legacy1".into()))
        );
        assert_eq!(adopted_by(rules, "legacy-pg-0", &plain, &[], &none), None);
    }

    #[test]
    fn every_bad_rule_is_told_with_its_field_path() {
        let e = raw(r#"[{},
                {"pod":"a","selector":"k=v"},
                {"pod":"Bad_Pod","member":"x y","role":"cache","container":"C"},
                {"selector":"tier in (db),!x,io.steward.cluster=demo","member":"m"},
                {"pod":"lb-0","role":"balancer"}]"#)
        .validate()
        .expect_err("invalid");
        let lines: Vec<String> = e.iter().map(|f| f.to_string()).collect();
        let expect = [
            "adopt[0].pod: name a `pod` (one member) or a label `selector`",
            "adopt[1].selector: give `pod` or `selector`, not both",
            "adopt[2].pod: `Bad_Pod` is not a pod name",
            "adopt[2].member: `x y`: a member name must be a label value",
            "adopt[2].role: `cache`: expected database or balancer",
            "adopt[2].container: `C` is not a container name",
            "adopt[3].member: goes with `pod`",
            "adopt[3].selector: `tier in (db)`: only `key=value` and `key` terms are taken",
            "adopt[3].selector: `!x`: only `key=value` and `key` terms are taken",
            "adopt[3].selector: `io.steward.cluster=demo`: pods with io.steward.cluster are owned",
            "adopt[4].role: there is no `balancer` StatefulSet",
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
        let text = r#"{"cluster":"demo","namespace":"db",
            "database":{"statefulset":"pg","max_cpus":8,"max_memory_bytes":34359738368},
            "adopt":[{"pod":"legacy-pg","label":"app=pg"}]}"#;
        let err = serde_json::from_str::<KubernetesConfigRaw>(text).unwrap_err();
        assert!(err.to_string().contains("label"), "{err}");
    }
}
