"""The EU reference table behind the Get feed's ``Europe`` block, and the MOSS rule. Pure.

A client's place (country, state, postcode) maps to a ``Territory``: the member state it
belongs to, its region ("Europe", or another continent for the outermost regions) and
whether it lies inside the EU VAT area. Places outside the EU (including the overseas
countries and territories, which are not part of the EU) have no territory: their
``Europe`` block is null.

An outermost region entered under its member state's code is recognised by its postcode
or, failing that, by the state WHMCS stores: the names of WHMCS's own state lists ("PALMAS,
LAS", "SANTA CRUZ DE TENERIFE", "CEUTA", "MELILLA"; "Guadeloupe", "Guyane", "La Réunion"
…) and the names people type where WHMCS has no list (Portugal: "Madeira", "Açores").
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

MEMBER_STATES = frozenset(
    (
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    )
)
# The day each member state adopted the euro: MonetaryUnion holds from then on.
EURO_SINCE = {
    **dict.fromkeys(("AT", "BE", "DE", "ES", "FI", "FR", "IE", "IT", "LU", "NL", "PT"), date(1999, 1, 1)),
    "GR": date(2001, 1, 1),
    "SI": date(2007, 1, 1),
    "CY": date(2008, 1, 1),
    "MT": date(2008, 1, 1),
    "SK": date(2009, 1, 1),
    "EE": date(2011, 1, 1),
    "LV": date(2014, 1, 1),
    "LT": date(2015, 1, 1),
    "HR": date(2023, 1, 1),
    "BG": date(2026, 1, 1),
}
# VIES names Greece EL; Northern Ireland's traders use XI.
VIES_CODES = {**{code: code for code in MEMBER_STATES}, "GR": "EL"}
_VIES_PREFIXES = frozenset(VIES_CODES.values()) | {"XI"}


@dataclass(frozen=True)
class Territory:
    name: str
    member_state: str
    region: str = "Europe"
    vat_area: bool = True


_MAINLAND = {code: Territory(code, code) for code in MEMBER_STATES}
# Outermost regions and special territories under their own ISO 3166 code (IC and EA are
# the reserved codes some systems use for the Canary Islands and Ceuta/Melilla).
_BY_CODE = {
    "GP": Territory("Guadeloupe", "FR", "North-America", vat_area=False),
    "MQ": Territory("Martinique", "FR", "North-America", vat_area=False),
    "MF": Territory("Saint-Martin", "FR", "North-America", vat_area=False),
    "GF": Territory("French Guiana", "FR", "South-America", vat_area=False),
    "RE": Territory("Réunion", "FR", "Africa", vat_area=False),
    "YT": Territory("Mayotte", "FR", "Africa", vat_area=False),
    "IC": Territory("Canary Islands", "ES", "Africa", vat_area=False),
    "EA": Territory("Ceuta and Melilla", "ES", "Africa", vat_area=False),
    "AX": Territory("Åland", "FI", vat_area=False),
    # Monaco is not in the EU but inside its VAT area, as part of France.
    "MC": Territory("Monaco", "FR"),
    "EL": _MAINLAND["GR"],
}
_CEUTA = Territory("Ceuta", "ES", "Africa", vat_area=False)
_MELILLA = Territory("Melilla", "ES", "Africa", vat_area=False)
_MADEIRA = Territory("Madeira", "PT", "Africa")
_AZORES = Territory("Azores", "PT")
_MOUNT_ATHOS = Territory("Mount Athos", "GR", vat_area=False)
# The same places under their member state's code, told apart by postcode prefix (the
# longest prefix wins). None: an overseas country or territory, outside the EU.
_BY_POSTCODE: dict[str, dict[str, Territory | None]] = {
    "ES": {"35": _BY_CODE["IC"], "38": _BY_CODE["IC"], "51": _CEUTA, "52": _MELILLA},
    "PT": {
        **dict.fromkeys(("90", "91", "92", "93"), _MADEIRA),
        **dict.fromkeys(("95", "96", "97", "98", "99"), _AZORES),
    },
    "FR": {
        "971": _BY_CODE["GP"],
        "97150": _BY_CODE["MF"],
        "97133": None,
        "972": _BY_CODE["MQ"],
        "973": _BY_CODE["GF"],
        "974": _BY_CODE["RE"],
        "975": None,
        "976": _BY_CODE["YT"],
        "98": None,
        "980": _BY_CODE["MC"],
    },
    "GR": {"63086": _MOUNT_ATHOS},
    "DE": {
        "78266": Territory("Büsingen am Hochrhein", "DE", vat_area=False),
        "27498": Territory("Heligoland", "DE", vat_area=False),
    },
    "IT": {
        "23041": Territory("Livigno", "IT", vat_area=False),
        "22061": Territory("Campione d'Italia", "IT", vat_area=False),
    },
    "FI": {"22": _BY_CODE["AX"]},
}
# Words a state may carry around the place's name: articles and prepositions (es, pt, fr,
# en) and "island", "autonomous region", "department" …, so that "PALMAS, LAS" is "Las
# Palmas" and "Região Autónoma da Madeira" is "Madeira".
_FILLER_WORDS = frozenset(
    (
        "la",
        "las",
        "los",
        "el",
        "le",
        "les",
        "l",
        "de",
        "del",
        "da",
        "das",
        "do",
        "dos",
        "du",
        "des",
        "d",
        "of",
        "the",
        "and",
        "et",
        "e",
        "y",
        "isla",
        "islas",
        "ilha",
        "ilhas",
        "ile",
        "iles",
        "island",
        "islands",
        "region",
        "regiao",
        "autonoma",
        "autonomous",
        "ra",
        "provincia",
        "province",
        "departement",
        "department",
        "collectivite",
    )
)


def _place_name(state: str) -> str:
    """A state as the table compares it: case, accents, punctuation and filler words dropped
    ("Ilhas dos AÇORES" -> "acores")."""
    letters = unicodedata.normalize("NFKD", state.casefold())
    letters = "".join(c for c in letters if not unicodedata.combining(c))
    return " ".join(w for w in re.split(r"[^0-9a-z]+", letters) if w and w not in _FILLER_WORDS)


def _named(place: Territory | None, *names: str) -> dict[str, Territory | None]:
    return {_place_name(name): place for name in names}


# The same places by the state WHMCS stores: the names of its state lists, ISO 3166-2
# codes and the names people type (with the filler words above, "Islas Canarias" is
# "Canarias" and "Região Autónoma dos Açores" is "Açores"). A whole name must match, so
# "Saint-Martin-d'Hères" stays in France, and "La Palma" (an island, but "Palma" is
# Mallorca's capital) is left to the postcode.
_BY_STATE: dict[str, dict[str, Territory | None]] = {
    "ES": {
        **_named(
            _BY_CODE["IC"],
            "PALMAS, LAS",
            "SANTA CRUZ DE TENERIFE",
            "Las Palmas de Gran Canaria",
            "Sta. Cruz de Tenerife",
            "S/C de Tenerife",
            "Tenerife",
            "Gran Canaria",
            "Lanzarote",
            "Fuerteventura",
            "La Gomera",
            "El Hierro",
            "Canarias",
            "Canary Islands",
            "Canaries",
            "GC",
            "TF",
            "CN",
            "ES-GC",
            "ES-TF",
            "ES-CN",
        ),
        **_named(_CEUTA, "CEUTA", "CE", "ES-CE"),
        **_named(_MELILLA, "MELILLA", "ML", "ES-ML"),
    },
    "PT": {
        **_named(_MADEIRA, "Madeira", "Porto Santo", "PT-30"),
        **_named(_AZORES, "Açores", "Azores", "PT-20"),
    },
    "FR": {
        **_named(_BY_CODE["GP"], "Guadeloupe", "971"),
        **_named(_BY_CODE["MQ"], "Martinique", "972"),
        **_named(_BY_CODE["GF"], "Guyane", "Guyane française", "French Guiana", "973"),
        **_named(_BY_CODE["RE"], "La Réunion", "974"),
        **_named(_BY_CODE["YT"], "Mayotte", "976"),
        **_named(_BY_CODE["MF"], "Saint-Martin", "St Martin"),
        **_named(
            None,
            "Saint-Barthélemy",
            "St Barthélemy",
            "Saint-Barth",
            "St Barth",
            "Saint-Pierre-et-Miquelon",
            "St Pierre et Miquelon",
            "975",
            "Polynésie française",
            "French Polynesia",
            "Nouvelle-Calédonie",
            "New Caledonia",
            "Wallis-et-Futuna",
        ),
    },
    "GR": _named(_MOUNT_ATHOS, "Mount Athos", "Agion Oros", "Agio Oros", "Athos"),
    "FI": _named(_BY_CODE["AX"], "Åland", "Ahvenanmaa"),
}
_VAT_FIELD = re.compile(r"\b(vat|tva|iva|btw|ust|mwst|moms|tax ?id)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)  # called for every document of a feed answer
def territory(country: str, state: str = "", postcode: str = "") -> Territory | None:
    code = country.strip().upper()
    if code in _BY_CODE:
        return _BY_CODE[code]
    if code not in MEMBER_STATES:
        return None
    prefixes = _BY_POSTCODE.get(code)
    if prefixes:
        digits = postcode.replace(" ", "").replace("-", "")
        for length in range(min(len(digits), 5), 0, -1):
            if digits[:length] in prefixes:
                return prefixes[digits[:length]]
    names = _BY_STATE.get(code)
    if names and state:
        name = _place_name(state)
        if name in names:
            return names[name]
    return _MAINLAND[code]


def home_member_state(country: str) -> str:
    """The member state of the store's own country ("" when it is not in the EU)."""
    place = territory(country)
    return place.member_state if place else ""


def in_monetary_union(member_state: str, on: date) -> bool:
    since = EURO_SINCE.get(member_state)
    return since is not None and on >= since


def vat_number(client: Mapping[str, Any]) -> str:
    """The client's VAT number: WHMCS 8's tax_id (``TaxID``), else a custom field named
    like one ("VAT Number", "Partita IVA", "USt-IdNr", "BTW-nummer", "Tax ID" …)."""
    number = str(client.get("TaxID") or "").strip()
    if number:
        return number
    for field in client.get("CustomFields") or ():
        if isinstance(field, dict) and _names_vat(str(field.get("fieldname", ""))):
            value = str(field.get("value") or "").strip()
            if value:
                return value
    return ""


@functools.lru_cache(maxsize=256)  # a store has a handful of custom field names
def _names_vat(fieldname: str) -> bool:
    return _VAT_FIELD.search(fieldname) is not None


@functools.lru_cache(maxsize=4096)
def vies_key(number: str, member_state: str) -> tuple[str, str] | None:
    """(VIES country code, number without prefix) to look up, None when VIES cannot know it.

    A number without a country prefix is taken as one of the client's member state.
    """
    compact = re.sub(r"[\s.\-/]", "", number).upper()
    prefix = compact[:2]
    if prefix in _VIES_PREFIXES:
        country, rest = prefix, compact[2:]
    elif member_state:
        country, rest = VIES_CODES[member_state], compact
    else:
        return None
    if not re.fullmatch(r"[0-9A-Z+*]{2,12}", rest):
        return None
    return country, rest


def europe_block(place: Territory | None, *, vies: bool, home: str, on: date) -> dict[str, Any] | None:
    """The contract's ``Europe`` block. MOSS: a consumer (no VIES-confirmed VAT number) in a
    member state other than the store's own, inside the EU VAT area."""
    if place is None:
        return None
    return {
        "MemberState": place.member_state,
        "Region": place.region,
        "MonetaryUnion": in_monetary_union(place.member_state, on),
        "VIES": vies,
        "MOSS": not vies and place.vat_area and place.member_state != home,
    }


def client_territory(client: Mapping[str, Any]) -> Territory | None:
    return territory(
        str(client.get("Country") or ""), str(client.get("State") or ""), str(client.get("PostCode") or "")
    )
