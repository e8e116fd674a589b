-- KashFlow sync bookkeeping. Not projections of the ledger: they record what was done in
-- KashFlow, which the ledger cannot know, and they change as the work progresses.

-- The last ledger position the subscriber has read (one row), and the scheduled daily run
-- last claimed by a replica (each scheduled instant runs once, whichever replica is first).
CREATE TABLE kashflow_checkpoint (
    only_row     boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    position     bigint      NOT NULL CHECK (position >= 0),
    daily_run_at timestamptz
);
INSERT INTO kashflow_checkpoint (position) VALUES (0);

-- Each store's customer-code prefix, fixed when first seen: a renamed store keeps its
-- KashFlow customers, and two names that reduce to the same letters and digits get
-- different prefixes.
CREATE TABLE kashflow_stores (
    peer_id uuid PRIMARY KEY,
    prefix  text NOT NULL UNIQUE CHECK (prefix ~ '^[A-Z][A-Z0-9]*$')
);

-- Customers known to exist in KashFlow, with a digest of the details last sent.
CREATE TABLE kashflow_customers (
    code           text    PRIMARY KEY CHECK (code ~ '^[A-Z0-9]+$'),
    customer_id    integer NOT NULL CHECK (customer_id > 0),
    details_sha256 text    NOT NULL
);

-- Invoices seen paid in the ledger, and how far each got in KashFlow. An *_intent_at set
-- while its id is NULL means the insert may have reached KashFlow: look it up before
-- inserting again.
CREATE TABLE kashflow_invoices (
    peer_id            uuid        NOT NULL,
    doc_id             text        NOT NULL,
    position           bigint      NOT NULL UNIQUE,  -- the event that first showed it paid
    invoice_intent_at  timestamptz,
    invoice_number     integer     CHECK (invoice_number > 0),
    payment_intent_at  timestamptz,
    payment_id         integer     CHECK (payment_id > 0),
    posted_at          timestamptz,                  -- invoice and payment are in KashFlow
    attempts           integer     NOT NULL DEFAULT 0,
    last_error         text,
    changed_status     text,                         -- a later status once posted (Refunded…)
    PRIMARY KEY (peer_id, doc_id)
);
CREATE INDEX kashflow_invoices_due ON kashflow_invoices (position) WHERE posted_at IS NULL;
