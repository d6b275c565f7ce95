//! The provider-neutral shape of a user, and of one change to the users table.
//!
//! Every provider module parses its payloads into these types; the writer
//! (`users::writer`) is the only code that turns them into SQL.
use chrono::{DateTime, Utc};

use super::raw::RawJson;

/// One user as the provider last described it: the typed columns of `capydb_auth.users`
/// derived from `raw`, plus `raw` itself, unmodified.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// The provider's user object, byte-for-byte semantics preserved (stored as jsonb).
    pub raw: RawJson,
}

/// A deletion: the row is soft-deleted (or a tombstone inserted) and stays deleted forever.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserDeletion {
    pub id: String,
    pub deleted_at: DateTime<Utc>,
    /// What the delete event carried (stored as `raw` only when no row exists yet).
    pub raw: RawJson,
}

/// A partial fact from an activity log (Auth0 Log Streams): it changes only the columns it
/// knows. A signup inserts a minimal row if the user is unknown; a login moves
/// `last_sign_in_at` forward.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserSighting {
    pub id: String,
    /// Insert `(id, email, raw)` when no row exists (signup).
    pub insert_if_absent: bool,
    pub email: Option<String>,
    /// Moves `last_sign_in_at` forward, never back (login).
    pub signed_in_at: Option<DateTime<Utc>>,
    /// What the log record carried; stored as `raw` only when a row is inserted.
    pub raw: RawJson,
}

/// One change a delivery or a backfill page asks of the users table.
///
/// Serialised (the inbox parks changes) as the variant's fields plus `"kind"`; see the
/// `Deserialize` impl below for why reading it back is written by hand.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UserChange {
    Upsert(UserRecord),
    Delete(UserDeletion),
    Sighting(UserSighting),
}

/// Reads what `Serialize` wrote, whatever the order of its keys (`jsonb` reorders them).
/// A derived internally tagged enum would buffer `raw` as serde's generic content, whose
/// numbers are `f64`s; read here, `raw` keeps its exact text, so a parked change reaches the
/// project database as the text received, like one applied at once.
impl<'de> serde::Deserialize<'de> for UserChange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ChangeVisitor)
    }
}

struct ChangeVisitor;

impl<'de> serde::de::Visitor<'de> for ChangeVisitor {
    type Value = UserChange;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a user change")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UserChange, A::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::new();
        let mut raw = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "raw" {
                raw = Some(map.next_value::<RawJson>()?);
            } else {
                fields.insert(key, map.next_value()?);
            }
        }
        let kind = match fields.remove("kind") {
            Some(serde_json::Value::String(kind)) => kind,
            _ => return Err(A::Error::missing_field("kind")),
        };
        let raw = raw.ok_or_else(|| A::Error::missing_field("raw"))?;
        // The variant's fields are read with `raw` standing in as `null`, then `raw` is set.
        fields.insert("raw".into(), serde_json::Value::Null);
        let fields = serde_json::Value::Object(fields);
        let mut change = match kind.as_str() {
            "upsert" => UserChange::Upsert(serde_json::from_value(fields).map_err(A::Error::custom)?),
            "delete" => UserChange::Delete(serde_json::from_value(fields).map_err(A::Error::custom)?),
            "sighting" => UserChange::Sighting(serde_json::from_value(fields).map_err(A::Error::custom)?),
            other => return Err(A::Error::unknown_variant(other, &["upsert", "delete", "sighting"])),
        };
        *change.raw_mut() = raw;
        Ok(change)
    }
}

impl UserChange {
    fn raw_mut(&mut self) -> &mut RawJson {
        match self {
            UserChange::Upsert(r) => &mut r.raw,
            UserChange::Delete(d) => &mut d.raw,
            UserChange::Sighting(s) => &mut s.raw,
        }
    }

    pub fn user_id(&self) -> &str {
        match self {
            UserChange::Upsert(r) => &r.id,
            UserChange::Delete(d) => &d.id,
            UserChange::Sighting(s) => &s.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn raw(text: &'static str) -> RawJson {
        RawJson::received(&Bytes::from_static(text.as_bytes()), text)
    }

    #[test]
    fn a_parked_change_reads_back_with_raw_as_its_exact_text() {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("a time");
        let changes = vec![
            UserChange::Upsert(UserRecord {
                id: "user_1".into(),
                email: Some("a@example.com".into()),
                first_name: None,
                last_name: None,
                username: None,
                image_url: None,
                created_at: Some(at),
                updated_at: Some(at),
                last_sign_in_at: None,
                raw: raw(r#"{"id":"user_1","n":[2.50,1E2,123456789012345678901234567890]}"#),
            }),
            UserChange::Delete(UserDeletion { id: "user_2".into(), deleted_at: at, raw: raw(r#"{"deleted":true}"#) }),
            UserChange::Sighting(UserSighting {
                id: "user_3".into(),
                insert_if_absent: true,
                email: None,
                signed_in_at: Some(at),
                raw: raw(r#"{"type":"s"}"#),
            }),
        ];
        let parked = serde_json::to_string(&changes).expect("serialises");
        let back: Vec<UserChange> = serde_json::from_str(&parked).expect("reads back");
        assert_eq!(back, changes);
        for (b, c) in back.iter().zip(&changes) {
            let (UserChange::Upsert(UserRecord { raw: b, .. }), UserChange::Upsert(UserRecord { raw: c, .. })) = (b, c)
            else {
                continue;
            };
            assert_eq!(b.as_str(), c.as_str(), "the text itself, numbers as written");
        }
        // `jsonb` hands the keys back in its own order: `raw` before `kind`.
        let reordered = r#"{"id":"user_2","raw":{"x":1.50},"kind":"delete","deleted_at":"2023-11-14T22:13:20Z"}"#;
        let UserChange::Delete(d) = serde_json::from_str(reordered).expect("reads back") else { panic!("a delete") };
        assert_eq!((d.id.as_str(), d.raw.as_str(), d.deleted_at), ("user_2", r#"{"x":1.50}"#, at));
        // Through a `Value` too (numbers then as a `Value` holds them).
        let via_value: Vec<UserChange> =
            serde_json::from_value(serde_json::to_value(&changes).expect("to a Value")).expect("back");
        assert_eq!(via_value, changes);
        for broken in
            [r#"{"id":"u","raw":{}}"#, r#"{"kind":"upsert","id":"u"}"#, r#"{"kind":"merge","id":"u","raw":{}}"#]
        {
            assert!(serde_json::from_str::<UserChange>(broken).is_err(), "{broken}");
        }
    }
}
