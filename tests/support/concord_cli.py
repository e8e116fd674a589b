"""The `concord` command line run as a subprocess, as a user runs it, against one database."""

from __future__ import annotations

import os
import subprocess
import sys


def concord(database_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "coordinator", "--database-url", database_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CONCORD_LOG_LEVEL": "warning"},
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result
