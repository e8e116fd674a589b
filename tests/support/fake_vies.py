"""A stand-in for the EU's VIES REST API, served over loopback HTTP in tests.

It speaks the real wire protocol: ``POST /taxation_customs/vies/rest-api/check-vat-number``
with ``{"countryCode", "vatNumber"}``, answered with the service's reply fields; during an
outage it answers as VIES does, ``{"actionSucceed": false, "errorWrappers": [...]}``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import web

PATH = "/taxation_customs/vies/rest-api/check-vat-number"


class FakeVies:
    def __init__(self, registered: set[str] | None = None) -> None:
        self.registered = set(registered or ())  # full numbers with prefix, e.g. "DE123456789"
        self.calls: list[tuple[str, str]] = []
        self.outage = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(PATH, self._check)
        return app

    async def _check(self, request: web.Request) -> web.Response:
        body = await request.json()
        country, number = str(body.get("countryCode", "")), str(body.get("vatNumber", ""))
        self.calls.append((country, number))
        if self.outage:
            return web.json_response(
                {
                    "actionSucceed": False,
                    "errorWrappers": [
                        {
                            "error": "MS_UNAVAILABLE",
                            "message": "The application at the Member State is not replying",
                        }
                    ],
                }
            )
        if not re.fullmatch(r"[A-Z]{2}", country) or not re.fullmatch(r"[0-9A-Z+*]{2,12}", number):
            return web.json_response(
                {
                    "actionSucceed": False,
                    "errorWrappers": [
                        {
                            "error": "INVALID_INPUT",
                            "message": "The provided CountryCode is invalid or the VAT number is empty",
                        }
                    ],
                },
                status=400,
            )
        valid = f"{country}{number}" in self.registered
        return web.json_response(
            {
                "countryCode": country,
                "vatNumber": number,
                "requestDate": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "valid": valid,
                "requestIdentifier": "",
                "name": "ACME B.V." if valid else "---",
                "address": "Main Street 1" if valid else "---",
                "traderName": "",
                "traderStreet": "",
                "traderPostalCode": "",
                "traderCity": "",
                "traderCompanyType": "",
                "traderNameMatch": "NOT_PROCESSED",
                "traderStreetMatch": "NOT_PROCESSED",
                "traderPostalCodeMatch": "NOT_PROCESSED",
                "traderCityMatch": "NOT_PROCESSED",
                "traderCompanyTypeMatch": "NOT_PROCESSED",
            }
        )
