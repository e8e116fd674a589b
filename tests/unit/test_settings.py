from pathlib import Path

import pytest

from coordinator.settings import load_settings


def test_toml_file_environment_and_flags_in_that_order(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "concord.toml"
    config.write_text('port = 9100\nhost = "0.0.0.0"\ntimezone = "Europe/Lisbon"\n')
    monkeypatch.setenv("CONCORD_HOST", "127.0.0.2")
    settings = load_settings(config, port=None)
    assert (settings.port, settings.host, settings.timezone) == (9100, "127.0.0.2", "Europe/Lisbon")
    assert load_settings(config, port=9200).port == 9200


def test_missing_config_file_and_bad_values_are_refused(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "absent.toml")
    monkeypatch.setenv("CONCORD_PORT", "seventy")
    with pytest.raises(ValueError, match="port"):
        load_settings()


def test_unknown_time_zone_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("CONCORD_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValueError, match="Mars/Olympus"):
        load_settings()
