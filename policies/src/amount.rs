//! Amounts of a resource as people write them: `2`, `0.5`, `500m` vCPU; `512MiB`, `10GB` bytes.
//!
//! What it is: the small parsers behind the `step`/`min`/`max` fields of the policy config, and
//! the [`RawAmount`] serde form that accepts a number or a string. What it is not: a general
//! units library; only the units an operator writes for CPU and memory/disk sizes.

use std::fmt;

use serde::{Deserialize, Serialize};
use steward_model::Resource;
use thiserror::Error;

/// An amount as written in TOML: a bare number (vCPUs, or bytes) or a string with a unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawAmount {
    /// vCPUs for CPU, bytes for memory and disk.
    Number(f64),
    /// `"500m"` or `"1.5"` for CPU; `"512MiB"`, `"2GiB"`, `"10GB"`, `"1048576"` for bytes.
    Text(String),
}

impl RawAmount {
    /// Parses the amount in `resource`'s unit (see [`Resource::unit`]).
    pub fn resolve(&self, resource: Resource) -> Result<f64, AmountError> {
        let value = match (self, resource) {
            (RawAmount::Number(n), _) => *n,
            (RawAmount::Text(t), Resource::Cpu) => parse_cpus(t)?,
            (RawAmount::Text(t), Resource::Memory | Resource::Disk) => parse_bytes(t)?,
        };
        if !value.is_finite() || value < 0.0 {
            return Err(AmountError::OutOfRange {
                text: self.to_string(),
            });
        }
        Ok(value)
    }
}

impl fmt::Display for RawAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawAmount::Number(n) => write!(f, "{n}"),
            RawAmount::Text(t) => f.write_str(t),
        }
    }
}

impl From<&str> for RawAmount {
    fn from(text: &str) -> Self {
        RawAmount::Text(text.to_string())
    }
}

impl From<f64> for RawAmount {
    fn from(n: f64) -> Self {
        RawAmount::Number(n)
    }
}

/// Why an amount could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AmountError {
    #[error("`{text}` is empty or has no number (expected e.g. `512MiB`, `2GiB`, `10GB`)")]
    NoNumber { text: String },
    #[error(
        "`{text}` has an unknown unit `{unit}` (expected B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("`{text}` is not a vCPU amount (expected e.g. `2`, `0.5` or `500m`)")]
    NotCpus { text: String },
    #[error("`{text}` is negative or not finite")]
    OutOfRange { text: String },
}

/// Parses a byte size: a number and an optional unit, decimal (`KB`, `MB`, `GB`, `TB`: powers of
/// 1000, as disk vendors count) or binary (`KiB` .. `TiB`: powers of 1024, as Docker and
/// Kubernetes memory limits count). Units are case-insensitive; `K`, `M`, `G`, `T` alone are
/// binary, as in `docker run --memory 512m`.
pub fn parse_bytes(text: &str) -> Result<f64, AmountError> {
    let t = text.trim();
    let split = t
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == '_' || c == '-' || c == '+' || c == 'e')
        })
        .unwrap_or(t.len());
    // `e` is allowed in the number (`1e9`), but a unit never starts with it, so this is unambiguous.
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| AmountError::NoNumber {
            text: text.to_string(),
        })?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(AmountError::UnknownUnit {
                text: text.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(AmountError::OutOfRange {
            text: text.to_string(),
        });
    }
    Ok(bytes)
}

/// Parses vCPUs: `1.5`, or millicores as Kubernetes writes them (`500m` = 0.5).
pub fn parse_cpus(text: &str) -> Result<f64, AmountError> {
    let t = text.trim();
    let not_cpus = || AmountError::NotCpus {
        text: text.to_string(),
    };
    let value = match t.strip_suffix('m') {
        Some(milli) => milli.trim().parse::<f64>().map_err(|_| not_cpus())? / 1000.0,
        None => t.parse::<f64>().map_err(|_| not_cpus())?,
    };
    if !value.is_finite() || value < 0.0 {
        return Err(AmountError::OutOfRange {
            text: text.to_string(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn bytes_accept_binary_and_decimal_units() {
        assert_eq!(parse_bytes("512MiB").unwrap(), 512.0 * MIB);
        assert_eq!(parse_bytes("2 GiB").unwrap(), 2048.0 * MIB);
        assert_eq!(parse_bytes("10GB").unwrap(), 10e9);
        assert_eq!(parse_bytes("512m").unwrap(), 512.0 * MIB);
        assert_eq!(parse_bytes("1048576").unwrap(), MIB);
        assert_eq!(parse_bytes("1.5kib").unwrap(), 1536.0);
    }

    #[test]
    fn bytes_errors_name_the_text_and_the_unit() {
        let e = parse_bytes("12 parsecs").unwrap_err();
        assert_eq!(
            e,
            AmountError::UnknownUnit {
                text: "12 parsecs".into(),
                unit: "parsecs".into()
            }
        );
        assert!(e.to_string().contains("GiB"), "{e}");
        assert!(matches!(
            parse_bytes("GiB"),
            Err(AmountError::NoNumber { .. })
        ));
        assert!(matches!(
            parse_bytes("-1GiB"),
            Err(AmountError::OutOfRange { .. })
        ));
    }

    #[test]
    fn cpus_accept_millicores() {
        assert_eq!(parse_cpus("500m").unwrap(), 0.5);
        assert_eq!(parse_cpus("1.5").unwrap(), 1.5);
        assert!(matches!(
            parse_cpus("two"),
            Err(AmountError::NotCpus { .. })
        ));
    }

    #[test]
    fn raw_amount_resolves_per_resource() {
        assert_eq!(
            RawAmount::from("256MiB").resolve(Resource::Memory).unwrap(),
            256.0 * MIB
        );
        assert_eq!(RawAmount::from(2.0).resolve(Resource::Cpu).unwrap(), 2.0);
        assert!(RawAmount::from("256MiB").resolve(Resource::Cpu).is_err());
        assert!(RawAmount::from(f64::NAN).resolve(Resource::Cpu).is_err());
    }
}
