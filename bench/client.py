"""A load-generator process: ``python -m bench.client`` (started by the benchmark, not by hand).

It sets up, prints ``ready``, waits for a line on stdin, runs one load, prints its result as
one JSON line and stays until stdin closes (so its CPU time can still be read). Separate
processes let the load use its own core(s) and start together.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from bench.load import closed_loop, open_loop


async def _wait_for_go() -> None:
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "closed":
        return await closed_loop(
            args.target,
            args.token,
            concurrency=args.concurrency,
            duration=args.duration,
            warmup=args.warmup,
            prefix=args.prefix,
            http=args.http,
            gate=_wait_for_go,
        )
    return await open_loop(
        args.target,
        args.token,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        prefix=args.prefix,
        http=args.http,
        gate=_wait_for_go,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client")
    parser.add_argument("mode", choices=["closed", "open"])
    parser.add_argument("--target", action="append", required=True, help="coordinator base URL")
    parser.add_argument("--token", required=True, help="peer bearer token")
    parser.add_argument("--prefix", required=True, help="doc_id prefix, unique per process")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--http", choices=["raw", "aiohttp"], default="raw")
    result = asyncio.run(_run(parser.parse_args(argv)))
    print(orjson.dumps(result).decode(), flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
