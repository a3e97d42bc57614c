//! The one observer both loops share: each tick it asks Patroni (`/cluster`, each member's
//! `/patroni`), the platform (its list and its usage figures) and, when configured, a metrics
//! source, and assembles one [`Observation`] with [`crate::observe::assemble::assemble`].
//!
//! What it is: the asking, and one rule of its own: the platform's usage figures fill the CPU,
//! memory, disk and OOM figures Prometheus did not give (source `platform`, their own sampling
//! time). When the platform does not answer, the last figures are kept WITH THEIR OLD TIME, so
//! the policies see them go stale and hold still (promise 3) instead of seeing zeros.
//!
//! What it is not: a judge. It never decides that a member is bad or a figure too old; the
//! repairer and the policies do, from the times carried by each figure.

use std::collections::BTreeMap;
use std::sync::Arc;

use steward_adapters::patroni::PatroniApi;
use steward_adapters::prometheus::MetricsSource;
use steward_model::observation::{Figure, Observation, Source};
use steward_model::ports::{Capabilities, Platform, PlatformMember, Usage};
use steward_model::Timestamp;
use tracing::debug;

use crate::observe::assemble::{assemble, Answers};

/// One tick's view: the observation, and the platform's list it was joined with.
#[derive(Clone, Debug)]
pub struct Seen {
    pub observation: Observation,
    /// The platform's members (empty when the platform did not answer).
    pub platform: Vec<PlatformMember>,
    pub capabilities: Capabilities,
    /// Members' Patroni REST base URLs, by name.
    pub api_urls: BTreeMap<String, String>,
}

/// Asks the sources.
pub struct Observer {
    cluster: String,
    platform: Arc<dyn Platform>,
    patroni: Arc<dyn PatroniApi>,
    metrics: Option<Arc<dyn MetricsSource>>,
    /// The last usage figures by member, kept across a platform that stops answering.
    last_usage: BTreeMap<String, Usage>,
}

impl Observer {
    pub fn new(
        cluster: impl Into<String>,
        platform: Arc<dyn Platform>,
        patroni: Arc<dyn PatroniApi>,
        metrics: Option<Arc<dyn MetricsSource>>,
    ) -> Self {
        Observer {
            cluster: cluster.into(),
            platform,
            patroni,
            metrics,
            last_usage: BTreeMap::new(),
        }
    }

    /// One pass at `now`. Never fails: a source that does not answer becomes a note.
    pub async fn observe(&mut self, now: Timestamp) -> Seen {
        let mut notes = Vec::new();
        let cluster = match self.patroni.cluster().await {
            Ok(c) => Some(c),
            Err(e) => {
                notes.push(format!("patroni /cluster failed ({}): {e}", e.class()));
                None
            }
        };
        let mut statuses = BTreeMap::new();
        let mut api_urls = BTreeMap::new();
        if let Some(c) = &cluster {
            let mut tasks = tokio::task::JoinSet::new();
            for m in &c.members {
                let Some(base) = m.api_base() else { continue };
                api_urls.insert(m.name.clone(), base.clone());
                let (patroni, name) = (Arc::clone(&self.patroni), m.name.clone());
                tasks.spawn(async move { (name, patroni.member_status(&base).await) });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((name, Ok(status))) => {
                        statuses.insert(name, status);
                    }
                    Ok((name, Err(e))) => {
                        debug!(member = %name, error = %e, "member's /patroni did not answer");
                        notes.push(format!("{name}: /patroni failed ({})", e.class()));
                    }
                    Err(e) => notes.push(format!("a /patroni request task failed: {e}")),
                }
            }
        }
        let platform = match self.platform.list().await {
            Ok(list) => Some(list),
            Err(e) => {
                notes.push(format!("platform list failed ({}): {e}", e.kind));
                None
            }
        };
        match self.platform.usage().await {
            Ok(usage) => self.last_usage = usage,
            Err(e) => notes.push(format!(
                "platform usage failed ({}): the last figures are kept and age",
                e.kind
            )),
        }
        let mut metrics = BTreeMap::new();
        if let Some(source) = &self.metrics {
            for metric in source.metrics() {
                match source.instant(metric, now).await {
                    Ok(r) => {
                        metrics.insert(metric, r);
                    }
                    Err(e) => notes.push(format!("{}: metrics query failed: {e}", metric.as_str())),
                }
            }
        }
        let answers = Answers {
            cluster: cluster.as_ref(),
            statuses,
            metrics,
            platform: platform.as_deref(),
            notes,
        };
        let mut observation = assemble(&self.cluster, now, &answers);
        let listed = platform.unwrap_or_default();
        for m in &mut observation.members {
            if let Some(p) = listed.iter().find(|p| p.name == m.name) {
                m.restart_count = Some(p.restart_count);
            }
            let Some(u) = self.last_usage.get(&m.name) else {
                continue;
            };
            let fig = |v: f64| Some(Figure::new(v, Source::Platform, u.at));
            if m.cpu_used.is_none() {
                m.cpu_used = u.cpu_used.and_then(fig);
            }
            if m.memory_used.is_none() {
                m.memory_used = u.memory_used.and_then(|v| fig(v as f64));
            }
            if m.disk_used.is_none() {
                m.disk_used = u.disk_used.and_then(|v| fig(v as f64));
            }
            if m.oom_kills.is_none() {
                m.oom_kills = u.oom_kills.and_then(|v| fig(v as f64));
            }
        }
        Seen {
            observation,
            platform: listed,
            capabilities: self.platform.capabilities(),
            api_urls,
        }
    }
}
