"""What the app holds for its handlers (aiohttp AppKeys): one home, so that handler modules
and the background jobs they report on need not import each other for a key."""

from __future__ import annotations

from aiohttp import web

from coordinator.ledger.writer import LedgerWriter
from coordinator.monitors.chain_watch import ChainWatch
from coordinator.peers.tokens import TokenCache
from getfeed.vies import ViesSettings

WRITER = web.AppKey("writer", LedgerWriter)
POOL = web.AppKey("pool", object)
TIMEZONE = web.AppKey("timezone", str)
TOKENS = web.AppKey("tokens", TokenCache)
VIES = web.AppKey("vies", ViesSettings)
CHAIN_WATCH = web.AppKey("chain_watch", ChainWatch)
