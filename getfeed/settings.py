"""The VIES settings, the same for the agent (CONCORD_AGENT_VIES_*) and the coordinator
(CONCORD_VIES_*)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from getfeed.vies import DEFAULT_URL, ViesSettings


class ViesOptions(BaseModel):
    vies_url: str = Field(
        default=DEFAULT_URL, description="VIES check-vat-number REST endpoint; empty = VIES off"
    )
    vies_timeout_seconds: float = Field(default=5.0, gt=0, description="Time limit of a VIES call")
    vies_cache_days: int = Field(default=7, ge=0, description="How long a VIES verdict is reused")
    vies_lookups_per_answer: int = Field(
        default=200, ge=0, description="Most VIES calls one Get answer makes (the rest: cache)"
    )

    def vies(self) -> ViesSettings:
        return ViesSettings(
            self.vies_url, self.vies_timeout_seconds, self.vies_cache_days, self.vies_lookups_per_answer
        )
