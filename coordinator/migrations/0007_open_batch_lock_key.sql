-- concord_open_batch takes the ledger lock's key as a parameter (defined once, in
-- coordinator/advisory_locks.py): the version with the key written into it goes.
-- functions/concord_open_batch.sql defines the new one.
DROP FUNCTION IF EXISTS concord_open_batch(jsonb, boolean);
