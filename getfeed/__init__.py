"""The WebService Get contract, whole, for the agent and the coordinator alike.

Pure core (no I/O): ``query`` (the request's parameters, date keywords and errors),
``answer`` (the streamed answer), ``europe`` (the EU table and the MOSS rule), ``vies``
(VIES's wire format and the ``Europe`` block), ``settings`` (the VIES options). Edges:
``lookup`` (which numbers VIES is asked, a few at once), ``http`` (aiohttp: serving a
request from a ``FeedSource``, asking VIES). Each side brings only its source: the agent
its WHMCS database, the coordinator its documents projection.

Imports: ``coordinator.events`` (pure), nothing else of the coordinator, nothing of the
agent; the agent imports this package and ``coordinator.events`` only.
"""
