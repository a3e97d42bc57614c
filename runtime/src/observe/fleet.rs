//! A fleet's metrics, filed per cluster as Prometheus' answers are decoded.
//!
//! What it is: a fleet asks each query once for all its clusters, so one answer holds a series per
//! member of every cluster (30,000 for 10,000 clusters of 3). [`FleetReadings`] has one row per key
//! a cluster expects, in two tables: its members' names (a cell per per-member metric) and its
//! slots' names (a cell for the slots' metric), each copied once when the table is built, not per
//! answer. [`FleetReadings::file`] puts a series' reading in its cell, finding the row by the key
//! borrowed from the answer; a cluster's share, [`FleetReadings::cluster`], is what
//! [`super::assemble::assemble_with`] reads. A pass clears the cells and fills them again: nothing
//! is allocated per series, per cluster or per pass.
//!
//! Before this table, a fleet's answers went through a map per metric keyed by member (a string
//! per series), then one map per cluster and metric: 2.6 allocations per series, and ~70 MB for
//! 10,000 clusters held at once (benches/fleet.rs). Until the members and slots had tables of
//! their own, every row had a cell per metric: slot rows carried nine empty member cells
//! (7 MB at 10,000 clusters) and every answer skipped over the other kind's rows.
//!
//! What it is not: a map of every key seen. A series whose key no cluster expects (of its
//! kind: a member's for the per-member metrics, a slot's for the slots' metric) is dropped, as
//! a cluster's own observer never matches a series of no member of its own. Members and slots
//! come and go (a scale-out, a replacement, a slot left behind): rebuild the table when a
//! cluster's members or slots change.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;

use steward_adapters::prometheus::{Metric, Reading};

use super::assemble::MetricsView;

/// What a pass learned of one metric's query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// Not answered this pass (not asked yet, or the query failed).
    No,
    /// Answered, with no series so far.
    Empty,
    /// Answered with at least one series (of any key).
    Series,
}

/// The rows of one kind of key (members' names, or slots' names) and their cells.
#[derive(Debug, Default)]
struct Rows {
    /// The metrics with a column, in [`Metric`] order.
    metrics: Vec<Metric>,
    /// Per column.
    asked: Vec<Asked>,
    /// Key -> row.
    index: HashMap<String, usize>,
    /// Row -> key.
    keys: Vec<String>,
    /// Cluster (by position) -> its rows.
    clusters: Vec<Range<usize>>,
    /// `cells[row * metrics.len() + column]`.
    cells: Vec<Option<Reading>>,
    /// The row the next series is expected in: an answer lists its series in the same order
    /// pass after pass, so a comparison with one key usually spares the hash lookup.
    next: usize,
}

impl Rows {
    fn new(metrics: Vec<Metric>) -> Self {
        Rows {
            asked: vec![Asked::No; metrics.len()],
            metrics,
            ..Rows::default()
        }
    }

    /// Adds the next cluster's rows (a key given twice is filed under its first cluster).
    fn add(&mut self, cluster: impl IntoIterator<Item = String>) {
        let start = self.keys.len();
        for key in cluster {
            if !self.index.contains_key(&key) {
                self.index.insert(key.clone(), self.keys.len());
                self.keys.push(key);
            }
        }
        self.clusters.push(start..self.keys.len());
    }

    /// The cells, once every cluster is added.
    fn done(&mut self) {
        self.cells = vec![None; self.keys.len() * self.metrics.len()];
    }

    fn column(&self, metric: Metric) -> Option<usize> {
        self.metrics.iter().position(|m| *m == metric)
    }

    fn clear(&mut self) {
        self.cells.fill(None);
        self.asked.fill(Asked::No);
        self.next = 0;
    }

    fn file(&mut self, column: usize, key: &str, reading: Reading) -> bool {
        self.asked[column] = Asked::Series;
        let row = match self.keys.get(self.next) {
            Some(k) if k == key => self.next,
            _ => match self.index.get(key) {
                Some(&row) => row,
                None => return false,
            },
        };
        self.next = row + 1;
        self.cells[row * self.metrics.len() + column] = Some(reading);
        true
    }

    fn failed(&mut self, column: usize) {
        self.asked[column] = Asked::No;
        let width = self.metrics.len();
        for row in 0..self.keys.len() {
            self.cells[row * width + column] = None;
        }
    }

    fn cell(&self, row: usize, column: usize) -> Option<&Reading> {
        self.cells[row * self.metrics.len() + column].as_ref()
    }
}

/// One pass's readings for a fleet. See the module doc.
#[derive(Debug)]
pub struct FleetReadings {
    /// Members' names, a column per per-member metric.
    members: Rows,
    /// Slots' names, a column for the slots' metric.
    slots: Rows,
}

impl FleetReadings {
    /// A table for `metrics` and the clusters of `clusters`, each given by the keys its series
    /// come under: its members' names (for the per-member metrics) and its slots' names (for
    /// [`Metric::SlotWalBytes`]), in the order [`Self::cluster`] will number them. A key given
    /// twice for one kind is filed under its first cluster.
    pub fn new<C, M, S>(metrics: &[Metric], clusters: C) -> Self
    where
        C: IntoIterator<Item = (M, S)>,
        M: IntoIterator<Item = String>,
        S: IntoIterator<Item = String>,
    {
        let mut metrics = metrics.to_vec();
        metrics.sort();
        metrics.dedup();
        let (per_member, per_slot) = metrics.into_iter().partition(|m| m.is_per_member());
        let (mut members, mut slots) = (Rows::new(per_member), Rows::new(per_slot));
        for (m, s) in clusters {
            members.add(m);
            slots.add(s);
        }
        members.done();
        slots.done();
        FleetReadings { members, slots }
    }

    /// How many clusters the table has.
    pub fn len(&self) -> usize {
        self.members.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.clusters.is_empty()
    }

    /// The rows `metric`'s series are keyed in, and its column there.
    fn rows(&mut self, metric: Metric) -> Option<(&mut Rows, usize)> {
        let rows = if metric.is_per_member() {
            &mut self.members
        } else {
            &mut self.slots
        };
        let column = rows.column(metric)?;
        Some((rows, column))
    }

    /// Starts a pass: every cell empty, no metric answered.
    pub fn clear(&mut self) {
        self.members.clear();
        self.slots.clear();
    }

    /// Files one series of `metric`'s answer: `reading` under `key`. False when no cluster
    /// expects `key` (or the table has no column for `metric`): dropped.
    pub fn file(&mut self, metric: Metric, key: &str, reading: Reading) -> bool {
        match self.rows(metric) {
            Some((rows, column)) => rows.file(column, key, reading),
            None => false,
        }
    }

    /// `metric`'s query was answered: from now on an answer without series reads as empty
    /// (every member missing, with a note). Call it before filing the answer's series.
    pub fn answered(&mut self, metric: Metric) {
        if let Some((rows, column)) = self.rows(metric) {
            rows.asked[column] = Asked::Empty;
        }
    }

    /// `metric`'s query failed part-way: what was filed of it is dropped, and it reads as not
    /// answered (missing, without the empty-answer note).
    pub fn failed(&mut self, metric: Metric) {
        if let Some((rows, column)) = self.rows(metric) {
            rows.failed(column);
        }
    }

    /// The share of the cluster at position `cluster`.
    ///
    /// # Panics
    /// When the table has no such cluster.
    pub fn cluster(&self, cluster: usize) -> ClusterReadings<'_> {
        let members = self.members.clusters[cluster].clone();
        ClusterReadings {
            table: self,
            last: Cell::new(members.start),
            members,
            slots: self.slots.clusters[cluster].clone(),
        }
    }
}

/// One cluster's readings in a [`FleetReadings`]: a [`MetricsView`].
#[derive(Clone, Debug)]
pub struct ClusterReadings<'a> {
    table: &'a FleetReadings,
    members: Range<usize>,
    slots: Range<usize>,
    /// The member row found last: a member's metrics are asked one after another under the
    /// same key, so it is tried first (one comparison instead of a walk over the rows).
    last: Cell<usize>,
}

impl ClusterReadings<'_> {
    /// `metric`'s table, its column there, and this cluster's rows in it.
    fn rows(&self, metric: Metric) -> Option<(&Rows, usize, Range<usize>)> {
        let (rows, mine) = if metric.is_per_member() {
            (&self.table.members, &self.members)
        } else {
            (&self.table.slots, &self.slots)
        };
        Some((rows, rows.column(metric)?, mine.clone()))
    }
}

impl MetricsView for ClusterReadings<'_> {
    fn reading(&self, metric: Metric, key: &str) -> Option<&Reading> {
        let (rows, column, mine) = self.rows(metric)?;
        let last = self.last.get();
        let row = if metric.is_per_member() && mine.contains(&last) && rows.keys[last] == key {
            last
        } else {
            mine.clone().find(|&r| rows.keys[r] == key)?
        };
        if metric.is_per_member() {
            self.last.set(row);
        }
        rows.cell(row, column)
    }

    fn answered_empty(&self, metric: Metric) -> bool {
        self.rows(metric)
            .is_some_and(|(rows, column, _)| rows.asked[column] == Asked::Empty)
    }

    /// As a cluster's own map would hold them: `None` unless one of its keys has a reading.
    fn slots(&self) -> Option<Vec<(&str, &Reading)>> {
        let (rows, column, mine) = self.rows(Metric::SlotWalBytes)?;
        let mut slots: Vec<(&str, &Reading)> = mine
            .filter_map(|r| Some((rows.keys[r].as_str(), rows.cell(r, column)?)))
            .collect();
        if slots.is_empty() {
            return None;
        }
        slots.sort_by(|a, b| a.0.cmp(b.0));
        Some(slots)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use steward_adapters::prometheus::MetricReading;
    use steward_model::observation::{Figure, Source};
    use steward_model::Timestamp;

    use super::*;

    fn fresh(v: f64) -> Reading {
        Reading::Fresh(Figure::new(v, Source::Prometheus, Timestamp::from_secs(10)))
    }

    fn names(c: &str) -> Vec<String> {
        (1..=2).map(|m| format!("{c}-{m}")).collect()
    }

    /// A cluster has rows for its members' and for its slots' names: each answer, in the
    /// fleet's order, lands in its own rows, and the slots in the slots' table only.
    #[test]
    fn answers_keyed_by_member_and_by_slot_land_in_their_rows() {
        let metrics = [Metric::CpuUsed, Metric::SlotWalBytes];
        let keys = |c: &str| {
            let slots: Vec<String> = names(c).iter().map(|n| n.replace('-', "_")).collect();
            (names(c), slots)
        };
        let mut t = FleetReadings::new(&metrics, ["a", "b", "c"].map(keys));
        for pass in 0..2 {
            t.clear();
            for metric in metrics {
                t.answered(metric);
                for (i, c) in ["a", "b", "c"].iter().enumerate() {
                    for (m, key) in names(c).iter().enumerate() {
                        let key = if metric == Metric::CpuUsed {
                            key.clone()
                        } else {
                            key.replace('-', "_")
                        };
                        let v = (pass * 100 + i * 10 + m) as f64;
                        assert!(t.file(metric, &key, fresh(v)), "{key}");
                    }
                }
            }
            for (i, c) in ["a", "b", "c"].iter().enumerate() {
                let share = t.cluster(i);
                for (m, key) in names(c).iter().enumerate() {
                    let v = (pass * 100 + i * 10 + m) as f64;
                    assert_eq!(share.reading(Metric::CpuUsed, key), Some(&fresh(v)));
                    assert_eq!(share.reading(Metric::SlotWalBytes, key), None);
                }
                let slots: Vec<(&str, f64)> = share
                    .slots()
                    .expect("slots")
                    .into_iter()
                    .map(|(k, r)| (k, r.fresh().expect("fresh").value))
                    .collect();
                let want: Vec<(String, f64)> = names(c)
                    .iter()
                    .enumerate()
                    .map(|(m, n)| (n.replace('-', "_"), (pass * 100 + i * 10 + m) as f64))
                    .collect();
                let want: Vec<(&str, f64)> = want.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                assert_eq!(slots, want, "the slots of {c}");
            }
        }
    }

    #[test]
    fn series_land_in_their_clusters_rows_in_any_order() {
        let metrics = [Metric::MemoryUsed, Metric::CpuUsed, Metric::SlotWalBytes];
        let none = Vec::<String>::new;
        let mut t = FleetReadings::new(&metrics, [(names("a"), none()), (names("b"), none())]);
        assert_eq!(t.len(), 2);
        t.clear();
        t.answered(Metric::CpuUsed);
        // In order, then out of order (the hash lookup), then a stranger.
        assert!(t.file(Metric::CpuUsed, "a-1", fresh(1.0)));
        assert!(t.file(Metric::CpuUsed, "a-2", fresh(2.0)));
        assert!(t.file(Metric::CpuUsed, "b-2", fresh(4.0)));
        assert!(t.file(Metric::CpuUsed, "b-1", fresh(3.0)));
        assert!(!t.file(Metric::CpuUsed, "c-1", fresh(5.0)));
        assert!(!t.file(Metric::DiskUsed, "a-1", fresh(5.0)), "no column");
        t.answered(Metric::MemoryUsed);
        let (a, b) = (t.cluster(0), t.cluster(1));
        assert_eq!(a.reading(Metric::CpuUsed, "a-2"), Some(&fresh(2.0)));
        assert_eq!(b.reading(Metric::CpuUsed, "b-1"), Some(&fresh(3.0)));
        assert_eq!(a.reading(Metric::CpuUsed, "b-1"), None, "another cluster's");
        assert_eq!(a.reading(Metric::MemoryUsed, "a-1"), None);
        assert!(a.answered_empty(Metric::MemoryUsed));
        assert!(!a.answered_empty(Metric::CpuUsed));
        assert!(!a.answered_empty(Metric::SlotWalBytes), "not answered");
        assert_eq!(a.slots(), None);

        // A failed query leaves nothing behind; a new pass starts empty.
        t.failed(Metric::CpuUsed);
        assert_eq!(t.cluster(0).reading(Metric::CpuUsed, "a-1"), None);
        t.file(Metric::MemoryUsed, "a-1", fresh(7.0));
        t.clear();
        assert_eq!(t.cluster(0).reading(Metric::MemoryUsed, "a-1"), None);
        assert!(!t.cluster(0).answered_empty(Metric::MemoryUsed));
    }

    /// The observation `assemble_with` makes of a share is the one `assemble` makes of the
    /// same answers in maps: figures, stale notes, an empty answer's note.
    #[test]
    fn a_share_assembles_as_the_maps_do() {
        use steward_adapters::patroni::ClusterView;

        use crate::observe::assemble::{assemble, assemble_with, Answers};

        let view = ClusterView::from_json(
            br#"{"members":[
            {"name":"pg1","role":"leader","state":"running","host":"10.0.0.1","port":5432,"api_url":"http://10.0.0.1:8008/patroni","timeline":1},
            {"name":"pg2","role":"replica","state":"streaming","host":"10.0.0.2","port":5432,"api_url":"http://10.0.0.2:8008/patroni","timeline":1,"lag":0}]}"#,
        )
        .unwrap();
        let stale = Reading::Stale(Figure::new(
            3.0,
            Source::Prometheus,
            Timestamp::from_secs(1),
        ));
        let series = [
            (Metric::CpuUsed, "pg1", fresh(0.5)),
            (Metric::CpuUsed, "pg2", stale),
            (Metric::MemoryUsed, "pg2", Reading::Missing),
        ];
        let metrics = [Metric::CpuUsed, Metric::MemoryUsed, Metric::DiskUsed];
        let mut maps: BTreeMap<Metric, MetricReading> = metrics
            .iter()
            .map(|&metric| {
                let values = BTreeMap::new();
                let label = "member".to_string();
                (
                    metric,
                    MetricReading {
                        metric,
                        label,
                        values,
                    },
                )
            })
            .collect();
        let members = vec!["pg1".to_string(), "pg2".into()];
        let mut t = FleetReadings::new(&metrics, [(members, Vec::new())]);
        t.clear();
        for metric in metrics {
            t.answered(metric);
        }
        for (metric, key, r) in series {
            t.file(metric, key, r);
            maps.get_mut(&metric).unwrap().values.insert(key.into(), r);
        }
        let now = Timestamp::from_secs(1000);
        let answers = Answers {
            cluster: Some(&view),
            metrics: maps,
            ..Answers::default()
        };
        let want = assemble("demo", now, &answers);
        assert!(
            want.notes.iter().any(|n| n.contains("cpu_used is stale")),
            "{:?}",
            want.notes
        );
        assert!(want
            .notes
            .iter()
            .any(|n| n.starts_with("disk_used: prometheus answered no series")));
        let got = assemble_with("demo", now, &answers, &t.cluster(0));
        assert_eq!(got, want);
    }

    #[test]
    fn a_clusters_share_reads_as_its_own_map_would() {
        let metrics = [Metric::CpuUsed, Metric::SlotWalBytes];
        let slots = vec!["s_2".to_string(), "s_1".into()];
        let mut t = FleetReadings::new(&metrics, [(vec!["pg-1".to_string()], slots)]);
        t.clear();
        let mut own: BTreeMap<Metric, MetricReading> = BTreeMap::new();
        for (metric, key, v) in [
            (Metric::CpuUsed, "pg-1", 0.5),
            (Metric::SlotWalBytes, "s_2", 2.0),
            (Metric::SlotWalBytes, "s_1", 1.0),
        ] {
            t.answered(metric);
            t.file(metric, key, fresh(v));
            own.entry(metric)
                .or_insert_with(|| MetricReading {
                    metric,
                    label: "x".into(),
                    values: BTreeMap::new(),
                })
                .values
                .insert(key.into(), fresh(v));
        }
        let share = t.cluster(0);
        assert_eq!(share.slots(), own.slots(), "by slot name, in name order");
        for key in ["pg-1", "s_1", "nope"] {
            for metric in metrics {
                assert_eq!(share.reading(metric, key), own.reading(metric, key));
            }
        }
    }

    /// A slot may be named as its member is (Patroni spells `pg1`'s slot `pg1`): the same key
    /// in both tables, each metric's reading in its own.
    #[test]
    fn a_key_that_is_a_member_and_a_slot_keeps_both_readings() {
        let metrics = [Metric::CpuUsed, Metric::SlotWalBytes];
        let one = || vec!["pg1".to_string()];
        let mut t = FleetReadings::new(&metrics, [(one(), one())]);
        t.clear();
        for metric in metrics {
            t.answered(metric);
        }
        assert!(t.file(Metric::CpuUsed, "pg1", fresh(0.5)));
        assert!(t.file(Metric::SlotWalBytes, "pg1", fresh(9.0)));
        let share = t.cluster(0);
        assert_eq!(share.reading(Metric::CpuUsed, "pg1"), Some(&fresh(0.5)));
        assert_eq!(
            share.reading(Metric::SlotWalBytes, "pg1"),
            Some(&fresh(9.0))
        );
        assert_eq!(share.slots(), Some(vec![("pg1", &fresh(9.0))]));
    }
}
