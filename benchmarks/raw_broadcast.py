"""The ceiling for Python websockets on this machine: a bare `websockets` broadcast server.

    python raw_broadcast.py serve --port 8765
    python raw_broadcast.py load --port 8765 --members 100 --senders 10 --rate 20 --duration 10 \\
        --project-dir build/bench/redis-pg/chat_project

`serve` relays every frame it receives to every connected socket (no auth, no groups, no
channel layer, no Django). `load` offers it the same open-loop load as bench_fanout.py
offers the Channels relay, with its own `run_relay` (benchmarks/fanout_load.py of the baked
project), and prints one JSON line in its Result format (benchmarks/fanout_report.py). Both
run in a baked project's venv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
from pathlib import Path

HOST = "127.0.0.1"


async def serve(port: int) -> None:
    from websockets.asyncio.server import broadcast
    from websockets.asyncio.server import serve as ws_serve

    clients = set()

    async def relay(websocket) -> None:
        clients.add(websocket)
        try:
            async for frame in websocket:
                broadcast(clients, frame)
        finally:
            clients.discard(websocket)

    async with ws_serve(relay, HOST, port, compression=None, ping_interval=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.Future()


class RawServer:
    """What fanout_load's run_relay needs of a server: where to connect."""

    def __init__(self, port: int):
        self.ws_base, self.base_url = f"ws://{HOST}:{port}", f"http://{HOST}:{port}"


async def load(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(args.project_dir))
    from benchmarks.fanout_load import run_relay
    from benchmarks.fanout_report import Result
    from benchmarks.room_client import Member

    members = [Member(user_id=n, cookie="", csrf="") for n in range(args.members)]
    result = Result("none", "raw", args.rate, args.duration, args.members, args.senders)
    try:
        await asyncio.wait_for(
            run_relay(RawServer(args.port), members, result, room="raw", timeout=args.phase_timeout),
            args.duration + 4 * args.phase_timeout,
        )
    except (OSError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    return result.figures()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["serve", "load"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--phase-timeout", type=float, default=60.0)
    parser.add_argument("--project-dir", type=Path, help="the baked project whose fan-out benchmark to use")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.mode == "serve":
        asyncio.run(serve(args.port))
    else:
        print(json.dumps(asyncio.run(load(args))))


if __name__ == "__main__":
    main()
