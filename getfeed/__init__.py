"""The Get feed's aiohttp edges, shared by the agent and the coordinator (the agent may import
``coordinator.events``, which is pure, and this package, and nothing else of the coordinator)."""
