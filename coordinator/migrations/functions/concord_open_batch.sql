-- Opens a ledger batch: takes the ledger lock, then reads the head and everything the
-- batch's commands name, in one round trip (docs/ledger.md, "Group commit").
--
-- The ledger lock (key: coordinator/advisory_locks.py LEDGER, passed as ledger_lock) is a
-- session-level advisory lock held until the writer's batch is committed: the writer
-- releases it once its queue is empty, or hands it over at its next concord_open_batch
-- (unlock then lock: PostgreSQL grants the lock to a waiting replica first, so busy
-- replicas alternate). Statements inside a function each take a fresh snapshot (READ
-- COMMITTED), so the head read after the lock sees the commit the lock waited for.
--
-- enable_seqscan = off: every lookup below names its rows by a key with an index, and must
-- reach them by that index whatever the plan. PL/pgSQL caches each statement's plan for
-- the life of the connection, and after five calls settles on a generic plan costed with
-- the table sizes of that moment; nothing replans it until the table's statistics change
-- (an ANALYZE, by hand or by autovacuum). The writer keeps one connection for its life, so
-- plans made on a young ledger, where scanning a one-page table is cheapest, would scan
-- reservations and documents whole for every batch once they hold millions of rows. With
-- sequential scans priced out, the only plans left are the index ones, whatever the
-- statistics. (Custom plans for every call would also follow the sizes, at the price of
-- planning every statement of every batch.)
CREATE OR REPLACE FUNCTION concord_open_batch(req jsonb, holding boolean, ledger_lock bigint)
RETURNS jsonb LANGUAGE plpgsql SET enable_seqscan = off AS $$
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
        PERFORM pg_advisory_unlock(ledger_lock);
    END IF;
    PERFORM pg_advisory_lock(ledger_lock);
    SELECT position, hash INTO head_position, head_hash
        FROM events ORDER BY position DESC LIMIT 1;
    result := jsonb_build_object('position', coalesce(head_position, 0),
                                 'hash', encode(head_hash, 'hex'));
    -- The small tables come back when the caller has none cached (cached: null) or another
    -- process wrote since. An empty ledger's head is position 0, not NULL: compared with
    -- NULL, "nothing cached" would look like "cached the empty ledger".
    IF req->>'cached' IS NULL OR coalesce(head_position, 0) <> (req->>'cached')::bigint THEN
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

    -- Lookups use "= ANY(array)" on a key's index.
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
        -- Numbers imported documents carry: from the counter on (the candidates of a
        -- reserve), and the ones an import names.
        'external', (SELECT coalesce(jsonb_agg(jsonb_build_array(x.series, x.period, x.number,
                                                                  x.formatted)), '[]') FROM (
            SELECT x.* FROM jsonb_array_elements(coalesce(req->'external_keys', '[]')) k,
                LATERAL (SELECT * FROM external_numbers x
                         WHERE x.series = k->>0 AND x.period = k->>1
                           AND x.number >= coalesce((SELECT c.next FROM counters c
                                                     WHERE c.series = k->>0
                                                       AND c.period = k->>1), 0)) x
            UNION
            SELECT x.* FROM jsonb_array_elements(coalesce(req->'external_numbers', '[]')) k,
                LATERAL (SELECT * FROM external_numbers x WHERE x.series = k->>0
                         AND x.period = k->>1 AND x.number = (k->>2)::bigint) x) x),
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
