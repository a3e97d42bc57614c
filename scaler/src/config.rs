//! The scaler's own config (`[scaler]`): rollout timeouts, naming, and the settings formulas.
//!
//! What it is: the two-stage config ([`RawScalerConfig`] with `deny_unknown_fields` and documented
//! defaults -> [`ScalerConfig`] via `validate()`). What it is not: the policies' config, which
//! lives in `steward-policies` ([`PolicyConfig`]) and is handed in already validated.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::{ConfigErrors, Resource, Role};
use steward_policies::{PolicyConfig, VerticalConfig};

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
    /// The vertical policies' configs, each made once and shared by every scaler of this config
    /// ([`ScalerConfig::vertical`]).
    #[serde(skip)]
    shared: Shared,
}

/// Copies of `policy`'s vertical configs made on first use: a fleet's scalers share one
/// `ScalerConfig`, and each of their policies (and each decision it explains) would otherwise
/// hold its own ~200-byte copy. Not part of what the config is: equal whatever it holds.
#[derive(Clone, Debug, Default)]
struct Shared(OnceLock<[Arc<VerticalConfig>; 4]>);

impl PartialEq for Shared {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ScalerConfig {
    /// The vertical config of `role` and `resource` (`None` for disk), shared: the same `Arc`
    /// for every caller while the policy is what it was when first asked (a copy changed
    /// afterwards gets its own).
    pub fn vertical(&self, role: Role, resource: Resource) -> Option<Arc<VerticalConfig>> {
        let wanted = self.policy.role(role).vertical(resource)?;
        let index =
            usize::from(role == Role::Balancer) * 2 + usize::from(resource == Resource::Memory);
        let shared = self.shared.0.get_or_init(|| {
            [
                (Role::Database, Resource::Cpu),
                (Role::Database, Resource::Memory),
                (Role::Balancer, Resource::Cpu),
                (Role::Balancer, Resource::Memory),
            ]
            .map(|(role, resource)| {
                let config = self.policy.role(role).vertical(resource);
                Arc::new(config.expect("cpu and memory are vertical").clone())
            })
        });
        Some(if *shared[index] == *wanted {
            Arc::clone(&shared[index])
        } else {
            Arc::new(wanted.clone())
        })
    }
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
                shared: Shared::default(),
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertical_configs_are_shared_until_the_policy_changes() {
        let config = ScalerConfig::default();
        let a = config.vertical(Role::Database, Resource::Cpu).unwrap();
        let b = config.vertical(Role::Database, Resource::Cpu).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one copy for every scaler of a config");
        assert_eq!(*a, config.policy.database.cpu);
        let memory = config.vertical(Role::Balancer, Resource::Memory).unwrap();
        assert_eq!(*memory, config.policy.balancer.memory);
        assert!(config.vertical(Role::Database, Resource::Disk).is_none());
        // A clone changed afterwards must not be handed the old policy.
        let mut changed = config.clone();
        changed.policy.database.cpu.high = 0.95;
        let c = changed.vertical(Role::Database, Resource::Cpu).unwrap();
        assert_eq!(c.high, 0.95);
        assert_eq!(changed, changed.clone());
        assert_ne!(changed, config);
    }

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
