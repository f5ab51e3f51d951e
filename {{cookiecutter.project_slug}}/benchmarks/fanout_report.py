"""The fan-out benchmark's figures: one `Result` per run, the printed table and the JSON report."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    layer: str
    target: str  # "relay" or "chat" ("raw" for benchmarks/raw_broadcast.py of the template)
    rate: float
    duration: float
    members: int
    senders: int
    sent: int = 0
    send_errors: int = 0
    expected: int = 0
    received: int = 0
    lost: int = 0
    recovered: int = 0
    lost_after_catch_up: int | None = None
    catch_up_requests: int = 0
    send_p50_ms: float | None = None  # chat: from the scheduled send to its ack (or its 200)
    send_p99_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    delivered_per_s: float = 0.0
    window_s: float = 0.0
    typing_rate: float = 0.0  # chat: typing signals offered per second, beside the messages
    typing_sent: int = 0
    typing_expected: int = 0  # each signal reaches every other member
    typing_received: int = 0
    reaction_rate: float = 0.0  # chat: reactions toggled per second, beside the messages
    reactions_sent: int = 0
    reactions_expected: int = 0  # each stored reaction reaches every member
    reactions_received: int = 0
    error: str | None = None  # a run the server broke off (e.g. a handshake answered 500)
    # chat: sends answered "busy" (or 503) and sent again; latency from the attempt that was stored
    busy_retries: int = 0
    accepted_p99_ms: float | None = None
    stored_twice: int = 0  # chat: messages of the run stored more than once (a retried send must not be)
    processes: int = 1  # server processes on one Redis, members and senders split between them
    latencies: list[float] = field(default_factory=list, repr=False)
    accepted_times: dict = field(default_factory=dict, repr=False)

    def finish(self, send_times: dict, receipts: list[tuple[object, float]], first_send: float) -> None:
        """Delivery figures from when each message was due and when each of its frames arrived."""
        self.sent = len(send_times)
        self.expected = self.sent * self.members
        delivered = [(key, at) for key, at in receipts if key in send_times]
        self.received = len(delivered)
        self.lost = self.expected - self.received
        self.latencies = sorted((at - send_times[key]) * 1000 for key, at in delivered)
        if self.latencies:
            self.p50_ms = percentile(self.latencies, 50)
            self.p99_ms = percentile(self.latencies, 99)
            self.max_ms = round(self.latencies[-1], 1)
            self.window_s = max(at for _, at in delivered) - first_send
            self.delivered_per_s = round(self.received / self.window_s, 1) if self.window_s > 0 else 0.0
        accepted = sorted((at - self.accepted_times[key]) * 1000 for key, at in delivered if key in self.accepted_times)
        if accepted:
            self.accepted_p99_ms = percentile(accepted, 99)

    def figures(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key not in ("latencies", "accepted_times")}


def percentile(ordered: list[float], pct: float) -> float:
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return round(ordered[index], 1)


def fmt(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


HEADER = (
    "layer",
    "rate/s",
    "target",
    "sent",
    "p50 ms",
    "p99 ms",
    "max ms",
    "deliv/s",
    "lost",
    "recov",
    "lost*",
    "GETs",
    "busy",
    "acc p99",
    "send p50/p99",
    "typing/s rcv/exp",
    "react/s rcv/exp",
    "",
)


def row(r: Result) -> tuple[str, ...]:
    chat = r.target == "chat"
    return (
        r.layer if r.processes == 1 else f"{r.layer} x{r.processes}",
        fmt(r.rate),
        r.target,
        str(r.sent),
        fmt(r.p50_ms),
        fmt(r.p99_ms),
        fmt(r.max_ms),
        fmt(r.delivered_per_s),
        str(r.lost),
        str(r.recovered) if chat else "-",
        fmt(r.lost_after_catch_up),
        str(r.catch_up_requests) if chat else "-",
        str(r.busy_retries) if chat else "-",
        fmt(r.accepted_p99_ms) if chat else "-",
        f"{fmt(r.send_p50_ms)}/{fmt(r.send_p99_ms)}" if chat else "-",
        f"{fmt(r.typing_rate)} {r.typing_received}/{r.typing_expected}" if chat and r.typing_rate else "-",
        f"{fmt(r.reaction_rate)} {r.reactions_received}/{r.reactions_expected}" if chat and r.reaction_rate else "-",
        "FAILED" if r.error else "",
    )


def print_table(results: list[Result], memory: list[dict]) -> None:
    if results:
        print_runs(results)
    for entry in memory:
        print(
            f"{entry['layer']}: {entry['kib_per_socket']:g} KiB RSS per idle {entry['kind']} socket "
            f"({entry['sockets']} sockets, {entry['rss_before_kib']} -> {entry['rss_after_kib']} KiB)"
        )


def print_runs(results: list[Result]) -> None:
    rows = [row(r) for r in results]
    widths = [max(len(cells[i]) for cells in [HEADER, *rows]) for i in range(len(HEADER))]
    print()
    for cells in [HEADER, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True)))
    print("lost: deliveries that never arrived as frames; recov: fetched by catch-up GETs; lost*: after catch-up;")
    print("GETs: catch-up requests (gaps seen, plus one per receiver at the end); send: until its ack or 200;")
    print("busy: sends answered busy/503 and sent again; acc p99: from the attempt that was stored to delivery")
    print("typing: signals offered per second beside the messages, and their frames received / expected;")
    print("react: reactions toggled per second, and their chat.reacted frames received / expected")
    print()
    for verdict in verdicts(results):
        print(verdict.line())


@dataclass
class Verdict:
    """A run against its target for a busy room of 100 (benchmarks/README.md lists them)."""

    load: str  # the load, in words: "100 msg/s", "100 msg/s on 2 processes", "reconnect storm of 5000"
    layer: str
    target: str  # what the run had to reach
    met: bool
    figures: str  # what it was judged on
    note: str = ""  # a part of the target out of reach whatever the chat did, if any

    def line(self) -> str:
        verdict = "met" if self.met else "NOT met"
        return f"{self.layer} at {self.load}: {self.figures}; {self.target}: {verdict}" + (
            f" ({self.note})" if self.note else ""
        )

    def as_json(self) -> dict:
        """Its fields and its printed line (make bench prints the line, not a copy of its format)."""
        return {**asdict(self), "line": self.line()}


def judge(relay: Result, ours: Result) -> Verdict | None:
    """The chat against the relay of the same run, if the run is one that has a target (a
    room of 100 at 20, 100 or 200 msg/s on one process, or at 100 on several); else None.
    A run that broke off, or that has no figures, has not met it."""
    several = ours.processes > 1
    target = TARGETS.get((ours.members, ours.rate, several))
    if target is None:
        return None
    text, check = target
    layer = f"{ours.layer} x{ours.processes}" if several else ours.layer
    load = f"{ours.rate:g} msg/s" + (f" on {ours.processes} processes" if several else "")
    broken = ours.error or relay.error or (None if ours.sent and ours.p99_ms is not None else "no messages delivered")
    if broken:
        return Verdict(load=load, layer=layer, target=text, met=False, figures=f"FAILED: {broken}")
    met, note = check(relay, ours)
    return Verdict(load=load, layer=layer, target=text, met=met, figures=run_figures(relay, ours), note=note)


def run_figures(relay: Result, ours: Result) -> str:
    return (
        f"lost live {ours.lost}; p99 {fmt(ours.p99_ms)} ms, {p99_ratio(relay, ours):.2f}x the relay's; "
        f"{throughput_ratio(relay, ours):.2f}x its deliveries/s; send errors {ours.send_errors}; "
        f"answered busy {ours.busy_retries}; lost after catch-up {fmt(ours.lost_after_catch_up)}; "
        f"stored twice {ours.stored_twice}; accepted p99 {fmt(ours.accepted_p99_ms)} ms"
    )


def p99_ratio(relay: Result, ours: Result) -> float:
    return ours.p99_ms / relay.p99_ms if relay.p99_ms else float("inf")


def throughput_ratio(relay: Result, ours: Result) -> float:
    return ours.delivered_per_s / relay.delivered_per_s if relay.delivered_per_s else float("inf")


def steady_room(relay: Result, ours: Result) -> tuple[bool, str]:
    return p99_ratio(relay, ours) <= 1.2, ""


def busy_room(relay: Result, ours: Result) -> tuple[bool, str]:
    """Every send accepted at once, nothing lost live, p99 within a second and half the
    relay's, twice its deliveries. Offered `rate` messages to `members`, a room delivers at
    most rate x members a second: when the relay delivered more than half of that, twice its
    figure is out of reach whatever the chat does, and the note says how the rest went."""
    rest = (
        ours.send_errors == 0
        and ours.busy_retries == 0
        and ours.lost == 0
        and ours.p99_ms <= 1000
        and p99_ratio(relay, ours) <= 0.5
    )
    offered = ours.rate * ours.members
    note = ""
    if 2 * relay.delivered_per_s > offered:
        note = (
            f"the relay delivered {relay.delivered_per_s / offered:.0%} of the {offered:,.0f} deliveries/s "
            f"offered and the chat {ours.delivered_per_s / offered:.0%}: twice the relay's is more than was "
            f"offered; the rest of the target: {'met' if rest else 'NOT met'}"
        )
    return rest and throughput_ratio(relay, ours) >= 2, note


def overload(relay: Result, ours: Result) -> tuple[bool, str]:
    accepted_in_time = ours.accepted_p99_ms is not None and ours.accepted_p99_ms <= 3000
    return ours.send_errors == 0 and ours.lost_after_catch_up == 0 and ours.stored_twice == 0 and accepted_in_time, ""


def scale_out(relay: Result, ours: Result) -> tuple[bool, str]:
    return ours.send_errors == 0 and ours.lost == 0 and ours.p99_ms <= 1000, ""


# (members, msg/s, on several processes): the target's text and its check.
TARGETS = {
    (100, 20.0, False): ("p99 <= 1.2x relay", steady_room),
    (100, 100.0, False): ("every send accepted, 0 lost, p99 <= 1 s and <= 0.5x relay, >= 2x deliveries/s", busy_room),
    (100, 200.0, False): ("no send failed, none lost or stored twice, accepted p99 <= 3 s", overload),
    (100, 100.0, True): ("every send accepted, 0 lost, p99 <= 1 s", scale_out),
}


def verdicts(results: list[Result]) -> list[Verdict]:
    return [verdict for relay, ours in pairs(results) if (verdict := judge(relay, ours)) is not None]


def pairs(results: list[Result]):
    """(relay, chat) results of the same layer and rate."""
    by_key = {(r.layer, r.rate, r.target): r for r in results}
    for (layer, rate, target), relay in by_key.items():
        if target == "relay" and (layer, rate, "chat") in by_key:
            yield relay, by_key[(layer, rate, "chat")]


def report(args, results: list[Result], memory: list[dict]) -> dict:
    """What --json writes (the template's benchmarks/run.py reads its "runs")."""
    import channels
    import django

    return {
        "settings": {
            "rates": args.rates,
            "duration_s": args.duration,
            "members": args.members,
            "senders": args.senders,
            "processes": args.processes,
            "idle_sockets": args.idle_sockets,
            "idle_kinds": args.idle_kinds,
            "reorder_grace_s": args.reorder_grace,
            "send_over": args.send_over,
            "typing_per_message": args.typing_per_message,
            "reactions_per_message": args.reactions_per_message,
            "chat_receivers": "hidden tabs (no read marking)" if args.hidden else "viewing (read marking on)",
            "database": "DATABASE_URL" if args.database_url else "sqlite (throwaway)",
        },
        "environment": {
            "python": platform.python_version(),
            "django": django.get_version(),
            "channels": channels.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "runs": [r.figures() for r in results],
        "verdicts": [verdict.as_json() for verdict in verdicts(results)],
        "idle_memory": memory,
    }
