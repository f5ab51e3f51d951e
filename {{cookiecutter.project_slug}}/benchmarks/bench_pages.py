"""How long the chat pages take for a user in 1,000 chats with 100,000 messages in all.

Run from the project directory:

    python benchmarks/bench_pages.py                     # temporary SQLite file, 30 runs a page
    python benchmarks/bench_pages.py --db /tmp/bench.sqlite3 --json bench.json
    python benchmarks/bench_pages.py --profile inbox     # where the time of one page goes

It migrates a fresh SQLite database (or `--db PATH`, kept and reused: the seed is
idempotent, so a second run seeds nothing), seeds it with `seed_chat_data --benchmark-user
alice` (alice is in every chat), then times full requests through Django's test Client
logged in as alice: the inbox, the room of her longest chat, "Load older" in that room and
the widget list. It prints the median and 95th percentile per page, with the number of
queries and the response size, and writes them as JSON with `--json`. It asserts nothing:
the targets (the issue's) are printed beside the figures.

Settings: `config.test_settings` by default (the real settings with DEBUG off, plain static
storage and fast password hashing), on the SQLite file given to DATABASE_URL.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
BENCHMARK_USER = "alice"
# Median targets from the issue, in milliseconds (None: no target).
TARGETS_MS = {"inbox": 50, "room": 30, "load-older": 20, "widget-list": None}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="Timed requests per page (default 30).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed requests per page first (default 3).")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--db", type=Path, help="SQLite file to use and keep (default: a temporary one).")
    parser.add_argument("--settings", default="config.test_settings", help="Settings module.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file as JSON.")
    parser.add_argument("--profile", choices=sorted(TARGETS_MS), help="Profile this page and print the top calls.")
    return parser.parse_args(argv)


def set_up_django(args: argparse.Namespace, db_path: Path) -> None:
    sys.path.insert(0, str(PROJECT_DIR))
    os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    os.environ["DATABASE_URL"] = f"sqlite:///{db_path}"
    import django

    django.setup()


def seed(args: argparse.Namespace) -> float:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    call_command(
        "seed_chat_data",
        users=args.users,
        chats=args.chats,
        messages=args.messages,
        benchmark_user=BENCHMARK_USER,
        force=True,
        quiet=True,
        stdout=io.StringIO(),  # the demo logins are not needed here
    )
    return time.perf_counter() - started


def pages(user) -> dict[str, tuple[str, dict]]:
    """Each page's URL and extra headers: the room and "Load older" use the user's longest chat."""
    from django.db.models import Count
    from django.urls import reverse

    from chat import selectors
    from chat.models import Chat

    longest = (
        Chat.objects.filter(memberships__user=user)
        .annotate(size=Count("messages"))
        .order_by("-size")
        .values_list("pk", flat=True)
        .first()
    )
    newest_page = selectors.messages_page(membership=selectors.membership_or_404(user=user, chat_id=longest))
    htmx = {"HTTP_HX_REQUEST": "true"}
    return {
        "inbox": (reverse("chat:list"), {}),
        "room": (reverse("chat:room", args=[longest]), {}),
        "load-older": (f"{reverse('chat:messages', args=[longest])}?before={newest_page.oldest_id}", htmx),
        "widget-list": (reverse("chat:widget"), htmx),
    }


def measure(client, url: str, headers: dict, *, runs: int, warmup: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(warmup):
        client.get(url, **headers)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url, **headers)
        timings.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as queries:  # a separate run: capturing adds its own cost
        response = client.get(url, **headers)
    return {
        "url": url,
        "status": response.status_code,
        "median_ms": round(statistics.median(timings), 2),
        "p95_ms": round(statistics.quantiles(timings, n=100, method="inclusive")[94], 2),
        "min_ms": round(min(timings), 2),
        "queries": len(queries),
        "bytes": len(response.content),
    }


def print_table(results: dict) -> None:
    header = ("page", "status", "median ms", "p95 ms", "min ms", "target", "queries", "bytes")
    print("{:<12} {:>6} {:>10} {:>8} {:>8} {:>7} {:>8} {:>8}".format(*header))
    for name, figures in results.items():
        target = TARGETS_MS[name]
        verdict = "" if target is None else ("ok" if figures["median_ms"] <= target else "MISSED")
        print(
            f"{name:<12} {figures['status']:>6} {figures['median_ms']:>10.2f} {figures['p95_ms']:>8.2f} "
            f"{figures['min_ms']:>8.2f} {'-' if target is None else f'≤{target}':>7} {figures['queries']:>8} "
            f"{figures['bytes']:>8}  {verdict}"
        )


def profile(client, url: str, headers: dict, runs: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        client.get(url, **headers)
    profiler.disable()
    print(f"\nProfile of {runs} requests to {url} (cumulative time):")
    pstats.Stats(profiler).strip_dirs().sort_stats("cumulative").print_stats(30)


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        db_path = args.db.resolve() if args.db else Path(tmp) / "bench.sqlite3"
        set_up_django(args, db_path)
        seed_seconds = seed(args)

        from django.contrib.auth import get_user_model
        from django.db import connection
        from django.test import Client

        from chat.models import Membership, Message

        user = get_user_model().objects.get(username=BENCHMARK_USER)
        client = Client()
        client.force_login(user)
        urls = pages(user)
        setup = {
            "database": f"{connection.vendor} {db_path}",
            "seed_seconds": round(seed_seconds, 2),
            "user_chats": Membership.objects.filter(user=user).count(),
            "messages": Message.objects.count(),
            "runs": args.runs,
        }
        print(
            f"Seeded in {setup['seed_seconds']} s: {BENCHMARK_USER} is in {setup['user_chats']} chats; "
            f"{setup['messages']} messages in all. {args.runs} runs a page after {args.warmup} warm-up runs."
        )
        results = {
            name: measure(client, url, headers, runs=args.runs, warmup=args.warmup)
            for name, (url, headers) in urls.items()
        }
        print_table(results)
        if args.json:
            args.json.write_text(
                json.dumps({"setup": setup, "pages": results, "targets_ms": TARGETS_MS}, indent=2) + "\n"
            )
            print(f"Wrote {args.json}")
        if args.profile:
            url, headers = urls[args.profile]
            profile(client, url, headers, args.runs)
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
