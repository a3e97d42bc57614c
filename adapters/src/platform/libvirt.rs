//! The libvirt platform: members are libvirt domains (VMs, or LXC containers), one libvirt URI
//! per physical host.
//!
//! What it is: an implementation of [`Platform`] over the `virt` bindings. Domains are defined
//! from a per-role XML template; Steward's ownership is a `<metadata>` element in Steward's own
//! XML namespace ([`METADATA_NS`]) carrying the cluster, role, member and operation. A domain
//! without that element (or with another cluster's) is invisible and untouchable: every method
//! answers [`ErrorKind::NotFound`] for it and never acts on it.
//!
//! - vCPU and memory change live within the domain's maxima (`<vcpu>` and `<memory>` of the
//!   template), and are written to the persistent definition as well so a restart keeps them.
//! - Where the driver cannot change vCPUs live (LXC, `lxc:///`), CPU is a CFS quota over the
//!   whole domain instead: fractions of a CPU (0.01 and up, at most `max_vcpus`), live, written
//!   into the definition too; memory is the cgroup's hard limit. [`Capabilities::cpu`] is
//!   [`Change::Live`] on both; `Capabilities::cpu_unit` says `Quota` (`Vcpus` when any host
//!   changes whole vCPUs), `LibvirtPlatform::cpu_control` which kind per URI (`CpuControl`),
//!   and the platform logs it per URI when it connects. The `lxc` module has the details and the
//!   libvirt 9.0 crash it steers around.
//! - The data disk grows with `virDomainBlockResize` where the driver supports it. libvirt's test
//!   driver does not: there [`Capabilities::disk_grow`] is [`Change::Unsupported`] and a grow
//!   request is a [`ErrorKind::Permanent`] error carrying libvirt's own message.
//! - Fence = `virDomainDestroy` (a hard power-off), marked `fenced="1"` in the metadata so that a
//!   shut-off member fenced by us is told apart from one that stopped by itself.
//! - Several URIs = several hosts: create puts a member on a URI holding no member of its role
//!   (`placement = "preferred"`: on the URI with the fewest when none is free).
//! - Members of domains that share the host's network (an LXC domain without `<interface>`)
//!   each get an address of their own from `addresses` (`{{address}}`), held until removed.
//! - `host_dirs`: folders made per member before its domain is defined (an LXC domain's root
//!   and data), deleted by a remove with `delete_data`.
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
//! placement = "required"
//! addresses = []               # e.g. ["127.0.81.11-127.0.81.19"] for `{{address}}`
//! [database]
//! template = "<domain type='kvm'><name>{{name}}</name>{{metadata}} ... </domain>"
//! max_vcpus = 8
//! max_memory_bytes = 34359738368
//! disk_target = "vdb"          # optional: no disk growth without it
//! address = "{{name}}"
//! host_dirs = []               # e.g. ["/var/lib/steward-lxc/{{name}}/root"]
//! ```
//!
//! `examples/libvirt-lxc.toml` is a whole configuration with Patroni members as LXC domains over
//! the host's programs (the Docker lab's empty-root approach).
//!
//! Domains Steward did not define may be managed on the operator's word: `[[platform.libvirt.adopt]]`
//! rules ([`adopt`]) name them (a domain, or a name pattern such as `pg-*`). An adopted domain
//! is listed, resized and fenced like an owned one; removing it keeps its definition and disks
//! (destroyed and renamed `<name>.retired`) unless its rule says `delete_data`, and
//! [`Platform::kept`] lists it with its disks and the `virsh` command that deletes it.
//!
//! Built with the `libvirt` cargo feature only (`LibvirtPlatform` is in `driver.rs`): the
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
use steward_model::ports::Placement;
#[cfg(doc)]
use steward_model::ports::{Capabilities, Change, ErrorKind, Platform};
use steward_model::{ConfigErrors, Role, Timestamp};

/// The XML namespace of Steward's domain metadata element.
pub const METADATA_NS: &str = "https://steward.dev/xmlns/member/1";

/// Where the platform reads the time of day (for `created_at` and usage timestamps). The binary passes the
/// wall clock; tests pass a fake one. Pure time-as-a-parameter, as everywhere in Steward.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The placeholders a template may use, each replaced at create time.
const PLACEHOLDERS: [&str; 8] = [
    "name",
    "address",
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
    /// Members' own IPv4 addresses, single (`127.0.0.31`) or ranges (`127.0.0.31-127.0.0.39`):
    /// a new member gets the first one no member of the cluster holds, as `{{address}}` in its
    /// template and `address`. For domains that share their host's network (an LXC domain
    /// without `<interface>`), where each member listens on an address of its own. Default none:
    /// `{{address}}` may not be used.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `required` (default): one member of a role per URI, a create with no such URI left is
    /// refused. `preferred`: spread when possible, else the URI with the fewest (with a
    /// warning): several members on one host, e.g. LXC domains of a test or a lab.
    #[serde(default)]
    pub placement: Placement,
}

/// One role's domain template.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleTemplateRaw {
    /// Domain XML with placeholders `{{name}}`, `{{vcpus}}`, `{{max_vcpus}}`, `{{memory_kib}}`,
    /// `{{max_memory_kib}}`, `{{metadata}}` (all required), `{{disk_bytes}}` and `{{address}}`
    /// (optional; the member's address from `addresses`).
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
    /// through libvirt-nss or DNS), `{{address}}` with its address from `addresses`. Default
    /// `{{name}}`.
    #[serde(default = "default_address")]
    pub address: String,
    /// Folders made on the libvirt host before a member's domain is defined, `{{name}}`
    /// replaced with the member's name (e.g. an LXC domain's root and data folders,
    /// `/var/lib/steward-lxc/{{name}}/root`). Each must be absolute and have a component naming
    /// the member: that folder (`/var/lib/steward-lxc/<name>`) is what `remove` with
    /// `delete_data` deletes, and it is never shared. Local URIs only (`lxc:///`,
    /// `qemu:///system`): Steward makes them on its own machine.
    #[serde(default)]
    pub host_dirs: Vec<String>,
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
    addresses: Vec<std::net::Ipv4Addr>,
    placement: Placement,
}

#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
#[derive(Clone, Debug)]
struct RoleTemplate {
    template: String,
    max_vcpus: u32,
    max_memory_kib: u64,
    disk_target: Option<String>,
    address: String,
    host_dirs: Vec<String>,
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
            if !raw.host_dirs.is_empty() {
                for uri in self.uris.iter().filter(|u| !is_local_uri(u)) {
                    errors.push(
                        format!("{role}.host_dirs"),
                        format!("folders are made on Steward's own machine: `{uri}` is remote"),
                    );
                }
            }
            match raw.validate() {
                Ok(t) => {
                    templates.insert(role, t);
                }
                Err(e) => errors.extend_under(role.as_str(), e),
            }
        }
        let mut addresses = Vec::new();
        for (i, text) in self.addresses.iter().enumerate() {
            match super::parse_address_range(text) {
                Ok(mut list) => addresses.append(&mut list),
                Err(e) => errors.push(format!("addresses[{i}]"), e),
            }
        }
        if addresses.iter().collect::<BTreeSet<_>>().len() != addresses.len() {
            errors.push("addresses", "an address is listed twice");
        }
        if self.addresses.is_empty() {
            for (role, t) in &templates {
                let uses = |text: &str| text.contains("{{address}}");
                if uses(&t.template) || uses(&t.address) {
                    errors.push(
                        format!("{role}"),
                        "uses `{{address}}`, but `addresses` gives none",
                    );
                }
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
            addresses,
            placement: self.placement,
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
        for (i, dir) in self.host_dirs.iter().enumerate() {
            if let Err(message) = member_folder(dir, "x") {
                errors.push(format!("host_dirs[{i}]"), message);
            }
        }
        errors.into_result(RoleTemplate {
            template: self.template,
            max_vcpus: self.max_vcpus,
            max_memory_kib: self.max_memory_bytes / 1024,
            disk_target: self.disk_target,
            address: self.address,
            host_dirs: self.host_dirs,
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

/// Whether a libvirt URI names this machine's daemon (`lxc:///`, `qemu:///system`,
/// `test:///default`): no transport and no host.
fn is_local_uri(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(scheme, rest)| !scheme.contains('+') && rest.starts_with('/'))
}

/// For a `host_dirs` entry and a member: the folder to make, and the member's own folder (the
/// first component naming the member), which `remove` with `delete_data` deletes. Or what is
/// wrong with the entry.
fn member_folder(
    dir: &str,
    member: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    use std::path::{Component, PathBuf};
    if !dir.starts_with('/') {
        return Err(format!("`{dir}` is not an absolute path"));
    }
    let mut own = PathBuf::from("/");
    let mut found = None;
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(format!("`{dir}` may not contain `.` or `..`"));
        }
        let filled = part.replace("{{name}}", member);
        if filled.contains("{{") || filled.contains("}}") {
            return Err(format!("`{dir}`: `{{{{name}}}}` is its only placeholder"));
        }
        if filled == "." || filled == ".." || filled.contains('/') {
            return Err(format!(
                "`{dir}` with member `{member}` is not a folder of its own"
            ));
        }
        own.push(&filled);
        if found.is_none() && part.contains("{{name}}") {
            found = Some(own.clone());
        }
    }
    let Some(folder) = found else {
        return Err(format!(
            "`{dir}` has no component naming the member (`{{{{name}}}}`): \
             a folder shared by members could be deleted with one of them"
        ));
    };
    debug_assert!(own
        .components()
        .all(|c| !matches!(c, Component::ParentDir | Component::CurDir)));
    Ok((own, folder))
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
mod lxc;
#[cfg(feature = "libvirt")]
pub use driver::{LibvirtPlatform, LibvirtStartError};
#[cfg(feature = "libvirt")]
pub use lxc::CpuControl;

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
                host_dirs: Vec::new(),
            },
            balancer: None,
            adopt: Vec::new(),
            addresses: Vec::new(),
            placement: Placement::Required,
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
    fn host_dirs_are_local_absolute_and_name_the_member() {
        let mut r = raw(GOOD);
        r.uris = vec!["lxc:///".into(), "lxc+ssh://db-b/".into()];
        r.database.host_dirs = vec![
            "/var/lib/steward-lxc/{{name}}/root".into(),
            "relative/{{name}}".into(),
            "/var/lib/shared".into(),
            "/var/lib/{{name}}/../x".into(),
        ];
        let lines: Vec<String> = r
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "database.host_dirs: folders are made on Steward's own machine: `lxc+ssh://db-b/` is remote",
                "database.host_dirs[1]: `relative/{{name}}` is not an absolute path",
                "database.host_dirs[2]: `/var/lib/shared` has no component naming the member \
                 (`{{name}}`): a folder shared by members could be deleted with one of them",
                "database.host_dirs[3]: `/var/lib/{{name}}/../x` may not contain `.` or `..`",
            ]
        );
        let (path, own) = member_folder("/var/lib/steward-lxc/{{name}}/root", "pg-1").unwrap();
        assert_eq!(path, std::path::Path::new("/var/lib/steward-lxc/pg-1/root"));
        assert_eq!(own, std::path::Path::new("/var/lib/steward-lxc/pg-1"));
        assert!(
            member_folder("/var/lib/{{name}}", "..").is_err(),
            "a member named `..` has no folder of its own"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = r#"{"cluster":"c","uris":["test:///default"],"database":{"template":"x","max_memory_bytes":1,"maxvcpus":2}}"#;
        let err = serde_json::from_str::<LibvirtConfigRaw>(text).unwrap_err();
        assert!(err.to_string().contains("maxvcpus"), "{err}");
    }
}
