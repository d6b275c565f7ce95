//! Protobuf ↔ domain conversions. No logic beyond naming; secrets never pass through here
//! (rows hold ciphertexts, and only hints and flags are mapped).
use chrono::{DateTime, Utc};

use crate::integrations::StatusReport;
use crate::pb;
use crate::providers::ProviderKind;
use crate::store::{InboxBacklog, IntegrationRow, JobRow, JobState, WebhookCounts, WebhookStatsRow};
use crate::verdict::Health;

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// `PROVIDER_UNSPECIFIED` → None; numbers that name no provider → Err(the number).
pub fn provider_from_proto(value: i32) -> Result<Option<ProviderKind>, i32> {
    match pb::Provider::try_from(value) {
        Ok(pb::Provider::Unspecified) => Ok(None),
        // Every other value names a provider of the registry (checked by a providers test).
        Ok(named) => ProviderKind::from_proto(named).map(Some).ok_or(value),
        Err(_) => Err(value),
    }
}

pub fn provider_to_proto(provider: ProviderKind) -> pb::Provider {
    provider.proto()
}

pub fn job_state(s: JobState) -> pb::BackfillState {
    match s {
        JobState::Queued => pb::BackfillState::Queued,
        JobState::Running => pb::BackfillState::Running,
        JobState::Succeeded => pb::BackfillState::Succeeded,
        JobState::Failed => pb::BackfillState::Failed,
        JobState::Cancelled => pb::BackfillState::Cancelled,
    }
}

pub fn mode(row: &IntegrationRow) -> pb::SyncMode {
    let webhook_only = !row.provider.supports_backfill();
    if row.webhook_secret_enc.is_some() || webhook_only {
        pb::SyncMode::Live
    } else {
        pb::SyncMode::BackfillOnly
    }
}

/// The state shown for an integration, given its active and last finished jobs.
pub fn integration_state(active: Option<&JobRow>, last: Option<&JobRow>) -> pb::IntegrationState {
    if active.is_some() {
        pb::IntegrationState::Backfilling
    } else if last.map(|j| j.state == JobState::Failed).unwrap_or(false) {
        pb::IntegrationState::NeedsAttention
    } else {
        pb::IntegrationState::Active
    }
}

pub fn integration(row: &IntegrationRow, state: pb::IntegrationState, public_base_url: &str) -> pb::Integration {
    // A provider with an API to backfill from is credentialed by its secret key; a
    // webhook-only provider by its webhook secret.
    let has_credentials =
        if row.provider.supports_backfill() { row.secret_key_enc.is_some() } else { row.webhook_secret_enc.is_some() };
    let segment = row.provider.path_segment();
    pb::Integration {
        id: row.id.clone(),
        project_id: row.project_id.clone(),
        provider: provider_to_proto(row.provider) as i32,
        state: state as i32,
        has_credentials,
        has_webhook_secret: row.webhook_secret_enc.is_some(),
        secret_key_hint: row.secret_key_hint.clone().unwrap_or_default(),
        webhook_receiver: format!("{public_base_url}/api/capydb/v1/integrations/{segment}/webhook/{}", row.project_id),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
        database_target: row.database_target.clone(),
        mode: mode(row) as i32,
        previous_webhook_secret_until: row
            .previous_webhook_secret_until
            .filter(|until| *until > chrono::Utc::now() && row.previous_webhook_secret_enc.is_some())
            .map(timestamp),
    }
}

pub fn job(j: &JobRow) -> pb::BackfillJob {
    pb::BackfillJob {
        id: j.id.clone(),
        project_id: j.project_id.clone(),
        state: job_state(j.state) as i32,
        pages: j.pages,
        users_fetched: j.users_fetched,
        users_written: j.users_written,
        users_stale: j.users_stale,
        deletions_reconciled: j.deletions_reconciled,
        started_at: j.started_at.map(timestamp),
        finished_at: j.finished_at.map(timestamp),
        error: j.error.clone().unwrap_or_default(),
        // Job rows keep the stored name (store::jobs); a name this build does not know is shown
        // as unspecified.
        provider: ProviderKind::from_name(&j.provider).map_or(pb::Provider::Unspecified, provider_to_proto) as i32,
        users_expected: j.users_expected,
        created_at: Some(timestamp(j.created_at)),
        updated_at: Some(timestamp(j.updated_at)),
        resumes: j.resumes,
        users_skipped: j.users_skipped,
        reconcile_checks: j.reconcile_checks,
        reconcile_kept: j.reconcile_kept,
        errors: j.errors.clone(),
    }
}

pub fn duration(d: chrono::TimeDelta) -> prost_types::Duration {
    let d = d.max(chrono::TimeDelta::zero());
    prost_types::Duration { seconds: d.num_seconds(), nanos: d.subsec_nanos() }
}

pub fn counts_window(c: &WebhookCounts, window: chrono::TimeDelta) -> pb::WebhookWindow {
    pb::WebhookWindow {
        window: Some(duration(window)),
        applied: c.applied,
        ignored_stale: c.ignored_stale,
        ignored_duplicate: c.ignored_duplicate,
        ignored_unhandled: c.ignored_unhandled,
        rejected: c.rejected,
        malformed: c.malformed,
        unavailable: c.unavailable,
    }
}

pub fn webhooks(w: &WebhookStatsRow, last_hour: &WebhookCounts, inbox: &InboxBacklog) -> pb::WebhookStats {
    let t = &w.totals;
    pb::WebhookStats {
        applied: t.applied,
        ignored_stale: t.ignored_stale,
        ignored_duplicate: t.ignored_duplicate,
        ignored_unhandled: t.ignored_unhandled,
        rejected: t.rejected,
        malformed: t.malformed,
        last_event_at: w.last_event_at.map(timestamp),
        last_error: w.last_error.clone().unwrap_or_default(),
        last_error_at: w.last_error_at.map(timestamp),
        unavailable: t.unavailable,
        queued: inbox.count,
        oldest_queued_at: inbox.oldest.map(timestamp),
        last_hour: Some(counts_window(last_hour, chrono::TimeDelta::hours(1))),
    }
}

pub fn health(h: Health) -> pb::Health {
    match h {
        Health::Ok => pb::Health::Ok,
        Health::NeedsAttention => pb::Health::NeedsAttention,
        Health::Failing => pb::Health::Failing,
    }
}

pub fn status(r: &StatusReport, public_base_url: &str) -> pb::SyncStatus {
    let state = integration_state(r.current.as_ref(), r.last.as_ref());
    let mode = mode(&r.integration);
    let (level, verdict) = crate::verdict::verdict(r, mode == pb::SyncMode::Live);
    pb::SyncStatus {
        integration: Some(integration(&r.integration, state, public_base_url)),
        mode: mode as i32,
        verdict,
        current_backfill: r.current.as_ref().map(job),
        last_backfill: r.last.as_ref().map(job),
        webhooks: Some(webhooks(&r.webhooks, &r.last_hour, &r.inbox)),
        users_total: r.users_total,
        users_deleted: r.users_deleted,
        database_error: r.database_error.clone().unwrap_or_default(),
        lag: r.webhooks.last_event_at.map(|t| duration(r.generated_at - t)),
        recent_errors: r
            .recent_errors
            .iter()
            .map(|e| pb::RecentError { at: Some(timestamp(e.at)), kind: e.kind.clone(), message: e.message.clone() })
            .collect(),
        health: health(level) as i32,
        generated_at: Some(timestamp(r.generated_at)),
    }
}
