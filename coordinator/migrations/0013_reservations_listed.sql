-- GET /v1/reservations lists reservations oldest first, a page after a reservation's
-- (reserved_at, id), of one state or of all four (a merge of four ranges of this index): a
-- page reads its own rows at any ledger size. Without it, every page read and sorted the
-- whole table.
CREATE INDEX reservations_listed ON reservations (state, reserved_at, id);
