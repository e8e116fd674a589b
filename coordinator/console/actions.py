"""The console's forms that change something: the API's body models check them and the
ledger writer executes the API's commands (no second path into the ledger)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from coordinator.console import session
from coordinator.console.pages import UUID, sign_in_page, store_of
from coordinator.console.view import page, see_other
from coordinator.http.errors import refused_status
from coordinator.http.json import describe_validation_error
from coordinator.http.keys import POOL, TIMEZONE, TOKENS, WRITER
from coordinator.http.routes import PeerBody, SeriesBody
from coordinator.ledger import commands as c
from coordinator.ledger import queries
from coordinator.ledger.commands import DomainError
from coordinator.ledger.numbering import SERIES_NAMES, FormatError, SeriesSettings, render
from coordinator.peers.tokens import new_token, token_sha256

Form = MultiDictProxy[Any]
DIGITS = re.compile(r"[0-9]{1,19}")
INTEGER_FIELDS = ("start", "increment", "next")
TEXT_FIELDS = ("format", "reset", "assign_on", "period")
WARNING_FILTERS = ("state", "kind", "store")


def _today(request: web.Request) -> Any:
    return datetime.now(ZoneInfo(request.config_dict[TIMEZONE])).date()


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not session.sign_in_csrf_matches(request, form.get("csrf")):
        return sign_in_page(request, "The form was refused (no valid CSRF token): try again.", 403)
    token = str(form.get("token", "")).strip()
    response = see_other(request, "overview")
    async with request.config_dict[POOL].acquire() as conn:
        role = await session.sign_in(conn, request, response, token) if token else None
    if role is None:
        return sign_in_page(request, "That is not an operator or reader token.", 401)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    response = see_other(request, "sign_in_form")
    async with request.config_dict[POOL].acquire() as conn:
        await session.sign_out(conn, request, response)
    return response


# -- series --------------------------------------------------------------------------------


def _series_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if name not in SERIES_NAMES:
        raise web.HTTPNotFound()
    return name


def _series_body(form: Form, current: SeriesSettings) -> SeriesBody:
    """The form's settings that differ from ``current``, checked by the API's model."""
    data: dict[str, Any] = {}
    for name in INTEGER_FIELDS:
        raw = str(form.get(name, "")).strip()
        if raw:  # digits become a number; anything else is left for the model to refuse
            data[name] = int(raw) if DIGITS.fullmatch(raw) else raw
    for name in TEXT_FIELDS:
        raw = str(form.get(name, "")).strip()
        if raw:
            data[name] = raw
    if "dedicated" in form:
        data["dedicated"] = form["dedicated"] == "yes"
    now = current.model_dump()
    data = {k: v for k, v in data.items() if k in ("next", "period") or now.get(k) != v}
    return SeriesBody.model_validate(data)


def _nothing_to_change(body: SeriesBody) -> bool:
    """As the API has it: no setting changed and no next number."""
    return not body.model_dump(exclude_none=True, exclude={"next", "period"}) and body.next is None


def _consequences(name: str, body: SeriesBody, series: dict[str, Any], today: Any) -> list[str]:
    """What the change means, in words, from the series' periods as they are now."""
    out = []
    settings = SeriesSettings.model_validate(
        {**series["settings"], **body.model_dump(exclude_none=True, exclude={"next", "period"})}
    )
    handed_out = [p for p in series["periods"] if p["highest"] is not None]
    for p in handed_out:
        out.append(
            f"Period {p['period']}: numbers up to {p['highest']:,} are handed out; next "
            f"may not move to or below {p['highest']:,}."
        )
    if body.next is not None:
        period = body.period or ("all" if settings.reset == "never" else str(today.year))
        out.append(f"The next number of {name} {period} becomes {body.next:,}.")
    if body.reset is not None and handed_out:
        out.append("Changing 'reset' after numbers were handed out will be refused.")
    try:
        sample = render(
            settings.format, body.next if body.next is not None else settings.start, today, "store"
        )
        out.append(f"A number will read like {sample}.")
    except FormatError as exc:
        out.append(f"The format will be refused: {exc}")
    return out


async def _series_state(request: web.Request, name: str) -> dict[str, Any]:
    async with request.config_dict[POOL].acquire() as conn:
        rows = await queries.series_overview(conn)
    return {"series": rows, "current": next(s for s in rows if s["name"] == name)}


async def _posted_change(request: web.Request, name: str) -> tuple[dict[str, Any], SeriesBody | web.Response]:
    """The series' state and the change the form asks for, or the page refusing it."""
    state = await _series_state(request, name)
    form = await request.post()
    try:
        body = _series_body(form, SeriesSettings.model_validate(state["current"]["settings"]))
    except ValidationError as exc:
        return state, _series_refused(request, state, name, describe_validation_error(exc), 400)
    if _nothing_to_change(body):
        return state, _series_refused(request, state, name, "Nothing to change.", 400)
    return state, body


async def series_review(request: web.Request) -> web.Response:
    """The confirmation step: the change and its consequences; nothing is written."""
    name = _series_name(request)
    state, body = await _posted_change(request, name)
    if isinstance(body, web.Response):
        return body
    return page(
        request,
        "series_review.html",
        {
            "name": name,
            "changes": body.model_dump(exclude_none=True),
            "consequences": _consequences(name, body, state["current"], _today(request)),
        },
    )


async def series_apply(request: web.Request) -> web.Response:
    name = _series_name(request)
    state, body = await _posted_change(request, name)
    if isinstance(body, web.Response):
        return body
    try:
        result = await request.config_dict[WRITER].execute(
            c.ConfigureSeries(
                series=name,
                changes=body.model_dump(exclude_none=True, exclude={"next", "period"}),
                next=body.next,
                period=body.period,
                today=_today(request),
            )
        )
    except DomainError as exc:
        return _series_refused(request, state, name, exc.message, refused_status(exc))
    notice = f"Series {name} saved: {result['settings']['format']}"
    if result["next"]:
        notice += f", next {result['next']['number']:,} in {result['next']['period']}"
    return page(request, "series.html", {**await _series_state(request, name), "notice": notice})


def _series_refused(
    request: web.Request, state: dict[str, Any], name: str, message: str, status: int
) -> web.Response:
    return page(request, "series.html", {**state, "error": f"{name}: {message}"}, status)


# -- stores --------------------------------------------------------------------------------


def _token_shown(request: web.Request, what: str, name: str, token: str) -> web.Response:
    return page(request, "store_token.html", {"what": what, "name": name, "token": token})


async def add_store(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        body = PeerBody.model_validate(
            {"name": str(form.get("name", "")).strip(), "url": str(form.get("url", "")).strip()}
        )
    except ValidationError as exc:
        raise web.HTTPBadRequest(text=describe_validation_error(exc)) from None
    token = new_token()
    await request.config_dict[WRITER].execute(
        c.RegisterPeer(name=body.name, url=body.url, token_sha256=token_sha256(token))
    )
    return _token_shown(request, "registered", body.name, token)


async def rotate_store(request: web.Request) -> web.Response:
    store = await store_of(request)
    token = new_token()
    await request.config_dict[WRITER].execute(
        c.RotatePeerToken(peer_id=store["peer_id"], token_sha256=token_sha256(token))
    )
    request.config_dict[TOKENS].forget()
    return _token_shown(request, "rotated", store["name"], token)


async def retire_store(request: web.Request) -> web.Response:
    store = await store_of(request)
    await request.config_dict[WRITER].execute(c.RetirePeer(peer_id=store["peer_id"]))
    request.config_dict[TOKENS].forget()
    return see_other(request, "stores")


# -- warnings ------------------------------------------------------------------------------


async def resolve_warning(request: web.Request) -> web.Response:
    warning_id = request.match_info["id"]
    if not UUID.fullmatch(warning_id):
        raise web.HTTPNotFound()
    await request.config_dict[WRITER].execute(c.ResolveWarning(warning_id=warning_id, by="operator"))
    form = await request.post()
    # Back to the list as it was filtered; only the filters, so no other URL can be made.
    back = {k: v for k, v in parse_qsl(str(form.get("back", ""))) if k in WARNING_FILTERS}
    return see_other(request, "warnings", urlencode(back))
