//! The fake's user store ([`Users`]) and the deterministic generator of realistic Clerk user
//! objects ([`generate_user`]).
//!
//! Users are kept ordered by `(created_at, id)` — the total order the `/v1/users` endpoint pages
//! through (reversed for the default `-created_at`). Ids are KSUID-shaped like Clerk's
//! (`user_` + 27 base62 characters) and are unique for distinct generator indices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// `created_at` (ms since the Unix epoch) of the first seeded user: 2023-11-14T22:13:20.123Z.
pub const DEFAULT_FIRST_CREATED_AT_MS: i64 = 1_700_000_000_123;

/// Milliseconds between consecutive seeded users (except the deliberate ties).
pub const SEED_SPACING_MS: i64 = 1_000;

/// Key of the ordered store: `(created_at, id)`.
type Key = (i64, String);

/// The current set of users of the fake Clerk instance: the "truth" a backfill must reproduce.
///
/// Obtained inside a hook registered with [`crate::FakeClerk::on_users_request`] (or through the
/// handle's methods, which lock it for you). Iteration order is ascending `(created_at, id)`.
#[derive(Debug, Clone)]
pub struct Users {
    by_key: BTreeMap<Key, Value>,
    created_at_by_id: HashMap<String, i64>,
    seed: u64,
    next_index: usize,
    created_at_high_water: i64,
    /// Ids left out of list pages and counts but still served by id (see [`Users::hide`]).
    hidden: HashSet<String>,
}

/// Parameters of one `GET /v1/users` page, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageQuery {
    pub limit: usize,
    pub offset: usize,
    pub descending: bool,
    pub created_at_after: Option<i64>,
    pub created_at_before: Option<i64>,
    pub starting_after: Option<String>,
}

/// `starting_after` named a user that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownCursor;

impl Users {
    /// An empty store whose generated users (see [`Users::create`]) derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Users {
            by_key: BTreeMap::new(),
            created_at_by_id: HashMap::new(),
            seed,
            next_index: 0,
            created_at_high_water: i64::MIN,
            hidden: HashSet::new(),
        }
    }

    /// A store seeded with `count` generated users, the first created at `first_created_at_ms`
    /// and the others [`SEED_SPACING_MS`] apart — except that some consecutive users share the
    /// exact same `created_at` (pairs and the occasional triple), so ordering needs the id
    /// tie-break.
    pub fn seeded(seed: u64, count: usize, first_created_at_ms: i64) -> Self {
        let mut users = Users::new(seed);
        let mut created_at = first_created_at_ms;
        for i in 0..count {
            if i > 0 && !seed_tie(i) {
                created_at += SEED_SPACING_MS;
            }
            let user = generate_user_with_seed(seed, i, created_at);
            users.insert(user);
        }
        users.next_index = count;
        users
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The user with this id.
    pub fn get(&self, id: &str) -> Option<&Value> {
        let created_at = *self.created_at_by_id.get(id)?;
        self.by_key.get(&(created_at, id.to_owned()))
    }

    /// Whether a user with this id exists.
    pub fn contains(&self, id: &str) -> bool {
        self.created_at_by_id.contains_key(id)
    }

    /// Creates a new generated user with `created_at` = now (ms), made strictly greater than any
    /// `created_at` this store has ever held; `updated_at` = `created_at`, never signed in.
    pub fn create(&mut self) -> Value {
        let created_at = now_ms().max(self.created_at_high_water.saturating_add(1));
        self.create_at(created_at)
    }

    /// Creates a new generated user with exactly this `created_at` (ms), e.g. to tie with an
    /// existing user or to land behind a backfill's cursor.
    pub fn create_at(&mut self, created_at_ms: i64) -> Value {
        let index = self.next_index;
        self.next_index += 1;
        let mut user = generate_user_with_seed(self.seed, index, created_at_ms);
        if let Some(obj) = user.as_object_mut() {
            obj.insert("updated_at".into(), json!(created_at_ms));
            obj.insert("last_sign_in_at".into(), Value::Null);
            obj.insert("last_active_at".into(), json!(created_at_ms));
        }
        self.insert(user.clone());
        user
    }

    /// Inserts (or replaces, by id) a user object of your own making; returns the replaced one.
    ///
    /// # Panics
    /// If `user` has no string `id` or no integer `created_at` (a test-authoring mistake).
    pub fn insert(&mut self, user: Value) -> Option<Value> {
        let id = user
            .get("id")
            .and_then(Value::as_str)
            .expect("fake-clerk: an inserted user needs a string \"id\"")
            .to_owned();
        let created_at = user
            .get("created_at")
            .and_then(Value::as_i64)
            .expect("fake-clerk: an inserted user needs an integer \"created_at\" (ms)");
        let previous = self.delete(&id);
        self.created_at_high_water = self.created_at_high_water.max(created_at);
        self.created_at_by_id.insert(id.clone(), created_at);
        self.by_key.insert((created_at, id), user);
        previous
    }

    /// Applies `f` to the user and bumps `updated_at` to now (ms), strictly greater than the
    /// previous `updated_at` — unless `f` itself changed `updated_at`, which is then kept.
    /// `f` may change `created_at` (the user moves in the order) but not `id` (restored).
    /// Returns the updated user, or `None` if there is no such user.
    pub fn update(&mut self, id: &str, f: impl FnOnce(&mut Value)) -> Option<Value> {
        let mut user = self.delete(id)?;
        let updated_before = user.get("updated_at").cloned();
        f(&mut user);
        if !user.is_object() {
            user = json!({});
        }
        if let Some(obj) = user.as_object_mut() {
            obj.insert("id".into(), json!(id));
            if obj.get("updated_at") == updated_before.as_ref() {
                let previous = updated_before.as_ref().and_then(Value::as_i64).unwrap_or(0);
                obj.insert("updated_at".into(), json!(now_ms().max(previous.saturating_add(1))));
            }
            if !obj.get("created_at").is_some_and(Value::is_i64) {
                obj.insert("created_at".into(), json!(0));
            }
        }
        self.insert(user.clone());
        Some(user)
    }

    /// Deletes the user; returns it if it existed.
    pub fn delete(&mut self, id: &str) -> Option<Value> {
        let created_at = self.created_at_by_id.remove(id)?;
        self.by_key.remove(&(created_at, id.to_owned()))
    }

    /// Leaves the user out of list pages and counts while `GET /v1/users/{id}` still serves
    /// it: how a test recreates a user that a page "missed" (listed before it existed, e.g.
    /// imported with a back-dated `created_at`) and that is nevertheless alive.
    pub fn hide(&mut self, id: &str) {
        self.hidden.insert(id.to_owned());
    }

    /// Lists the user again.
    pub fn unhide(&mut self, id: &str) {
        self.hidden.remove(id);
    }

    fn listed(&self, id: &str) -> bool {
        self.hidden.is_empty() || !self.hidden.contains(id)
    }

    /// All users, ascending by `(created_at, id)`.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Value> + '_ {
        self.by_key.values()
    }

    /// All ids, ascending by `(created_at, id)`.
    pub fn ids(&self) -> Vec<String> {
        self.by_key.keys().map(|(_, id)| id.clone()).collect()
    }

    /// A copy of all users, ascending by `(created_at, id)`.
    pub fn snapshot(&self) -> Vec<Value> {
        self.by_key.values().cloned().collect()
    }

    /// Users with `after < created_at < before` (strict, either bound optional).
    pub(crate) fn count(&self, after: Option<i64>, before: Option<i64>) -> usize {
        self.by_key
            .keys()
            .filter(|(c, id)| after.is_none_or(|a| *c > a) && before.is_none_or(|b| *c < b) && self.listed(id))
            .count()
    }

    /// One page, in the requested order: created_at window, then `starting_after`, then
    /// `offset`, then `limit`.
    pub(crate) fn page(&self, q: &PageQuery) -> Result<Vec<&Value>, UnknownCursor> {
        let after = q.created_at_after;
        let before = q.created_at_before;
        let cursor = match &q.starting_after {
            Some(id) => {
                let created_at = *self.created_at_by_id.get(id).ok_or(UnknownCursor)?;
                Bound::Excluded((created_at, id.clone()))
            }
            None => Bound::Unbounded,
        };
        // Ascending with a `created_at_after` and no `starting_after`: start the range at the
        // window (the smallest key created after it) instead of skipping up to it, so a page
        // costs its own size, not the store's (the skip below is then a no-op).
        let start = match (&cursor, after) {
            (Bound::Unbounded, Some(a)) if !q.descending && a < i64::MAX => Bound::Included((a + 1, String::new())),
            _ => cursor.clone(),
        };
        let page: Vec<&Value> = if q.descending {
            self.by_key
                .range((Bound::Unbounded, cursor))
                .rev()
                .skip_while(|((c, _), _)| before.is_some_and(|b| *c >= b))
                .take_while(|((c, _), _)| after.is_none_or(|a| *c > a))
                .filter(|((_, id), _)| self.listed(id))
                .skip(q.offset)
                .take(q.limit)
                .map(|(_, v)| v)
                .collect()
        } else {
            self.by_key
                .range((start, Bound::Unbounded))
                .skip_while(|((c, _), _)| after.is_some_and(|a| *c <= a))
                .take_while(|((c, _), _)| before.is_none_or(|b| *c < b))
                .filter(|((_, id), _)| self.listed(id))
                .skip(q.offset)
                .take(q.limit)
                .map(|(_, v)| v)
                .collect()
        };
        Ok(page)
    }
}

/// Whether seeded user `i` shares its `created_at` with user `i - 1`.
fn seed_tie(i: usize) -> bool {
    i % 7 == 3 || i % 11 == 4
}

/// Now in ms since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// A realistic Clerk user object for generator index `i` (seed 0); see
/// [`generate_user_with_seed`].
pub fn generate_user(i: usize, created_at_ms: i64) -> Value {
    generate_user_with_seed(0, i, created_at_ms)
}

/// A realistic Clerk user object (the Backend API `User` shape), fully determined by
/// `(seed, i, created_at_ms)`:
///
/// - `id` is `user_` + 27 base62 characters (KSUID-like: created_at seconds, then a payload
///   that is a bijection of `i`, so distinct `i` give distinct ids for a given seed);
/// - 1–3 `email_addresses` (`idn_…`); `primary_email_address_id` points to one of them, except
///   for every 50th user (`(i + 1) % 50 == 0`), where it matches none — as Clerk data can;
/// - some users have a phone number, a Google external account (linked from an email), a
///   username, an `external_id`, non-ASCII names, null first/last names, metadata, a ban or lock;
/// - `updated_at >= created_at`; `last_sign_in_at` is null for some users.
pub fn generate_user_with_seed(seed: u64, i: usize, created_at_ms: i64) -> Value {
    let mut rng = Rng::new(seed, i as u64);
    let user_id = ksuid_id("user_", created_at_ms, seed, i as u64, 0);
    let (first_ascii, first) = FIRST_NAMES[rng.below(FIRST_NAMES.len())];
    let (last_ascii, last) = LAST_NAMES[rng.below(LAST_NAMES.len())];
    let updated_at =
        created_at_ms.saturating_add(if rng.chance(4) { 0 } else { rng.below(30 * 24 * 3600 * 1000) as i64 });
    let last_sign_in_at = (!rng.chance(5)).then(|| {
        let span = updated_at.saturating_sub(created_at_ms).max(1);
        created_at_ms.saturating_add(rng.below(span as usize) as i64)
    });
    let last_active_at = last_sign_in_at.unwrap_or(created_at_ms);

    let google = rng.chance(3);
    let external_account_idn = ksuid_id("idn_", created_at_ms, seed, i as u64, 20);
    let email_count = 1 + rng.below(3);
    let domains = ["example.com", "example.org", "mail.example.net"];
    let email_addresses: Vec<Value> = (0..email_count)
        .map(|k| {
            let domain = domains[(i + k) % domains.len()];
            let linked_to = if google && k == 0 {
                json!([{"type": "oauth_google", "id": external_account_idn}])
            } else {
                json!([])
            };
            json!({
                "id": ksuid_id("idn_", created_at_ms, seed, i as u64, 1 + k as u64),
                "object": "email_address",
                "email_address": format!("{first_ascii}.{last_ascii}.{i}{}@{domain}", suffix(k)),
                "reserved": false,
                "verification": {
                    "status": if k == 0 || rng.chance(2) { "verified" } else { "unverified" },
                    "strategy": if google && k == 0 { "from_oauth_google" } else { "email_code" },
                    "attempts": 1,
                    "expire_at": created_at_ms.saturating_add(600_000),
                },
                "linked_to": linked_to,
                "matches_sso_connection": false,
                "created_at": created_at_ms,
                "updated_at": created_at_ms,
            })
        })
        .collect();
    let primary_email_address_id = if (i + 1) % 50 == 0 {
        // Points at no email of this user, like the 2nd user of list_users_page.json.
        json!(ksuid_id("idn_", created_at_ms, seed, i as u64, 9))
    } else {
        email_addresses[rng.below(email_addresses.len())]["id"].clone()
    };

    let phone_numbers: Vec<Value> = if rng.chance(4) {
        vec![json!({
            "id": ksuid_id("idn_", created_at_ms, seed, i as u64, 10),
            "object": "phone_number",
            "phone_number": format!("+3160{:07}", i % 10_000_000),
            "reserved_for_second_factor": false,
            "default_second_factor": false,
            "reserved": false,
            "verification": {
                "status": "verified",
                "strategy": "phone_code",
                "attempts": 1,
                "expire_at": created_at_ms.saturating_add(600_000),
            },
            "linked_to": [],
            "backup_codes": null,
            "created_at": created_at_ms,
            "updated_at": created_at_ms,
        })]
    } else {
        Vec::new()
    };
    let primary_phone_number_id = phone_numbers.first().map_or(Value::Null, |p| p["id"].clone());

    let external_accounts: Vec<Value> = if google {
        vec![json!({
            "object": "external_account",
            "id": ksuid_id("eac_", created_at_ms, seed, i as u64, 21),
            "provider": "oauth_google",
            "identification_id": external_account_idn,
            "provider_user_id": format!("1{:020}", rng.next() % 10_000_000_000_000_000_000),
            "approved_scopes": "email https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile openid profile",
            "email_address": email_addresses[0]["email_address"].clone(),
            "first_name": first,
            "last_name": last,
            "avatar_url": format!("https://lh3.googleusercontent.com/a/fake-{i}"),
            "image_url": format!("https://img.clerk.com/fake-oauth-{i}"),
            "username": null,
            "public_metadata": {},
            "label": null,
            "verification": {
                "status": "verified",
                "strategy": "oauth_google",
                "attempts": null,
                "expire_at": created_at_ms.saturating_add(600_000),
            },
            "created_at": created_at_ms,
            "updated_at": created_at_ms,
        })]
    } else {
        Vec::new()
    };

    let first_name = if rng.chance(9) { Value::Null } else { json!(first) };
    let last_name = if rng.chance(7) { Value::Null } else { json!(last) };
    let username = if rng.chance(2) { json!(format!("{first_ascii}{i}")) } else { Value::Null };
    let public_metadata = match rng.below(3) {
        0 => json!({}),
        1 => json!({"plan": "free"}),
        _ => json!({"plan": if rng.chance(2) { "pro" } else { "team" }, "onboarded": true, "seats": 1 + rng.below(20)}),
    };
    let private_metadata =
        if rng.chance(2) { json!({"stripe_customer_id": format!("cus_fake{:012}", i)}) } else { json!({}) };
    let unsafe_metadata = if rng.chance(3) { json!({"theme": "dark", "newsletter": rng.chance(2)}) } else { json!({}) };
    let banned = rng.below(97) == 0;
    let locked = rng.below(89) == 0;
    let has_image = google;

    json!({
        "id": user_id,
        "object": "user",
        "external_id": if rng.chance(4) { json!(format!("ext_{i}")) } else { Value::Null },
        "primary_email_address_id": primary_email_address_id,
        "primary_phone_number_id": primary_phone_number_id,
        "primary_web3_wallet_id": null,
        "username": username,
        "first_name": first_name,
        "last_name": last_name,
        "image_url": format!("https://img.clerk.com/fake-{user_id}"),
        "has_image": has_image,
        "profile_image_url": if has_image { format!("https://img.clerk.com/fake-oauth-{i}") } else { "https://www.gravatar.com/avatar?d=mp".to_owned() },
        "public_metadata": public_metadata,
        "private_metadata": private_metadata,
        "unsafe_metadata": unsafe_metadata,
        "email_addresses": email_addresses,
        "phone_numbers": phone_numbers,
        "web3_wallets": [],
        "passkeys": [],
        "password_enabled": !google || rng.chance(2),
        "two_factor_enabled": false,
        "totp_enabled": false,
        "backup_code_enabled": false,
        "mfa_enabled_at": null,
        "mfa_disabled_at": null,
        "external_accounts": external_accounts,
        "saml_accounts": [],
        "enterprise_accounts": [],
        "last_sign_in_at": last_sign_in_at,
        "banned": banned,
        "locked": locked,
        "lockout_expires_in_seconds": if locked { json!(1800) } else { Value::Null },
        "verification_attempts_remaining": if locked { 0 } else { 100 },
        "created_at": created_at_ms,
        "updated_at": updated_at,
        "delete_self_enabled": true,
        "create_organization_enabled": true,
        "create_organizations_limit": null,
        "last_active_at": last_active_at,
        "legal_accepted_at": null,
    })
}

fn suffix(k: usize) -> &'static str {
    ["", "+work", "+alt"][k % 3]
}

/// (ASCII slug for emails, display name) pairs; some display names are non-ASCII on purpose.
const FIRST_NAMES: &[(&str, &str)] = &[
    ("ada", "Ada"),
    ("alan", "Alan"),
    ("grace", "Grace"),
    ("linus", "Linus"),
    ("margaret", "Margaret"),
    ("jose", "José"),
    ("zoe", "Zoë"),
    ("bjorn", "Björn"),
    ("li", "李"),
    ("sofia", "Sofía"),
    ("ken", "Ken"),
    ("noor", "Noor"),
    ("amara", "Amara"),
    ("oleksandr", "Олександр"),
    ("mei", "Mei"),
    ("dmitri", "Dmitri"),
];

const LAST_NAMES: &[(&str, &str)] = &[
    ("lovelace", "Lovelace"),
    ("turing", "Turing"),
    ("hopper", "Hopper"),
    ("torvalds", "Torvalds"),
    ("hamilton", "Hamilton"),
    ("nunez", "Núñez"),
    ("oconnor", "O'Connor"),
    ("muller", "Müller"),
    ("wang", "王"),
    ("garcia", "García"),
    ("thompson", "Thompson"),
    ("haddad", "Haddad"),
    ("okafor", "Okafor"),
    ("shevchenko", "Шевченко"),
];

/// `prefix` + 27 base62 characters, KSUID layout: 4 bytes of seconds since the KSUID epoch,
/// then 16 bytes of payload. The first 8 payload bytes are a bijection of `i` (so ids of
/// distinct `i` never collide for one seed and `stream`), the rest are pseudo-random.
fn ksuid_id(prefix: &str, created_at_ms: i64, seed: u64, i: u64, stream: u64) -> String {
    const KSUID_EPOCH: i64 = 1_400_000_000;
    let secs = (created_at_ms.div_euclid(1000) - KSUID_EPOCH).clamp(0, u32::MAX as i64) as u32;
    let mut bytes = [0u8; 20];
    bytes[..4].copy_from_slice(&secs.to_be_bytes());
    let salt = mix64(seed ^ mix64(stream.wrapping_add(0x5151)));
    bytes[4..12].copy_from_slice(&mix64(i ^ salt).to_be_bytes());
    bytes[12..].copy_from_slice(&mix64(i.wrapping_mul(31).wrapping_add(salt ^ 0xabcd)).to_be_bytes());
    format!("{prefix}{}", base62_27(bytes))
}

/// Big-endian base62 (0-9A-Za-z) of 20 bytes, left-padded with '0' to 27 characters.
fn base62_27(mut bytes: [u8; 20]) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut digits = [b'0'; 27];
    for slot in digits.iter_mut().rev() {
        let mut rem: u32 = 0;
        for b in bytes.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
    digits.iter().map(|&d| d as char).collect()
}

/// The splitmix64 finalizer: a bijection on u64.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Small deterministic generator (splitmix64), stable across crate versions unlike `rand`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, i: u64) -> Self {
        Rng(mix64(seed) ^ mix64(i.wrapping_mul(0x2545_F491_4F6C_DD1D)))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability 1/n.
    fn chance(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn page_ids(users: &Users, q: &PageQuery) -> Vec<String> {
        users.page(q).expect("page").iter().map(|u| u["id"].as_str().unwrap_or_default().to_owned()).collect()
    }

    fn query(limit: usize) -> PageQuery {
        PageQuery {
            limit,
            offset: 0,
            descending: false,
            created_at_after: None,
            created_at_before: None,
            starting_after: None,
        }
    }

    #[test]
    fn ids_are_clerk_shaped_unique_and_deterministic() {
        let mut seen = HashSet::new();
        for i in 0..5_000 {
            let u = generate_user(i, DEFAULT_FIRST_CREATED_AT_MS);
            let id = u["id"].as_str().unwrap();
            assert_eq!(id.len(), 5 + 27, "{id}");
            assert!(id.starts_with("user_"));
            assert!(id[5..].chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(seen.insert(id.to_owned()), "duplicate id {id}");
        }
        assert_eq!(generate_user(42, 1), generate_user(42, 1));
        assert_ne!(generate_user_with_seed(1, 42, 1)["id"], generate_user_with_seed(2, 42, 1)["id"]);
    }

    #[test]
    fn generated_users_have_the_promised_shape() {
        for i in 0..500 {
            let u = generate_user(i, DEFAULT_FIRST_CREATED_AT_MS);
            assert_eq!(u["object"], "user");
            let emails = u["email_addresses"].as_array().unwrap();
            assert!((1..=3).contains(&emails.len()));
            assert!(emails.iter().all(|e| e["id"].as_str().unwrap().starts_with("idn_")));
            let primary = &u["primary_email_address_id"];
            let matches = emails.iter().any(|e| &e["id"] == primary);
            assert_eq!(matches, (i + 1) % 50 != 0, "user {i}");
            assert!(u["updated_at"].as_i64() >= u["created_at"].as_i64());
            for key in ["public_metadata", "private_metadata", "unsafe_metadata"] {
                assert!(u[key].is_object());
            }
        }
        let all: Vec<Value> = (0..500).map(|i| generate_user(i, DEFAULT_FIRST_CREATED_AT_MS)).collect();
        for key in ["first_name", "last_name", "username", "last_sign_in_at"] {
            assert!(all.iter().any(|u| u[key].is_null()), "{key} never null");
            assert!(all.iter().any(|u| !u[key].is_null()), "{key} always null");
        }
        assert!(all.iter().any(|u| !u["external_accounts"].as_array().unwrap().is_empty()));
        assert!(all.iter().any(|u| !u["phone_numbers"].as_array().unwrap().is_empty()));
    }

    #[test]
    fn seeded_store_has_ties_and_a_total_order() {
        let users = Users::seeded(7, 100, DEFAULT_FIRST_CREATED_AT_MS);
        assert_eq!(users.len(), 100);
        let created: Vec<i64> = users.iter().map(|u| u["created_at"].as_i64().unwrap()).collect();
        assert!(created.windows(2).all(|w| w[0] <= w[1]));
        assert!(created.windows(2).any(|w| w[0] == w[1]), "no ties");
        assert!(created.windows(3).any(|w| w[0] == w[2]), "no triple tie");

        let asc = page_ids(&users, &query(500));
        let mut desc_q = query(500);
        desc_q.descending = true;
        let mut desc = page_ids(&users, &desc_q);
        desc.reverse();
        assert_eq!(asc, desc);
        assert_eq!(asc, users.ids());
    }

    #[test]
    fn cursor_and_window_compose() {
        let users = Users::seeded(0, 30, 10_000);
        let ids = users.ids();
        let mut q = query(5);
        q.starting_after = Some(ids[3].clone());
        assert_eq!(page_ids(&users, &q), ids[4..9].to_vec());
        q.descending = true;
        assert_eq!(page_ids(&users, &q), ids[..3].iter().rev().cloned().collect::<Vec<_>>());
        q.starting_after = Some("user_nope".into());
        assert_eq!(users.page(&q), Err(UnknownCursor));
        // Bounds that cross never panic.
        let mut q = query(5);
        q.created_at_after = Some(i64::MAX);
        q.created_at_before = Some(i64::MIN);
        q.starting_after = Some(ids[29].clone());
        assert!(page_ids(&users, &q).is_empty());
    }

    #[test]
    fn create_and_update_are_strictly_monotonic() {
        let mut users = Users::seeded(0, 3, DEFAULT_FIRST_CREATED_AT_MS);
        let a = users.create();
        let b = users.create();
        assert!(b["created_at"].as_i64() > a["created_at"].as_i64());
        let id = a["id"].as_str().unwrap().to_owned();
        let before = a["updated_at"].as_i64().unwrap();
        let after = users.update(&id, |u| u["first_name"] = json!("Changed")).unwrap();
        assert!(after["updated_at"].as_i64().unwrap() > before);
        assert_eq!(users.get(&id).unwrap()["first_name"], "Changed");
        let again = users.update(&id, |_| {}).unwrap();
        assert!(again["updated_at"].as_i64() > after["updated_at"].as_i64());
        assert!(users.delete(&id).is_some());
        assert!(users.get(&id).is_none());
        assert_eq!(users.len(), 4);
    }
}
