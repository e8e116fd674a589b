"""Warning notifications: each warning raised or resolved in the ledger is delivered once per
channel (a signed webhook, e-mail over SMTP), from a durable queue in PostgreSQL, by one
replica, in the background (docs/operations.md, "Notifications")."""
