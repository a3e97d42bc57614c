//! The metrics port: what the loops and `observe` ask of a metrics store (Prometheus is the one
//! implementation, in `steward-adapters`), in domain terms.
//!
//! A query answers for every member at once; results are keyed by the value of the label that
//! names the member. Missing is never zero: an empty answer, NaN and +-Inf are
//! [`Reading::Missing`]; a sample older than the store's `max_age` is [`Reading::Stale`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::observation::Figure;
use crate::ports::ErrorKind;
use crate::Timestamp;

/// What Steward reads from Prometheus, one query each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// vCPUs in use.
    CpuUsed,
    /// Working set: RSS + mapped shared memory, not page cache (ENVIRONMENT.md), bytes.
    MemoryUsed,
    /// Data disk used, bytes.
    DiskUsed,
    /// WAL bytes on disk.
    WalBytes,
    /// Client connections.
    Connections,
    /// Transactions per second.
    ReadRate,
    /// Bytes behind the leader.
    LagBytes,
    /// OOM kills (a counter).
    OomKills,
    /// WAL the leader keeps for a replication slot, bytes: keyed by the SLOT's name, not a
    /// member's (Patroni names a member's slot after it: see `policies::slots`).
    SlotWalBytes,
    /// The share of block reads PostgreSQL's buffer cache answered lately, 0..1.
    CacheHitRatio,
    /// The `shared_buffers` PostgreSQL runs with, bytes.
    SharedBuffers,
}

impl Metric {
    pub const ALL: [Metric; 11] = [
        Metric::CpuUsed,
        Metric::MemoryUsed,
        Metric::DiskUsed,
        Metric::WalBytes,
        Metric::Connections,
        Metric::ReadRate,
        Metric::LagBytes,
        Metric::OomKills,
        Metric::SlotWalBytes,
        Metric::CacheHitRatio,
        Metric::SharedBuffers,
    ];

    /// The key in `[prometheus.queries]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CpuUsed => "cpu_used",
            Metric::MemoryUsed => "memory_used",
            Metric::DiskUsed => "disk_used",
            Metric::WalBytes => "wal_bytes",
            Metric::Connections => "connections",
            Metric::ReadRate => "read_rate",
            Metric::LagBytes => "lag_bytes",
            Metric::OomKills => "oom_kills",
            Metric::SlotWalBytes => "slot_wal_bytes",
            Metric::CacheHitRatio => "cache_hit_ratio",
            Metric::SharedBuffers => "shared_buffers",
        }
    }

    /// Whether the answer is keyed by member (every metric but the slots').
    pub fn is_per_member(self) -> bool {
        self != Metric::SlotWalBytes
    }

    pub fn from_key(key: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == key)
    }
}

/// One member's value of one metric, judged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reading {
    Fresh(Figure),
    /// Present but older than `max_age` at the time asked: never acted upon.
    Stale(Figure),
    /// NaN or ±Inf: not a number, so not a figure.
    Missing,
}

impl Reading {
    /// The figure, when fresh.
    pub fn fresh(&self) -> Option<Figure> {
        match self {
            Reading::Fresh(f) => Some(*f),
            _ => None,
        }
    }
}

/// The answer to one metric's query, for all members at once.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricReading {
    pub metric: Metric,
    /// The label the keys come from.
    pub label: String,
    /// By the member label's value. An empty map is an empty answer: every member missing.
    pub values: BTreeMap<String, Reading>,
}

/// What the loops and `observe` ask of a metrics store.
#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// The metrics this source has a query for.
    fn metrics(&self) -> Vec<Metric>;

    /// One instant query for `metric`, all members, judged at `now`.
    async fn instant(&self, metric: Metric, now: Timestamp) -> Result<MetricReading, MetricsError>;

    /// One range query for `metric`, all members; non-finite points are dropped (missing).
    async fn range(
        &self,
        metric: Metric,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<BTreeMap<String, Vec<Figure>>, MetricsError>;
}

/// A metrics query that failed, classified ([`ErrorKind`]: transient, not found, permanent...).
/// It reads as the store's own error (its message and causes), whatever the store.
pub struct MetricsError {
    kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync>,
}

impl MetricsError {
    pub fn new(
        kind: ErrorKind,
        inner: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        MetricsError {
            kind,
            inner: inner.into(),
        }
    }

    /// Whether trying again may help.
    pub fn class(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Debug for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for MetricsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}
