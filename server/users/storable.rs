//! Poison-proof values (SPEC §2 rule 3): Postgres cannot store the NUL character in `text`
//! or `jsonb`, nor a timestamp before 4713 BC. Rather than let one such value fail a whole
//! delivery, batch or backfill page on every retry, every change is made storable here, in
//! the provider-neutral record, before anything reaches SQL: NUL becomes U+FFFD (in `raw`,
//! keys included, and in the typed columns), an unstorable timestamp becomes NULL, and a
//! `raw` with a number `numeric` refuses as written is rewritten (see `users::RawJson`).
//!
//! Webhooks, the inbox and the backfill all call [`UserChange::make_storable`] (through the
//! writer), so the rule lives in one place.
use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;

use super::record::{UserChange, UserDeletion, UserRecord, UserSighting};

/// What replaces a NUL character.
pub const REPLACEMENT: char = '\u{FFFD}';

/// The earliest year Postgres' `timestamptz` holds (4713 BC is astronomical year -4712).
/// chrono's latest year (262143) is inside Postgres' upper bound (294276 AD).
const EARLIEST_YEAR: i32 = -4712;

/// `text` with every NUL replaced; borrows when there is nothing to replace.
pub fn storable_text(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', &REPLACEMENT.to_string());
    }
}

/// Every string and object key in `value`, made storable.
pub fn storable_json(value: &mut Value) {
    match value {
        Value::String(s) => storable_text(s),
        Value::Array(items) => items.iter_mut().for_each(storable_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (mut key, mut v) in entries {
                    storable_text(&mut key);
                    storable_json(&mut v);
                    map.insert(key, v);
                }
            } else {
                map.values_mut().for_each(storable_json);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `None` for an instant Postgres cannot store.
pub fn storable_time(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.filter(|t| t.year() >= EARLIEST_YEAR)
}

fn storable_opt_text(text: &mut Option<String>) {
    if let Some(t) = text {
        storable_text(t);
    }
}

impl UserRecord {
    pub fn make_storable(&mut self) {
        storable_text(&mut self.id);
        for column in
            [&mut self.email, &mut self.first_name, &mut self.last_name, &mut self.username, &mut self.image_url]
        {
            storable_opt_text(column);
        }
        self.created_at = storable_time(self.created_at);
        self.updated_at = storable_time(self.updated_at);
        self.last_sign_in_at = storable_time(self.last_sign_in_at);
        self.raw.make_storable();
    }
}

impl UserDeletion {
    /// A deletion keeps its row deleted: an unstorable delete time becomes the time of
    /// applying, never NULL (a NULL `deleted_at` would mean "live").
    pub fn make_storable(&mut self) {
        storable_text(&mut self.id);
        if storable_time(Some(self.deleted_at)).is_none() {
            self.deleted_at = Utc::now();
        }
        self.raw.make_storable();
    }
}

impl UserSighting {
    pub fn make_storable(&mut self) {
        storable_text(&mut self.id);
        storable_opt_text(&mut self.email);
        self.signed_in_at = storable_time(self.signed_in_at);
        self.raw.make_storable();
    }
}

impl UserChange {
    /// Makes every value of the change storable in Postgres (see the module docs).
    pub fn make_storable(&mut self) {
        match self {
            UserChange::Upsert(r) => r.make_storable(),
            UserChange::Delete(d) => d.make_storable(),
            UserChange::Sighting(s) => s.make_storable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(raw: Value) -> UserRecord {
        UserRecord {
            id: "user_\0x".into(),
            email: Some("a\0b@example.com".into()),
            first_name: None,
            last_name: Some("plain".into()),
            username: None,
            image_url: None,
            created_at: DateTime::from_timestamp(-300_000_000_000, 0),
            updated_at: DateTime::from_timestamp(1_700_000_000, 0),
            last_sign_in_at: None,
            raw: raw.into(),
        }
    }

    #[test]
    fn nul_becomes_replacement_character_everywhere() {
        let mut r = record(json!({"first_name": "A\u{0000}B", "nested": [{"k\u{0000}": "v\u{0000}"}], "n": 1}));
        r.make_storable();
        assert_eq!(r.id, "user_\u{FFFD}x");
        assert_eq!(r.email.as_deref(), Some("a\u{FFFD}b@example.com"));
        assert_eq!(r.last_name.as_deref(), Some("plain"));
        assert_eq!(r.raw, json!({"first_name": "A\u{FFFD}B", "nested": [{"k\u{FFFD}": "v\u{FFFD}"}], "n": 1}));
        assert!(!r.raw.as_str().contains("\\u0000"));
    }

    #[test]
    fn unstorable_times_become_null_and_storable_ones_stay() {
        let mut r = record(json!({}));
        assert!(r.created_at.unwrap().year() < EARLIEST_YEAR, "the fixture is before 4713 BC");
        r.make_storable();
        assert_eq!(r.created_at, None);
        assert_eq!(r.updated_at, DateTime::from_timestamp(1_700_000_000, 0));
        let earliest = chrono::NaiveDate::from_ymd_opt(EARLIEST_YEAR, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
        assert!(storable_time(Some(earliest.and_utc())).is_some());
    }

    #[test]
    fn a_deletion_stays_a_deletion() {
        let mut d = UserDeletion {
            id: "user_1".into(),
            deleted_at: DateTime::from_timestamp(-300_000_000_000, 0).unwrap(),
            raw: json!({"id": "user_1"}).into(),
        };
        d.make_storable();
        assert!(d.deleted_at.year() > 2000);
    }
}
