"""The coordinator's source of the Get feed (getfeed/): every store's issued documents and
the VIES verdict cache, in PostgreSQL."""
