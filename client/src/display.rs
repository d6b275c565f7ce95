//! Owns the renderings of API messages for people and scripts: short enum names (`clerk`,
//! `live`, `backfill-only`, `running`, …), RFC 3339 timestamps, readable text blocks and
//! tables, and JSON objects (`serde_json::Value` built by hand; prost types have no serde).
//!
//! JSON conventions: enums are short names, timestamps RFC 3339 strings or `null` when unset,
//! optional strings (`secret_key_hint`, `error`, …) `null` when empty, counters numbers.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::pb::{
    BackfillJob, BackfillState, Integration, IntegrationState, Provider, SyncMode, SyncStatus, WebhookStats,
};
use crate::provider::provider_name;

/// Short name of a provider value (`clerk`, `auth0`, `better_auth`; `unknown(7)`).
pub fn provider_str(v: i32) -> String {
    match Provider::try_from(v) {
        Ok(p) => provider_name(p).to_string(),
        Err(_) => format!("unknown({v})"),
    }
}

/// `active`, `backfilling`, `needs-attention`.
pub fn integration_state_str(v: i32) -> String {
    match IntegrationState::try_from(v) {
        Ok(IntegrationState::Unspecified) => "unspecified".into(),
        Ok(IntegrationState::Active) => "active".into(),
        Ok(IntegrationState::Backfilling) => "backfilling".into(),
        Ok(IntegrationState::NeedsAttention) => "needs-attention".into(),
        Err(_) => format!("unknown({v})"),
    }
}

/// `live`, `backfill-only`.
pub fn sync_mode_str(v: i32) -> String {
    match SyncMode::try_from(v) {
        Ok(SyncMode::Unspecified) => "unspecified".into(),
        Ok(SyncMode::Live) => "live".into(),
        Ok(SyncMode::BackfillOnly) => "backfill-only".into(),
        Err(_) => format!("unknown({v})"),
    }
}

/// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
pub fn backfill_state_str(v: i32) -> String {
    match BackfillState::try_from(v) {
        Ok(BackfillState::Unspecified) => "unspecified".into(),
        Ok(BackfillState::Queued) => "queued".into(),
        Ok(BackfillState::Running) => "running".into(),
        Ok(BackfillState::Succeeded) => "succeeded".into(),
        Ok(BackfillState::Failed) => "failed".into(),
        Ok(BackfillState::Cancelled) => "cancelled".into(),
        Err(_) => format!("unknown({v})"),
    }
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

fn ts_json(ts: Option<&prost_types::Timestamp>) -> Value {
    timestamp_rfc3339(ts).map_or(Value::Null, Value::String)
}

fn opt_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// Readable time for text output: seconds precision, `-` when unset.
fn ts_text(ts: Option<&prost_types::Timestamp>) -> String {
    timestamp_utc(ts).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_else(|| "-".to_string())
}

/// JSON of an integration.
pub fn integration_json(i: &Integration) -> Value {
    json!({
        "id": i.id,
        "project_id": i.project_id,
        "provider": provider_str(i.provider),
        "state": integration_state_str(i.state),
        "mode": sync_mode_str(i.mode),
        "has_credentials": i.has_credentials,
        "has_webhook_secret": i.has_webhook_secret,
        "secret_key_hint": opt_str(&i.secret_key_hint),
        "webhook_receiver": opt_str(&i.webhook_receiver),
        "database_target": opt_str(&i.database_target),
        "created_at": ts_json(i.created_at.as_ref()),
        "updated_at": ts_json(i.updated_at.as_ref()),
    })
}

/// JSON of a backfill job (`progress` is `users_fetched / users_expected`, `null` when the
/// expected count is unknown).
pub fn backfill_job_json(j: &BackfillJob) -> Value {
    json!({
        "id": j.id,
        "project_id": j.project_id,
        "provider": provider_str(j.provider),
        "state": backfill_state_str(j.state),
        "pages": j.pages,
        "users_expected": j.users_expected,
        "users_fetched": j.users_fetched,
        "users_written": j.users_written,
        "users_stale": j.users_stale,
        "deletions_reconciled": j.deletions_reconciled,
        "resumes": j.resumes,
        "progress": progress(j).map_or(Value::Null, |p| json!(p)),
        "created_at": ts_json(j.created_at.as_ref()),
        "started_at": ts_json(j.started_at.as_ref()),
        "updated_at": ts_json(j.updated_at.as_ref()),
        "finished_at": ts_json(j.finished_at.as_ref()),
        "error": opt_str(&j.error),
    })
}

/// JSON of webhook counters.
pub fn webhook_stats_json(w: &WebhookStats) -> Value {
    json!({
        "applied": w.applied,
        "ignored_stale": w.ignored_stale,
        "ignored_duplicate": w.ignored_duplicate,
        "ignored_unhandled": w.ignored_unhandled,
        "rejected": w.rejected,
        "malformed": w.malformed,
        "unavailable": w.unavailable,
        "last_event_at": ts_json(w.last_event_at.as_ref()),
        "last_error": opt_str(&w.last_error),
        "last_error_at": ts_json(w.last_error_at.as_ref()),
    })
}

/// JSON of a sync status (absent sub-messages are `null`).
pub fn sync_status_json(s: &SyncStatus) -> Value {
    json!({
        "integration": s.integration.as_ref().map_or(Value::Null, integration_json),
        "mode": sync_mode_str(s.mode),
        "verdict": s.verdict,
        "current_backfill": s.current_backfill.as_ref().map_or(Value::Null, backfill_job_json),
        "last_backfill": s.last_backfill.as_ref().map_or(Value::Null, backfill_job_json),
        "webhooks": s.webhooks.as_ref().map_or(Value::Null, webhook_stats_json),
        "users_total": s.users_total,
        "users_deleted": s.users_deleted,
        "database_error": opt_str(&s.database_error),
    })
}

/// JSON array of integrations.
pub fn integrations_json(list: &[Integration]) -> Value {
    Value::Array(list.iter().map(integration_json).collect())
}

/// Fraction of expected users fetched (0.0–1.0), when the expected count is known.
pub fn progress(j: &BackfillJob) -> Option<f64> {
    (j.users_expected > 0).then(|| (j.users_fetched as f64 / j.users_expected as f64).min(1.0))
}

/// One line: `running: 3 pages, 250/1000 users fetched (25%), 240 written, 10 stale`.
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
        ", {} written, {} stale, {} deletions reconciled",
        j.users_written, j.users_stale, j.deletions_reconciled
    );
    if j.resumes > 0 {
        let _ = write!(out, ", resumed {}x", j.resumes);
    }
    out
}

/// Aligned `label  value` lines.
struct Block {
    rows: Vec<(String, String)>,
}

impl Block {
    fn new() -> Self {
        Block { rows: Vec::new() }
    }
    fn row(&mut self, label: &str, value: impl Into<String>) {
        self.rows.push((label.to_string(), value.into()));
    }
    fn render(&self) -> String {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.rows {
            let _ = writeln!(out, "{label:<width$}  {value}");
        }
        out
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A readable multi-line block describing an integration.
pub fn integration_text(i: &Integration) -> String {
    let mut b = Block::new();
    b.row("Project", i.project_id.clone());
    b.row("Provider", provider_str(i.provider));
    b.row("Integration", i.id.clone());
    b.row("State", integration_state_str(i.state));
    b.row("Mode", sync_mode_str(i.mode));
    b.row("Credentials", yes_no(i.has_credentials));
    if !i.secret_key_hint.is_empty() {
        b.row("Secret key", i.secret_key_hint.clone());
    }
    b.row("Webhook secret", yes_no(i.has_webhook_secret));
    if !i.database_target.is_empty() {
        b.row("Database", i.database_target.clone());
    }
    if !i.webhook_receiver.is_empty() {
        b.row("Webhook URL", i.webhook_receiver.clone());
    }
    b.row("Created", ts_text(i.created_at.as_ref()));
    b.row("Updated", ts_text(i.updated_at.as_ref()));
    b.render()
}

/// A readable multi-line block describing a backfill job.
pub fn backfill_job_text(j: &BackfillJob) -> String {
    let mut b = Block::new();
    b.row("Backfill", j.id.clone());
    b.row("Project", j.project_id.clone());
    if j.provider != 0 {
        b.row("Provider", provider_str(j.provider));
    }
    b.row("State", backfill_state_str(j.state));
    b.row("Pages", j.pages.to_string());
    let fetched = match progress(j) {
        Some(p) => format!("{} of {} ({:.0}%)", j.users_fetched, j.users_expected, p * 100.0),
        None => j.users_fetched.to_string(),
    };
    b.row("Users fetched", fetched);
    b.row("Users written", j.users_written.to_string());
    b.row("Users stale", j.users_stale.to_string());
    b.row("Deletions", format!("{} reconciled", j.deletions_reconciled));
    if j.resumes > 0 {
        b.row("Resumes", j.resumes.to_string());
    }
    b.row("Started", ts_text(j.started_at.as_ref()));
    b.row("Finished", ts_text(j.finished_at.as_ref()));
    if !j.error.is_empty() {
        b.row("Error", j.error.clone());
    }
    b.render()
}

/// The readable status block of `status PROJECT`.
pub fn sync_status_text(s: &SyncStatus) -> String {
    let mut b = Block::new();
    if let Some(i) = &s.integration {
        b.row("Project", i.project_id.clone());
        b.row("Provider", provider_str(i.provider));
        b.row("State", integration_state_str(i.state));
    }
    b.row("Mode", sync_mode_str(s.mode));
    b.row("Verdict", s.verdict.clone());
    if let Some(i) = &s.integration {
        if !i.database_target.is_empty() {
            b.row("Database", i.database_target.clone());
        }
        if !i.secret_key_hint.is_empty() {
            b.row("Secret key", i.secret_key_hint.clone());
        }
        b.row("Webhook secret", yes_no(i.has_webhook_secret));
        if !i.webhook_receiver.is_empty() {
            b.row("Webhook URL", i.webhook_receiver.clone());
        }
    }
    if s.database_error.is_empty() {
        b.row("Users", format!("{} rows, {} deleted", s.users_total, s.users_deleted));
    } else {
        b.row("Users", format!("unknown ({})", s.database_error));
    }
    match &s.webhooks {
        Some(w) => {
            b.row(
                "Webhooks",
                format!(
                    "{} applied; ignored {} stale, {} duplicate, {} unhandled",
                    w.applied, w.ignored_stale, w.ignored_duplicate, w.ignored_unhandled
                ),
            );
            b.row("", format!("{} rejected, {} malformed, {} unavailable", w.rejected, w.malformed, w.unavailable));
            b.row("Last event", ts_text(w.last_event_at.as_ref()));
            if !w.last_error.is_empty() {
                let at = timestamp_utc(w.last_error_at.as_ref())
                    .map(|t| format!(" (at {})", t.to_rfc3339_opts(SecondsFormat::Secs, true)))
                    .unwrap_or_default();
                b.row("Last error", format!("{}{at}", w.last_error));
            }
        }
        None => b.row("Webhooks", "-"),
    }
    match &s.current_backfill {
        Some(j) => b.row("Backfill", backfill_job_line(j)),
        None => b.row("Backfill", "none running"),
    }
    if let Some(j) = &s.current_backfill {
        b.row("", format!("started {}", ts_text(j.started_at.as_ref())));
    }
    if let Some(j) = &s.last_backfill {
        b.row("Last backfill", backfill_job_line(j));
        b.row("", format!("started {}, finished {}", ts_text(j.started_at.as_ref()), ts_text(j.finished_at.as_ref())));
        if !j.error.is_empty() {
            b.row("", format!("error: {}", j.error));
        }
    }
    b.render()
}

/// A table of integrations, one per line, with a header row.
pub fn integrations_table(list: &[Integration]) -> String {
    let header = ["PROJECT", "PROVIDER", "STATE", "MODE", "SECRET KEY", "WEBHOOK", "DATABASE", "UPDATED"];
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|i| {
            [
                i.project_id.clone(),
                provider_str(i.provider),
                integration_state_str(i.state),
                sync_mode_str(i.mode),
                if i.secret_key_hint.is_empty() { "-".to_string() } else { i.secret_key_hint.clone() },
                if i.has_webhook_secret { "yes" } else { "no" }.to_string(),
                if i.database_target.is_empty() { "-".to_string() } else { i.database_target.clone() },
                ts_text(i.updated_at.as_ref()),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (idx, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if idx + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
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
            has_webhook_secret: false,
            secret_key_hint: "sk_live_…a1b2".into(),
            webhook_receiver: "https://capydb.dev/api/capydb/v1/integrations/clerk/webhook/p1".into(),
            created_at: ts(1_717_000_000, 0),
            updated_at: ts(1_717_000_060, 500_000_000),
            database_target: "db.internal:5432/app".into(),
            mode: SyncMode::BackfillOnly as i32,
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
            finished_at: None,
            error: String::new(),
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
        assert_eq!(v["progress"], 0.25);
        assert!(v["finished_at"].is_null());
        assert!(v["error"].is_null());
        assert_eq!(
            backfill_job_line(&j),
            "running: 3 pages, 250/1000 users fetched (25%), 240 written, 10 stale, 2 deletions reconciled, resumed 1x"
        );
        let mut unknown = job(BackfillState::Failed);
        unknown.users_expected = 0;
        unknown.error = "Clerk rejected the secret key (401)".into();
        assert!(backfill_job_json(&unknown)["progress"].is_null());
        assert!(backfill_job_line(&unknown).starts_with("failed: 3 pages, 250 users fetched, "));
        assert!(backfill_job_text(&unknown).contains("Error          Clerk rejected"));
    }

    #[test]
    fn sync_status_renderings() {
        let s = SyncStatus {
            integration: Some(integration()),
            mode: SyncMode::BackfillOnly as i32,
            verdict: "Backfill-only: add a webhook secret to follow changes.".into(),
            current_backfill: Some(job(BackfillState::Running)),
            last_backfill: None,
            webhooks: Some(WebhookStats {
                applied: 7,
                ignored_stale: 1,
                ignored_duplicate: 2,
                ignored_unhandled: 3,
                rejected: 4,
                malformed: 5,
                last_event_at: ts(1_717_000_000, 0),
                last_error: "bad signature".into(),
                last_error_at: None,
                unavailable: 6,
            }),
            users_total: 120,
            users_deleted: 3,
            database_error: String::new(),
        };
        let v = sync_status_json(&s);
        assert_eq!(v["mode"], "backfill-only");
        assert_eq!(v["integration"]["provider"], "clerk");
        assert_eq!(v["current_backfill"]["state"], "running");
        assert!(v["last_backfill"].is_null());
        assert_eq!(v["webhooks"]["ignored_unhandled"], 3);
        assert_eq!(v["webhooks"]["last_event_at"], "2024-05-29T16:26:40Z");
        assert_eq!(v["users_total"], 120);
        assert!(v["database_error"].is_null());

        let text = sync_status_text(&s);
        for needle in [
            "Mode            backfill-only",
            "Verdict         Backfill-only: add a webhook secret",
            "Users           120 rows, 3 deleted",
            "7 applied; ignored 1 stale, 2 duplicate, 3 unhandled",
            "4 rejected, 5 malformed, 6 unavailable",
            "Backfill        running: 3 pages, 250/1000 users fetched (25%)",
            "Last error      bad signature",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn table_has_header_and_rows() {
        let mut second = integration();
        second.project_id = "another-project".into();
        second.provider = Provider::Auth0 as i32;
        second.secret_key_hint.clear();
        let table = integrations_table(&[integration(), second]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("PROJECT          PROVIDER"));
        assert!(lines[1].starts_with("p1               clerk"));
        assert!(lines[2].starts_with("another-project  auth0"));
        assert!(lines[2].contains(" - "));
        assert_eq!(integrations_table(&[]).lines().count(), 1);
    }
}
