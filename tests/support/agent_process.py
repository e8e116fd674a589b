"""Agent processes for tests: a real ``python -m agent serve`` beside one WHMCS database.

Its ``/healthz`` answers only once its first heartbeat reached the coordinator (it starts
its HTTP server then).
"""

from __future__ import annotations

from pathlib import Path

from tests.support.service_process import ServiceProcess, free_port

# Short intervals so that tests settle within seconds.
FAST_LOOPS = {
    "CONCORD_AGENT_POLL_SECONDS": "0.2",
    "CONCORD_AGENT_UPDATE_SCAN_SECONDS": "1",
    "CONCORD_AGENT_HEARTBEAT_SECONDS": "1",
}


class AgentProcess(ServiceProcess):
    """One store's agent."""

    def __init__(
        self,
        store: str,
        whmcs_url: str,
        coordinator_url: str,
        token: str,
        log_dir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        port = port or free_port()
        self.store = store
        self.whmcs_url = whmcs_url
        self.coordinator_url = coordinator_url
        self.token = token
        super().__init__(
            f"agent {store}",
            log_dir / f"agent-{store}.log",
            "agent",
            ["serve"],
            {
                "CONCORD_AGENT_WHMCS_URL": whmcs_url,
                "CONCORD_AGENT_COORDINATOR_URL": coordinator_url,
                "CONCORD_AGENT_TOKEN": token,
                "CONCORD_AGENT_STORE": store,
                "CONCORD_AGENT_HOST": "127.0.0.1",
                "CONCORD_AGENT_PORT": str(port),
                "CONCORD_AGENT_LOG_LEVEL": "warning",
                "CONCORD_AGENT_LOG_JSON": "true",
                **FAST_LOOPS,
                **(env or {}),
            },
            port,
        )
