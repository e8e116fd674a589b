-- The agent's own tables, named mod_concord_* as WHMCS add-on tables are. Created on first start.

-- Numbers written into tblinvoices in the same transaction, waiting for their confirm.
CREATE TABLE IF NOT EXISTS mod_concord_outbox (
  reservation_id CHAR(36) NOT NULL PRIMARY KEY,
  invoice_id INT NOT NULL,
  doctype VARCHAR(16) NOT NULL,
  formatted VARCHAR(64) NOT NULL,
  created_at DATETIME(6) NOT NULL,
  confirmed_at DATETIME(6) NULL,
  KEY pending (confirmed_at, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The coordinator's receipt for every number this store got: proof against a rewritten ledger.
CREATE TABLE IF NOT EXISTS mod_concord_receipts (
  reservation_id CHAR(36) NOT NULL PRIMARY KEY,
  invoice_id INT NOT NULL,
  doctype VARCHAR(16) NOT NULL,
  series VARCHAR(16) NOT NULL,
  period VARCHAR(8) NOT NULL,
  number BIGINT NOT NULL,
  formatted VARCHAR(64) NOT NULL,
  reserved_position BIGINT NOT NULL,
  reserved_hash CHAR(64) NOT NULL,
  issued_position BIGINT NULL,
  issued_hash CHAR(64) NULL,
  received_at DATETIME(6) NOT NULL,
  KEY invoice (invoice_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Documents the coordinator knows (issued or imported) and what it last saw of them.
CREATE TABLE IF NOT EXISTS mod_concord_documents (
  invoice_id INT NOT NULL PRIMARY KEY,
  doctype VARCHAR(16) NOT NULL,
  formatted VARCHAR(64) NOT NULL,
  origin VARCHAR(8) NOT NULL,
  state_fingerprint CHAR(32) NOT NULL,
  snapshot_sha256 CHAR(64) NOT NULL,
  reported_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- VIES verdicts on client VAT numbers, so the Get feed asks VIES once per number and period.
CREATE TABLE IF NOT EXISTS mod_concord_vies (
  country CHAR(2) NOT NULL,
  number VARCHAR(16) NOT NULL,
  valid TINYINT(1) NOT NULL,
  checked_at DATETIME(6) NOT NULL,
  PRIMARY KEY (country, number)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
