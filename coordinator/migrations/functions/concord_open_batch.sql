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
-- The lookups by key are concord_read_batch's; enable_seqscan = off for the reason it gives
-- (the head is read through the events' primary key).
CREATE OR REPLACE FUNCTION concord_open_batch(req jsonb, holding boolean, ledger_lock bigint)
RETURNS jsonb LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    head_position bigint;
    head_hash bytea;
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

    RETURN result || concord_read_batch(req);
END $$;
