"""WHMCS database: schema, realistic test data and actions that mimic WHMCS."""
