-- The ledger: append-only, hash-chained, position gapless in commit order.
CREATE TABLE events (
    position    bigint      PRIMARY KEY CHECK (position > 0),
    event_id    uuid        NOT NULL UNIQUE,
    type        text        NOT NULL,
    stream      text        NOT NULL,
    data        jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL,
    prev_hash   bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash        bytea       NOT NULL CHECK (octet_length(hash) = 32)
);

CREATE FUNCTION concord_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the Concord ledger is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION concord_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION concord_refuse_change();

-- Projections: rebuilt from the events; written in the transaction of the append.
CREATE TABLE series (
    name     text  PRIMARY KEY,
    settings jsonb NOT NULL
);

CREATE TABLE counters (
    series  text   NOT NULL,
    period  text   NOT NULL,
    next    bigint NOT NULL,
    highest bigint,
    PRIMARY KEY (series, period)
);

CREATE TABLE released_numbers (
    series text   NOT NULL,
    period text   NOT NULL,
    number bigint NOT NULL,
    PRIMARY KEY (series, period, number)
);

CREATE TABLE reservations (
    id          uuid        PRIMARY KEY,
    peer_id     uuid        NOT NULL,
    doctype     text        NOT NULL,
    doc_id      text        NOT NULL,
    series      text        NOT NULL,
    period      text        NOT NULL,
    number      bigint      NOT NULL,
    formatted   text        NOT NULL,
    doc_date    date        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('reserved', 'issued', 'released', 'void')),
    reserved_at timestamptz NOT NULL,
    position    bigint      NOT NULL,
    hash        bytea       NOT NULL,
    warning_id  uuid
);
-- The invariants, enforced a second time by the database itself.
CREATE UNIQUE INDEX reservations_one_per_document
    ON reservations (peer_id, doctype, doc_id) WHERE state <> 'released';
CREATE UNIQUE INDEX reservations_one_per_number
    ON reservations (series, period, number) WHERE state <> 'released';
CREATE INDEX reservations_pending ON reservations (reserved_at) WHERE state = 'reserved';

CREATE TABLE documents (
    peer_id        uuid    NOT NULL,
    doctype        text    NOT NULL,
    doc_id         text    NOT NULL,
    reservation_id uuid    UNIQUE,           -- NULL: imported, numbered before Concord
    series         text,
    period         text,
    number         bigint,
    formatted      text    NOT NULL,
    snapshot       jsonb   NOT NULL,
    voided         boolean NOT NULL,
    imported       boolean NOT NULL,
    position       bigint  NOT NULL,         -- the event that last changed the snapshot
    PRIMARY KEY (peer_id, doctype, doc_id)
);
CREATE INDEX documents_formatted ON documents (formatted);

CREATE TABLE peers (
    id            uuid  PRIMARY KEY,
    name          text  NOT NULL UNIQUE,
    url           text  NOT NULL,
    token_sha256  text  NOT NULL UNIQUE,
    state         text  NOT NULL CHECK (state IN ('active', 'retired')),
    agent_version text,
    reported      jsonb
);

CREATE TABLE warnings (
    id          uuid        PRIMARY KEY,
    code        text        NOT NULL,
    subject     text        NOT NULL,
    message     text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('open', 'resolved')),
    raised_at   timestamptz NOT NULL,
    resolved_at timestamptz
);
CREATE UNIQUE INDEX warnings_one_open ON warnings (code, subject) WHERE state = 'open';

-- Not projections: liveness and operator/reader credentials are not numbering facts.
CREATE TABLE peer_liveness (
    peer_id           uuid        PRIMARY KEY,
    last_heartbeat_at timestamptz NOT NULL
);

CREATE TABLE api_tokens (
    token_sha256 text        PRIMARY KEY,
    role         text        NOT NULL CHECK (role IN ('operator', 'reader')),
    label        text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);
