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
//! If more users than a page share one millisecond, the keyset cannot move forward; the
//! cursor then pages through that single millisecond with `offset` (a one-millisecond
//! window is the only place offsets are used) and resumes the keyset after it.
//!
//! # Why reconciliation is sound per window
//!
//! Because Clerk returns users in `created_at` order, a full page with newest time `t`
//! contains *every* user that existed at request time with `created_at` in
//! `[cursor, t)`. Rows of our table in that window that are not in the page, not deleted,
//! and created before the pass began belong to users deleted at the provider: they are
//! soft-deleted as the page commits. The last (short) page closes the window `[cursor, ∞)`.
//! Nothing is ever held for the whole pass, so memory stays flat in the number of users.
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
    /// Ids created exactly at `from_ms` that earlier pages returned.
    pub seen_at_from: Vec<String>,
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

/// What one fetched page means for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePlan {
    /// Indexes (into the page) of users not seen before in this pass.
    pub new_users: Vec<usize>,
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
        let seen = |id: &str| self.seen_at_from.iter().any(|s| s == id);
        let new_users: Vec<usize> = page
            .iter()
            .enumerate()
            .filter(|(_, u)| !(Some(u.created_ms) == self.from_ms && seen(&u.id)))
            .map(|(i, _)| i)
            .collect();
        let all_ids = || page.iter().map(|u| u.id.clone()).collect::<Vec<_>>();

        if let (Some(t), Some(offset)) = (self.from_ms, self.tie_offset) {
            // Inside one crowded millisecond.
            let mut seen_at_from = self.seen_at_from.clone();
            seen_at_from.extend(new_users.iter().map(|&i| page[i].id.clone()));
            if full {
                let next = BackfillCursor {
                    from_ms: Some(t),
                    seen_at_from,
                    tie_offset: Some(offset + limit),
                    done: false,
                    pass: 0,
                };
                return PagePlan { new_users, reconcile: None, next };
            }
            // Offsets shift when a user of this millisecond is deleted between pages, so the
            // listing of a crowded millisecond is not proof of absence: never reconcile it.
            let next =
                BackfillCursor { from_ms: Some(t + 1), seen_at_from: vec![], tie_offset: None, done: false, pass: 0 };
            return PagePlan { new_users, reconcile: None, next };
        }

        if !full {
            let reconcile = ReconcileWindow { from: window_start, to: None, ids: all_ids() };
            let next = BackfillCursor { done: true, ..self.clone() };
            return PagePlan { new_users, reconcile: Some(reconcile), next };
        }

        let max = page.iter().map(|u| u.created_ms).max().unwrap_or(0);
        if Some(max) == self.from_ms || (self.from_ms.is_none() && page.iter().all(|u| u.created_ms == max)) {
            // A whole page in one millisecond: switch to offset paging inside it.
            let mut seen_at_from = if Some(max) == self.from_ms { self.seen_at_from.clone() } else { vec![] };
            seen_at_from.extend(new_users.iter().map(|&i| page[i].id.clone()));
            let next =
                BackfillCursor { from_ms: Some(max), seen_at_from, tie_offset: Some(limit), done: false, pass: 0 };
            return PagePlan { new_users, reconcile: None, next };
        }
        let seen_at_max = page.iter().filter(|u| u.created_ms == max).map(|u| u.id.clone()).collect();
        let reconcile = ReconcileWindow { from: window_start, to: Some(epoch(max)), ids: all_ids() };
        let next =
            BackfillCursor { from_ms: Some(max), seen_at_from: seen_at_max, tie_offset: None, done: false, pass: 0 };
        PagePlan { new_users, reconcile: Some(reconcile), next }
    }
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
        assert_eq!(plan.new_users, vec![0, 1, 2, 3]);
        assert_eq!(
            plan.next,
            BackfillCursor {
                from_ms: Some(30),
                seen_at_from: vec!["c".into(), "d".into()],
                tie_offset: None,
                done: false,
                pass: 0
            }
        );
        let w = plan.reconcile.unwrap();
        assert_eq!((w.from, w.to), (epoch(0), Some(epoch(30))));
        assert_eq!(plan.next.query(4)[2], ("created_at_after", "29".to_string()));

        // The next page returns c and d again (overlap), plus e.
        let plan2 = plan.next.plan(&users(&[("c", 30), ("d", 30), ("e", 40)]), 4);
        assert_eq!(plan2.new_users, vec![2]);
        assert!(plan2.next.done);
        let w2 = plan2.reconcile.unwrap();
        assert_eq!((w2.from, w2.to), (epoch(30), None));
        assert_eq!(w2.ids, vec!["c", "d", "e"]);
    }

    #[test]
    fn a_crowded_millisecond_is_paged_by_offset_then_left() {
        let c =
            BackfillCursor { from_ms: Some(5), seen_at_from: vec!["a".into()], tie_offset: None, done: false, pass: 2 };
        // A full page all at t=5 (a seen before).
        let plan = c.plan(&users(&[("a", 5), ("b", 5), ("c", 5)]), 3);
        assert_eq!(plan.new_users, vec![1, 2]);
        assert_eq!(plan.next.tie_offset, Some(3));
        assert!(plan.reconcile.is_none());
        let q = plan.next.query(3);
        assert!(q.contains(&("created_at_before", "6".to_string())) && q.contains(&("offset", "3".to_string())));
        // The rest of t=5.
        let plan2 = plan.next.plan(&users(&[("d", 5)]), 3);
        assert_eq!(plan2.new_users, vec![0]);
        assert!(plan2.reconcile.is_none(), "offset-paged listings prove no absence");
        assert_eq!(plan2.next, BackfillCursor { from_ms: Some(6), pass: 2, ..Default::default() });
        assert_eq!(plan2.next.query(3)[2], ("created_at_after", "5".to_string()));
    }

    #[test]
    fn an_empty_first_page_finishes_and_reconciles_everything() {
        let plan = BackfillCursor::default().plan(&[], 500);
        assert!(plan.next.done);
        assert_eq!(plan.reconcile.unwrap(), ReconcileWindow { from: epoch(0), to: None, ids: vec![] });
    }

    #[test]
    fn cursor_round_trips_through_json() {
        let c = BackfillCursor {
            from_ms: Some(1),
            seen_at_from: vec!["x".into()],
            tie_offset: Some(3),
            done: false,
            pass: 1,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::from_value::<BackfillCursor>(v).unwrap(), c);
    }
}
