//! Owns how the generated messages serialize (`serde::Serialize` is derived on every message by
//! `build.rs`, which points each field at one of the functions here):
//!
//! - enums as short names (`clerk`, `live`, `backfill-only`, `succeeded`; `unknown(7)` for a
//!   value this client does not know),
//! - timestamps as RFC 3339 UTC strings, `null` when unset (or the zero value),
//! - durations (`lag`, `window`) as seconds (a JSON number), `null` when unset,
//! - optional strings (`error`, `secret_key_hint`, …) as `null` when empty,
//! - counters as JSON numbers,
//! - secrets (`credentials.*`, `database_url`) never: they serialize as `"<redacted>"`.
//!
//! ```
//! use capydb_auth_sync_client::{BackfillJob, BackfillState, Provider};
//!
//! let job = BackfillJob {
//!     id: "bf_1".into(),
//!     project_id: "shop".into(),
//!     state: BackfillState::Succeeded as i32,
//!     provider: Provider::Clerk as i32,
//!     users_written: 5000,
//!     ..Default::default()
//! };
//! let v = serde_json::to_value(&job).unwrap();
//! assert_eq!(v["state"], "succeeded");
//! assert_eq!(v["provider"], "clerk");
//! assert_eq!(v["users_written"], 5000);
//! assert_eq!(v["error"], serde_json::Value::Null);
//! assert_eq!(v["finished_at"], serde_json::Value::Null);
//! ```

use std::marker::PhantomData;

use serde::Serializer;

use crate::display::timestamp_rfc3339;
use crate::pb::{BackfillState, Health, IntegrationState, Provider, SyncMode};
use crate::provider::provider_name;

/// A proto enum with a short name for people and JSON.
pub trait ShortName: TryFrom<i32> {
    /// `clerk`, `live`, `needs-attention`, …
    fn short_name(&self) -> &'static str;
}

impl ShortName for Provider {
    fn short_name(&self) -> &'static str {
        provider_name(*self)
    }
}

impl ShortName for IntegrationState {
    fn short_name(&self) -> &'static str {
        match self {
            IntegrationState::Unspecified => "unspecified",
            IntegrationState::Active => "active",
            IntegrationState::Backfilling => "backfilling",
            IntegrationState::NeedsAttention => "needs-attention",
        }
    }
}

impl ShortName for SyncMode {
    fn short_name(&self) -> &'static str {
        match self {
            SyncMode::Unspecified => "unspecified",
            SyncMode::Live => "live",
            SyncMode::BackfillOnly => "backfill-only",
        }
    }
}

impl ShortName for Health {
    fn short_name(&self) -> &'static str {
        match self {
            Health::Unspecified => "unspecified",
            Health::Ok => "ok",
            Health::NeedsAttention => "needs-attention",
            Health::Failing => "failing",
        }
    }
}

impl ShortName for BackfillState {
    fn short_name(&self) -> &'static str {
        match self {
            BackfillState::Unspecified => "unspecified",
            BackfillState::Queued => "queued",
            BackfillState::Running => "running",
            BackfillState::Succeeded => "succeeded",
            BackfillState::Failed => "failed",
            BackfillState::Cancelled => "cancelled",
        }
    }
}

/// The short name of an enum value as stored in a message (`unknown(7)` when out of range).
pub fn enum_str<T: ShortName>(v: i32) -> String {
    match T::try_from(v) {
        Ok(e) => e.short_name().to_string(),
        Err(_) => format!("unknown({v})"),
    }
}

/// `serialize_with` target for an `i32` enum field of type `T`:
/// `EnumName::<Provider>::serialize` writes the short name, `…::serialize_seq` an array of them.
pub struct EnumName<T>(PhantomData<T>);

impl<T: ShortName> EnumName<T> {
    /// Serializes an `i32` enum field as its short name.
    pub fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&enum_str::<T>(*v))
    }

    /// Serializes a repeated `i32` enum field as an array of short names.
    pub fn serialize_seq<S: Serializer>(v: &[i32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| enum_str::<T>(*x)))
    }
}

/// Serializes an optional timestamp as RFC 3339 (`null` when unset or zero).
pub fn timestamp<S: Serializer>(ts: &Option<prost_types::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match timestamp_rfc3339(ts.as_ref()) {
        Some(t) => s.serialize_str(&t),
        None => s.serialize_none(),
    }
}

/// Serializes an optional duration as seconds (a number; `null` when unset).
pub fn duration<S: Serializer>(d: &Option<prost_types::Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.seconds as f64 + f64::from(d.nanos) / 1e9),
        None => s.serialize_none(),
    }
}

/// Serializes repeated timestamps as RFC 3339 strings (`null` for zero values).
pub fn timestamps<S: Serializer>(v: &[prost_types::Timestamp], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|t| timestamp_rfc3339(Some(t))))
}

/// Serializes a string as `null` when empty.
pub fn empty_as_null<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str(v)
    }
}

/// Serializes a secret as `"<redacted>"` (`null` when empty): the value never leaves.
pub fn redacted<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{ConfigureIntegrationRequest, Credentials, SyncStatus, WebhookStats};

    #[test]
    fn secrets_never_serialize() {
        let mut req = ConfigureIntegrationRequest {
            project_id: "p1".into(),
            provider: Provider::Clerk as i32,
            credentials: Some(Credentials {
                secret_key: "sk_test_sekrit".into(),
                webhook_signing_secret: "whsec_c2Vrcml0".into(),
            }),
            ..Default::default()
        };
        req.database_url = "postgres://u:hunter2@db/app".into();
        let text = serde_json::to_string(&req).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("sekrit") && !text.contains("c2Vrcml0"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn status_json_uses_short_names_and_nulls() {
        let s = SyncStatus {
            mode: SyncMode::BackfillOnly as i32,
            verdict: "ok".into(),
            webhooks: Some(WebhookStats {
                applied: 3,
                last_event_at: Some(prost_types::Timestamp { seconds: 1_717_000_000, nanos: 0 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["mode"], "backfill-only");
        assert_eq!(v["integration"], serde_json::Value::Null);
        assert_eq!(v["webhooks"]["applied"], 3);
        assert_eq!(v["webhooks"]["last_event_at"], "2024-05-29T16:26:40Z");
        assert_eq!(v["webhooks"]["last_error"], serde_json::Value::Null);
        assert_eq!(v["database_error"], serde_json::Value::Null);
        assert_eq!(enum_str::<Provider>(9), "unknown(9)");
    }
}
