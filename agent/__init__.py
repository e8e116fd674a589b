"""The Concord agent: runs beside one WHMCS installation."""
