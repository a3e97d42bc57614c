//! The one observer both loops share: each tick it asks Patroni (`/cluster`, each member's
//! `/patroni`), the platform (its list and its usage figures) and, when configured, a metrics
//! source, and assembles one [`Observation`](steward_model::observation::Observation) with
//! [`crate::observe::assemble::assemble`].
//!
//! What it is: the asking, and one rule of its own: the platform's usage figures fill the CPU,
//! memory, disk and OOM figures Prometheus did not give (source `platform`, their own sampling
//! time). When the platform does not answer, the last figures are kept WITH THEIR OLD TIME, so
//! the policies see them go stale and hold still (promise 3) instead of seeing zeros.
//!
//! Each source gets at most [`Observer::time_limit`] per pass; one that takes longer counts as
//! not answering (a note says so). Without that bound one hung source stops the loop: with its
//! DCS down, Patroni's `GET /cluster` hangs for 5 s per request, and the client's retries over
//! every seed URL kept one pass waiting about 50 s, during which the loops neither observed,
//! published nor said why (found by the e2e etcd outage test, tests/cli/e2e.rs).
//!
//! What it is not: a judge. It never decides that a member is bad or a figure too old; the
//! repairer and the policies do, from the times carried by each figure.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use steward_adapters::patroni::PatroniApi;
use steward_model::observation::{Figure, Source};
use steward_model::ports::metrics::MetricsSource;
use steward_model::ports::{Platform, Usage};
use steward_model::Timestamp;
use steward_scaler::Snapshot;
use tracing::debug;

use crate::observe::assemble::{assemble, Answers};

/// One tick's view: the observation, and the platform's list it was joined with.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The observation, the platform's members (empty when the platform did not answer) and
    /// its capabilities: the scaler's input as it is, so the scale loop lends it
    /// ([`steward_scaler::Scaler::observed`]) instead of copying both every tick.
    pub snapshot: Snapshot,
    /// Members' Patroni REST base URLs, by name.
    pub api_urls: BTreeMap<String, String>,
    /// Members retired with their data kept (issue 15), for `/status`.
    pub kept: Vec<steward_model::ports::KeptData>,
}

/// Default of [`Observer::time_limit`]: shorter than the default tick (15 s), longer than any
/// healthy answer over the network (milliseconds on a LAN) or one client timeout (Patroni's 5 s).
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(10);

/// `fut`, or `None` once `limit` has passed.
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

/// Asks the sources.
pub struct Observer {
    cluster: String,
    platform: Arc<dyn Platform>,
    patroni: Arc<dyn PatroniApi>,
    /// Asked in order; a metric two sources answer is taken from the first.
    metrics: Vec<Arc<dyn MetricsSource>>,
    /// The last usage figures by member, kept across a platform that stops answering.
    last_usage: BTreeMap<String, Usage>,
    /// The longest one source may take in one pass (see the module doc).
    time_limit: Duration,
}

impl Observer {
    pub fn new(
        cluster: impl Into<String>,
        platform: Arc<dyn Platform>,
        patroni: Arc<dyn PatroniApi>,
        metrics: Vec<Arc<dyn MetricsSource>>,
    ) -> Self {
        Observer {
            cluster: cluster.into(),
            platform,
            patroni,
            metrics,
            last_usage: BTreeMap::new(),
            time_limit: DEFAULT_TIME_LIMIT,
        }
    }

    /// Sets how long one source may take in one pass.
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// How long one source may take in one pass: Patroni's `/cluster`, each member's
    /// `/patroni` (asked side by side), the platform's list, its usage, all metrics queries.
    pub fn time_limit(&self) -> Duration {
        self.time_limit
    }

    /// One pass at `now`. Never fails: a source that does not answer becomes a note.
    pub async fn observe(&mut self, now: Timestamp) -> Seen {
        let mut notes = Vec::new();
        let limit = self.time_limit;
        let late = |what: &str| format!("{what} did not answer within {limit:?}");
        let cluster = match within(limit, self.patroni.cluster()).await {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                notes.push(format!("patroni /cluster failed ({}): {e}", e.class()));
                None
            }
            None => {
                notes.push(late("patroni /cluster"));
                None
            }
        };
        let mut statuses = Vec::new();
        let mut api_urls = BTreeMap::new();
        if let Some(c) = &cluster {
            let mut tasks = tokio::task::JoinSet::new();
            for m in &c.members {
                let Some(base) = m.api_base() else { continue };
                api_urls.insert(m.name.clone(), base.clone());
                let (patroni, name) = (Arc::clone(&self.patroni), m.name.clone());
                tasks.spawn(async move {
                    let status = within(limit, patroni.member_status(&base)).await;
                    (name, status)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((name, Some(Ok(status)))) => statuses.push((name, status)),
                    Ok((name, Some(Err(e)))) => {
                        debug!(member = %name, error = %e, "member's /patroni did not answer");
                        notes.push(format!("{name}: /patroni failed ({})", e.class()));
                    }
                    Ok((name, None)) => notes.push(late(&format!("{name}: /patroni"))),
                    Err(e) => notes.push(format!("a /patroni request task failed: {e}")),
                }
            }
        }
        let platform = match within(limit, self.platform.list()).await {
            Some(Ok(list)) => Some(list),
            Some(Err(e)) => {
                notes.push(format!("platform list failed ({}): {e}", e.kind));
                None
            }
            None => {
                notes.push(late("platform list"));
                None
            }
        };
        let kept = match within(limit, self.platform.kept()).await {
            Some(Ok(kept)) => kept,
            Some(Err(e)) => {
                notes.push(format!("platform kept-data list failed ({}): {e}", e.kind));
                Vec::new()
            }
            None => {
                notes.push(late("platform kept-data list"));
                Vec::new()
            }
        };
        match within(limit, self.platform.usage()).await {
            Some(Ok(usage)) => self.last_usage = usage,
            Some(Err(e)) => notes.push(format!(
                "platform usage failed ({}): the last figures are kept and age",
                e.kind
            )),
            None => notes.push(format!(
                "{}: the last figures are kept and age",
                late("platform usage")
            )),
        }
        let mut metrics = BTreeMap::new();
        for source in &self.metrics {
            // One bound for all of a source's queries: they go one after another, and a hung
            // Prometheus would otherwise cost the limit once per metric.
            let asked = within(limit, async {
                for metric in source.metrics() {
                    if metrics.contains_key(&metric) {
                        continue; // an earlier source answered it
                    }
                    match source.instant(metric, now).await {
                        Ok(r) => {
                            metrics.insert(metric, r);
                        }
                        Err(e) => {
                            notes.push(format!("{}: metrics query failed: {e}", metric.as_str()))
                        }
                    }
                }
            })
            .await;
            if asked.is_none() {
                for metric in source.metrics() {
                    if !metrics.contains_key(&metric) {
                        notes.push(format!(
                            "{}: metrics query failed: {}",
                            metric.as_str(),
                            late("prometheus")
                        ));
                    }
                }
            }
        }
        let answers = Answers {
            cluster: cluster.as_ref(),
            statuses: &statuses,
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
            snapshot: Snapshot {
                observation,
                platform: listed,
                capabilities: self.platform.capabilities(),
            },
            api_urls,
            kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use steward_adapters::patroni::{
        ActionOutcome, ClusterView, MemberStatus, PatroniError, RestartConditions, Switchover,
    };

    use steward_model::observation::{Figure, PatroniRole, Source};
    use steward_model::ports::metrics::{Metric, MetricReading, MetricsError, Reading};

    use super::*;
    use crate::run::config::RawSimulated;
    use crate::run::sim::SimWorld;

    /// The simulated cluster's Patroni, except that `GET /cluster` never answers: Patroni's
    /// REST API with its DCS down.
    struct HungCluster(Arc<dyn PatroniApi>);

    #[async_trait]
    impl PatroniApi for HungCluster {
        async fn cluster(&self) -> Result<ClusterView, PatroniError> {
            std::future::pending().await
        }
        async fn member_status(&self, api_base: &str) -> Result<MemberStatus, PatroniError> {
            self.0.member_status(api_base).await
        }
        async fn switchover(&self, r: &Switchover) -> Result<ActionOutcome, PatroniError> {
            self.0.switchover(r).await
        }
        async fn failover(&self, candidate: &str) -> Result<ActionOutcome, PatroniError> {
            self.0.failover(candidate).await
        }
        async fn restart(
            &self,
            api_base: &str,
            conditions: &RestartConditions,
        ) -> Result<ActionOutcome, PatroniError> {
            self.0.restart(api_base, conditions).await
        }
        async fn reinitialize(
            &self,
            api_base: &str,
            force: bool,
        ) -> Result<ActionOutcome, PatroniError> {
            self.0.reinitialize(api_base, force).await
        }
        async fn reload(&self, api_base: &str) -> Result<ActionOutcome, PatroniError> {
            self.0.reload(api_base).await
        }
        async fn config(&self) -> Result<serde_json::Value, PatroniError> {
            self.0.config().await
        }
        async fn patch_config(
            &self,
            patch: &serde_json::Value,
        ) -> Result<serde_json::Value, PatroniError> {
            self.0.patch_config(patch).await
        }
    }

    async fn world() -> SimWorld {
        let settings = RawSimulated::default().validate().unwrap();
        SimWorld::build("demo", &settings, None).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_patroni_costs_one_time_limit_and_says_so() {
        let world = world().await;
        let limit = Duration::from_secs(3);
        let patroni: Arc<dyn PatroniApi> = world.patroni.clone();
        let mut observer = Observer::new(
            "demo",
            world.platform.clone(),
            Arc::new(HungCluster(patroni)),
            Vec::new(),
        )
        .with_time_limit(limit);
        let began = tokio::time::Instant::now();
        // Bounded here too, so a missing limit fails the test instead of hanging it.
        let seen = tokio::time::timeout(limit * 4, observer.observe(world.clock.now()))
            .await
            .expect("the pass ends although /cluster never answers");
        let took = began.elapsed();
        assert!(took >= limit && took < limit * 2, "took {took:?}");
        let late = format!("patroni /cluster did not answer within {limit:?}");
        assert!(
            seen.snapshot.observation.notes.contains(&late),
            "{:?}",
            seen.snapshot.observation.notes
        );
        // The platform still answered: its members are there, with nothing from Patroni.
        assert!(!seen.snapshot.platform.is_empty());
        assert!(seen
            .snapshot
            .observation
            .members
            .iter()
            .all(|m| m.patroni_state.is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answering_patroni_is_not_cut_short() {
        let world = world().await;
        let mut observer = Observer::new(
            "demo",
            world.platform.clone(),
            world.patroni.clone(),
            Vec::new(),
        )
        .with_time_limit(Duration::from_secs(3));
        let seen = observer.observe(world.clock.now()).await;
        assert!(
            seen.snapshot
                .observation
                .notes
                .iter()
                .all(|n| !n.contains("did not answer within")),
            "{:?}",
            seen.snapshot.observation.notes
        );
        assert!(seen
            .snapshot
            .observation
            .members
            .iter()
            .any(|m| m.patroni_role == Some(PatroniRole::Leader)));
    }

    /// A metrics source that answers the same value for every member it is told of.
    struct Fixed {
        members: Vec<String>,
        answers: Vec<(Metric, f64)>,
        asked: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl MetricsSource for Fixed {
        fn metrics(&self) -> Vec<Metric> {
            self.answers.iter().map(|(m, _)| *m).collect()
        }
        async fn instant(
            &self,
            metric: Metric,
            now: Timestamp,
        ) -> Result<MetricReading, MetricsError> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let value = self.answers.iter().find(|(m, _)| *m == metric).unwrap().1;
            Ok(MetricReading {
                metric,
                label: "member".into(),
                values: self
                    .members
                    .iter()
                    .map(|n| {
                        let figure = Figure::new(value, Source::Prometheus, now);
                        (n.clone(), Reading::Fresh(figure))
                    })
                    .collect(),
            })
        }
        async fn range(
            &self,
            _: Metric,
            _: Timestamp,
            _: Timestamp,
            _: Duration,
        ) -> Result<BTreeMap<String, Vec<Figure>>, MetricsError> {
            Ok(BTreeMap::new())
        }
    }

    /// The observer asks every metrics source in order; a metric the first one answered is not
    /// asked of the second, and the second fills in what the first lacks.
    #[tokio::test(start_paused = true)]
    async fn metrics_come_from_every_source_the_first_answer_winning() {
        let world = world().await;
        let names: Vec<String> = world
            .platform
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        let first = Arc::new(Fixed {
            members: names.clone(),
            answers: vec![(Metric::CpuUsed, 0.25)],
            asked: Default::default(),
        });
        let second = Arc::new(Fixed {
            members: names,
            answers: vec![(Metric::CpuUsed, 9.0), (Metric::Connections, 42.0)],
            asked: Default::default(),
        });
        let mut observer = Observer::new(
            "demo",
            world.platform.clone(),
            world.patroni.clone(),
            vec![first.clone() as Arc<dyn MetricsSource>, second.clone()],
        );
        let seen = observer.observe(world.clock.now()).await;
        let m = &seen.snapshot.observation.members[0];
        assert_eq!(
            m.cpu_used.map(|f| f.value),
            Some(0.25),
            "the first source's answer"
        );
        assert_eq!(
            m.connections.map(|f| f.value),
            Some(42.0),
            "the second fills in"
        );
        assert_eq!(first.asked.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            second.asked.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "cpu was not asked again"
        );
    }
}
