"""Run every benchmark and write the report: JSON, a Markdown table and a PNG plot.

    python bench/report.py            # run everything, then report
    python bench/report.py --no-run   # report from the JSON already in bench/results/

Each benchmark is its own script writing ``bench/results/<name>.json``;
this collects the headline numbers (medians with min/max, and the ratio to
the peer the issue names) into ``bench/results/report.md``, ``report.json``
and ``report.png``. The machines are shared and noisy: read ratios, not
absolute numbers, and look at min/max.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

#: name -> the command that produces bench/results/<name>.json
BENCHMARKS: dict[str, list[str]] = {
    "quic": [sys.executable, "bench/quic/run.py"],
    "moq": [sys.executable, "bench/moq/run.py"],
    "terminal": [sys.executable, "bench/terminal/sshd.py"],
    "chat": [sys.executable, "bench/chat/run.py"],
}

Row = dict[str, Any]


def spread(stats: dict[str, Any] | None) -> tuple[float | None, float | None, float | None]:
    if not stats:
        return None, None, None
    return stats.get("median"), stats.get("min"), stats.get("max")


def row(
    benchmark: str,
    metric: str,
    unit: str,
    ours: dict[str, Any] | None,
    peer_name: str | None = None,
    peer: dict[str, Any] | None = None,
    better: str = "lower",
) -> Row:
    median, low, high = spread(ours)
    peer_median, _, _ = spread(peer)
    ratio = None
    if median is not None and peer_median:
        ratio = median / peer_median
    return {
        "benchmark": benchmark,
        "metric": metric,
        "unit": unit,
        "pibridge": median,
        "min": low,
        "max": high,
        "peer": peer_name,
        "peer_value": peer_median,
        "ratio": ratio,
        "better": better,
    }


def quic_rows(data: dict[str, Any]) -> Iterator[Row]:
    summary = data.get("summary", {})
    for metric, unit, better in (
        ("throughput_mib_s", "MiB/s", "higher"),
        ("echo_p50_ms", "ms", "lower"),
        ("echo_p99_ms", "ms", "lower"),
    ):
        part = summary.get(metric, {})
        yield row(
            "quic",
            metric,
            unit,
            part.get("twisted"),
            "aioquic asyncio",
            part.get("asyncio"),
            better,
        )


def moq_rows(data: dict[str, Any]) -> Iterator[Row]:
    paths = data.get("paths", {})
    for metric, unit, better in (
        ("latency_p50_ms", "ms", "lower"),
        ("latency_p99_ms", "ms", "lower"),
        ("throughput_mib_s", "MiB/s", "higher"),
    ):
        direct = paths.get("direct", {}).get(metric)
        relay = paths.get("relay", {}).get(metric)
        yield row("moq", f"{metric} direct", unit, direct, better=better)
        yield row("moq", f"{metric} via relay", unit, relay, "direct", direct, better)


def _pstats(peer: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = peer.get(key)
    if not isinstance(value, dict):
        return None
    if "median" in value:
        return value
    if "p50_ms" in value:
        return {"median": value["p50_ms"], "min": value.get("min_ms"), "max": value.get("max_ms")}
    return None


def terminal_rows(data: dict[str, Any]) -> Iterator[Row]:
    peers = data.get("peers", {})
    ssh = peers.get("ssh", {})
    for name in [p for p in peers if p.startswith("pibridge")] + ["twisted_pipe", "bare_pty"]:
        peer = peers.get(name, {})
        for key, unit, better in (
            ("echo", "ms (p50)", "lower"),
            ("throughput", "MB/s", "higher"),
            ("ctrl_c_2MBps", "ms", "lower"),
            ("ctrl_c_10MBps", "ms", "lower"),
            ("first_output", "ms", "lower"),
        ):
            ours = _pstats(peer, key)
            if ours is not None:
                yield row(
                    "terminal", f"{name} {key}", unit, ours, "ssh -tt", _pstats(ssh, key), better
                )
        echo = peer.get("echo")
        if isinstance(echo, dict) and "p99_ms" in echo:
            theirs = ssh.get("echo", {}).get("p99_ms")
            yield row(
                "terminal",
                f"{name} echo p99",
                "ms",
                {"median": echo["p99_ms"]},
                "ssh -tt",
                {"median": theirs} if theirs else None,
            )


def chat_rows(data: dict[str, Any]) -> Iterator[Row]:
    first = data.get("time_to_first_delta_ms", {})
    yield row(
        "chat",
        "time to first delta",
        "ms",
        first.get("pibridge_http_sse"),
        "pi --mode rpc",
        first.get("pi_rpc_direct"),
    )
    if "added_median_ms" in first:
        yield row("chat", "added to first delta", "ms", {"median": first["added_median_ms"]})
    long = data.get("long_reply_first_to_last_delta_ms", {})
    if "per_delta_overhead_ms" in long:
        yield row("chat", "per-delta overhead", "ms", {"median": long["per_delta_overhead_ms"]})
    for entry in data.get("concurrent", []):
        yield row(
            "chat",
            f"{entry['sessions']} sessions: lost or duplicated deltas",
            "deltas",
            {"median": entry.get("lost_or_duplicated")},
        )


EXTRACTORS: dict[str, Callable[[dict[str, Any]], Iterator[Row]]] = {
    "quic": quic_rows,
    "moq": moq_rows,
    "terminal": terminal_rows,
    "chat": chat_rows,
}


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown(rows: list[Row], when: str) -> str:
    lines = [
        f"Benchmarks of {when} on this 2-core machine (medians; min-max in brackets).",
        "",
        "| benchmark | metric | pibridge | peer | peer value | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        spread_text = ""
        if r["min"] is not None and r["max"] is not None:
            spread_text = f" [{fmt(r['min'])}-{fmt(r['max'])}]"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x ({r['better']} is better)"
        lines.append(
            f"| {r['benchmark']} | {r['metric']} | {fmt(r['pibridge'])} {r['unit']}{spread_text}"
            f" | {r['peer'] or '-'} | {fmt(r['peer_value'])} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [r for r in rows if r["ratio"] is not None]
    if not compared:
        return
    labels = [f"{r['benchmark']}: {r['metric']} vs {r['peer']}" for r in compared]
    ratios = [r["ratio"] for r in compared]
    colours = [
        "tab:green" if (r["ratio"] >= 1) == (r["better"] == "higher") else "tab:red"
        for r in compared
    ]
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(compared) + 1.5))
    axes.barh(labels, ratios, color=colours)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlabel("pibridge / peer (median); green = pibridge better")
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="only build the report")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS))
    arguments = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    if not arguments.no_run:
        for name, command in BENCHMARKS.items():
            if arguments.only and name not in arguments.only:
                continue
            print(f"== bench {name}: {' '.join(command[1:])}", flush=True)
            if subprocess.run(command, cwd=REPO).returncode != 0:
                failed.append(name)
    rows: list[Row] = []
    for name, extract in EXTRACTORS.items():
        path = RESULTS / f"{name}.json"
        if path.exists():
            rows.extend(extract(json.loads(path.read_text())))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / "report.json").write_text(json.dumps({"when": when, "rows": rows}, indent=2))
    (RESULTS / "report.md").write_text(markdown(rows, when))
    plot(rows, RESULTS / "report.png")
    print(markdown(rows, when))
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
