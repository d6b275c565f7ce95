//! Owns the CLI's tables for people (comfy-table, at most 80 columns wide, long values wrap
//! inside their cell): an integration, a backfill job, the sync status (verdict, lag, counters,
//! backfills) and the list of integrations. One timestamp format throughout:
//! `2024-05-29T16:26:40Z`. "Unchanged" is what the proto calls `users_stale`.

use chrono::{DateTime, Utc};
use comfy_table::presets::{NOTHING, UTF8_FULL_CONDENSED};
use comfy_table::{ContentArrangement, Table};

use capydb_auth_sync_client::display::{
    backfill_job_line, backfill_state_str, integration_state_str, plural, progress, provider_str, sync_mode_str,
    timestamp_utc, ts_text,
};
use capydb_auth_sync_client::{BackfillJob, Integration, SyncStatus};

/// The widest a table gets.
const WIDTH: u16 = 80;

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_width(WIDTH);
    t
}

/// A two-column `label | value` table.
struct Rows(Table);

impl Rows {
    fn new() -> Self {
        Rows(table())
    }
    fn row(&mut self, label: &str, value: impl Into<String>) -> &mut Self {
        self.0.add_row(vec![label.to_string(), value.into()]);
        self
    }
    fn render(&self) -> String {
        self.0.to_string()
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `3 s ago`, `4 min ago`, `2 h ago`, `5 d ago` (rounded down).
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    ago_secs((now - t).num_seconds())
}

/// [`ago`] of an age in seconds.
pub fn ago_secs(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7_199 => format!("{} min ago", s / 60),
        7_200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// An integration (what `configure` prints).
pub fn integration(i: &Integration) -> String {
    let mut r = Rows::new();
    r.row("Project", i.project_id.clone())
        .row("Provider", provider_str(i.provider))
        .row("Integration", i.id.clone())
        .row("State", format!("{} · {}", integration_state_str(i.state), sync_mode_str(i.mode)))
        .row("Credentials", yes_no(i.has_credentials));
    if !i.secret_key_hint.is_empty() {
        r.row("Secret key", i.secret_key_hint.clone());
    }
    r.row("Webhook secret", yes_no(i.has_webhook_secret));
    if !i.database_target.is_empty() {
        r.row("Database", i.database_target.clone());
    }
    r.row("Created", ts_text(i.created_at.as_ref())).row("Updated", ts_text(i.updated_at.as_ref()));
    r.render()
}

/// A backfill job (what `backfill` and `watch` print at the end).
pub fn backfill_job(j: &BackfillJob) -> String {
    let mut r = Rows::new();
    r.row("Backfill", j.id.clone()).row("Project", j.project_id.clone());
    if j.provider != 0 {
        r.row("Provider", provider_str(j.provider));
    }
    r.row("State", backfill_state_str(j.state)).row("Pages", j.pages.to_string());
    let fetched = match progress(j) {
        Some(p) => format!("{} of {} ({:.0}%)", j.users_fetched, j.users_expected, p * 100.0),
        None => j.users_fetched.to_string(),
    };
    r.row("Users fetched", fetched)
        .row("Users written", j.users_written.to_string())
        .row("Users unchanged", j.users_stale.to_string())
        .row("Deletions", format!("{} reconciled", j.deletions_reconciled));
    if j.resumes > 0 {
        r.row("Resumes", j.resumes.to_string());
    }
    r.row("Started", ts_text(j.started_at.as_ref())).row("Finished", ts_text(j.finished_at.as_ref()));
    if !j.error.is_empty() {
        r.row("Error", j.error.clone());
    }
    r.render()
}

/// The status of `status PROJECT`: verdict first, then lag, rows, webhooks (all time and the
/// last hour), the inbox, recent errors, backfills, and where things are.
pub fn sync_status(s: &SyncStatus, now: DateTime<Utc>) -> String {
    // Ages are measured with the server's clock when it says when it answered.
    let now = timestamp_utc(s.generated_at.as_ref()).unwrap_or(now);
    let mut r = Rows::new();
    if let Some(i) = &s.integration {
        r.row("Project", format!("{} ({})", i.project_id, provider_str(i.provider)))
            .row("State", format!("{} · {}", integration_state_str(i.state), sync_mode_str(s.mode)));
    } else {
        r.row("Mode", sync_mode_str(s.mode));
    }
    r.row("Verdict", s.verdict.clone());
    if let Some(w) = &s.webhooks {
        let last = match (s.lag.as_ref(), timestamp_utc(w.last_event_at.as_ref())) {
            (Some(lag), Some(_)) => format!("{} ({})", ago_secs(lag.seconds), ts_text(w.last_event_at.as_ref())),
            (None, Some(t)) => format!("{} ({})", ago(t, now), ts_text(w.last_event_at.as_ref())),
            (_, None) => "no event yet".to_string(),
        };
        r.row("Last event", last);
    }
    if s.database_error.is_empty() {
        r.row("Users", format!("{} · {} deleted", plural(s.users_total, "row", "rows"), s.users_deleted));
    } else {
        r.row("Users", format!("unknown ({})", s.database_error));
    }
    match &s.webhooks {
        Some(w) => {
            r.row(
                "Webhooks",
                format!(
                    "{} applied · ignored: {} stale, {} duplicate, {} unhandled\n{} rejected · {} malformed · {} unavailable",
                    w.applied,
                    w.ignored_stale,
                    w.ignored_duplicate,
                    w.ignored_unhandled,
                    w.rejected,
                    w.malformed,
                    w.unavailable
                ),
            );
            if let Some(h) = &w.last_hour {
                let ignored = h.ignored_stale + h.ignored_duplicate + h.ignored_unhandled;
                r.row(
                    "Last hour",
                    format!(
                        "{} applied · {} ignored\n{} rejected · {} malformed · {} unavailable",
                        h.applied, ignored, h.rejected, h.malformed, h.unavailable
                    ),
                );
            }
            let inbox = match timestamp_utc(w.oldest_queued_at.as_ref()) {
                Some(t) if w.queued > 0 => format!(
                    "{}, oldest {} ({})",
                    plural(w.queued, "delivery", "deliveries"),
                    ago(t, now),
                    ts_text(w.oldest_queued_at.as_ref())
                ),
                _ if w.queued > 0 => plural(w.queued, "delivery", "deliveries"),
                _ => "empty".to_string(),
            };
            r.row("Inbox", inbox);
            if s.recent_errors.is_empty() && !w.last_error.is_empty() {
                // A server that lists no recent errors still says the last one.
                let at = timestamp_utc(w.last_error_at.as_ref())
                    .map(|_| format!("\nat {}", ts_text(w.last_error_at.as_ref())))
                    .unwrap_or_default();
                r.row("Last error", format!("{}{at}", w.last_error));
            }
        }
        None => {
            r.row("Webhooks", "-");
        }
    }
    if !s.recent_errors.is_empty() {
        let lines: Vec<String> =
            s.recent_errors.iter().map(|e| format!("{} {}: {}", ts_text(e.at.as_ref()), e.kind, e.message)).collect();
        r.row("Recent errors", lines.join("\n"));
    }
    match &s.current_backfill {
        Some(j) => r.row("Backfill", format!("{}\nstarted {}", backfill_job_line(j), ts_text(j.started_at.as_ref()))),
        None => r.row("Backfill", "none running"),
    };
    if let Some(j) = &s.last_backfill {
        let mut text = format!(
            "{}\n{} → {}",
            backfill_job_line(j),
            ts_text(j.started_at.as_ref()),
            ts_text(j.finished_at.as_ref())
        );
        if !j.error.is_empty() {
            text.push_str(&format!("\nerror: {}", j.error));
        }
        r.row("Last backfill", text);
    }
    if let Some(i) = &s.integration {
        if !i.database_target.is_empty() {
            r.row("Database", i.database_target.clone());
        }
        let mut secret = yes_no(i.has_webhook_secret).to_string();
        if timestamp_utc(i.previous_webhook_secret_until.as_ref()).is_some_and(|until| until > now) {
            secret.push_str(&format!(
                " (old one still accepted until {})",
                ts_text(i.previous_webhook_secret_until.as_ref())
            ));
        }
        r.row("Webhook secret", secret);
    }
    r.render()
}

/// The list of integrations, one row each, without borders (easy to scan, `grep` and `awk`).
pub fn integrations(list: &[Integration]) -> String {
    let mut t = table();
    t.load_preset(NOTHING);
    t.set_header(vec!["PROJECT", "PROVIDER", "STATE", "MODE", "WEBHOOK", "DATABASE", "UPDATED"]);
    for i in list {
        t.add_row(vec![
            i.project_id.clone(),
            provider_str(i.provider),
            integration_state_str(i.state),
            sync_mode_str(i.mode),
            yes_no(i.has_webhook_secret).to_string(),
            if i.database_target.is_empty() { "-".to_string() } else { i.database_target.clone() },
            ts_text(i.updated_at.as_ref()),
        ]);
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    t.lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use capydb_auth_sync_client::{
        BackfillState, Health, IntegrationState, Provider, RecentError, SyncMode, WebhookStats, WebhookWindow,
    };
    use prost_types::Timestamp;

    fn ts(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    fn integration_msg() -> Integration {
        Integration {
            id: "int_1".into(),
            project_id: "p1".into(),
            provider: Provider::Clerk as i32,
            state: IntegrationState::Active as i32,
            has_credentials: true,
            has_webhook_secret: true,
            secret_key_hint: "sk_live_…a1b2".into(),
            webhook_receiver: "https://capydb.dev/api/capydb/v1/integrations/clerk/webhook/p1".into(),
            created_at: ts(1_717_000_000),
            database_target: "db.internal:5432/a-rather-long-database-name-that-goes-on".into(),
            mode: SyncMode::Live as i32,
            ..Default::default()
        }
    }

    fn status() -> SyncStatus {
        SyncStatus {
            integration: Some(integration_msg()),
            mode: SyncMode::Live as i32,
            verdict: "failing: 37 deliveries rejected for a bad signature in the last hour — check the signing \
                      secret configured in the Clerk dashboard"
                .into(),
            last_backfill: Some(BackfillJob {
                id: "bf_1".into(),
                state: BackfillState::Succeeded as i32,
                users_fetched: 5000,
                users_written: 0,
                users_stale: 5000,
                users_expected: 5000,
                pages: 50,
                started_at: ts(1_717_000_000),
                finished_at: ts(1_717_000_012),
                ..Default::default()
            }),
            webhooks: Some(WebhookStats {
                applied: 1,
                rejected: 37,
                last_event_at: ts(1_717_000_100),
                last_error: "not a valid event: missing or invalid field `type`".into(),
                last_error_at: ts(1_717_000_050),
                queued: 4,
                oldest_queued_at: ts(1_716_999_803),
                last_hour: Some(WebhookWindow {
                    window: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
                    applied: 1,
                    ignored_duplicate: 2,
                    rejected: 37,
                    malformed: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            users_total: 1,
            lag: Some(prost_types::Duration { seconds: 3, nanos: 250_000_000 }),
            recent_errors: vec![
                RecentError {
                    at: ts(1_717_000_050),
                    kind: "malformed".into(),
                    message: "not a valid event: missing or invalid field `type`".into(),
                },
                RecentError {
                    at: ts(1_716_990_000),
                    kind: "backfill".into(),
                    message: "Clerk rejected the secret key (401): copy it again from the Clerk dashboard".into(),
                },
            ],
            health: Health::Failing as i32,
            generated_at: ts(1_717_000_103),
            ..Default::default()
        }
    }

    /// The table as `Label ┆ value` lines, each cell's wrapped lines joined by a space.
    fn cells(table: &str) -> String {
        let mut rows: Vec<String> = Vec::new();
        for line in table.lines().filter(|l| l.contains('┆')) {
            let inner = line.trim_matches(|c| c == '│' || c == ' ');
            let (label, value) = inner.split_once('┆').unwrap();
            let (label, value) = (label.trim(), value.trim());
            match rows.last_mut() {
                Some(last) if label.is_empty() => {
                    last.push(' ');
                    last.push_str(value);
                }
                _ => rows.push(format!("{label} ┆ {value}")),
            }
        }
        rows.join("\n")
    }

    #[test]
    fn status_table_fits_80_columns_and_reads_well() {
        // The client's clock is off by a day: ages use the server's `generated_at`.
        let now = DateTime::<Utc>::from_timestamp(1_717_086_503, 0).unwrap();
        let mut with_grace = status();
        with_grace.integration.as_mut().unwrap().previous_webhook_secret_until = ts(1_717_010_000);
        let text = sync_status(&with_grace, now);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{} columns: {line}\n{text}", line.chars().count());
        }
        for needle in [
            "Verdict",
            "failing: 37 deliveries",
            "3 s ago (2024-05-29T16:28:20Z)",
            "1 row ",
            "5000 unchanged",
            "37 rejected",
            "Last hour ┆ 1 applied · 2 ignored 37 rejected · 1 malformed · 0 unavailable",
            "Inbox ┆ 4 deliveries, oldest 5 min ago (2024-05-29T16:23:23Z)",
            "Recent errors ┆ 2024-05-29T16:27:30Z malformed: not a valid event",
            "2024-05-29T13:40:00Z backfill: Clerk rejected",
            "Webhook secret ┆ yes (old one still accepted until 2024-05-29T19:13:20Z)",
        ] {
            assert!(cells(&text).contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("Last error"), "the recent errors say it:\n{text}");
        let mut old_server = status();
        old_server.recent_errors.clear();
        assert!(sync_status(&old_server, now).contains("Last error"));
        assert!(!text.contains("stale,") || text.contains("ignored: 0 stale"), "{text}");
    }

    #[test]
    fn list_and_job_tables_fit_80_columns() {
        let mut second = integration_msg();
        second.project_id = "another-project".into();
        second.provider = Provider::BetterAuth as i32;
        let list = integrations(&[integration_msg(), second]);
        assert!(list.lines().all(|l| l.chars().count() <= 80), "{list}");
        assert!(list.starts_with("PROJECT  ") && list.contains("\nanother-project  better_auth"), "{list}");
        let job = backfill_job(status().last_backfill.as_ref().unwrap());
        assert!(job.contains("Users unchanged") && !job.contains("stale"), "{job}");
        assert!(integration(&integration_msg()).contains("active · live"));
    }

    #[test]
    fn ages_read_naturally() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let at = |s: i64| DateTime::<Utc>::from_timestamp(1_000_000 - s, 0).unwrap();
        assert_eq!(ago(at(3), now), "3 s ago");
        assert_eq!(ago(at(600), now), "10 min ago");
        assert_eq!(ago(at(3 * 3600), now), "3 h ago");
        assert_eq!(ago(at(3 * 86_400), now), "3 d ago");
    }
}
