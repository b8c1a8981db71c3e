-- The directory: who owns an integration or an organization.
-- Table and column names follow Sentry's models so an existing control database maps onto them.

CREATE TABLE region (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_-]+$'),
    address     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE integration (
    id           bigint PRIMARY KEY,
    provider     text NOT NULL,
    external_id  text NOT NULL,
    status       text NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'disabled', 'pending_deletion')),
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    UNIQUE (provider, external_id)
);

-- No foreign key to region: region names are checked against the configured regions, and an
-- organization may live in a region this deployment does not route to.
CREATE TABLE organization_mapping (
    organization_id  bigint PRIMARY KEY,
    slug             text NOT NULL,
    region_name      text NOT NULL,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'disabled', 'pending_deletion')),
    -- Deferred so a load that swaps two slugs does not fail half-way.
    CONSTRAINT organization_mapping_slug_key UNIQUE (slug) DEFERRABLE INITIALLY DEFERRED
);

-- No foreign key to organization_mapping either: Sentry allows the link before the mapping
-- exists; such an organization simply has no region yet.
CREATE TABLE organization_integration (
    organization_id  bigint NOT NULL,
    integration_id   bigint NOT NULL REFERENCES integration (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'disabled', 'pending_deletion')),
    PRIMARY KEY (organization_id, integration_id)
);

-- The primary key leads with organization_id; lookups go by integration.
CREATE INDEX organization_integration_integration_id ON organization_integration (integration_id);

-- Change notifications for the sidecars' caches: channel silo_directory, payload
-- {"table": …, "op": INSERT|UPDATE|DELETE|TRUNCATE, "ids": {<key columns of the row>}}.
-- The trigger arguments name the key columns; an UPDATE that changes a key also sends the old keys.
CREATE FUNCTION silo_directory_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_ids jsonb;
    old_ids jsonb;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('silo_directory', json_build_object('table', TG_TABLE_NAME, 'op', TG_OP)::text);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT jsonb_object_agg(key, value) INTO new_ids FROM jsonb_each(to_jsonb(NEW)) WHERE key = ANY (TG_ARGV);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        SELECT jsonb_object_agg(key, value) INTO old_ids FROM jsonb_each(to_jsonb(OLD)) WHERE key = ANY (TG_ARGV);
    END IF;
    PERFORM pg_notify('silo_directory', jsonb_strip_nulls(jsonb_build_object(
        'table', TG_TABLE_NAME,
        'op', TG_OP,
        'ids', coalesce(new_ids, old_ids),
        'old_ids', CASE WHEN TG_OP = 'UPDATE' AND old_ids IS DISTINCT FROM new_ids THEN old_ids END
    ))::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER region_notify AFTER INSERT OR UPDATE OR DELETE ON region
    FOR EACH ROW EXECUTE FUNCTION silo_directory_notify('name');
CREATE TRIGGER integration_notify AFTER INSERT OR UPDATE OR DELETE ON integration
    FOR EACH ROW EXECUTE FUNCTION silo_directory_notify('id', 'provider', 'external_id');
CREATE TRIGGER organization_mapping_notify AFTER INSERT OR UPDATE OR DELETE ON organization_mapping
    FOR EACH ROW EXECUTE FUNCTION silo_directory_notify('organization_id');
CREATE TRIGGER organization_integration_notify AFTER INSERT OR UPDATE OR DELETE ON organization_integration
    FOR EACH ROW EXECUTE FUNCTION silo_directory_notify('organization_id', 'integration_id');

CREATE TRIGGER region_notify_truncate AFTER TRUNCATE ON region
    FOR EACH STATEMENT EXECUTE FUNCTION silo_directory_notify();
CREATE TRIGGER integration_notify_truncate AFTER TRUNCATE ON integration
    FOR EACH STATEMENT EXECUTE FUNCTION silo_directory_notify();
CREATE TRIGGER organization_mapping_notify_truncate AFTER TRUNCATE ON organization_mapping
    FOR EACH STATEMENT EXECUTE FUNCTION silo_directory_notify();
CREATE TRIGGER organization_integration_notify_truncate AFTER TRUNCATE ON organization_integration
    FOR EACH STATEMENT EXECUTE FUNCTION silo_directory_notify();
