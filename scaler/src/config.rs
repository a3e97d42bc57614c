//! The scaler's own config (`[scaler]`): rollout timeouts, naming, and the settings formulas.
//!
//! What it is: the two-stage config ([`RawScalerConfig`] with `deny_unknown_fields` and documented
//! defaults -> [`ScalerConfig`] via `validate()`). What it is not: the policies' config, which
//! lives in `steward-policies` ([`PolicyConfig`]) and is handed in already validated.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::ConfigErrors;
use steward_policies::PolicyConfig;

use crate::settings::{RawSettingsConfig, SettingsConfig};

/// How long one step may take (the action, then its check) before the plan fails (10 min: a
/// replica restart with a large shared_buffers, or a new member's base backup, takes minutes).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long a proposal waits for the coordinator's answer before the scaler forgets it.
pub const DEFAULT_PROPOSAL_TIMEOUT: Duration = Duration::from_secs(60);

/// `[scaler]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScalerConfig {
    /// How PostgreSQL settings follow a resize (`[scaler.settings]`).
    pub settings: RawSettingsConfig,
    /// One step's time limit, action and check together (default `10m`).
    #[serde(with = "humantime_serde")]
    pub step_timeout: Duration,
    /// How long a proposal waits for permission to start (default `1m`).
    #[serde(with = "humantime_serde")]
    pub proposal_timeout: Duration,
    /// Name prefix of new database members (`pg-` gives `pg-4`); default: the prefix the existing
    /// members share, else `<cluster>-db-`.
    pub member_prefix: Option<String>,
    /// Whether a scale-in deletes the removed member's data (default false: kept, as after a
    /// repair, so an operator can still recover it).
    pub delete_data_on_scale_in: bool,
}

impl Default for RawScalerConfig {
    fn default() -> Self {
        RawScalerConfig {
            settings: RawSettingsConfig::default(),
            step_timeout: DEFAULT_STEP_TIMEOUT,
            proposal_timeout: DEFAULT_PROPOSAL_TIMEOUT,
            member_prefix: None,
            delete_data_on_scale_in: false,
        }
    }
}

/// Everything the scaler core needs, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScalerConfig {
    /// The policies (validated by `steward-policies`).
    pub policy: PolicyConfig,
    pub settings: SettingsConfig,
    #[serde(with = "humantime_serde")]
    pub step_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub proposal_timeout: Duration,
    pub member_prefix: Option<String>,
    pub delete_data_on_scale_in: bool,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        RawScalerConfig::default()
            .validate(PolicyConfig::default())
            .expect("the built-in scaler defaults are valid")
    }
}

impl RawScalerConfig {
    /// Checks every field, reporting each problem with its path under `scaler`.
    pub fn validate(self, policy: PolicyConfig) -> Result<ScalerConfig, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let settings = match self.settings.validate() {
            Ok(s) => Some(s),
            Err(e) => {
                errors.extend_under("scaler.settings", e);
                None
            }
        };
        // A step or a proposal waits at most a day (issue 16): past that it holds the cluster's
        // one slot for nothing.
        const DAY: Duration = Duration::from_secs(86_400);
        errors.positive_at_most("scaler.step_timeout", self.step_timeout, DAY);
        errors.positive_at_most("scaler.proposal_timeout", self.proposal_timeout, DAY);
        if let Some(p) = &self.member_prefix {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                errors.push(
                    "scaler.member_prefix",
                    format!("`{p}` must be non-empty ASCII letters, digits, `-` or `_`"),
                );
            }
        }
        match settings {
            Some(settings) if errors.is_empty() => Ok(ScalerConfig {
                policy,
                settings,
                step_timeout: self.step_timeout,
                proposal_timeout: self.proposal_timeout,
                member_prefix: self.member_prefix,
                delete_data_on_scale_in: self.delete_data_on_scale_in,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_full_path() {
        let mut raw = RawScalerConfig {
            step_timeout: Duration::ZERO,
            ..Default::default()
        };
        raw.settings.max_connections = 0;
        raw.member_prefix = Some("pg 1".into());
        let e = raw.validate(PolicyConfig::default()).unwrap_err();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "scaler.settings.max_connections",
                "scaler.step_timeout",
                "scaler.member_prefix"
            ]
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let raw: RawScalerConfig =
            serde_json::from_str(r#"{"step_timeout":"90s","settings":{"max_connections":200}}"#)
                .unwrap();
        let cfg = raw.validate(PolicyConfig::default()).unwrap();
        assert_eq!(cfg.step_timeout, Duration::from_secs(90));
        assert_eq!(cfg.settings.max_connections, 200);
        assert_eq!(cfg.proposal_timeout, DEFAULT_PROPOSAL_TIMEOUT);
    }
}
