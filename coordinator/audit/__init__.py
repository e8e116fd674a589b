"""The audit: replay the ledger and compare its projections, export it, verify an export offline,
and check the stores' receipts; each finding named (`concord audit | export | verify`)."""
