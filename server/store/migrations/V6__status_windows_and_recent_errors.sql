-- Issue 12: GetSyncStatus as the one-stop view.
--
-- webhook_minutes: the webhook counters per integration and minute, so the status can say
--   "37 deliveries rejected in the last hour". Written by the counter flush (about once a
--   second, off the response path); each flush drops the integration's minutes older than
--   two hours, so an integration holds at most ~120 rows however much traffic it gets.
-- webhook_errors: the most recent errors of authenticated deliveries per integration (time,
--   kind, message; the same secret-free texts as webhook_stats.last_error), at most 10 each.
--   Unauthenticated deliveries never write here: they are only counted (rejected).
CREATE TABLE capydb_auth_sync.webhook_minutes (
    integration_id      text NOT NULL REFERENCES capydb_auth_sync.integrations (id) ON DELETE CASCADE,
    minute              timestamptz NOT NULL,
    applied             bigint NOT NULL DEFAULT 0,
    ignored_stale       bigint NOT NULL DEFAULT 0,
    ignored_duplicate   bigint NOT NULL DEFAULT 0,
    ignored_unhandled   bigint NOT NULL DEFAULT 0,
    rejected            bigint NOT NULL DEFAULT 0,
    malformed           bigint NOT NULL DEFAULT 0,
    unavailable         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (integration_id, minute)
);

CREATE TABLE capydb_auth_sync.webhook_errors (
    id                  bigserial PRIMARY KEY,
    integration_id      text NOT NULL REFERENCES capydb_auth_sync.integrations (id) ON DELETE CASCADE,
    at                  timestamptz NOT NULL,
    kind                text NOT NULL,
    message             text NOT NULL
);

-- Newest first, per integration (the status reads them, the flush trims them).
CREATE INDEX webhook_errors_by_integration ON capydb_auth_sync.webhook_errors (integration_id, id DESC);
