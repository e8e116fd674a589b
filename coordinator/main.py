"""`concord`: every command through cli.py, except `concord verify`, which starts without the
service's modules (it needs no settings and no database) so a verification starts at once."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["verify"]:
        from coordinator.audit.cli import verify_main

        return verify_main(args[1:])
    from coordinator.cli import main as cli_main

    return cli_main(args)
