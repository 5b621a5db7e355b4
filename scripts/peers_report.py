"""Turns scripts/bench-peers.sh results into the table in BENCHMARKS.md and
the chart docs/bench-peers.svg, and checks issue #4's and issue #19's
targets.

Input: one JSON object per line, each a `tickcast-bench --json` report with
"workload", "system" and "pinned" added (or "failed": true; a line without
"pinned" is an unpinned run). Pinned and unpinned runs get a table each.
The tables go between the bench-peers markers in BENCHMARKS.md (a section
is added if missing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
from pathlib import Path

import matplotlib
import matplotlib.ticker
import matplotlib.transforms

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = ["tickcast", "nats", "node", "minimal"]
LABELS = {
    "tickcast": "tickcast",
    "nats": "nats-server (websocket)",
    "node": "Node ws rooms (JSON)",
    "minimal": "minimal server (msgpack)",
}
# Pinning modes, as bench-peers.sh's PIN runs them.
MODES = {
    False: "**Unpinned**: server and load generator share both cores.",
    True: "**Pinned** (`PIN=1`): the server and all its threads on CPU 0 (tickcast with `--writers 1`), "
    "the load generator on CPU 1.",
}
WORKLOADS = {
    "W1": "100 subs × 5 of 50 symbols, 10k ticks/s (100k msgs/s)",
    "W2": "100 subs × 5 of 50 symbols, 100k ticks/s (1M msgs/s)",
    "W3": "1,000 subs × 10 of 100 symbols, 20k ticks/s (2M msgs/s)",
    "W4": "W2 + 5 stalled subscribers on every symbol",
}


def default_budget(pinned: bool) -> int:
    """tickcast's default --write-budget: 50,000 writes/s per writer
    thread, one writer per core it may use (one when pinned)."""
    return 50_000 * (1 if pinned else (__import__("os").cpu_count() or 2))


BEGIN = "<!-- bench-peers:begin -->"
END = "<!-- bench-peers:end -->"


def ms(us: float) -> str:
    v = us / 1000.0
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s"


def mib(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


Key = tuple[str, str, bool]


def load(path: Path) -> tuple[dict[Key, dict], dict[Key, list[dict]]]:
    """Per (workload, system, pinned): the run with the median p99 (median
    RSS per connection for idle), and every run. A failed run counts as
    worst."""
    runs: dict[Key, list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            runs.setdefault((r["workload"], r["system"], bool(r.get("pinned", False))), []).append(r)

    def key(r: dict) -> float:
        if r.get("failed"):
            return float("inf")
        return r["idle_rss_per_conn_bytes"] if r["workload"] == "idle" else r["p99_us"]

    median = {k: sorted(v, key=key)[(len(v) - 1) // 2] for k, v in runs.items()}
    return median, runs


def spread(runs: dict, w: str, s: str, p: bool) -> str:
    """The p99 of every round, for the reader to judge the noise."""
    rs = runs.get((w, s, p), [])
    if len(rs) < 2:
        return ""
    return ", ".join("failed" if r.get("failed") else ms(r["p99_us"]) for r in rs)


def table(results: dict, runs: dict, p: bool) -> str:
    rows = [
        "| workload | system | delivered msgs/s (expected) | p50 | p99 | p99.9 | max | server CPU / msg | RSS | seq errors "
        "| p99 of each round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in WORKLOADS:
        for s in SYSTEMS:
            r = results.get((w, s, p))
            if r is None:
                continue
            if r.get("failed"):
                rows.append(f"| {w} | {s} | run failed | | | | | | | | {spread(runs, w, s, p)} |")
                continue
            rows.append(
                f"| {w} | {s} | {r['delivered_per_sec']:,.0f} ({r['expected_per_sec']:,.0f}) | {ms(r['p50_us'])} | "
                f"{ms(r['p99_us'])} | {ms(r['p999_us'])} | {ms(r['max_us'])} | "
                f"{r['server_cpu_ns_per_msg']:,.0f} ns | {mib(r['server_rss_bytes'])} | {r['seq_errors']:,} | "
                f"{spread(runs, w, s, p)} |"
            )
    rows += ["", "| idle | system | connections | RSS before | RSS after | per connection |", "|---|---|---|---|---|---|"]
    for s in SYSTEMS:
        r = results.get(("idle", s, p))
        if r is None:
            continue
        if r.get("failed"):
            rows.append(f"| idle | {s} | run failed | | | |")
            continue
        rows.append(
            f"| idle | {s} | {r['idle_connections']:,} | {mib(r['idle_rss_before_bytes'])} | "
            f"{mib(r['idle_rss_after_bytes'])} | {r['idle_rss_per_conn_bytes'] / 1024:.1f} KiB |"
        )
    return "\n".join(rows)


def rss_growth(results: dict, p: bool) -> list[str]:
    """Where a W4 run sampled its server's RSS (`--rss-every`: the minimal
    server, whose queues are unbounded), how it grew."""
    lines = []
    for s in SYSTEMS:
        r = measured(results, "W4", s, p)
        timeline = r.get("rss_timeline") if r else None
        if not timeline:
            continue
        (t0, first), (t1, last) = timeline[0], timeline[-1]
        peak = max(v for _, v in timeline)
        lines.append(
            f"- W4 {s}: RSS {mib(first)} at {t0:.0f} s, {mib(last)} at {t1:.0f} s (peak {mib(peak)}), "
            f"{(last - first) / max(t1 - t0, 1e-9) / 2**20:.1f} MiB/s while 5 subscribers per symbol do not read"
        )
    return lines


def measured(results: dict, workload: str, system: str, p: bool = False) -> dict | None:
    """The kept run of `system` at `workload` (pinned or not), or None if there is none or it failed."""
    r = results.get((workload, system, p))
    return None if r is None or r.get("failed") else r


def budget_runs(results: dict, p: bool) -> list[tuple[int | None, dict]]:
    """tickcast's W2 runs by write budget (None: the default), from the
    most writes to the fewest."""
    out = []
    for (w, s, pinned), r in results.items():
        if w != "W2" or pinned != p or r.get("failed"):
            continue
        if s == "tickcast":
            out.append((None, r))
        elif s.startswith("tickcast-wb="):
            out.append((int(s.split("=", 1)[1]), r))
    out.sort(key=lambda t: -(t[0] if t[0] is not None else default_budget(p)))
    return out


def tradeoff(results: dict, p: bool) -> str:
    """Table: tickcast's CPU per message and latency at W2 for each write
    budget, as ratios to nats-server's in the same rounds."""
    nats = measured(results, "W2", "nats", p)
    rows = [
        "| W2, tickcast `--write-budget` | writes per subscriber | p50 | p99 | server CPU / msg | CPU / nats | p99 / nats |",
        "|---|---|---|---|---|---|---|",
    ]
    for budget, r in budget_runs(results, p):
        label = f"{budget:,}" if budget is not None else f"default ({default_budget(p):,})"
        total = budget if budget is not None else default_budget(p)
        # W2's 100 busy subscribers share the budget (never more often than
        # the 1 ms --flush-interval, never less than the 10 ms cap).
        every = min(10.0, max(1.0, 100 / total * 1000))
        ratios = (
            f"{r['server_cpu_ns_per_msg'] / nats['server_cpu_ns_per_msg']:.2f} | {r['p99_us'] / nats['p99_us']:.2f}"
            if nats
            else " | "
        )
        rows.append(
            f"| {label} | every {every:g} ms | {ms(r['p50_us'])} | {ms(r['p99_us'])} | "
            f"{r['server_cpu_ns_per_msg']:,.0f} ns | {ratios} |"
        )
    if nats:
        rows.append(
            f"| nats-server | | {ms(nats['p50_us'])} | {ms(nats['p99_us'])} | "
            f"{nats['server_cpu_ns_per_msg']:,.0f} ns | 1 | 1 |"
        )
    return "\n".join(rows)


def targets(results: dict, p: bool) -> list[str]:
    """Issue #4's targets for tickcast against nats-server, and issue #19's
    against the minimal server, in the same run."""
    def get(w, s, key):
        r = measured(results, w, s, p)
        return r.get(key) if r else None

    lines = []

    def check(name: str, value: float | None, limit: float, fmt: str, better: str = "<=") -> None:
        if value is None:
            lines.append(f"- {name}: not measured")
            return
        ok = value <= limit if better == "<=" else value >= limit
        lines.append(f"- {name}: {fmt.format(value)} (target {better} {fmt.format(limit)}): **{'met' if ok else 'missed'}**")

    for w in ("W1", "W2"):
        a, b = get(w, "tickcast", "p99_us"), get(w, "nats", "p99_us")
        check(f"{w} p99, tickcast / nats", a / b if a and b else None, 0.25, "{:.3f}")
    a, b = get("W2", "tickcast", "server_cpu_ns_per_msg"), get("W2", "nats", "server_cpu_ns_per_msg")
    check("W2 CPU per delivered message, tickcast / nats", a / b if a and b else None, 1 / 3, "{:.3f}")
    d, e = get("W3", "tickcast", "delivered_per_sec"), get("W3", "tickcast", "expected_per_sec")
    check("W3 delivered / expected, tickcast", d / e if d and e else None, 0.99, "{:.3f}", ">=")
    check("W3 p99, tickcast (ms)", (get("W3", "tickcast", "p99_us") or 0) / 1000 or None, 20.0, "{:.2f}")
    a, b = get("W4", "tickcast", "p99_us"), get("W2", "tickcast", "p99_us")
    check("W4 healthy p99 / W2 p99, tickcast", a / b if a and b else None, 1.2, "{:.2f}")
    per = get("idle", "tickcast", "idle_rss_per_conn_bytes")
    check("idle RSS per connection, tickcast (KiB)", per / 1024 if per is not None else None, 10.0, "{:.1f}")
    # Issue #19: at or below the minimal server's tail at W1 and W3, and
    # half nats-server's CPU per message at W2.
    for w in ("W1", "W3"):
        for key, name in (("p99_us", "p99"), ("p999_us", "p99.9")):
            a, b = get(w, "tickcast", key), get(w, "minimal", key)
            check(f"{w} {name}, tickcast / minimal (#19)", a / b if a and b else None, 1.0, "{:.2f}")
    a, b = get("W2", "tickcast", "server_cpu_ns_per_msg"), get("W2", "nats", "server_cpu_ns_per_msg")
    check("W2 CPU per delivered message, tickcast / nats (#19)", a / b if a and b else None, 0.5, "{:.3f}")
    return lines


def chart(results: dict, path: Path) -> None:
    plt.rcParams["svg.hashsalt"] = "tickcast"
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 2]})
    markers = {"tickcast": "o", "nats": "s", "node": "^", "minimal": "D"}
    colors = {s: f"C{i}" for i, s in enumerate(SYSTEMS)}
    for p in MODES:
        for s in SYSTEMS:
            xs, ys, names = [], [], []
            for w in WORKLOADS:
                r = measured(results, w, s, p)
                if r and r["delivered_per_sec"] > 0:
                    xs.append(r["delivered_per_sec"])
                    ys.append(max(r["p99_us"], 1.0) / 1000.0)
                    names.append(w)
            if not xs:
                continue
            # Pinned runs: hollow markers.
            ax.plot(xs, ys, marker=markers[s], linestyle="none", markersize=8, color=colors[s],
                    markerfacecolor="none" if p else colors[s], label=LABELS[s] + (" (pinned)" if p else ""))
            for x, y, n in zip(xs, ys, names):
                ax.annotate(n, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("delivered messages per second (all subscribers)")
    ax.set_ylabel("p99 latency, publish to receive (ms)")
    ax.set_title("p99 latency against delivered rate, same machine, same load generator")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    # Right: W2's trade-off, CPU per message against p99, for tickcast's
    # write budgets and for nats-server.
    for p in MODES:
        points = budget_runs(results, p)
        if points:
            xs = [r["p99_us"] / 1000.0 for _, r in points]
            ys = [r["server_cpu_ns_per_msg"] for _, r in points]
            bx.plot(xs, ys, marker="o", color=colors["tickcast"], markerfacecolor="none" if p else colors["tickcast"],
                    label="tickcast, by --write-budget" + (" (pinned)" if p else ""))
            for (budget, _), x, y in zip(points, xs, ys):
                name = f"{budget // 1000}k" if budget is not None else "default"
                bx.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for p in MODES:
        minimal = measured(results, "W2", "minimal", p)
        if minimal:
            bx.plot([minimal["p99_us"] / 1000.0], [minimal["server_cpu_ns_per_msg"]], marker="D", linestyle="none",
                    markersize=8, color=colors["minimal"], markerfacecolor="none" if p else colors["minimal"],
                    label=LABELS["minimal"] + (" (pinned)" if p else ""))
    nats = measured(results, "W2", "nats") or measured(results, "W2", "nats", True)
    if nats:
        bx.plot([nats["p99_us"] / 1000.0], [nats["server_cpu_ns_per_msg"]], marker="s", linestyle="none",
                markersize=8, color=colors["nats"], label=LABELS["nats"] + (" (pinned)" if nats.get("pinned") else ""))
        # Issue #4's targets at W2: the region below and left of both lines.
        bx.axhline(nats["server_cpu_ns_per_msg"] / 3, color="grey", linestyle="--", linewidth=1)
        bx.axvline(nats["p99_us"] / 4000.0, color="grey", linestyle=":", linewidth=1)
        bx.text(0.01, nats["server_cpu_ns_per_msg"] / 3, " 1/3 of nats' CPU", fontsize=8, color="grey",
                va="bottom", transform=matplotlib.transforms.blended_transform_factory(bx.transAxes, bx.transData))
        bx.annotate("1/4 of nats' p99", (nats["p99_us"] / 4000.0, 0), textcoords="offset points",
                    xytext=(4, 8), fontsize=8, color="grey", rotation=90)
    bx.set_xscale("log")
    bx.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    bx.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    bx.set_xlabel("p99 latency at W2 (ms)")
    bx.set_ylabel("server CPU per delivered message (ns)")
    bx.set_ylim(bottom=0)
    bx.set_title("W2 (1M msgs/s): CPU against latency")
    bx.grid(True, which="both", alpha=0.3)
    bx.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})


def machine_check(before: str, after: str) -> str:
    """The machine's speed during the run, as the time of one loopback write."""

    def us(ns: str) -> str:
        return f"{int(ns) / 1000:.1f} µs" if ns.strip().isdigit() else "not measured"

    if us(before) == us(after) == "not measured":
        return "Machine check: the loopback write bench did not run."
    return (
        "Machine check, one 1,400-byte write on a loopback TCP connection "
        f"(`cargo bench --bench loopback -- write/1400`, median): {us(before)} before the runs, "
        f"{us(after)} after them. A write is most of what a delivered message costs every system here, "
        "so runs made at other times move with it: compare systems within one run."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results", type=Path)
    p.add_argument("--benchmarks", type=Path, required=True)
    p.add_argument("--chart", type=Path, required=True)
    p.add_argument("--duration", default="10s")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--write-ns",
        nargs=2,
        default=["", ""],
        metavar=("BEFORE", "AFTER"),
        help="median ns of one 1,400-byte loopback write before and after the runs ('' if unknown)",
    )
    a = p.parse_args()
    results, runs = load(a.results)
    chart(results, a.chart)
    modes = [p for p in MODES if any(k[2] == p for k in results)]
    per_mode = []
    for p in modes:
        per_mode += [
            MODES[p],
            "",
            table(results, runs, p),
            "",
            *rss_growth(results, p),
            "",
            "W2 again with tickcast at other write budgets: how often each busy subscriber is written "
            "decides both the CPU per message (a write costs about the same whatever it carries) and the "
            "latency (a message waits for its subscriber's next write):",
            "",
            tradeoff(results, p),
            "",
            "Targets (tickcast against nats-server and the minimal server, same run, tickcast's defaults):",
            "",
            *targets(results, p),
            "",
        ]
    section = "\n".join(
        [
            BEGIN,
            f"Run of `scripts/bench-peers.sh {a.duration}` ({a.rounds} interleaved rounds; each row is the round "
            f"with the median p99) on {dt.date.today().isoformat()}, "
            f"{platform.machine()}, {__import__('os').cpu_count()} cores, "
            + ("unpinned and pinned runs interleaved. " if len(modes) == 2 else "")
            + "Latency is publish (stamp in the tick) to receive. CPU and RSS are the server process's, "
            "from /proc/PID. tickcast and minimal subscribers use msgpack; nats and node carry the publisher's JSON.",
            "",
            machine_check(*a.write_ns),
            "",
            "Workloads: " + "; ".join(f"**{k}** {v}" for k, v in WORKLOADS.items())
            + "; **idle** 10,000 idle subscribed connections.",
            "",
            f"![p99 latency against delivered rate]({Path('docs') / a.chart.name})",
            "",
            *per_mode,
            END,
        ]
    )
    text = a.benchmarks.read_text()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        marker = "## Micro-benchmarks (criterion)"
        head = "## Side by side with peers\n\n" + section + "\n\n"
        text = text.replace(marker, head + marker) if marker in text else text + "\n" + head
    a.benchmarks.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
