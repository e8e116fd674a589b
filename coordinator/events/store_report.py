"""Keys of what an agent reports about its WHMCS in the heartbeat's settings, beyond the
numbering settings: written by the agent (agent/heartbeat.py), read by the coordinator's
billing checks (coordinator/monitors/billing_checks.py)."""

from __future__ import annotations

# WHMCS's tax settings (tblconfiguration), each reported as WHMCS stores it.
TAX_SETTINGS = ("TaxEnabled", "TaxType", "TaxL2Compound", "TaxPerLineItem")
# Formatted numbers carried by more than one tblinvoices row: {number: [invoice ids]}.
DUPLICATE_NUMBERS = "DuplicateNumbers"
