//! Svix webhook signature verification (Clerk deliveries, SPEC §4): checks the `svix-*` or
//! Standard Webhooks `webhook-*` headers against the raw body bytes and returns the message id.
//!
//! Signed content is `{id}.{timestamp}.{raw body}`; the key is the base64 secret after
//! `whsec_`; the signature header lists `version,base64` entries of which any matching `v1`
//! (HMAC-SHA256, constant-time compare) authenticates the delivery. The timestamp is checked
//! against the injected clock before any HMAC is computed.
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::VerifyError;

/// How far the signed timestamp may be from the receiver's clock, either way, in seconds.
pub const TOLERANCE_SECS: u64 = 300;

/// The prefix of Svix signing secrets; what follows is the base64 key.
pub const SECRET_PREFIX: &str = "whsec_";

/// The only signature version verified here; others (`v1a` = ed25519, …) are ignored.
const SIGNATURE_VERSION: &[u8] = b"v1";

/// One family of header names; a delivery is read with one family only.
struct HeaderNames {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const SVIX_HEADERS: HeaderNames =
    HeaderNames { id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature" };

const STANDARD_WEBHOOKS_HEADERS: HeaderNames =
    HeaderNames { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" };

/// Standard alphabet; padding optional (the decoded bytes must still match exactly).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Verifies a Svix-signed delivery and returns its message id (`svix-id` / `webhook-id`).
///
/// `svix-*` headers are used when `svix-id` is present, otherwise the `webhook-*` names.
/// Errors: [`VerifyError::BadSecret`] when the secret is not base64 (after an optional
/// `whsec_`); [`VerifyError::MissingHeader`] naming the first absent (or empty id) header;
/// [`VerifyError::BadTimestamp`] when the timestamp is not integer seconds;
/// [`VerifyError::TimestampOutOfTolerance`] when it is more than 300 s from `now`;
/// [`VerifyError::NoMatchingSignature`] when no `v1` entry matches.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<String, VerifyError> {
    let key = decode_secret(secret)?;

    let names = if headers.contains_key(SVIX_HEADERS.id) {
        &SVIX_HEADERS
    } else if headers.contains_key(STANDARD_WEBHOOKS_HEADERS.id) {
        &STANDARD_WEBHOOKS_HEADERS
    } else {
        return Err(VerifyError::MissingHeader(SVIX_HEADERS.id));
    };
    let msg_id = match headers.get(names.id).map(|v| v.to_str()) {
        Some(Ok(id)) if !id.is_empty() => id,
        _ => return Err(VerifyError::MissingHeader(names.id)),
    };
    let timestamp = headers
        .get(names.timestamp)
        .ok_or(VerifyError::MissingHeader(names.timestamp))?
        .to_str()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let signatures = headers.get(names.signature).ok_or(VerifyError::MissingHeader(names.signature))?.as_bytes();

    check_timestamp(timestamp, now)?;

    let expected = hmac_sha256(&key, msg_id, timestamp, body)?;
    if any_v1_matches(signatures, &expected) {
        Ok(msg_id.to_owned())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// The HMAC key: the base64 after an optional `whsec_` prefix; empty keys are unusable.
fn decode_secret(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let secret = secret.trim();
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    match BASE64.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(VerifyError::BadSecret),
    }
}

/// Integer seconds since the epoch, at most [`TOLERANCE_SECS`] from `now` either way.
fn check_timestamp(timestamp: &str, now: DateTime<Utc>) -> Result<(), VerifyError> {
    let seconds: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if now.timestamp().abs_diff(seconds) > TOLERANCE_SECS {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    Ok(())
}

/// HMAC-SHA256 over `{id}.{timestamp}.{body}`, fed piecewise so the body is never copied.
fn hmac_sha256(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| VerifyError::BadSecret)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Whether any space-separated `v1,<base64>` entry equals `expected` (constant-time compare).
/// Other versions, entries without a comma and undecodable signatures simply do not match.
fn any_v1_matches(header: &[u8], expected: &[u8]) -> bool {
    header
        .split(|b| b.is_ascii_whitespace())
        .filter_map(|entry| {
            let comma = entry.iter().position(|&b| b == b',')?;
            let (version, signature) = (&entry[..comma], &entry[comma + 1..]);
            (version == SIGNATURE_VERSION).then_some(signature)
        })
        .filter_map(|signature| BASE64.decode(signature).ok())
        .any(|candidate| bool::from(candidate.as_slice().ct_eq(expected)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::test_fixtures::str_field;
    use http::HeaderValue;
    use serde_json::Value;

    fn vectors() -> Value {
        let path = crate::providers::test_fixtures::dir().join("clerk/svix_test_vectors.json");
        let text = std::fs::read_to_string(&path).expect("read svix_test_vectors.json");
        serde_json::from_str(&text).expect("parse svix_test_vectors.json")
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("test time")
    }

    /// A vector's payload: `payload`, or `payload_repeat` expanded.
    fn payload(v: &Value) -> Vec<u8> {
        if let Some(p) = v["payload"].as_str() {
            return p.as_bytes().to_vec();
        }
        let repeat = &v["payload_repeat"];
        let count = repeat["count"].as_u64().expect("count") as usize;
        str_field(repeat, "char").repeat(count).into_bytes()
    }

    fn svix_headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        family_headers("svix", id, timestamp, signature)
    }

    fn family_headers(family: &str, id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (suffix, value) in [("id", id), ("timestamp", timestamp), ("signature", signature)] {
            let name = http::HeaderName::try_from(format!("{family}-{suffix}")).expect("name");
            headers.insert(name, HeaderValue::from_str(value).expect("header value"));
        }
        headers
    }

    /// Test-only signer, the mirror of `verify`.
    fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = decode_secret(secret).expect("secret");
        let mac = hmac_sha256(&key, msg_id, &timestamp.to_string(), body).expect("mac");
        format!("v1,{}", BASE64.encode(mac))
    }

    const RUST_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const RUST_MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const RUST_PAYLOAD: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    /// The `derived_not_from_source` vector: (secret, id, timestamp, body, signature).
    fn derived() -> (String, String, String, String, Value) {
        let all = vectors();
        let d = all["derived_not_from_source"].clone();
        (
            str_field(&d, "secret").to_owned(),
            str_field(&d, "svix-id").to_owned(),
            str_field(&d, "svix-timestamp").to_owned(),
            str_field(&d, "body").to_owned(),
            d,
        )
    }

    #[test]
    fn verbatim_vectors_verify_at_their_timestamp() {
        let all = vectors();
        let verbatim = all["verbatim"].as_array().expect("verbatim");
        assert_eq!(verbatim.len(), 5);
        for v in verbatim {
            let name = str_field(v, "name");
            let ts = v["timestamp"].as_i64().expect("timestamp");
            let secret = str_field(v, "secret");
            let msg_id = str_field(v, "msg_id");
            let body = payload(v);
            let expected = str_field(v, "expected_signature");
            // Our signer agrees with the published signature...
            assert_eq!(sign(secret, msg_id, ts, &body), expected, "{name}");
            // ...and verify accepts it with the clock at the vector's timestamp.
            let headers = svix_headers(msg_id, &ts.to_string(), expected);
            assert_eq!(verify(secret, &headers, &body, at(ts)), Ok(msg_id.to_owned()), "{name}");
            // One flipped body byte fails.
            let mut tampered = body.clone();
            tampered[0] ^= 1;
            assert_eq!(verify(secret, &headers, &tampered, at(ts)), Err(VerifyError::NoMatchingSignature), "{name}");
        }
    }

    #[test]
    fn payload_repeat_vectors_have_expected_sizes() {
        let all = vectors();
        let sizes: Vec<usize> = all["verbatim"]
            .as_array()
            .expect("verbatim")
            .iter()
            .filter(|v| v.get("payload_repeat").is_some())
            .map(|v| payload(v).len())
            .collect();
        assert_eq!(sizes, vec![1_048_576, 262_144, 262_143]);
    }

    #[test]
    fn verbatim_negative_vectors_reject() {
        let all = vectors();
        let negatives = all["verbatim_negative"].as_array().expect("verbatim_negative");
        assert_eq!(negatives.len(), 4);
        for v in negatives {
            assert_eq!(str_field(v, "expect"), "reject");
            // Vectors without secret/payload are meant for the svix-rust test values; those
            // without a timestamp were signed "now" in the original tests.
            let secret = v["secret"].as_str().unwrap_or(RUST_SECRET);
            let msg_id = v["msg_id"].as_str().unwrap_or(RUST_MSG_ID);
            let body = v["payload"].as_str().map_or(RUST_PAYLOAD.to_vec(), |p| p.as_bytes().to_vec());
            let ts = v["timestamp"].as_i64().unwrap_or(1_700_000_000);
            let now = at(ts);
            let bad = str_field(v, "bad_signature_header");
            let headers = svix_headers(msg_id, &ts.to_string(), bad);
            assert_eq!(
                verify(secret, &headers, &body, now),
                Err(VerifyError::NoMatchingSignature),
                "{}",
                str_field(v, "source")
            );
            // The same delivery with the right signature passes: the rejection is the
            // signature's doing, not the setup's.
            let good = sign(secret, msg_id, ts, &body);
            let headers = svix_headers(msg_id, &ts.to_string(), &good);
            assert_eq!(verify(secret, &headers, &body, now), Ok(msg_id.to_owned()));
        }
    }

    #[test]
    fn derived_vector_and_rotation_header_verify() {
        let (secret, id, ts, body, d) = derived();
        let now = at(ts.parse().expect("ts"));
        for key in ["svix-signature", "svix-signature_rotation"] {
            let headers = svix_headers(&id, &ts, str_field(&d, key));
            assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Ok(id.clone()), "{key}");
        }
        // Signer agrees with the derived signature too.
        assert_eq!(sign(&secret, &id, now.timestamp(), body.as_bytes()), str_field(&d, "svix-signature"));
    }

    #[test]
    fn derived_vector_tampered_body_rejects() {
        let (secret, id, ts, _body, d) = derived();
        let now = at(ts.parse().expect("ts"));
        let tampered = str_field(&d, "tampered_body_expect_reject");
        for key in ["svix-signature", "svix-signature_rotation"] {
            let headers = svix_headers(&id, &ts, str_field(&d, key));
            assert_eq!(
                verify(&secret, &headers, tampered.as_bytes(), now),
                Err(VerifyError::NoMatchingSignature),
                "{key}"
            );
        }
    }

    #[test]
    fn standard_webhooks_header_family_verifies() {
        let (secret, id, ts, body, d) = derived();
        let now = at(ts.parse().expect("ts"));
        for key in ["svix-signature", "svix-signature_rotation"] {
            let headers = family_headers("webhook", &id, &ts, str_field(&d, key));
            assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Ok(id.clone()));
        }
        // The spec's format example parses (its secret is unpublished, so it cannot match).
        let example = &vectors()["standard_webhooks_header_format_example"];
        let headers = family_headers(
            "webhook",
            str_field(example, "webhook-id"),
            str_field(example, "webhook-timestamp"),
            str_field(example, "webhook-signature"),
        );
        let now = at(str_field(example, "webhook-timestamp").parse().expect("ts"));
        assert_eq!(verify(&secret, &headers, b"{}", now), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn one_header_family_only() {
        let (secret, id, ts, body, d) = derived();
        let now = at(ts.parse().expect("ts"));
        let sig = str_field(&d, "svix-signature");
        // svix-id present: the svix family is used, webhook-* names do not fill gaps.
        let mut headers = family_headers("webhook", &id, &ts, sig);
        headers.insert("svix-id", HeaderValue::from_str(&id).expect("id"));
        assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Err(VerifyError::MissingHeader("svix-timestamp")));
        // Both complete families present: svix-* wins (here with a wrong webhook signature).
        let mut headers = svix_headers(&id, &ts, sig);
        for (name, value) in family_headers("webhook", &id, &ts, "v1,AAAA") {
            if let Some(name) = name {
                headers.insert(name, value);
            }
        }
        assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Ok(id.clone()));
    }

    #[test]
    fn v1a_only_signature_rejects() {
        let (secret, id, ts, body, d) = derived();
        let rotation_v1a = str_field(&d, "svix-signature_rotation")
            .split(' ')
            .find(|entry| entry.starts_with("v1a,"))
            .expect("v1a entry");
        let now = at(ts.parse().expect("ts"));
        let good = sign(&secret, &id, now.timestamp(), body.as_bytes());
        let b64 = good.strip_prefix("v1,").expect("v1 prefix");
        for header in [
            format!("v1a,{b64}"),
            format!("v2,{b64}"),
            format!("V1,{b64}"),
            format!("v1{b64}"),
            b64.to_owned(),
            // The ed25519 entry of the rotation header, alone.
            rotation_v1a.to_owned(),
            String::new(),
            "v1,".to_owned(),
            "v1,!!!not-base64!!!".to_owned(),
            format!("v1,{}", &b64[..b64.len() - 4]),
        ] {
            let headers = svix_headers(&id, &ts, &header);
            assert_eq!(
                verify(&secret, &headers, body.as_bytes(), now),
                Err(VerifyError::NoMatchingSignature),
                "{header:?}"
            );
        }
    }

    #[test]
    fn any_v1_entry_may_match() {
        let (secret, id, ts, body, _) = derived();
        let now = at(ts.parse().expect("ts"));
        let good = sign(&secret, &id, now.timestamp(), body.as_bytes());
        let b64 = good.strip_prefix("v1,").expect("v1 prefix");
        for header in [
            format!("v1, {good}"),
            format!("v1,!!! v1a,{b64} {good}"),
            format!("{good}   v1,AAAA"),
            format!("v2,xyz\t{good}"),
            // Unpadded base64 of the right bytes still matches.
            format!("v1,{}", b64.trim_end_matches('=')),
        ] {
            let headers = svix_headers(&id, &ts, &header);
            assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Ok(id.clone()), "{header:?}");
        }
    }

    #[test]
    fn missing_headers_reject() {
        let (secret, id, ts, body, d) = derived();
        let now = at(ts.parse().expect("ts"));
        let sig = str_field(&d, "svix-signature");
        for family in ["svix", "webhook"] {
            for missing in ["id", "timestamp", "signature"] {
                let mut headers = family_headers(family, &id, &ts, sig);
                headers.remove(format!("{family}-{missing}").as_str());
                let expected = if missing == "id" {
                    // Without an id neither family is identified; svix is the name reported.
                    VerifyError::MissingHeader("svix-id")
                } else if family == "svix" {
                    VerifyError::MissingHeader(if missing == "timestamp" { "svix-timestamp" } else { "svix-signature" })
                } else {
                    VerifyError::MissingHeader(if missing == "timestamp" {
                        "webhook-timestamp"
                    } else {
                        "webhook-signature"
                    })
                };
                assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Err(expected), "{family}-{missing}");
            }
        }
        assert_eq!(
            verify(&secret, &HeaderMap::new(), body.as_bytes(), now),
            Err(VerifyError::MissingHeader("svix-id"))
        );
        // An empty id is as good as none: it could not identify the message.
        let headers = svix_headers("", &ts, sig);
        assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Err(VerifyError::MissingHeader("svix-id")));
    }

    #[test]
    fn timestamp_tolerance_is_300_seconds_either_way() {
        let (secret, id, ts, body, d) = derived();
        let ts: i64 = ts.parse().expect("ts");
        let headers = svix_headers(&id, &ts.to_string(), str_field(&d, "svix-signature"));
        let check = |now: i64| verify(&secret, &headers, body.as_bytes(), at(now));
        // Timestamp 301 s in the past / in the future of the receiver's clock.
        assert_eq!(check(ts + 301), Err(VerifyError::TimestampOutOfTolerance));
        assert_eq!(check(ts - 301), Err(VerifyError::TimestampOutOfTolerance));
        for offset in [-300, -299, 0, 299, 300] {
            assert_eq!(check(ts + offset), Ok(id.clone()), "offset {offset}");
        }
        // Sub-second clock parts do not widen the window.
        let late = at(ts + 300) + chrono::Duration::milliseconds(999);
        assert_eq!(verify(&secret, &headers, body.as_bytes(), late), Ok(id.clone()));
        assert_eq!(verify(&secret, &headers, body.as_bytes(), at(ts + 301)), Err(VerifyError::TimestampOutOfTolerance));
    }

    #[test]
    fn fresh_signatures_against_the_real_clock() {
        let now = Utc::now();
        let body = br#"{"type":"user.created","data":{"id":"user_1"}}"#;
        for offset in [-299, 0, 299] {
            let ts = now.timestamp() + offset;
            let sig = sign(RUST_SECRET, "msg_fresh", ts, body);
            let headers = svix_headers("msg_fresh", &ts.to_string(), &sig);
            assert_eq!(verify(RUST_SECRET, &headers, body, now), Ok("msg_fresh".to_owned()));
        }
        for offset in [-301, 301] {
            let ts = now.timestamp() + offset;
            let sig = sign(RUST_SECRET, "msg_fresh", ts, body);
            let headers = svix_headers("msg_fresh", &ts.to_string(), &sig);
            assert_eq!(verify(RUST_SECRET, &headers, body, now), Err(VerifyError::TimestampOutOfTolerance));
        }
    }

    #[test]
    fn timestamp_is_checked_before_the_signature() {
        let (secret, id, ts, body, _) = derived();
        let ts: i64 = ts.parse().expect("ts");
        let headers = svix_headers(&id, &ts.to_string(), "v1,AAAA");
        assert_eq!(
            verify(&secret, &headers, body.as_bytes(), at(ts + 3600)),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn non_numeric_timestamps_reject() {
        let (secret, id, ts, body, d) = derived();
        let now = at(ts.parse().expect("ts"));
        let sig = str_field(&d, "svix-signature");
        for bad in
            ["", "abc", "1654012592.0", "1654012592s", "0x6297a0f0", "1654012592000000000000", "2022-05-31T15:56:32Z"]
        {
            let headers = svix_headers(&id, bad, sig);
            assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Err(VerifyError::BadTimestamp), "{bad:?}");
        }
        // A timestamp header that differs from the signed one fails the signature.
        let headers = svix_headers(&id, &(now.timestamp() + 1).to_string(), sig);
        assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn wrong_secret_or_id_rejects() {
        let (secret, id, ts, body, d) = derived();
        let now = at(ts.parse().expect("ts"));
        let headers = svix_headers(&id, &ts, str_field(&d, "svix-signature"));
        // A different, well-formed secret.
        assert_eq!(verify(RUST_SECRET, &headers, body.as_bytes(), now), Err(VerifyError::NoMatchingSignature));
        // Same signature, different message id.
        let headers = svix_headers("msg_other", &ts, str_field(&d, "svix-signature"));
        assert_eq!(verify(&secret, &headers, body.as_bytes(), now), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn secret_forms() {
        let (secret, id, ts, body, d) = derived();
        let now = at(ts.parse().expect("ts"));
        let headers = svix_headers(&id, &ts, str_field(&d, "svix-signature"));
        let bare = secret.strip_prefix("whsec_").expect("prefix");
        // Without the prefix, or with surrounding whitespace, the key is the same.
        for ok in [bare.to_owned(), format!(" {secret}\n")] {
            assert_eq!(verify(&ok, &headers, body.as_bytes(), now), Ok(id.clone()));
        }
        for bad in ["", "whsec_", "whsec_not base64!", "whsec_%%%%", "whsec_A"] {
            assert_eq!(verify(bad, &headers, body.as_bytes(), now), Err(VerifyError::BadSecret), "{bad:?}");
        }
    }
}
