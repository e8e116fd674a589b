"""Which agents this coordinator serves: the agent names the protocol it speaks in a header.

The protocol number changes when the coordinator and the agent stop understanding each other
(a route, a body or an answer the agent relies on changes). An agent outside the supported
range is refused with 400 ``agent_protocol_unsupported`` naming both sides, before it
reserves anything: an old agent that misreads an answer could write wrong numbers into
WHMCS. A client without the header is not an agent (an integration using the API directly,
an operator's tool) and is served as before.
"""

from __future__ import annotations

from importlib.metadata import version

from aiohttp import web

from coordinator.http.errors import ApiError

HEADER = "Concord-Agent-Protocol"
# 2: batch reservations and confirmations, snapshots with transactions, the heartbeat's
# credit-note rule. Agents before 2 sent no header.
OLDEST = 2
NEWEST = 2


def check(request: web.Request) -> None:
    """Refuse an agent whose protocol this coordinator does not speak."""
    sent = request.headers.get(HEADER)
    if sent is None:
        return
    text = sent.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 4):
        raise ApiError(400, "invalid_header", f"{HEADER} must be the agent's protocol number, a whole number")
    spoken = int(text)
    if OLDEST <= spoken <= NEWEST:
        return
    supported = f"{OLDEST}" if OLDEST == NEWEST else f"{OLDEST} to {NEWEST}"
    upgrade = "concord-agent" if spoken < OLDEST else "the coordinator"
    raise ApiError(
        400,
        "agent_protocol_unsupported",
        f"this agent speaks protocol {spoken}; this coordinator (concord "
        f"{version('concord')}) speaks agent protocol {supported}: upgrade {upgrade}",
    )
