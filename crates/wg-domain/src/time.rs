//! Time values as the product shows them: RFC 3339 UTC timestamps, `HH:MM:SS` ages and durations
//! written like `15m`, `120s`, `1h`.
//!
//! Times are carried as milliseconds since the Unix epoch (`i64`), so the store, the wire protocol
//! and the API agree without a calendar library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// The current wall-clock time in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Formats `ms` as RFC 3339 UTC with second precision, e.g. `2026-04-20T18:41:02Z`.
pub fn rfc3339(ms: UnixMillis) -> String {
    let secs = u64::try_from(ms.max(0) / 1000).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Formats `ms` as RFC 3339 UTC with millisecond precision, e.g. `2026-04-20T18:41:02.123Z`.
pub fn rfc3339_millis(ms: UnixMillis) -> String {
    let ms = u64::try_from(ms.max(0)).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Formats a duration in milliseconds as `HH:MM:SS` (hours grow past 99 as needed).
pub fn hms(ms: i64) -> String {
    let total = ms.max(0) / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        total / 3600,
        (total % 3600) / 60,
        total % 60
    )
}

/// Error for a duration that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {0:?}: expected a number with a unit, e.g. 90s, 5m, 1h")]
pub struct BadDuration(pub String);

/// Parses a duration such as `90s`, `5m`, `1h30m` or `250ms`.
///
/// # Errors
/// [`BadDuration`] when the text has no unit or is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    humantime::parse_duration(text.trim()).map_err(|_| BadDuration(text.to_owned()))
}

/// Renders a duration compactly, e.g. `15m`, `120s`, `1h`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Serde helpers for a `Duration` written as text (`15m`).
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as `15m`-style text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Deserialises from `15m`-style text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(hms(862_000), "00:14:22");
        assert_eq!(hms(-5), "00:00:00");
        assert_eq!(rfc3339(1_776_710_462_000), "2026-04-20T18:41:02Z");
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
