//! Typed reads of a provider object's fields, shared by the provider modules. Absent or
//! null is `None`; a value of the wrong type is a `ParseError` naming the field, so a wrong
//! `updated_at` can never slip past the newer-wins rule as "unknown". A well-formed time
//! that no calendar holds (an epoch far beyond year 262143) is `None`, like a time Postgres
//! cannot store (SPEC §2 rule 3): such a user still lands.
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::timestamps::{from_epoch_ms, from_json, json_integer};
use super::ParseError;

/// A string column.
pub fn optional_string(
    fields: &Map<String, Value>,
    key: &str,
    label: &'static str,
) -> Result<Option<String>, ParseError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ParseError::Field(label)),
    }
}

/// A time column in ISO 8601 or epoch milliseconds (Auth0, Better Auth).
pub fn optional_time(
    fields: &Map<String, Value>,
    key: &str,
    label: &'static str,
) -> Result<Option<DateTime<Utc>>, ParseError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Number(_)) => json_integer(value).map(from_epoch_ms).ok_or(ParseError::Field(label)),
        Some(value) => from_json(value).map(Some).ok_or(ParseError::Field(label)),
    }
}

/// A time column in integer epoch milliseconds only (Clerk).
pub fn optional_epoch_ms(
    fields: &Map<String, Value>,
    key: &str,
    label: &'static str,
) -> Result<Option<DateTime<Utc>>, ParseError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => json_integer(value).map(from_epoch_ms).ok_or(ParseError::Field(label)),
    }
}
