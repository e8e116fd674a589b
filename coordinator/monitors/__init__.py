"""Background checks of the coordinator that read the ledger and raise warnings through the
ledger writer, outside the numbering decisions (started in coordinator/app.py)."""
