-- Billing-error checks (coordinator/monitors/billing.py). Not projections of the ledger: the
-- monitor's progress through it, and what it needs to compare documents with each other.

-- The last ledger position the checks have read (one row). A replica checks while it holds
-- this row locked; the others skip their run.
CREATE TABLE billing_checkpoint (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position bigint  NOT NULL CHECK (position >= 0)
);
INSERT INTO billing_checkpoint (position) VALUES (0);

-- Each store's WHMCS tax settings (TaxType, TaxL2Compound, …) as its agent reported them up
-- to the checkpoint: how the checks recompute its documents' taxes.
CREATE TABLE billing_store_settings (
    peer_id uuid  PRIMARY KEY,
    tax     jsonb NOT NULL
);

-- Each number issued through Concord with its document's date, up to the checkpoint: the
-- previous and next number of a series in a store, found by index.
CREATE TABLE billing_numbers (
    peer_id   uuid   NOT NULL,
    series    text   NOT NULL,
    period    text   NOT NULL,
    number    bigint NOT NULL,
    doctype   text   NOT NULL,
    doc_id    text   NOT NULL,
    formatted text   NOT NULL,
    doc_date  text   NOT NULL,  -- YYYY-MM-DD as in the snapshot; '' when it has none
    PRIMARY KEY (peer_id, series, period, number)
);
CREATE INDEX billing_numbers_document ON billing_numbers (peer_id, doctype, doc_id);

-- Documents whose client's VAT number VIES has not judged yet (VIES unavailable, or beyond
-- a run's lookups): asked again on later runs, oldest first.
CREATE TABLE billing_vies_pending (
    peer_id  uuid   NOT NULL,
    doctype  text   NOT NULL,
    doc_id   text   NOT NULL,
    position bigint NOT NULL,  -- the event whose snapshot carried the number
    PRIMARY KEY (peer_id, doctype, doc_id)
);
CREATE INDEX billing_vies_pending_order ON billing_vies_pending (position);
