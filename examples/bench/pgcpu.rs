//! Postgres' own CPU per contender: the backends connected to one database are sampled every
//! 25 ms (`pg_stat_activity`, then `/proc/<pid>/stat`), and their CPU time during the run is
//! summed: for a backend alive at the start, from its first sample; for one that connected
//! during the run, from zero. A backend's last 25 ms before it exits can be missed, so short
//! runs of many short-lived connections (the baseline's) read slightly low.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::server::cpu_time;
use crate::BenchError;

pub struct PgCpu {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Duration, BenchError>>,
}

impl PgCpu {
    /// Starts sampling the backends of `database`; `admin_url` reaches any database.
    pub async fn start(admin_url: &str, database: &str) -> Result<PgCpu, BenchError> {
        let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let own = client.query_one("SELECT pg_backend_pid()", &[]).await?.get::<_, i32>(0);
        let query = client.prepare("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> $2").await?;
        let database = database.to_string();
        let sampler = Sampler { client, query, database: database.to_string(), own, seen: HashMap::new() };
        let mut sampler = sampler;
        sampler.sample(true).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    sampler.sample(false).await?;
                }
                Ok(sampler.seen.values().map(|(from, to)| to.saturating_sub(*from)).sum())
            }
        });
        Ok(PgCpu { stop, task })
    }

    /// Stops sampling; Postgres CPU time spent by the database's backends meanwhile.
    pub async fn finish(self) -> Result<Duration, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.map_err(|e| BenchError::Setup(format!("the Postgres CPU sampler failed: {e}")))?
    }
}

struct Sampler {
    client: tokio_postgres::Client,
    query: tokio_postgres::Statement,
    database: String,
    own: i32,
    /// (CPU at first sight, CPU at last sight) per backend.
    seen: HashMap<i32, (Duration, Duration)>,
}

impl Sampler {
    async fn sample(&mut self, first: bool) -> Result<(), BenchError> {
        for row in self.client.query(&self.query, &[&self.database, &self.own]).await? {
            let pid: i32 = row.get(0);
            let Ok(now) = cpu_time(pid as u32) else { continue };
            self.seen.entry(pid).and_modify(|e| e.1 = now).or_insert((if first { now } else { Duration::ZERO }, now));
        }
        Ok(())
    }
}
