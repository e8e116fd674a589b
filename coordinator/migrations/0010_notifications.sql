-- Warning notifications (webhook, e-mail): what each channel has queued and delivered. Not
-- projections of the ledger: they record deliveries, which the ledger cannot know
-- (coordinator/notifications/outbox.py).

-- The warning changes in ledger order, reached by index however long the ledger grows.
CREATE INDEX events_warning_changes ON events (position)
    WHERE type IN ('WarningRaised', 'WarningResolved');

-- Per channel, the ledger position up to which its warning changes are queued.
CREATE TABLE notification_checkpoints (
    channel  text   PRIMARY KEY CHECK (channel IN ('webhook', 'email')),
    position bigint NOT NULL CHECK (position >= 0)
);

-- One row per warning, change and channel, so each is delivered at most once: delivered_at
-- set once the receiver took it. claimed_until in the future: one replica is delivering it
-- (a replica that stopped mid-delivery leaves a claim that runs out); due_at: the next try
-- after a failed one.
CREATE TABLE notifications (
    warning_id    uuid        NOT NULL,
    change        text        NOT NULL CHECK (change IN ('raised', 'resolved')),
    channel       text        NOT NULL CHECK (channel IN ('webhook', 'email')),
    position      bigint      NOT NULL,  -- the change's event; the head when the channel began
    payload       jsonb       NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    due_at        timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz,
    last_error    text,
    delivered_at  timestamptz,
    PRIMARY KEY (warning_id, change, channel)
);
CREATE INDEX notifications_due ON notifications (channel, position) WHERE delivered_at IS NULL;
