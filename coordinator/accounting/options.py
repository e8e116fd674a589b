"""The KashFlow mapping settings: WHMCS gateways and currencies to what KashFlow knows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

KASHFLOW_ENDPOINT = "https://securedwebapp.com/api/service.asmx"  # the WSDL's soap:address

IsoCurrency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class GatewayMapping(BaseModel):
    """Where a WHMCS gateway's payments go: ids from ``concord sync kashflow --show-options``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: int = Field(gt=0, description="KashFlow payment method id (GetInvPayMethods)")
    account: int = Field(gt=0, description="KashFlow bank account id (GetBankAccounts)")


# Store name -> WHMCS currency id (tblcurrencies.id, as text) -> ISO 4217 code. The document
# snapshot carries the client's currency id only; ids are per WHMCS installation.
CurrencyMap = dict[str, dict[str, IsoCurrency]]


@dataclass(frozen=True)
class SyncMapping:
    """What a sync run maps WHMCS's gateways and currency ids to (from the settings)."""

    gateways: dict[str, GatewayMapping]
    currencies: CurrencyMap
