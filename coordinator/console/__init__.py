"""The operator console: server-rendered pages under /console (docs/console.md)."""

from coordinator.console.setup import add_console

__all__ = ["add_console"]
