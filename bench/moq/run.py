"""MoQ one-way object latency and throughput: pibridge direct, and through the moq-rs relay.

Publisher and subscriber live in one process (one clock), so one-way latency
is the time from ``TrackPublisher.write`` to the subscriber's ``dataReceived``.
Latency objects go one at a time (the next is written when the previous
arrives), so it is the path's latency, not a queue's. Throughput floods one
track with a push producer that honours the QUIC stream's backpressure.

Usage: ``python bench/moq/run.py [--quick]``; writes ``bench/results/moq.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.interfaces import IPushProducer  # noqa: E402
from twisted.internet.protocol import Protocol  # noqa: E402
from zope.interface import implementer  # noqa: E402

from pibridge.moq import AbsoluteStart, MoqSession, TrackPublisher, TrackRegistry  # noqa: E402
from pibridge.moq.endpoint import connectMoq, listenMoq  # noqa: E402
from pibridge.quic import PinnedFingerprintVerification, load_or_create_identity  # noqa: E402
from tests.moq.relay import RustRelay  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "moq.json"


class Sink(Protocol):
    """Counts bytes and objects; fires waiters when a target is reached."""

    def __init__(self) -> None:
        self.objects = 0
        self.bytes = 0
        self.arrived: Callable[[bytes], None] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.objects += 1
        self.bytes += len(data)
        if self.arrived is not None:
            self.arrived(data)


@implementer(IPushProducer)
class Flood:
    """Writes ``count`` objects of ``size`` bytes as fast as the stream accepts them."""

    def __init__(self, track: TrackPublisher, count: int, size: int) -> None:
        self.track = track
        self.remaining = count
        self.chunk = b"x" * size
        self.paused = False
        self.scheduled = False

    def start(self) -> None:
        self.track.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled and not self.paused and self.remaining:
            self.scheduled = True
            reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self.scheduled = False
        budget = 64
        while self.remaining and not self.paused and budget:
            self.track.write(self.chunk)
            self.remaining -= 1
            budget -= 1
        if not self.remaining:
            self.track.unregisterProducer()
        self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.remaining = 0


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@defer.inlineCallbacks
def measure_latency(
    track: TrackPublisher, sink: Sink, count: int
) -> Generator[Any, Any, dict[str, float]]:
    samples: list[float] = []
    for index in range(count):
        arrived: defer.Deferred[bytes] = defer.Deferred()
        sink.arrived = arrived.callback
        sent = time.perf_counter()
        track.write(b"%08d" % index)
        yield arrived.addTimeout(10, reactor)
        samples.append((time.perf_counter() - sent) * 1000.0)
    sink.arrived = None
    return {
        "p50_ms": percentile(samples, 0.50),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": max(samples),
    }


@defer.inlineCallbacks
def measure_throughput(
    track: TrackPublisher, sink: Sink, count: int, size: int
) -> Generator[Any, Any, float]:
    target = sink.objects + count
    done: defer.Deferred[None] = defer.Deferred()

    def arrived(_data: bytes) -> None:
        if sink.objects >= target and not done.called:
            done.callback(None)

    sink.arrived = arrived
    started = time.perf_counter()
    Flood(track, count, size).start()
    yield done.addTimeout(120, reactor)
    elapsed = time.perf_counter() - started
    sink.arrived = None
    return count * size / elapsed / (1024 * 1024)


@defer.inlineCallbacks
def direct_pair(
    state: Path, name: str
) -> Generator[Any, Any, tuple[TrackPublisher, Sink, list[Any]]]:
    identity = load_or_create_identity(state / "bench-server")
    tracks = TrackRegistry()
    track = tracks.add(TrackPublisher(("bench", name), "stdout"))
    port = listenMoq(reactor, 0, identity, tracks=tracks, interface="127.0.0.1")
    verification = PinnedFingerprintVerification(
        known_hosts=state / "known_hosts", expected_fingerprint=identity.fingerprint.hex
    )
    session: MoqSession = yield connectMoq(
        reactor, "127.0.0.1", port.getHost().port, verification=verification
    )
    sink = Sink()
    yield session.subscribe(("bench", name), "stdout", sink, start=AbsoluteStart(0, 0))
    return track, sink, [session, port]


@defer.inlineCallbacks
def relay_pair(
    state: Path, relay: RustRelay, name: str
) -> Generator[Any, Any, tuple[TrackPublisher, Sink, list[Any]]]:
    verification = PinnedFingerprintVerification(
        known_hosts=state / "known_hosts", expected_fingerprint=relay.fingerprint
    )
    tracks = TrackRegistry()
    track = tracks.add(TrackPublisher(("bench", name), "stdout"))
    publisher: MoqSession = yield connectMoq(
        reactor, "127.0.0.1", relay.port, verification=verification, tracks=tracks
    )
    yield publisher.publishNamespace(("bench", name))
    subscriber: MoqSession = yield connectMoq(
        reactor, "127.0.0.1", relay.port, verification=verification
    )
    sink = Sink()
    yield subscriber.subscribe(("bench", name), "stdout", sink, start=AbsoluteStart(0, 0))
    return track, sink, [subscriber, publisher]


@defer.inlineCallbacks
def close_all(things: list[Any]) -> Generator[Any, Any, None]:
    for thing in things:
        if isinstance(thing, MoqSession):
            thing.close()
            yield thing.whenClosed()
        else:
            yield thing.stopListening()


@defer.inlineCallbacks
def run(options: argparse.Namespace) -> Generator[Any, Any, None]:
    runs = 1 if options.quick else 3
    latency_count = 200 if options.quick else 2000
    object_size = 16 * 1024
    flood_count = 512 if options.quick else 4096  # 8 or 64 MiB
    relay = RustRelay()
    relay.start()
    results: dict[str, Any] = {
        "benchmark": "moq",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count()},
        "notes": (
            "one process holds publisher and subscriber (one clock); latency: one object "
            "in flight at a time, write to dataReceived; throughput: 16 KiB objects "
            "under backpressure; relay = moq-rs moq.Server on loopback"
        ),
        "runs": runs,
        "latency_objects": latency_count,
        "throughput_bytes": flood_count * object_size,
        "object_size": object_size,
        "paths": {},
    }
    try:
        with tempfile.TemporaryDirectory() as scratch:
            state = Path(scratch)
            for path in ("direct", "relay"):
                latencies: list[dict[str, float]] = []
                throughputs: list[float] = []
                for attempt in range(runs):
                    name = f"{path}-{attempt}"
                    if path == "direct":
                        track, sink, things = yield direct_pair(state, name)
                    else:
                        track, sink, things = yield relay_pair(state, relay, name)
                    yield task.deferLater(reactor, 0.2)
                    latencies.append((yield measure_latency(track, sink, latency_count)))
                    track.startGroup()
                    throughputs.append(
                        (yield measure_throughput(track, sink, flood_count, object_size))
                    )
                    yield close_all(things)
                results["paths"][path] = {
                    "latency_p50_ms": summary([x["p50_ms"] for x in latencies]),
                    "latency_p99_ms": summary([x["p99_ms"] for x in latencies]),
                    "throughput_mib_s": summary(throughputs),
                }
                print(path, json.dumps(results["paths"][path], indent=1), flush=True)
    finally:
        relay.stop()
    direct, via = results["paths"]["direct"], results["paths"]["relay"]
    results["ratios"] = {
        "relay_over_direct_latency_p50": via["latency_p50_ms"]["median"]
        / direct["latency_p50_ms"]["median"],
        "relay_over_direct_throughput": via["throughput_mib_s"]["median"]
        / direct["throughput_mib_s"]["median"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("ratios", json.dumps(results["ratios"], indent=1))
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each")
    options = parser.parse_args()
    outcome: list[Any] = []

    def finish(result: Any) -> None:
        outcome.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: run(options).addBoth(finish))
    reactor.run()
    if outcome and hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()


if __name__ == "__main__":
    main()
