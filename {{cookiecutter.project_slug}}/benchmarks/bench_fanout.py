"""Room fan-out: our chat against the Channels tutorial relay, on one app server process.

Run from the project directory with the project's venv (`pip install -e ".[dev]"` brings
websockets and httpx):

    python benchmarks/bench_fanout.py                            # in-memory layer
    python benchmarks/bench_fanout.py --redis redis://127.0.0.1:6379/0 --json bench.json
    python benchmarks/bench_fanout.py --server daphne             # default: gunicorn (make serve-prod)

For each layer it seeds 100 members (10 of them senders) in a throwaway database, starts
one server process (`--server`) on a free port of 127.0.0.1 serving `benchmarks.relay_asgi`, and offers the
same load to both targets:

- relay: 100 sockets on ws/bench/relay/<room>/, the senders send frames over their socket;
- chat:  100 members on ws/chat/<id>/, each a `RoomClient` (benchmarks/room_client.py) that
  does what the room page does: the senders send over their socket and wait for the ack
  (`--send-over http`: POST /chat/<id>/send/), receivers follow the prev_id chain and catch
  up with GET messages/?after=<id> on a gap, and once at the end as after a reconnect.
  Beside the messages the other members signal typing ({"type": "typing"}, at most once
  every 3 s each, as the page does), about one signal per message (`--typing-per-message`).

Latency runs from the scheduled send time (open loop: a slow server cannot slow the
senders down and hide its queueing) to the frame's arrival. "lost" counts deliveries
that never arrived as frames; "recovered" those the catch-up GETs then fetched. Also
reported: the server's RSS per idle inbox socket. Figures only: nothing is asserted.

The parts: tooling.py (ports, server processes, sessions), seeding.py (settings, members,
rooms), fanout_load.py (the offered load on each target), room_client.py and room_outbox.py
(the room page's protocol) and fanout_report.py (the table and the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

# Run as a script: the project (chat, config, benchmarks) must be importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    import httpx
    import websockets
except ImportError as exc:  # pragma: no cover - a hint, not a feature
    sys.exit(f"{exc.name} is missing: pip install -e '.[dev]' (the dev extra has websockets and httpx)")

from benchmarks.fanout_load import idle_memory, run_chat, run_relay  # noqa: E402
from benchmarks.fanout_report import Result, print_table, report  # noqa: E402
from benchmarks.room_client import REORDER_GRACE_SECONDS, new_http_client  # noqa: E402
from benchmarks.seeding import Seed, seed, server_env, setup_django  # noqa: E402
from benchmarks.tooling import SERVERS, ServerProcess  # noqa: E402

ASGI_APPLICATION = "benchmarks.relay_asgi:application"


def start_server(args, workdir: Path, layer: str, redis_url: str | None) -> ServerProcess:
    env = server_env(
        database_url=args.database_url, workdir=workdir, redis_url=redis_url, prefix=f"bench-{secrets.token_hex(3)}"
    )
    log_path = workdir / f"{args.server}-{layer}.log"
    server = ServerProcess(log_path=log_path, env=env, application=ASGI_APPLICATION, server=args.server)
    try:
        server.wait_ready(timeout=30)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    return server


async def bench_layer(args, layer: str, redis_url: str | None, seed_state: Seed, workdir: Path):
    """One server, every rate, both targets; the layer's results and its idle-socket memory."""
    server = start_server(args, workdir, layer, redis_url)
    results: list[Result] = []
    try:
        memory = {}
        if args.idle_sockets:
            memory = await idle_memory(server, seed_state.members, count=args.idle_sockets, timeout=args.phase_timeout)
            await asyncio.sleep(2)
        async with new_http_client(timeout=args.phase_timeout, connections=args.senders * 4) as http:
            for rate, chat_id in zip(args.rates, seed_state.chat_ids, strict=True):
                for target in ("relay", "chat"):
                    result = Result(layer, target, rate, args.duration, args.members, args.senders)
                    print(f"  {layer}: {target} at {rate:g} msg/s for {args.duration:g} s ...", flush=True)
                    await run_target(args, server, http, seed_state, result, chat_id=chat_id)
                    results.append(result)
                    await asyncio.sleep(2)  # let the server finish closing the run's sockets
    finally:
        server.stop()
    return results, ({"layer": layer, **memory} if memory else None)


async def run_target(args, server, http, seed_state: Seed, result: Result, *, chat_id: int) -> None:
    # The client's own full collections (about 40 ms with the previous runs' results on its
    # heap) would show up as the server's latency.
    gc.collect()
    gc.freeze()
    timeout = args.phase_timeout
    if result.target == "relay":
        run = run_relay(server, seed_state.members, result, room=f"r{chat_id}", timeout=timeout)
    else:
        run = run_chat(
            server,
            http,
            seed_state.members,
            result,
            chat_id=chat_id,
            timeout=timeout,
            hidden=args.hidden,
            reorder_grace=args.reorder_grace,
            send_over=args.send_over,
            typing_per_message=args.typing_per_message,
        )
    try:
        await asyncio.wait_for(run, args.duration + 4 * args.phase_timeout)
    except (OSError, TimeoutError, websockets.WebSocketException, httpx.HTTPError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        print(f"    failed: {result.error} (server log: {server.log_path})", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 50.0], help="total msg/s offered (each)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending per run")
    parser.add_argument("--members", type=int, default=100, help="room sockets (members), senders included")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--server", choices=SERVERS, default=SERVERS[0], help="the app server (default: %(default)s)")
    parser.add_argument("--idle-sockets", type=int, default=1000, help="inbox sockets for the memory figure")
    parser.add_argument("--redis", default=None, help="also run on Redis (default: REDIS_URL, if channels_redis)")
    parser.add_argument("--no-memory-layer", action="store_true", help="skip the in-memory layer")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="default: throwaway SQLite")
    parser.add_argument("--phase-timeout", type=float, default=60.0, help="bound on connecting, draining, catch-up")
    parser.add_argument("--hidden", action="store_true", help="chat receivers report a hidden tab (no read marking)")
    parser.add_argument(
        "--reorder-grace",
        type=float,
        default=REORDER_GRACE_SECONDS,
        help="seconds a chat receiver waits for a late frame before catching up (default: the room JS's 0.4)",
    )
    parser.add_argument(
        "--send-over",
        choices=["socket", "http"],
        default="socket",
        help="chat senders send over their room socket (as the page does when it is open) or POST send/",
    )
    parser.add_argument(
        "--typing-per-message",
        type=float,
        default=1.0,
        help="chat: typing signals offered per message, from the members who do not send (0: none)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.redis is None and os.environ.get("REDIS_URL"):
        with suppress(ImportError):
            import channels_redis  # noqa: F401

            args.redis = os.environ["REDIS_URL"]
    if not 0 < args.senders <= args.members:
        parser.error("--senders must be between 1 and --members")
    return args


def layers(args) -> list[tuple[str, str | None]]:
    chosen = [] if args.no_memory_layer else [("memory", None)]
    return chosen + ([("redis", args.redis)] if args.redis else [])


async def bench(args, seed_state: Seed, workdir: Path) -> tuple[list[Result], list[dict]]:
    """Each layer gets its own server and its own rooms (one per rate)."""
    results, memory = [], []
    rooms = iter(seed_state.chat_ids)
    for layer, redis_url in layers(args):
        layer_seed = Seed(members=seed_state.members, chat_ids=[next(rooms) for _ in args.rates])
        layer_results, layer_memory = await bench_layer(args, layer, redis_url, layer_seed, workdir)
        results += layer_results
        if layer_memory:
            memory.append(layer_memory)
    return results, memory


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        workdir = Path(tmp)
        setup_django(server_env(database_url=args.database_url, workdir=workdir, redis_url=None, prefix="bench"))
        rooms = len(args.rates) * len(layers(args))
        seed_state = seed(run_id=secrets.token_hex(3), members=args.members, rooms=rooms)
        load = f"{args.members} members, {args.senders} senders, {args.duration:g} s per run"
        print(f"{load} on one {args.server} process", flush=True)
        results, memory = asyncio.run(bench(args, seed_state, workdir))
    if args.json:
        args.json.write_text(json.dumps(report(args, results, memory), indent=2) + "\n")
    print_table(results, memory)
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
