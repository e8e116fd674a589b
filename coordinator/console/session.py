"""Console sign-in: a random session id in an HttpOnly, SameSite=Strict cookie; the database
keeps only its SHA-256 beside the digest of the token that signed in, never the token.

The CSRF token of a session is derived from its id (SHA-256 under a label), so it needs no
storage, differs from the cookie and does not reveal it. The sign-in form, before there is a
session, gets the same protection from a short-lived cookie of its own (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from aiohttp import web

from coordinator.peers.tokens import token_sha256

SESSION_COOKIE = "concord_console"
SIGN_IN_COOKIE = "concord_console_sign_in"
COOKIE_PATH = "/console"
SESSION_HOURS = 12
SIGN_IN_MINUTES = 30


@dataclass(frozen=True)
class Session:
    role: str  # operator | reader
    csrf: str

    @property
    def may_change(self) -> bool:
        return self.role == "operator"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_of(secret: str) -> str:
    return hashlib.sha256(b"concord-console-csrf:" + secret.encode()).hexdigest()


def csrf_matches(expected: str, sent: object) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(expected, sent)


def _set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


async def sign_in(
    conn: asyncpg.Connection, request: web.Request, response: web.StreamResponse, token: str
) -> str | None:
    """Open a session for an operator or reader ``token``; its role, or None when the token
    is no such token (a store's token does not sign in)."""
    digest = token_sha256(token)
    row = await conn.fetchrow("SELECT token_sha256, role FROM api_tokens WHERE token_sha256 = $1", digest)
    # The index found the row by digest; compare again in constant time all the same.
    if row is None or not hmac.compare_digest(row["token_sha256"], digest):
        return None
    secret = secrets.token_urlsafe(32)
    await conn.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO console_sessions (id_sha256, token_sha256, expires_at)"
        " VALUES ($1, $2, now() + $3::interval)",
        _digest(secret),
        digest,
        timedelta(hours=SESSION_HOURS),
    )
    _set_cookie(request, response, SESSION_COOKIE, secret, SESSION_HOURS * 3600)
    response.del_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
    return str(row["role"])


async def current(conn: asyncpg.Connection, request: web.Request) -> Session | None:
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    role = await conn.fetchval(
        "SELECT t.role FROM console_sessions s JOIN api_tokens t USING (token_sha256)"
        " WHERE s.id_sha256 = $1 AND s.expires_at > now()",
        _digest(secret),
    )
    return None if role is None else Session(role=role, csrf=csrf_of(secret))


async def sign_out(conn: asyncpg.Connection, request: web.Request, response: web.StreamResponse) -> None:
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        await conn.execute("DELETE FROM console_sessions WHERE id_sha256 = $1", _digest(secret))
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)


def sign_in_secret(request: web.Request) -> str:
    """The secret behind the sign-in form's CSRF token: the browser's, or a new one."""
    return request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)


def keep_sign_in_secret(request: web.Request, response: web.StreamResponse, secret: str) -> None:
    _set_cookie(request, response, SIGN_IN_COOKIE, secret, SIGN_IN_MINUTES * 60)


def sign_in_csrf_matches(request: web.Request, sent: object) -> bool:
    secret = request.cookies.get(SIGN_IN_COOKIE)
    return bool(secret) and csrf_matches(csrf_of(secret or ""), sent)
