"""The EU reference table, the Europe block, MOSS, and the VIES lookup policy (pure)."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, timedelta

import pytest

from getfeed.europe import (
    EURO_SINCE,
    MEMBER_STATES,
    europe_block,
    home_member_state,
    territory,
    vat_number,
    vies_key,
)
from getfeed.lookup import ViesLookup
from getfeed.vies import VatKey, Verdict, parse_reply

DAY = date(2026, 6, 1)


def test_twenty_seven_member_states_and_the_euro_area() -> None:
    assert len(MEMBER_STATES) == 27
    assert set(EURO_SINCE) < MEMBER_STATES
    outside_euro = MEMBER_STATES - set(EURO_SINCE)
    assert outside_euro == {"CZ", "DK", "HU", "PL", "RO", "SE"}
    for code in MEMBER_STATES:
        block = europe_block(territory(code), vies=False, home=code, on=DAY)
        assert block is not None
        assert (block["MemberState"], block["Region"]) == (code, "Europe")
        assert block["MonetaryUnion"] is (code not in outside_euro)


def test_monetary_union_follows_the_document_date() -> None:
    croatia, bulgaria = territory("HR"), territory("BG")
    assert europe_block(croatia, vies=False, home="", on=date(2022, 12, 31))["MonetaryUnion"] is False
    assert europe_block(croatia, vies=False, home="", on=date(2023, 1, 1))["MonetaryUnion"] is True
    assert europe_block(bulgaria, vies=False, home="", on=date(2025, 6, 1))["MonetaryUnion"] is False
    assert europe_block(bulgaria, vies=False, home="", on=date(2026, 1, 1))["MonetaryUnion"] is True


@pytest.mark.parametrize(
    ("country", "state", "postcode", "member", "region", "vat_area"),
    [
        ("GP", "", "97110", "FR", "North-America", False),
        ("MQ", "", "97200", "FR", "North-America", False),
        ("MF", "", "97150", "FR", "North-America", False),
        ("GF", "", "97300", "FR", "South-America", False),
        ("RE", "", "97400", "FR", "Africa", False),
        ("YT", "", "97600", "FR", "Africa", False),
        # The same places entered as France with their postcode.
        ("FR", "", "97110", "FR", "North-America", False),
        ("FR", "", "97150", "FR", "North-America", False),
        ("fr", "", "973 00", "FR", "South-America", False),
        ("FR", "", "97490", "FR", "Africa", False),
        ("FR", "", "97600", "FR", "Africa", False),
        ("FR", "", "75001", "FR", "Europe", True),
        ("MC", "", "98000", "FR", "Europe", True),
        ("ES", "Las Palmas", "35001", "ES", "Africa", False),
        ("ES", "Santa Cruz de Tenerife", "38001", "ES", "Africa", False),
        ("IC", "", "", "ES", "Africa", False),
        ("ES", "", "51001", "ES", "Africa", False),
        ("ES", "", "52001", "ES", "Africa", False),
        ("ES", "Madrid", "28001", "ES", "Europe", True),
        ("PT", "Madeira", "9000-123", "PT", "Africa", True),
        ("PT", "Açores", "9500-321", "PT", "Europe", True),
        ("PT", "Lisboa", "1100-148", "PT", "Europe", True),
        ("AX", "", "22100", "FI", "Europe", False),
        ("FI", "", "22100", "FI", "Europe", False),
        ("FI", "", "00100", "FI", "Europe", True),
        ("GR", "", "630 86", "GR", "Europe", False),
        ("GR", "Mount Athos", "", "GR", "Europe", False),
        ("GR", "Attica", "10431", "GR", "Europe", True),
        ("DE", "", "78266", "DE", "Europe", False),
        ("DE", "", "27498", "DE", "Europe", False),
        ("IT", "", "23041", "IT", "Europe", False),
        ("IT", "", "22061", "IT", "Europe", False),
    ],
)
def test_outermost_regions_and_special_territories(
    country: str, state: str, postcode: str, member: str, region: str, vat_area: bool
) -> None:
    place = territory(country, state, postcode)
    assert place is not None
    assert (place.member_state, place.region, place.vat_area) == (member, region, vat_area)


# The state lists WHMCS ships (assets/js/StatesDropdown.js, WHMCS 8): a client of these
# countries picks the state from them, so these exact strings are what tblclients.state and
# the invoice snapshot hold. WHMCS has no list for Portugal: its states are typed.
WHMCS_STATES_ES = (
    "ARABA/ÁLAVA",
    "ALBACETE",
    "ALICANTE",
    "ALMERIA",
    "AVILA",
    "BADAJOZ",
    "ILLES BALEARS",
    "BARCELONA",
    "BURGOS",
    "CACERES",
    "CADIZ",
    "CASTELLON",
    "CIUDAD REAL",
    "CORDOBA",
    "CORUÑA, A",
    "CUENCA",
    "GIRONA",
    "GRANADA",
    "GUADALAJARA",
    "GIPUZKOA",
    "HUELVA",
    "HUESCA",
    "JAEN",
    "LEON",
    "LLEIDA",
    "RIOJA, LA",
    "LUGO",
    "MADRID",
    "MALAGA",
    "MURCIA",
    "NAVARRA",
    "OURENSE",
    "ASTURIAS",
    "PALENCIA",
    "PALMAS, LAS",
    "PONTEVEDRA",
    "SALAMANCA",
    "SANTA CRUZ DE TENERIFE",
    "CANTABRIA",
    "SEGOVIA",
    "SEVILLA",
    "SORIA",
    "TARRAGONA",
    "TERUEL",
    "TOLEDO",
    "VALENCIA",
    "VALLADOLID",
    "BIZKAIA",
    "ZAMORA",
    "ZARAGOZA",
    "CEUTA",
    "MELILLA",
)
WHMCS_STATES_FR = (
    "Ain",
    "Aisne",
    "Allier",
    "Alpes-de-Haute-Provence",
    "Hautes-Alpes",
    "Alpes-Maritimes",
    "Ardèche",
    "Ardennes",
    "Ariège",
    "Aube",
    "Aude",
    "Aveyron",
    "Bouches-du-Rhône",
    "Calvados",
    "Cantal",
    "Charente",
    "Charente-Maritime",
    "Cher",
    "Corrèze",
    "Corse-du-Sud",
    "Haute-Corse",
    "Côte-d'Or",
    "Côtes-d'Armor",
    "Creuse",
    "Dordogne",
    "Doubs",
    "Drôme",
    "Eure",
    "Eure-et-Loir",
    "Finistère",
    "Gard",
    "Haute-Garonne",
    "Gers",
    "Gironde",
    "Hérault",
    "Ille-et-Vilaine",
    "Indre",
    "Indre-et-Loire",
    "Isère",
    "Jura",
    "Landes",
    "Loir-et-Cher",
    "Loire",
    "Haute-Loire",
    "Loire-Atlantique",
    "Loiret",
    "Lot",
    "Lot-et-Garonne",
    "Lozère",
    "Maine-et-Loire",
    "Manche",
    "Marne",
    "Haute-Marne",
    "Mayenne",
    "Meurthe-et-Moselle",
    "Meuse",
    "Morbihan",
    "Moselle",
    "Nièvre",
    "Nord",
    "Oise",
    "Orne",
    "Pas-de-Calais",
    "Puy-de-Dôme",
    "Pyrénées-Atlantiques",
    "Hautes-Pyrénées",
    "Pyrénées-Orientales",
    "Bas-Rhin",
    "Haut-Rhin",
    "Rhône",
    "Haute-Saône",
    "Saône-et-Loire",
    "Sarthe",
    "Savoie",
    "Haute-Savoie",
    "Paris",
    "Seine-Maritime",
    "Seine-et-Marne",
    "Yvelines",
    "Deux-Sèvres",
    "Somme",
    "Tarn",
    "Tarn-et-Garonne",
    "Var",
    "Vaucluse",
    "Vendée",
    "Vienne",
    "Haute-Vienne",
    "Vosges",
    "Yonne",
    "Territoire de Belfort",
    "Essonne",
    "Hauts-de-Seine",
    "Seine-Saint-Denis",
    "Val-de-Marne",
    "Val-d'Oise",
    "Guadeloupe",
    "Martinique",
    "Guyane",
    "La Réunion",
    "Mayotte",
)
# (member state, region, inside the VAT area) of the outermost regions in those lists.
OUTERMOST_IN_WHMCS_LISTS = {
    ("ES", "PALMAS, LAS"): ("Africa", False),
    ("ES", "SANTA CRUZ DE TENERIFE"): ("Africa", False),
    ("ES", "CEUTA"): ("Africa", False),
    ("ES", "MELILLA"): ("Africa", False),
    ("FR", "Guadeloupe"): ("North-America", False),
    ("FR", "Martinique"): ("North-America", False),
    ("FR", "Guyane"): ("South-America", False),
    ("FR", "La Réunion"): ("Africa", False),
    ("FR", "Mayotte"): ("Africa", False),
}


@pytest.mark.parametrize(
    ("country", "state"),
    [*(("ES", state) for state in WHMCS_STATES_ES), *(("FR", state) for state in WHMCS_STATES_FR)],
)
def test_every_state_of_whmcs_lists(country: str, state: str) -> None:
    """No postcode: the state alone tells an outermost region from the mainland, also as
    people retype it (other case, no accents, spaces around)."""
    region, vat_area = OUTERMOST_IN_WHMCS_LISTS.get((country, state), ("Europe", True))
    plain = "".join(c for c in unicodedata.normalize("NFKD", state) if not unicodedata.combining(c))
    for written in (state, state.lower(), f"  {plain.upper()} ", plain.title()):
        place = territory(country, written, "")
        assert place is not None, written
        assert (place.member_state, place.region, place.vat_area) == (country, region, vat_area), written


@pytest.mark.parametrize(
    ("country", "state", "region", "vat_area"),
    [
        # Spain, as typed where WHMCS's list is not used (admin edits, imports, the API).
        ("ES", "Las Palmas", "Africa", False),
        ("ES", "las palmas de gran canaria", "Africa", False),
        ("ES", "Santa Cruz de Tenerife", "Africa", False),
        ("ES", "S/C de Tenerife", "Africa", False),
        ("ES", "Tenerife", "Africa", False),
        ("ES", "Lanzarote", "Africa", False),
        ("ES", "Islas Canarias", "Africa", False),
        ("ES", "Canary Islands", "Africa", False),
        ("ES", "ES-TF", "Africa", False),
        ("ES", "Ceuta", "Africa", False),
        ("ES", "melilla", "Africa", False),
        ("ES", "Madrid", "Europe", True),
        ("ES", "Palma", "Europe", True),  # Palma de Mallorca: the Balearics are mainland for VAT
        ("ES", "Illes Balears", "Europe", True),
        # Portugal: WHMCS ships no list, the autonomous regions are typed.
        ("PT", "Madeira", "Africa", True),
        ("PT", "Região Autónoma da Madeira", "Africa", True),
        ("PT", "REGIAO AUTONOMA DA MADEIRA", "Africa", True),
        ("PT", "Açores", "Europe", True),
        ("PT", "Acores", "Europe", True),
        ("PT", "Azores", "Europe", True),
        ("PT", "Região Autónoma dos Açores", "Europe", True),
        ("PT", "Lisboa", "Europe", True),
        ("PT", "Porto", "Europe", True),
        # France, other spellings of the same departments and Saint-Martin (not in the list).
        ("FR", "Réunion", "Africa", False),
        ("FR", "reunion", "Africa", False),
        ("FR", "Île de la Réunion", "Africa", False),
        ("FR", "French Guiana", "South-America", False),
        ("FR", "Guyane française", "South-America", False),
        ("FR", "971", "North-America", False),
        ("FR", "Saint-Martin", "North-America", False),
        ("FR", "St Martin", "North-America", False),
        ("FR", "Saint-Martin-d'Hères", "Europe", True),  # a town in Isère
        # Greece and Finland: the places outside the VAT area.
        ("GR", "Mount Athos", "Europe", False),
        ("GR", "AGION OROS", "Europe", False),
        ("FI", "Åland", "Europe", False),
        ("FI", "Aland Islands", "Europe", False),
        ("FI", "Uusimaa", "Europe", True),
    ],
)
def test_outermost_regions_by_the_state_people_type(
    country: str, state: str, region: str, vat_area: bool
) -> None:
    place = territory(country, state, "")
    assert place is not None
    assert (place.member_state, place.region, place.vat_area) == (country, region, vat_area)


def test_state_names_and_postcodes_together() -> None:
    # A postcode that names a place decides; a mainland postcode leaves it to the state.
    assert territory("FR", "Guadeloupe", "97200") == territory("MQ")
    assert territory("ES", "Madrid", "35001") == territory("IC")
    assert territory("ES", "PALMAS, LAS", "28001") == territory("IC")
    # A state names a region only under its own member state.
    assert territory("DE", "Madeira", "").region == "Europe"
    assert territory("US", "Guadeloupe", "") is None
    # Overseas countries and territories written as a French state are outside the EU.
    for state in (
        "Saint-Barthélemy",
        "Nouvelle-Calédonie",
        "Polynésie française",
        "Saint-Pierre-et-Miquelon",
        "Wallis-et-Futuna",
    ):
        assert territory("FR", state, "") is None, state
    # The Europe block follows: no MOSS where no EU VAT is due.
    assert (
        europe_block(territory("ES", "SANTA CRUZ DE TENERIFE", ""), vies=False, home="NL", on=DAY)["MOSS"]
        is False
    )
    assert europe_block(territory("PT", "Açores", ""), vies=False, home="NL", on=DAY)["MOSS"] is True


@pytest.mark.parametrize(
    ("country", "postcode"),
    [
        ("US", "10001"),
        ("CH", "8001"),
        ("NO", "0150"),
        ("GB", "EC1A 1BB"),
        ("", ""),
        ("FR", "97133"),  # Saint-Barthélemy: an overseas country, outside the EU
        ("FR", "97500"),  # Saint-Pierre-et-Miquelon
        ("FR", "98714"),  # French Polynesia
        ("PF", ""),
        ("NC", ""),
        ("GL", ""),
        ("AW", ""),
    ],
)
def test_outside_the_eu_the_block_is_null(country: str, postcode: str) -> None:
    assert territory(country, "", postcode) is None
    assert europe_block(territory(country, "", postcode), vies=True, home="NL", on=DAY) is None


def test_moss_is_a_consumer_in_another_member_state_inside_the_vat_area() -> None:
    germany = territory("DE")
    assert europe_block(germany, vies=False, home="NL", on=DAY)["MOSS"] is True
    assert europe_block(germany, vies=True, home="NL", on=DAY)["MOSS"] is False  # a business
    assert europe_block(germany, vies=False, home="DE", on=DAY)["MOSS"] is False  # at home
    assert europe_block(territory("ES", "", "35001"), vies=False, home="NL", on=DAY)["MOSS"] is False
    assert europe_block(territory("PT", "", "9000-100"), vies=False, home="NL", on=DAY)["MOSS"] is True
    # Monaco is France for VAT: a French store's own country.
    assert europe_block(territory("MC"), vies=False, home="FR", on=DAY)["MOSS"] is False
    assert europe_block(germany, vies=True, home="NL", on=DAY) == {
        "MemberState": "DE",
        "Region": "Europe",
        "MonetaryUnion": True,
        "VIES": True,
        "MOSS": False,
    }
    assert home_member_state("nl") == "NL"
    assert home_member_state("US") == ""
    # A store outside the EU: every EU consumer is in "another" member state.
    assert europe_block(germany, vies=False, home="", on=DAY)["MOSS"] is True


def test_vat_number_and_its_vies_key() -> None:
    assert vat_number({"TaxID": " NL123456789B01 ", "CustomFields": []}) == "NL123456789B01"
    fields = [
        {"id": 1, "fieldname": "How did you find us?", "value": "Search"},
        {"id": 2, "fieldname": "VAT Number", "value": " DE123456789 "},
    ]
    assert vat_number({"TaxID": "", "CustomFields": fields}) == "DE123456789"
    assert (
        vat_number({"CustomFields": [{"fieldname": "Partita IVA", "value": "IT01234567890"}]})
        == "IT01234567890"
    )
    assert vat_number({"TaxID": "", "CustomFields": fields[:1]}) == ""
    assert vies_key("NL 1234.56789-B01", "NL") == ("NL", "123456789B01")
    assert vies_key("123456789", "GR") == ("EL", "123456789")  # VIES calls Greece EL
    assert vies_key("EL123456789", "GR") == ("EL", "123456789")
    assert vies_key("FR12345678901", "FR") == ("FR", "12345678901")
    assert vies_key("12345678901", "") is None  # no prefix, client outside the EU
    assert vies_key("DE", "DE") is None
    assert vies_key("CHE-123.456.789 MWST", "DE") is None


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, b'{"countryCode":"NL","vatNumber":"1","valid":true,"name":"X"}', True),
        (200, b'{"countryCode":"NL","vatNumber":"1","valid":false}', False),
        (200, b'{"actionSucceed":false,"errorWrappers":[{"error":"MS_UNAVAILABLE"}]}', None),
        (500, b'{"actionSucceed":false,"errorWrappers":[{"error":"SERVICE_UNAVAILABLE"}]}', None),
        (400, b'{"actionSucceed":false,"errorWrappers":[{"error":"INVALID_INPUT"}]}', False),
        (503, b"<html>down</html>", None),
        (200, b'{"valid":"yes"}', None),
    ],
)
def test_vies_replies(status: int, body: bytes, verdict: bool | None) -> None:
    assert parse_reply(status, body) is verdict


class MemoryCache:
    def __init__(self) -> None:
        self.rows: dict[VatKey, Verdict] = {}

    async def load(self, keys: Collection[VatKey]) -> dict[VatKey, Verdict]:
        return {k: self.rows[k] for k in keys if k in self.rows}

    async def save(self, verdicts: Mapping[VatKey, Verdict]) -> None:
        self.rows.update(verdicts)


NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


async def test_lookup_uses_fresh_cache_asks_for_the_rest_and_stops_at_an_outage() -> None:
    cache = MemoryCache()
    cache.rows[("NL", "1")] = Verdict(True, NOW - timedelta(days=1))
    cache.rows[("NL", "2")] = Verdict(True, NOW - timedelta(days=30))  # stale
    asked: list[VatKey] = []
    answers = {("NL", "2"): None, ("DE", "3"): True}

    async def ask(key: VatKey) -> bool | None:
        asked.append(key)
        return answers.get(key, False)

    lookup = ViesLookup(ask, cache, max_age=timedelta(days=7), budget=10, now=lambda: NOW, concurrency=1)
    confirmed = await lookup.confirmed({("NL", "1"), ("NL", "2"), ("DE", "3"), ("DE", "4")})
    # ("DE","3") is asked first, then ("DE","4") is not valid, then ("NL","2") fails: the
    # stale verdict stands in. The fresh one was never asked.
    assert asked == [("DE", "3"), ("DE", "4"), ("NL", "2")]
    assert confirmed == {("NL", "1"), ("NL", "2"), ("DE", "3")}
    assert lookup.failed
    assert cache.rows[("DE", "3")] == Verdict(True, NOW)
    assert cache.rows[("NL", "2")].checked_at < NOW  # not refreshed by a failure
    # After the failure nothing more is asked in this answer; unknown numbers are unconfirmed.
    assert await lookup.confirmed({("FR", "5")}) == set()
    assert len(asked) == 3


async def test_lookup_budget_and_switched_off_vies() -> None:
    cache = MemoryCache()
    asked: list[VatKey] = []

    async def ask(key: VatKey) -> bool | None:
        asked.append(key)
        return True

    lookup = ViesLookup(ask, cache, max_age=timedelta(days=7), budget=2, now=lambda: NOW)
    keys = {("NL", str(i)) for i in range(5)}
    assert len(await lookup.confirmed(keys)) == 2
    assert len(asked) == 2
    cache.rows[("IT", "9")] = Verdict(True, NOW - timedelta(days=100))
    off = ViesLookup(None, cache, max_age=timedelta(days=7), budget=10, now=lambda: NOW)
    assert await off.confirmed({("IT", "9"), ("IT", "8")}) == {("IT", "9")}
