-- Writes a ledger batch: appends its events and writes every projection row it changed, in
-- an order that keeps the unique indexes satisfied (a number released in this batch is
-- freed before a reservation reusing it is inserted). One statement outside any
-- transaction block, so it commits on its own (docs/ledger.md, "Group commit").
--
-- enable_seqscan = off, for the reason given in concord_open_batch.sql: every row changed
-- here is named by a key with an index (and the ON CONFLICT arbiters and unique checks go
-- through their indexes anyway), so no plan, cached on a young ledger or not, may read a
-- table whole.
CREATE OR REPLACE FUNCTION concord_write_batch(b jsonb)
RETURNS void LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    upd record;
BEGIN
    INSERT INTO events (position, event_id, type, stream, data, recorded_at, prev_hash, hash)
        SELECT x.position, x.event_id, x.type, x.stream, x.data, x.recorded_at,
               decode(x.prev_hash, 'hex'), decode(x.hash, 'hex')
        FROM jsonb_to_recordset(b->'events') AS x(position bigint, event_id uuid, type text,
             stream text, data jsonb, recorded_at timestamptz, prev_hash text, hash text);

    INSERT INTO series (name, settings)
        SELECT x.name, x.settings FROM jsonb_to_recordset(b->'series') AS x(name text, settings jsonb)
        ON CONFLICT (name) DO UPDATE SET settings = EXCLUDED.settings;

    INSERT INTO counters (series, period, next, highest)
        SELECT * FROM jsonb_to_recordset(b->'counters')
            AS x(series text, period text, next bigint, highest bigint)
        ON CONFLICT (series, period) DO UPDATE SET next = EXCLUDED.next, highest = EXCLUDED.highest;

    IF jsonb_array_length(b->'pool_removed') > 0 THEN
    DELETE FROM released_numbers r USING jsonb_array_elements(b->'pool_removed') k
        WHERE r.series = k->>0 AND r.period = k->>1 AND r.number = (k->>2)::bigint
          AND r.number = ANY(ARRAY(SELECT (x->>2)::bigint
                                   FROM jsonb_array_elements(b->'pool_removed') x));
    END IF;
    INSERT INTO released_numbers (series, period, number)
        SELECT k->>0, k->>1, (k->>2)::bigint FROM jsonb_array_elements(b->'pool_added') k;

    -- Row by row on the primary key: a join here would be planned as a scan of the table.
    FOR upd IN SELECT * FROM jsonb_to_recordset(b->'reservations_updated')
            AS x(id uuid, state text, position bigint, hash text, warning_id uuid) LOOP
        UPDATE reservations SET state = upd.state, position = upd.position,
                                hash = decode(upd.hash, 'hex'), warning_id = upd.warning_id
            WHERE id = upd.id;
    END LOOP;
    INSERT INTO reservations (id, peer_id, doctype, doc_id, series, period, number, formatted,
                              doc_date, state, reserved_at, position, hash, warning_id)
        SELECT x.id, x.peer_id, x.doctype, x.doc_id, x.series, x.period, x.number, x.formatted,
               x.doc_date, x.state, x.reserved_at, x.position, decode(x.hash, 'hex'),
               x.warning_id
        FROM jsonb_to_recordset(b->'reservations_created') AS x(id uuid, peer_id uuid,
             doctype text, doc_id text, series text, period text, number bigint,
             formatted text, doc_date date, state text, reserved_at timestamptz,
             position bigint, hash text, warning_id uuid);

    -- Documents come without their snapshot: it is the document of the event that last set
    -- it, the one at the document's position (appended above, or already in the ledger), so
    -- a confirmed document crosses the wire once, and the audit's replay sends none. A
    -- scalar subquery, so each is one primary-key lookup (a join could be planned, on a
    -- young ledger, as a hash join over the whole table); a position with no event leaves
    -- the snapshot NULL, which the table refuses, failing the batch instead of dropping the
    -- row.
    INSERT INTO documents (peer_id, doctype, doc_id, reservation_id, series, period, number,
                           formatted, snapshot, voided, imported, position)
        SELECT x.peer_id, x.doctype, x.doc_id, x.reservation_id, x.series, x.period, x.number,
               x.formatted,
               (SELECT e.data->'document' FROM events e WHERE e.position = x.position),
               x.voided, x.imported, x.position
        FROM jsonb_to_recordset(b->'documents') AS x(peer_id uuid, doctype text,
             doc_id text, reservation_id uuid, series text, period text, number bigint,
             formatted text, voided boolean, imported boolean, position bigint)
        ON CONFLICT (peer_id, doctype, doc_id) DO UPDATE SET
            reservation_id = EXCLUDED.reservation_id, series = EXCLUDED.series,
            period = EXCLUDED.period, number = EXCLUDED.number, formatted = EXCLUDED.formatted,
            snapshot = EXCLUDED.snapshot, voided = EXCLUDED.voided,
            imported = EXCLUDED.imported, position = EXCLUDED.position;
    IF jsonb_array_length(b->'voided') > 0 THEN
        UPDATE documents SET voided = true
            WHERE reservation_id = ANY(ARRAY(
                SELECT x::uuid FROM jsonb_array_elements_text(b->'voided') x));
    END IF;

    INSERT INTO external_numbers (series, period, number, formatted)
        SELECT k->>0, k->>1, (k->>2)::bigint, k->>3
        FROM jsonb_array_elements(coalesce(b->'external_added', '[]')) k;

    INSERT INTO peers (id, name, url, token_sha256, state, agent_version, reported)
        SELECT * FROM jsonb_to_recordset(b->'peers') AS x(id uuid, name text, url text,
             token_sha256 text, state text, agent_version text, reported jsonb)
        ON CONFLICT (id) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256,
            state = EXCLUDED.state, agent_version = EXCLUDED.agent_version,
            reported = EXCLUDED.reported;

    INSERT INTO warnings (id, code, subject, message, state, raised_at, resolved_at)
        SELECT * FROM jsonb_to_recordset(b->'warnings') AS x(id uuid, code text, subject text,
             message text, state text, raised_at timestamptz, resolved_at timestamptz)
        ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, resolved_at = EXCLUDED.resolved_at;
END $$;
