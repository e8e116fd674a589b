-- Reads everything a ledger batch's commands name (req: store.batch_request), by key, in one
-- round trip: the events already recorded with the batch's event ids, the reservations,
-- warnings and documents it looks at, and the numbers imported documents carry. It takes
-- no lock and reads no head: concord_open_batch calls it under the ledger lock, and the
-- writer calls it on a second connection to read the next batch ahead while the one before
-- is being written (it holds the lock throughout; what that write changes it keeps in its
-- own state, over what this read returns: coordinator/ledger/writer.py).
--
-- enable_seqscan = off: every lookup below names its rows by a key with an index, and must
-- reach them by that index whatever the plan. PL/pgSQL caches each statement's plan for
-- the life of the connection, and after five calls settles on a generic plan costed with
-- the table sizes of that moment; nothing replans it until the table's statistics change
-- (an ANALYZE, by hand or by autovacuum). The writer keeps its connections for their life,
-- so plans made on a young ledger, where scanning a one-page table is cheapest, would scan
-- reservations and documents whole for every batch once they hold millions of rows. With
-- sequential scans priced out, the only plans left are the index ones, whatever the
-- statistics. (Custom plans for every call would also follow the sizes, at the price of
-- planning every statement of every batch.)
CREATE OR REPLACE FUNCTION concord_read_batch(req jsonb)
RETURNS jsonb LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    known jsonb;
    reservation_ids uuid[];
    found_reservations jsonb;
    warning_ids uuid[];
BEGIN
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

    RETURN jsonb_build_object(
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
