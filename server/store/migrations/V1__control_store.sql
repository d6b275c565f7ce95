-- The service's own control store: integrations (with encrypted credentials), webhook
-- counters and backfill jobs. Lives in schema capydb_auth_sync of the control database.

CREATE TABLE capydb_auth_sync.integrations (
    id                  text PRIMARY KEY,
    project_id          text NOT NULL,
    provider            text NOT NULL CHECK (provider IN ('clerk', 'auth0', 'better_auth')),
    -- AES-256-GCM ciphertexts (crypto.rs); NULL = not configured.
    database_url_enc    text NOT NULL,
    secret_key_enc      text,
    webhook_secret_enc  text,
    -- Not secret: `sk_live_…a1b2` and `host:port/dbname`.
    secret_key_hint     text,
    database_target     text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, provider)
);

CREATE TABLE capydb_auth_sync.webhook_stats (
    integration_id      text PRIMARY KEY REFERENCES capydb_auth_sync.integrations (id) ON DELETE CASCADE,
    applied             bigint NOT NULL DEFAULT 0,
    ignored_stale       bigint NOT NULL DEFAULT 0,
    ignored_duplicate   bigint NOT NULL DEFAULT 0,
    ignored_unhandled   bigint NOT NULL DEFAULT 0,
    rejected            bigint NOT NULL DEFAULT 0,
    malformed           bigint NOT NULL DEFAULT 0,
    unavailable         bigint NOT NULL DEFAULT 0,
    last_event_at       timestamptz,
    last_error          text,
    last_error_at       timestamptz
);

CREATE TABLE capydb_auth_sync.backfill_jobs (
    id                    text PRIMARY KEY,
    integration_id        text NOT NULL REFERENCES capydb_auth_sync.integrations (id) ON DELETE CASCADE,
    project_id            text NOT NULL,
    provider              text NOT NULL,
    state                 text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    pages                 bigint NOT NULL DEFAULT 0,
    users_fetched         bigint NOT NULL DEFAULT 0,
    users_written         bigint NOT NULL DEFAULT 0,
    users_stale           bigint NOT NULL DEFAULT 0,
    deletions_reconciled  bigint NOT NULL DEFAULT 0,
    users_expected        bigint NOT NULL DEFAULT 0,
    -- Where to resume: the BackfillCursor after the last committed page.
    checkpoint            jsonb,
    pass_started_at       timestamptz,
    lease_owner           text,
    lease_expires_at      timestamptz,
    resumes               integer NOT NULL DEFAULT 0,
    error                 text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- At most one queued or running backfill per integration, across all replicas.
CREATE UNIQUE INDEX backfill_jobs_one_active
    ON capydb_auth_sync.backfill_jobs (integration_id)
    WHERE state IN ('queued', 'running');

CREATE INDEX backfill_jobs_by_integration
    ON capydb_auth_sync.backfill_jobs (integration_id, created_at DESC);
