"""KashFlow accounting: paid invoices of the ledger posted to KashFlow (DESIGN §7)."""
