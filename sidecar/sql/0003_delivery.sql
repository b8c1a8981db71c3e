-- Delivery: claims with a lease, follow-ups for async replies, replay bookkeeping.
--
-- A queue is (mailbox_name, region_name): every region gets its own copy of a webhook under the
-- same mailbox name, and one slow region must not hold up another. A queue's head is its lowest
-- pending id; the queue is due when the head's schedule_for has passed, and free when the head is
-- not claimed (claimed_until is NULL or in the past). A worker claims the head and the rows behind
-- it by setting claimed_until/claimed_by; a killed worker's claim simply lapses.

ALTER TABLE webhook_payload
    ADD COLUMN claimed_until timestamptz,
    ADD COLUMN claimed_by    text,
    ADD COLUMN followup_id   bigint,       -- webhook_followup.id when a provider waits for the answer
    ADD COLUMN replayed_at   timestamptz,  -- the maximum age counts from here after a replay
    ADD COLUMN replays       integer NOT NULL DEFAULT 0;

-- The claim walks the queues in key order, one index probe per queue (a skip scan). It replaces
-- 0002's pending (mailbox_name, id) index, whose queries it serves as well (mailbox_name is its
-- prefix). schedule_for and the claim columns stay out of it on purpose: claiming, renewing and
-- releasing then change no indexed column, so PostgreSQL can update those rows in place (HOT).
CREATE INDEX webhook_payload_queue_head ON webhook_payload (mailbox_name, region_name, id)
    WHERE state = 'pending';
DROP INDEX webhook_payload_pending_head;

-- Retention: delivered rows are purged once older than delivery.retention_s.
CREATE INDEX webhook_payload_delivered ON webhook_payload (delivered_at) WHERE state = 'delivered';

-- The rows of one follow-up group, counted when one of them finishes.
CREATE INDEX webhook_payload_followup ON webhook_payload (followup_id) WHERE followup_id IS NOT NULL;

-- An async reply (reference §3.1 step 6, §3.3): the provider was answered at once, and the answer
-- of the regions goes to `url` once each region of the webhook has been tried.
--   waiting   → some region rows have not been tried yet (or none succeeded and some may still)
--   pending   → due for posting at schedule_for
--   delivered → posted; skipped → nothing to post (no region answered 2xx JSON); dead → gave up
-- No foreign key from webhook_payload: purging either side must never block on the other, and a
-- row whose follow-up is gone just has nothing to report to.
CREATE TABLE webhook_followup (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('slack', 'discord')),
    url             text NOT NULL,            -- Slack response_url, or the Discord webhook path
    provider        text,
    integration_id  bigint,
    date_added      timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'waiting'
                    CHECK (state IN ('waiting', 'pending', 'delivered', 'skipped', 'dead')),
    schedule_for    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    reply_body      bytea,                    -- the answer of the last region (in region order) that answered 2xx
    reply_row_id    bigint,                   -- which row gave it
    claimed_until   timestamptz,
    claimed_by      text,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz
);

CREATE INDEX webhook_followup_due ON webhook_followup (schedule_for) WHERE state = 'pending';
-- Follow-ups outlive their use within minutes; the retention purge removes them by age.
CREATE INDEX webhook_followup_age ON webhook_followup (date_added);
