-- The outbox: one row per (webhook, target region), delivered per mailbox in id order.

CREATE TABLE webhook_payload (
    id               bigserial PRIMARY KEY,
    mailbox_name     text NOT NULL,
    provider         text,
    region_name      text NOT NULL CHECK (region_name <> ''),
    integration_id   bigint,
    date_added       timestamptz NOT NULL DEFAULT now(),
    schedule_for     timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    request_method   text NOT NULL,
    request_path     text NOT NULL,                     -- with the query string
    request_headers  jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_body     bytea NOT NULL DEFAULT ''::bytea,  -- exact bytes, never re-encoded
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    last_attempt_at  timestamptz,
    last_status      integer,                           -- HTTP status of the last attempt, if any
    last_error       text,                              -- transport error or why it went dead
    delivered_at     timestamptz
);

CREATE INDEX webhook_payload_mailbox_id ON webhook_payload (mailbox_name, id);

-- The delivery worker only looks at pending rows; a mailbox's head is its lowest pending id.
-- Delivered and dead rows pile up, so keeping them out of this index keeps it small.
CREATE INDEX webhook_payload_pending_head ON webhook_payload (mailbox_name, id)
    INCLUDE (schedule_for) WHERE state = 'pending';

-- Dead letters are listed and replayed by operators.
CREATE INDEX webhook_payload_dead ON webhook_payload (id) WHERE state = 'dead';

-- The volume gate (reference §2.6): webhooks per (provider, integration) in the current window,
-- counted here so every sidecar replica counts into the same number. One row per integration:
-- a new window resets the count in place, so the table never grows beyond the integrations.
-- Crossing the limit sets bucketed_until; while it lies in the future, the integration's mailboxes
-- are split into buckets.
CREATE TABLE webhook_volume (
    provider        text NOT NULL,
    integration_id  bigint NOT NULL,
    window_start    timestamptz NOT NULL,
    hits            integer NOT NULL DEFAULT 0,
    bucketed_until  timestamptz,
    PRIMARY KEY (provider, integration_id)
);
