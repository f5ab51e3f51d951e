"""Redis and PostgreSQL on free ports of 127.0.0.1 for one benchmark run, as .ci/run starts them.

Each service lives in a temporary directory and is stopped (and the directory removed) when
its context exits, whatever happened. Nothing else on the machine is touched.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from baking import load_project_module, stop_process  # noqa: E402

# Ports and processes: the generated project's own tooling (benchmarks/tooling.py).
tooling = load_project_module("tooling")
HOST, free_port, wait_for_port = tooling.HOST, tooling.free_port, tooling.wait_for_port


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server (no persistence); yields its URL."""
    state = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = free_port()
    command = ["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"]
    command += ["--dir", str(state), "--logfile", str(state / "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        yield f"redis://{HOST}:{port}/0"
    finally:
        stop_process(process)
        shutil.rmtree(state, ignore_errors=True)


def postgres_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
    if not candidates:
        raise RuntimeError("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")
    return candidates[-1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (fsync off, as in CI), run as the postgres user; yields an
    admin URL of a role that may create databases."""
    pg_bin = postgres_bin()
    state = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    shutil.chown(state, "postgres")
    data, port, password = state / "data", free_port(), secrets.token_hex(16)

    def as_postgres(*command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=120)

    options = f"-c listen_addresses={HOST} -c port={port} -k {state} -c fsync=off -c full_page_writes=off"
    try:
        as_postgres(
            str(pg_bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )
        as_postgres(
            str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(state / "postgres.log"), "-w", "-o", options, "start"
        )
        as_postgres(
            str(pg_bin / "psql"),
            "-h",
            str(state),
            "-p",
            str(port),
            "-U",
            "postgres",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"CREATE ROLE bench LOGIN CREATEDB PASSWORD '{password}'",
            "-c",
            "CREATE DATABASE bench OWNER bench",
        )
        yield f"postgres://bench:{password}@{HOST}:{port}/bench"
    finally:
        if (data / "postmaster.pid").is_file():
            with suppress(subprocess.SubprocessError):
                as_postgres(str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(state, ignore_errors=True)
