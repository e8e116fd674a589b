"""The WHMCS simulator, used by the tests, the benchmarks and the demo, run from the checkout.

Not installed (pyproject.toml's packages.find leaves it out): the installed coordinator, agent
and Get feed never import it (tests/unit/test_import_rules.py). It may import all three.

- ``generator``: realistic WHMCS store data (pure);
- ``whmcs``: a WHMCS database in MariaDB (``whmcs_schema.sql``): create, load, act like WHMCS;
- ``scratch_postgres``: a PostgreSQL to create throwaway databases in;
- ``demo``: three simulated stores issue documents through a running coordinator's API.
"""
