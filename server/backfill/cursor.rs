//! Where a Clerk backfill is in its pass, and how the next page is asked for.
//!
//! # Why this pages completely under churn
//!
//! Offset paging skips users: when a user on an earlier page is deleted, every later user
//! shifts one place forward and the one at the page boundary is never returned. So we page
//! by keyset on `created_at`, ascending: each request asks for users created at or after the
//! newest `created_at` of the previous page (`created_at_after = t - 1`, Clerk's bound being
//! exclusive), and skips the ids it already saw at exactly `t` (the overlap makes ties at the
//! boundary safe). A deletion never shifts anything; a user created during the pass has a
//! `created_at` later than every page already fetched, so it is returned by a later page.
//!
//! The cursor holds no ids, so a checkpoint is a few dozen bytes whatever the data: the users
//! at the boundary millisecond are simply listed (and upserted) again by the next page, which
//! costs nothing since the upsert is idempotent; only their *number* is kept, so progress
//! counters do not count them twice.
//!
//! If more users than a page share one millisecond, the keyset cannot move forward; the
//! cursor then pages through that single millisecond with `offset` (a one-millisecond
//! window is the only place offsets are used), each page overlapping the previous one by a
//! tenth of a page, so a few users of that millisecond deleted between two requests do not
//! shift anyone past the cursor; then it resumes the keyset after it.

//! # Why reconciliation is sound per window
//!
//! Because Clerk returns users in `created_at` order, a full page with newest time `t`
//! contains every user that existed *at request time* with `created_at` in `[cursor, t)`.
//! Rows of our table in that window that are not in the page, not deleted, and created
//! before the pass began are only *candidates*: a user imported with a back-dated
//! `created_at` (or written by a webhook) after the page was listed is in the table and not
//! in the page, and so is every user when a replica's clock runs ahead of Clerk's. So the
//! runner asks Clerk for each candidate by id and soft-deletes only those Clerk answers 404
//! for; a candidate Clerk still returns is upserted instead (SPEC §5). The last (short) page
//! closes the window `[cursor, ∞)`. Nothing is held for the whole pass, so memory stays flat
//! in the number of users.
//!
//! # Deletions behind the cursor
//!
//! A user deleted at the provider *after* its window was listed is still live in the table
//! when the pass ends (webhooks, when configured, catch it). So after every pass the runner
//! compares Clerk's user count with the table's live rows; if they differ, the pass raced
//! with churn and another pass runs (at most a few), which repairs exactly those rows.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::providers::timestamps::from_epoch_ms;

/// The resumable position of a pass; stored as the job's checkpoint after every page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillCursor {
    /// The next page starts at users created at or after this instant (ms); None = the start.
    pub from_ms: Option<i64>,
    /// How many users created exactly at `from_ms` earlier pages returned (listed again by
    /// the next page; counted once). Checkpoints of older versions held the ids: their number
    /// is taken.
    #[serde(default, deserialize_with = "count_or_ids")]
    pub seen_at_from: u32,
    /// Paging through one crowded millisecond (`from_ms`) by offset.
    pub tie_offset: Option<u32>,
    /// The pass has listed every user.
    pub done: bool,
    /// Which pass of the job this is (0 = the first; see the runner's count check).
    #[serde(default)]
    pub pass: u32,
}

/// One user as listed: its id and creation time (ms). Users without a numeric
/// `created_at` sort first, as Clerk cannot return those.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub created_ms: i64,
}

/// What one fetched page means for the table. Every user of the page is written; some may
/// have been written by the previous page already (the overlap), which changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePlan {
    /// Users of the page not listed before in this pass (for progress counters).
    pub fetched: u32,
    /// A creation-time window the page covers completely, with every id in it.
    pub reconcile: Option<ReconcileWindow>,
    /// The cursor once this page is committed.
    pub next: BackfillCursor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileWindow {
    pub from: DateTime<Utc>,
    /// Exclusive; None = unbounded (the pass's last page).
    pub to: Option<DateTime<Utc>>,
    pub ids: Vec<String>,
}

impl BackfillCursor {
    /// Query parameters of the next `GET /v1/users`.
    pub fn query(&self, limit: u32) -> Vec<(&'static str, String)> {
        let mut q = vec![("order_by", "+created_at".to_string()), ("limit", limit.to_string())];
        if let Some(from) = self.from_ms {
            q.push(("created_at_after", (from - 1).to_string()));
            if let Some(offset) = self.tie_offset {
                q.push(("created_at_before", (from + 1).to_string()));
                q.push(("offset", offset.to_string()));
            }
        }
        q
    }

    /// Plans a fetched page (users in the order Clerk returned them).
    pub fn plan(&self, page: &[Listed], limit: u32) -> PagePlan {
        let mut plan = self.plan_in_pass(page, limit);
        plan.next.pass = self.pass;
        plan
    }

    /// The first cursor of the next pass.
    pub fn next_pass(&self) -> BackfillCursor {
        BackfillCursor { pass: self.pass + 1, ..BackfillCursor::default() }
    }

    fn plan_in_pass(&self, page: &[Listed], limit: u32) -> PagePlan {
        let full = page.len() as u32 >= limit;
        let window_start = epoch(self.from_ms.unwrap_or(0));
        let all_ids = || page.iter().map(|u| u.id.clone()).collect::<Vec<_>>();

        if let (Some(t), Some(offset)) = (self.from_ms, self.tie_offset) {
            // Inside one crowded millisecond: positions offset.. of it.
            let reached = offset.saturating_add(page.len() as u32);
            let fetched = reached.saturating_sub(self.seen_at_from);
            let seen_at_from = self.seen_at_from.max(reached);
            if full {
                let next = BackfillCursor {
                    from_ms: Some(t),
                    seen_at_from,
                    tie_offset: Some(offset + limit - tie_overlap(limit)),
                    done: false,
                    pass: 0,
                };
                return PagePlan { fetched, reconcile: None, next };
            }
            // Offsets shift when a user of this millisecond is deleted between pages, so the
            // listing of a crowded millisecond is not proof of absence: never reconcile it.
            let next = BackfillCursor { from_ms: Some(t + 1), ..BackfillCursor::default() };
            return PagePlan { fetched, reconcile: None, next };
        }

        // Keyset: the page starts with every user at `from_ms`, of which the first
        // `seen_at_from` were counted by the previous page.
        let at_from = page.iter().filter(|u| Some(u.created_ms) == self.from_ms).count() as u32;
        let fetched = page.len() as u32 - at_from + at_from.saturating_sub(self.seen_at_from);
        if !full {
            let reconcile = ReconcileWindow { from: window_start, to: None, ids: all_ids() };
            let next = BackfillCursor { done: true, ..self.clone() };
            return PagePlan { fetched, reconcile: Some(reconcile), next };
        }

        let max = page.iter().map(|u| u.created_ms).max().unwrap_or(0);
        if page.iter().all(|u| u.created_ms == max) {
            // A whole page in one millisecond: switch to offset paging inside it.
            let seen_at_from = if Some(max) == self.from_ms { self.seen_at_from.max(limit) } else { limit };
            let next = BackfillCursor {
                from_ms: Some(max),
                seen_at_from,
                tie_offset: Some(limit - tie_overlap(limit)),
                done: false,
                pass: 0,
            };
            return PagePlan { fetched, reconcile: None, next };
        }
        let seen_at_max = page.iter().filter(|u| u.created_ms == max).count() as u32;
        let reconcile = ReconcileWindow { from: window_start, to: Some(epoch(max)), ids: all_ids() };
        let next =
            BackfillCursor { from_ms: Some(max), seen_at_from: seen_at_max, tie_offset: None, done: false, pass: 0 };
        PagePlan { fetched, reconcile: Some(reconcile), next }
    }
}

/// How many positions consecutive pages of a crowded millisecond share: a tenth of a page,
/// so up to that many deletions in the millisecond between two requests skip no one.
fn tie_overlap(limit: u32) -> u32 {
    (limit / 10).min(limit.saturating_sub(1))
}

/// `seen_at_from` as a number, also from a checkpoint that stored the ids themselves.
fn count_or_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seen {
        Count(u32),
        Ids(Vec<String>),
    }
    Ok(match Seen::deserialize(d)? {
        Seen::Count(n) => n,
        Seen::Ids(ids) => ids.len() as u32,
    })
}

fn epoch(ms: i64) -> DateTime<Utc> {
    from_epoch_ms(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(spec: &[(&str, i64)]) -> Vec<Listed> {
        spec.iter().map(|(id, t)| Listed { id: id.to_string(), created_ms: *t }).collect()
    }

    #[test]
    fn first_query_starts_at_the_beginning_in_ascending_order() {
        let q = BackfillCursor::default().query(500);
        assert_eq!(q, vec![("order_by", "+created_at".to_string()), ("limit", "500".to_string())]);
    }

    #[test]
    fn full_page_moves_the_keyset_and_overlaps_the_last_millisecond() {
        let c = BackfillCursor::default();
        let plan = c.plan(&users(&[("a", 10), ("b", 20), ("c", 30), ("d", 30)]), 4);
        assert_eq!(plan.fetched, 4);
        assert_eq!(
            plan.next,
            BackfillCursor { from_ms: Some(30), seen_at_from: 2, tie_offset: None, done: false, pass: 0 }
        );
        let w = plan.reconcile.unwrap();
        assert_eq!((w.from, w.to), (epoch(0), Some(epoch(30))));
        assert_eq!(plan.next.query(4)[2], ("created_at_after", "29".to_string()));

        // The next page returns c and d again (overlap, counted once), plus e.
        let plan2 = plan.next.plan(&users(&[("c", 30), ("d", 30), ("e", 40)]), 4);
        assert_eq!(plan2.fetched, 1);
        assert!(plan2.next.done);
        let w2 = plan2.reconcile.unwrap();
        assert_eq!((w2.from, w2.to), (epoch(30), None));
        assert_eq!(w2.ids, vec!["c", "d", "e"]);
    }

    #[test]
    fn a_crowded_millisecond_is_paged_by_overlapping_offsets_then_left() {
        let c = BackfillCursor { from_ms: Some(5), seen_at_from: 1, tie_offset: None, done: false, pass: 2 };
        // A full page all at t=5 (a counted before).
        let limit = 20;
        let page: Vec<(String, i64)> = (0..limit).map(|i| (format!("u{i:02}"), 5)).collect();
        let listed: Vec<Listed> = page.iter().map(|(id, t)| Listed { id: id.clone(), created_ms: *t }).collect();
        let plan = c.plan(&listed, limit);
        assert_eq!(plan.fetched, limit - 1);
        assert_eq!(plan.next.tie_offset, Some(18), "two positions of overlap");
        assert!(plan.reconcile.is_none());
        let q = plan.next.query(limit);
        assert!(q.contains(&("created_at_before", "6".to_string())) && q.contains(&("offset", "18".to_string())));
        // The rest of t=5: positions 18.. (18 and 19 again), 5 users.
        let rest: Vec<Listed> = (18..23).map(|i| Listed { id: format!("u{i:02}"), created_ms: 5 }).collect();
        let plan2 = plan.next.plan(&rest, limit);
        assert_eq!(plan2.fetched, 3);
        assert!(plan2.reconcile.is_none(), "offset-paged listings prove no absence");
        assert_eq!(plan2.next, BackfillCursor { from_ms: Some(6), pass: 2, ..Default::default() });
        assert_eq!(plan2.next.query(limit)[2], ("created_at_after", "5".to_string()));
    }

    #[test]
    fn the_checkpoint_stays_small_in_a_crowded_millisecond() {
        let mut c = BackfillCursor::default();
        let limit = 500;
        let mut fetched = 0;
        // 100,000 users in one millisecond.
        while !c.done && c.from_ms != Some(8) {
            let start = c.tie_offset.unwrap_or(0) as usize;
            let n = (100_000usize.saturating_sub(start)).min(limit as usize);
            let page: Vec<Listed> =
                (start..start + n).map(|i| Listed { id: format!("user_{i:027}"), created_ms: 7 }).collect();
            let plan = c.plan(&page, limit);
            fetched += plan.fetched;
            c = plan.next;
            assert!(serde_json::to_vec(&c).unwrap().len() < 200);
        }
        assert_eq!(fetched, 100_000);
    }

    #[test]
    fn an_empty_first_page_finishes_and_reconciles_everything() {
        let plan = BackfillCursor::default().plan(&[], 500);
        assert!(plan.next.done);
        assert_eq!(plan.reconcile.unwrap(), ReconcileWindow { from: epoch(0), to: None, ids: vec![] });
    }

    #[test]
    fn cursor_round_trips_through_json_and_reads_old_checkpoints() {
        let c = BackfillCursor { from_ms: Some(1), seen_at_from: 3, tie_offset: Some(3), done: false, pass: 1 };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::from_value::<BackfillCursor>(v).unwrap(), c);
        let old = serde_json::json!({"from_ms": 1, "seen_at_from": ["x", "y", "z"], "tie_offset": 3, "done": false, "pass": 1});
        assert_eq!(serde_json::from_value::<BackfillCursor>(old).unwrap(), c);
    }
}
