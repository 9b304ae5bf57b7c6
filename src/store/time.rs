//! Time as the API shows it: RFC 3339 in UTC with `Z`, whole seconds. Stored as Unix seconds.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Milliseconds since the Unix epoch, now (for leases and short waits).
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `2026-04-11T09:32:17Z`.
pub fn format(unix: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Serializes Unix seconds as [`format()`] writes them (`#[serde(serialize_with)]`).
pub fn serialize<S: serde::Serializer>(unix: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*unix))
}

/// Parses an RFC 3339 timestamp (any offset) to Unix seconds, dropping fractions.
pub fn parse(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = parse("2026-04-11T09:32:17Z").unwrap();
        assert_eq!(format(t), "2026-04-11T09:32:17Z");
        assert_eq!(parse("2026-04-11T11:32:17.5+02:00"), Some(t));
        assert_eq!(parse("yesterday"), None);
    }
}
