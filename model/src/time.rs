//! Time as a value: policies get `now` as a parameter and never read a clock.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time: milliseconds since the Unix epoch (UTC).
///
/// Milliseconds in an `i64` cover every date a metric can carry and make comparisons and window
/// arithmetic integer operations, which keeps the policies exact and fast. In JSON it is an
/// RFC 3339 string (`2026-11-26T10:00:00Z`); an integer of epoch milliseconds is accepted too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn from_secs(s: i64) -> Self {
        Self(s * 1000)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Seconds since the epoch, as a float (for regressions and charts).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// The time elapsed since `earlier`, or zero if `earlier` is in the future.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl Timestamp {
    /// Parses RFC 3339 (`2014-05-14T01:14:00Z`, any offset) or a naive date-time taken as UTC
    /// (`2014-05-14 01:14:00`, as in the NAB traces), or integer epoch seconds.
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let t = text.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
            return Ok(Timestamp(dt.timestamp_millis()));
        }
        for fmt in [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
        ] {
            if let Ok(dt) = NaiveDateTime::parse_from_str(t, fmt) {
                return Ok(Timestamp(dt.and_utc().timestamp_millis()));
            }
        }
        if let Ok(secs) = t.parse::<i64>() {
            return secs
                .checked_mul(1000)
                .map(Timestamp)
                .ok_or_else(|| format!("timestamp `{t}` is out of range"));
        }
        Err(format!(
            "`{t}` is not a timestamp (expected RFC 3339 like 2026-11-26T10:00:00Z, \
             `YYYY-MM-DD HH:MM:SS` in UTC, or epoch seconds)"
        ))
    }

    /// RFC 3339 in UTC, to the second unless there are milliseconds.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("{}ms", self.0),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Timestamp(ms)),
            Raw::Text(t) => Timestamp::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_never_goes_negative() {
        let a = Timestamp::from_secs(10);
        let b = Timestamp::from_secs(20);
        assert_eq!(b.since(a), Duration::from_secs(10));
        assert_eq!(a.since(b), Duration::ZERO);
    }

    #[test]
    fn parses_the_formats_recordings_use() {
        let a = Timestamp::parse("2014-05-14 01:14:00").unwrap();
        let b = Timestamp::parse("2014-05-14T01:14:00Z").unwrap();
        let c = Timestamp::parse("2014-05-14T03:14:00+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(b.to_rfc3339(), "2014-05-14T01:14:00Z");
        assert!(Timestamp::parse("yesterday")
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[test]
    fn json_round_trip_and_millis_accepted() {
        let t = Timestamp::from_millis(1_400_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Timestamp>("1400000000123").unwrap(),
            t
        );
    }

    #[test]
    fn duration_arithmetic_round_trips() {
        let t = Timestamp::from_secs(100);
        assert_eq!(
            (t + Duration::from_millis(1500)) - Duration::from_millis(1500),
            t
        );
    }
}
