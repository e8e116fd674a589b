"""KashFlow accounting: paid invoices of the ledger posted to KashFlow (docs/design.md §7)."""
