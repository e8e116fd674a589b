"""The notification settings (CONCORD_NOTIFY_*), part of the coordinator's Settings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

SmtpTls = Literal["none", "starttls", "tls"]
SMTP_DEFAULT_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}
MAX_BACKOFF_SECONDS = 3600.0  # a receiver down for long is still tried once an hour


class NotifyOptions(BaseModel):
    notify_webhook_url: str = Field(
        default="", description="URL each warning change is POSTed to; empty = no webhook"
    )
    notify_webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        repr=False,
        validate_default=True,
        description="Shared secret of the Concord-Signature header (HMAC-SHA256 of the body)",
    )
    notify_smtp_host: str = Field(default="", description="SMTP server; empty = no e-mail")
    notify_smtp_port: int | None = Field(
        default=None, ge=1, le=65535, description="SMTP port; default 25, 587 or 465 by TLS mode"
    )
    notify_smtp_tls: SmtpTls = Field(
        default="starttls", description="none, starttls (upgrade after connecting) or tls"
    )
    notify_smtp_user: str = Field(default="", description="SMTP login; empty = no login")
    notify_smtp_password: SecretStr = Field(default=SecretStr(""), repr=False, description="SMTP password")
    notify_email_from: str = Field(default="", description="Sender address of the e-mails")
    notify_email_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validate_default=True,
        description="Recipients, comma-separated (a list in TOML)",
    )
    notify_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Time limit of one delivery try (connect, send, answer)"
    )
    notify_tries: int = Field(
        default=3, ge=1, le=10, description="Tries of one delivery before it waits for a later round"
    )
    notify_retry_seconds: float = Field(
        default=1.0, gt=0, description="First wait between tries; doubles with each try"
    )
    notify_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often new warning changes are looked for"
    )

    # Field validators, not a model validator: the error then shows the one field's input,
    # never the whole settings (secrets included).
    @field_validator("notify_webhook_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("notify_webhook_url must start with http:// or https://")
        return url

    @field_validator("notify_webhook_secret")
    @classmethod
    def _secret_for_webhook(cls, secret: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("notify_webhook_url") and not secret.get_secret_value():
            raise ValueError(
                "notify_webhook_url needs notify_webhook_secret (receivers check the signature with it)"
            )
        return secret

    @field_validator("notify_email_to", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    @field_validator("notify_email_to")
    @classmethod
    def _addresses_for_smtp(cls, recipients: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("notify_smtp_host") and not (recipients and info.data.get("notify_email_from")):
            raise ValueError("notify_smtp_host needs notify_email_from and notify_email_to")
        return recipients

    @property
    def smtp_port(self) -> int:
        return self.notify_smtp_port or SMTP_DEFAULT_PORTS[self.notify_smtp_tls]

    @property
    def delivery_seconds(self) -> float:
        """Longest one delivery may take: every try at its time limit, and the waits between."""
        waits = sum(self.backoff_seconds(n) for n in range(1, self.notify_tries))
        return self.notify_tries * self.notify_timeout_seconds + waits

    def backoff_seconds(self, tries: int) -> float:
        """The wait after ``tries`` failed tries of one notification."""
        return min(self.notify_retry_seconds * 2 ** (tries - 1), MAX_BACKOFF_SECONDS)
