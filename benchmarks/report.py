"""The tables `make bench` prints, from the report it writes as JSON."""

from __future__ import annotations

HTTP_REFERENCES = {"login", "static"}


def fmt(value, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}{suffix}" if isinstance(value, float) and value < 100 else f"{value:,.0f}{suffix}"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(header, widths, strict=True))
        )
    )
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(cells)))


def print_generation(figures: dict) -> None:
    print(f"\nGeneration (median of {figures['bakes']} bakes)")
    rows = [
        (
            "bake, setup_environment=false",
            fmt(figures["bake_s"], " s"),
            "cookiecutter --version",
            fmt(figures["cookiecutter_startup_s"], " s"),
        )
    ]
    if "setup_s" in figures:
        failed = " (FAILED)" if figures.get("setup_error") else ""
        rows.append(
            (
                "bake + setup (venv, install, migrate, seed)",
                fmt(figures["setup_s"], " s") + failed,
                "venv + pip install of the same packages",
                fmt(figures["install_only_s"], " s"),
            )
        )
    table(("figure", "time", "reference", "time"), rows)


def print_http(results: dict, server: str) -> None:
    for database, figures in results.items():
        print(
            f"\nHTTP on {database}: {figures['chats']:,} chats, {figures['messages']:,} messages "
            f"(seeded in {figures['seed_s']:g} s); one {server} process"
        )
        rows = []
        for name, page in figures["pages"].items():
            label = f"{name} (reference)" if name in HTTP_REFERENCES else name
            rows.append((label, fmt(page["median_ms"]), fmt(page["p95_ms"]), fmt(page["rps"]), str(page["errors"])))
        table(("page", "median ms", "p95 ms", "req/s", "errors"), rows)


def print_fanout(runs: list[dict], server: str) -> None:
    print(f"\nWebsocket fan-out: one {server} process; raw = bare `websockets` server (no Django, no layer)")
    header = ("members", "msg/s", "layer", "target", "sent", "p50 ms", "p99 ms", "deliv/s", "lost", "lost*")
    rows = []
    for run in sorted(runs, key=lambda r: (r["members"], r["layer"] != "memory", r["target"] != "chat")):
        lost_after = run.get("lost_after_catch_up")
        rows.append(
            (
                str(run["members"]),
                fmt(run["rate"]),
                "-" if run["layer"] == "none" else run["layer"],
                run["target"] + (" FAILED" if run.get("error") else ""),
                str(run["sent"]),
                fmt(run["p50_ms"]),
                fmt(run["p99_ms"]),
                fmt(run["delivered_per_s"]),
                str(run["lost"]),
                "-" if lost_after is None else str(lost_after),
            )
        )
    table(header, rows)
    print("lost: deliveries that never arrived as frames; lost*: still missing after the room's catch-up GETs")


def print_busy(entries: list[dict], server: str) -> None:
    """Each busy-room run against its target (the chat's own verdicts, from bench_fanout.py)."""
    print(
        f"\nBusy rooms, one {server} process unless stated: 100 members (10 senders) beside the relay of "
        "each run; the storm: a room and an inbox socket a person, in rooms of 100, beside the relay restarted "
        "under two sockets a person"
    )
    for entry in entries:
        label = f"{entry['setting']}, run {entry['run']}"
        if "error" in entry:
            print(f"{label}: {entry['what']}: FAILED\n{entry['error']}")
        for verdict in entry.get("verdicts", []):
            print(f"{label}: {verdict['line']}")


def print_idle(results: dict, server: str) -> None:
    print("\nIdle websockets held by one process")
    rows = []
    kinds = (
        ("app", f"{server}, inbox sockets"),
        ("room", f"{server}, room sockets"),
        ("raw", "raw websockets (reference)"),
    )
    for name, label in kinds:
        figures = results.get(name)
        if figures:
            rows.append(
                (
                    label,
                    str(figures.get("sockets", "-")),
                    str(figures.get("held", "-")),
                    str(figures["errors"]),
                    fmt(figures.get("kib_per_socket"), " KiB"),
                    fmt(figures.get("connect_s"), " s"),
                )
            )
    table(("server", "opened", "held", "errors", "RSS/socket", "connect"), rows)


def print_tables(report: dict) -> None:
    env = report["environment"]
    print(
        f"\n{env['cpus']} CPUs, Python {env['python']}, commit {env['commit']}{' (dirty)' if env['dirty'] else ''};"
        " the load clients share the machine"
    )
    if "generation" in report:
        print_generation(report["generation"])
    server = report["settings"].get("server", "daphne")
    if "http" in report:
        print_http(report["http"], server)
    if "fanout" in report:
        print_fanout(report["fanout"], server)
    if "busy" in report:
        print_busy(report["busy"], server)
    if "idle" in report:
        print_idle(report["idle"], server)
