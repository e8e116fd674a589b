-- The operator console (coordinator/console/): its reads by index at any ledger size, and
-- its sign-in sessions.

-- Time -> position: the overview's hour boundaries and the start of today and this month.
CREATE INDEX events_recorded_at ON events (recorded_at, position);
-- A number's history: the events of its reservations and of its document.
CREATE INDEX events_stream ON events (stream, position);
-- Numbers issued since a position, by series and store: an index-only count.
CREATE INDEX reservations_issued_position ON reservations (position) INCLUDE (series, peer_id)
    WHERE state = 'issued';
-- The numbers voided, counted: the console's counts of issued numbers stay valid until then.
CREATE INDEX reservations_voided ON reservations (position) WHERE state = 'void';
-- Search by formatted number, released reservations included.
CREATE INDEX reservations_formatted ON reservations (formatted);
-- Search by the WHMCS client's id, newest first.
CREATE INDEX documents_client ON documents ((snapshot->'ClientData'->>'UserID'), position);
-- Warnings newest first, open or resolved.
CREATE INDEX warnings_state_raised ON warnings (state, raised_at DESC);

-- Not a projection: who is signed in to the console. The cookie holds a random session id;
-- only its SHA-256 is stored, with the digest of the token that signed in (its role is
-- looked up on every request, so a deleted token ends its sessions).
CREATE TABLE console_sessions (
    id_sha256    text        PRIMARY KEY,
    token_sha256 text        NOT NULL REFERENCES api_tokens (token_sha256) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
