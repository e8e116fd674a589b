-- The WebService Get feed: its reading order over the documents projection, and the VIES cache.

-- Keyset pages in the feed's order: document date, then ID (numeric order for digit strings),
-- then store and type to make the key unique.
CREATE INDEX documents_feed_order ON documents (
    (coalesce(snapshot->'DocData'->>'Date', '')), (length(doc_id)), doc_id, peer_id, doctype);

-- VIES verdicts on client VAT numbers: asked once per number and cache period. Not a ledger
-- projection: it may be emptied at any time.
CREATE TABLE vies_cache (
    country    text        NOT NULL,
    number     text        NOT NULL,
    valid      boolean     NOT NULL,
    checked_at timestamptz NOT NULL,
    PRIMARY KEY (country, number)
);
