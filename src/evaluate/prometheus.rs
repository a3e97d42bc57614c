//! `steward evaluate --prometheus`: a cluster's real history, read from Prometheus, as a recording.
//!
//! What this is: one range query per metric for all members (never one per member), over
//! `[until - since, until]` at `step`, in chunks Prometheus accepts; the answers are turned into
//! the same [`MemberRecord`]s a `steward observe --record` recording holds, then grouped into
//! observations with [`group_by_time`], so the replay that follows is the JSONL path's, line for
//! line. A member's role in Patroni comes from one more range query (`patroni_primary` by
//! default): 1 is the leader, 0 a replica.
//!
//! Missing is missing: a point Prometheus does not have (a scrape gap, an empty answer, NaN or
//! ±Inf, which the adapter drops) leaves the record's field `None`, never zero; an instant where
//! no query has any point is not replayed at all. A query that fails is named on the log and its
//! metric stays missing; only when every query fails does the command fail.
//!
//! What it is not: a source of sizes. Prometheus knows usage, not what each member was given,
//! so the sizes come from the command line (`--cpus`, `--memory`, `--disk`); a knob without a
//! size is not replayed. It also does not guess roles: members are databases unless named with
//! `--balancers`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use steward_adapters::prometheus::{
    Metric, MetricQuery, MetricsError, MetricsSource, PrometheusClient, PrometheusError,
    PrometheusSettings,
};
use steward_model::observation::{Figure, PatroniRole};
use steward_model::ports::ErrorKind;
use steward_model::record::MemberRecord;
use steward_model::{Role, Size, Timestamp};
use tracing::{info, warn};

/// Prometheus refuses a range query of more than 11,000 points per series; stay well below.
pub const MAX_POINTS_PER_QUERY: u64 = 10_000;

/// The default query telling each member's Patroni role over time (Patroni's own `/metrics`).
pub const DEFAULT_LEADER_QUERY: &str = "max by (member) (patroni_primary)";

/// Which stretch of history to read, and how finely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The first instant asked for, a whole multiple of `step` (so reruns ask for the same
    /// instants and Prometheus's answers line up between metrics).
    pub start: Timestamp,
    pub end: Timestamp,
    pub step: Duration,
}

impl Span {
    /// `since` back from `until`, at `step` (at least 1 s: Prometheus's resolution is seconds).
    pub fn new(until: Timestamp, since: Duration, step: Duration) -> Result<Span, HistoryError> {
        let step_ms = step.as_millis() as i64;
        if step_ms < 1000 || step_ms % 1000 != 0 {
            return Err(HistoryError::Step(step));
        }
        if since < step {
            return Err(HistoryError::Since { since, step });
        }
        let from = (until - since).as_millis();
        Ok(Span {
            start: Timestamp::from_millis(from.div_euclid(step_ms) * step_ms),
            end: until,
            step,
        })
    }

    /// The span cut into pieces of at most [`MAX_POINTS_PER_QUERY`] points, back to back
    /// (each piece starts one step after the previous ended, so no instant is asked twice).
    pub fn chunks(&self) -> Vec<(Timestamp, Timestamp)> {
        let step = self.step.as_millis() as i64;
        let width = step * (MAX_POINTS_PER_QUERY as i64 - 1);
        let mut out = Vec::new();
        let mut from = self.start.as_millis();
        while from <= self.end.as_millis() {
            let to = (from + width).min(self.end.as_millis());
            out.push((Timestamp::from_millis(from), Timestamp::from_millis(to)));
            from += width + step;
        }
        out
    }
}

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("--step {0:?} must be whole seconds, at least 1s")]
    Step(Duration),
    #[error("--since {since:?} is shorter than one --step {step:?}")]
    Since { since: Duration, step: Duration },
    #[error("setting up the prometheus client failed")]
    Client(#[source] PrometheusError),
    /// Every query failed; the first failure is the cause.
    #[error("every prometheus query failed ({failed} of them)")]
    AllFailed {
        failed: usize,
        #[source]
        source: MetricsError,
    },
    #[error("prometheus has no sample of any member between {start} and {end}")]
    Empty { start: Timestamp, end: Timestamp },
}

impl HistoryError {
    /// Transient (Prometheus down or slow: try again) or permanent (fix the flags or queries).
    pub fn class(&self) -> ErrorKind {
        match self {
            HistoryError::AllFailed { source, .. } => source.class(),
            HistoryError::Client(source) => source.class(),
            HistoryError::Step(_) | HistoryError::Since { .. } | HistoryError::Empty { .. } => {
                ErrorKind::Permanent
            }
        }
    }
}

/// What the command line says about the members that Prometheus cannot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The cluster's name in the records.
    pub cluster: String,
    /// The size every member of a role had over the history (zero: not known).
    pub size: Option<Size>,
    /// Members that are balancers; every other member is a database.
    pub balancers: BTreeSet<String>,
}

/// Every range answer: per metric, per member (the member label's value), its points in time
/// order. `roles` is the leader query's answer (1: leader, 0: replica), when it was asked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answers {
    pub metrics: BTreeMap<Metric, BTreeMap<String, Vec<Figure>>>,
    pub roles: BTreeMap<String, Vec<Figure>>,
}

/// Reads the history of every metric `source` has a query for (one range query per metric
/// and chunk), and the roles from `roles` (a source whose only metric carries the leader query;
/// see [`leader_source`]). Failed queries are logged and leave their metric missing.
pub async fn fetch(
    source: &dyn MetricsSource,
    roles: Option<(&dyn MetricsSource, Metric)>,
    span: Span,
) -> Result<Answers, HistoryError> {
    let mut answers = Answers::default();
    let mut failures: Vec<(&'static str, MetricsError)> = Vec::new();
    let mut asked = 0usize;
    let metrics: Vec<(&dyn MetricsSource, Metric, Option<&'static str>)> = source
        .metrics()
        .into_iter()
        // A replay sizes members: the slots' history is not one of its inputs.
        .filter(|m| m.is_per_member())
        .map(|m| (source, m, None))
        .chain(roles.map(|(s, m)| (s, m, Some("leader"))))
        .collect();
    for (from, to) in span.chunks() {
        for &(src, metric, alias) in &metrics {
            asked += 1;
            let name = alias.unwrap_or(metric.as_str());
            match src.range(metric, from, to, span.step).await {
                Ok(series) => {
                    let into = match alias {
                        Some(_) => &mut answers.roles,
                        None => answers.metrics.entry(metric).or_default(),
                    };
                    for (member, points) in series {
                        into.entry(member).or_default().extend(points);
                    }
                }
                Err(e) => {
                    warn!(metric = name, %from, %to, error = %e, class = %e.class(), "prometheus range query failed; the metric stays missing");
                    failures.push((name, e));
                }
            }
        }
    }
    if failures.len() == asked {
        let failed = failures.len();
        if let Some((_, source)) = failures.into_iter().next() {
            return Err(HistoryError::AllFailed { failed, source });
        }
    }
    info!(
        metrics = answers.metrics.len(),
        queries = asked,
        "prometheus history read"
    );
    Ok(answers)
}

/// A client whose only query is `query` (labelled by `label`), filed under [`Metric::LagBytes`]:
/// the adapter asks range queries by [`Metric`] and has no slot for a role, so this borrows
/// one. The returned metric is the slot to ask for.
pub fn leader_source(
    settings: &PrometheusSettings,
    query: &str,
    label: &str,
) -> Result<(PrometheusClient, Metric), HistoryError> {
    let slot = Metric::LagBytes;
    let mut settings = settings.clone();
    settings.queries = BTreeMap::from([(
        slot,
        MetricQuery {
            query: query.to_string(),
            label: label.to_string(),
        },
    )]);
    let client = PrometheusClient::new(&settings).map_err(HistoryError::Client)?;
    Ok((client, slot))
}

/// The answers as member records, one per member and instant that has any point, in time
/// order. Pure: what Prometheus did not say stays `None`.
pub fn to_records(answers: &Answers, facts: &Facts) -> Vec<MemberRecord> {
    let mut records: BTreeMap<(Timestamp, &str), MemberRecord> = BTreeMap::new();
    // A member's only word may be its role: it still existed at that instant.
    for (member, points) in &answers.roles {
        for p in points {
            record(&mut records, p.at, member, facts).patroni_role = Some(if p.value >= 0.5 {
                PatroniRole::Leader
            } else {
                PatroniRole::Replica
            });
        }
    }
    for (&metric, by_member) in &answers.metrics {
        for (member, points) in by_member {
            for p in points {
                let r = record(&mut records, p.at, member, facts);
                let value = Some(p.value);
                match metric {
                    Metric::CpuUsed => r.cpu_used = value,
                    Metric::MemoryUsed => r.memory_used = value,
                    Metric::DiskUsed => r.disk_used = value,
                    Metric::WalBytes => r.wal_bytes = value,
                    Metric::Connections => r.connections = value,
                    Metric::ReadRate => r.read_rate = value,
                    Metric::LagBytes => r.lag_bytes = value,
                    Metric::OomKills => r.oom_kills = value,
                    Metric::CacheHitRatio => r.cache_hit_ratio = value,
                    Metric::SharedBuffers => r.shared_buffers = value,
                    Metric::SlotWalBytes => {}
                }
            }
        }
    }
    records.into_values().collect()
}

/// The record of `member` at `at`, made (every figure unknown) on first sight.
fn record<'a, 'm>(
    records: &'a mut BTreeMap<(Timestamp, &'m str), MemberRecord>,
    at: Timestamp,
    member: &'m str,
    facts: &Facts,
) -> &'a mut MemberRecord {
    records
        .entry((at, member))
        .or_insert_with(|| empty_record(at, member, facts))
}

fn empty_record(at: Timestamp, member: &str, facts: &Facts) -> MemberRecord {
    MemberRecord {
        time: at,
        cluster: Some(facts.cluster.clone()),
        member: member.to_string(),
        role: if facts.balancers.contains(member) {
            Role::Balancer
        } else {
            Role::Database
        },
        patroni_role: None,
        patroni_state: None,
        platform_state: None,
        timeline: None,
        streaming: None,
        lag_bytes: None,
        cpu_used: None,
        memory_used: None,
        disk_used: None,
        wal_bytes: None,
        connections: None,
        read_rate: None,
        oom_kills: None,
        cache_hit_ratio: None,
        shared_buffers: None,
        restart_count: None,
        size: facts.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn data(name: &str) -> String {
        let p = format!(
            "{}/tests/data/evaluate/prometheus/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// A Prometheus that answers range queries from recorded files, chosen by `route` from
    /// the decoded query; it counts the requests it served.
    async fn serve(
        route: fn(&str) -> (&'static str, String),
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 8192];
                    // The client POSTs the query as a form: read the head, then the body.
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                        if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&req[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if req.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let text = String::from_utf8_lossy(&req).to_string();
                    let query = form_value(&text, "query").unwrap_or_default();
                    let (status, body) = route(&query);
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        (base, served)
    }

    /// `key`'s value in a request's query string or form body, decoded.
    fn form_value(request: &str, key: &str) -> Option<String> {
        let body = request.split("\r\n\r\n").nth(1).unwrap_or("");
        let target = request.split_whitespace().nth(1).unwrap_or("");
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        [body, query]
            .iter()
            .flat_map(|s| s.split('&'))
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .map(decode)
    }

    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).to_string()
    }

    /// The lab's recorded answers for the default queries it has data for.
    fn lab(query: &str) -> (&'static str, String) {
        let file = if query.contains("container_cpu_usage_seconds_total") {
            "query_range.cadvisor_cpu.http200.json"
        } else if query.contains("container_memory_rss") {
            // The lab has no cAdvisor either: the process RSS stands in, to have a memory.
            "query_range.process_resident_memory.http200.json"
        } else if query.contains("pg_stat_activity_count") {
            "query_range.connections.http200.json"
        } else if query.contains("pg_database_size_bytes") {
            "query_range.database_size.http200.json"
        } else if query.contains("xact_commit") {
            "query_range.read_rate.http200.json"
        } else if query.contains("patroni_xlog_replayed_location") {
            "query_range.replica_bytes_behind_leader.http200.json"
        } else if query.contains("patroni_primary") {
            "query_range.patroni_primary.http200.json"
        } else if query.contains("container_oom_events_total") {
            return (
                "400 Bad Request",
                data("query_range.bad_syntax.http400.json"),
            );
        } else {
            return ("404 Not Found", "{}".into());
        };
        ("200 OK", data(file))
    }

    fn settings(base: &str) -> PrometheusSettings {
        PrometheusSettings::with_url(base).unwrap()
    }

    /// The recorded lab span: 15 minutes at 15 s.
    fn lab_span() -> Span {
        Span::new(
            Timestamp::from_secs(1_795_713_915),
            Duration::from_secs(900),
            Duration::from_secs(15),
        )
        .unwrap()
    }

    fn facts() -> Facts {
        Facts {
            cluster: "lab".into(),
            size: Some(Size {
                cpus: 2.0,
                memory_bytes: 1 << 30,
                disk_bytes: 10 << 30,
            }),
            balancers: BTreeSet::new(),
        }
    }

    #[tokio::test]
    async fn the_lab_history_becomes_records_with_roles_and_nothing_invented() {
        let (base, served) = serve(lab).await;
        let s = settings(&base);
        let client = PrometheusClient::new(&s).unwrap();
        let (leader, slot) = leader_source(&s, DEFAULT_LEADER_QUERY, "member").unwrap();
        let answers = fetch(&client, Some((&leader, slot)), lab_span())
            .await
            .unwrap();
        // One query per configured per-member metric (a replay does not ask for the slots) and
        // one for the roles, never one per member.
        assert_eq!(
            served.load(std::sync::atomic::Ordering::SeqCst),
            s.queries.keys().filter(|m| m.is_per_member()).count() + 1
        );
        // The OOM query failed (HTTP 400) and the CPU answer was empty: both are absent.
        assert!(!answers.metrics.contains_key(&Metric::OomKills));
        assert!(answers.metrics[&Metric::CpuUsed].is_empty());

        let records = to_records(&answers, &facts());
        let members: BTreeSet<&str> = records.iter().map(|r| r.member.as_str()).collect();
        assert_eq!(
            members,
            BTreeSet::from(["lab-pg-1", "lab-pg-2", "lab-pg-3"])
        );
        let times: BTreeSet<Timestamp> = records.iter().map(|r| r.time).collect();
        assert_eq!(times.len(), 61, "15 minutes at 15 s, both ends included");
        assert_eq!(records.len(), 3 * 61);
        for r in &records {
            assert_eq!(
                r.cpu_used, None,
                "an empty answer is missing, not zero: {r:?}"
            );
            assert_eq!(r.oom_kills, None, "a failed query is missing: {r:?}");
            assert_eq!(r.connections, Some(4.0), "{r:?}");
            assert!(r.memory_used.is_some_and(|m| m > 1e6), "{r:?}");
            let leader = r.member == "lab-pg-2";
            assert_eq!(
                r.patroni_role,
                Some(if leader {
                    PatroniRole::Leader
                } else {
                    PatroniRole::Replica
                })
            );
            // The lag query answers for replicas only: the leader's lag stays unknown.
            assert_eq!(r.lag_bytes.is_none(), leader, "{r:?}");
            assert_eq!(r.size, facts().size);
            assert_eq!(r.role, Role::Database);
        }
    }

    #[tokio::test]
    async fn nan_inf_and_gaps_are_missing_points() {
        fn surge(query: &str) -> (&'static str, String) {
            if query.contains("container_cpu_usage_seconds_total") {
                ("200 OK", data("handwritten.cpu_surge_nan.json"))
            } else {
                (
                    "200 OK",
                    r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
                )
            }
        }
        let (base, _) = serve(surge).await;
        let client = PrometheusClient::new(&settings(&base)).unwrap();
        let span = Span::new(
            Timestamp::from_secs(1_795_690_800),
            Duration::from_secs(3600),
            Duration::from_secs(15),
        )
        .unwrap();
        let answers = fetch(&client, None, span).await.unwrap();
        let mut facts = facts();
        facts.balancers.insert("lab-pg-1".into());
        let records = to_records(&answers, &facts);
        let pg3: Vec<&MemberRecord> = records.iter().filter(|r| r.member == "lab-pg-3").collect();
        // 241 instants: 3 NaN, 1 +Inf and a 4-point gap leave 233 points of lab-pg-3.
        assert_eq!(pg3.len(), 241 - 3 - 1 - 4);
        assert!(pg3.iter().all(|r| r.cpu_used == Some(0.25)));
        let gap = Timestamp::from_secs(1_795_687_200 + 100 * 15);
        assert!(!pg3.iter().any(|r| r.time == gap));
        assert!(records.iter().filter(|r| r.member == "lab-pg-2").count() == 241);
        let peak = records
            .iter()
            .filter_map(|r| r.cpu_used)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(peak, 1.9);
        assert!(records
            .iter()
            .all(|r| (r.role == Role::Balancer) == (r.member == "lab-pg-1")));
        assert!(
            records.iter().all(|r| r.patroni_role.is_none()),
            "roles were not asked"
        );
    }

    #[tokio::test]
    async fn every_query_failing_is_an_error_and_an_empty_history_is_empty() {
        fn broken(_: &str) -> (&'static str, String) {
            (
                "400 Bad Request",
                data("query_range.bad_syntax.http400.json"),
            )
        }
        let (base, _) = serve(broken).await;
        let client = PrometheusClient::new(&settings(&base)).unwrap();
        let err = fetch(&client, None, lab_span()).await.unwrap_err();
        assert!(
            // Every query the replay asks: the per-member ones (not the slots').
            matches!(err, HistoryError::AllFailed { failed, .. }
                if failed == settings(&base).queries.keys().filter(|m| m.is_per_member()).count()),
            "{err}"
        );
        assert_eq!(
            err.class(),
            ErrorKind::Permanent,
            "bad PromQL is not worth a retry"
        );

        fn empty(_: &str) -> (&'static str, String) {
            (
                "200 OK",
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
            )
        }
        let (base, _) = serve(empty).await;
        let client = PrometheusClient::new(&settings(&base)).unwrap();
        let answers = fetch(&client, None, lab_span()).await.unwrap();
        assert!(to_records(&answers, &facts()).is_empty());
    }

    #[test]
    fn a_span_is_aligned_to_the_step_and_cut_into_chunks_prometheus_accepts() {
        let step = Duration::from_secs(15);
        let until = Timestamp::from_secs(1_795_713_922);
        let day = Span::new(until, Duration::from_secs(86_400), step).unwrap();
        assert_eq!(day.start.as_millis() % 15_000, 0);
        assert_eq!(
            day.chunks(),
            vec![(day.start, until)],
            "5,761 points fit one query"
        );

        let week = Span::new(until, Duration::from_secs(7 * 86_400), step).unwrap();
        let chunks = week.chunks();
        assert_eq!(chunks.first().map(|c| c.0), Some(week.start));
        assert_eq!(chunks.last().map(|c| c.1), Some(until));
        let mut points = 0;
        for (i, (from, to)) in chunks.iter().enumerate() {
            let n = (to.as_millis() - from.as_millis()) / 15_000 + 1;
            assert!(n as u64 <= MAX_POINTS_PER_QUERY, "chunk {i}: {n} points");
            points += n;
            if let Some((next, _)) = chunks.get(i + 1) {
                assert_eq!(next.as_millis() - to.as_millis(), 15_000, "back to back");
            }
        }
        assert_eq!(
            points,
            (until.as_millis() - week.start.as_millis()) / 15_000 + 1
        );

        assert!(matches!(
            Span::new(until, Duration::from_secs(60), Duration::from_millis(1500)),
            Err(HistoryError::Step(_))
        ));
        assert!(matches!(
            Span::new(until, Duration::from_secs(10), step),
            Err(HistoryError::Since { .. })
        ));
    }
}
