-- Counter numbers that imported documents carry (DocumentImported's "number"): a reserve
-- skips them (ExternalNumberDetected), so no number is handed out twice. A projection:
-- replaying the ledger yields it. Rows stay after the counter passed them: an import of
-- another text naming the same number is then still a collision.
CREATE TABLE external_numbers (
    series    text   NOT NULL,
    period    text   NOT NULL,
    number    bigint NOT NULL,
    formatted text   NOT NULL,
    PRIMARY KEY (series, period, number)
);
