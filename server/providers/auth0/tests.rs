//! Tests of the Auth0 provider against the fixtures in ../shared/fixtures/auth0.
use super::*;
use crate::providers::test_fixtures::{assert_unhandled, received, s, single, utc};
use http::HeaderValue;
use serde_json::json;

fn fixture_bytes(name: &str) -> Vec<u8> {
    crate::providers::test_fixtures::bytes("auth0", name)
}

fn fixture_json(name: &str) -> Value {
    crate::providers::test_fixtures::json("auth0", name)
}

const SECRET: &str = "a0-shared-secret-0123456789abcdef";

fn parse_fixture(name: &str) -> Delivery {
    parse(&fixture_bytes(name), received()).expect("fixture parses")
}

fn parse_json(body: &Value) -> Result<Delivery, ParseError> {
    parse(body.to_string().as_bytes(), received())
}

fn single_upsert(delivery: Delivery, event_type: &str) -> UserRecord {
    match single(delivery, event_type) {
        UserChange::Upsert(record) => record,
        other => panic!("expected an upsert, got {other:?}"),
    }
}

fn single_delete(delivery: Delivery, event_type: &str) -> UserDeletion {
    match single(delivery, event_type) {
        UserChange::Delete(deletion) => deletion,
        other => panic!("expected a delete, got {other:?}"),
    }
}

fn auth_header(value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, HeaderValue::from_bytes(value).expect("header value"));
    headers
}

/// The catalog examples' profile (created, updated and deleted share it, bar `deleted_at`).
fn catalog_record(raw: Value) -> UserRecord {
    UserRecord {
        id: "auth0|507f1f77bcf86cd799439020".into(),
        email: s("john.doe@gmail.com"),
        first_name: s("John"),
        last_name: s("Doe"),
        username: s("johndoe"),
        image_url: s("https://secure.gravatar.com/avatar/15626c5e0c749cb912f9d1ad48dba440?s=480&r=pg&d=https%3A%2F%2Fssl.gstatic.com%2Fs2%2Fprofiles%2Fimages%2Fsilhouette80.png"),
        created_at: Some(utc("2025-02-01T12:34:56Z")),
        updated_at: Some(utc("2025-02-01T12:34:56Z")),
        last_sign_in_at: Some(utc("2025-02-01T12:34:56Z")),
        raw: raw.into(),
    }
}

// ---- verify ----------------------------------------------------------------------

#[test]
fn bare_and_bearer_secrets_verify() {
    for value in [
        SECRET.to_owned(),
        format!("Bearer {SECRET}"),
        format!("bearer {SECRET}"),
        format!("BEARER {SECRET}"),
        format!("Bearer   {SECRET}"),
        format!("Bearer\t{SECRET}"),
    ] {
        assert_eq!(verify(SECRET, &auth_header(value.as_bytes())), Ok(()), "{value:?}");
    }
    // A secret that itself starts with "Bearer " still matches when sent bare.
    let odd = "Bearer 0123456789abcdef";
    assert_eq!(verify(odd, &auth_header(odd.as_bytes())), Ok(()));
    assert_eq!(verify(odd, &auth_header(format!("Bearer {odd}").as_bytes())), Ok(()));
}

#[test]
fn wrong_or_altered_secrets_reject() {
    let other = "a0-shared-secret-0123456789abcdeF";
    for value in [
        other.to_owned(),
        format!("Bearer {other}"),
        format!("{SECRET}x"),
        format!("x{SECRET}"),
        SECRET[..SECRET.len() - 1].to_owned(),
        format!("Bearer {}", &SECRET[..SECRET.len() - 1]),
        format!("Bearer {SECRET} "),
        format!("Bearer{SECRET}"),
        format!("Basic {SECRET}"),
        basic("auth0", "a0-shared-secret-0123456789abcdeF"),
        format!("Token {SECRET}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        String::new(),
    ] {
        assert_eq!(verify(SECRET, &auth_header(value.as_bytes())), Err(VerifyError::NoMatchingSignature), "{value:?}");
    }
    // Non-UTF-8 bytes in the header simply do not match.
    assert_eq!(verify(SECRET, &auth_header(b"Bearer \xff\xfe")), Err(VerifyError::NoMatchingSignature));
}

#[test]
fn missing_header_or_unusable_secret() {
    assert_eq!(verify(SECRET, &HeaderMap::new()), Err(VerifyError::MissingHeader("authorization")));
    let mut headers = HeaderMap::new();
    headers.insert("x-authorization", HeaderValue::from_static(SECRET));
    assert_eq!(verify(SECRET, &headers), Err(VerifyError::MissingHeader("authorization")));
    // An empty configured secret never authenticates, not even an empty header.
    assert_eq!(verify("", &auth_header(b"")), Err(VerifyError::BadSecret));
    assert_eq!(verify("", &auth_header(b"Bearer ")), Err(VerifyError::BadSecret));
}

#[test]
fn scheme_credentials_extraction() {
    assert_eq!(scheme_credentials(b"Bearer abc", b"bearer"), Some(&b"abc"[..]));
    assert_eq!(scheme_credentials(b"bEaReR \t abc", b"bearer"), Some(&b"abc"[..]));
    assert_eq!(scheme_credentials(b"Basic YTpi", b"basic"), Some(&b"YTpi"[..]));
    assert_eq!(scheme_credentials(b"Bearerabc", b"bearer"), None);
    assert_eq!(scheme_credentials(b"Bearer", b"bearer"), None);
    assert_eq!(scheme_credentials(b"Bearer   ", b"bearer"), None);
    assert_eq!(scheme_credentials(b"Beare", b"bearer"), None);
    assert_eq!(scheme_credentials(b"abc", b"bearer"), None);
    assert_eq!(scheme_credentials(b"Bearer abc", b"basic"), None);
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[test]
fn basic_auth_password_is_the_secret_and_the_user_is_not_checked() {
    for value in [
        basic("auth0", SECRET),
        basic("", SECRET),
        basic("any-user-name", SECRET),
        basic("auth0", SECRET).replacen("Basic", "basic", 1),
        basic("auth0", SECRET).replacen("Basic", "BASIC\t", 1),
        format!("{} ", basic("auth0", SECRET)),
    ] {
        assert_eq!(verify(SECRET, &auth_header(value.as_bytes())), Ok(()), "{value:?}");
    }
    // The password may hold colons: the user name ends at the first one.
    let colons = "a0:secret:with:colons-0123";
    assert_eq!(verify(colons, &auth_header(basic("u", colons).as_bytes())), Ok(()));
    assert_eq!(
        verify(colons, &auth_header(basic("a0", "secret:with:colons-0123").as_bytes())),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn basic_auth_with_a_wrong_password_or_a_bad_encoding_rejects() {
    use base64::Engine as _;
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    for value in [
        basic("auth0", "a0-shared-secret-0123456789abcdeF"),
        basic("auth0", &SECRET[..SECRET.len() - 1]),
        basic("auth0", &format!("{SECRET} ")),
        basic(SECRET, "auth0"),
        basic(SECRET, ""),
        format!("Basic {}", encode(SECRET)),
        format!("Basic {}", encode(&format!("{SECRET}:"))),
        format!("Basic {SECRET}"),
        format!("Basic :{SECRET}"),
        format!("Basic{}", &basic("auth0", SECRET)[6..]),
        format!("Bearer {}", &basic("auth0", SECRET)[6..]),
        "Basic ".to_owned(),
        "Basic !!!".to_owned(),
    ] {
        assert_eq!(verify(SECRET, &auth_header(value.as_bytes())), Err(VerifyError::NoMatchingSignature), "{value:?}");
    }
}

// ---- Event Streams ---------------------------------------------------------------

#[test]
fn event_stream_docs_test_delivery() {
    let record = single_upsert(parse_fixture("event-stream.user.created.docs-test-delivery.json"), USER_CREATED);
    let expected = UserRecord {
        id: "auth0|679fb1b1e809445f129bc18d".into(),
        email: s("nick-testing-21@example.com"),
        first_name: None,
        last_name: None,
        username: None,
        image_url: s("test.png"),
        created_at: Some(utc("2025-02-02T17:56:01.566Z")),
        updated_at: Some(utc("2025-02-02T17:56:01.566Z")),
        last_sign_in_at: None,
        raw: fixture_json("event-stream.user.created.docs-test-delivery.json")["data"]["object"].clone().into(),
    };
    assert_eq!(record, expected);
}

#[test]
fn event_stream_catalog_created_and_updated() {
    for (name, event_type) in [
        ("event-stream.user.created.catalog-example.json", USER_CREATED),
        ("event-stream.user.updated.catalog-example.json", USER_UPDATED),
    ] {
        let record = single_upsert(parse_fixture(name), event_type);
        let raw = fixture_json(name)["data"]["object"].clone();
        assert_eq!(record, catalog_record(raw), "{name}");
        // `previous_object` and `context` are not the user: raw is `data.object` only.
        assert!(record.raw.to_value().get("previous_object").is_none());
    }
}

#[test]
fn event_stream_catalog_deleted_uses_the_profile_deleted_at() {
    let name = "event-stream.user.deleted.catalog-example.json";
    let deletion = single_delete(parse_fixture(name), USER_DELETED);
    assert_eq!(
        deletion,
        UserDeletion {
            id: "auth0|507f1f77bcf86cd799439020".into(),
            deleted_at: utc("2025-02-01T12:34:56Z"),
            raw: fixture_json(name)["data"]["object"].clone().into(),
        }
    );
}

#[test]
fn deleted_at_precedence() {
    let mut event = fixture_json("event-stream.user.deleted.catalog-example.json");
    event["data"]["object"]["deleted_at"] = json!("2025-03-01T00:00:00.500Z");
    event["time"] = json!("2025-03-02T00:00:00Z");
    // 1. The profile's deleted_at.
    let d = single_delete(parse_json(&event).expect("parses"), USER_DELETED);
    assert_eq!(d.deleted_at, utc("2025-03-01T00:00:00.500Z"));
    // 2. Without it (absent or null): the event time.
    event["data"]["object"]["deleted_at"] = Value::Null;
    assert_eq!(
        single_delete(parse_json(&event).expect("parses"), USER_DELETED).deleted_at,
        utc("2025-03-02T00:00:00Z")
    );
    event["data"]["object"].as_object_mut().expect("object").remove("deleted_at");
    let d = single_delete(parse_json(&event).expect("parses"), USER_DELETED);
    assert_eq!(d.deleted_at, utc("2025-03-02T00:00:00Z"));
    assert_eq!(d.raw, event["data"]["object"]);
    // 3. Without either: the time of receipt.
    event.as_object_mut().expect("object").remove("time");
    assert_eq!(single_delete(parse_json(&event).expect("parses"), USER_DELETED).deleted_at, received());
    event["time"] = Value::Null;
    assert_eq!(single_delete(parse_json(&event).expect("parses"), USER_DELETED).deleted_at, received());
    // Epoch milliseconds are read too.
    event["data"]["object"]["deleted_at"] = json!(1_740_000_000_000_i64);
    assert_eq!(
        single_delete(parse_json(&event).expect("parses"), USER_DELETED).deleted_at,
        utc("2025-02-19T21:20:00Z")
    );
}

#[test]
fn unreadable_deletion_times_are_errors() {
    let mut event = fixture_json("event-stream.user.deleted.catalog-example.json");
    event["data"]["object"]["deleted_at"] = json!("last tuesday");
    assert_eq!(parse_json(&event), Err(ParseError::Field("deleted_at")));
    event["data"]["object"].as_object_mut().expect("object").remove("deleted_at");
    event["time"] = json!(true);
    assert_eq!(parse_json(&event), Err(ParseError::Field("time")));
    // The event time is not needed (nor checked) when the profile has deleted_at, or for
    // an upsert.
    event["data"]["object"]["deleted_at"] = json!("2025-02-01T12:34:56Z");
    assert!(parse_json(&event).is_ok());
    event["type"] = json!("user.updated");
    assert!(parse_json(&event).is_ok());
}

#[test]
fn com_auth0_prefixed_types() {
    for (name, plain) in [
        ("event-stream.user.created.catalog-example.json", USER_CREATED),
        ("event-stream.user.updated.catalog-example.json", USER_UPDATED),
        ("event-stream.user.deleted.catalog-example.json", USER_DELETED),
    ] {
        let mut event = fixture_json(name);
        event["type"] = json!(format!("com.auth0.{plain}"));
        let prefixed = parse_json(&event).expect("parses");
        assert_eq!(prefixed, parse_fixture(name), "{name}");
        assert_eq!(prefixed.event_type, plain);
    }
    let event = json!({"specversion": "1.0", "type": "com.auth0.organization.created", "data": {}});
    assert_unhandled(&parse_json(&event).expect("parses"), "organization.created");
}

#[test]
fn other_event_stream_types_are_unhandled() {
    for event_type in ["organization.created", "user.blocked", "group.created", "user", "com.auth0.", ""] {
        let mut event = fixture_json("event-stream.user.created.catalog-example.json");
        event["type"] = json!(event_type);
        let delivery = parse_json(&event).expect("parses");
        assert_unhandled(&delivery, event_type.strip_prefix(TYPE_PREFIX).unwrap_or(event_type));
    }
    // Unhandled types are not inspected further.
    let event = json!({"type": "organization.member.added", "data": "anything"});
    assert_unhandled(&parse_json(&event).expect("parses"), "organization.member.added");
}

#[test]
fn event_stream_shape_errors() {
    let profile = json!({"user_id": "auth0|1", "email": "a@example.com"});
    let cases = [
        (json!({"specversion": "1.0", "data": {"object": profile}}), "type"),
        (json!({"specversion": "1.0", "type": 7, "data": {"object": profile}}), "type"),
        (json!({"type": "user.created"}), "data"),
        (json!({"type": "user.created", "data": [profile]}), "data"),
        (json!({"type": "user.created", "data": {}}), "data.object"),
        (json!({"type": "user.created", "data": {"object": "auth0|1"}}), "data.object"),
        (json!({"type": "user.created", "data": {"object": {"email": "a@example.com"}}}), "user_id"),
        (json!({"type": "user.deleted", "data": {"object": {"user_id": ""}}}), "user_id"),
        (json!({"type": "user.updated", "data": {"object": {"user_id": 42}}}), "user_id"),
        (json!({"type": "user.updated", "data": {"object": {"user_id": "a", "email": ["x"]}}}), "email"),
        (json!({"type": "user.updated", "data": {"object": {"user_id": "a", "updated_at": "soon"}}}), "updated_at"),
    ];
    for (body, field) in cases {
        assert_eq!(parse_json(&body), Err(ParseError::Field(field)), "{body}");
    }
}

// ---- Action envelope ---------------------------------------------------------------

#[test]
fn action_envelope_with_the_google_profile() {
    let profile = fixture_json("user-profile.google.docs-example.json");
    for (event, expected_type) in
        [("user.created", USER_CREATED), ("user.updated", USER_UPDATED), ("com.auth0.user.updated", USER_UPDATED)]
    {
        let body = json!({"event": event, "user": profile});
        let record = single_upsert(parse_json(&body).expect("parses"), expected_type);
        assert_eq!(
            record,
            UserRecord {
                id: "google-oauth2|103547991597142817347".into(),
                email: s("johnfoo@gmail.com"),
                first_name: s("John"),
                last_name: s("Foo"),
                username: None,
                image_url: s(
                    "https://lh4.googleusercontent.com/-OdsbOXom9qE/AAAAAAAAAAI/AAAAAAAAADU/_j8SzYTOJ4I/photo.jpg"
                ),
                // The normalized profile has no times; the Management API adds them.
                created_at: None,
                updated_at: None,
                last_sign_in_at: None,
                raw: profile.clone().into(),
            }
        );
    }
}

#[test]
fn action_envelope_deletes() {
    let mut profile = fixture_json("user-profile.google.docs-example.json");
    let body = json!({"event": "user.deleted", "user": profile});
    let deletion = single_delete(parse_json(&body).expect("parses"), USER_DELETED);
    assert_eq!(
        deletion,
        UserDeletion {
            id: "google-oauth2|103547991597142817347".into(),
            deleted_at: received(),
            raw: profile.clone().into()
        }
    );
    profile["deleted_at"] = json!("2025-04-01T10:00:00Z");
    let body = json!({"event": "user.deleted", "user": profile, "time": "2025-05-01T00:00:00Z"});
    // The profile's deleted_at; an envelope `time` is not part of this shape.
    assert_eq!(single_delete(parse_json(&body).expect("parses"), USER_DELETED).deleted_at, utc("2025-04-01T10:00:00Z"));
    profile.as_object_mut().expect("object").remove("deleted_at");
    let body = json!({"event": "user.deleted", "user": profile, "time": "2025-05-01T00:00:00Z"});
    assert_eq!(single_delete(parse_json(&body).expect("parses"), USER_DELETED).deleted_at, received());
}

#[test]
fn action_envelope_unhandled_and_errors() {
    let profile = fixture_json("user-profile.google.docs-example.json");
    assert_unhandled(&parse_json(&json!({"event": "post-login", "user": profile})).expect("parses"), "post-login");
    assert_unhandled(&parse_json(&json!({"event": "user.blocked"})).expect("parses"), "user.blocked");
    let cases = [
        (json!({"event": null, "user": profile}), "event"),
        (json!({"event": ["user.created"], "user": profile}), "event"),
        (json!({"event": "user.created"}), "user"),
        (json!({"event": "user.created", "user": null}), "user"),
        (json!({"event": "user.deleted", "user": "google-oauth2|1"}), "user"),
        (json!({"event": "user.created", "user": {"email": "x@example.com"}}), "user_id"),
        (json!({"event": "user.deleted", "user": {"email": "x@example.com"}}), "user_id"),
    ];
    for (body, field) in cases {
        assert_eq!(parse_json(&body), Err(ParseError::Field(field)), "{body}");
    }
}

// ---- Log Streams -----------------------------------------------------------------

fn log_data(name: &str, index: usize) -> Value {
    fixture_json(name)[index]["data"].clone()
}

fn signup(data: Value, id: &str, email: &str) -> UserChange {
    UserChange::Sighting(UserSighting {
        id: id.into(),
        insert_if_absent: true,
        email: s(email),
        signed_in_at: None,
        raw: data.into(),
    })
}

fn login(data: Value, id: &str, at: &str) -> UserChange {
    UserChange::Sighting(UserSighting {
        id: id.into(),
        insert_if_absent: false,
        email: None,
        signed_in_at: Some(utc(at)),
        raw: data.into(),
    })
}

#[test]
fn log_array_signups() {
    let name = "log-stream.jsonarray.ss-signup.json";
    let delivery = parse_fixture(name);
    assert_eq!(delivery.event_type, "log_stream:ss");
    assert!(!delivery.unhandled);
    assert_eq!(
        delivery.changes,
        vec![
            signup(log_data(name, 0), "auth0|6182002f34f4dd006b05b5c7", "neo@test.com"),
            signup(log_data(name, 1), "auth0|618223a4e3f49e006948565c", "dev@test.com"),
        ]
    );
}

#[test]
fn signup_email_falls_back_to_user_name() {
    let mut data = log_data("log-stream.jsonarray.ss-signup.json", 0);
    data["details"]["body"]["email"] = Value::Null;
    data["user_name"] = json!("fallback@test.com");
    let body = json!([{"log_id": "1", "data": data}]);
    let change = single(parse_json(&body).expect("parses"), "log_stream:ss");
    assert_eq!(change, signup(data.clone(), "auth0|6182002f34f4dd006b05b5c7", "fallback@test.com"));
    // Neither: no email, the row is still inserted.
    data.as_object_mut().expect("object").remove("details");
    data.as_object_mut().expect("object").remove("user_name");
    let body = json!([{"log_id": "1", "data": data}]);
    let UserChange::Sighting(sighting) = single(parse_json(&body).expect("parses"), "log_stream:ss") else {
        panic!("a sighting")
    };
    assert_eq!((sighting.email, sighting.insert_if_absent), (None, true));
}

#[test]
fn log_array_login() {
    let name = "log-stream.jsonarray.s-login.json";
    let change = single(parse_fixture(name), "log_stream:s");
    assert_eq!(change, login(log_data(name, 0), "auth0|618223a4e3f49e006948565c", "2021-11-04T00:15:10.706Z"));
}

#[test]
fn log_array_user_deleted() {
    let name = "log-stream.jsonarray.sdu-user-deleted.CONSTRUCTED.json";
    let deletion = single_delete(parse_fixture(name), "log_stream:sdu");
    assert_eq!(
        deletion,
        UserDeletion {
            id: "auth0|618223a4e3f49e006948565c".into(),
            deleted_at: utc("2021-11-05T09:30:11.118Z"),
            raw: log_data(name, 0).into(),
        }
    );
}

#[test]
fn log_batches_without_used_codes_are_unhandled() {
    assert_unhandled(&parse_fixture("log-stream.jsonarray.sv-email-verified.json"), "log_stream:sv");
    assert_unhandled(&parse_fixture("log-stream.jsonarray.sapi-management-op.json"), "log_stream:sapi");
    assert_unhandled(&parse_json(&json!([])).expect("parses"), "log_stream");
    // Unused codes are not inspected (no user_id, no date needed).
    let body = json!([{"log_id": "1", "data": {"type": "f"}}, {"log_id": "2", "data": {"type": "fp"}}]);
    assert_unhandled(&parse_json(&body).expect("parses"), "log_stream:f,fp");
}

#[test]
fn json_lines_batch_matches_the_array_records() {
    let delivery = parse_fixture("log-stream.jsonlines.ss-s-sv.jsonl");
    assert_eq!(delivery.event_type, "log_stream:ss,s,sv");
    assert!(!delivery.unhandled);
    assert_eq!(
        delivery.changes,
        vec![
            signup(
                log_data("log-stream.jsonarray.ss-signup.json", 0),
                "auth0|6182002f34f4dd006b05b5c7",
                "neo@test.com"
            ),
            login(
                log_data("log-stream.jsonarray.s-login.json", 0),
                "auth0|618223a4e3f49e006948565c",
                "2021-11-04T00:15:10.706Z"
            ),
        ]
    );
    // The same records as a JSON array parse identically.
    let lines = String::from_utf8(fixture_bytes("log-stream.jsonlines.ss-s-sv.jsonl")).expect("utf-8");
    let array: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).expect("line")).collect();
    assert_eq!(parse_json(&Value::Array(array)).expect("parses"), delivery);
    // CRLF line ends, blank lines and no final newline are fine.
    let crlf = format!("\r\n{}\r\n\r\n", lines.trim_end().replace('\n', "\r\n"));
    assert_eq!(parse(crlf.as_bytes(), received()).expect("parses"), delivery);
}

#[test]
fn a_single_log_record_object() {
    let record = fixture_json("log-stream.jsonarray.s-login.json")[0].clone();
    let change = single(parse_json(&record).expect("parses"), "log_stream:s");
    assert_eq!(change, login(record["data"].clone(), "auth0|618223a4e3f49e006948565c", "2021-11-04T00:15:10.706Z"));
    // One JSON line is a single object too.
    let line = format!("{record}\n");
    assert_eq!(parse(line.as_bytes(), received()).expect("parses").changes, vec![change]);
}

#[test]
fn a_mixed_batch_keeps_record_order() {
    let ss = fixture_json("log-stream.jsonarray.ss-signup.json")[1].clone();
    let s_login = fixture_json("log-stream.jsonarray.s-login.json")[0].clone();
    let sv = fixture_json("log-stream.jsonarray.sv-email-verified.json")[0].clone();
    let sdu = fixture_json("log-stream.jsonarray.sdu-user-deleted.CONSTRUCTED.json")[0].clone();
    let sapi = fixture_json("log-stream.jsonarray.sapi-management-op.json")[0].clone();
    let body = json!([ss, sv, s_login, sapi, sdu]);
    let delivery = parse_json(&body).expect("parses");
    assert_eq!(delivery.event_type, "log_stream:ss,sv,s,sapi,sdu");
    let ids: Vec<&str> = delivery.changes.iter().map(UserChange::user_id).collect();
    assert_eq!(ids, vec!["auth0|618223a4e3f49e006948565c"; 3]);
    assert!(matches!(&delivery.changes[0], UserChange::Sighting(s) if s.insert_if_absent));
    assert!(matches!(&delivery.changes[1], UserChange::Sighting(s) if !s.insert_if_absent));
    assert!(matches!(&delivery.changes[2], UserChange::Delete(_)));
}

#[test]
fn log_event_type_is_bounded() {
    let body: Vec<Value> = (0..20).map(|i| json!({"log_id": i, "data": {"type": format!("code{i}")}})).collect();
    let delivery = parse_json(&Value::Array(body)).expect("parses");
    assert_eq!(delivery.event_type, "log_stream:code0,code1,code2,code3,code4,code5,code6,code7,…");
    let long = "x".repeat(100);
    let delivery = parse_json(&json!([{"data": {"type": long}}])).expect("parses");
    assert_eq!(delivery.event_type, format!("log_stream:{}", "x".repeat(32)));
}

#[test]
fn log_record_errors() {
    let login = log_data("log-stream.jsonarray.s-login.json", 0);
    let without = |key: &str| {
        let mut d = login.clone();
        d.as_object_mut().expect("object").remove(key);
        json!([{"log_id": "1", "data": d}])
    };
    let with = |key: &str, value: Value| {
        let mut d = login.clone();
        d[key] = value;
        json!([{"log_id": "1", "data": d}])
    };
    // Nothing in the body is a log record: not a log batch.
    for body in [
        json!([1, 2]),
        json!([{"log_id": "1"}]),
        json!([{"log_id": "1", "data": "s"}]),
        json!({"log_id": "1", "data": null}),
        without("type"),
        with("type", json!(["s"])),
    ] {
        assert_eq!(parse_json(&body), Err(ParseError::Field("data")), "{body}");
    }
    // A record of a used code that cannot be used is skipped, never an error.
    for body in [
        without("user_id"),
        with("user_id", json!("")),
        with("user_id", json!(42)),
        without("date"),
        with("date", json!("not a date")),
    ] {
        let delivery = parse_json(&body).expect("a log batch");
        assert_eq!((delivery.skipped, delivery.changes.len()), (1, 0), "{body}");
        assert!(delivery.unhandled, "{body}");
        assert_eq!(delivery.event_type, "log_stream:s");
    }
}

#[test]
fn unusable_records_are_skipped_and_the_rest_of_the_batch_applies() {
    let signups = fixture_json("log-stream.jsonarray.ss-signup.json");
    let login = fixture_json("log-stream.jsonarray.s-login.json")[0].clone();
    let mut no_user = login.clone();
    no_user["data"].as_object_mut().expect("object").remove("user_id");
    let mut bad_date = fixture_json("log-stream.jsonarray.sdu-user-deleted.CONSTRUCTED.json")[0].clone();
    bad_date["data"]["date"] = json!("yesterday");
    let body = json!([
        signups[0],
        no_user,
        {"log_id": "junk"},
        7,
        login,
        bad_date,
        {"log_id": "x", "data": {"type": "f"}},
        signups[1]
    ]);
    let delivery = parse_json(&body).expect("a log batch");
    assert_eq!(delivery.skipped, 4);
    assert!(!delivery.unhandled);
    assert_eq!(delivery.event_type, "log_stream:ss,s,sdu,f");
    let ids: Vec<&str> = delivery.changes.iter().map(UserChange::user_id).collect();
    assert_eq!(
        ids,
        ["auth0|6182002f34f4dd006b05b5c7", "auth0|618223a4e3f49e006948565c", "auth0|618223a4e3f49e006948565c"]
    );
    // JSON lines are read record by record the same way.
    let lines = format!("{}\n{{\"log_id\": \"2\", \"data\": {{\"type\": \"s\"}}}}\n", signups[0]);
    let delivery = parse(lines.as_bytes(), received()).expect("a log batch");
    assert_eq!((delivery.changes.len(), delivery.skipped), (1, 1));
}

// ---- Malformed bodies ------------------------------------------------------------

#[test]
fn malformed_bodies() {
    for body in [&b""[..], b"   \n ", b"not json", b"{", b"{\"type\": \"user.created\",}", b"[1, 2"] {
        assert!(matches!(parse(body, received()), Err(ParseError::NotJson(_))), "{:?}", String::from_utf8_lossy(body));
    }
    // A JSON line that breaks halfway fails the whole batch.
    let mut lines = fixture_bytes("log-stream.jsonlines.ss-s-sv.jsonl");
    lines.extend_from_slice(b"{\"log_id\": \"4\", \"data\": ");
    assert!(matches!(parse(&lines, received()), Err(ParseError::NotJson(_))));
    // JSON, but none of the shapes.
    for body in [json!({}), json!({"foo": 1}), json!("user.created"), json!(42), json!(null)] {
        assert_eq!(parse_json(&body), Err(ParseError::Field("type")), "{body}");
    }
    // Several values that are not log records.
    assert_eq!(parse(b"1 2", received()), Err(ParseError::Field("data")));
    assert_eq!(
        parse(b"{\"type\":\"user.created\"}\n{\"type\":\"user.created\"}", received()),
        Err(ParseError::Field("data"))
    );
}

// ---- user_from_profile -------------------------------------------------------------

#[test]
fn user_from_profile_agrees_with_webhook_parse() {
    for name in [
        "event-stream.user.created.docs-test-delivery.json",
        "event-stream.user.created.catalog-example.json",
        "event-stream.user.updated.catalog-example.json",
    ] {
        let event = fixture_json(name);
        let record = user_from_profile(&event["data"]["object"]).expect("maps");
        assert_eq!(parse_fixture(name).changes, vec![UserChange::Upsert(record)], "{name}");
    }
}

#[test]
fn user_from_profile_columns_and_raw() {
    let profile = json!({
        "user_id": "auth0|1",
        "email": null,
        "given_name": "Ada",
        "family_name": null,
        "username": "ada",
        "picture": "https://example.com/a.png",
        "created_at": "2024-05-28T08:00:00Z",
        "updated_at": 1_716_883_500_000_i64,
        "last_login": "2024-05-28 08:03:20+00",
        "name": "not mapped",
        "nickname": "not mapped",
        "app_metadata": {"plan": "pro", "seats": [1, 2.5, null]},
        "huge": u64::MAX
    });
    let record = user_from_profile(&profile).expect("maps");
    assert_eq!(
        record,
        UserRecord {
            id: "auth0|1".into(),
            email: None,
            first_name: s("Ada"),
            last_name: None,
            username: s("ada"),
            image_url: s("https://example.com/a.png"),
            created_at: Some(utc("2024-05-28T08:00:00Z")),
            updated_at: Some(utc("2024-05-28T08:05:00Z")),
            last_sign_in_at: Some(utc("2024-05-28T08:03:20Z")),
            raw: profile.clone().into(),
        }
    );
}

#[test]
fn user_from_profile_errors() {
    let base = json!({"user_id": "auth0|1"});
    assert_eq!(user_from_profile(&json!({})), Err(ParseError::Field("user_id")));
    assert_eq!(user_from_profile(&json!("auth0|1")), Err(ParseError::Field("user_id")));
    assert_eq!(user_from_profile(&json!({"user_id": null})), Err(ParseError::Field("user_id")));
    for (key, value) in [
        ("email", json!(1)),
        ("given_name", json!({})),
        ("family_name", json!(true)),
        ("username", json!([])),
        ("picture", json!(2)),
        ("created_at", json!("2024-05-28")),
        ("updated_at", json!(1.5)),
        ("last_login", json!("never")),
    ] {
        let mut profile = base.clone();
        profile[key] = value;
        assert_eq!(user_from_profile(&profile), Err(ParseError::Field(key)), "{key}");
    }
}

#[test]
fn an_event_stream_cloudevent_id_is_the_delivery_id_and_other_shapes_have_none() {
    let event = parse_fixture("event-stream.user.created.catalog-example.json");
    assert_eq!(event.delivery_id.as_deref(), Some("evt_vjFVP5pVdfvsfRKatshkVV"));
    let unhandled = parse_json(&json!({"specversion": "1.0", "type": "org.created", "id": "evt_1"})).unwrap();
    assert_eq!(unhandled.delivery_id.as_deref(), Some("evt_1"), "known before the type is looked at");
    let odd = parse_json(&json!({"specversion": "1.0", "type": "org.created", "id": "evt\n1"})).unwrap();
    assert_eq!(odd.delivery_id, None, "an id with control characters is not kept");
    let envelope = parse_json(&json!({"event": "user.deleted", "user": {"user_id": "auth0|1"}})).unwrap();
    assert_eq!(envelope.delivery_id, None);
    assert_eq!(parse_fixture("log-stream.jsonarray.ss-signup.json").delivery_id, None);
}
