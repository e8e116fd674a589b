"""Coordinator settings: environment variables (CONCORD_*) and an optional TOML file."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from coordinator.accounting.options import KASHFLOW_ENDPOINT, CurrencyMap, GatewayMapping
from coordinator.events.zones import TimeZoneName
from coordinator.notifications.options import NotifyOptions
from getfeed.settings import ViesOptions


def local_timezone() -> str:
    """The machine's IANA zone name, else UTC."""
    link = Path("/etc/localtime")
    if link.is_symlink():
        target = str(link.resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    tz_file = Path("/etc/timezone")
    if tz_file.exists():
        return tz_file.read_text().strip() or "UTC"
    return "UTC"


class Settings(BaseSettings, ViesOptions, NotifyOptions):
    model_config = SettingsConfigDict(env_prefix="CONCORD_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; none = an embedded PostgreSQL under data_dir"
    )
    migration_database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the ledger's owner, which migrates; "
        "none = database_url (docs/operations.md, 'Database roles and migrations')",
    )
    data_dir: Path = Field(
        default=Path("var"), description="Where the embedded PostgreSQL and the first operator token live"
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on")
    port: int = Field(default=8700, ge=0, le=65535, description="Port of the HTTP API")
    timezone: TimeZoneName = Field(
        default_factory=local_timezone, description="Zone of 'today' (current period for series set --next)"
    )
    pending_warning_minutes: int = Field(
        default=10, ge=1, description="A reservation pending longer than this raises a warning"
    )
    pending_check_seconds: float = Field(
        default=30.0, gt=0, description="How often pending reservations are checked"
    )
    heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="Interval at which agents send heartbeats"
    )
    missed_heartbeats: int = Field(
        default=3, ge=1, description="A store silent this many intervals raises a warning"
    )
    billing_check_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often new document snapshots are checked for "
        "billing errors (docs/operations.md, 'Billing-error checks')",
    )
    max_batch: int = Field(default=512, ge=1, description="Most commands in one ledger commit")
    answer_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest a request waits for the ledger; then 503 with Retry-After"
    )
    database_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest a database connection attempt, statement or "
        "lock wait (the ledger lock included) may take",
    )
    queue_limit: int = Field(
        default=10_000, ge=1, description="Most commands waiting for the ledger; beyond, 503"
    )
    pool_size: int = Field(default=10, ge=2, description="PostgreSQL connections per process")
    log_json: bool | None = Field(default=None, description="JSON logs; default: JSON unless stderr is a TTY")
    log_level: str = Field(default="info", description="debug, info, warning or error")
    kashflow_url: str = Field(default=KASHFLOW_ENDPOINT, description="KashFlow SOAP endpoint")
    kashflow_username: str = Field(default="", description="KashFlow user; empty = no sync")
    kashflow_password: SecretStr = Field(
        default=SecretStr(""), description="KashFlow (separate API) password"
    )
    kashflow_limit: int = Field(default=200, ge=1, description="Most invoices posted per run")
    kashflow_daily_at: time = Field(
        default=time(2, 0), description="Time of the daily sync in CONCORD_TIMEZONE"
    )
    kashflow_timeout_seconds: float = Field(default=60.0, gt=0, description="Timeout of one KashFlow call")
    kashflow_gateways: dict[str, GatewayMapping] = Field(
        default_factory=dict, description="WHMCS gateway -> KashFlow payment method and account"
    )
    kashflow_currencies: CurrencyMap = Field(
        default_factory=dict, description="store -> WHMCS currency id -> ISO code"
    )

    config_file: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlFromInit(settings_cls, init_settings)


class _TomlFromInit(PydanticBaseSettingsSource):
    """Reads the TOML file named by ``config_file`` (from ``--config``), lowest priority."""

    def __init__(self, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._path = init_settings().get("config_file")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self._path:
            return {}
        return TomlConfigSettingsSource(self.settings_cls, toml_file=self._path)()


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None and not config_file.exists():
        raise FileNotFoundError(f"config file {config_file} does not exist")
    return Settings(config_file=config_file, **given)
