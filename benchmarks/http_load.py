"""A closed-loop HTTP load client: N connections request one URL back to back for a fixed time.

Runs in a baked project's venv (its dev extra has httpx). Reads the targets JSON that
http_targets.py printed on stdin, loads each target in turn, prints one JSON line.

    python http_load.py --base-url http://127.0.0.1:8000 --concurrency 8 --duration 10 < targets.json

Each target gets `--warmup` seconds first (not counted). Latency is the time from sending a
request to having read its whole response; requests per second counts answered requests
with the expected status over the measured window. Errors: other statuses and exceptions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx


def headers_for(target: dict, session: dict) -> dict[str, str]:
    headers = {}
    if target.get("auth", True):
        headers["Cookie"] = session["cookie"]
        headers["X-CSRFToken"] = session["csrf"]
    if target.get("htmx"):
        headers["HX-Request"] = "true"
    return headers


async def load(client: httpx.AsyncClient, target: dict, session: dict, *, concurrency: int, seconds: float) -> dict:
    headers = headers_for(target, session)
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    sequence = iter(range(10**9))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            data = {"body": f"bench {next(sequence)}"} if target["method"] == "POST" else None
            started = time.perf_counter()
            try:
                response = await client.request(target["method"], target["path"], headers=headers, data=data)
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            if response.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors.append(str(response.status_code))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    window = time.perf_counter() - started
    return summary(latencies, errors, window)


def summary(latencies: list[float], errors: list[str], window: float) -> dict:
    figures: dict = {"requests": len(latencies), "errors": len(errors), "window_s": round(window, 2)}
    figures["error_kinds"] = sorted(set(errors))[:5]
    figures["rps"] = round(len(latencies) / window, 1) if window else 0.0
    if len(latencies) >= 2:
        figures["median_ms"] = round(statistics.median(latencies), 1)
        figures["p95_ms"] = round(statistics.quantiles(latencies, n=100, method="inclusive")[94], 1)
    else:
        figures["median_ms"] = figures["p95_ms"] = None
    return figures


async def main(args: argparse.Namespace) -> None:
    spec = json.load(sys.stdin)
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # identities go in headers
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    results = {}
    async with httpx.AsyncClient(base_url=args.base_url, limits=limits, timeout=30, cookies=no_cookies) as client:
        for name in args.only or spec["targets"]:
            target = spec["targets"][name]
            print(f"    {name}: {target['method']} {target['path']}", file=sys.stderr, flush=True)
            await load(client, target, spec["session"], concurrency=args.concurrency, seconds=args.warmup)
            results[name] = await load(
                client, target, spec["session"], concurrency=args.concurrency, seconds=args.duration
            )
            results[name]["path"] = target["path"]
    print(json.dumps(results))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per target first")
    parser.add_argument("--only", nargs="*", help="these targets, in this order (default: all)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
