//! The libvirt platform: members are libvirt domains (VMs), one libvirt URI per physical host.
//!
//! What it is: an implementation of [`Platform`] over the `virt` bindings. Domains are defined
//! from a per-role XML template; Steward's ownership is a `<metadata>` element in Steward's own
//! XML namespace ([`METADATA_NS`]) carrying the cluster, role, member and operation. A domain
//! without that element (or with another cluster's) is invisible and untouchable: every method
//! answers [`ErrorKind::NotFound`] for it and never acts on it.
//!
//! - vCPU and memory change live within the domain's maxima (`<vcpu>` and `<memory>` of the
//!   template), and are written to the persistent definition as well so a restart keeps them.
//! - The data disk grows with `virDomainBlockResize` where the driver supports it. libvirt's test
//!   driver does not: there [`Capabilities::disk_grow`] is [`Change::Unsupported`] and a grow
//!   request is a [`ErrorKind::Permanent`] error carrying libvirt's own message.
//! - Fence = `virDomainDestroy` (a hard power-off), marked `fenced="1"` in the metadata so that a
//!   shut-off member fenced by us is told apart from one that stopped by itself.
//! - Several URIs = several hosts: create puts a member on a URI holding no member of its role.
//!
//! What it is not: a storage or network manager. It does not create volumes or networks (the
//! template refers to existing ones); it does not read guest-internal figures (disk use, RSS)
//! that need a guest agent.
//!
//! Configuration (defaults shown for the optional fields):
//!
//! ```toml
//! cluster = "demo"
//! uris = ["qemu+ssh://db-a/system", "qemu+ssh://db-b/system", "qemu+ssh://db-c/system"]
//! [database]
//! template = "<domain type='kvm'><name>{{name}}</name>{{metadata}} ... </domain>"
//! max_vcpus = 8
//! max_memory_bytes = 34359738368
//! disk_target = "vdb"          # optional: no disk growth without it
//! address = "{{name}}"
//! ```
//!
//! Domains Steward did not define may be managed on the operator's word: `[[platform.libvirt.adopt]]`
//! rules ([`adopt`]) name them (a domain, or a name pattern such as `pg-*`). An adopted domain
//! is listed, resized and fenced like an owned one; removing it keeps its definition and disks
//! (destroyed and renamed `<name>.retired`) unless its rule says `delete_data`, and
//! [`Platform::kept`] lists it with its disks and the `virsh` command that deletes it.
//!
//! Built with the `libvirt` cargo feature only ([`LibvirtPlatform`] is in `driver.rs`): the
//! bindings link libvirt.so and some fifty libraries behind it. The configuration below parses
//! and validates in every build, so a build without the feature refuses `kind = "libvirt"` with
//! a clear error rather than an unknown field.
//!
//! libvirt calls block, so every operation runs in `tokio::task::spawn_blocking`. One connection
//! per URI is opened at start and kept: on the test driver a connection's changes last only as
//! long as the connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
#[cfg(doc)]
use steward_model::ports::{Capabilities, Change, ErrorKind, Platform};
use steward_model::{ConfigErrors, Role, Timestamp};

/// The XML namespace of Steward's domain metadata element.
pub const METADATA_NS: &str = "https://steward.dev/xmlns/member/1";

/// Where the platform reads the time of day (for `created_at` and usage timestamps). The binary passes the
/// wall clock; tests pass a fake one. Pure time-as-a-parameter, as everywhere in Steward.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The placeholders a template may use, each replaced at create time.
const PLACEHOLDERS: [&str; 7] = [
    "name",
    "vcpus",
    "max_vcpus",
    "memory_kib",
    "max_memory_kib",
    "disk_bytes",
    "metadata",
];
/// The placeholders a template must use: without them the size or the ownership would be lost.
const REQUIRED_PLACEHOLDERS: [&str; 6] = [
    "name",
    "vcpus",
    "max_vcpus",
    "memory_kib",
    "max_memory_kib",
    "metadata",
];

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The libvirt platform's configuration as written (TOML or JSON); check it with
/// [`LibvirtConfigRaw::validate`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfigRaw {
    /// The cluster (Patroni scope) whose members this platform owns; written into and matched
    /// against every domain's metadata.
    pub cluster: String,
    /// libvirt connection URIs, one per physical host (e.g. `qemu+ssh://db-a/system`). Members
    /// of one role are spread so that no URI holds two of them.
    pub uris: Vec<String>,
    /// The template for database members.
    pub database: RoleTemplateRaw,
    /// The template for balancer members; without it, balancers are not created here.
    #[serde(default)]
    pub balancer: Option<RoleTemplateRaw>,
    /// Domains Steward did not define but may manage (`[[platform.libvirt.adopt]]`, see
    /// [`adopt`]).
    #[serde(default)]
    pub adopt: Vec<RawAdopt>,
}

/// One role's domain template.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleTemplateRaw {
    /// Domain XML with placeholders `{{name}}`, `{{vcpus}}`, `{{max_vcpus}}`, `{{memory_kib}}`,
    /// `{{max_memory_kib}}`, `{{metadata}}` (all required) and `{{disk_bytes}}` (optional).
    /// `{{metadata}}` becomes the whole `<metadata>` element; the template must not have its own.
    pub template: String,
    /// The most vCPUs a member may get (the `<vcpu>` maximum): live changes stay within it.
    #[serde(default = "default_max_vcpus")]
    pub max_vcpus: u32,
    /// The most memory a member may get, bytes (the `<memory>` maximum, a multiple of 1 KiB).
    pub max_memory_bytes: u64,
    /// The data disk's target device (e.g. `vdb`), grown with blockResize. None: the disk is
    /// not resized and sizes report `disk_bytes = 0`.
    #[serde(default)]
    pub disk_target: Option<String>,
    /// The member's address; `{{name}}` is replaced with the member's name (a name that resolves
    /// through libvirt-nss or DNS). Default `{{name}}`.
    #[serde(default = "default_address")]
    pub address: String,
}

fn default_max_vcpus() -> u32 {
    8
}

fn default_address() -> String {
    "{{name}}".to_string()
}

/// A checked configuration: only [`LibvirtConfigRaw::validate`] makes one.
// Read by the platform only, which the `libvirt` feature builds.
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
#[derive(Clone, Debug)]
pub struct LibvirtConfig {
    cluster: String,
    uris: Vec<String>,
    templates: BTreeMap<Role, RoleTemplate>,
    adopt: Vec<Adopt>,
}

#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
#[derive(Clone, Debug)]
struct RoleTemplate {
    template: String,
    max_vcpus: u32,
    max_memory_kib: u64,
    disk_target: Option<String>,
    address: String,
}

impl LibvirtConfig {
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The adoption rules, in the order written (`adopt[i]`).
    pub fn adopt(&self) -> &[Adopt] {
        &self.adopt
    }
}

impl LibvirtConfigRaw {
    /// Checks everything at once and names each problem by its field path.
    pub fn validate(self) -> Result<LibvirtConfig, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        if self.cluster.trim().is_empty() {
            errors.push("cluster", "must not be empty");
        } else if !is_safe_name(&self.cluster) {
            errors.push("cluster", "may hold only letters, digits, `-`, `_` and `.`");
        }
        if self.uris.is_empty() {
            errors.push("uris", "at least one libvirt URI is needed");
        }
        let mut seen = BTreeSet::new();
        for (i, uri) in self.uris.iter().enumerate() {
            if uri.trim().is_empty() {
                errors.push(format!("uris[{i}]"), "must not be empty");
            } else if !uri.contains(':') {
                errors.push(
                    format!("uris[{i}]"),
                    format!("`{uri}` is not a libvirt URI"),
                );
            } else if !seen.insert(uri.as_str()) {
                errors.push(format!("uris[{i}]"), format!("`{uri}` is listed twice"));
            }
        }
        let mut templates = BTreeMap::new();
        // The roles written, valid or not: an adoption rule is told of a missing template only.
        let mut written = vec![Role::Database];
        written.extend(self.balancer.is_some().then_some(Role::Balancer));
        let roles = [
            (Role::Database, Some(self.database)),
            (Role::Balancer, self.balancer),
        ];
        for (role, raw) in roles {
            let Some(raw) = raw else { continue };
            match raw.validate() {
                Ok(t) => {
                    templates.insert(role, t);
                }
                Err(e) => errors.extend_under(role.as_str(), e),
            }
        }
        let mut adopt = Vec::with_capacity(self.adopt.len());
        for (i, raw) in self.adopt.iter().enumerate() {
            let mut inner = ConfigErrors::default();
            adopt.push(raw.validate(&self.uris, &templates, &written, &mut inner));
            errors.extend_under(&format!("adopt[{i}]"), inner);
        }
        errors.into_result(LibvirtConfig {
            cluster: self.cluster,
            uris: self.uris,
            templates,
            adopt,
        })
    }
}

impl RoleTemplateRaw {
    fn validate(self) -> Result<RoleTemplate, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let used = match placeholders(&self.template) {
            Ok(used) => used,
            Err(message) => {
                errors.push("template", message);
                BTreeSet::new()
            }
        };
        for name in &used {
            if !PLACEHOLDERS.contains(&name.as_str()) {
                errors.push("template", format!("unknown placeholder `{{{{{name}}}}}`"));
            }
        }
        for name in REQUIRED_PLACEHOLDERS {
            if !used.contains(name) {
                errors.push(
                    "template",
                    format!("placeholder `{{{{{name}}}}}` is missing"),
                );
            }
        }
        if !self.template.contains("<domain") {
            errors.push(
                "template",
                "is not a libvirt domain definition (no `<domain` element)",
            );
        }
        if self.template.contains("<metadata") {
            // libvirt keeps one <metadata> element; Steward writes it from `{{metadata}}`.
            errors.push(
                "template",
                "must not contain `<metadata>`: use `{{metadata}}`",
            );
        }
        if self.max_vcpus == 0 {
            errors.push("max_vcpus", "must be at least 1");
        }
        if self.max_memory_bytes < 64 << 20 {
            errors.push("max_memory_bytes", "must be at least 64 MiB");
        } else if self.max_memory_bytes % 1024 != 0 {
            errors.push(
                "max_memory_bytes",
                "must be a multiple of 1024 (libvirt counts KiB)",
            );
        }
        if let Some(target) = &self.disk_target {
            if target.is_empty() || !is_safe_name(target) {
                errors.push("disk_target", "must be a device name such as `vdb`");
            }
        }
        if self.address.trim().is_empty() {
            errors.push("address", "must not be empty");
        }
        errors.into_result(RoleTemplate {
            template: self.template,
            max_vcpus: self.max_vcpus,
            max_memory_kib: self.max_memory_bytes / 1024,
            disk_target: self.disk_target,
            address: self.address,
        })
    }
}

/// The `{{...}}` placeholders a template uses, or what is wrong with its braces.
fn placeholders(template: &str) -> Result<BTreeSet<String>, String> {
    let mut used = BTreeSet::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("a `{{` is never closed by `}}`")?;
        used.insert(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    Ok(used)
}

/// Letters, digits, `-`, `_`, `.`: safe as a domain name, in XML and in a libvirt URI path.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub mod adopt;
pub use adopt::{Adopt, RawAdopt, Selector, RETIRED_SUFFIX};

#[cfg(feature = "libvirt")]
mod driver;
#[cfg(feature = "libvirt")]
pub use driver::{LibvirtPlatform, LibvirtStartError};

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(template: &str) -> LibvirtConfigRaw {
        LibvirtConfigRaw {
            cluster: "demo".into(),
            uris: vec!["test:///default".into()],
            database: RoleTemplateRaw {
                template: template.into(),
                max_vcpus: 4,
                max_memory_bytes: 4 << 30,
                disk_target: None,
                address: default_address(),
            },
            balancer: None,
            adopt: Vec::new(),
        }
    }

    const GOOD: &str = "<domain type='test'><name>{{name}}</name>{{metadata}}\
        <memory unit='KiB'>{{max_memory_kib}}</memory><currentMemory unit='KiB'>{{memory_kib}}</currentMemory>\
        <vcpu current='{{vcpus}}'>{{max_vcpus}}</vcpu><os><type>hvm</type></os></domain>";

    #[test]
    fn a_good_config_validates() {
        let config = raw(GOOD).validate().unwrap();
        assert_eq!(config.cluster(), "demo");
        assert_eq!(config.templates[&Role::Database].max_memory_kib, 4 << 20);
    }

    #[test]
    fn every_problem_is_listed_at_once_with_its_path() {
        let mut r = raw("<domain><name>{{name}}</name><metadata/>{{cpus}}</domain>");
        r.cluster = String::new();
        r.uris = vec![
            "test:///default".into(),
            "test:///default".into(),
            "nonsense".into(),
        ];
        r.database.max_vcpus = 0;
        r.database.max_memory_bytes = (1 << 30) + 1;
        r.database.disk_target = Some("v d".into());
        let errors = r.validate().unwrap_err();
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let expect = [
            "cluster: must not be empty",
            "uris[1]: `test:///default` is listed twice",
            "uris[2]: `nonsense` is not a libvirt URI",
            "database.template: unknown placeholder `{{cpus}}`",
            "database.template: placeholder `{{vcpus}}` is missing",
            "database.template: placeholder `{{metadata}}` is missing",
            "database.template: must not contain `<metadata>`: use `{{metadata}}`",
            "database.max_vcpus: must be at least 1",
            "database.max_memory_bytes: must be a multiple of 1024 (libvirt counts KiB)",
            "database.disk_target: must be a device name such as `vdb`",
        ];
        for e in expect {
            assert!(lines.iter().any(|l| l == e), "missing `{e}` in {lines:#?}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = r#"{"cluster":"c","uris":["test:///default"],"database":{"template":"x","max_memory_bytes":1,"maxvcpus":2}}"#;
        let err = serde_json::from_str::<LibvirtConfigRaw>(text).unwrap_err();
        assert!(err.to_string().contains("maxvcpus"), "{err}");
    }
}
