"""Agent settings: environment variables (CONCORD_AGENT_*) and an optional TOML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from coordinator.events.zones import TimeZoneName
from getfeed.settings import ViesOptions


class AgentSettings(BaseSettings, ViesOptions):
    model_config = SettingsConfigDict(env_prefix="CONCORD_AGENT_", extra="ignore")

    whmcs_url: str | None = Field(default=None, description="mysql://user:pass@host:port/db")
    whmcs_config: Path | None = Field(
        default=None, description="Path of WHMCS's configuration.php, to read its credentials"
    )
    coordinator_url: str = Field(default="http://127.0.0.1:8700", description="Base URL of the coordinator")
    token: str = Field(default="", description="This store's peer token", repr=False)
    store: str = Field(default="", description="This store's name (as registered)")
    timezone: TimeZoneName = Field(default="UTC", description="WHMCS's time zone: dates and 'today'")
    country: str = Field(
        default="",
        pattern=r"^([A-Za-z]{2})?$",
        description="The store's own country (ISO 3166 alpha-2), for MOSS",
    )
    host: str = Field(default="127.0.0.1", description="Address of the agent's HTTP server")
    port: int = Field(default=8701, ge=0, le=65535, description="Port of the agent's HTTP server")
    webservice_token: str = Field(default="", description="Token of the WebService Get feed", repr=False)
    hook_token: str = Field(default="", description="Token the PHP hook sends to /hooks/number", repr=False)
    credit_note_rule: Literal["negative_total", "none"] = Field(
        default="negative_total",
        description="Which tblinvoices rows are credit notes: negative total, or none",
    )
    poll_seconds: float = Field(default=2.0, gt=0, description="Numbering loop idle interval")
    heartbeat_seconds: float = Field(default=15.0, gt=0, description="Heartbeat interval")
    update_scan_seconds: float = Field(
        default=30.0, gt=0, le=60, description="How often issued documents are checked for changes"
    )
    reconcile_seconds: float = Field(default=3600.0, gt=0, description="How often a full reconciliation runs")
    batch_size: int = Field(
        default=200,
        ge=1,
        le=500,
        description="Documents per reserve request and per confirm request (the coordinator"
        " takes at most 500)",
    )
    log_json: bool | None = None
    log_level: str = "info"

    config_file: Path | None = Field(default=None, exclude=True)

    def reported(self) -> dict[str, str]:
        """This agent's settings that every heartbeat reports: the coordinator compares the
        credit-note rule across stores, and the KashFlow sync reads time zone and country."""
        return {"timezone": self.timezone, "country": self.country, "credit_note_rule": self.credit_note_rule}

    @model_validator(mode="after")
    def _one_database_source(self) -> AgentSettings:
        if self.whmcs_url and self.whmcs_config:
            raise ValueError("set CONCORD_AGENT_WHMCS_URL or CONCORD_AGENT_WHMCS_CONFIG, not both")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = init_settings().get("config_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_agent_settings(config_file: Path | None = None, **overrides: Any) -> AgentSettings:
    if config_file is not None and not config_file.exists():
        raise FileNotFoundError(f"config file {config_file} does not exist")
    given = {k: v for k, v in overrides.items() if v is not None}
    return AgentSettings(config_file=config_file, **given)
