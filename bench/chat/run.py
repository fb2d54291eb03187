"""Chat benchmark: pibridge's HTTP/SSE path against pi's RPC mode driven directly.

Same offline model, same prompts, one run, side by side:

* time to first delta (prompt sent -> first text delta seen by the client),
* per-delta overhead (whole-reply time difference / deltas, for a long reply),
* 8 and 32 sessions streaming at once: lost or duplicated deltas, memory.

Writes ``bench/results/chat.json``. Usage: ``python bench/chat/run.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import treq
from twisted.internet import defer, protocol, task
from twisted.web.server import Site

from pibridge.agent.offline_model import (
    OFFLINE_MODEL_ID,
    OFFLINE_PROVIDER,
    OfflineModelService,
)
from pibridge.agent.runtime import AgentRuntime
from pibridge.chat.manager import ChatManager
from pibridge.web.app import HttpApi

ROOT = Path(__file__).resolve().parents[2]
PI = ROOT / "node_modules" / ".bin" / "pi"
SHORT_PROMPT = "benchmark ping"
LONG_LINES = 200
LONG_PROMPT = f"[long: {LONG_LINES}]"
WARMUP = 3


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


class DirectPi(protocol.ProcessProtocol):
    """pi --mode rpc with nothing in between: the floor for the chat path."""

    def __init__(self) -> None:
        self.buffer = b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.turn: defer.Deferred[list[float]] | None = None
        self.delta_times: list[float] = []
        self.ended: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b'{"id":"s","type":"set_auto_retry","enabled":false}\n')
        self.transport.write(b'{"id":"g","type":"get_state"}\n')

    def outReceived(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            record = json.loads(line)
            kind = record.get("type")
            if kind == "response" and record.get("command") == "get_state":
                self.ready.callback(None)
            elif kind == "message_update":
                update = record.get("assistantMessageEvent") or {}
                if update.get("type") == "text_delta":
                    self.delta_times.append(now)
            elif kind == "agent_end" and self.turn is not None:
                turn, self.turn = self.turn, None
                turn.callback(self.delta_times)

    def prompt(self, message: str) -> defer.Deferred[list[float]]:
        assert self.transport is not None
        self.delta_times = []
        self.turn = defer.Deferred()
        self.transport.write(json.dumps({"type": "prompt", "message": message}).encode() + b"\n")
        return self.turn

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


class SseTimer:
    """Collects SSE events with arrival times."""

    def __init__(self) -> None:
        self.buffer = b""
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.logged: list[tuple[float, str]] = []

    def feed(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            if block.startswith(b":"):
                continue
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n"))
            self.events.append(
                (
                    now,
                    {
                        "id": int(fields["id"]),
                        "event": fields["event"],
                        "data": json.loads(fields["data"]),
                    },
                )
            )


class Bench:
    def __init__(self, reactor: Any, root: Path) -> None:
        self.reactor = reactor
        self.root = root
        self.state = root / "state"
        self.workspace = root / "workspace"
        self.workspace.mkdir(parents=True)
        self.model = OfflineModelService(reactor, self.state)
        self.model.startService()
        self.runtime = AgentRuntime(
            pi_command=[str(PI)],
            workspace=self.workspace,
            state_dir=self.state,
            model=f"{OFFLINE_PROVIDER}/{OFFLINE_MODEL_ID}",
            environ={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            offline_model=self.model,
        )
        self.manager = ChatManager(
            spawner=reactor,
            clock=reactor,
            runtime=self.runtime,
            state_dir=self.state,
            max_sessions=64,
        )
        self.manager.startService()
        api = HttpApi(config={}, chat=self.manager)
        self.port = reactor.listenTCP(0, Site(api.app.resource()), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def direct_pi(self) -> DirectPi:
        pi = DirectPi()
        invocation = self.runtime.invocation("rpc", session_file=self.root / "direct.jsonl")
        self.reactor.spawnProcess(
            pi,
            invocation.argv[0],
            list(invocation.argv),
            env=dict(invocation.env),
            path=str(invocation.cwd),
        )
        await pi.ready
        return pi

    async def create(self) -> str:
        response = await treq.post(f"{self.url}/api/sessions/create", data=b"{}")
        body = json.loads(await treq.content(response))
        session_id: str = body["session"]["id"]
        session = self.manager.get(session_id)
        while session.state.value == "starting":
            await task.deferLater(self.reactor, 0.01, lambda: None)
        return session_id

    async def via_pibridge(self, session_id: str, message: str) -> tuple[float, SseTimer]:
        timer = SseTimer()
        log = self.manager.get(session_id).log
        stop = log.listen(lambda event: timer.logged.append((time.perf_counter(), event.kind)))
        sent = time.perf_counter()
        response = await treq.post(
            f"{self.url}/api/sessions/{session_id}/stream",
            data=json.dumps({"message": message}).encode(),
            unbuffered=True,
        )
        await treq.collect(response, timer.feed)
        stop()
        return sent, timer

    async def stop(self) -> None:
        await self.manager.stopService()
        await self.port.stopListening()
        await self.model.stopService()


def check_stream(timer: SseTimer) -> int:
    """Deltas lost or repeated in one stream (ids must be consecutive; text must add up)."""
    events = [event for _, event in timer.events]
    ids = [event["id"] for event in events]
    problems = sum(1 for a, b in itertools.pairwise(ids) if b != a + 1)
    text = "".join(e["data"]["text"] for e in events if e["event"] == "delta")
    if not events or events[-1]["event"] != "done" or events[-1]["data"]["text"] != text:
        problems += 1
    return problems


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


async def latency(bench: Bench, runs: int) -> dict[str, Any]:
    pi = await bench.direct_pi()
    session_id = await bench.create()
    direct_first, bridge_first, direct_long, bridge_long = [], [], [], []
    hop = []
    deltas_long = 0
    for _ in range(WARMUP):
        await pi.prompt(SHORT_PROMPT)
        await bench.via_pibridge(session_id, SHORT_PROMPT)
    for _ in range(runs):
        sent = time.perf_counter()
        times = await pi.prompt(SHORT_PROMPT)
        direct_first.append((times[0] - sent) * 1000)
        sent, timer = await bench.via_pibridge(session_id, SHORT_PROMPT)
        first = next(t for t, e in timer.events if e["event"] == "delta")
        bridge_first.append((first - sent) * 1000)
        logged = next(t for t, kind in timer.logged if kind == "delta")
        hop.append((first - logged) * 1000)
        sent = time.perf_counter()
        times = await pi.prompt(LONG_PROMPT)
        direct_long.append((times[-1] - times[0]) * 1000)
        deltas_long = len(times)
        sent, timer = await bench.via_pibridge(session_id, LONG_PROMPT)
        delta_times = [t for t, e in timer.events if e["event"] == "delta"]
        bridge_long.append((delta_times[-1] - delta_times[0]) * 1000)
    assert pi.transport is not None
    pi.transport.closeStdin()
    await pi.ended
    await bench.manager.get(session_id).stop()
    added_first = statistics.median(bridge_first) - statistics.median(direct_first)
    per_delta = (statistics.median(bridge_long) - statistics.median(direct_long)) / max(
        deltas_long - 1, 1
    )
    return {
        "time_to_first_delta_ms": {
            "pi_rpc_direct": summary(direct_first),
            "pibridge_http_sse": summary(bridge_first),
            "added_median_ms": added_first,
            "ratio_median": statistics.median(bridge_first) / statistics.median(direct_first),
            "pibridge_hop_pi_output_to_client_ms": summary(hop),
        },
        "long_reply_first_to_last_delta_ms": {
            "deltas": deltas_long,
            "pi_rpc_direct": summary(direct_long),
            "pibridge_http_sse": summary(bridge_long),
            "per_delta_overhead_ms": per_delta,
        },
    }


async def concurrency(bench: Bench, sessions: int) -> dict[str, Any]:
    me = psutil.Process()
    before_self = me.memory_info().rss
    ids = await defer.gatherResults(
        [defer.Deferred.fromCoroutine(bench.create()) for _ in range(sessions)]
    )
    after_start = tree_rss(me)
    started = time.perf_counter()
    results = await defer.gatherResults(
        [
            defer.Deferred.fromCoroutine(bench.via_pibridge(sid, f"[long: 100] s{n}"))
            for n, sid in enumerate(ids)
        ]
    )
    elapsed = time.perf_counter() - started
    self_rss_after = me.memory_info().rss
    problems = sum(check_stream(timer) for _, timer in results)
    deltas = sum(sum(1 for _, e in timer.events if e["event"] == "delta") for _, timer in results)
    pi_rss = after_start - before_self
    await defer.gatherResults([bench.manager.get(sid).stop() for sid in ids])
    return {
        "sessions": sessions,
        "deltas_delivered": deltas,
        "lost_or_duplicated": problems,
        "wall_seconds": elapsed,
        "rss_per_session_mib_with_pi": pi_rss / sessions / 2**20,
        "pibridge_rss_growth_per_session_kib": (self_rss_after - before_self) / sessions / 1024,
    }


async def main(reactor: Any, runs: int, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="pibridge-bench-chat-") as scratch:
        bench = Bench(reactor, Path(scratch))
        try:
            result: dict[str, Any] = {
                "runs": runs,
                "pi": "0.73.1 --mode rpc",
                "model": "pibridge offline model (loopback)",
            }
            result.update(await latency(bench, runs))
            result["concurrent"] = [await concurrency(bench, n) for n in (8, 32)]
        finally:
            await bench.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chat.json")
    options = parser.parse_args()
    task.react(
        lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options.runs, options.out))
    )
