//! Kubernetes resource quantities (`500m`, `2`, `256Mi`, `1.5Gi`, `1e3`), parsed exactly.
//!
//! The API server stores a custom resource's quantity as written, so the schema checks its form
//! with a pattern and this module turns it into integers for scheduling: CPU in millicores and
//! memory in bytes. Like Kubernetes, a fractional result is rounded *up* (0.1m of CPU is 1m), and
//! nothing is ever a float.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The schema pattern of a non-negative quantity (Kubernetes' grammar without a sign).
pub const QUANTITY_PATTERN: &str =
    r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+]?[0-9]+|[KMGTPE]i|[mkMGTPE])?$";

/// A non-negative Kubernetes quantity, kept in the form the user wrote it.
/// The default is zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(pub String);

/// Why a string is not a quantity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Not of the form number + optional suffix.
    #[error(
        "invalid quantity {0:?}: expected a number with an optional suffix, such as 500m, 2, 256Mi or 1.5Gi"
    )]
    Malformed(String),
    /// Too large to represent (more than 2^63-1 of the base unit).
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

impl Quantity {
    /// A quantity from its text form (checked only when parsed).
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value in thousandths of the unit (millicores for CPU), rounded up.
    pub fn to_milli(&self) -> Result<u64, QuantityError> {
        self.scaled(3)
    }

    /// The value in whole units (bytes for memory), rounded up.
    pub fn to_units(&self) -> Result<u64, QuantityError> {
        self.scaled(0)
    }

    /// A CPU quantity from millicores, in the canonical `m` or whole-core form.
    pub fn from_millicores(m: u64) -> Self {
        if m.is_multiple_of(1000) {
            Self((m / 1000).to_string())
        } else {
            Self(format!("{m}m"))
        }
    }

    /// A memory quantity from bytes, with the largest binary suffix that keeps it exact.
    pub fn from_bytes(b: u64) -> Self {
        const SUFFIXES: [(&str, u32); 6] = [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ];
        for (suffix, shift) in SUFFIXES {
            if b != 0 && b.trailing_zeros() >= shift {
                return Self(format!("{}{suffix}", b >> shift));
            }
        }
        Self(b.to_string())
    }

    /// Value × 10^`digits`, rounded up, as an integer.
    fn scaled(&self, digits: u32) -> Result<u64, QuantityError> {
        let s = self.0.as_str();
        let bad = || QuantityError::Malformed(s.to_string());
        let big = || QuantityError::TooLarge(s.to_string());
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(num_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(bad());
        }
        // mantissa × 2^bin × 10^dec
        let (bin, dec): (u32, i64) = match suffix {
            "" => (0, 0),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            e if e.starts_with(['e', 'E']) => {
                let exp = e[1..].strip_prefix('+').unwrap_or(&e[1..]);
                if exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (0, exp.parse::<i64>().map_err(|_| big())?)
            }
            _ => return Err(bad()),
        };
        let digits_str = format!("{int_part}{frac_part}");
        let digits_str = digits_str.trim_start_matches('0');
        if digits_str.len() > 38 {
            return Err(big());
        }
        let mantissa: u128 = if digits_str.is_empty() {
            0
        } else {
            digits_str.parse().map_err(|_| bad())?
        };
        let exp10 = dec - frac_part.len() as i64 + i64::from(digits);
        let mut value = mantissa.checked_mul(1u128 << bin).ok_or_else(big)?;
        if exp10 >= 0 {
            let factor = 10u128
                .checked_pow(u32::try_from(exp10).map_err(|_| big())?)
                .ok_or_else(big)?;
            value = value.checked_mul(factor).ok_or_else(big)?;
        } else {
            let divisor = u32::try_from(-exp10)
                .ok()
                .and_then(|e| 10u128.checked_pow(e));
            value = match divisor {
                Some(d) => value.div_ceil(d),
                // Smaller than any representable unit but not zero: round up to one.
                None => u128::from(value != 0),
            };
        }
        u64::try_from(value)
            .ok()
            .filter(|v| *v <= i64::MAX as u64)
            .ok_or_else(big)
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Self("0".into())
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML users write `cpu: 2`; accept numbers as Kubernetes does.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Int(i) => Self(i.to_string()),
            Raw::Str(s) => Self(s),
        })
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> Result<u64, QuantityError> {
        Quantity::new(s).to_milli()
    }

    fn units(s: &str) -> Result<u64, QuantityError> {
        Quantity::new(s).to_units()
    }

    #[test]
    fn parses_cpu() {
        assert_eq!(milli("500m"), Ok(500));
        assert_eq!(milli("2"), Ok(2000));
        assert_eq!(milli("1.5"), Ok(1500));
        assert_eq!(milli("0.1m"), Ok(1));
        assert_eq!(milli(".5"), Ok(500));
        assert_eq!(milli("1e3"), Ok(1_000_000));
        assert_eq!(milli("0"), Ok(0));
    }

    #[test]
    fn parses_memory() {
        assert_eq!(units("256Mi"), Ok(256 << 20));
        assert_eq!(units("1.5Gi"), Ok(3 << 29));
        assert_eq!(units("1G"), Ok(1_000_000_000));
        assert_eq!(units("128974848"), Ok(128_974_848));
        assert_eq!(units("129e6"), Ok(129_000_000));
        assert_eq!(units("1k"), Ok(1000));
        assert_eq!(units("1Ki"), Ok(1024));
    }

    #[test]
    fn refuses_malformed_and_huge() {
        for s in [
            "", "abc", "1.2.3", "5 Mi", "-1", "1x", "1e", "1e+", "Mi", ".",
        ] {
            assert!(matches!(units(s), Err(QuantityError::Malformed(_))), "{s}");
        }
        assert!(matches!(units("100Ei"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(units("1e400"), Err(QuantityError::TooLarge(_))));
    }

    #[test]
    fn canonical_forms_round_trip() {
        for m in [0, 1, 250, 1000, 2500, 64_000] {
            assert_eq!(Quantity::from_millicores(m).to_milli(), Ok(m));
        }
        for b in [0, 1, 1024, 256 << 20, 3 << 29, 12345] {
            assert_eq!(Quantity::from_bytes(b).to_units(), Ok(b));
        }
        assert_eq!(Quantity::from_bytes(256 << 20).0, "256Mi");
    }

    #[test]
    fn accepts_yaml_integers() {
        let q: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(q, Quantity::new("2"));
    }
}
