"""Room fan-out: our chat against the Channels tutorial relay, on one app server process.

Run from the project directory with the project's venv (`pip install -e ".[dev]"` brings
websockets and httpx):

    python benchmarks/bench_fanout.py                            # in-memory layer
    python benchmarks/bench_fanout.py --redis redis://127.0.0.1:6379/0 --json bench.json
    python benchmarks/bench_fanout.py --server daphne             # default: gunicorn (make serve-prod)
    python benchmarks/bench_fanout.py --processes 2 --rates 100 --redis redis://127.0.0.1:6379/0
    python benchmarks/bench_fanout.py --storm 5000 --no-memory-layer --redis redis://127.0.0.1:6379/0

For each layer it seeds 100 members (10 of them senders) in a throwaway database, starts
one server process (`--server`) on a free port of 127.0.0.1 serving `benchmarks.relay_asgi`, and offers the
same load to both targets:

- relay: 100 sockets on ws/bench/relay/<room>/, the senders send frames over their socket;
- chat:  100 members on ws/chat/<id>/, each a `RoomClient` (benchmarks/room_client.py) that
  does what the room page does: the senders send over their socket and wait for the ack
  (`--send-over http`: POST /chat/<id>/send/), receivers follow the prev_id chain and catch
  up with GET messages/?after=<id> on a gap, and once at the end as after a reconnect.
  Beside the messages the other members signal typing ({"type": "typing"}, at most once
  every 3 s each, as the page does), about one signal per message (`--typing-per-message`),
  and toggle reactions on the newest message over the socket, one per five messages
  (`--reactions-per-message`).

With `--processes 2` (Redis only) each layer gets two server processes on the same Redis,
as behind a load balancer: members (senders included) are split evenly between them, for
the relay as for the chat. `--storm N` runs a reconnect storm instead (fanout_storm.py):
N room and inbox sockets on one process, the process restarted under them, beside the same
people's N sockets on the relay, restarted the same way.

Latency runs from the scheduled send time (open loop: a slow server cannot slow the
senders down and hide its queueing) to the frame's arrival. "lost" counts deliveries
that never arrived as frames; "recovered" those the catch-up GETs then fetched. Also
reported, before the load, on server processes of their own: the RSS per idle socket, inbox
and room sockets apart (`--idle-sockets`, `--idle-kinds`; `--tracemalloc` shows where it
goes). Figures only: nothing is asserted.

The parts: tooling.py (ports, server processes, sessions), seeding.py (settings, members,
rooms), fanout_load.py (the offered load on each target), fanout_storm.py (the reconnect
storm), room_client.py and room_outbox.py (the room page's protocol) and fanout_report.py
(the table and the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

# Run as a script: the project (chat, config, benchmarks) must be importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    import httpx
    import websockets
except ImportError as exc:  # pragma: no cover - a hint, not a feature
    sys.exit(f"{exc.name} is missing: pip install -e '.[dev]' (the dev extra has websockets and httpx)")

from asgiref.sync import sync_to_async  # noqa: E402

from benchmarks.fanout_load import (  # noqa: E402
    IDLE_KINDS,
    IDLE_WARM_UP,
    MESSAGE_PREFIX,
    idle_memory,
    run_chat,
    run_relay,
)
from benchmarks.fanout_report import Result, print_table, report  # noqa: E402
from benchmarks.fanout_storm import StormResult, print_storm, run_storm, storm_verdicts  # noqa: E402
from benchmarks.room_client import REORDER_GRACE_SECONDS, new_http_client  # noqa: E402
from benchmarks.seeding import Room, Seed, seed, seed_rooms, server_env, setup_django, stored_twice  # noqa: E402
from benchmarks.tooling import PROJECT_DIR, SERVERS, ServerProcess, raise_open_files_limit  # noqa: E402

ASGI_APPLICATION = "benchmarks.relay_asgi:application"


def start_server(
    args,
    workdir: Path,
    layer: str,
    redis_url: str | None,
    *,
    prefix: str | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    env = {
        **server_env(
            database_url=args.database_url,
            workdir=workdir,
            redis_url=redis_url,
            prefix=prefix or f"bench-{secrets.token_hex(3)}",
        ),
        **(env or {}),
    }
    log_path = workdir / f"{args.server}-{layer}.log"
    server = ServerProcess(log_path=log_path, env=env, application=ASGI_APPLICATION, server=args.server, port=port)
    try:
        server.wait_ready(timeout=30)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    return server


def start_servers(args, workdir: Path, layer: str, redis_url: str | None) -> list[ServerProcess]:
    """`--processes` servers on one layer: the same Redis and prefix, so they share their groups."""
    if args.processes == 1:
        return [start_server(args, workdir, layer, redis_url)]
    prefix = f"bench-{secrets.token_hex(3)}"
    servers = []
    try:
        for number in range(args.processes):
            servers.append(start_server(args, workdir, f"{layer}-{number}", redis_url, prefix=prefix))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


async def bench_layer(args, layer: str, redis_url: str | None, seed_state: Seed, workdir: Path):
    """Its server(s), every rate, both targets: the layer's results."""
    servers = start_servers(args, workdir, layer, redis_url)
    results: list[Result] = []
    try:
        async with new_http_client(timeout=args.phase_timeout, connections=args.senders * 4) as http:
            for rate, chat_id in zip(args.rates, seed_state.chat_ids, strict=True):
                for target in ("relay", "chat"):
                    result = Result(layer, target, rate, args.duration, args.members, args.senders)
                    result.processes = len(servers)
                    print(f"  {layer}: {target} at {rate:g} msg/s for {args.duration:g} s ...", flush=True)
                    await run_target(args, servers, http, seed_state, result, chat_id=chat_id)
                    if target == "chat":
                        result.stored_twice = await sync_to_async(stored_twice)(chat_id, MESSAGE_PREFIX)
                    results.append(result)
                    await asyncio.sleep(2)  # let the server finish closing the run's sockets
    finally:
        for server in servers:
            server.stop()
    return results


async def idle_layer(args, layer: str, redis_url: str | None, rooms: list[Room], workdir: Path) -> list[dict]:
    """RSS per idle socket of each kind, each on a server process of its own that served nothing else."""
    memory = []
    for kind in args.idle_kinds:
        server = start_server(args, workdir, f"idle-{kind}-{layer}", redis_url, env=idle_server_env(args))
        try:
            print(f"  {layer}: {args.idle_sockets} idle {kind} sockets ...", flush=True)
            figures = await idle_memory(server, rooms, kind=kind, count=args.idle_sockets, timeout=args.phase_timeout)
        finally:
            server.stop()
        memory.append({"layer": layer, **figures})
        if "tracemalloc" in figures:
            print(f"    the server's top allocations while they sat idle:\n{figures['tracemalloc']}", flush=True)
    return memory


def idle_server_env(args) -> dict[str, str]:
    if not args.tracemalloc:
        return {}
    # A snapshot of the whole heap blocks the worker longer than gunicorn's heartbeat timeout.
    return {"BENCH_TRACEMALLOC": str(args.tracemalloc), "GUNICORN_CMD_ARGS": "--timeout 0"}


async def run_target(args, servers, http, seed_state: Seed, result: Result, *, chat_id: int) -> None:
    # The client's own full collections (about 40 ms with the previous runs' results on its
    # heap) would show up as the server's latency.
    gc.collect()
    gc.freeze()
    timeout = args.phase_timeout
    if result.target == "relay":
        run = run_relay(servers, seed_state.members, result, room=f"r{chat_id}", timeout=timeout)
    else:
        run = run_chat(
            servers,
            http,
            seed_state.members,
            result,
            chat_id=chat_id,
            timeout=timeout,
            hidden=args.hidden,
            reorder_grace=args.reorder_grace,
            send_over=args.send_over,
            typing_per_message=args.typing_per_message,
            reactions_per_message=args.reactions_per_message,
        )
    try:
        await asyncio.wait_for(run, args.duration + 4 * args.phase_timeout)
    except (OSError, TimeoutError, websockets.WebSocketException, httpx.HTTPError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        logs = ", ".join(str(server.log_path) for server in servers)
        print(f"    failed: {result.error} (server log: {logs})", flush=True)


async def storm_layer(args, layer: str, redis_url: str | None, workdir: Path, rooms: list[Room]) -> list[StormResult]:
    """The relay's storm (the reference), then the chat's: each a server process of its own
    restarted under the sockets of `rooms`' members. A storm that breaks off is reported as
    failed, and the next one still runs."""
    results = []
    for target in ("relay", "chat"):
        try:
            results.append(await storm_target(args, layer, redis_url, workdir, rooms, relay=target == "relay"))
        except (Exception, SystemExit) as exc:  # a server that did not start raises SystemExit
            error = f"{type(exc).__name__}: {exc}"[:300]
            print(f"    {target}: failed: {error}", flush=True)
            results.append(
                StormResult(layer=layer, target=target, sockets=args.storm, rooms=len(rooms), rate=0.0, error=error)
            )
    return results


async def storm_target(
    args, layer: str, redis_url: str | None, workdir: Path, rooms: list[Room], *, relay: bool
) -> StormResult:
    """Open sockets for each member of `rooms` (a room and an inbox socket each, or two on the
    relay), then restart the server under them."""
    target = "relay" if relay else "chat"
    prefix = f"bench-{secrets.token_hex(3)}"  # the restarted process finds the same groups on Redis
    name = f"storm-{layer}-{target}"
    server = start_server(args, workdir, name, redis_url, prefix=prefix)

    def start(port: int) -> ServerProcess:
        return start_server(args, workdir, f"{name}-restarted", redis_url, prefix=prefix, port=port)

    print(f"  {layer}, {target}: storm of {args.storm} sockets in {len(rooms)} rooms ...", flush=True)
    profile = None
    if args.profile:
        profile = args.profile.with_name(f"{args.profile.stem}-{layer}-{target}{args.profile.suffix}")
    result, server = await run_storm(
        rooms,
        layer=layer,
        server=server,
        stop=ServerProcess.stop,  # SIGTERM, as a deploy does
        start=start,
        rate=args.storm_rate,
        timeout=args.phase_timeout,
        relay=relay,
        profile=profile,
    )
    server.stop()
    if result.error:
        print(f"    failed: {result.error} (server logs in {workdir})", flush=True)
    unexpected = {kind: n for kind, n in (result.failures or {}).items() if kind.startswith("close_code_")}
    unexpected.pop("close_code_1012", None)  # the restart's
    if (unexpected or result.down_at_end) and not args.logs:  # kept, or the temporary directory takes them
        kept = PROJECT_DIR / "test-artifacts" / f"storm-logs-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copytree(workdir, kept, ignore=shutil.ignore_patterns("*.sqlite3*"))
        print(f"    closes other than the restart's {unexpected}: server logs kept in {kept}", flush=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates",
        type=float,
        nargs="*",
        default=[20.0, 50.0],
        help="total msg/s offered (each; none: idle sockets only)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending per run")
    parser.add_argument("--members", type=int, default=100, help="room sockets (members), senders included")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--server", choices=SERVERS, default=SERVERS[0], help="the app server (default: %(default)s)")
    parser.add_argument(
        "--idle-sockets", type=int, default=1000, help="idle sockets of each kind for the memory figures (0: none)"
    )
    parser.add_argument(
        "--idle-kinds",
        nargs="+",
        choices=IDLE_KINDS,
        default=list(IDLE_KINDS),
        help="the kinds of idle socket measured, each on a fresh server process (default: both)",
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="idle sockets: the servers trace allocations (tracemalloc, this many frames a traceback) and "
        "print where the idle sockets' memory went; their RSS then includes tracemalloc's own",
    )
    parser.add_argument("--redis", default=None, help="also run on Redis (default: REDIS_URL, if channels_redis)")
    parser.add_argument("--no-memory-layer", action="store_true", help="skip the in-memory layer")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes on one Redis (Redis only: more than 1 skips the in-memory layer); "
        "members and senders are split evenly between them, for the relay too",
    )
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
    parser.add_argument(
        "--reactions-per-message",
        type=float,
        default=0.2,
        help="chat: reactions toggled per message, by the members who do not send (0: none)",
    )
    parser.add_argument(
        "--storm",
        type=int,
        default=0,
        metavar="N",
        help="instead of the rate runs: a reconnect storm of N sockets on one process (half room sockets "
        "in rooms of --members, half inbox sockets), the server restarted under them",
    )
    parser.add_argument(
        "--storm-rate", type=float, default=10.0, help="msg/s sent into the rooms during the storm (0: none)"
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="storm: keep the server logs (and a SQLite database) in this directory"
    )
    parser.add_argument("--profile", type=Path, default=None, help="storm: py-spy raw samples of the reconnect here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.redis is None and os.environ.get("REDIS_URL"):
        with suppress(ImportError):
            import channels_redis  # noqa: F401

            args.redis = os.environ["REDIS_URL"]
    if not 0 < args.senders <= args.members:
        parser.error("--senders must be between 1 and --members")
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.processes > 1:
        if not args.redis:
            parser.error("--processes above 1 needs Redis (--redis or REDIS_URL): processes share nothing else")
        args.no_memory_layer = True
    if args.storm and (args.storm < 2 or args.processes > 1):
        parser.error("--storm needs at least 2 sockets, on one process")
    return args


def layers(args) -> list[tuple[str, str | None]]:
    chosen = [] if args.no_memory_layer else [("memory", None)]
    return chosen + ([("redis", args.redis)] if args.redis else [])


async def bench(args, seed_state: Seed, idle_rooms: list[Room], workdir: Path) -> tuple[list[Result], list[dict]]:
    """Each layer gets its own servers and its own rooms (one per rate)."""
    results, memory = [], []
    rooms = iter(seed_state.chat_ids)
    for layer, redis_url in layers(args):
        if args.idle_sockets:
            memory += await idle_layer(args, layer, redis_url, idle_rooms, workdir)
        if not args.rates:
            continue
        layer_seed = Seed(members=seed_state.members, chat_ids=[next(rooms) for _ in args.rates])
        results += await bench_layer(args, layer, redis_url, layer_seed, workdir)
    return results, memory


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.storm:
        return main_storm(args)
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        workdir = Path(tmp)
        setup_django(server_env(database_url=args.database_url, workdir=workdir, redis_url=None, prefix="bench"))
        rooms = len(args.rates) * len(layers(args))
        seed_state = seed(run_id=secrets.token_hex(3), members=args.members, rooms=rooms)
        # The idle sockets' people: one socket each, in rooms of --members (a room kind's sockets
        # are spread over its rooms as people with a room page open would be).
        people = args.idle_sockets + IDLE_WARM_UP if args.idle_sockets else 0
        idle_rooms = seed_rooms(run_id=secrets.token_hex(3), users=people, room_size=args.members) if people else []
        on = f"{args.processes} {args.server} processes" if args.processes > 1 else f"one {args.server} process"
        print(f"{args.members} members, {args.senders} senders, {args.duration:g} s per run on {on}", flush=True)
        raise_open_files_limit()  # a descriptor per idle socket, in this process too
        results, memory = asyncio.run(bench(args, seed_state, idle_rooms, workdir))
    if args.json:
        args.json.write_text(json.dumps(report(args, results, memory), indent=2) + "\n")
    print_table(results, memory)
    if args.json:
        print(f"wrote {args.json}")


def main_storm(args) -> None:
    raise_open_files_limit()  # a socket each, in this process too
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        workdir = Path(tmp)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            workdir = args.logs
        setup_django(server_env(database_url=args.database_url, workdir=workdir, redis_url=None, prefix="bench"))
        results = []
        for layer, redis_url in layers(args):
            # The people of `--storm` sockets (a room and an inbox socket each) in rooms of `--members`.
            rooms = seed_rooms(run_id=secrets.token_hex(3), users=args.storm // 2, room_size=args.members)
            results += asyncio.run(storm_layer(args, layer, redis_url, workdir, rooms))
    if args.json:
        figures = {"settings": {"storm": args.storm, "room_size": args.members, "rate": args.storm_rate}}
        storms = {"storms": [r.figures() for r in results], "verdicts": [v.as_json() for v in storm_verdicts(results)]}
        args.json.write_text(json.dumps({**figures, **storms}, indent=2) + "\n")
    print_storm(results)


if __name__ == "__main__":
    main()
