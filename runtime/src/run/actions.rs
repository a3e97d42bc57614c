//! The action log (`actions.jsonl`, and stdout): every command either loop issued (or, in
//! dry-run, would have run), every alert, refusal and result, with its reason. (The policies'
//! own decisions go to `decisions.jsonl` through `telemetry::DecisionLog`.) Written as JSON lines (for machines) and, when
//! asked, as one readable line each (for the person running `steward run`).
//!
//! What it is not: the tracing log. Tracing carries operational detail; this log answers
//! "what did Steward decide, and why" and nothing else. It never carries a secret: reasons are
//! built from member names, figures and rules only.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use steward_model::Timestamp;

use super::journal::LoopName;

/// What kind of line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A step to run (or that would run, in dry-run).
    Command,
    /// Something a person must look at.
    Alert,
    /// A proposal of the scaler.
    Proposal,
    /// The coordinator refused a proposal.
    Refused,
    /// A step's result.
    Result,
    /// An operation ended.
    Finished,
    /// Start-up recovery of a half-done step.
    Recovery,
    /// Something seen and said once, not an alert (a replication slot keeping WAL for nobody).
    Notice,
}

/// One line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Line {
    pub at: Timestamp,
    #[serde(rename = "loop")]
    pub by: LoopName,
    pub kind: Kind,
    pub op: String,
    /// What, compactly: `fence pg-3`, `database cpu 2 -> 3`.
    pub what: String,
    /// Why, one sentence or two.
    pub reason: String,
    pub dry_run: bool,
}

type Sink = Box<dyn Write + Send>;

/// Where lines go; cheap to clone, shared by both loops.
#[derive(Clone, Default)]
pub struct ActionLog {
    inner: Arc<Mutex<Sinks>>,
}

#[derive(Default)]
struct Sinks {
    json: Option<Sink>,
    human: Option<(Sink, Timestamp)>,
}

impl ActionLog {
    /// JSON lines to `json`, if given.
    pub fn new(json: Option<Sink>) -> Self {
        ActionLog {
            inner: Arc::new(Mutex::new(Sinks { json, human: None })),
        }
    }

    /// Also readable lines to `out`, times shown relative to `start`.
    pub fn with_human(self, out: Sink, start: Timestamp) -> Self {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).human = Some((out, start));
        self
    }

    /// Writes one line. A sink that fails is reported by tracing, not fatal: the action log
    /// must not stop a repair.
    pub fn write(&self, line: &Line) {
        let mut sinks = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(json) = &mut sinks.json {
            let written = serde_json::to_writer(&mut *json, line)
                .map_err(std::io::Error::from)
                .and_then(|()| json.write_all(b"\n"))
                .and_then(|()| json.flush());
            if let Err(e) = written {
                tracing::warn!(error = %e, "cannot write the action log");
            }
        }
        if let Some((out, start)) = &mut sinks.human {
            let text = human(line, *start);
            if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
                tracing::warn!(error = %e, "cannot write decisions to the terminal");
            }
        }
    }
}

/// `+00:02:15 repair   command  demo-1/1  fence pg-3: pg-3 looked bad ...`
pub fn human(line: &Line, start: Timestamp) -> String {
    let secs = line.at.since(start).as_secs();
    let kind = match line.kind {
        Kind::Command if line.dry_run => "would run",
        Kind::Command => "run",
        Kind::Alert => "ALERT",
        Kind::Proposal => "propose",
        Kind::Refused => "refused",
        Kind::Result => "result",
        Kind::Finished => "finished",
        Kind::Recovery => "recover",
        Kind::Notice => "notice",
    };
    // The repairer's reasons open with the step itself (`drain pg-3: ...`): say it once.
    let text = if line.reason.starts_with(&line.what) {
        line.reason.clone()
    } else {
        format!("{}: {}", line.what, line.reason)
    };
    format!(
        "+{:02}:{:02}:{:02} {:<6} {:<9} {:<10} {text}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        line.by.as_str(),
        kind,
        line.op,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_lines_show_relative_time_and_dry_run() {
        let line = Line {
            at: Timestamp::from_secs(3725),
            by: LoopName::Repair,
            kind: Kind::Command,
            op: "c-1/1".into(),
            what: "fence pg-3".into(),
            reason: "it crashed".into(),
            dry_run: true,
        };
        let text = human(&line, Timestamp::from_secs(0));
        assert!(text.starts_with("+01:02:05 repair"), "{text}");
        assert!(text.contains("would run"), "{text}");
        assert!(text.ends_with("fence pg-3: it crashed"), "{text}");
    }
}
