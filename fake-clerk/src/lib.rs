//! A fake of Clerk's Backend API (`GET /v1/users`, `GET /v1/users/{id}`, `GET /v1/users/count`)
//! served over real HTTP on loopback, for integration tests of a Clerk backfill and for local demos.
//!
//! This module owns the test-facing handle [`FakeClerk`]: configuration, user mutations,
//! per-request hooks, fault injection, pause gates, the request log and waiting on it.
//! The user store and generator live in [`users`], the HTTP pipeline in `server`, the rate
//! limiter in [`rate_limit`].
//!
//! Behaviour mirrors Clerk: a bare JSON array of users; `limit` 1..=500 (over 500 silently
//! means 10), `offset`, `order_by` (`-created_at` default, `+created_at`/`created_at`),
//! strict `created_at_after`/`created_at_before` (ms), the `starting_after` cursor; ties on
//! `created_at` are broken by id so the order is total. Errors are Clerk error bodies
//! (`{"errors":[{"message","long_message","code"}],"clerk_trace_id"}`); 429s carry
//! `Retry-After`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fake_clerk::{FakeClerk, FakeClerkConfig, Fault};
//! let clerk = FakeClerk::start(FakeClerkConfig { users: 250, ..Default::default() }).await?;
//! clerk.inject_fault(Fault::Status(503)); // the first /v1/users request fails
//! let gate = clerk.pause_users_request(3); // the third one waits for us
//! // ... start a backfill against clerk.url() with clerk.secret_key() ...
//! gate.wait_arrived().await;
//! let victim = clerk.users_snapshot()[0]["id"].as_str().unwrap().to_owned();
//! clerk.delete_user(&victim);
//! gate.release();
//! # Ok(()) }
//! ```

pub mod rate_limit;
mod server;
pub mod users;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use rate_limit::RateLimit;
pub use users::{generate_user, generate_user_with_seed, Users, DEFAULT_FIRST_CREATED_AT_MS};

use server::{lock, GateState, Shared};

/// The secret key accepted when none is configured.
pub const DEFAULT_SECRET_KEY: &str = "sk_test_fakeclerk_local_dev_key";

/// How to start a [`FakeClerk`]. Use struct update syntax:
/// `FakeClerkConfig { users: 100, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct FakeClerkConfig {
    /// Accepted `Authorization: Bearer` keys. Default: [`DEFAULT_SECRET_KEY`].
    pub secret_keys: Vec<String>,
    /// Users generated at start. Default 0.
    pub users: usize,
    /// `None` (the default) = unlimited; see [`RateLimit::DEVELOPMENT`].
    pub rate_limit: Option<RateLimit>,
    /// Seed of the generated users (ids, names, …). Default 0.
    pub seed: u64,
    /// Where to listen; must be a loopback address. Default `127.0.0.1:0` (any free port).
    pub addr: SocketAddr,
    /// `created_at` of the first seeded user. Default [`DEFAULT_FIRST_CREATED_AT_MS`].
    pub first_created_at_ms: i64,
}

impl Default for FakeClerkConfig {
    fn default() -> Self {
        FakeClerkConfig {
            secret_keys: vec![DEFAULT_SECRET_KEY.to_owned()],
            users: 0,
            rate_limit: None,
            seed: 0,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            first_created_at_ms: DEFAULT_FIRST_CREATED_AT_MS,
        }
    }
}

/// A fault applied to the next admitted `/v1/users` request (FIFO, one fault per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a Clerk error body (429 also gets `Retry-After: 1`).
    Status(u16),
    /// Sleep this long, then answer normally (to make a client time out).
    Delay(Duration),
    /// Answer 200 with only the first half of the JSON body (invalid JSON).
    Truncate,
    /// Close the connection without answering.
    Disconnect,
}

/// One received request, as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, …
    pub method: String,
    /// E.g. `/v1/users`.
    pub path: String,
    /// Decoded query pairs, in order (repeats kept).
    pub query: Vec<(String, String)>,
    /// Status answered; 0 while in progress, or if no response was sent
    /// ([`Fault::Disconnect`], or the client hung up first).
    pub status: u16,
    /// When the request was received.
    pub received_at: Instant,
    /// For `/v1/users` requests that passed auth and the rate limit: their 1-based number
    /// (the `n` of [`FakeClerk::pause_users_request`], the `seq` of [`RequestInfo`]).
    pub users_seq: Option<usize>,
    /// The fault applied to this request, if any.
    pub fault: Option<Fault>,
}

impl RequestRecord {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        query_param(&self.query, name)
    }
}

/// What a hook learns about the `/v1/users` request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// 1-based number among admitted `/v1/users` requests (those past auth and rate limit).
    pub seq: usize,
    /// Always `/v1/users`.
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// When the request was received.
    pub received_at: Instant,
}

impl RequestInfo {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        query_param(&self.query, name)
    }
}

fn query_param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Counters over all requests since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received (any path, any outcome).
    pub requests: usize,
    /// Requests answered (including status 0: dropped without a response).
    pub answered: usize,
    /// `/v1/users` requests received.
    pub users_requests: usize,
    /// `/v1/users` requests answered.
    pub users_requests_answered: usize,
    /// `/v1/users` requests that passed auth and the rate limit.
    pub users_requests_admitted: usize,
    /// `/v1/users/count` requests received.
    pub count_requests: usize,
    /// `GET /v1/users/{id}` requests received.
    pub user_requests: usize,
    /// Of those, answered 404 (no such user).
    pub user_not_found: usize,
    /// Requests answered 401 for a missing/invalid key.
    pub unauthorized: usize,
    /// Requests answered 429 by the rate limiter (not counting `Fault::Status(429)`).
    pub rate_limited: usize,
    /// Faults consumed.
    pub faults_applied: usize,
}

/// A pause on one `/v1/users` request; see [`FakeClerk::pause_users_request`].
/// Dropping it releases the request.
#[must_use = "dropping a PauseGate releases it at once"]
#[derive(Debug)]
pub struct PauseGate {
    n: usize,
    state: Arc<GateState>,
}

impl PauseGate {
    /// The request number this gate holds.
    pub fn request_number(&self) -> usize {
        self.n
    }

    /// Resolves once request `n` has arrived and is blocked at the gate (at once if it has).
    pub async fn wait_arrived(&self) {
        let mut arrived = self.state.arrived.subscribe();
        // The sender lives in `self.state`: never closed while we wait.
        let _ = arrived.wait_for(|arrived| *arrived).await;
    }

    /// Whether request `n` has reached the gate.
    pub fn has_arrived(&self) -> bool {
        *self.state.arrived.borrow()
    }

    /// Lets request `n` proceed (or pass straight through if it has not arrived yet).
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }
}

impl Drop for PauseGate {
    fn drop(&mut self) {
        self.release();
    }
}

/// A running fake Clerk. Dropping it stops the server (aborting in-flight requests).
///
/// All methods are thread-safe and take `&self`; share it with `Arc` if needed.
pub struct FakeClerk {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeClerk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeClerk").field("url", &self.url()).finish_non_exhaustive()
    }
}

impl FakeClerk {
    /// Generates the users, binds `config.addr` (loopback only) and starts serving on the
    /// current tokio runtime.
    pub async fn start(config: FakeClerkConfig) -> io::Result<FakeClerk> {
        if !config.addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fake-clerk binds loopback only, not {}", config.addr),
            ));
        }
        let users = Users::seeded(config.seed, config.users, config.first_created_at_ms);
        let bucket = config.rate_limit.map(|limit| rate_limit::TokenBucket::new(limit, Instant::now()));
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config.secret_keys, users, bucket));
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        Ok(FakeClerk { shared, addr, task })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the Clerk API base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The first accepted secret key ("" if none is configured).
    pub fn secret_key(&self) -> &str {
        self.shared.secret_keys.first().map_or("", String::as_str)
    }

    /// All accepted secret keys.
    pub fn secret_keys(&self) -> &[String] {
        &self.shared.secret_keys
    }

    // ----- users -----

    /// Creates a generated user with `created_at` = now, strictly greater than any before.
    pub fn create_user(&self) -> Value {
        lock(&self.shared.users).create()
    }

    /// Creates a generated user with exactly this `created_at` (ms).
    pub fn create_user_at(&self, created_at_ms: i64) -> Value {
        lock(&self.shared.users).create_at(created_at_ms)
    }

    /// Inserts or replaces (by id) a user object of your own; see [`Users::insert`].
    pub fn insert_user(&self, user: Value) -> Option<Value> {
        lock(&self.shared.users).insert(user)
    }

    /// Applies `f` and bumps `updated_at` (strictly); see [`Users::update`]. Returns the
    /// updated user, `None` if there is no such user.
    pub fn update_user(&self, id: &str, f: impl FnOnce(&mut Value)) -> Option<Value> {
        lock(&self.shared.users).update(id, f)
    }

    /// Deletes a user; whether it existed.
    pub fn delete_user(&self, id: &str) -> bool {
        lock(&self.shared.users).delete(id).is_some()
    }

    /// Leaves the user out of list pages and counts, still serving it by id; see
    /// [`Users::hide`].
    pub fn hide_from_lists(&self, id: &str) {
        lock(&self.shared.users).hide(id);
    }

    /// Lists a hidden user again.
    pub fn unhide(&self, id: &str) {
        lock(&self.shared.users).unhide(id);
    }

    /// The user with this id.
    pub fn user(&self, id: &str) -> Option<Value> {
        lock(&self.shared.users).get(id).cloned()
    }

    /// All current users (the truth), ascending by `(created_at, id)`.
    pub fn users_snapshot(&self) -> Vec<Value> {
        lock(&self.shared.users).snapshot()
    }

    /// All current ids, ascending by `(created_at, id)`.
    pub fn user_ids(&self) -> Vec<String> {
        lock(&self.shared.users).ids()
    }

    /// Number of current users.
    pub fn len(&self) -> usize {
        lock(&self.shared.users).len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        lock(&self.shared.users).is_empty()
    }

    /// Runs `f` with the store locked (several mutations at once, atomically for requests).
    pub fn with_users<R>(&self, f: impl FnOnce(&mut Users) -> R) -> R {
        f(&mut lock(&self.shared.users))
    }

    // ----- hooks, faults, gates -----

    /// Registers a hook run for every admitted `/v1/users` request (after its pause gate,
    /// before its fault and its page), with the store locked. Hooks run in registration
    /// order. Mutate through the `&mut Users` given; calling this handle's user methods from
    /// a hook deadlocks.
    pub fn on_users_request<F>(&self, hook: F)
    where
        F: Fn(&RequestInfo, &mut Users) + Send + Sync + 'static,
    {
        lock(&self.shared.hooks).push(Arc::new(hook));
    }

    /// Removes all hooks.
    pub fn clear_users_request_hooks(&self) {
        lock(&self.shared.hooks).clear();
    }

    /// Queues a fault for the next admitted `/v1/users` request without a fault.
    pub fn inject_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// Queues several faults, one per upcoming request, in order.
    pub fn inject_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.faults).extend(faults);
    }

    /// Faults not yet consumed.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).len()
    }

    /// Drops all queued faults.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = VecDeque::new();
    }

    /// Makes the `n`-th (1-based) admitted `/v1/users` request block before its hooks and
    /// page are computed, until [`PauseGate::release`] (or the gate is dropped). Register it
    /// before request `n` arrives; registering `n` again replaces the earlier gate.
    pub fn pause_users_request(&self, n: usize) -> PauseGate {
        let state = Arc::new(GateState::new());
        lock(&self.shared.gates).insert(n, Arc::clone(&state));
        PauseGate { n, state }
    }

    /// Releases every registered gate.
    pub fn release_all(&self) {
        for gate in lock(&self.shared.gates).values() {
            gate.released.send_replace(true);
        }
    }

    /// Replaces the rate limit (a fresh, full bucket), or removes it with `None`.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        *lock(&self.shared.bucket) = limit.map(|limit| rate_limit::TokenBucket::new(limit, Instant::now()));
    }

    // ----- request log -----

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).records.clone()
    }

    /// The `/v1/users` requests received so far (any outcome), in order of arrival.
    pub fn users_requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).records.iter().filter(|r| r.path == server::USERS_PATH).cloned().collect()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.log).stats
    }

    /// Requests answered 429 by the rate limiter.
    pub fn rate_limited_count(&self) -> usize {
        self.stats().rate_limited
    }

    /// The most requests (any path, any outcome) received within any span of `window`
    /// (half-open `[t, t + window)`), to check a client kept under a rate.
    pub fn max_requests_in_window(&self, window: Duration) -> usize {
        let log = lock(&self.shared.log);
        let mut times: Vec<Instant> = log.records.iter().map(|r| r.received_at).collect();
        drop(log);
        times.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while start <= end && times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }

    /// Waits (without polling) until `pred` holds for the counters; returns them.
    pub async fn wait_for(&self, mut pred: impl FnMut(&Stats) -> bool) -> Stats {
        let mut changed = self.shared.changed.subscribe();
        loop {
            let stats = self.stats();
            if pred(&stats) || changed.changed().await.is_err() {
                return stats;
            }
        }
    }

    /// Waits until at least `n` `/v1/users` requests have been answered.
    pub async fn wait_for_users_requests(&self, n: usize) -> Stats {
        self.wait_for(|s| s.users_requests_answered >= n).await
    }

    /// Stops the server: no new connections, in-flight requests aborted. The port is closed
    /// when this returns.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeClerk {
    fn drop(&mut self) {
        self.task.abort();
    }
}
