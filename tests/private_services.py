"""A PostgreSQL and a Redis of one test module's own, to stop, restart or squeeze at will.

The shared services (REDIS_URL, TEST_DATABASE_URL) serve every other test: a test that
stops its database, or runs one with a handful of connection slots, starts its own here.
`RedisProcess` is test_faults.py's; `PostgresProcess` runs Debian's PostgreSQL binaries
(initdb, pg_ctl; as the postgres user when the suite runs as root, which PostgreSQL
refuses to be) on a free 127.0.0.1 port, with trust authentication on that address only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import unavailable
from live_servers import HOST, free_port
from test_faults import RedisProcess

__all__ = ["PostgresProcess", "RedisProcess", "postgres_bin"]

ROLE = "chat"  # the app's role: CREATEDB, not a superuser, so the reserved slots are not its own


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or a skip (a failure in CI)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        unavailable(
            "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin)", "; .ci/run installs them"
        )
    return candidates[-1].parent


class PostgresProcess:
    """One PostgreSQL cluster in a temporary folder; `stop()` and `start()` keep its data and port."""

    def __init__(self, *, max_connections: int = 100, superuser_reserved_connections: int = 3):
        self.bin = postgres_bin()
        self.port = free_port()
        # Under /tmp, not pytest's tmp_path: the postgres user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="ops-postgres-"))
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self.settings = {
            "listen_addresses": HOST,
            "port": self.port,
            "unix_socket_directories": str(self.dir),
            "max_connections": max_connections,
            "superuser_reserved_connections": superuser_reserved_connections,
            "fsync": "off",
            "full_page_writes": "off",
        }
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()
        self.psql(f"CREATE ROLE {ROLE} LOGIN CREATEDB", f"CREATE DATABASE {ROLE} OWNER {ROLE}")

    @property
    def url(self) -> str:
        """The app's URL (its role) to its own database; bake_project creates one per test module from it."""
        return f"postgres://{ROLE}@{HOST}:{self.port}/{ROLE}"

    def run(self, program: str, *args: str, timeout: float = 60) -> str:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*as_postgres, str(self.bin / program), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"{program} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def start(self) -> None:
        options = " ".join(f"-c {name}={value}" for name, value in self.settings.items())
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, as in a restart or a failover."""
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def psql(self, *commands: str, database: str = "postgres") -> str:
        """Run SQL as the postgres superuser over the cluster's Unix socket; the rows, one per line."""
        args = ["-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d", database, "-XAtq"]
        args += ["-v", "ON_ERROR_STOP=1"]
        for command in commands:
            args += ["-c", command]
        return self.run("psql", *args)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
