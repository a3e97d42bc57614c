//! The libvirt platform itself: [`LibvirtPlatform`] over the `virt` bindings (the parent module
//! has the configuration, which builds without libvirt). Compiled with the `libvirt` feature only:
//! it links libvirt.so and its ~50 libraries, which cost every other build ~13 MB of idle RSS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use steward_model::observation::PlatformState;
use steward_model::ports::{
    Capabilities, Change, CpuUnit, CreateSpec, ErrorKind, KeptData, Platform, PlatformError,
    PlatformMember, ResizeOutcome, Usage, LABEL_CLUSTER, LABEL_MEMBER, LABEL_OPERATION,
    LABEL_REPLACES, LABEL_ROLE,
};
use steward_model::{Role, Size, Timestamp};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::sys;

use super::adopt::{self, FENCED_NS};
use super::lxc::{self, CpuControl};
use super::*;
use crate::platform::docker::LABEL_ADOPTED;

/// The namespace prefix Steward's metadata element is written with.
const METADATA_KEY: &str = "steward";
/// The namespace prefix of an adopted domain's fence record ([`FENCED_NS`]).
const FENCED_KEY: &str = "stewardfence";

/// How long the first CPU reading of a member is, when no earlier one exists.
const FIRST_CPU_WINDOW: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Metadata: Steward's ownership mark
// ---------------------------------------------------------------------------------------------

/// What Steward writes into a domain's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mark {
    cluster: String,
    role: Role,
    member: String,
    operation: String,
    /// The member this one replaces (a repair's replacement).
    replaces: Option<String>,
    /// Epoch milliseconds of creation, when Steward created it.
    created: Option<i64>,
    /// Destroyed by Steward's fence (so a shut-off domain is `Fenced`, not `Exited`).
    fenced: bool,
    /// The address it was given from the configuration's `addresses`, held until removed.
    address: Option<String>,
}

impl Mark {
    /// The element as `virDomainSetMetadata` takes it (libvirt adds the namespace).
    fn element(&self) -> String {
        let mut s = format!(
            "<member cluster=\"{}\" role=\"{}\" member=\"{}\" operation=\"{}\"",
            xml_escape(&self.cluster),
            self.role,
            xml_escape(&self.member),
            xml_escape(&self.operation)
        );
        if let Some(replaced) = &self.replaces {
            s.push_str(&format!(" replaces=\"{}\"", xml_escape(replaced)));
        }
        if let Some(ms) = self.created {
            s.push_str(&format!(" created=\"{ms}\""));
        }
        if let Some(address) = &self.address {
            s.push_str(&format!(" address=\"{}\"", xml_escape(address)));
        }
        if self.fenced {
            s.push_str(" fenced=\"1\"");
        }
        s.push_str("/>");
        s
    }

    /// The whole `<metadata>` element for a template.
    fn metadata_element(&self) -> String {
        let element = self.element().replacen(
            "<member ",
            &format!("<{METADATA_KEY}:member xmlns:{METADATA_KEY}=\"{METADATA_NS}\" "),
            1,
        );
        format!("<metadata>{element}</metadata>")
    }

    /// Reads what `virDomainGetMetadata` returns; None when it is not a complete mark.
    fn parse(xml: &str) -> Option<Mark> {
        let attrs = element_attributes(xml)?;
        Some(Mark {
            cluster: attrs.get("cluster")?.clone(),
            role: attrs.get("role")?.parse().ok()?,
            member: attrs.get("member")?.clone(),
            operation: attrs.get("operation").cloned().unwrap_or_default(),
            replaces: attrs.get("replaces").cloned(),
            created: attrs.get("created").and_then(|v| v.parse().ok()),
            fenced: attrs.get("fenced").is_some_and(|v| v == "1" || v == "true"),
            address: attrs.get("address").cloned(),
        })
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (LABEL_CLUSTER.to_string(), self.cluster.clone()),
            (LABEL_ROLE.to_string(), self.role.to_string()),
            (LABEL_MEMBER.to_string(), self.member.clone()),
            (LABEL_OPERATION.to_string(), self.operation.clone()),
        ]);
        if let Some(replaced) = &self.replaces {
            labels.insert(LABEL_REPLACES.to_string(), replaced.clone());
        }
        labels
    }
}

/// The attributes of the first element of `xml`. libxml2 re-serializes metadata, so what comes
/// back is one well-formed element; a small reader is enough and no XML crate is needed.
fn element_attributes(xml: &str) -> Option<BTreeMap<String, String>> {
    let start = xml.find('<')?;
    let mut rest = &xml[start + 1..];
    let name_end = rest.find(|c: char| c.is_whitespace() || c == '/' || c == '>')?;
    rest = &rest[name_end..];
    let mut attrs = BTreeMap::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with('>') {
            return Some(attrs);
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let close = rest[1..].find(quote)?;
        attrs.insert(key, xml_unescape(&rest[1..1 + close]));
        rest = &rest[close + 2..];
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

// ---------------------------------------------------------------------------------------------
// The platform
// ---------------------------------------------------------------------------------------------

/// One libvirt host: its URI and the connection kept open for the platform's lifetime.
struct Host {
    uri: String,
    conn: Connect,
    /// The driver's name (`QEMU`, `Test`, ...), read once: it decides what can be resized.
    driver: String,
    /// How CPU changes on this host (the LXC driver: a quota).
    cpu: CpuControl,
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Err(e) = self.conn.close() {
            warn!(uri = %self.uri, error = %e, "closing libvirt connection failed");
        }
    }
}

struct Inner {
    config: LibvirtConfig,
    hosts: Vec<Host>,
    clock: Clock,
    /// The last CPU-time sample per member, `(when, cpu_time_ns)`, for CPU rates. `when` is
    /// tokio's monotonic clock: a rate needs elapsed time, not the time of day.
    cpu_samples: Mutex<BTreeMap<String, (Instant, u64)>>,
}

/// Members as libvirt domains on one or more libvirt URIs. See the module doc.
#[derive(Clone)]
pub struct LibvirtPlatform {
    inner: Arc<Inner>,
}

/// A failure to start the platform: a URI that does not connect.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtStartError {
    #[error("cannot connect to libvirt at `{uri}`")]
    Connect {
        uri: String,
        #[source]
        source: VirtError,
    },
    #[error("the blocking libvirt task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// A member found by name: which host, the domain, and Steward's mark on it (for an adopted
/// domain, one made up from its rule: it carries none).
struct Found {
    host: usize,
    domain: Domain,
    mark: Mark,
    /// The adoption rule (index into the config's `adopt`) that took it; `None` when Steward
    /// defined it.
    adopted: Option<usize>,
    /// The domain's name (an adopted member's may differ from the member's).
    name: String,
}

/// Whose a domain is, by its metadata.
enum Owner {
    /// Steward's, of this cluster.
    Us(Mark),
    /// Steward's of another cluster, or unreadable: never touched, never adopted.
    Other,
    /// Carries no Steward metadata: an adoption rule may take it.
    Nobody,
}

/// What an adoption rule took (`steward check-config --resolve`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptedMatch {
    /// Index into `[[platform.libvirt.adopt]]`.
    pub rule: usize,
    pub member: String,
    pub domain: String,
    /// The libvirt URI.
    pub host: String,
}

impl LibvirtPlatform {
    /// Opens one connection per URI (blocking work runs off the async threads).
    pub async fn connect(config: LibvirtConfig, clock: Clock) -> Result<Self, LibvirtStartError> {
        // libvirt's default error handler prints every error to stderr, including the
        // expected ones (a name looked up on the wrong host); errors reach us as values.
        virt::error::clear_error_callback();
        let inner = tokio::task::spawn_blocking(move || {
            let mut hosts = Vec::with_capacity(config.uris.len());
            for uri in &config.uris {
                let conn =
                    Connect::open(Some(uri)).map_err(|source| LibvirtStartError::Connect {
                        uri: uri.clone(),
                        source,
                    })?;
                let driver = conn.get_type().unwrap_or_default();
                let cpu = CpuControl::of_driver(&driver);
                info!(%uri, %driver, ?cpu, "connected to libvirt");
                if cpu == CpuControl::Quota {
                    info!(
                        %uri,
                        "CPU changes as a CFS quota (fractions of a CPU): the {driver} driver \
                         cannot change vCPUs live"
                    );
                }
                hosts.push(Host {
                    uri: uri.clone(),
                    conn,
                    driver,
                    cpu,
                });
            }
            Ok::<_, LibvirtStartError>(Inner {
                config,
                hosts,
                clock,
                cpu_samples: Mutex::new(BTreeMap::new()),
            })
        })
        .await
        .map_err(LibvirtStartError::Join)??;
        Ok(LibvirtPlatform {
            inner: Arc::new(inner),
        })
    }

    /// The live connection to `uri`, for diagnostics and tests. On the test driver it is the
    /// only view of the host's state (another `Connect::open` of a file URI starts afresh).
    /// Steward's own code goes through [`Platform`], which sees owned domains only. The
    /// caller closes the returned reference (`Connect::close`): virt's `Connect` has no `Drop`.
    pub fn connection(&self, uri: &str) -> Option<Connect> {
        self.inner
            .hosts
            .iter()
            .find(|h| h.uri == uri)
            .map(|h| h.conn.clone())
    }

    /// How CPU changes on the host of `uri`: whole vCPUs, or a quota where the driver cannot
    /// change vCPUs live (LXC). [`Capabilities::cpu`] is [`Change::Live`] either way; this says
    /// which kind of live.
    pub fn cpu_control(&self, uri: &str) -> Option<CpuControl> {
        self.inner
            .hosts
            .iter()
            .find(|h| h.uri == uri)
            .map(|h| h.cpu)
    }

    /// Every domain the adoption rules take now, with the rule that took it: a read-only
    /// listing of every host (`steward check-config --resolve`).
    pub async fn adopted(&self) -> Result<Vec<AdoptedMatch>, PlatformError> {
        self.blocking("resolve adoption rules".to_string(), |inner, op| {
            let mut matches: Vec<AdoptedMatch> = inner
                .members(op)?
                .into_iter()
                .filter_map(|f| {
                    Some(AdoptedMatch {
                        rule: f.adopted?,
                        member: f.mark.member,
                        domain: f.name,
                        host: inner.hosts[f.host].uri.clone(),
                    })
                })
                .collect();
            matches.sort_by(|a, b| (a.rule, &a.member).cmp(&(b.rule, &b.member)));
            Ok(matches)
        })
        .await
    }

    /// Runs blocking libvirt work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: String,
        work: impl FnOnce(&Inner, &str) -> Result<T, PlatformError> + Send + 'static,
    ) -> Result<T, PlatformError> {
        let inner = Arc::clone(&self.inner);
        let op = operation.clone();
        tokio::task::spawn_blocking(move || work(&inner, &op))
            .await
            .map_err(|e| {
                PlatformError::new(ErrorKind::Transient, operation, "blocking task failed")
                    .with_source(e)
            })?
    }
}

/// Classifies a libvirt error by its code; the message is libvirt's own.
fn classify(e: &VirtError) -> ErrorKind {
    match e.code() {
        ErrorNumber::NoDomain
        | ErrorNumber::NoDomainMetadata
        | ErrorNumber::NoStorageVolume
        | ErrorNumber::NoStoragePool => ErrorKind::NotFound,
        ErrorNumber::DomExist | ErrorNumber::OperationInvalid => ErrorKind::Conflict,
        ErrorNumber::InvalidArg | ErrorNumber::OperationDenied | ErrorNumber::ConfigUnsupported => {
            ErrorKind::Refused
        }
        ErrorNumber::SystemError
        | ErrorNumber::OperationTimeout
        | ErrorNumber::AgentUnresponsive
        | ErrorNumber::ResourceBusy
        | ErrorNumber::OperationFailed
        | ErrorNumber::InternalError => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

fn virt_error(operation: &str, e: VirtError) -> PlatformError {
    PlatformError::new(classify(&e), operation, e.message().to_string()).with_source(e)
}

fn not_found(operation: &str, member: &str) -> PlatformError {
    PlatformError::new(
        ErrorKind::NotFound,
        operation,
        format!("no domain `{member}` owned by this cluster"),
    )
}

fn state_of(domain: &Domain, mark: &Mark) -> PlatformState {
    match domain.get_state() {
        Ok((state, reason)) => match state {
            sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => PlatformState::Running,
            sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => PlatformState::Paused,
            sys::VIR_DOMAIN_CRASHED => PlatformState::Exited,
            sys::VIR_DOMAIN_SHUTDOWN => PlatformState::Exited,
            sys::VIR_DOMAIN_SHUTOFF if mark.fenced => PlatformState::Fenced,
            sys::VIR_DOMAIN_SHUTOFF if reason == sys::VIR_DOMAIN_SHUTOFF_DESTROYED as i32 => {
                // Destroyed by someone (not our fence): it will not come back by itself.
                PlatformState::Exited
            }
            sys::VIR_DOMAIN_SHUTOFF => PlatformState::Exited,
            _ => PlatformState::Unknown,
        },
        Err(e) => {
            debug!(member = %mark.member, error = %e, "reading domain state failed");
            PlatformState::Unknown
        }
    }
}

impl Inner {
    fn template(&self, role: Role, operation: &str) -> Result<&RoleTemplate, PlatformError> {
        self.config.templates.get(&role).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Permanent,
                operation,
                format!("no libvirt template is configured for role {role}"),
            )
        })
    }

    /// Whose `domain` is: Steward's metadata element of this cluster, of another, or none.
    fn owner(&self, domain: &Domain) -> Owner {
        match domain.get_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_NS),
            0,
        ) {
            Ok(xml) => match Mark::parse(&xml) {
                Some(m) if m.cluster == self.config.cluster => Owner::Us(m),
                _ => Owner::Other,
            },
            Err(e) if e.code() == ErrorNumber::NoDomainMetadata => Owner::Nobody,
            Err(e) => {
                // Unreadable is not "nobody's": an adoption rule must not take another's domain.
                debug!(error = %e, "reading domain metadata failed");
                Owner::Other
            }
        }
    }

    /// Whether Steward's fence of an adopted domain is on record ([`FENCED_NS`]).
    fn fenced_adopted(domain: &Domain) -> bool {
        domain
            .get_metadata(sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(FENCED_NS), 0)
            .is_ok()
    }

    /// The member an adoption rule makes of a domain that carries no Steward metadata.
    fn adopt(&self, host: usize, domain: Domain, name: String) -> Option<Found> {
        let (rule, member) = adopt::adopted_by(&self.config.adopt, host, &name, false)?;
        let mark = Mark {
            cluster: self.config.cluster.clone(),
            role: self.config.adopt[rule].role,
            member,
            operation: String::new(),
            replaces: None,
            created: None,
            fenced: Self::fenced_adopted(&domain),
            address: None,
        };
        Some(Found {
            host,
            domain,
            mark,
            adopted: Some(rule),
            name,
        })
    }

    /// Finds a member (owned or adopted) by name on any host.
    fn find(&self, member: &str, operation: &str) -> Result<Found, PlatformError> {
        for (i, host) in self.hosts.iter().enumerate() {
            match Domain::lookup_by_name(&host.conn, member) {
                Ok(domain) => {
                    // Found by name, but only ours counts; another's is as good as absent.
                    if let Owner::Us(mark) = self.owner(&domain) {
                        if mark.member == member {
                            return Ok(Found {
                                host: i,
                                domain,
                                mark,
                                adopted: None,
                                name: member.to_string(),
                            });
                        }
                    }
                }
                Err(e) if e.code() == ErrorNumber::NoDomain => continue,
                Err(e) => return Err(virt_error(operation, e)),
            }
        }
        if self.config.adopt.is_empty() {
            return Err(not_found(operation, member));
        }
        // An adopted member's domain may have another name: ask the rules.
        let mut found: Vec<Found> = self
            .members(operation)?
            .into_iter()
            .filter(|f| f.adopted.is_some() && f.mark.member == member)
            .collect();
        match found.len() {
            0 => Err(not_found(operation, member)),
            1 => Ok(found.remove(0)),
            n => Err(PlatformError::new(
                ErrorKind::Conflict,
                operation,
                format!("{n} domains claim to be member `{member}`; narrow the adoption rules"),
            )),
        }
    }

    /// Every member domain, owned or adopted, with its host index.
    fn members(&self, operation: &str) -> Result<Vec<Found>, PlatformError> {
        let mut out = Vec::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let domains = host
                .conn
                .list_all_domains(0)
                .map_err(|e| virt_error(operation, e))?;
            for domain in domains {
                match self.owner(&domain) {
                    Owner::Us(mark) => {
                        let name = domain.get_name().unwrap_or_else(|_| mark.member.clone());
                        out.push(Found {
                            host: i,
                            domain,
                            mark,
                            adopted: None,
                            name,
                        });
                    }
                    Owner::Nobody if !self.config.adopt.is_empty() => {
                        let name = domain.get_name().map_err(|e| virt_error(operation, e))?;
                        out.extend(self.adopt(i, domain, name));
                    }
                    Owner::Nobody | Owner::Other => {}
                }
            }
        }
        Ok(out)
    }

    fn disk_bytes(&self, found: &Found) -> u64 {
        let target = self
            .config
            .templates
            .get(&found.mark.role)
            .and_then(|t| t.disk_target.clone());
        match target {
            Some(t) => found
                .domain
                .get_block_info(&t, 0)
                .map(|b| b.capacity)
                .unwrap_or(0),
            None => 0,
        }
    }

    /// A member's CPUs and memory KiB as the host enforces them: vCPUs and the current memory,
    /// or (quota hosts) the quota and the hard limit written in its XML. The XML, not the
    /// scheduler calls: those crash libvirtd 9.0 on a shut-off LXC domain.
    fn size_of(
        &self,
        found: &Found,
        info: &virt::domain::DomainInfo,
        operation: &str,
    ) -> Result<(f64, u64), PlatformError> {
        let vcpus = f64::from(info.nr_virt_cpu);
        match self.hosts[found.host].cpu {
            CpuControl::Vcpus => Ok((vcpus, info.memory)),
            CpuControl::Quota => {
                let xml = found
                    .domain
                    .get_xml_desc(0)
                    .map_err(|e| virt_error(operation, e))?;
                let (cpus, memory) = lxc::quota_size(&xml);
                // No quota: the domain may use every CPU; its vCPU count is the nearest figure.
                Ok((cpus.unwrap_or(vcpus), memory.unwrap_or(info.max_mem)))
            }
        }
    }

    fn member(&self, found: &Found, operation: &str) -> Result<PlatformMember, PlatformError> {
        let info = found
            .domain
            .get_info()
            .map_err(|e| virt_error(operation, e))?;
        let address = match found.adopted {
            Some(rule) => self.config.adopt[rule]
                .address
                .replace("{{name}}", &found.name),
            None => self
                .config
                .templates
                .get(&found.mark.role)
                .map(|t| {
                    t.address
                        .replace("{{name}}", &found.mark.member)
                        .replace("{{address}}", found.mark.address.as_deref().unwrap_or(""))
                })
                .unwrap_or_else(|| found.mark.member.clone()),
        };
        let (cpus, memory_kib) = self.size_of(found, &info, operation)?;
        let mut labels = found.mark.labels();
        if found.adopted.is_some() {
            // Made up from the rule, not written on the domain: no operation made it.
            labels.remove(LABEL_OPERATION);
            labels.insert(LABEL_ADOPTED.to_string(), "true".to_string());
        }
        Ok(PlatformMember {
            name: found.mark.member.clone(),
            cluster: found.mark.cluster.clone(),
            role: found.mark.role,
            size: Size {
                cpus,
                memory_bytes: memory_kib * 1024,
                disk_bytes: self.disk_bytes(found),
            },
            state: state_of(&found.domain, &found.mark),
            address,
            host: self.hosts[found.host].uri.clone(),
            labels: labels.into(),
            created_at: found.mark.created.map(Timestamp::from_millis),
            restart_count: 0,
        })
    }

    fn create(&self, spec: &CreateSpec, op: &str) -> Result<PlatformMember, PlatformError> {
        if spec.cluster != self.config.cluster {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "this platform owns cluster {}, not {}",
                    self.config.cluster, spec.cluster
                ),
            ));
        }
        let template = self.template(spec.role, op)?;
        if !is_safe_name(&spec.name) {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!("`{}` is not a usable domain name", spec.name),
            ));
        }
        // A name is unique across hosts, owned or not: two domains of one name would make every
        // later lookup ambiguous.
        for host in &self.hosts {
            if Domain::lookup_by_name(&host.conn, &spec.name).is_ok() {
                return Err(PlatformError::new(
                    ErrorKind::Conflict,
                    op,
                    format!(
                        "a domain named `{}` already exists on {}",
                        spec.name, host.uri
                    ),
                ));
            }
        }
        // Adopted members hold their host as owned ones do.
        let owned = self.members(op)?;
        let per_host: Vec<usize> = (0..self.hosts.len())
            .map(|h| {
                owned
                    .iter()
                    .filter(|f| f.host == h && f.mark.role == spec.role)
                    .count()
            })
            .collect();
        let Some((host, shared)) = self.config.placement.pick(&per_host) else {
            return Err(PlatformError::new(
                ErrorKind::Refused,
                op,
                format!(
                    "no host left: each of the {} libvirt URIs already holds a {} member \
                     (`placement = \"preferred\"` lets members share a host)",
                    self.hosts.len(),
                    spec.role
                ),
            ));
        };
        if shared {
            warn!(
                member = %spec.name,
                uri = %self.hosts[host].uri,
                sharing_with = per_host[host],
                "no host without a {} member is left: placed beside another (placement = preferred)",
                spec.role
            );
        }
        let address = if self.config.addresses.is_empty() {
            None
        } else {
            // Held by every member of the cluster, running or not, until it is removed.
            let taken: BTreeSet<&str> = owned
                .iter()
                .filter_map(|f| f.mark.address.as_deref())
                .collect();
            let free = self
                .config
                .addresses
                .iter()
                .map(|a| a.to_string())
                .find(|a| !taken.contains(a.as_str()));
            Some(free.ok_or_else(|| {
                PlatformError::new(
                    ErrorKind::Refused,
                    op,
                    format!(
                        "no address left in the pool ({} addresses, all taken)",
                        self.config.addresses.len()
                    ),
                )
            })?)
        };
        let cpu = self.hosts[host].cpu;
        let Sized {
            vcpus,
            quota_us,
            memory_kib,
        } = checked_size(template, spec.size, cpu, op)?;
        let mark = Mark {
            cluster: self.config.cluster.clone(),
            role: spec.role,
            member: spec.name.clone(),
            operation: spec.operation_id.clone(),
            replaces: spec.replaces.clone(),
            created: Some((self.clock)().as_millis()),
            fenced: false,
            address: address.clone(),
        };
        let xml = template
            .template
            .replace("{{name}}", &spec.name)
            .replace("{{address}}", address.as_deref().unwrap_or(""))
            .replace("{{vcpus}}", &vcpus.to_string())
            .replace("{{max_vcpus}}", &template.max_vcpus.to_string())
            .replace("{{memory_kib}}", &memory_kib.to_string())
            .replace("{{max_memory_kib}}", &template.max_memory_kib.to_string())
            .replace("{{disk_bytes}}", &spec.size.disk_bytes.to_string())
            .replace("{{metadata}}", &mark.metadata_element());
        // A quota host starts the domain with its quota and limit already in the definition:
        // no moment without them, and no scheduler call on a shut-off LXC domain.
        let xml = match quota_us {
            Some(quota) => lxc::with_quota(&xml, quota, memory_kib),
            None => xml,
        };
        let made = lxc::make_host_dirs(&template.host_dirs, &spec.name).map_err(|e| {
            PlatformError::new(
                ErrorKind::Transient,
                op,
                format!(
                    "making the member's host folders {:?} failed",
                    template.host_dirs
                ),
            )
            .with_source(e)
        })?;
        // Nothing half-done: folders made for a domain that did not start are deleted again.
        let undo_dirs = |why: &str| {
            for folder in &made {
                if let Err(e) = lxc::delete_member_folder(folder, &[]) {
                    warn!(member = %spec.name, folder = %folder.display(), error = %e, why, "deleting a new member's folder failed");
                }
            }
        };
        let conn = &self.hosts[host].conn;
        let domain = match Domain::define_xml(conn, &xml) {
            Ok(d) => d,
            Err(e) => {
                undo_dirs("define failed");
                return Err(virt_error(op, e));
            }
        };
        if let Err(e) = domain.create() {
            // A defined domain that did not start is undefined again.
            if let Err(undo) = domain.undefine() {
                warn!(member = %spec.name, error = %undo, "undefining a domain that failed to start failed");
            }
            undo_dirs("start failed");
            return Err(virt_error(op, e));
        }
        info!(member = %spec.name, uri = %self.hosts[host].uri, vcpus, ?quota_us, memory_kib, "domain created");
        let found = Found {
            host,
            domain,
            mark,
            adopted: None,
            name: spec.name.clone(),
        };
        self.member(&found, op)
    }

    fn resize(&self, member: &str, size: Size, op: &str) -> Result<ResizeOutcome, PlatformError> {
        let found = self.find(member, op)?;
        let template = self.template(found.mark.role, op)?;
        let cpu = self.hosts[found.host].cpu;
        let Sized {
            vcpus,
            quota_us,
            memory_kib,
        } = checked_size(template, size, cpu, op)?;
        let info = found.domain.get_info().map_err(|e| virt_error(op, e))?;
        // An adopted domain may have a lower maximum than the template: say so plainly
        // rather than pass libvirt's refusal on.
        if memory_kib > info.max_mem {
            return Err(PlatformError::new(
                ErrorKind::Refused,
                op,
                format!(
                    "{memory_kib} KiB is above the domain's maximum memory of {} KiB",
                    info.max_mem
                ),
            ));
        }
        let active = found.domain.is_active().map_err(|e| virt_error(op, e))?;
        // Disk: only grows, and only where there is a disk to grow and a driver that can.
        let current_disk = self.disk_bytes(&found);
        let grow_disk = size.disk_bytes > current_disk && size.disk_bytes > 0;
        if size.disk_bytes > 0 && size.disk_bytes < current_disk {
            return Err(PlatformError::new(
                ErrorKind::Refused,
                op,
                format!(
                    "disks never shrink ({} < {} bytes)",
                    size.disk_bytes, current_disk
                ),
            ));
        }
        let target = template.disk_target.clone();
        if grow_disk && target.is_none() {
            return Err(PlatformError::new(
                ErrorKind::Permanent,
                op,
                format!("role {} has no disk_target to grow", found.mark.role),
            ));
        }
        if let Some(quota) = quota_us {
            if grow_disk {
                return Err(PlatformError::new(
                    ErrorKind::Permanent,
                    op,
                    "disks of quota-controlled (LXC) domains are host folders: nothing to grow",
                ));
            }
            return self.resize_quota(&found, quota, memory_kib, active, &info, op);
        }
        // A shut-off domain has no live state: the change goes to its definition and takes
        // effect when it starts.
        let (vcpu_flags, mem_flags) = if active {
            (sys::VIR_DOMAIN_AFFECT_LIVE, sys::VIR_DOMAIN_MEM_LIVE)
        } else {
            (sys::VIR_DOMAIN_AFFECT_CONFIG, sys::VIR_DOMAIN_MEM_CONFIG)
        };
        let old_vcpus = info.nr_virt_cpu;
        let old_memory = info.memory;
        let d = &found.domain;
        if vcpus != old_vcpus {
            d.set_vcpus_flags(vcpus, vcpu_flags)
                .map_err(|e| virt_error(op, e))?;
        }
        let undo_cpu = |why: &str| {
            if vcpus != old_vcpus {
                if let Err(e) = d.set_vcpus_flags(old_vcpus, vcpu_flags) {
                    warn!(member, error = %e, why, "restoring vCPUs failed");
                }
            }
        };
        if memory_kib != old_memory {
            if let Err(e) = d.set_memory_flags(memory_kib, mem_flags) {
                undo_cpu("memory change failed");
                return Err(virt_error(op, e));
            }
        }
        let undo_memory = |why: &str| {
            if memory_kib != old_memory {
                if let Err(e) = d.set_memory_flags(old_memory, mem_flags) {
                    warn!(member, error = %e, why, "restoring memory failed");
                }
            }
        };
        if let (true, Some(target)) = (grow_disk, target) {
            if let Err(e) =
                d.block_resize(&target, size.disk_bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            {
                undo_memory("disk grow failed");
                undo_cpu("disk grow failed");
                return Err(virt_error(op, e));
            }
        }
        if active {
            // Persist what now runs, so a restart does not undo it. Best effort: the live change
            // is in effect, and the next resize writes the definition again.
            if let Err(e) = d.set_vcpus_flags(vcpus, sys::VIR_DOMAIN_AFFECT_CONFIG) {
                warn!(member, error = %e, "writing vCPUs to the definition failed");
            }
            if let Err(e) = d.set_memory_flags(memory_kib, sys::VIR_DOMAIN_MEM_CONFIG) {
                warn!(member, error = %e, "writing memory to the definition failed");
            }
        }
        info!(
            member,
            vcpus,
            memory_kib,
            disk_bytes = size.disk_bytes,
            active,
            "domain resized"
        );
        Ok(if active {
            ResizeOutcome::AppliedLive
        } else {
            ResizeOutcome::PendingRestart
        })
    }

    /// Resizes a member of a quota host (LXC): the CFS quota and the memory limit, live and in
    /// the definition; a shut-off domain is redefined with them (no scheduler call: see
    /// [`lxc`]). All or nothing: a failed memory change puts the quota back.
    fn resize_quota(
        &self,
        found: &Found,
        quota_us: i64,
        memory_kib: u64,
        active: bool,
        info: &virt::domain::DomainInfo,
        op: &str,
    ) -> Result<ResizeOutcome, PlatformError> {
        let member = found.mark.member.as_str();
        let d = &found.domain;
        if !active {
            let xml = d
                .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                .map_err(|e| virt_error(op, e))?;
            let conn = &self.hosts[found.host].conn;
            Domain::define_xml(conn, &lxc::with_quota(&xml, quota_us, memory_kib))
                .map_err(|e| virt_error(op, e))?;
            info!(
                member,
                quota_us, memory_kib, "shut-off domain redefined with its new size"
            );
            return Ok(ResizeOutcome::PendingRestart);
        }
        let (_, old_memory) = self.size_of(found, info, op)?;
        // What to put back on a failure: the quota there was, or none (-1: unlimited, as an
        // adopted domain may have run).
        let live = d.get_xml_desc(0).map_err(|e| virt_error(op, e))?;
        let old_quota = lxc::quota_size(&live).0.map_or(-1, |cpus| {
            (cpus * lxc::QUOTA_PERIOD_US as f64).round() as i64
        });
        let both = sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG;
        let set_quota = |quota: i64| {
            let params = virt::domain::SchedulerInfo {
                vcpu_bw: virt::domain::SchedBandwidth {
                    period: Some(lxc::QUOTA_PERIOD_US),
                    quota: Some(quota),
                },
                ..Default::default()
            };
            d.set_scheduler_parameters_flags(&params, both)
        };
        // The current memory and the hard limit write the same cgroup file, two places in the
        // XML: both, so that the definition and the live domain agree.
        let set_memory = |kib: u64| {
            d.set_memory_flags(kib, sys::VIR_DOMAIN_MEM_LIVE | sys::VIR_DOMAIN_MEM_CONFIG)?;
            let params = virt::domain::MemoryParameters {
                hard_limit: Some(kib),
                ..Default::default()
            };
            d.set_memory_parameters(params, both)
        };
        let started = Instant::now();
        if quota_us != old_quota {
            set_quota(quota_us).map_err(|e| virt_error(op, e))?;
        }
        if memory_kib != old_memory {
            if let Err(e) = set_memory(memory_kib) {
                if quota_us != old_quota {
                    if let Err(undo) = set_quota(old_quota) {
                        warn!(member, error = %undo, "restoring the CPU quota failed");
                    }
                }
                // The first of the two memory calls may have gone through.
                if let Err(undo) = set_memory(old_memory) {
                    debug!(member, error = %undo, "restoring the memory limit failed");
                }
                if memory_kib < old_memory && e.code() == ErrorNumber::OperationFailed {
                    // The kernel keeps a limit below what the cgroup holds from being set
                    // (libvirt says only "Failed to set memory"): a refusal, not a retry.
                    let held = d.memory_stats(0).ok().and_then(|stats| {
                        stats
                            .iter()
                            .find(|s| s.tag == sys::VIR_DOMAIN_MEMORY_STAT_RSS)
                            .map(|s| s.val)
                    });
                    return Err(PlatformError::new(
                        ErrorKind::Refused,
                        op,
                        format!(
                            "a memory limit of {memory_kib} KiB is below what the domain holds \
                             ({} KiB): {}",
                            held.map_or("unknown".to_string(), |k| k.to_string()),
                            e.message()
                        ),
                    )
                    .with_source(e));
                }
                return Err(virt_error(op, e));
            }
        }
        info!(
            member,
            quota_us,
            memory_kib,
            took_ms = started.elapsed().as_millis() as u64,
            "domain resized live (CPU quota, memory limit)"
        );
        Ok(ResizeOutcome::AppliedLive)
    }

    fn fence(&self, member: &str, op: &str) -> Result<(), PlatformError> {
        let mut found = self.find(member, op)?;
        let d = &found.domain;
        if d.is_active().map_err(|e| virt_error(op, e))? {
            match d.destroy() {
                Ok(()) => {}
                // Stopped between the check and the destroy: fenced all the same.
                Err(e) if e.code() == ErrorNumber::OperationInvalid => {}
                Err(e) => return Err(virt_error(op, e)),
            }
        }
        if !found.mark.fenced && found.adopted.is_some() {
            // An adopted domain gets no ownership mark: the fence has its own element.
            found.mark.fenced = true;
            d.set_metadata(
                sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some("<fenced/>"),
                Some(FENCED_KEY),
                Some(FENCED_NS),
                sys::VIR_DOMAIN_AFFECT_CONFIG,
            )
            .map_err(|e| virt_error(op, e))?;
        } else if !found.mark.fenced {
            found.mark.fenced = true;
            d.set_metadata(
                sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(&found.mark.element()),
                Some(METADATA_KEY),
                Some(METADATA_NS),
                sys::VIR_DOMAIN_AFFECT_CONFIG,
            )
            .map_err(|e| virt_error(op, e))?;
        }
        info!(member, "domain fenced (destroyed)");
        Ok(())
    }

    fn remove(&self, member: &str, delete_data: bool, op: &str) -> Result<(), PlatformError> {
        let found = self.find(member, op)?;
        let d = &found.domain;
        if d.is_active().map_err(|e| virt_error(op, e))? {
            match d.destroy() {
                Ok(()) => {}
                // Stopped between the check and the destroy.
                Err(e) if e.code() == ErrorNumber::OperationInvalid => {}
                Err(e) => return Err(virt_error(op, e)),
            }
        }
        if let Some(rule) = found.adopted {
            let result = if self.config.adopt[rule].delete_data {
                self.undefine_adopted(&found, op)
            } else {
                self.retire(&found, op)
            };
            self.cpu_samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(member);
            return result;
        }
        if delete_data {
            // The volume goes first: if that fails, the domain is still there and a retry
            // finds it; a retry after a later failure finds no volume and goes on.
            let template = self.template(found.mark.role, op)?;
            if let Some(target) = &template.disk_target {
                let xml = d
                    .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                    .map_err(|e| virt_error(op, e))?;
                if let Some(path) = disk_source(&xml, target) {
                    let conn = &self.hosts[found.host].conn;
                    match virt::storage_vol::StorageVol::lookup_by_path(conn, &path) {
                        Ok(vol) => vol.delete(0).map_err(|e| virt_error(op, e))?,
                        Err(e) => {
                            warn!(member, %path, error = %e, "data disk is not a libvirt volume; left in place")
                        }
                    }
                }
            }
        }
        d.undefine().map_err(|e| virt_error(op, e))?;
        if delete_data {
            // After the undefine: a domain that is gone can no longer be started over its
            // folders. A failure here leaves folders (said so), not a domain.
            let template = self.template(found.mark.role, op)?;
            let daemon = libvirtd_mounts(&self.hosts[found.host]);
            for folder in lxc::member_folders(&template.host_dirs, member) {
                if let Err(e) = lxc::delete_member_folder(&folder, &daemon) {
                    warn!(member, folder = %folder.display(), error = %e, "the member's folder was not deleted");
                }
            }
        }
        self.cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(member);
        info!(member, delete_data, "domain removed");
        Ok(())
    }

    /// Ends Steward's care of an adopted member (shut off already) without deleting anything:
    /// renamed `<name>.retired` (libvirt renames inactive domains only) so that no rule takes it
    /// again, its definition and disks kept, and a log line saying where they are and how to
    /// delete them.
    fn retire(&self, found: &Found, op: &str) -> Result<(), PlatformError> {
        let d = &found.domain;
        let xml = d
            .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| virt_error(op, e))?;
        let retired = format!("{}{}", found.name, adopt::RETIRED_SUFFIX);
        d.rename(&retired, 0).map_err(|e| virt_error(op, e))?;
        let uri = &self.hosts[found.host].uri;
        // Steward is done with it: its fence record goes (best effort: it says nothing once the
        // domain is retired).
        match Domain::lookup_by_name(&self.hosts[found.host].conn, &retired) {
            Ok(d) => {
                if let Err(e) = d.set_metadata(
                    sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                    None,
                    None,
                    Some(FENCED_NS),
                    sys::VIR_DOMAIN_AFFECT_CONFIG,
                ) {
                    debug!(domain = %retired, error = %e, "clearing the fence record failed");
                }
            }
            Err(e) => debug!(domain = %retired, error = %e, "retired domain not found again"),
        }
        let disks = disks_of(&xml);
        let data: Vec<&str> = disks.iter().map(|d| d.source.as_str()).collect();
        let delete_with = delete_command(uri, &retired, &disks);
        warn!(
            member = %found.mark.member,
            domain = %retired,
            %uri,
            disks = ?data,
            "adopted member retired, nothing deleted: its domain is kept shut off as `{retired}` \
             on {uri}, its definition and disks {data:?} in place; once it is no longer needed: \
             `{delete_with}`"
        );
        Ok(())
    }

    /// Undefines an adopted member's domain (its rule says `delete_data`). libvirt's undefine
    /// never deletes disks, and Steward does not either: they did not come from its template.
    fn undefine_adopted(&self, found: &Found, op: &str) -> Result<(), PlatformError> {
        let d = &found.domain;
        let xml = d
            .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| virt_error(op, e))?;
        d.undefine().map_err(|e| virt_error(op, e))?;
        let disks: Vec<String> = disks_of(&xml).into_iter().map(|d| d.source).collect();
        warn!(
            member = %found.mark.member,
            domain = %found.name,
            uri = %self.hosts[found.host].uri,
            ?disks,
            "adopted member's domain undefined (its rule says delete_data); libvirt does not \
             delete disks, and they stay where they are: {disks:?}"
        );
        Ok(())
    }

    /// Retired adopted members: domains named `<base>.retired`, without Steward's metadata,
    /// whose base an adoption rule takes.
    fn kept(&self, op: &str) -> Result<Vec<KeptData>, PlatformError> {
        let mut kept = Vec::new();
        if self.config.adopt.is_empty() {
            return Ok(kept);
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let domains = host
                .conn
                .list_all_domains(0)
                .map_err(|e| virt_error(op, e))?;
            for domain in domains {
                let name = domain.get_name().map_err(|e| virt_error(op, e))?;
                let Some(base) = name.strip_suffix(adopt::RETIRED_SUFFIX) else {
                    continue;
                };
                if !matches!(self.owner(&domain), Owner::Nobody) {
                    continue;
                }
                let Some((_, member)) = adopt::adopted_by(&self.config.adopt, i, base, false)
                else {
                    continue;
                };
                let xml = domain
                    .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                    .map_err(|e| virt_error(op, e))?;
                let disks = disks_of(&xml);
                kept.push(KeptData {
                    member,
                    resource: name.clone(),
                    host: host.uri.clone(),
                    data: disks.iter().map(|d| d.source.clone()).collect(),
                    delete_with: delete_command(&host.uri, &name, &disks),
                });
            }
        }
        Ok(kept)
    }

    /// One reading of every running owned domain: its usage without the CPU rate, and its
    /// cumulative CPU time in nanoseconds (the rate needs two readings).
    fn read_usage(&self, op: &str) -> Result<Vec<(String, u64, Usage)>, PlatformError> {
        let now = (self.clock)();
        let mut out = Vec::new();
        for found in self.members(op)? {
            if !found.domain.is_active().unwrap_or(false) {
                continue;
            }
            let info = found.domain.get_info().map_err(|e| virt_error(op, e))?;
            // A local LXC domain: its cgroup's RSS + shared memory and OOM kills (libvirt's
            // figure for it counts page cache too).
            let host = &self.hosts[found.host];
            let from_cgroup = (host.cpu == CpuControl::Quota && is_local_uri(&host.uri))
                .then(|| found.domain.get_id())
                .flatten()
                .and_then(lxc::cgroup_memory);
            // Otherwise the host's RSS of the VM is its working set; drivers without statistics
            // (the test driver for domains it did not invent) give none, and None it stays.
            let memory_used = from_cgroup.map(|(used, _)| used).or_else(|| {
                found.domain.memory_stats(0).ok().and_then(|stats| {
                    stats
                        .iter()
                        .find(|s| s.tag == sys::VIR_DOMAIN_MEMORY_STAT_RSS)
                        .map(|s| s.val * 1024)
                })
            });
            let disk = self.disk_bytes(&found);
            let usage = Usage {
                at: now,
                cpu_used: None,
                memory_used,
                disk_used: None,
                disk_size: (disk > 0).then_some(disk),
                oom_kills: from_cgroup.and_then(|(_, ooms)| ooms),
            };
            out.push((found.mark.member.clone(), info.cpu_time, usage));
        }
        Ok(out)
    }
}

/// A size as a host applies it.
struct Sized {
    /// vCPUs (`{{vcpus}}`): the size on a vCPU host, the ceiling of the quota on a quota host.
    vcpus: u32,
    /// The CFS quota per [`lxc::QUOTA_PERIOD_US`], on a quota host.
    quota_us: Option<i64>,
    memory_kib: u64,
}

/// A size as `cpu` applies it, refused when outside what the template allows.
fn checked_size(
    template: &RoleTemplate,
    size: Size,
    cpu: CpuControl,
    op: &str,
) -> Result<Sized, PlatformError> {
    let refuse = |m: String| Err(PlatformError::new(ErrorKind::Refused, op, m));
    let (vcpus, quota_us) = match cpu {
        CpuControl::Vcpus => {
            if !(size.cpus >= 1.0 && size.cpus.fract() == 0.0) {
                return refuse(format!("libvirt gives whole vCPUs, not {}", size.cpus));
            }
            (size.cpus as u32, None)
        }
        CpuControl::Quota => {
            if !(size.cpus.is_finite() && size.cpus >= lxc::MIN_QUOTA_CPUS) {
                return refuse(format!(
                    "a CPU quota is at least {} CPU, not {}",
                    lxc::MIN_QUOTA_CPUS,
                    size.cpus
                ));
            }
            let quota = (size.cpus * lxc::QUOTA_PERIOD_US as f64).round() as i64;
            (size.cpus.ceil() as u32, Some(quota))
        }
    };
    if vcpus > template.max_vcpus {
        return refuse(format!(
            "{} CPUs is above the maximum of {}",
            size.cpus, template.max_vcpus
        ));
    }
    let memory_kib = size.memory_bytes / 1024;
    if memory_kib == 0 || memory_kib > template.max_memory_kib {
        return refuse(format!(
            "{memory_kib} KiB of memory is outside 1..={} KiB",
            template.max_memory_kib
        ));
    }
    Ok(Sized {
        vcpus,
        quota_us,
        memory_kib,
    })
}

/// The mount table of the local libvirtd serving `host` (it may run in a mount namespace of its
/// own, where an LXC domain's bind mounts are set up): checked before a member's folder goes.
fn libvirtd_mounts(host: &Host) -> Vec<std::path::PathBuf> {
    let pid = ["/run/libvirtd.pid", "/run/libvirt/virtlxcd.pid"]
        .iter()
        .filter(|_| is_local_uri(&host.uri))
        .find_map(|f| std::fs::read_to_string(f).ok())
        .and_then(|p| p.trim().parse::<u32>().ok());
    pid.map(|p| vec![std::path::PathBuf::from(format!("/proc/{p}/mountinfo"))])
        .unwrap_or_default()
}

/// A disk of a domain's definition (`device='disk'`: CD-ROMs and floppies are not data).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Disk {
    /// A file or block device path, or `pool/volume`, or `protocol:name` for a network disk.
    source: String,
    /// A plain file only this domain uses (neither shareable nor read-only): one that a
    /// `rm -f` deletes.
    own_file: bool,
}

/// The data disks of a domain's XML.
fn disks_of(xml: &str) -> Vec<Disk> {
    xml.split("<disk")
        .skip(1)
        .filter_map(|disk| {
            let (open, body) = disk.split_once('>')?;
            let body = body.split("</disk>").next()?;
            let attrs = element_attributes(&format!("<disk{open}>"))?;
            if attrs.get("device").is_some_and(|d| d != "disk") {
                return None;
            }
            let at = body.find("<source")?;
            let src = element_attributes(&body[at..])?;
            let (source, file) = if let Some(f) = src.get("file") {
                (f.clone(), true)
            } else if let Some(dev) = src.get("dev") {
                (dev.clone(), false)
            } else if let (Some(pool), Some(vol)) = (src.get("pool"), src.get("volume")) {
                (format!("{pool}/{vol}"), false)
            } else {
                let name = src.get("name")?;
                let protocol = src.get("protocol").map(String::as_str).unwrap_or("network");
                (format!("{protocol}:{name}"), false)
            };
            let shared = body.contains("<shareable") || body.contains("<readonly");
            Some(Disk {
                source,
                own_file: file && !shared,
            })
        })
        .collect()
}

/// How an operator deletes a retired domain: undefine it, then delete the disk files only it
/// used, on that host (other disks, block devices and volumes, are listed in the data).
fn delete_command(uri: &str, domain: &str, disks: &[Disk]) -> String {
    let mut command = format!("virsh -c {uri} undefine {domain}");
    let files: Vec<&str> = disks
        .iter()
        .filter(|d| d.own_file)
        .map(|d| d.source.as_str())
        .collect();
    if !files.is_empty() {
        command.push_str(&format!(" && rm -f {}", files.join(" ")));
    }
    command
}

/// The source file of the disk with target device `target` in a domain's XML.
fn disk_source(xml: &str, target: &str) -> Option<String> {
    xml.split("<disk").skip(1).find_map(|disk| {
        let disk = disk.split("</disk>").next()?;
        let names_target = disk.contains(&format!("dev='{target}'"))
            || disk.contains(&format!("dev=\"{target}\""));
        if !names_target {
            return None;
        }
        let at = disk.find("<source")?;
        element_attributes(&disk[at..])?.get("file").cloned()
    })
}

#[async_trait]
impl Platform for LibvirtPlatform {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    fn capabilities(&self) -> Capabilities {
        // libvirt's test driver has no virDomainBlockResize: say so instead of failing later.
        let can_grow = self
            .inner
            .config
            .templates
            .values()
            .any(|t| t.disk_target.is_some())
            && self
                .inner
                .hosts
                .iter()
                .all(|h| !h.driver.eq_ignore_ascii_case("test"));
        // Whole vCPUs where any host changes them so (QEMU): a size must suit every host.
        let cpu_unit = if self.inner.hosts.iter().all(|h| h.cpu == CpuControl::Quota) {
            CpuUnit::Quota
        } else {
            CpuUnit::Vcpus
        };
        Capabilities {
            cpu: Change::Live,
            cpu_unit,
            memory: Change::Live,
            disk_grow: if can_grow {
                Change::Live
            } else {
                Change::Unsupported
            },
            disk_shrink: Change::Unsupported,
            multi_host: self.inner.hosts.len() > 1,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "libvirt", cluster = %self.inner.config.cluster))]
    async fn list(&self) -> Result<Vec<PlatformMember>, PlatformError> {
        self.blocking("list members".to_string(), |inner, op| {
            let mut members = inner
                .members(op)?
                .iter()
                .map(|f| inner.member(f, op))
                .collect::<Result<Vec<_>, _>>()?;
            members.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(members)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "libvirt", cluster = %self.inner.config.cluster, member = %spec.name))]
    async fn create(&self, spec: &CreateSpec) -> Result<PlatformMember, PlatformError> {
        let spec = spec.clone();
        self.blocking(format!("create member {}", spec.name), move |inner, op| {
            inner.create(&spec, op)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "libvirt", cluster = %self.inner.config.cluster, member = %member))]
    async fn resize(&self, member: &str, size: Size) -> Result<ResizeOutcome, PlatformError> {
        let member = member.to_string();
        self.blocking(format!("resize member {member}"), move |inner, op| {
            inner.resize(&member, size, op)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "libvirt", cluster = %self.inner.config.cluster, member = %member))]
    async fn fence(&self, member: &str) -> Result<(), PlatformError> {
        let member = member.to_string();
        self.blocking(format!("fence member {member}"), move |inner, op| {
            inner.fence(&member, op)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "libvirt", cluster = %self.inner.config.cluster, member = %member))]
    async fn remove(&self, member: &str, delete_data: bool) -> Result<(), PlatformError> {
        let member = member.to_string();
        self.blocking(format!("remove member {member}"), move |inner, op| {
            inner.remove(&member, delete_data, op)
        })
        .await
    }

    /// Retired adopted members: shut off, renamed `<name>.retired`, definition and disks kept.
    async fn kept(&self) -> Result<Vec<KeptData>, PlatformError> {
        self.blocking("list retired members".to_string(), |inner, op| {
            inner.kept(op)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(platform = "libvirt", cluster = %self.inner.config.cluster))]
    async fn usage(&self) -> Result<BTreeMap<String, Usage>, PlatformError> {
        let read = || self.blocking("read usage".to_string(), |inner, op| inner.read_usage(op));
        let mut readings = read().await?;
        let mut when = Instant::now();
        let unsampled = {
            let samples = self
                .inner
                .cpu_samples
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            readings
                .iter()
                .any(|(name, _, _)| !samples.contains_key(name))
        };
        if unsampled {
            // A member seen for the first time has no earlier CPU time: take a second reading
            // after a short window (as `docker stats` does) rather than report no CPU figure.
            let first = readings;
            tokio::time::sleep(FIRST_CPU_WINDOW).await;
            {
                let mut samples = self
                    .inner
                    .cpu_samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for (name, cpu_ns, _) in &first {
                    samples.entry(name.clone()).or_insert((when, *cpu_ns));
                }
            }
            readings = read().await?;
            when = Instant::now();
        }
        let mut samples = self
            .inner
            .cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for (name, cpu_ns, mut usage) in readings {
            // vCPUs in use = CPU nanoseconds spent / wall nanoseconds elapsed.
            usage.cpu_used =
                samples
                    .insert(name.clone(), (when, cpu_ns))
                    .and_then(|(then, before)| {
                        let wall_ns = when.duration_since(then).as_nanos() as f64;
                        (wall_ns > 0.0 && cpu_ns >= before)
                            .then(|| (cpu_ns - before) as f64 / wall_ns)
                    });
            out.insert(name, usage);
        }
        // Forget members that stopped or went away, so a restart starts a fresh rate.
        samples.retain(|name, _| out.contains_key(name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_round_trips_through_its_element_and_escapes() {
        let mark = Mark {
            cluster: "demo".into(),
            role: Role::Balancer,
            member: "lb-1".into(),
            operation: "op \"7\" <&>".into(),
            replaces: Some("lb-0 \"old\"".into()),
            created: Some(1_700_000_000_000),
            fenced: true,
            address: Some("127.0.0.31".into()),
        };
        assert_eq!(Mark::parse(&mark.element()), Some(mark.clone()));
        assert_eq!(
            Mark::parse(&mark.metadata_element()["<metadata>".len()..]),
            Some(mark)
        );
        assert_eq!(
            Mark::parse("<member cluster='x'/>"),
            None,
            "role and member are required"
        );
    }

    #[test]
    fn data_disks_are_told_from_cdroms_and_shared_ones_are_never_rm_ed() {
        let xml = "<domain><devices>\
            <disk type='file' device='disk'><driver name='qemu'/><source file='/v/pg.qcow2'/><target dev='vda'/></disk>\
            <disk type='file' device='cdrom'><source file='/iso/debian.iso'/><target dev='sda'/><readonly/></disk>\
            <disk type='block' device='disk'><source dev='/dev/vg/pgdata'/><target dev='vdb'/></disk>\
            <disk type='volume' device='disk'><source pool='default' volume='wal'/><target dev='vdc'/></disk>\
            <disk type='file' device='disk'><source file='/v/shared.img'/><target dev='vdd'/><shareable/></disk>\
            </devices></domain>";
        let disks = disks_of(xml);
        let sources: Vec<&str> = disks.iter().map(|d| d.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "/v/pg.qcow2",
                "/dev/vg/pgdata",
                "default/wal",
                "/v/shared.img"
            ]
        );
        assert_eq!(
            delete_command("qemu+ssh://db-a/system", "pg-1.retired", &disks),
            "virsh -c qemu+ssh://db-a/system undefine pg-1.retired && rm -f /v/pg.qcow2"
        );
        assert_eq!(
            delete_command("test:///default", "x.retired", &[]),
            "virsh -c test:///default undefine x.retired"
        );
    }

    #[test]
    fn disk_source_finds_the_target_disk() {
        let xml =
            "<domain><devices><disk type='file'><source file='/a.img'/><target dev='vda'/></disk>\
            <disk type='file'><source file='/b.img'/><target dev='vdb'/></disk></devices></domain>";
        assert_eq!(disk_source(xml, "vdb").as_deref(), Some("/b.img"));
        assert_eq!(disk_source(xml, "vdc"), None);
    }
}
