//! Durations as users write them in a StreamJob: `500ms`, `10s`, `5m`, `1h30m`.
//!
//! The format is a subset of Go's `time.ParseDuration` (whole numbers, units `ms`, `s`, `m`,
//! `h`), so that the same strings work with CEL's `duration()` in the CRD's validation rules.

use std::{borrow::Cow, fmt, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The schema pattern of a duration string.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// A duration in a StreamJob spec, kept as the user wrote it and parsed on use.
///
/// Keeping the string means a malformed duration never fails deserialization of the whole
/// StreamJob; [`crate::validation`] reports it with its field path instead.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct DurationString(Cow<'static, str>);

impl DurationString {
    /// A duration string from a literal.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Cow::Borrowed(s))
    }

    /// `0s`.
    pub fn zero() -> Self {
        Self::from_static("0s")
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the duration.
    pub fn parse(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl From<&str> for DurationString {
    fn from(s: &str) -> Self {
        Self(Cow::Owned(s.to_owned()))
    }
}

impl From<Duration> for DurationString {
    fn from(d: Duration) -> Self {
        let ms = d.as_millis();
        let text = if ms.is_multiple_of(3_600_000) && ms > 0 {
            format!("{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            format!("{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        };
        Self(Cow::Owned(text))
    }
}

impl fmt::Debug for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for DurationString {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 64,
            "description": "A duration: whole numbers with units ms, s, m or h, for example 500ms, 10s, 5m, 1h30m."
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty string.
    #[error("a duration must not be empty; write for example 10s, 5m or 1h")]
    Empty,
    /// Something other than digits followed by a unit.
    #[error(
        "{0:?} is not a duration; write whole numbers with units ms, s, m or h, for example 10s, 5m or 1h30m"
    )]
    Malformed(String),
    /// Too large to represent.
    #[error("{0:?} is too long a duration")]
    Overflow(String),
}

/// Parses `500ms`, `10s`, `5m`, `1h30m` (whole numbers, units `ms`, `s`, `m`, `h`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_owned());
    let overflow = || DurationError::Overflow(text.to_owned());
    let mut rest = text.as_bytes();
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(malformed());
        }
        let mut value: u64 = 0;
        for &b in &rest[..digits] {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        rest = &rest[digits..];
        let (unit_ms, unit_len) = match rest {
            [b'm', b's', ..] => (1, 2),
            [b's', ..] => (1000, 1),
            [b'm', ..] => (60_000, 1),
            [b'h', ..] => (3_600_000, 1),
            _ => return Err(malformed()),
        };
        rest = &rest[unit_len..];
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_and_combinations() {
        let ms = |t: &str| parse_duration(t).map(|d| d.as_millis());
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("10s"), Ok(10_000));
        assert_eq!(ms("5m"), Ok(300_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("1m30s250ms"), Ok(90_250));
        assert_eq!(ms("0s"), Ok(0));
    }

    #[test]
    fn rejects_what_users_get_wrong() {
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "10 s",
            "1d",
            "-5s",
            "5sec",
            "1h 30m",
            "ten seconds",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn round_trips_through_display() {
        for ms in [0u64, 1, 999, 1000, 60_000, 90_000, 3_600_000, 7_200_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(DurationString::from(d).parse(), Ok(d));
        }
    }
}
