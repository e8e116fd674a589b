"""What every console request passes: security headers, the session, CSRF on every form
that changes something, operators only for changes, and errors as pages instead of JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from coordinator.console import session
from coordinator.console.view import SESSION, error_page, see_other
from coordinator.http.errors import ApiError, refused_status
from coordinator.http.keys import POOL
from coordinator.ledger.commands import DomainError
from coordinator.ledger.writer import LedgerUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Every asset is the coordinator's own; nothing inline, no eval, no frames, no other origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
OPEN_ROUTES = ("sign_in", "sign_in_form", "static")  # no session needed


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _checked(request, handler)
    response.headers.update(HEADERS)
    if request.match_info.route.name != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.match_info.route.name not in OPEN_ROUTES:
            refused = await _refusal(request)
            if refused is not None:
                return refused
        return await handler(request)
    except ApiError as exc:
        return error_page(request, exc.status, "Refused", exc.message)
    except DomainError as exc:
        return error_page(request, refused_status(exc), "Refused", exc.message)
    except LedgerUnavailable as exc:
        return error_page(
            request,
            503,
            "The ledger is unavailable",
            f"{exc.reason}. Nothing may have been written; look before you try again.",
        )
    except web.HTTPNotFound:
        return error_page(request, 404, "Not found", f"There is no page {request.path}.")
    except web.HTTPClientError as exc:
        return error_page(request, exc.status, exc.reason, exc.text or exc.reason)


async def _refusal(request: web.Request) -> web.StreamResponse | None:
    """None when the request may go on; else the answer that refuses it."""
    async with request.config_dict[POOL].acquire() as conn:
        current = await session.current(conn, request)
    if current is None:
        if request.method == "GET" and "HX-Request" not in request.headers:
            return see_other(request, "sign_in_form")
        refused = error_page(request, 401, "Signed out", "Your session ended: sign in again.")
        # A page polling in the background goes to the sign-in form instead of going stale.
        refused.headers["HX-Redirect"] = str(request.app.router["sign_in_form"].url_for())
        return refused
    request[SESSION] = current
    if request.method == "GET":
        return None
    form = await request.post()
    if not session.csrf_matches(current.csrf, form.get("csrf")):
        return error_page(
            request,
            403,
            "Form refused",
            "The form did not carry this session's CSRF token; nothing was changed."
            " Reload the page and try again.",
        )
    if not current.may_change and request.match_info.route.name != "sign_out":
        return error_page(
            request,
            403,
            "Read only",
            "A reader token sees everything and changes nothing; sign in with an "
            "operator token to change this.",
        )
    return None
