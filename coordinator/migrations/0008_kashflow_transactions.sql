-- KashFlow sync: WHMCS's transactions mirrored one by one, and an outcome for every invoice.

-- An invoice is settled when nothing of it is left to do: posted with all its transactions,
-- or dropped (unpaid, cancelled or voided before it reached KashFlow; invoice_number NULL).
-- A later event of the invoice makes it due again.
ALTER TABLE kashflow_invoices RENAME COLUMN posted_at TO settled_at;

-- Each payment (money in) and refund (money out) of a WHMCS transaction (tblaccounts.id),
-- posted as one KashFlow invoice payment; a refund as a negative one. intent_at set while
-- payment_id is NULL: the insert may have reached KashFlow, look it up by its note first.
-- transaction_id 0 is the one payment of the invoice's total that snapshots without
-- transactions (and the sync before this migration) gave.
CREATE TABLE kashflow_transactions (
    peer_id        uuid        NOT NULL,
    doc_id         text        NOT NULL,
    transaction_id bigint      NOT NULL CHECK (transaction_id >= 0),
    direction      text        NOT NULL CHECK (direction IN ('in', 'out')),
    intent_at      timestamptz NOT NULL,
    payment_id     integer     CHECK (payment_id > 0),
    PRIMARY KEY (peer_id, doc_id, transaction_id, direction),
    FOREIGN KEY (peer_id, doc_id) REFERENCES kashflow_invoices (peer_id, doc_id)
);
INSERT INTO kashflow_transactions (peer_id, doc_id, transaction_id, direction, intent_at,
                                   payment_id)
SELECT peer_id, doc_id, 0, 'in', payment_intent_at, payment_id
  FROM kashflow_invoices WHERE payment_intent_at IS NOT NULL;
ALTER TABLE kashflow_invoices DROP COLUMN payment_intent_at, DROP COLUMN payment_id;
