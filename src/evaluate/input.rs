//! The readers: a CSV trace (`timestamp,value`) and a JSON-lines recording of member records.
//!
//! What this is: parsing and checking, turning bytes into a sorted, finite [`Series`] or a list of
//! [`Observation`]s, with every problem named by file and line. What it is not: any policy logic,
//! any unit conversion beyond what the flags say (that happens in the replay).
//!
//! No input makes these functions panic: they are property-tested over arbitrary bytes.

use std::collections::HashSet;
use std::io::BufRead;

use steward_model::observation::Observation;
use steward_model::record::MemberRecord;
use steward_model::Timestamp;

/// One sample of a CSV trace, as read (the value is in the file's unit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at: Timestamp,
    pub value: f64,
    /// The line it was read from (1-based), for error messages.
    pub line: u64,
}

/// What went wrong on one row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    #[error("expected two columns `timestamp,value`, found {0}")]
    Columns(usize),
    #[error("the row is not valid CSV: {0}")]
    Csv(String),
    #[error("bad timestamp: {0}")]
    Timestamp(String),
    #[error("value `{0}` is not a number")]
    Value(String),
    #[error("value `{0}` is not finite")]
    NotFinite(String),
    #[error("the row is not valid UTF-8")]
    Utf8,
    #[error("not a member record: {0}")]
    Record(String),
    #[error("timestamp {at} comes before the previous one, {previous}: the input must be sorted by time")]
    Unsorted { at: Timestamp, previous: Timestamp },
    #[error("timestamp {0} appears twice")]
    Duplicate(Timestamp),
    #[error("member `{member}` appears twice at {at}")]
    DuplicateMember { member: String, at: Timestamp },
    #[error("a figure is not finite")]
    RecordNotFinite,
}

impl RowError {
    /// Whether `--skip-bad` may skip the row. Only rows that cannot be parsed at all are
    /// skippable; a row that parses but breaks the series (unsorted, duplicate, non-finite)
    /// means the recording itself is wrong, and skipping it would hide that.
    pub fn skippable(&self) -> bool {
        matches!(
            self,
            RowError::Columns(_)
                | RowError::Csv(_)
                | RowError::Timestamp(_)
                | RowError::Value(_)
                | RowError::Utf8
                | RowError::Record(_)
        )
    }
}

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}, line {line}")]
    Row {
        name: String,
        line: u64,
        #[source]
        error: RowError,
    },
    #[error("{name} holds no samples{}", skipped_note(*.skipped))]
    Empty { name: String, skipped: usize },
}

fn skipped_note(skipped: usize) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} bad rows skipped)")
    }
}

/// A bad row that `--skip-bad` skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub line: u64,
    pub error: RowError,
}

/// A CSV trace, sorted by time with distinct timestamps and finite values.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub samples: Vec<Sample>,
    pub skipped: Vec<Skipped>,
}

/// Reads a `timestamp,value` CSV. A first row whose value is not a number is a header.
/// `name` is how errors call the input (the file name).
pub fn read_csv(reader: impl BufRead, name: &str, skip_bad: bool) -> Result<Series, InputError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut samples: Vec<Sample> = Vec::new();
    let mut skipped = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut first = true;
    loop {
        // The line a row starts on (1-based), as the csv reader counts it.
        let next_line = csv.position().line().max(1);
        let (row, result) = match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => (
                record.position().map_or(next_line, |p| p.line()),
                parse_csv_row(&record),
            ),
            Err(e) => {
                if let csv::ErrorKind::Io(io) = e.kind() {
                    // The csv error owns the io::Error; keep its kind and message.
                    return Err(InputError::Read {
                        name: name.to_string(),
                        source: std::io::Error::new(io.kind(), io.to_string()),
                    });
                }
                (
                    e.position().map_or(next_line, |p| p.line()),
                    Err(RowError::Csv(e.to_string())),
                )
            }
        };
        let is_first = std::mem::replace(&mut first, false);
        let sample = match result {
            Ok(None) => continue,
            Ok(Some(s)) => Sample { line: row, ..s },
            // A header: the first row, two columns, neither a timestamp nor a number.
            Err(RowError::Value(_)) if is_first && record.len() == 2 && is_header(&record) => {
                continue
            }
            Err(error) if skip_bad && error.skippable() => {
                skipped.push(Skipped { line: row, error });
                continue;
            }
            Err(error) => {
                return Err(InputError::Row {
                    name: name.to_string(),
                    line: row,
                    error,
                })
            }
        };
        if let Some(previous) = samples.last() {
            let error = if sample.at == previous.at {
                Some(RowError::Duplicate(sample.at))
            } else if sample.at < previous.at {
                Some(RowError::Unsorted {
                    at: sample.at,
                    previous: previous.at,
                })
            } else {
                None
            };
            if let Some(error) = error {
                return Err(InputError::Row {
                    name: name.to_string(),
                    line: row,
                    error,
                });
            }
        }
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(InputError::Empty {
            name: name.to_string(),
            skipped: skipped.len(),
        });
    }
    Ok(Series { samples, skipped })
}

/// Whether a first row is a header rather than a bad row: its first column is no timestamp.
fn is_header(record: &csv::ByteRecord) -> bool {
    std::str::from_utf8(&record[0]).map_or(true, |t| Timestamp::parse(t).is_err())
}

/// One CSV row: `Ok(None)` for a blank row.
fn parse_csv_row(record: &csv::ByteRecord) -> Result<Option<Sample>, RowError> {
    if record.len() == 1 && record[0].is_empty() {
        return Ok(None);
    }
    if record.len() != 2 {
        return Err(RowError::Columns(record.len()));
    }
    // A byte-order mark (spreadsheets write one) is not part of the first timestamp.
    let time = std::str::from_utf8(&record[0])
        .map_err(|_| RowError::Utf8)?
        .trim_start_matches('\u{feff}');
    let value = std::str::from_utf8(&record[1]).map_err(|_| RowError::Utf8)?;
    // The value first: a header row is recognised by its value not being a number.
    let number: f64 = value.parse().map_err(|_| RowError::Value(shorten(value)))?;
    if !number.is_finite() {
        return Err(RowError::NotFinite(shorten(value)));
    }
    let at = Timestamp::parse(time).map_err(|e| RowError::Timestamp(shorten(&e)))?;
    Ok(Some(Sample {
        at,
        value: number,
        line: 0,
    }))
}

/// Bounds what a message quotes from the input, so one garbage row can't flood the terminal.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

/// A JSON-lines recording grouped into one observation per instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub observations: Vec<Observation>,
    pub skipped: Vec<Skipped>,
}

/// Reads JSON lines of [`MemberRecord`] and groups them by time. Records of one instant must be
/// adjacent; time never goes backwards; a member appears once per instant.
pub fn read_jsonl(
    reader: impl BufRead,
    name: &str,
    skip_bad: bool,
) -> Result<Recording, InputError> {
    let mut observations: Vec<Observation> = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let row_error = |line, error| InputError::Row {
        name: name.to_string(),
        line,
        error,
    };
    for (index, bytes) in reader.split(b'\n').enumerate() {
        let line = index as u64 + 1;
        let bytes = bytes.map_err(|source| InputError::Read {
            name: name.to_string(),
            source,
        })?;
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| RowError::Utf8)
            .and_then(|text| {
                let text = text.trim();
                if text.is_empty() {
                    Ok(None)
                } else {
                    serde_json::from_str::<MemberRecord>(text)
                        .map(Some)
                        .map_err(|e| RowError::Record(shorten(&e.to_string())))
                }
            });
        let record = match parsed {
            Ok(None) => continue,
            Ok(Some(r)) => r,
            Err(error) if skip_bad && error.skippable() => {
                skipped.push(Skipped { line, error });
                continue;
            }
            Err(error) => return Err(row_error(line, error)),
        };
        if !record_is_finite(&record) {
            return Err(row_error(line, RowError::RecordNotFinite));
        }
        let at = record.time;
        match observations.last_mut() {
            Some(current) if current.at == at => {
                if !seen.insert(record.member.clone()) {
                    return Err(row_error(
                        line,
                        RowError::DuplicateMember {
                            member: record.member,
                            at,
                        },
                    ));
                }
                current.members.push(record.to_member());
            }
            Some(current) if at < current.at => {
                return Err(row_error(
                    line,
                    RowError::Unsorted {
                        at,
                        previous: current.at,
                    },
                ));
            }
            _ => {
                seen.clear();
                seen.insert(record.member.clone());
                observations.push(Observation {
                    at,
                    cluster: record.cluster.clone().unwrap_or_default(),
                    members: vec![record.to_member()],
                    notes: Vec::new(),
                    slots: Vec::new(),
                });
            }
        }
    }
    if observations.is_empty() {
        return Err(InputError::Empty {
            name: name.to_string(),
            skipped: skipped.len(),
        });
    }
    Ok(Recording {
        observations,
        skipped,
    })
}

fn record_is_finite(r: &MemberRecord) -> bool {
    let figures = [
        r.lag_bytes,
        r.cpu_used,
        r.memory_used,
        r.disk_used,
        r.wal_bytes,
        r.connections,
        r.read_rate,
        r.oom_kills,
    ];
    figures.iter().flatten().all(|v| v.is_finite()) && r.size.is_none_or(|s| s.cpus.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn csv(text: &str) -> Result<Series, InputError> {
        read_csv(text.as_bytes(), "t.csv", false)
    }

    fn row_error(result: Result<Series, InputError>) -> (u64, RowError) {
        match result {
            Err(InputError::Row { line, error, .. }) => (line, error),
            other => panic!("expected a row error, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_nab_trace_with_its_header() {
        let s = csv("timestamp,value\n2014-05-14 01:14:00,85.835\n2014-05-14 01:19:00,88.167\n")
            .unwrap();
        assert_eq!(s.samples.len(), 2);
        assert_eq!(s.samples[1].value, 88.167);
        assert_eq!(
            s.samples[1].at.as_millis() - s.samples[0].at.as_millis(),
            300_000
        );
    }

    #[test]
    fn crlf_and_a_byte_order_mark_are_fine() {
        let s = csv("\u{feff}2014-05-14 01:14:00,1\r\n2014-05-14 01:19:00,2\r\n").unwrap();
        assert_eq!(
            s.samples.iter().map(|s| s.value).collect::<Vec<_>>(),
            vec![1.0, 2.0]
        );
    }

    #[test]
    fn a_bad_value_names_its_line() {
        let (line, error) = row_error(csv(
            "timestamp,value\n2014-05-14 01:14:00,1\n2014-05-14 01:19:00,abc\n",
        ));
        assert_eq!(line, 3);
        assert_eq!(error, RowError::Value("abc".into()));
    }

    #[test]
    fn a_bad_first_data_row_is_not_taken_for_a_header() {
        let (line, error) = row_error(csv("2014-05-14 01:14:00,abc\n2014-05-14 01:19:00,1\n"));
        assert_eq!((line, error), (1, RowError::Value("abc".into())));
        let s = csv("2014-05-14 01:14:00,1\n").unwrap();
        assert_eq!(s.samples[0].line, 1);
    }

    #[test]
    fn non_finite_unsorted_and_duplicates_are_errors_even_with_skip_bad() {
        let nan = read_csv("2014-05-14 01:14:00,NaN\n".as_bytes(), "t", true);
        assert!(matches!(row_error(nan), (1, RowError::NotFinite(_))));
        let dup = read_csv(
            "2014-05-14 01:14:00,1\n2014-05-14 01:14:00,2\n".as_bytes(),
            "t",
            true,
        );
        assert!(matches!(row_error(dup), (2, RowError::Duplicate(_))));
        let back = read_csv(
            "2014-05-14 01:14:00,1\n2014-05-14 01:10:00,2\n".as_bytes(),
            "t",
            true,
        );
        assert!(matches!(row_error(back), (2, RowError::Unsorted { .. })));
    }

    #[test]
    fn skip_bad_counts_and_keeps_going() {
        let s = read_csv(
            "t,v\n2014-05-14 01:14:00,1\nnonsense\n2014-05-14 01:24:00,x\n2014-05-14 01:29:00,3\n"
                .as_bytes(),
            "t",
            true,
        )
        .unwrap();
        assert_eq!(s.samples.len(), 2);
        assert_eq!(
            s.skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn empty_input_is_an_error_naming_the_file() {
        let err = csv("timestamp,value\n").unwrap_err();
        assert!(matches!(err, InputError::Empty { .. }));
        assert_eq!(err.to_string(), "t.csv holds no samples");
    }

    #[test]
    fn jsonl_groups_records_by_time() {
        let text = concat!(
            r#"{"time":"2026-11-26T10:00:00Z","member":"pg-1","role":"database","cpu_used":0.5}"#,
            "\n",
            r#"{"time":"2026-11-26T10:00:00Z","member":"pg-2","role":"database","cpu_used":0.7}"#,
            "\n",
            "\n",
            r#"{"time":"2026-11-26T10:00:15Z","member":"pg-1","role":"database"}"#,
            "\n",
        );
        let r = read_jsonl(text.as_bytes(), "r.jsonl", false).unwrap();
        assert_eq!(r.observations.len(), 2);
        assert_eq!(r.observations[0].members.len(), 2);
        assert_eq!(
            r.observations[0].members[1].cpu_used.map(|f| f.value),
            Some(0.7)
        );
        assert_eq!(r.observations[1].members[0].cpu_used, None);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let text = concat!(
            r#"{"time":"2026-11-26T10:00:15Z","member":"pg-1","role":"database"}"#,
            "\n",
            r#"{"time":"2026-11-26T10:00:00Z","member":"pg-1","role":"database"}"#,
            "\n",
        );
        let err = read_jsonl(text.as_bytes(), "r.jsonl", false).unwrap_err();
        assert!(
            matches!(
                err,
                InputError::Row {
                    line: 2,
                    error: RowError::Unsorted { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        let twice = concat!(
            r#"{"time":"2026-11-26T10:00:00Z","member":"pg-1","role":"database"}"#,
            "\n",
            r#"{"time":"2026-11-26T10:00:00Z","member":"pg-1","role":"database"}"#,
            "\n",
        );
        let err = read_jsonl(twice.as_bytes(), "r.jsonl", false).unwrap_err();
        assert!(matches!(
            err,
            InputError::Row {
                line: 2,
                error: RowError::DuplicateMember { .. },
                ..
            }
        ));
        let bad = "{\"time\":1}\n";
        let err = read_jsonl(bad.as_bytes(), "r.jsonl", false).unwrap_err();
        assert!(matches!(
            err,
            InputError::Row {
                line: 1,
                error: RowError::Record(_),
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn csv_reader_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            skip in any::<bool>(),
        ) {
            let _ = read_csv(bytes.as_slice(), "p", skip);
        }

        #[test]
        fn csv_lines_never_panic_and_output_is_sorted_and_finite(
            // Noise, and rows that look right (in any order, some duplicated).
            lines in proptest::collection::vec(
                "[0-9: ,.eE+-]{0,30}|2014-05-1[0-9] 0[0-9]:[0-5][0-9]:00,-?[0-9]{1,4}(\\.[0-9]{1,3})?",
                0..40,
            ),
            skip in any::<bool>(),
        ) {
            if let Ok(series) = read_csv(lines.join("\n").as_bytes(), "p", skip) {
                prop_assert!(!series.samples.is_empty());
                prop_assert!(series.samples.windows(2).all(|w| w[0].at < w[1].at));
                prop_assert!(series.samples.iter().all(|s| s.value.is_finite()));
            }
        }

        #[test]
        fn jsonl_reader_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            skip in any::<bool>(),
        ) {
            let _ = read_jsonl(bytes.as_slice(), "p", skip);
        }

        #[test]
        fn jsonl_lines_never_panic_and_output_is_sorted(
            secs in proptest::collection::vec(0i64..5, 0..20),
            members in proptest::collection::vec(0u8..3, 0..20),
            cpu in proptest::collection::vec(proptest::option::of(-1.0e3f64..1.0e3), 0..20),
        ) {
            let text: String = secs.iter().zip(&members).zip(&cpu).map(|((s, m), c)| {
                let cpu = c.map(|c| format!(",\"cpu_used\":{c}")).unwrap_or_default();
                format!("{{\"time\":{},\"member\":\"pg-{m}\",\"role\":\"database\"{cpu}}}\n", s * 1000)
            }).collect();
            if let Ok(r) = read_jsonl(text.as_bytes(), "p", false) {
                prop_assert!(r.observations.windows(2).all(|w| w[0].at < w[1].at));
                let total: usize = r.observations.iter().map(|o| o.members.len()).sum();
                prop_assert_eq!(total, secs.len().min(members.len()).min(cpu.len()));
            }
        }
    }
}
