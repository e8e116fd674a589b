"""The systemd units in deploy/ are valid, and their command lines are ones the commands take."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ("concord.service", "concord-agent.service")
INSTALLED_BIN = "/opt/concord/venv/bin/"  # where docs/operations.md installs the venv
VENV_BIN = str(Path(sys.executable).parent) + "/"


def _exec_start(unit: Path) -> list[str]:
    [line] = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed: the units are not verified",
)
def test_units_verify_cleanly(tmp_path: Path) -> None:
    for name in UNITS:  # the installed venv's path stands for this one's
        text = (DEPLOY / name).read_text().replace(INSTALLED_BIN, VENV_BIN)
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # It exits 0 even for a value it ignores: any message is a finding.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_unit_command_lines_parse() -> None:
    for name in UNITS:
        command = _exec_start(DEPLOY / name)
        assert command[0].startswith(INSTALLED_BIN)
        program = VENV_BIN + command[0].removeprefix(INSTALLED_BIN)
        done = subprocess.run([program, *command[1:], "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (name, done.stderr)
        assert "usage:" in done.stdout


def test_each_unit_runs_as_a_user_the_sysusers_file_makes() -> None:
    declared = {
        line.split()[1]
        for line in (DEPLOY / "concord.sysusers").read_text().splitlines()
        if line.startswith("u ")
    }
    for name in UNITS:
        [user] = [
            line.removeprefix("User=")
            for line in (DEPLOY / name).read_text().splitlines()
            if line.startswith("User=")
        ]
        assert user in declared, name
