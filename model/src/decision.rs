//! What a policy decided, and why, in a form both machines and people can read.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::size::{Resource, Role};
use crate::time::Timestamp;

/// The knob a decision turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Knob {
    /// The size of every member of a role, for one resource.
    Vertical { role: Role, resource: Resource },
    /// The number of database members (primary included).
    Replicas,
    /// The databases' `shared_buffers`, bytes: the buffer cache (issue 17).
    SharedBuffers,
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Knob::Vertical { role, resource } => write!(f, "{role}.{resource}"),
            Knob::Replicas => f.write_str("database.replicas"),
            Knob::SharedBuffers => f.write_str("database.shared_buffers"),
        }
    }
}

/// Which way a decision moves its knob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Hold,
    Grow,
    Shrink,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Hold => "hold",
            Action::Grow => "grow",
            Action::Shrink => "shrink",
        })
    }
}

/// A rule that shaped a decision. Each one a policy applies is recorded in [`Decision::rules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The statistic is inside [low, high]: nothing to do.
    Band,
    /// Above `high`, but not yet for the whole `up_window`.
    UpWindow,
    /// Below `low`, but not yet for the whole `down_window`.
    DownWindow,
    /// A change happened less than `cooldown` ago.
    Cooldown,
    /// Rounded to the platform's step.
    Rounding,
    /// Clamped to [min, max].
    Bounds,
    /// Limited by the maximum step factor (or one member at a time for replicas).
    StepLimit,
    /// A shrink was raised so that the same data would not grow it again.
    NoRegrow,
    /// The budget of changes per period is spent.
    Budget,
    /// A figure the policy needs is missing: hold.
    MissingData,
    /// A figure the policy needs is too old: hold.
    StaleData,
    /// An OOM kill triggered the emergency memory grow.
    OomEmergency,
    /// The forecast time to full is shorter than the horizon.
    Forecast,
    /// Used space passed the disk's `high` threshold.
    Threshold,
    /// WAL, not data, is what fills the disk: growing will not fix it.
    WalGrowth,
    /// The HA minimum number of members holds the count up.
    HaMinimum,
    /// Some members were not counted as capacity (lagging or not streaming).
    NotCapacity,
    /// A disk never shrinks.
    NeverShrink,
    /// The buffer cache's hit ratio stayed below `low`: `shared_buffers` grows.
    CacheShort,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Band => "band",
            Rule::UpWindow => "up_window",
            Rule::DownWindow => "down_window",
            Rule::Cooldown => "cooldown",
            Rule::Rounding => "rounding",
            Rule::Bounds => "bounds",
            Rule::StepLimit => "step_limit",
            Rule::NoRegrow => "no_regrow",
            Rule::Budget => "budget",
            Rule::MissingData => "missing_data",
            Rule::StaleData => "stale_data",
            Rule::OomEmergency => "oom_emergency",
            Rule::Forecast => "forecast",
            Rule::Threshold => "threshold",
            Rule::WalGrowth => "wal_growth",
            Rule::HaMinimum => "ha_minimum",
            Rule::NotCapacity => "not_capacity",
            Rule::NeverShrink => "never_shrink",
            Rule::CacheShort => "cache_short",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's effect on a decision: the value before and after it, and a short detail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleApplied {
    pub rule: Rule,
    /// The recommended value before this rule.
    pub before: f64,
    /// The recommended value after this rule (equal to `before` when the rule only blocked).
    pub after: f64,
    /// What the rule saw, e.g. `above 0.80 for 60 s of 180 s`.
    pub detail: Text,
}

/// What a policy decided at one instant, with every reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: Timestamp,
    pub knob: Knob,
    pub action: Action,
    /// The size (or count) before the decision.
    pub current: f64,
    /// What the data alone asked for, before any rule (None when there was no usable data).
    pub raw: Option<f64>,
    /// The final value; equal to `current` when the action is `Hold`.
    pub target: f64,
    /// The statistic the decision was based on (utilization 0..1, or a count), when there was one.
    pub statistic: Option<f64>,
    /// Each rule that changed or blocked the recommendation, in the order applied.
    pub rules: Vec<RuleApplied>,
    /// One sentence a person can read.
    pub summary: Text,
}

impl Decision {
    /// A decision that keeps the current value.
    pub fn hold(at: Timestamp, knob: Knob, current: f64) -> Self {
        Decision {
            at,
            knob,
            action: Action::Hold,
            current,
            raw: None,
            target: current,
            statistic: None,
            rules: Vec::new(),
            summary: Text::default(),
        }
    }

    /// Adds a rule's effect. The list grows one at a time: most decisions have one rule and
    /// are kept until the next observation (the scaler's last decisions, `/status`), and a
    /// `Vec`'s first push makes room for four (224 bytes where 56 do, ~8 MB in a fleet of
    /// 10,000 clusters, benches/fleet.rs).
    pub fn push_rule(&mut self, rule: RuleApplied) {
        self.rules.reserve_exact(1);
        self.rules.push(rule);
    }

    /// Whether a rule of this kind shaped the decision.
    pub fn has_rule(&self, rule: Rule) -> bool {
        self.rules.iter().any(|r| r.rule == rule)
    }

    pub fn changes(&self) -> bool {
        self.action != Action::Hold
    }
}

/// Words a decision carries for people: its summary, a rule's detail. Written when the decision
/// is made, or only when someone reads them: a policy that runs on every observation of every
/// cluster hands over what it saw ([`Explain`]) and writes the sentence when it is displayed,
/// serialized or compared. Most decisions are never read (a fleet of 10,000 clusters makes
/// 50,000 a tick; `/status` shows one cluster's, the log only the changes); writing them all
/// was a quarter of the scaler's tick (benches/fleet.rs).
///
/// Reads as a string everywhere: `Display`, `Debug`, serde (a JSON string), equality (of the
/// texts). It does not keep what it writes: each read writes it again. Words fixed in the code
/// (`&'static str`) are kept as they are, not copied.
#[derive(Clone, Default)]
pub struct Text(Words);

#[derive(Clone)]
enum Words {
    Written(String),
    /// Words fixed in the code: nothing to write or keep.
    Fixed(&'static str),
    Later(Arc<dyn Explain>, Part),
}

impl Default for Words {
    fn default() -> Self {
        Words::Written(String::new())
    }
}

/// Which of a decision's texts an [`Explain`] is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Summary,
    /// The detail of the decision's `n`-th rule ([`Decision::rules`], from 0).
    Detail(u8),
}

/// What a policy saw, kept to write a decision's texts when they are read.
pub trait Explain: Send + Sync {
    /// Appends `part`'s text to `out`.
    fn write(&self, part: Part, out: &mut String);
}

impl Text {
    /// Text that `explain` writes when it is read.
    pub fn later(explain: Arc<dyn Explain>, part: Part) -> Text {
        Text(Words::Later(explain, part))
    }

    /// Whether the text is empty; a text written later never is.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Words::Written(s) => s.is_empty(),
            Words::Fixed(s) => s.is_empty(),
            Words::Later(..) => false,
        }
    }

    /// The text, borrowed when it was written beforehand.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match &self.0 {
            Words::Written(s) => std::borrow::Cow::Borrowed(s),
            Words::Fixed(s) => std::borrow::Cow::Borrowed(s),
            Words::Later(explain, part) => {
                let mut s = String::new();
                explain.write(*part, &mut s);
                std::borrow::Cow::Owned(s)
            }
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Words::Written(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text(Words::Fixed(s))
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.as_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_serializes_with_readable_names() {
        let mut d = Decision::hold(
            Timestamp::from_secs(1),
            Knob::Vertical {
                role: Role::Database,
                resource: Resource::Cpu,
            },
            2.0,
        );
        d.rules.push(RuleApplied {
            rule: Rule::Cooldown,
            before: 3.0,
            after: 2.0,
            detail: "x".into(),
        });
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains(r#""kind":"vertical""#), "{json}");
        assert!(json.contains(r#""rule":"cooldown""#), "{json}");
        assert!(d.has_rule(Rule::Cooldown));
        assert!(!d.changes());
    }

    /// Writes what it saw, and counts how often it was asked.
    struct Counted(std::sync::atomic::AtomicUsize);

    impl Explain for Counted {
        fn write(&self, part: Part, out: &mut String) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match part {
                Part::Summary => out.push_str("cpu 0.45 inside [0.50, 0.80]"),
                Part::Detail(n) => out.push_str(&format!("rule {n}")),
            }
        }
    }

    #[test]
    fn text_written_later_reads_as_the_string_it_writes() {
        let explain = Arc::new(Counted(Default::default()));
        let summary = Text::later(explain.clone(), Part::Summary);
        let detail = Text::later(explain.clone(), Part::Detail(2));
        // Nothing is written until read.
        assert_eq!(explain.0.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(summary.to_string(), "cpu 0.45 inside [0.50, 0.80]");
        assert_eq!(summary, Text::from("cpu 0.45 inside [0.50, 0.80]"));
        assert_eq!(detail, "rule 2");
        assert!(!summary.is_empty());
        assert_eq!(format!("{detail:?}"), r#""rule 2""#);
        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(json, r#""cpu 0.45 inside [0.50, 0.80]""#);
        // What is read back is the written text.
        let back: Text = serde_json::from_str(&json).unwrap();
        assert_eq!(back, summary);
        assert!(Text::default().is_empty());
        // Fixed words, written words: the same text, the same value.
        assert_eq!(Text::from("rule 2"), Text::from("rule 2".to_string()));
        assert_eq!(Text::from("rule 2"), detail);
        assert_eq!(explain.0.load(std::sync::atomic::Ordering::Relaxed), 7);
    }
}
