"""Open thousands of idle websockets to one server process; report errors and its RSS per socket.

    python idle_sockets.py --url ws://127.0.0.1:8000/ws/chat/inbox/ --count 5000 --server-pid 1234 \\
        --greeting < sessions.json

Runs in a baked project's venv (websockets). Sessions (a JSON list of {"cookie": ...}) are
used round robin; a session with a "path" opens that path of --url's server instead (a room).
With --greeting each socket counts as open once its first frame (the inbox's sync, a room's
presence) arrived. The sockets then stay idle for --hold seconds; the server's RSS is read
from /proc before opening (after --warm-up sockets were opened and closed) and after the
hold. Errors: handshakes that failed or timed out, and sockets the server closed during the
hold. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from contextlib import suppress
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.protocol import State


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc")


async def open_all(args: argparse.Namespace, sessions: list[dict], count: int) -> tuple[list, list[str]]:
    gate = asyncio.Semaphore(args.concurrency)
    origin = args.url.replace("ws://", "http://", 1).split("/ws/")[0].rstrip("/")
    errors: list[str] = []

    async def open_one(number: int):
        session = sessions[number % len(sessions)] if sessions else {}
        url = origin.replace("http://", "ws://", 1) + session["path"] if "path" in session else args.url
        async with gate:
            try:
                websocket = await connect(
                    url,
                    origin=origin,
                    additional_headers={"Cookie": session["cookie"]} if session else None,
                    compression=None,
                    ping_interval=None,
                    open_timeout=args.timeout,
                    proxy=None,  # no proxy lookup in the environment on each of thousands of connects
                )
                if args.greeting:
                    await asyncio.wait_for(websocket.recv(), args.timeout)
                return websocket
            except Exception as exc:  # every failure is a figure, not a crash
                errors.append(type(exc).__name__)
                return None

    opened = await asyncio.gather(*(open_one(number) for number in range(count)))
    return [websocket for websocket in opened if websocket is not None], errors


async def main(args: argparse.Namespace) -> dict:
    sessions = json.load(sys.stdin) if args.sessions else []
    if args.warm_up:
        warm, _ = await open_all(args, sessions, args.warm_up)
        await asyncio.gather(*(ws.close() for ws in warm), return_exceptions=True)
    await asyncio.sleep(1)
    before = rss_kib(args.server_pid)
    started = time.perf_counter()
    sockets, errors = await open_all(args, sessions, args.count)
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(args.hold)
    after = rss_kib(args.server_pid)
    closed = sum(1 for websocket in sockets if websocket.state is not State.OPEN)
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 60)
    held = len(sockets) - closed
    return {
        "sockets": args.count,
        "held": held,
        "errors": len(errors) + closed,
        "error_kinds": sorted(set(errors))[:5] + (["closed during hold"] if closed else []),
        "connect_s": round(connect_seconds, 1),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": round((after - before) / held, 1) if held else None,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--sessions", action="store_true", help="read a JSON list of sessions on stdin")
    parser.add_argument("--greeting", action="store_true", help="a socket is open once its first frame arrived")
    parser.add_argument("--hold", type=float, default=5.0, help="idle seconds before measuring")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=20,
        help="sockets opened and closed before measuring: the first ones pay for what the server keeps "
        "whatever the count (lazy imports, a database connection, threads)",
    )
    parser.add_argument("--concurrency", type=int, default=25, help="handshakes in flight (small listen backlogs)")
    parser.add_argument("--timeout", type=float, default=60.0, help="bound on one handshake")
    return parser.parse_args()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asyncio.run(main(parse_args()))))
