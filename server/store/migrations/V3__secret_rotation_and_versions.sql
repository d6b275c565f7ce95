-- Webhook secret rotation (SPEC §8): the replaced secret keeps verifying until a deadline.
-- Optimistic concurrency: every write of an integration bumps `version`, and a write that
-- read an older version changes nothing (the caller re-reads and merges again).
ALTER TABLE capydb_auth_sync.integrations
    ADD COLUMN previous_webhook_secret_enc   text,
    ADD COLUMN previous_webhook_secret_until timestamptz,
    ADD COLUMN version                       bigint NOT NULL DEFAULT 1;
