//! Owns the renderings of API messages that are not tied to the CLI: short enum names
//! (`clerk`, `live`, `backfill-only`, `running`, …), RFC 3339 timestamps, backfill progress and
//! one-line summaries, and JSON values of the messages (serde, see [`crate::json`]). The CLI's
//! tables live in the binary (`src/cli/render.rs`).
//!
//! JSON conventions: enums are short names, timestamps RFC 3339 strings or `null` when unset,
//! optional strings (`secret_key_hint`, `error`, …) `null` when empty, counters numbers.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::json::enum_str;
use crate::pb::{
    BackfillJob, BackfillState, Integration, IntegrationState, Provider, SyncMode, SyncStatus, WebhookStats,
};

/// Short name of a provider value (`clerk`, `auth0`, `better_auth`; `unknown(7)`).
pub fn provider_str(v: i32) -> String {
    enum_str::<Provider>(v)
}

/// `active`, `backfilling`, `needs-attention`.
pub fn integration_state_str(v: i32) -> String {
    enum_str::<IntegrationState>(v)
}

/// `live`, `backfill-only`.
pub fn sync_mode_str(v: i32) -> String {
    enum_str::<SyncMode>(v)
}

/// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
pub fn backfill_state_str(v: i32) -> String {
    enum_str::<BackfillState>(v)
}

/// True for `SUCCEEDED`, `FAILED`, `CANCELLED`.
pub fn is_terminal(state: i32) -> bool {
    matches!(
        BackfillState::try_from(state),
        Ok(BackfillState::Succeeded | BackfillState::Failed | BackfillState::Cancelled)
    )
}

/// RFC 3339 (UTC, `Z`, fractional seconds only when present). `None` when unset, when it is
/// the Unix epoch (a zero value), or out of range.
pub fn timestamp_rfc3339(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    timestamp_utc(ts).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The timestamp as a `chrono` time, with the same rules as [`timestamp_rfc3339`].
pub fn timestamp_utc(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    if ts.seconds == 0 && ts.nanos == 0 {
        return None;
    }
    DateTime::<Utc>::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

/// Readable time for text output: seconds precision, `-` when unset.
pub fn ts_text(ts: Option<&prost_types::Timestamp>) -> String {
    timestamp_utc(ts).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_else(|| "-".to_string())
}

/// JSON of an integration.
pub fn integration_json(i: &Integration) -> Value {
    to_json(i)
}

/// JSON of a backfill job.
pub fn backfill_job_json(j: &BackfillJob) -> Value {
    to_json(j)
}

/// JSON of webhook counters.
pub fn webhook_stats_json(w: &WebhookStats) -> Value {
    to_json(w)
}

/// JSON of a sync status (absent sub-messages are `null`).
pub fn sync_status_json(s: &SyncStatus) -> Value {
    to_json(s)
}

/// JSON array of integrations.
pub fn integrations_json(list: &[Integration]) -> Value {
    to_json(list)
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Value {
    serde_json::to_value(v).expect("the generated messages always serialize")
}

/// Fraction of expected users fetched (0.0–1.0), when the expected count is known.
pub fn progress(j: &BackfillJob) -> Option<f64> {
    (j.users_expected > 0).then(|| (j.users_fetched as f64 / j.users_expected as f64).min(1.0))
}

/// One line: `running: 3 pages, 250/1000 users fetched (25%), 240 written, 10 unchanged, 2 deletions reconciled`.
/// "Unchanged" is the proto's `users_stale`: users the table already held at the same or a
/// newer version.
pub fn backfill_job_line(j: &BackfillJob) -> String {
    let mut out = format!("{}: {} pages, ", backfill_state_str(j.state), j.pages);
    match progress(j) {
        Some(p) => {
            let _ = write!(out, "{}/{} users fetched ({:.0}%)", j.users_fetched, j.users_expected, p * 100.0);
        }
        None => {
            let _ = write!(out, "{} users fetched", j.users_fetched);
        }
    }
    let _ = write!(
        out,
        ", {} written, {} unchanged, {} deletions reconciled",
        j.users_written, j.users_stale, j.deletions_reconciled
    );
    if j.resumes > 0 {
        let _ = write!(out, ", resumed {}x", j.resumes);
    }
    out
}

/// `1 row`, `2 rows`.
pub fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn integration() -> Integration {
        Integration {
            id: "int_1".into(),
            project_id: "p1".into(),
            provider: Provider::Clerk as i32,
            state: IntegrationState::NeedsAttention as i32,
            has_credentials: true,
            secret_key_hint: "sk_live_…a1b2".into(),
            webhook_receiver: "https://capydb.dev/api/capydb/v1/integrations/clerk/webhook/p1".into(),
            created_at: ts(1_717_000_000, 0),
            updated_at: ts(1_717_000_060, 500_000_000),
            database_target: "db.internal:5432/app".into(),
            mode: SyncMode::BackfillOnly as i32,
            ..Default::default()
        }
    }

    fn job(state: BackfillState) -> BackfillJob {
        BackfillJob {
            id: "bf_1".into(),
            project_id: "p1".into(),
            state: state as i32,
            pages: 3,
            users_fetched: 250,
            users_written: 240,
            users_stale: 10,
            deletions_reconciled: 2,
            started_at: ts(1_717_000_000, 0),
            provider: Provider::Clerk as i32,
            users_expected: 1000,
            created_at: ts(1_716_999_999, 0),
            updated_at: ts(1_717_000_010, 0),
            resumes: 1,
            ..Default::default()
        }
    }

    #[test]
    fn enum_short_names() {
        assert_eq!(provider_str(Provider::BetterAuth as i32), "better_auth");
        assert_eq!(provider_str(42), "unknown(42)");
        assert_eq!(sync_mode_str(SyncMode::Live as i32), "live");
        assert_eq!(sync_mode_str(SyncMode::BackfillOnly as i32), "backfill-only");
        assert_eq!(integration_state_str(IntegrationState::Active as i32), "active");
        assert_eq!(integration_state_str(IntegrationState::NeedsAttention as i32), "needs-attention");
        for (s, name) in [
            (BackfillState::Queued, "queued"),
            (BackfillState::Running, "running"),
            (BackfillState::Succeeded, "succeeded"),
            (BackfillState::Failed, "failed"),
            (BackfillState::Cancelled, "cancelled"),
        ] {
            assert_eq!(backfill_state_str(s as i32), name);
        }
        assert!(is_terminal(BackfillState::Failed as i32));
        assert!(!is_terminal(BackfillState::Running as i32));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp_rfc3339(ts(1_717_000_000, 0).as_ref()).as_deref(), Some("2024-05-29T16:26:40Z"));
        assert_eq!(
            timestamp_rfc3339(ts(1_717_000_000, 123_000_000).as_ref()).as_deref(),
            Some("2024-05-29T16:26:40.123Z")
        );
        assert_eq!(timestamp_rfc3339(None), None);
        assert_eq!(timestamp_rfc3339(ts(0, 0).as_ref()), None);
        assert_eq!(timestamp_rfc3339(ts(1, -5).as_ref()), None);
    }

    #[test]
    fn integration_json_fields() {
        let v = integration_json(&integration());
        assert_eq!(v["provider"], "clerk");
        assert_eq!(v["state"], "needs-attention");
        assert_eq!(v["mode"], "backfill-only");
        assert_eq!(v["created_at"], "2024-05-29T16:26:40Z");
        assert_eq!(v["updated_at"], "2024-05-29T16:27:40.500Z");
        assert_eq!(v["secret_key_hint"], "sk_live_…a1b2");
        assert_eq!(v["has_webhook_secret"], false);
        let mut bare = integration();
        bare.secret_key_hint.clear();
        bare.created_at = None;
        let v = integration_json(&bare);
        assert!(v["secret_key_hint"].is_null());
        assert!(v["created_at"].is_null());
    }

    #[test]
    fn backfill_job_json_and_line() {
        let j = job(BackfillState::Running);
        let v = backfill_job_json(&j);
        assert_eq!(v["state"], "running");
        assert_eq!(v["users_expected"], 1000);
        assert_eq!(v["users_stale"], 10, "the pinned field name stays in JSON");
        assert!(v["finished_at"].is_null());
        assert!(v["error"].is_null());
        assert_eq!(progress(&j), Some(0.25));
        assert_eq!(
            backfill_job_line(&j),
            "running: 3 pages, 250/1000 users fetched (25%), 240 written, 10 unchanged, 2 deletions reconciled, resumed 1x"
        );
        let mut unknown = job(BackfillState::Failed);
        unknown.users_expected = 0;
        assert_eq!(progress(&unknown), None);
        assert!(backfill_job_line(&unknown).starts_with("failed: 3 pages, 250 users fetched, "));
        assert_eq!(plural(1, "row", "rows"), "1 row");
        assert_eq!(plural(0, "row", "rows"), "0 rows");
    }

    #[test]
    fn sync_status_json_nests_messages() {
        let s = SyncStatus {
            integration: Some(integration()),
            mode: SyncMode::BackfillOnly as i32,
            verdict: "Backfill-only: add a webhook secret to follow changes.".into(),
            current_backfill: Some(job(BackfillState::Running)),
            webhooks: Some(WebhookStats {
                ignored_unhandled: 3,
                last_event_at: ts(1_717_000_000, 0),
                ..Default::default()
            }),
            users_total: 120,
            ..Default::default()
        };
        let v = sync_status_json(&s);
        assert!(v["lag"].is_null() && v["recent_errors"] == serde_json::json!([]), "{v}");
        assert_eq!(v["health"], "unspecified");
        let live = SyncStatus {
            lag: Some(prost_types::Duration { seconds: 3, nanos: 500_000_000 }),
            health: crate::pb::Health::NeedsAttention as i32,
            recent_errors: vec![crate::pb::RecentError {
                at: ts(1_717_000_000, 0),
                kind: "malformed".into(),
                message: "not a valid event".into(),
            }],
            webhooks: Some(WebhookStats {
                last_hour: Some(crate::pb::WebhookWindow {
                    window: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
                    rejected: 37,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let l = sync_status_json(&live);
        assert_eq!(l["lag"], 3.5);
        assert_eq!(l["health"], "needs-attention");
        assert_eq!(
            l["recent_errors"],
            serde_json::json!([{"at": "2024-05-29T16:26:40Z", "kind": "malformed", "message": "not a valid event"}])
        );
        assert_eq!(l["webhooks"]["last_hour"]["window"], 3600.0);
        assert_eq!(l["webhooks"]["last_hour"]["rejected"], 37);
        assert_eq!(v["mode"], "backfill-only");
        assert_eq!(v["integration"]["provider"], "clerk");
        assert_eq!(v["current_backfill"]["state"], "running");
        assert!(v["last_backfill"].is_null());
        assert_eq!(v["webhooks"]["ignored_unhandled"], 3);
        assert_eq!(v["webhooks"]["last_event_at"], "2024-05-29T16:26:40Z");
        assert_eq!(v["users_total"], 120);
        assert!(v["database_error"].is_null());
        assert_eq!(integrations_json(&[integration()])[0]["project_id"], "p1");
    }
}
