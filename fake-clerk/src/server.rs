//! The HTTP side of the fake: the accept loop, the request pipeline (log → auth → rate limit →
//! route), the `/v1/users`, `/v1/users/{id}` and `/v1/users/count` handlers, query parsing and Clerk-style error
//! bodies. State shared with the [`crate::FakeClerk`] handle lives in [`Shared`].
//!
//! Pipeline of a `GET /v1/users` request that passed auth and the rate limit ("admitted", and
//! numbered 1, 2, … — the `seq` of [`RequestInfo`]): pause gate → hooks → next fault → parse
//! the query → compute the page under the store lock → answer.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::rate_limit::TokenBucket;
use crate::users::{mix64, PageQuery, UnknownCursor, Users};
use crate::{Fault, RequestInfo, RequestRecord, Stats};

/// Path of the list endpoint.
pub(crate) const USERS_PATH: &str = "/v1/users";
/// Path of the count endpoint.
pub(crate) const USERS_COUNT_PATH: &str = "/v1/users/count";

/// Default and maximum of `limit`, as in Clerk.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: i64 = 500;

/// A hook run for each admitted `/v1/users` request, before its page is computed.
pub(crate) type UsersHook = dyn Fn(&RequestInfo, &mut Users) + Send + Sync;

/// Locks, recovering from poisoning (a panicking test hook must not wedge the fake).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pause gate for one admitted `/v1/users` request.
#[derive(Debug)]
pub(crate) struct GateState {
    pub arrived: watch::Sender<bool>,
    pub released: watch::Sender<bool>,
}

impl GateState {
    pub(crate) fn new() -> Self {
        GateState { arrived: watch::channel(false).0, released: watch::channel(false).0 }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    pub records: Vec<RequestRecord>,
    pub stats: Stats,
}

/// Everything the server and the handle share.
pub(crate) struct Shared {
    pub secret_keys: Vec<String>,
    pub users: Mutex<Users>,
    pub hooks: Mutex<Vec<Arc<UsersHook>>>,
    pub faults: Mutex<VecDeque<Fault>>,
    pub gates: Mutex<HashMap<usize, Arc<GateState>>>,
    pub bucket: Mutex<Option<TokenBucket>>,
    pub log: Mutex<Log>,
    /// Bumped on every change of the log, for waiters.
    pub changed: watch::Sender<()>,
    trace_counter: AtomicU64,
}

impl Shared {
    pub(crate) fn new(secret_keys: Vec<String>, users: Users, bucket: Option<TokenBucket>) -> Self {
        Shared {
            secret_keys,
            users: Mutex::new(users),
            hooks: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            gates: Mutex::new(HashMap::new()),
            bucket: Mutex::new(bucket),
            log: Mutex::new(Log::default()),
            changed: watch::channel(()).0,
            trace_counter: AtomicU64::new(0),
        }
    }

    fn update_log<R>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        let r = f(&mut lock(&self.log));
        self.changed.send_replace(());
        r
    }

    fn trace_id(&self) -> String {
        let n = self.trace_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        format!("{:016x}{:016x}", mix64(n), mix64(nanos ^ n.rotate_left(17)))
    }
}

/// Serves connections until the task is aborted; aborting drops (and so aborts) every
/// connection task too.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // E.g. out of file descriptors: back off a little instead of spinning.
                tracing::warn!(%error, "fake-clerk: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&shared), req));
            // Connection errors (client hung up, Fault::Disconnect) are expected here.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Returned to hyper to drop the connection without a response ([`Fault::Disconnect`]).
#[derive(Debug)]
pub(crate) struct Disconnect;

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake-clerk: injected disconnect")
    }
}

impl std::error::Error for Disconnect {}

type HttpResponse = Response<Full<Bytes>>;

/// Marks the request answered when dropped — also when hyper drops the handler because the
/// client hung up (status stays 0 then).
struct Answer {
    shared: Arc<Shared>,
    index: usize,
    status: u16,
}

impl Drop for Answer {
    fn drop(&mut self) {
        let (index, status) = (self.index, self.status);
        let record = self.shared.update_log(|log| {
            let record = log.records.get_mut(index)?;
            record.status = status;
            log.stats.answered += 1;
            if record.path == USERS_PATH {
                log.stats.users_requests_answered += 1;
            }
            let query: Vec<String> = record.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Some((record.method.clone(), record.path.clone(), query.join("&")))
        });
        if let Some((method, path, query)) = record {
            tracing::debug!(%method, %path, %query, status, "fake-clerk answered");
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<HttpResponse, Disconnect> {
    let received_at = Instant::now();
    let path = req.uri().path().to_owned();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let index = shared.update_log(|log| {
        log.stats.requests += 1;
        if path == USERS_PATH {
            log.stats.users_requests += 1;
        } else if path == USERS_COUNT_PATH {
            log.stats.count_requests += 1;
        }
        log.records.push(RequestRecord {
            method: req.method().to_string(),
            path: path.clone(),
            query: query.clone(),
            status: 0,
            received_at,
            users_seq: None,
            fault: None,
        });
        log.records.len() - 1
    });
    let mut answer = Answer { shared: Arc::clone(&shared), index, status: 0 };
    let response =
        route(&shared, req.method(), req.headers(), index, path, query, received_at).await.ok_or(Disconnect)?;
    answer.status = response.status().as_u16();
    Ok(response)
}

/// `None` = drop the connection without answering.
async fn route(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    index: usize,
    path: String,
    query: Vec<(String, String)>,
    received_at: Instant,
) -> Option<HttpResponse> {
    if let Some(response) = auth_error(shared, headers) {
        shared.update_log(|log| log.stats.unauthorized += 1);
        return Some(response);
    }
    let limited = lock(&shared.bucket).as_mut().and_then(|bucket| bucket.try_take(Instant::now()).err());
    if let Some(retry_after) = limited {
        shared.update_log(|log| log.stats.rate_limited += 1);
        return Some(too_many_requests(shared, retry_after));
    }
    let user_id = user_id_of(&path);
    let known = path == USERS_PATH || path == USERS_COUNT_PATH || user_id.is_some();
    if !known {
        return Some(clerk_error(
            shared,
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            &format!("No resource at {path} in this fake Clerk API"),
            None,
        ));
    }
    if method != Method::GET {
        return Some(clerk_error(
            shared,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
            &format!("{method} {path} is not supported by this fake Clerk API"),
            None,
        ));
    }
    if path == USERS_COUNT_PATH {
        return Some(count_users(shared, &query));
    }
    if let Some(id) = user_id {
        return Some(get_user(shared, &id));
    }
    list_users(shared, index, path, query, received_at).await
}

/// The 401 to answer, if the `Authorization` header does not carry an accepted key.
fn auth_error(shared: &Shared, headers: &HeaderMap) -> Option<HttpResponse> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Some(clerk_error(
            shared,
            StatusCode::UNAUTHORIZED,
            "authorization_header_format_invalid",
            "Invalid Authorization header format",
            "Invalid Authorization header format. Must be 'Bearer <YOUR_API_KEY>'",
            None,
        ));
    };
    if shared.secret_keys.iter().any(|k| k == token) {
        return None;
    }
    const INVALID_KEY: &str =
        "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.";
    Some(clerk_error(shared, StatusCode::UNAUTHORIZED, "clerk_key_invalid", INVALID_KEY, INVALID_KEY, None))
}

/// The id of `GET /v1/users/{id}` (one percent-decoded segment), if `path` is one.
fn user_id_of(path: &str) -> Option<String> {
    let id = path.strip_prefix("/v1/users/")?;
    (!id.is_empty() && !id.contains('/') && path != USERS_COUNT_PATH).then(|| percent_decode(id))
}

/// `GET /v1/users/{id}`: the user (hidden or not), or Clerk's 404.
fn get_user(shared: &Shared, id: &str) -> HttpResponse {
    let user = lock(&shared.users).get(id).map(|u| u.to_string());
    shared.update_log(|log| {
        log.stats.user_requests += 1;
        if user.is_none() {
            log.stats.user_not_found += 1;
        }
    });
    match user {
        Some(body) => json_response(StatusCode::OK, body),
        None => clerk_error(
            shared,
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            &format!("No user was found with id {id}"),
            None,
        ),
    }
}

fn count_users(shared: &Shared, query: &[(String, String)]) -> HttpResponse {
    let window =
        parse_i64(query, "created_at_after").and_then(|after| Ok((after, parse_i64(query, "created_at_before")?)));
    match window {
        Ok((after, before)) => {
            let total = lock(&shared.users).count(after, before);
            json_response(StatusCode::OK, json!({"object": "total_count", "total_count": total}).to_string())
        }
        Err(invalid) => invalid.response(shared),
    }
}

async fn list_users(
    shared: &Shared,
    index: usize,
    path: String,
    query: Vec<(String, String)>,
    received_at: Instant,
) -> Option<HttpResponse> {
    let seq = shared.update_log(|log| {
        log.stats.users_requests_admitted += 1;
        let seq = log.stats.users_requests_admitted;
        if let Some(record) = log.records.get_mut(index) {
            record.users_seq = Some(seq);
        }
        seq
    });

    let gate = lock(&shared.gates).get(&seq).cloned();
    if let Some(gate) = gate {
        let mut released = gate.released.subscribe();
        gate.arrived.send_replace(true);
        // The sender lives in `gate`, so this only returns once released.
        let _ = released.wait_for(|released| *released).await;
    }

    let info = RequestInfo { seq, path, query, received_at };
    let hooks: Vec<Arc<UsersHook>> = lock(&shared.hooks).clone();
    if !hooks.is_empty() {
        let mut users = lock(&shared.users);
        for hook in &hooks {
            hook(&info, &mut users);
        }
    }

    let fault = lock(&shared.faults).pop_front();
    if let Some(fault) = &fault {
        shared.update_log(|log| {
            log.stats.faults_applied += 1;
            if let Some(record) = log.records.get_mut(index) {
                record.fault = Some(fault.clone());
            }
        });
    }
    let mut truncate = false;
    match fault {
        Some(Fault::Disconnect) => return None,
        Some(Fault::Status(status)) => return Some(fault_response(shared, status)),
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Truncate) => truncate = true,
        None => {}
    }

    let params = match parse_list_query(&info.query) {
        Ok(params) => params,
        Err(invalid) => return Some(invalid.response(shared)),
    };
    let body = {
        let users = lock(&shared.users);
        match users.page(&params) {
            Ok(page) => serde_json::to_vec(&page),
            Err(UnknownCursor) => {
                return Some(
                    InvalidParam {
                        name: "starting_after",
                        code: "form_param_value_invalid",
                        long_message: format!(
                            "starting_after is invalid: no user with id {:?}",
                            params.starting_after.unwrap_or_default()
                        ),
                    }
                    .response(shared),
                )
            }
        }
    };
    let Ok(mut body) = body else {
        return Some(fault_response(shared, 500));
    };
    if truncate {
        body.truncate(body.len() / 2);
    }
    Some(json_response(StatusCode::OK, body))
}

/// An invalid query parameter: a 422 like Clerk's `form_param_*` errors.
#[derive(Debug)]
struct InvalidParam {
    name: &'static str,
    code: &'static str,
    long_message: String,
}

impl InvalidParam {
    fn format(name: &'static str, long_message: String) -> Self {
        InvalidParam { name, code: "form_param_format_invalid", long_message }
    }

    fn response(self, shared: &Shared) -> HttpResponse {
        clerk_error(
            shared,
            StatusCode::UNPROCESSABLE_ENTITY,
            self.code,
            "is invalid",
            &self.long_message,
            Some(json!({"param_name": self.name})),
        )
    }
}

/// The first value of `name`; an empty value counts as absent.
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn parse_i64(query: &[(String, String)], name: &'static str) -> Result<Option<i64>, InvalidParam> {
    param(query, name)
        .map(|raw| {
            raw.parse::<i64>().map_err(|_| {
                InvalidParam::format(name, format!("{name} must be an integer (ms since the Unix epoch), got {raw:?}"))
            })
        })
        .transpose()
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_list_query(query: &[(String, String)]) -> Result<PageQuery, InvalidParam> {
    let limit = match param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            // Clerk silently ignores a limit over the maximum and uses the default.
            Ok(n) if n > MAX_LIMIT => DEFAULT_LIMIT,
            Ok(n) if n >= 1 => n as usize,
            Err(_) if is_digits(raw) => DEFAULT_LIMIT,
            _ => {
                return Err(InvalidParam::format(
                    "limit",
                    format!("limit must be an integer between 1 and 500, got {raw:?}"),
                ))
            }
        },
    };
    let offset = match param(query, "offset") {
        None => 0,
        Some(raw) if is_digits(raw) => raw.parse::<usize>().unwrap_or(usize::MAX),
        Some(raw) => {
            return Err(InvalidParam::format("offset", format!("offset must be a non-negative integer, got {raw:?}")))
        }
    };
    let descending = match param(query, "order_by") {
        None | Some("-created_at") => true,
        Some("+created_at") | Some("created_at") => false,
        Some(raw) => {
            let hint = if raw.starts_with(' ') {
                " (a literal '+' in a query string decodes to a space: encode it as %2B)"
            } else {
                ""
            };
            return Err(InvalidParam::format(
                "order_by",
                format!("order_by must be one of -created_at, +created_at, created_at; got {raw:?}{hint}"),
            ));
        }
    };
    Ok(PageQuery {
        limit,
        offset,
        descending,
        created_at_after: parse_i64(query, "created_at_after")?,
        created_at_before: parse_i64(query, "created_at_before")?,
        starting_after: param(query, "starting_after").map(str::to_owned),
    })
}

/// `application/x-www-form-urlencoded` query parsing (`+` is a space, `%XX` decoded, invalid
/// UTF-8 replaced), keeping order and repeats.
pub(crate) fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi << 4) | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

/// `{"errors":[{"message","long_message","code","meta"?}],"clerk_trace_id"}`.
fn clerk_error(
    shared: &Shared,
    status: StatusCode,
    code: &str,
    message: &str,
    long_message: &str,
    meta: Option<Value>,
) -> HttpResponse {
    let mut error = json!({"message": message, "long_message": long_message, "code": code});
    if let (Some(meta), Some(obj)) = (meta, error.as_object_mut()) {
        obj.insert("meta".into(), meta);
    }
    let trace_id = shared.trace_id();
    let mut response = json_response(status, json!({"errors": [error], "clerk_trace_id": trace_id}).to_string());
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-clerk-trace-id", value);
    }
    response
}

fn too_many_requests(shared: &Shared, retry_after_secs: u64) -> HttpResponse {
    let mut response = clerk_error(
        shared,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "Too many requests",
        "Too many requests, retry later",
        Some(json!({"ResetsIn": retry_after_secs})),
    );
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
    response
}

/// The answer for [`Fault::Status`]: the status with a plausible Clerk error body.
fn fault_response(shared: &Shared, status: u16) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status.as_u16() {
        429 => too_many_requests(shared, 1),
        401 => {
            let msg = "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.";
            clerk_error(shared, status, "clerk_key_invalid", msg, msg, None)
        }
        500..=599 => clerk_error(
            shared,
            status,
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers. We've been notified and are working on fixing it.",
            None,
        ),
        _ => clerk_error(
            shared,
            status,
            "fault_injected",
            status.canonical_reason().unwrap_or("error"),
            "An error injected by fake-clerk",
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str) -> Vec<(String, String)> {
        parse_query(raw)
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            q("order_by=%2Bcreated_at&x=a+b&y=%zz&z=%4&limit="),
            vec![
                ("order_by".into(), "+created_at".into()),
                ("x".into(), "a b".into()),
                ("y".into(), "%zz".into()),
                ("z".into(), "%4".into()),
                ("limit".into(), "".into()),
            ]
        );
    }

    #[test]
    fn list_query_rules() {
        let p = parse_list_query(&q("")).unwrap();
        assert_eq!((p.limit, p.offset, p.descending), (10, 0, true));
        assert_eq!(parse_list_query(&q("limit=501")).unwrap().limit, 10);
        assert_eq!(parse_list_query(&q("limit=99999999999999999999999")).unwrap().limit, 10);
        assert_eq!(parse_list_query(&q("limit=500")).unwrap().limit, 500);
        for bad in ["limit=0", "limit=-3", "limit=ten", "offset=-1", "offset=x"] {
            assert!(parse_list_query(&q(bad)).is_err(), "{bad}");
        }
        for bad in ["order_by=+created_at", "order_by=updated_at", "created_at_after=x"] {
            assert!(parse_list_query(&q(bad)).is_err(), "{bad}");
        }
        assert!(!parse_list_query(&q("order_by=created_at")).unwrap().descending);
        assert!(!parse_list_query(&q("order_by=%2Bcreated_at")).unwrap().descending);
    }
}
