//! The benchmark's markdown: one table of runs (each concurrency: baseline, service, ratio) and
//! one of the targets with whether this run met them.
use std::fmt::Write as _;
use std::time::Duration;

use crate::load::RunStats;

/// Both contenders at one concurrency.
pub struct Pair {
    pub in_flight: usize,
    pub baseline: RunStats,
    /// CPU time of the bench process while the baseline ran: what its client spent.
    pub baseline_client_cpu: Duration,
    /// CPU time of the baseline database's Postgres backends during the baseline run.
    pub baseline_pg_cpu: Duration,
    pub service: RunStats,
    /// CPU time of the bench process while the service ran: what its HTTP sender spent.
    pub service_sender_cpu: Duration,
    /// CPU time of the server process during the service run.
    pub service_cpu: Duration,
    /// CPU time of the project database's Postgres backends during the service run.
    pub service_pg_cpu: Duration,
    /// Group commits during the service run and the deliveries they carried.
    pub group_commits: (f64, f64),
    /// Whether both tables ended with the same rows (id, updated_at, deleted_at, raw).
    pub tables_equal: bool,
}

impl Pair {
    fn service_cpu_ms(&self) -> f64 {
        per_event_ms(self.service_cpu, self.service.applied + self.service.ignored)
    }
}

fn per_event_ms(cpu: Duration, events: usize) -> f64 {
    cpu.as_secs_f64() * 1000.0 / events.max(1) as f64
}

pub struct Context {
    pub date: String,
    pub cpus: usize,
    pub postgres: String,
    pub users: usize,
    pub body_bytes: (usize, usize, usize),
    pub mix: (usize, usize, usize),
    /// `/proc/loadavg`'s 1-minute figure before and after: other work on the machine.
    pub load: (String, String),
}

pub fn render(ctx: &Context, pairs: &[Pair], peak_rss_c64: Option<u64>) -> String {
    let mut out = String::new();
    let (created, updated, deleted) = ctx.mix;
    let total = (created + updated + deleted).max(1) as f64;
    let _ = writeln!(out, "### Webhook benchmark, {}\n", ctx.date);
    let _ = writeln!(
        out,
        "{} CPUs, {}; signed Clerk deliveries over loopback HTTP/1.1, {} users, user bodies {}–{} bytes (mean {}; deletes ~400), \
         {:.0}% created / {:.0}% updated / {:.0}% deleted. Baseline: the same rows from tokio-postgres, one \
         `INSERT … ON CONFLICT DO UPDATE` per transaction (autocommit), one connection per in-flight event. \
         Load average (1 min) {} before, {} after.\n",
        ctx.cpus,
        ctx.postgres,
        ctx.users,
        ctx.body_bytes.0,
        ctx.body_bytes.2,
        ctx.body_bytes.1,
        created as f64 * 100.0 / total,
        updated as f64 * 100.0 / total,
        deleted as f64 * 100.0 / total,
        ctx.load.0,
        ctx.load.1,
    );
    let _ = writeln!(
        out,
        "| in flight | contender | events | events/s | p50 ms | p99 ms | p99.9 ms | CPU ms/event | Postgres CPU ms/event | commits (events each) | applied / ignored / failed | same table |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for p in pairs {
        let row = |out: &mut String,
                   name: &str,
                   s: &RunStats,
                   cpu: String,
                   pg_cpu: Duration,
                   commits: String,
                   same: &str| {
            let _ = writeln!(
                out,
                "| {} | {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {cpu} | {:.3} | {commits} | {} / {} / {} | {same} |",
                p.in_flight,
                s.sent,
                s.per_second(),
                s.quantile_ms(0.5),
                s.quantile_ms(0.99),
                s.quantile_ms(0.999),
                per_event_ms(pg_cpu, s.applied + s.ignored),
                s.applied,
                s.ignored,
                s.failed,
            );
        };
        let baseline_cpu = per_event_ms(p.baseline_client_cpu, p.baseline.applied + p.baseline.ignored);
        let baseline_commits = format!("{} (1)", p.baseline.applied + p.baseline.ignored);
        row(
            &mut out,
            "baseline",
            &p.baseline,
            format!("{baseline_cpu:.3} (client)"),
            p.baseline_pg_cpu,
            baseline_commits,
            "",
        );
        let (commits, carried) = p.group_commits;
        row(
            &mut out,
            "capydb-auth-sync",
            &p.service,
            format!(
                "{:.3} (server; sender {:.3})",
                p.service_cpu_ms(),
                per_event_ms(p.service_sender_cpu, p.service.applied + p.service.ignored)
            ),
            p.service_pg_cpu,
            format!("{commits:.0} ({:.1})", carried / commits.max(1.0)),
            if p.tables_equal { "yes" } else { "NO" },
        );
        let _ = writeln!(
            out,
            "| {} | *ours / baseline* | | **{:.2}×** | {:.2}× | {:.2}× | {:.2}× | | | | | |",
            p.in_flight,
            p.service.per_second() / p.baseline.per_second(),
            p.service.quantile_ms(0.5) / p.baseline.quantile_ms(0.5),
            p.service.quantile_ms(0.99) / p.baseline.quantile_ms(0.99),
            p.service.quantile_ms(0.999) / p.baseline.quantile_ms(0.999),
        );
    }
    for p in pairs.iter().filter(|p| p.service.failed + p.baseline.failed > 0) {
        let why = p.service.first_failure.as_deref().or(p.baseline.first_failure.as_deref()).unwrap_or("-");
        let _ = writeln!(out, "\nfailures at {} in flight, first: {why}", p.in_flight);
    }

    let _ = writeln!(out, "\n| target | measured | met |\n|---|---|---|");
    let at = |c: usize| pairs.iter().find(|p| p.in_flight == c);
    let mut target = |name: &str, measured: Option<(String, bool)>| {
        let (value, met) = match measured {
            Some((value, met)) => (value, if met { "yes" } else { "**no**" }),
            None => ("not measured".to_string(), "—"),
        };
        let _ = writeln!(out, "| {name} | {value} | {met} |");
    };
    let ratio = |p: &Pair| p.service.per_second() / p.baseline.per_second();
    target("events/s at 64 in flight ≥ 1.5× baseline", at(64).map(|p| (format!("{:.2}×", ratio(p)), ratio(p) >= 1.5)));
    target("events/s at 8 in flight ≥ 1.0× baseline", at(8).map(|p| (format!("{:.2}×", ratio(p)), ratio(p) >= 1.0)));
    target(
        "p99 at 64 in flight ≤ 3× baseline p99",
        at(64).map(|p| {
            let r = p.service.quantile_ms(0.99) / p.baseline.quantile_ms(0.99);
            (format!("{r:.2}×"), r <= 3.0)
        }),
    );
    let worst_cpu = pairs.iter().map(|p| (p.service_cpu_ms(), p.in_flight)).max_by(|a, b| a.0.total_cmp(&b.0));
    target(
        "service CPU per delivery ≤ 0.15 ms (worst run)",
        worst_cpu.map(|(ms, c)| (format!("{ms:.3} ms (at {c} in flight)"), ms <= 0.15)),
    );
    target(
        "server peak RSS during the 64-in-flight run < 150 MB",
        peak_rss_c64.map(|b| (format!("{:.0} MB", b as f64 / 1_048_576.0), b < 150 * 1_048_576)),
    );
    out
}
