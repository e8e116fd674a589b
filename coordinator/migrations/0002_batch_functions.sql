-- The ledger's SQL core: one call opens a batch, one call writes it. Each is a single round
-- trip and runs as its own statement (no BEGIN, no COMMIT: concord_write_batch is one
-- atomic, durable statement), so a batch costs the writer two round trips.
--
-- The ledger lock is a session-level advisory lock, taken by concord_open_batch and held
-- until the writer's batch is committed: the writer releases it once its queue is empty, or
-- hands it over at its next concord_open_batch (unlock then lock: PostgreSQL grants the lock
-- to a waiting replica first, so busy replicas alternate).

-- Takes the ledger lock, then reads the head and everything the batch's commands name.
-- Statements inside a function each take a fresh snapshot (READ COMMITTED), so the head
-- read after the lock sees the commit the lock waited for.
CREATE FUNCTION concord_open_batch(req jsonb, holding boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    head_position bigint;
    head_hash bytea;
    known jsonb;
    reservation_ids uuid[];
    found_reservations jsonb;
    warning_ids uuid[];
    result jsonb;
BEGIN
    IF holding THEN
        PERFORM pg_advisory_unlock(4859223896306639872);
    END IF;
    PERFORM pg_advisory_lock(4859223896306639872);  -- "Concord" + 0
    SELECT position, hash INTO head_position, head_hash
        FROM events ORDER BY position DESC LIMIT 1;
    result := jsonb_build_object('position', coalesce(head_position, 0),
                                 'hash', encode(head_hash, 'hex'));
    IF head_position IS DISTINCT FROM (req->>'cached')::bigint THEN
        result := result || jsonb_build_object('small', jsonb_build_object(
            'series', (SELECT coalesce(jsonb_agg(jsonb_build_array(name, settings)), '[]')
                       FROM series),
            'counters', (SELECT coalesce(jsonb_agg(jsonb_build_array(series, period, next,
                         highest)), '[]') FROM counters),
            'pool', (SELECT coalesce(jsonb_agg(jsonb_build_array(series, period, number)
                     ORDER BY series, period, number), '[]') FROM released_numbers),
            'peers', (SELECT coalesce(jsonb_agg(jsonb_build_array(id, name, url, token_sha256,
                      state, agent_version, reported)), '[]') FROM peers)));
    END IF;

    -- Lookups use "= ANY(array)" so every plan, generic ones included, is an index scan.
    known := '[]';
    IF jsonb_array_length(req->'event_ids') > 0 THEN
        SELECT coalesce(jsonb_agg(to_jsonb(e)), '[]') INTO known FROM events e
            WHERE e.event_id = ANY(ARRAY(
                SELECT x::uuid FROM jsonb_array_elements_text(req->'event_ids') x));
    END IF;
    reservation_ids := ARRAY(
        SELECT x::uuid FROM jsonb_array_elements_text(req->'reservation_ids') x
        UNION SELECT (e->'data'->>'reservation_id')::uuid FROM jsonb_array_elements(known) e
              WHERE e->'data' ? 'reservation_id');

    -- Composite keys are looked up with LATERAL … LIMIT 1 (each key names at most one live
    -- row; the LIMIT also keeps the planner from folding the subquery back into a hash join
    -- over the whole table, as it would because it takes any jsonb array for 100 rows).
    WITH found AS (
        SELECT r.* FROM reservations r WHERE r.id = ANY(reservation_ids)
        UNION
        SELECT r.* FROM jsonb_array_elements(req->'reservation_keys') k,
            LATERAL (SELECT * FROM reservations r
                     WHERE r.peer_id = (k->>0)::uuid AND r.doctype = k->>1
                       AND r.doc_id = k->>2 AND r.state <> 'released' LIMIT 1) r
        UNION
        SELECT r.* FROM jsonb_array_elements(req->'numbers') k,
            LATERAL (SELECT * FROM reservations r
                     WHERE r.series = k->>0 AND r.period = k->>1
                       AND r.number = (k->>2)::bigint AND r.state <> 'released' LIMIT 1) r
    )
    SELECT coalesce(jsonb_agg(to_jsonb(f)), '[]'),
           array_remove(array_agg(f.warning_id), NULL)
        INTO found_reservations, warning_ids FROM found f;

    RETURN result || jsonb_build_object(
        'events', known,
        'reservations', found_reservations,
        'warnings', (SELECT coalesce(jsonb_agg(to_jsonb(w)), '[]') FROM (
            SELECT w.* FROM warnings w
                WHERE w.id = ANY(warning_ids || ARRAY(
                    SELECT x::uuid FROM jsonb_array_elements_text(req->'warning_ids') x))
            UNION
            SELECT w.* FROM jsonb_array_elements(req->'warning_keys') k,
                LATERAL (SELECT * FROM warnings w WHERE w.code = k->>0
                         AND w.subject = k->>1 AND w.state = 'open' LIMIT 1) w) w),
        'documents', (SELECT coalesce(jsonb_agg(to_jsonb(d)), '[]') FROM (
            SELECT d.* FROM jsonb_array_elements(req->'document_keys') k,
                LATERAL (SELECT * FROM documents d WHERE d.peer_id = (k->>0)::uuid
                         AND d.doctype = k->>1 AND d.doc_id = k->>2 LIMIT 1) d
            UNION
            -- A repeated confirm compares its snapshot with the document's (decide.confirm).
            SELECT d.* FROM documents d WHERE d.reservation_id = ANY(reservation_ids)
            UNION
            SELECT d.* FROM jsonb_array_elements_text(req->'formatted') f,
                LATERAL (SELECT * FROM documents d WHERE d.formatted = f OFFSET 0) d) d));
END $$;

-- Appends the batch's events and writes every projection row it changed, in an order that
-- keeps the unique indexes satisfied: a number released in this batch is freed (UPDATE)
-- before a reservation reusing it is inserted.
CREATE FUNCTION concord_write_batch(b jsonb) RETURNS void LANGUAGE plpgsql AS $$
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

    INSERT INTO documents (peer_id, doctype, doc_id, reservation_id, series, period, number,
                           formatted, snapshot, voided, imported, position)
        SELECT * FROM jsonb_to_recordset(b->'documents') AS x(peer_id uuid, doctype text,
             doc_id text, reservation_id uuid, series text, period text, number bigint,
             formatted text, snapshot jsonb, voided boolean, imported boolean, position bigint)
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
