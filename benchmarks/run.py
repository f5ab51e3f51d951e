"""`make bench`: bake the projects, start their services and servers on 127.0.0.1, measure.

    python benchmarks/run.py                       # everything (about 20 minutes on 2 cores)
    python benchmarks/run.py --quick               # a smaller subset (about 7 minutes)
    python benchmarks/run.py --only http fanout    # some phases

Phases, each figure beside its reference measured in the same run:
- generation: bake time without setup (median of --bakes) beside the bare `cookiecutter
  --version`; setup time with a warm package cache beside installing the same packages.
- http: pages under --concurrency connections for --http-duration s each, per database,
  beside a trivial Django view (the login page) and a static file on the same server.
- fanout: bench_fanout.py (our room vs the Channels relay, in-memory and Redis layers) per
  room size, beside a bare `websockets` broadcast server (raw_broadcast.py).
- busy: the busy-room targets (docs/performance.md, "Busy rooms"), each against the relay of
  the same run, on SQLite with the in-memory layer and on PostgreSQL with Redis: 100 members
  at 100 and 200 msg/s with typing and reactions, at 20 msg/s messages only (as the relay
  carries), at 100 msg/s on two processes (Redis), and a reconnect storm of --storm sockets.
  Each prints whether it met its target (`--busy-repeats` runs each again: one run on a
  shared machine proves little).
- idle: --idle-sockets idle inbox sockets to one server process, then as many room sockets
  to another, beside the raw server.

The app server is --server: gunicorn with the project's uvicorn worker (config/gunicorn.py,
as `make serve-prod` runs it) or daphne (`make run`).

Redis and PostgreSQL are started on free ports unless BENCH_REDIS_URL / BENCH_POSTGRES_URL
(a role that may create databases) are set. Every process and service started here is
stopped on the way out. Figures are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from projects import (
    BENCH_DIR,
    BUILD_DIR,
    TEMPLATE_DIR,
    Project,
    clean_env,
    requirements,
    run_cookiecutter,
    start_server,
    tail,
)
from report import print_tables
from services import HOST, free_port, postgres_server, redis_server, tooling, wait_for_port

PHASES = ("generation", "http", "fanout", "busy", "idle")
RESULTS_DIR = TEMPLATE_DIR / "bench-results"
HTTP_TARGETS = ("login", "static", "inbox", "room", "load-older", "widget-list", "send")
# The limiter still runs on every send; the benchmark's client is one user sending flat out.
UNBOUND_SEND = {"CHAT_RATE_LIMITS": "send=1000000/m"}
REDIS_PG = {"database": "postgresql", "channel_layer": "redis"}


class Services:
    """Redis and PostgreSQL, started on first use and stopped when the run ends."""

    def __init__(self, stack: ExitStack):
        self.stack = stack
        self._redis = os.environ.get("BENCH_REDIS_URL")
        self._postgres = os.environ.get("BENCH_POSTGRES_URL")

    @property
    def redis(self) -> str:
        if not self._redis:
            print("==> starting redis-server on 127.0.0.1", flush=True)
            self._redis = self.stack.enter_context(redis_server())
        return self._redis

    @property
    def postgres(self) -> str:
        if not self._postgres:
            print("==> starting PostgreSQL on 127.0.0.1", flush=True)
            self._postgres = self.stack.enter_context(postgres_server())
        return self._postgres

    def database(self, project: Project, name: str) -> str:
        """A fresh PostgreSQL database, dropped when the run ends; returns its URL."""
        admin = ["-c", "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])"]
        project.run(*admin, self.postgres, f'CREATE DATABASE "{name}"')
        self.stack.callback(project.run, *admin, self.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return urlunsplit(urlsplit(self.postgres)._replace(path=f"/{name}"))


# --- generation ------------------------------------------------------------------------


def timed(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=900, **kwargs)
    return time.perf_counter() - started


def bench_generation(args: argparse.Namespace) -> dict:
    workdir = BUILD_DIR / "generation"
    shutil.rmtree(workdir, ignore_errors=True)
    floor = [timed([sys.executable, "-m", "cookiecutter", "--version"]) for _ in range(args.bakes)]
    bakes = []
    for number in range(args.bakes):
        started = time.perf_counter()
        result = run_cookiecutter("setup_environment=false", output_dir=workdir / f"bake{number}")
        bakes.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(f"bake failed:\n{tail(result.stdout + result.stderr)}")
    figures = {
        "bake_s": round(statistics.median(bakes), 2),
        "cookiecutter_startup_s": round(statistics.median(floor), 2),
        "bakes": args.bakes,
    }
    if not args.quick:
        print("  setup_environment=true into a fresh directory ...", flush=True)
        started = time.perf_counter()
        result = run_cookiecutter("setup_environment=true", output_dir=workdir / "setup", timeout=900)
        figures["setup_s"] = round(time.perf_counter() - started, 1)
        if result.returncode != 0:
            figures["setup_error"] = tail(result.stdout + result.stderr, 10)
        figures["install_only_s"] = round(install_only(workdir / "bake0" / "chat_project", workdir / "venv"), 1)
    shutil.rmtree(workdir, ignore_errors=True)
    return figures


def install_only(project: Path, venv: Path) -> float:
    """The floor of the setup: a venv with the same packages from the same warm cache."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    packages = requirements(project / "pyproject.toml")
    subprocess.run([*pip, *packages], check=True, capture_output=True, timeout=900, env=clean_env())
    return time.perf_counter() - started


# --- http --------------------------------------------------------------------------------


def bench_http(args: argparse.Namespace, services: Services) -> dict:
    results = {}
    for database in args.databases:
        print(f"==> http on {database}", flush=True)
        if database == "sqlite":
            db_file = BUILD_DIR / "http-sqlite.sqlite3"
            for leftover in BUILD_DIR.glob("http-sqlite.sqlite3*"):
                leftover.unlink()
            project = Project("http-sqlite", {}, database_url=f"sqlite:///{db_file}", redis_url=None)
        else:
            project = Project("http-postgresql", REDIS_PG, database_url="", redis_url=services.redis)
            project.env["DATABASE_URL"] = services.database(project, f"bench_http_{secrets.token_hex(4)}")
        project.env.update(UNBOUND_SEND)
        seed_s = project.prepare(users=50, chats=args.chats, messages=args.messages)
        spec = project.run_json(str(BENCH_DIR / "http_targets.py"))
        print(f"  seeded in {seed_s:.1f} s: {spec['user_chats']} chats, {spec['messages']} messages", flush=True)
        server = start_server(project, BUILD_DIR / f"{args.server}-http-{database}.log", server=args.server)
        try:
            load = [project.python, str(BENCH_DIR / "http_load.py"), "--base-url", server.base_url]
            load += ["--concurrency", str(args.concurrency), "--duration", str(args.http_duration)]
            load += ["--only", *HTTP_TARGETS]
            bound = len(HTTP_TARGETS) * (args.http_duration + 1) * 3 + 60
            output = subprocess.run(
                load, input=json.dumps(spec), capture_output=True, text=True, timeout=bound, check=True
            ).stdout
        finally:
            server.stop()
        pages = json.loads(output.strip().splitlines()[-1])
        results[database] = {"seed_s": round(seed_s, 1), "chats": spec["user_chats"], "messages": spec["messages"]}
        results[database]["pages"] = pages
    return results


# --- websocket fan-out ------------------------------------------------------------------------


def fanout_rate(args: argparse.Namespace, members: int) -> float:
    return args.rate_large if members >= 500 else args.rate


def bench_fanout(args: argparse.Namespace, services: Services) -> list[dict]:
    print("==> fan-out", flush=True)
    project = Project("fanout", REDIS_PG, database_url="", redis_url=services.redis)
    del project.env["DATABASE_URL"]  # bench_fanout.py seeds a throwaway SQLite file of its own
    runs = []
    for members in args.members:
        rate, senders = fanout_rate(args, members), min(10, members)
        arguments = ["--members", str(members), "--senders", str(senders), "--rates", str(rate)]
        arguments += ["--duration", str(args.fanout_duration), "--idle-sockets", "0"]  # see "idle"
        arguments += ["--phase-timeout", "30", "--redis", services.redis, "--server", args.server]
        print(f"  {members} members at {rate:g} msg/s (bench_fanout.py) ...", flush=True)
        runs += run_bench_fanout(project, arguments, timeout=900).get("runs", [])
        runs.append(raw_fanout(args, project, members=members, senders=senders, rate=rate))
    return runs


def raw_fanout(args: argparse.Namespace, project: Project, *, members: int, senders: int, rate: float) -> dict:
    print(f"  {members} members at {rate:g} msg/s (raw websockets) ...", flush=True)
    port = free_port()
    script = str(BENCH_DIR / "raw_broadcast.py")
    server = subprocess.Popen([project.python, script, "serve", "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        command = [project.python, script, "load", "--port", str(port), "--members", str(members)]
        command += ["--senders", str(senders), "--rate", str(rate), "--duration", str(args.fanout_duration)]
        command += ["--phase-timeout", "30", "--project-dir", str(project.path)]
        output = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True).stdout
        return json.loads(output.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)


# --- busy rooms ------------------------------------------------------------------------------

# The relay carries messages alone: beside it at 20 msg/s, so does the chat.
MESSAGES_ONLY = ["--typing-per-message", "0", "--reactions-per-message", "0"]
BUSY_RUN_TIMEOUT_S = 1200


def busy_runs(args: argparse.Namespace, *, redis: bool) -> list[tuple[str, list[str]]]:
    """(what, bench_fanout.py arguments): 100 members, 10 senders, one process unless stated."""
    runs = [
        ("100 and 200 msg/s for 10 s, typing and reactions", ["--rates", "100", "200", "--duration", "10"]),
        ("20 msg/s for 30 s, messages only", ["--rates", "20", "--duration", "30", *MESSAGES_ONLY]),
    ]
    if redis:  # processes share nothing else
        runs.append(("100 msg/s for 10 s on two processes", ["--processes", "2", "--rates", "100", "--duration", "10"]))
    if not args.quick:
        runs.append((f"reconnect storm of {args.storm:,}", ["--storm", str(args.storm), "--storm-rate", "10"]))
    return runs


def bench_busy(args: argparse.Namespace, services: Services) -> list[dict]:
    """Each busy-room run's verdicts and figures, SQLite + in memory, then PostgreSQL + Redis.
    Every PostgreSQL run on a database of its own: a repeat is not run on a bigger one."""
    skipped = " (--quick: no reconnect storm)" if args.quick else ""
    print(f"==> busy rooms{skipped}", flush=True)
    settings = [("sqlite, in memory", Project("busy-sqlite", {}, database_url="", redis_url=None), False)]
    if "postgresql" in args.databases:
        project = Project("busy-postgresql", REDIS_PG, database_url="", redis_url=services.redis)
        settings.append(("postgresql, redis", project, True))
    for _, project, _ in settings:
        del project.env["DATABASE_URL"]  # bench_fanout.py: a throwaway SQLite file unless --database-url
    entries = []
    for repeat in range(1, args.busy_repeats + 1):
        for setting, project, redis in settings:
            for what, run_args in busy_runs(args, redis=redis):
                print(f"  {setting}: {what} (run {repeat}) ...", flush=True)
                if redis:
                    database = services.database(project, f"bench_busy_{secrets.token_hex(4)}")
                    run_args = ["--no-memory-layer", "--redis", services.redis, "--database-url", database, *run_args]
                arguments = ["--members", "100", "--senders", "10", "--idle-sockets", "0", "--server", args.server]
                arguments += ["--phase-timeout", "60", *run_args]
                report = run_bench_fanout(project, arguments, timeout=BUSY_RUN_TIMEOUT_S)
                entry = {"setting": setting, "what": what, "run": repeat, **report}
                for verdict in entry.get("verdicts", []):
                    print(f"    {'met' if verdict['met'] else 'NOT met'}: {verdict['target']}", flush=True)
                entries.append(entry)
    return entries


def run_bench_fanout(project: Project, arguments: list[str], *, timeout: float) -> dict:
    """bench_fanout.py's JSON report of one run with these arguments, or the error it ended with."""
    out = BUILD_DIR / "fanout.json"
    out.unlink(missing_ok=True)
    command = [project.python, "benchmarks/bench_fanout.py", *arguments, "--json", str(out)]
    try:
        result = subprocess.run(
            command,
            cwd=project.path,
            env=project.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=tooling.raise_open_files_limit,
        )
    except subprocess.TimeoutExpired:
        error = f"bench_fanout.py did not end within {timeout:g} s"
    else:
        if result.returncode == 0 and out.is_file():
            return json.loads(out.read_text())
        error = tail(result.stdout + result.stderr, 20)
    print(f"    bench_fanout.py failed:\n{error}", flush=True)
    return {"error": error}


# --- idle sockets --------------------------------------------------------------------------------


def bench_idle(args: argparse.Namespace) -> dict:
    print(f"==> {args.idle_sockets} idle sockets", flush=True)
    db_file = BUILD_DIR / "idle.sqlite3"
    for leftover in BUILD_DIR.glob("idle.sqlite3*"):
        leftover.unlink()
    project = Project("idle", {}, database_url=f"sqlite:///{db_file}", redis_url=None)
    project.prepare(users=50, chats=20, messages=200)
    # Thousands of sockets of 50 people: the per-person cap would refuse most of them.
    project.env["CHAT_MAX_SOCKETS_PER_USER"] = str(args.idle_sockets)
    spec = project.run_json(str(BENCH_DIR / "http_targets.py"))
    client = [project.python, str(BENCH_DIR / "idle_sockets.py"), "--count", str(args.idle_sockets)]
    client += ["--hold", str(args.idle_hold)]
    results = {}
    # Each kind on a server process of its own: memory freed by one kind would be reused by the next.
    for kind, sessions in (("app", spec["other_sessions"]), ("room", spec["room_sessions"])):
        server = start_server(project, BUILD_DIR / f"{args.server}-idle-{kind}.log", server=args.server)
        try:
            # The process that holds the sockets: gunicorn's worker, not its arbiter.
            pid = (tooling.child_pids(server.process.pid) or [server.process.pid])[0]
            command = [*client, "--url", f"ws://{HOST}:{server.port}/ws/chat/inbox/", "--server-pid", str(pid)]
            results[kind] = run_client([*command, "--sessions", "--greeting"], json.dumps(sessions))
        finally:
            server.stop()
    port = free_port()
    raw = [project.python, str(BENCH_DIR / "raw_broadcast.py"), "serve", "--port", str(port)]
    raw_server = subprocess.Popen(raw, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        results["raw"] = run_client([*client, "--url", f"ws://{HOST}:{port}/", "--server-pid", str(raw_server.pid)])
    finally:
        raw_server.terminate()
        raw_server.wait(timeout=10)
    return results


def run_client(command: list[str], stdin: str = "") -> dict:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        return {"errors": None, "error_kinds": [tail(result.stderr, 5)]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the run ------------------------------------------------------------------------------------


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=TEMPLATE_DIR, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "dirty": bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=TEMPLATE_DIR,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=PHASES, default=list(PHASES), help="run these phases")
    parser.add_argument("--quick", action="store_true", help="a smaller subset (about 7 minutes)")
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"], default=None)
    parser.add_argument("--server", choices=tooling.SERVERS, default=tooling.SERVERS[0], help="default: %(default)s")
    parser.add_argument("--chats", type=int, default=1000, help="chats of the benchmark user")
    parser.add_argument("--messages", type=int, default=100_000, help="messages in all")
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP connections in flight")
    parser.add_argument("--http-duration", type=float, default=None, help="measured seconds per page")
    parser.add_argument("--members", type=int, nargs="+", default=None, help="room sizes for the fan-out")
    parser.add_argument("--rate", type=float, default=20.0, help="msg/s offered to rooms under 500 members")
    parser.add_argument("--rate-large", type=float, default=5.0, help="msg/s offered to rooms of 500 or more")
    parser.add_argument("--fanout-duration", type=float, default=None, help="seconds of sending per run")
    parser.add_argument("--busy-repeats", type=int, default=1, help="busy rooms: run each this many times")
    parser.add_argument("--storm", type=int, default=5000, help="busy rooms: sockets in the reconnect storm")
    parser.add_argument("--idle-sockets", type=int, default=None)
    parser.add_argument("--idle-hold", type=float, default=5.0)
    parser.add_argument("--bakes", type=int, default=None, help="bakes to take the median of")
    parser.add_argument("--json", type=Path, default=None, help="default: bench-results/bench-<time>.json")
    args = parser.parse_args(argv)
    quick = args.quick
    args.databases = args.databases or (["sqlite"] if quick else ["sqlite", "postgresql"])
    args.http_duration = args.http_duration or (3.0 if quick else 10.0)
    args.members = args.members or ([10, 100] if quick else [10, 100, 500])
    args.fanout_duration = args.fanout_duration or (5.0 if quick else 10.0)
    args.idle_sockets = args.idle_sockets or (1000 if quick else 5000)
    args.bakes = args.bakes or (3 if quick else 5)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    args.json = args.json or RESULTS_DIR / f"bench-{stamp}.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tooling.raise_open_files_limit()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    report["environment"] = environment()
    with ExitStack() as stack:
        services = Services(stack)
        if "generation" in args.only:
            print("==> generation", flush=True)
            report["generation"] = bench_generation(args)
        if "http" in args.only:
            report["http"] = bench_http(args, services)
        if "fanout" in args.only:
            report["fanout"] = bench_fanout(args, services)
        if "busy" in args.only:
            report["busy"] = bench_busy(args, services)
        if "idle" in args.only:
            report["idle"] = bench_idle(args)
    report["total_s"] = round(time.perf_counter() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)
    print(f"\nwrote {args.json.relative_to(TEMPLATE_DIR) if args.json.is_relative_to(TEMPLATE_DIR) else args.json}")
    print(f"total {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
