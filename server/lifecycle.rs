//! The service's one lifecycle: the phase it is in, what each component waits on, and the
//! set of background tasks `app::run` owns and awaits before it returns.
//!
//! [`Lifecycle`] is owned by `app::run`, which alone moves it forward; every component gets a
//! [`Shutdown`] handle to wait on a phase and to spawn its background work into the one task
//! set. The phases, in order (a phase is never left for an earlier one):
//!
//! 1. [`Phase::Serving`]: everything works.
//! 2. [`Phase::Draining`] (the caller's shutdown signal, e.g. SIGTERM): gRPC health turns
//!    NOT_SERVING and `/readyz` 503, so load balancers move traffic away, while the listeners
//!    still accept and serve. Backfill runners checkpoint and give their lease back (another
//!    replica continues at once), the backfill supervisor takes no new job, WatchBackfill
//!    streams end with UNAVAILABLE, periodic upkeep (metrics, idle pools) stops.
//! 3. [`Phase::Closing`] (after `SHUTDOWN_DRAIN_SECS`): the listeners stop accepting;
//!    requests in flight finish, for at most `SHUTDOWN_GRACE_SECS`.
//! 4. [`Phase::Stopping`] (no request is left): the delivery path's background work stops —
//!    counters are flushed a last time, deliveries still waiting to be parked are answered —
//!    and the rest of the task set (backfill runners handing their lease back) gets
//!    `SHUTDOWN_GRACE_SECS` to end.
//! 5. [`Phase::Stopped`]: every task has ended; `run` returns.
//!
//! [`Phase::Killed`] is the abrupt end: `run`'s future was dropped (or the last tasks outlived
//! the grace period). Every task of the set is dropped at its next poll, mid-flight: a
//! backfill runner stops without a checkpoint or a lease release, exactly what a crash looks
//! like to the other replicas (its lease expires and one of them resumes the job).
//!
//! Waiting on a phase resolves once that phase *or any later one* is reached, so a component
//! waiting for `draining()` also stops when the service is killed. Killing is checked before a
//! task is polled (the kill token is cancelled before the phase is published), so a killed
//! task never observes "draining" and starts a graceful hand-over.
//!
//! Outside the task set on purpose: the per-database group-commit loops (they end when their
//! queue is idle or dropped, after answering what they hold) and Postgres connection drivers
//! (they end with their clients).
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the service is in its life; see the module docs. Ordered: a later phase implies the
/// earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    Draining,
    Closing,
    Stopping,
    Stopped,
    Killed,
}

/// The owner's side, held by `app::run`: moves the phases forward, owns the task set, and
/// kills every task when dropped before [`Lifecycle::finish`] completed.
pub struct Lifecycle {
    phase: Arc<watch::Sender<Phase>>,
    tasks: TaskTracker,
    kill: CancellationToken,
}

/// A component's side: the phase to wait on, and where to spawn background work. Cheap to
/// clone.
#[derive(Clone)]
pub struct Shutdown {
    phase: watch::Receiver<Phase>,
    tasks: TaskTracker,
    kill: CancellationToken,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        let (phase, _) = watch::channel(Phase::Serving);
        Lifecycle { phase: Arc::new(phase), tasks: TaskTracker::new(), kill: CancellationToken::new() }
    }

    /// A handle for a component.
    pub fn handle(&self) -> Shutdown {
        Shutdown { phase: self.phase.subscribe(), tasks: self.tasks.clone(), kill: self.kill.clone() }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Moves to `phase` (a phase already passed is left as it is).
    pub fn enter(&self, phase: Phase) {
        debug_assert!(phase < Phase::Stopped, "Stopped and Killed are reached through finish() and drop");
        self.phase.send_if_modified(|current| {
            let later = phase > *current;
            if later {
                *current = phase;
            }
            later
        });
    }

    /// Enters [`Phase::Stopping`] and waits up to `grace` for every task of the set to end;
    /// tasks still running then are killed (dropped mid-flight) and waited for.
    pub async fn finish(self, grace: Duration) {
        self.enter(Phase::Stopping);
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                tasks = self.tasks.len(),
                grace_secs = grace.as_secs(),
                "background work still running after the shutdown grace period; stopping it"
            );
            self.kill_all();
            self.tasks.wait().await;
        }
        self.phase.send_replace(Phase::Stopped);
    }

    fn kill_all(&self) {
        // The token first: a task polled in between sees the kill before the phase.
        self.kill.cancel();
        self.phase.send_replace(Phase::Killed);
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if self.phase() != Phase::Stopped {
            self.kill_all();
        }
    }
}

impl Shutdown {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Whether draining has begun (or anything later).
    pub fn is_draining(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// Resolves when draining begins: health NOT_SERVING, backfills hand over.
    pub fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(Phase::Draining)
    }

    /// Resolves when the listeners must stop accepting.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(Phase::Closing)
    }

    /// Resolves when no request is left and background work must stop.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(Phase::Stopping)
    }

    fn reached(&self, phase: Phase) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.phase.clone();
        async move {
            // An error means the owner is gone, which only happens after the last phase.
            let _ = rx.wait_for(|current| *current >= phase).await;
        }
    }

    /// Spawns `task` into the service's task set: `run` does not return before it ends, and
    /// if the service is killed it is dropped at its next poll. The handle yields `None` for
    /// a killed task.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let kill = self.kill.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = kill.cancelled() => None,
                out = task => Some(out),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn waiting_on_a_phase_resolves_there_and_at_every_later_one() {
        let life = Lifecycle::new();
        let s = life.handle();
        assert_eq!(s.phase(), Phase::Serving);
        let (draining, closing) = (s.draining(), s.closing());
        let closing = tokio::spawn(closing);
        life.enter(Phase::Draining);
        draining.await;
        assert!(s.is_draining());
        assert!(!closing.is_finished());
        // Skipping a phase also releases the waiters of the phases skipped.
        life.enter(Phase::Stopping);
        closing.await.unwrap();
        life.enter(Phase::Draining);
        assert_eq!(s.phase(), Phase::Stopping, "a phase is never left for an earlier one");
        life.finish(Duration::from_secs(1)).await;
        assert_eq!(s.phase(), Phase::Stopped);
    }

    #[tokio::test]
    async fn finish_waits_for_every_task_that_ends_within_the_grace_period() {
        let life = Lifecycle::new();
        let s = life.handle();
        let done = Arc::new(AtomicBool::new(false));
        let handle = s.spawn({
            let (s, done) = (s.clone(), done.clone());
            async move {
                s.stopping().await;
                tokio::task::yield_now().await;
                done.store(true, Ordering::SeqCst);
                7
            }
        });
        life.finish(Duration::from_secs(5)).await;
        assert!(done.load(Ordering::SeqCst), "finish returned before the task ended");
        assert_eq!(handle.await.unwrap(), Some(7));
        assert_eq!(s.phase(), Phase::Stopped);
    }

    #[tokio::test]
    async fn a_task_outliving_the_grace_period_is_killed_and_finish_still_returns() {
        let life = Lifecycle::new();
        let s = life.handle();
        let handle = s.spawn(std::future::pending::<()>());
        life.finish(Duration::from_millis(50)).await;
        assert_eq!(handle.await.unwrap(), None);
        assert_eq!(s.phase(), Phase::Stopped);
    }

    #[tokio::test]
    async fn dropping_the_owner_kills_tasks_without_letting_them_see_draining() {
        let life = Lifecycle::new();
        let s = life.handle();
        let handed_over = Arc::new(AtomicBool::new(false));
        let handle = s.spawn({
            let (s, handed_over) = (s.clone(), handed_over.clone());
            async move {
                s.draining().await;
                handed_over.store(true, Ordering::SeqCst);
            }
        });
        drop(life);
        assert_eq!(handle.await.unwrap(), None, "the task was dropped, not finished");
        assert!(!handed_over.load(Ordering::SeqCst), "a killed task never runs its graceful path");
        assert_eq!(s.phase(), Phase::Killed);
        assert!(s.is_draining(), "anything waiting outside the set stops too");
    }
}
