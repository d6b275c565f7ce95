//! The workload both contenders receive, event for event: realistic Clerk users (the
//! `user.updated` fixture filled out with addresses, a phone, an OAuth account and metadata:
//! 2–4 KB per signed body) over a population of users, as a seeded sequence of `user.created`,
//! `user.updated` (the bulk) and `user.deleted` (a deleted user's slot is taken by a new user).
//!
//! Every event carries both forms: the envelope the service is sent, and the row the baseline
//! writes (the columns SPEC §2 derives from the same object), so the two write the same data.
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// One user's columns, as the baseline writes them.
pub struct UserRow {
    pub id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub raw: Jsonb,
}

/// A JSON document already serialised, sent as `jsonb` without another round through serde
/// (so the baseline's client spends no more CPU than it must).
#[derive(Debug)]
pub struct Jsonb(String);

impl Jsonb {
    fn of(value: &Value) -> Self {
        Jsonb(value.to_string())
    }
}

impl ToSql for Jsonb {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1); // jsonb binary format version
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// What the baseline does for an event.
pub enum Write {
    Upsert(UserRow),
    Delete { id: String, deleted_at: DateTime<Utc>, raw: Jsonb },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Created,
    Updated,
    Deleted,
}

pub struct Event {
    pub kind: Kind,
    /// The Clerk envelope, serialised once: the exact bytes that are signed and sent.
    pub body: Vec<u8>,
    pub write: Write,
}

/// Per population slot: which user lives there and how far it has got.
#[derive(Clone, Copy, Default)]
struct Slot {
    generation: u32,
    /// `None` until the slot's current user has been created.
    version: Option<u32>,
}

/// A deterministic event generator over `users` slots; ids carry `prefix`.
pub struct Workload {
    template: Value,
    prefix: String,
    slots: Vec<Slot>,
    rng: StdRng,
}

const FIRST: [&str; 12] =
    ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus", "Radia", "Tony"];
const LAST: [&str; 10] =
    ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Wirth"];
const DEPARTMENTS: [&str; 5] = ["engineering", "sales", "support", "research", "finance"];
/// 2026-01-01T00:00:00Z: the first user's creation time.
const EPOCH_MS: i64 = 1_767_225_600_000;
/// Share of events on a live user that delete it.
const DELETE_SHARE: f64 = 0.05;

impl Workload {
    /// `template` is a Clerk `user.updated` envelope (the shared fixture).
    pub fn new(template: Value, prefix: &str, users: usize, seed: u64) -> Self {
        Workload {
            template,
            prefix: prefix.to_string(),
            slots: vec![Slot::default(); users.max(1)],
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next `n` events.
    pub fn take(&mut self, n: usize) -> Vec<Event> {
        (0..n).map(|_| self.next_event()).collect()
    }

    fn next_event(&mut self) -> Event {
        let index = self.rng.gen_range(0..self.slots.len());
        let slot = self.slots[index];
        let id = format!("user_2b{}{index:05}g{:03}", self.prefix, slot.generation);
        let created_ms = EPOCH_MS + index as i64 * 1_000 + slot.generation as i64 * 86_400_000;
        match slot.version {
            Some(version) if self.rng.gen_bool(DELETE_SHARE) => {
                self.slots[index] = Slot { generation: slot.generation + 1, version: None };
                let at_ms = created_ms + (version as i64 + 1) * 60_000;
                let data = json!({"object": "user", "id": id, "deleted": true, "external_id": null});
                let envelope = self.envelope("user.deleted", data.clone(), at_ms);
                Event {
                    kind: Kind::Deleted,
                    body: envelope,
                    write: Write::Delete { id, deleted_at: ms(at_ms), raw: Jsonb::of(&data) },
                }
            }
            previous => {
                let version = previous.map_or(0, |v| v + 1);
                self.slots[index].version = Some(version);
                let (kind, event_type) =
                    if previous.is_none() { (Kind::Created, "user.created") } else { (Kind::Updated, "user.updated") };
                let (row, data) = self.user(&id, index, version, created_ms);
                let body = self.envelope(event_type, data, created_ms + version as i64 * 60_000);
                Event { kind, body, write: Write::Upsert(row) }
            }
        }
    }

    fn envelope(&self, event_type: &str, data: Value, timestamp_ms: i64) -> Vec<u8> {
        let mut envelope = self.template.clone();
        envelope["type"] = event_type.into();
        envelope["timestamp"] = timestamp_ms.into();
        envelope["data"] = data;
        serde_json::to_vec(&envelope).expect("a JSON value serialises")
    }

    /// A full Clerk user object for `id` at `version`, with its columns.
    fn user(&mut self, id: &str, index: usize, version: u32, created_ms: i64) -> (UserRow, Value) {
        let updated_ms = created_ms + version as i64 * 60_000;
        let signed_in_ms = updated_ms - 30_000;
        let first = FIRST[index % FIRST.len()];
        let last = LAST[(index / FIRST.len()) % LAST.len()];
        let username = format!("{}.{}{index}", first.to_lowercase(), last.to_lowercase());
        let email = format!("{username}@example.com");
        let image_url = format!("https://img.clerk.com/eyJ0eXBlIjoicHJveHkiLCJzcmMiOiJodHRwczovL2ltYWdlcy5jbGVyay5kZXYvb2F1dGhfZ29vZ2xlL2ltZ18{index:05}v{version}");
        let tag = &id[5..];
        let mut addresses = vec![email_address(&format!("idn_{tag}a"), &email, created_ms, true)];
        if self.rng.gen_bool(0.5) {
            addresses.push(email_address(
                &format!("idn_{tag}b"),
                &format!("{username}@work.example.org"),
                created_ms,
                false,
            ));
        }
        let google = self.rng.gen_bool(0.6);
        let external_accounts = if google {
            vec![json!({
                "object": "google_account", "id": format!("idac_{tag}"), "provider": "oauth_google",
                "identification_id": format!("idn_{tag}a"), "provider_user_id": format!("1{index:020}"),
                "approved_scopes": "email https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile openid profile",
                "email_address": email, "first_name": first, "last_name": last,
                "avatar_url": format!("https://lh3.googleusercontent.com/a/ACg8ocK{index:05}=s96-c"),
                "image_url": image_url, "username": null, "public_metadata": {}, "label": null,
                "created_at": created_ms, "updated_at": created_ms,
                "verification": {"status": "verified", "strategy": "oauth_google", "attempts": null, "expire_at": created_ms + 600_000}
            })]
        } else {
            Vec::new()
        };
        let mut data = self.template["data"].clone();
        let fields = [
            ("id", json!(id)),
            ("username", json!(username)),
            ("first_name", json!(first)),
            ("last_name", json!(format!("{last} {version}"))),
            ("image_url", json!(image_url)),
            ("profile_image_url", json!(image_url)),
            ("primary_email_address_id", json!(format!("idn_{tag}a"))),
            ("primary_phone_number_id", json!(format!("idn_{tag}p"))),
            ("email_addresses", json!(addresses)),
            ("phone_numbers", json!([phone(&format!("idn_{tag}p"), index, created_ms)])),
            ("external_accounts", json!(external_accounts)),
            (
                "public_metadata",
                json!({
                    "department": DEPARTMENTS[index % DEPARTMENTS.len()], "plan": if index % 3 == 0 { "team" } else { "free" },
                    "seats": index % 40, "onboarding": {"step": version.min(7), "completed": version >= 7},
                    "preferences": {"theme": "dark", "locale": "en-GB", "newsletter": index % 2 == 0}
                }),
            ),
            ("private_metadata", json!({"crm_id": format!("crm_{index:08}"), "risk": "low"})),
            ("created_at", json!(created_ms)),
            ("updated_at", json!(updated_ms)),
            ("last_sign_in_at", json!(signed_in_ms)),
            ("last_active_at", json!(updated_ms)),
        ];
        for (name, value) in fields {
            data[name] = value;
        }
        let row = UserRow {
            id: id.to_string(),
            email: Some(email),
            first_name: Some(first.to_string()),
            last_name: Some(format!("{last} {version}")),
            username: Some(username),
            image_url: Some(image_url),
            created_at: Some(ms(created_ms)),
            updated_at: Some(ms(updated_ms)),
            last_sign_in_at: Some(ms(signed_in_ms)),
            raw: Jsonb::of(&data),
        };
        (row, data)
    }
}

fn email_address(id: &str, address: &str, created_ms: i64, linked: bool) -> Value {
    let linked_to = if linked {
        json!([{"type": "oauth_google", "id": format!("idac_{}", &id[4..id.len() - 1])}])
    } else {
        json!([])
    };
    json!({
        "id": id, "object": "email_address", "email_address": address, "reserved": false,
        "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": created_ms + 600_000},
        "linked_to": linked_to, "matches_sso_connection": false,
        "created_at": created_ms, "updated_at": created_ms
    })
}

fn phone(id: &str, index: usize, created_ms: i64) -> Value {
    json!({
        "id": id, "object": "phone_number", "phone_number": format!("+4479{index:08}"),
        "reserved_for_second_factor": false, "default_second_factor": false, "reserved": false,
        "verification": {"status": "verified", "strategy": "phone_code", "attempts": 1, "expire_at": created_ms + 600_000},
        "linked_to": [], "backup_codes": null, "created_at": created_ms, "updated_at": created_ms
    })
}

fn ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("benchmark times are in range")
}
