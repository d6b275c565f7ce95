//! Timestamp conversions shared by every provider parser: epoch milliseconds, Clerk's
//! seconds-or-milliseconds envelope `timestamp`, and JSON values holding either an
//! ISO 8601 / RFC 3339 string or an epoch-milliseconds number.
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

/// Clerk envelope timestamps below this are seconds, at or above it milliseconds (SPEC §2).
/// 10^11 s is the year 5138; 10^11 ms is March 1973, long before any Clerk event.
pub const CLERK_SECONDS_BELOW: i64 = 100_000_000_000;

/// An instant from milliseconds since the Unix epoch; `None` when out of chrono's range.
pub fn from_epoch_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Clerk's envelope `timestamp`: documented as milliseconds, but seconds in Clerk's own spec
/// examples. Values below 10^11 are read as seconds, the rest as milliseconds.
pub fn clerk_envelope_timestamp(value: i64) -> Option<DateTime<Utc>> {
    if value < CLERK_SECONDS_BELOW {
        DateTime::from_timestamp(value, 0)
    } else {
        from_epoch_ms(value)
    }
}

/// An instant from a JSON value: an ISO 8601 / RFC 3339 string (`2024-05-28T08:00:00.000Z`,
/// an offset, a space instead of `T`, or no offset at all, read as UTC) or an epoch-ms
/// number. Anything else (null, bool, unparsable text, out of range) is `None`.
pub fn from_json(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => parse_iso8601(s),
        Value::Number(_) => json_integer(value).and_then(from_epoch_ms),
        _ => None,
    }
}

/// A JSON number with no fractional part as `i64` (`1.7e12` counts, `1.5` does not).
pub fn json_integer(value: &Value) -> Option<i64> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // `i64::MAX as f64` rounds up to 2^63, so the upper bound is exclusive.
    if f.is_finite() && f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Some(f as i64)
    } else {
        None
    }
}

/// Parses the ISO 8601 shapes providers actually send; see [`from_json`].
fn parse_iso8601(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    // Offsets without minutes (`+00`, as Postgres prints them) or without a colon (`+0000`).
    for format in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    // No offset at all: UTC by convention.
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("test timestamp")
    }

    #[test]
    fn epoch_ms() {
        assert_eq!(from_epoch_ms(1_654_012_591_514), Some(utc("2022-05-31T15:56:31.514Z")));
        assert_eq!(from_epoch_ms(0), Some(utc("1970-01-01T00:00:00Z")));
        assert_eq!(from_epoch_ms(-1), Some(utc("1969-12-31T23:59:59.999Z")));
        assert_eq!(from_epoch_ms(i64::MAX), None);
        assert_eq!(from_epoch_ms(i64::MIN), None);
    }

    #[test]
    fn clerk_envelope_seconds_or_ms() {
        // Seconds, as in Clerk's OpenAPI examples.
        assert_eq!(clerk_envelope_timestamp(1_716_883_200), Some(utc("2024-05-28T08:00:00Z")));
        // Milliseconds, as documented and as in the docs example.
        assert_eq!(clerk_envelope_timestamp(1_716_883_200_000), Some(utc("2024-05-28T08:00:00Z")));
        assert_eq!(clerk_envelope_timestamp(1_654_012_591_835), Some(utc("2022-05-31T15:56:31.835Z")));
        // The boundary: just below is seconds (far future), at 10^11 it is milliseconds.
        assert_eq!(
            clerk_envelope_timestamp(CLERK_SECONDS_BELOW - 1),
            DateTime::from_timestamp(CLERK_SECONDS_BELOW - 1, 0)
        );
        assert_eq!(clerk_envelope_timestamp(CLERK_SECONDS_BELOW), Some(utc("1973-03-03T09:46:40Z")));
        assert_eq!(clerk_envelope_timestamp(0), Some(utc("1970-01-01T00:00:00Z")));
        assert_eq!(clerk_envelope_timestamp(i64::MAX), None);
        assert_eq!(clerk_envelope_timestamp(i64::MIN), None);
    }

    #[test]
    fn json_rfc3339_strings() {
        let expect = Some(utc("2024-05-28T08:00:00Z"));
        assert_eq!(from_json(&json!("2024-05-28T08:00:00Z")), expect);
        assert_eq!(from_json(&json!("2024-05-28T08:00:00.000Z")), expect);
        assert_eq!(from_json(&json!("2024-05-28T10:00:00+02:00")), expect);
        assert_eq!(from_json(&json!("2024-05-28T03:30:00-04:30")), expect);
        assert_eq!(from_json(&json!("  2024-05-28T08:00:00z ")), expect);
        assert_eq!(from_json(&json!("2024-05-28T08:00:00.123456Z")), Some(utc("2024-05-28T08:00:00.123456Z")));
    }

    #[test]
    fn json_other_iso8601_strings() {
        let expect = Some(utc("2024-05-28T08:00:00Z"));
        assert_eq!(from_json(&json!("2024-05-28 08:00:00Z")), expect);
        assert_eq!(from_json(&json!("2024-05-28 08:00:00+00")), expect);
        assert_eq!(from_json(&json!("2024-05-28 10:00:00.000+02")), expect);
        assert_eq!(from_json(&json!("2024-05-28T10:00:00+0200")), expect);
        assert_eq!(from_json(&json!("2024-05-28T08:00:00")), expect);
        assert_eq!(from_json(&json!("2024-05-28 08:00:00.000")), expect);
    }

    #[test]
    fn json_epoch_ms_numbers() {
        let expect = Some(utc("2024-05-28T08:00:00Z"));
        assert_eq!(from_json(&json!(1_716_883_200_000_i64)), expect);
        assert_eq!(from_json(&json!(1_716_883_200_000.0_f64)), expect);
        assert_eq!(from_json(&json!(1_716_883_200_000_u64)), expect);
        assert_eq!(from_json(&json!(1_716_883_200_000.5_f64)), None);
        assert_eq!(from_json(&json!(u64::MAX)), None);
        assert_eq!(from_json(&json!(1e300)), None);
    }

    #[test]
    fn json_rejects_everything_else() {
        for value in [
            json!(null),
            json!(true),
            json!(""),
            json!("yesterday"),
            json!("2024-05-28"),
            json!("2024-13-28T08:00:00Z"),
            json!("1716883200000"),
            json!([1_716_883_200_000_i64]),
            json!({"at": 1_716_883_200_000_i64}),
        ] {
            assert_eq!(from_json(&value), None, "{value}");
        }
    }

    #[test]
    fn json_integer_values() {
        assert_eq!(json_integer(&json!(42)), Some(42));
        assert_eq!(json_integer(&json!(-42)), Some(-42));
        assert_eq!(json_integer(&json!(4.2e1)), Some(42));
        assert_eq!(json_integer(&json!(4.25)), None);
        assert_eq!(json_integer(&json!(u64::MAX)), None);
        assert_eq!(json_integer(&json!("42")), None);
        assert_eq!(json_integer(&json!(null)), None);
    }
}
