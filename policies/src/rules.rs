//! A compact set of [`Rule`]s: the reason codes a [`crate::Verdict`] carries without allocating.
//!
//! What it is: a bit set over the model's `Rule` enum, `Copy` and one word wide. What it is not:
//! the full explanation (before/after values and details live in `Decision::rules`).

use std::fmt;

use steward_model::{Rule, RuleApplied, Text};

/// One applied rule of a decision's explanation: what it changed (`before` -> `after`) and why.
/// The one constructor every policy (vertical, disk, replicas) uses.
pub(crate) fn rule(rule: Rule, before: f64, after: f64, detail: impl Into<Text>) -> RuleApplied {
    RuleApplied {
        rule,
        before,
        after,
        detail: detail.into(),
    }
}

/// Every rule, in the order of their bits.
const ALL: [Rule; 19] = [
    Rule::Band,
    Rule::UpWindow,
    Rule::DownWindow,
    Rule::Cooldown,
    Rule::Rounding,
    Rule::Bounds,
    Rule::StepLimit,
    Rule::NoRegrow,
    Rule::Budget,
    Rule::MissingData,
    Rule::StaleData,
    Rule::OomEmergency,
    Rule::Forecast,
    Rule::Threshold,
    Rule::WalGrowth,
    Rule::HaMinimum,
    Rule::NotCapacity,
    Rule::NeverShrink,
    Rule::CacheShort,
];

fn bit(rule: Rule) -> u32 {
    // A match, not a search: the compiler checks it covers every rule.
    let index = match rule {
        Rule::Band => 0,
        Rule::UpWindow => 1,
        Rule::DownWindow => 2,
        Rule::Cooldown => 3,
        Rule::Rounding => 4,
        Rule::Bounds => 5,
        Rule::StepLimit => 6,
        Rule::NoRegrow => 7,
        Rule::Budget => 8,
        Rule::MissingData => 9,
        Rule::StaleData => 10,
        Rule::OomEmergency => 11,
        Rule::Forecast => 12,
        Rule::Threshold => 13,
        Rule::WalGrowth => 14,
        Rule::HaMinimum => 15,
        Rule::NotCapacity => 16,
        Rule::NeverShrink => 17,
        Rule::CacheShort => 18,
    };
    1 << index
}

/// A set of rules that shaped a decision.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RuleSet(u32);

impl RuleSet {
    pub const EMPTY: RuleSet = RuleSet(0);

    pub fn insert(&mut self, rule: Rule) {
        self.0 |= bit(rule);
    }

    pub fn contains(self, rule: Rule) -> bool {
        self.0 & bit(rule) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The rules in the set, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_its_own_bit() {
        let mut all = RuleSet::EMPTY;
        for (i, r) in ALL.into_iter().enumerate() {
            assert!(!all.contains(r), "{r} shares a bit");
            all.insert(r);
            assert_eq!(all.iter().count(), i + 1);
        }
        let mut one = RuleSet::default();
        one.insert(Rule::Cooldown);
        assert_eq!(one.iter().collect::<Vec<_>>(), [Rule::Cooldown]);
        assert!(!one.contains(Rule::Band));
    }
}
