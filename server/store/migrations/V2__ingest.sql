-- Ingest pipeline: every replica caches integrations in memory and hears of changes through
-- LISTEN/NOTIFY on this channel (the payload is the integration id); and the durable inbox,
-- where verified deliveries wait while their project database cannot take them.

CREATE FUNCTION capydb_auth_sync.notify_integration_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('capydb_auth_sync_integrations', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END;
$$;

CREATE TRIGGER integrations_notify
    AFTER INSERT OR UPDATE OR DELETE ON capydb_auth_sync.integrations
    FOR EACH ROW EXECUTE FUNCTION capydb_auth_sync.notify_integration_change();

CREATE TABLE capydb_auth_sync.inbox (
    id              bigserial PRIMARY KEY,
    integration_id  text NOT NULL REFERENCES capydb_auth_sync.integrations (id) ON DELETE CASCADE,
    -- When the receiver verified it; parked changes keep their own event times.
    received_at     timestamptz NOT NULL,
    delivery_id     text,
    event_type      text NOT NULL,
    -- The provider-neutral changes (users::UserChange as JSON), already made storable.
    changes         jsonb NOT NULL
);

-- Drained oldest first, per integration.
CREATE INDEX inbox_by_integration ON capydb_auth_sync.inbox (integration_id, id);
