"""The KashFlow mapping settings: WHMCS gateways and currencies to what KashFlow knows."""

from __future__ import annotations

import re
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
# snapshot carries the client's currency id only; ids are per WHMCS installation. Each
# agent reports its store's map in the heartbeat; the setting only overrides entries of it.
CurrencyMap = dict[str, dict[str, IsoCurrency]]
_ISO = re.compile(r"^[A-Z]{3}$")


def currency_codes(reported: CurrencyMap, override: CurrencyMap) -> CurrencyMap:
    """The reported codes (well-formed ones only), each overridden by the setting's entry."""
    stores = reported.keys() | override.keys()
    return {
        store: {
            **{whmcs: code for whmcs, code in reported.get(store, {}).items() if _ISO.match(code)},
            **override.get(store, {}),
        }
        for store in stores
    }


@dataclass(frozen=True)
class SyncMapping:
    """What a sync run maps WHMCS's gateways and currency ids to (from the settings)."""

    gateways: dict[str, GatewayMapping]
    currencies: CurrencyMap  # kashflow_currencies: overrides of what the agents report
