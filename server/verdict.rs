//! The verdict of GetSyncStatus: how an integration is doing in one word ([`Health`]) and one
//! sentence a person can act on — what is wrong, how much of it in the last hour, and what to
//! check. Protocol-free; `grpc::mapping` puts it into the `SyncStatus`.
//!
//! The checks run worst first and the first that holds speaks. Counts come from the window of
//! the last hour, so a verdict recovers by itself an hour after a problem went away, while a
//! single good delivery after a bad one clears "the last delivery failed" at once. Rejected
//! (unauthenticated) deliveries only ever count: their texts are never shown, since anyone can
//! post to a public URL. Every time is RFC 3339 UTC with seconds (`2024-05-29T16:26:40Z`).
use chrono::{DateTime, SecondsFormat, Utc};

use crate::integrations::StatusReport;
use crate::store::JobState;

/// How an integration is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Syncing as configured (live, backfilling, or backfill-only by choice).
    Ok,
    /// Changes still reach the table, but something needs a look.
    NeedsAttention,
    /// Changes are not reaching the table.
    Failing,
}

/// The one timestamp format of verdicts (and of the CLI's tables).
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn deliveries(n: i64) -> String {
    if n == 1 {
        "1 delivery".to_string()
    } else {
        format!("{n} deliveries")
    }
}

/// The verdict of a status report; `live` is the integration's mode (webhooks configured).
pub fn verdict(r: &StatusReport, live: bool) -> (Health, String) {
    let w = &r.webhooks;
    let hour = &r.last_hour;
    let now = r.generated_at;
    // The newest authenticated failure, when it is newer than the newest event.
    let failure_is_latest =
        w.last_error_at.filter(|failed| w.last_event_at.is_none_or(|event| *failed > event)).is_some();
    let grace = r
        .integration
        .previous_webhook_secret_until
        .filter(|until| *until > now && r.integration.previous_webhook_secret_enc.is_some())
        .map(|until| format!("; the previous webhook secret is still accepted until {}", time(until)))
        .unwrap_or_default();

    if let Some(e) = &r.database_error {
        return (
            Health::Failing,
            format!(
                "failing: the project database cannot be read ({e}) — check that it is up and that the \
                 integration's database_url is right{}",
                if live { "; deliveries wait in the inbox until it answers" } else { "" }
            ),
        );
    }
    if live && hour.rejected > 0 && hour.authenticated() == 0 {
        return (
            Health::Failing,
            format!(
                "failing: {} rejected for a bad signature in the last hour and none verified — check the \
                 signing secret: it must be the one the provider signs with (configure --webhook-secret){grace}",
                deliveries(hour.rejected)
            ),
        );
    }
    if live && hour.unavailable > 0 && failure_is_latest {
        return (
            Health::Failing,
            format!(
                "failing: {} could not be stored in the last hour, the last at {}: {} — the provider retries \
                 them; check the project database and the service's own database",
                deliveries(hour.unavailable),
                w.last_error_at.map(time).unwrap_or_default(),
                w.last_error.as_deref().unwrap_or("unknown error")
            ),
        );
    }
    if let Some(j) = &r.current {
        let of = if j.users_expected > 0 { format!(" of ~{}", j.users_expected) } else { String::new() };
        return (
            Health::Ok,
            format!("backfilling: {} users fetched{of}, {} written{grace}", j.users_fetched, j.users_written),
        );
    }
    if let Some(j) = r.last.as_ref().filter(|j| j.state == JobState::Failed) {
        let at = time(j.finished_at.unwrap_or(j.updated_at));
        let error = j.error.as_deref().unwrap_or("unknown error");
        return if live {
            (
                Health::NeedsAttention,
                format!(
                    "needs attention: the last backfill failed at {at}: {error} — webhooks still apply; fix the \
                     cause and run the backfill again"
                ),
            )
        } else {
            (
                Health::Failing,
                format!(
                    "failing: the last backfill failed at {at}: {error} — nothing else updates the table of a \
                     backfill-only integration; fix the cause and run the backfill again"
                ),
            )
        };
    }
    if r.inbox.count > 0 {
        let since = r.inbox.oldest.map(|t| format!(" since {}", time(t))).unwrap_or_default();
        return (
            Health::NeedsAttention,
            format!(
                "needs attention: {} wait in the inbox{since} because the project database could not take them; \
                 they apply by themselves once it answers — check the project database",
                deliveries(r.inbox.count)
            ),
        );
    }
    if !live {
        return (
            Health::Ok,
            "backfill-only: no webhook signing secret, so changes in Clerk reach the table only when a backfill \
             runs; add one (configure --webhook-secret, credentials.webhook_signing_secret) to go live"
                .to_string(),
        );
    }
    if failure_is_latest {
        let failed_in_hour = hour.malformed + hour.unavailable;
        let count =
            if failed_in_hour > 1 { format!(" ({} failed in the last hour)", failed_in_hour) } else { String::new() };
        return (
            Health::NeedsAttention,
            format!(
                "needs attention: the last webhook delivery failed at {}: {}{count} — check the provider's webhook \
                 settings (events and format){grace}",
                w.last_error_at.map(time).unwrap_or_default(),
                w.last_error.as_deref().unwrap_or("unknown error")
            ),
        );
    }
    if w.last_event_at.is_none() && w.totals.rejected > 0 {
        return (
            Health::NeedsAttention,
            format!(
                "needs attention: no delivery has verified yet and {} were rejected for a bad signature — check \
                 the signing secret: it must be the one the provider signs with (configure --webhook-secret){grace}",
                deliveries(w.totals.rejected)
            ),
        );
    }
    let noise = if hour.rejected > 0 {
        format!(
            "; {} rejected for a bad signature in the last hour while signed ones keep arriving (not from the \
             provider, or a sender with an old secret)",
            deliveries(hour.rejected)
        )
    } else {
        String::new()
    };
    match w.last_event_at {
        Some(t) => (Health::Ok, format!("healthy: live, last event at {}{noise}{grace}", time(t))),
        None => (Health::Ok, format!("healthy: live, waiting for the first webhook event{noise}{grace}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;
    use crate::store::{InboxBacklog, IntegrationRow, JobRow, WebhookCounts, WebhookStatsRow};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn report() -> StatusReport {
        StatusReport {
            generated_at: at("2024-05-29T16:30:00Z"),
            integration: IntegrationRow {
                id: "int_1".into(),
                project_id: "p1".into(),
                provider: ProviderKind::Clerk,
                database_url_enc: String::new(),
                secret_key_enc: None,
                webhook_secret_enc: Some("sealed".into()),
                secret_key_hint: None,
                database_target: "db:5432/app".into(),
                created_at: at("2024-05-01T00:00:00Z"),
                updated_at: at("2024-05-01T00:00:00Z"),
                previous_webhook_secret_enc: None,
                previous_webhook_secret_until: None,
                version: 1,
            },
            current: None,
            last: None,
            webhooks: WebhookStatsRow::default(),
            last_hour: WebhookCounts::default(),
            recent_errors: Vec::new(),
            inbox: InboxBacklog { integration_id: "int_1".into(), count: 0, oldest: None },
            users_total: 0,
            users_deleted: 0,
            database_error: None,
        }
    }

    #[test]
    fn rejected_deliveries_with_none_verified_fail_and_name_the_secret() {
        let mut r = report();
        r.webhooks.totals.rejected = 40;
        r.last_hour.rejected = 37;
        let (health, text) = verdict(&r, true);
        assert_eq!(health, Health::Failing);
        assert!(
            text.starts_with("failing: 37 deliveries rejected for a bad signature in the last hour and none verified")
                && text.contains("check the signing secret"),
            "{text}"
        );
        // A signed delivery that was not a valid event still proves the secret right.
        r.last_hour.malformed = 1;
        assert!(!verdict(&r, true).1.contains("none verified"));
        r.last_hour.malformed = 0;
        // Signed deliveries arriving too: noise, noted, not a failure.
        r.last_hour.applied = 5;
        r.webhooks.last_event_at = Some(at("2024-05-29T16:29:57Z"));
        let (health, text) = verdict(&r, true);
        assert_eq!(health, Health::Ok);
        assert!(
            text.starts_with("healthy: live, last event at 2024-05-29T16:29:57Z; 37 deliveries rejected"),
            "{text}"
        );
    }

    #[test]
    fn a_secret_in_its_grace_period_is_named_with_its_end() {
        let mut r = report();
        r.integration.previous_webhook_secret_enc = Some("sealed-old".into());
        r.integration.previous_webhook_secret_until = Some(at("2024-05-30T12:00:00Z"));
        let (_, text) = verdict(&r, true);
        assert_eq!(
            text,
            "healthy: live, waiting for the first webhook event; the previous webhook secret is still accepted \
             until 2024-05-30T12:00:00Z"
        );
        r.generated_at = at("2024-05-30T12:00:01Z");
        assert!(!verdict(&r, true).1.contains("previous"), "over once the grace period ends");
    }

    #[test]
    fn refused_deliveries_fail_until_one_applies_again() {
        let mut r = report();
        r.webhooks.last_event_at = Some(at("2024-05-29T16:00:00Z"));
        r.webhooks.last_error = Some("the project database refused a change; see the service log".into());
        r.webhooks.last_error_at = Some(at("2024-05-29T16:20:00Z"));
        r.last_hour.unavailable = 3;
        r.last_hour.applied = 10;
        let (health, text) = verdict(&r, true);
        assert_eq!(health, Health::Failing);
        assert!(text.starts_with("failing: 3 deliveries could not be stored in the last hour, the last at 2024-05-29T16:20:00Z: the project database refused"), "{text}");
        r.webhooks.last_event_at = Some(at("2024-05-29T16:25:00Z"));
        assert_eq!(verdict(&r, true).0, Health::Ok);
    }

    #[test]
    fn a_malformed_last_delivery_needs_attention_and_a_good_one_clears_it() {
        let mut r = report();
        r.webhooks.last_error = Some("not a valid event: missing or invalid field `type`".into());
        r.webhooks.last_error_at = Some(at("2024-05-29T16:10:00Z"));
        r.last_hour.malformed = 3;
        let (health, text) = verdict(&r, true);
        assert_eq!(health, Health::NeedsAttention);
        assert!(
            text.starts_with(
                "needs attention: the last webhook delivery failed at 2024-05-29T16:10:00Z: not a valid event"
            ),
            "{text}"
        );
        assert!(text.contains("(3 failed in the last hour)"), "{text}");
        r.webhooks.last_event_at = Some(at("2024-05-29T16:11:00Z"));
        assert_eq!(verdict(&r, true), (Health::Ok, "healthy: live, last event at 2024-05-29T16:11:00Z".into()));
    }

    #[test]
    fn backfills_and_the_inbox() {
        let mut r = report();
        r.inbox = InboxBacklog { integration_id: "int_1".into(), count: 4, oldest: Some(at("2024-05-29T16:25:00Z")) };
        let (health, text) = verdict(&r, true);
        assert_eq!(health, Health::NeedsAttention);
        assert!(
            text.starts_with("needs attention: 4 deliveries wait in the inbox since 2024-05-29T16:25:00Z"),
            "{text}"
        );
        let failed =
            JobRow { state: JobState::Failed, error: Some("Clerk rejected the secret key (401)".into()), ..job() };
        r.last = Some(failed);
        let (health, text) = verdict(&r, false);
        assert_eq!(health, Health::Failing, "backfill-only: nothing else fills the table");
        assert!(
            text.starts_with("failing: the last backfill failed at 2024-05-29T16:00:00Z: Clerk rejected"),
            "{text}"
        );
        assert_eq!(verdict(&r, true).0, Health::NeedsAttention, "live: webhooks still apply");
        r.current = Some(JobRow {
            state: JobState::Running,
            users_fetched: 250,
            users_written: 240,
            users_expected: 1000,
            ..job()
        });
        assert_eq!(verdict(&r, true), (Health::Ok, "backfilling: 250 users fetched of ~1000, 240 written".into()));
        r.database_error = Some("project database unreachable: connection refused".into());
        assert_eq!(verdict(&r, true).0, Health::Failing);
    }

    fn job() -> JobRow {
        JobRow {
            id: "bf_1".into(),
            integration_id: "int_1".into(),
            project_id: "p1".into(),
            provider: "clerk".into(),
            state: JobState::Succeeded,
            pages: 0,
            users_fetched: 0,
            users_written: 0,
            users_stale: 0,
            deletions_reconciled: 0,
            users_expected: 0,
            started_at: Some(at("2024-05-29T15:59:00Z")),
            finished_at: Some(at("2024-05-29T16:00:00Z")),
            error: None,
            checkpoint: None,
            pass_started_at: None,
            created_at: at("2024-05-29T15:59:00Z"),
            updated_at: at("2024-05-29T16:00:00Z"),
            resumes: 0,
            users_skipped: 0,
            reconcile_checks: 0,
            reconcile_kept: 0,
            errors: Vec::new(),
        }
    }
}
