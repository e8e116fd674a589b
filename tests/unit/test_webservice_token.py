"""`concord-agent webservice-token`: a new Get feed token, stored where the agent reads it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.cli import main
from agent.settings import load_agent_settings

SETTINGS = """# The agent of the EU store
whmcs_url = "mysql://whmcs:secret@127.0.0.1:3306/whmcs"
webservice_token = "old-token"   # given to the e-invoicing provider
country = "DE"

[vies]
timeout = 5
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out.strip(), out.err


def test_a_new_token_replaces_the_old_one_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(SETTINGS)
    config.chmod(0o640)
    code, token, err = _run(capsys, "--config", str(config), "webservice-token")
    assert code == 0, err
    assert len(token) >= 40 and token != "old-token"
    assert "restart the agent" in err
    settings = load_agent_settings(config)
    assert settings.webservice_token == token
    assert settings.country == "DE"
    text = config.read_text()
    assert "old-token" not in text
    assert (
        text.replace(
            f'webservice_token = "{token}"',
            'webservice_token = "old-token"   # given to the e-invoicing provider',
        )
        == SETTINGS
    )
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    # Every run makes another token; --config may also follow the command.
    _, again, _ = _run(capsys, "webservice-token", "--config", str(config))
    assert again != token
    assert load_agent_settings(config).webservice_token == again


def test_a_missing_file_is_created_readable_by_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    code, token, _ = _run(capsys, "--config", str(config), "webservice-token")
    assert code == 0
    assert load_agent_settings(config).webservice_token == token
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_a_file_without_the_key_gets_it_above_its_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('country = "FR"\n[vies]\ntimeout = 5\n')
    code, token, _ = _run(capsys, "--config", str(config), "webservice-token")
    assert code == 0
    assert load_agent_settings(config).webservice_token == token
    assert config.read_text() == f'country = "FR"\nwebservice_token = "{token}"\n[vies]\ntimeout = 5\n'


def test_an_unreadable_file_is_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('country = "FR\n')
    code, out, err = _run(capsys, "--config", str(config), "webservice-token")
    assert (code, out) == (1, "")
    assert "agent.toml is not valid TOML" in err and "nothing written" in err
    assert config.read_text() == 'country = "FR\n'
    assert [p.name for p in tmp_path.iterdir()] == ["agent.toml"]  # no scratch file left


def test_without_a_settings_file_it_says_where_it_would_write(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "webservice-token")
    assert (code, out) == (2, "")
    assert "--config FILE" in err
