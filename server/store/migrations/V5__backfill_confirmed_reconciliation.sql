-- Issue 9: confirmed reconciliation and poison-proof pages.
-- reconcile_checks: rows a page's window would have deleted, asked of Clerk by id;
-- reconcile_kept:   of those, users Clerk still returned (upserted, not deleted);
-- users_skipped:    users that could not be parsed or stored (named in `errors`);
-- errors:           a bounded list of per-user problems (JSON array of strings).
ALTER TABLE capydb_auth_sync.backfill_jobs
    ADD COLUMN reconcile_checks bigint NOT NULL DEFAULT 0,
    ADD COLUMN reconcile_kept   bigint NOT NULL DEFAULT 0,
    ADD COLUMN users_skipped    bigint NOT NULL DEFAULT 0,
    ADD COLUMN errors           jsonb  NOT NULL DEFAULT '[]'::jsonb;

-- A replica claims queued jobs oldest first, a bounded number at a time.
CREATE INDEX backfill_jobs_claimable
    ON capydb_auth_sync.backfill_jobs (created_at)
    WHERE state IN ('queued', 'running');
