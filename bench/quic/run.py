"""QUIC throughput and echo latency: pibridge's Twisted adapter beside aioquic's asyncio.

Each measurement runs in a fresh process (a reactor cannot be restarted), the
two stacks alternate, and the summary gives median/min/max per stack and the
twisted/asyncio ratio. Results go to ``bench/results/quic.json``.

    python bench/quic/run.py [--size-mib 64] [--echoes 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "quic.json"
CHUNK = 64 * 1024
ECHO_SIZE = 32
MIB = 1024 * 1024


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- pibridge's Twisted adapter --------------------------------------------


def run_twisted(size: int, echoes: int, state: Path, datagram: int) -> dict[str, float]:
    from twisted.internet import defer, reactor
    from twisted.internet.protocol import Protocol

    from pibridge.quic import (
        PinnedFingerprintVerification,
        QuicSettings,
        connectQuic,
        listenQuic,
        load_or_create_identity,
    )

    class Sink(Protocol):
        """Counts bulk bytes and answers ``done`` at the end; echoes small messages."""

        def __init__(self) -> None:
            self.bulk = False

        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            if len(data) > ECHO_SIZE or self.bulk:
                self.bulk = True
            else:
                self.transport.write(data)

        def readConnectionLost(self) -> None:
            assert self.transport is not None
            self.transport.write(b"done")
            self.transport.loseConnection()

    from twisted.internet.interfaces import IHalfCloseableProtocol
    from zope.interface import implementer

    implementer(IHalfCloseableProtocol)(Sink)

    class ServerHandler:
        def connectionMade(self, connection: Any) -> None:
            pass

        def streamOpened(self, stream: Any) -> Any:
            return Sink()

        def connectionLost(self, reason: Any) -> None:
            pass

    class Reader(Protocol):
        def __init__(self) -> None:
            self.waiting: defer.Deferred[bytes] | None = None
            self.buffer = b""

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            waiting, self.waiting = self.waiting, None
            if waiting is not None:
                waiting.callback(None)

        def wait(self) -> defer.Deferred[Any]:
            self.waiting = defer.Deferred()
            return self.waiting

    class ClientHandler(ServerHandler):
        def streamOpened(self, stream: Any) -> Any:
            return None

    result: dict[str, float] = {}

    async def main() -> None:
        identity = load_or_create_identity(state)
        settings = QuicSettings(max_datagram_size=datagram)
        port = listenQuic(
            reactor, 0, identity, ServerHandler, interface="127.0.0.1", settings=settings
        )
        connection = await connectQuic(
            reactor,
            "127.0.0.1",
            port.getHost().port,
            ClientHandler(),
            verification=PinnedFingerprintVerification(
                known_hosts=state / "known_hosts", notify=lambda message: None
            ),
            settings=settings,
        )
        # throughput: a push producer writing as fast as the adapter allows
        reader = Reader()
        stream = connection.openStream(reader)
        block = b"b" * CHUNK
        finished = reader.wait()

        class Producer:
            sent = 0
            paused = False

            def pauseProducing(self) -> None:
                self.paused = True

            def resumeProducing(self) -> None:
                self.paused = False
                reactor.callLater(0, self.produce)

            def stopProducing(self) -> None:
                self.paused = True

            def produce(self) -> None:
                for _ in range(16):
                    if self.paused or self.sent >= size:
                        break
                    stream.write(block)
                    self.sent += CHUNK
                if self.sent >= size:
                    stream.unregisterProducer()
                    stream.loseConnection()
                elif not self.paused:
                    reactor.callLater(0, self.produce)

        producer = Producer()
        start = time.perf_counter()
        stream.registerProducer(producer, True)
        producer.produce()
        await finished
        result["throughput_mib_s"] = size / MIB / (time.perf_counter() - start)

        # echo round trips
        echo = Reader()
        echo_stream = connection.openStream(echo)
        message = b"e" * ECHO_SIZE
        samples = []
        for _ in range(echoes):
            echo.buffer = b""
            start = time.perf_counter()
            echo_stream.write(message)
            while len(echo.buffer) < ECHO_SIZE:
                await echo.wait()
            samples.append(time.perf_counter() - start)
        result["echo_p50_ms"] = statistics.median(samples) * 1000
        result["echo_p99_ms"] = percentile(samples, 0.99) * 1000
        connection.close()
        await port.stopListening()

    def done(outcome: Any) -> Any:
        reactor.stop()
        return outcome

    reactor.callWhenRunning(lambda: defer.ensureDeferred(main()).addBoth(done))
    reactor.run()
    return result


# --- aioquic's own asyncio integration -------------------------------------


def run_asyncio(size: int, echoes: int, state: Path, datagram: int) -> dict[str, float]:
    import asyncio
    import ssl

    from aioquic.asyncio import connect, serve
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import StreamDataReceived

    from pibridge.quic import load_or_create_identity

    class Server(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.bulk: set[int] = set()

        def quic_event_received(self, event: Any) -> None:
            if not isinstance(event, StreamDataReceived):
                return
            if len(event.data) > ECHO_SIZE or event.stream_id in self.bulk:
                self.bulk.add(event.stream_id)
            elif event.data:
                self._quic.send_stream_data(event.stream_id, event.data)
                self.transmit()
            if event.end_stream:
                self._quic.send_stream_data(event.stream_id, b"done", end_stream=True)
                self.transmit()

    result: dict[str, float] = {}

    async def main() -> None:
        identity = load_or_create_identity(state)
        server_configuration = QuicConfiguration(
            is_client=False, alpn_protocols=["moq-00"], max_datagram_size=datagram
        )
        server_configuration.load_cert_chain(identity.certificate_path, identity.key_path)
        server = await serve(
            "127.0.0.1", 0, configuration=server_configuration, create_protocol=Server
        )
        port = server._transport.get_extra_info("sockname")[1]
        client_configuration = QuicConfiguration(
            is_client=True,
            alpn_protocols=["moq-00"],
            verify_mode=ssl.CERT_NONE,
            max_datagram_size=datagram,
        )
        async with connect("127.0.0.1", port, configuration=client_configuration) as client:
            reader, writer = await client.create_stream()
            block = b"b" * CHUNK
            start = time.perf_counter()
            sent = 0
            while sent < size:
                writer.write(block)
                sent += CHUNK
                if sent % (16 * CHUNK) == 0:
                    await writer.drain()
                    await asyncio.sleep(0)
            writer.write_eof()
            await reader.read()
            result["throughput_mib_s"] = size / MIB / (time.perf_counter() - start)

            reader, writer = await client.create_stream()
            message = b"e" * ECHO_SIZE
            samples = []
            for _ in range(echoes):
                start = time.perf_counter()
                writer.write(message)
                await reader.readexactly(ECHO_SIZE)
                samples.append(time.perf_counter() - start)
            result["echo_p50_ms"] = statistics.median(samples) * 1000
            result["echo_p99_ms"] = percentile(samples, 0.99) * 1000
        server.close()

    asyncio.run(main())
    return result


# --- driver ------------------------------------------------------------------


def worker(stack: str, size: int, echoes: int, datagram: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        runner = run_twisted if stack == "twisted" else run_asyncio
        print(json.dumps(runner(size, echoes, Path(state), datagram)))


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--echoes", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--max-datagram-size", type=int, default=1200, help="UDP payload size (aioquic: 1200)"
    )
    parser.add_argument("--worker", choices=["twisted", "asyncio"])
    args = parser.parse_args()
    size = args.size_mib * MIB
    if args.worker:
        worker(args.worker, size, args.echoes, args.max_datagram_size)
        return

    runs: dict[str, list[dict[str, float]]] = {"twisted": [], "asyncio": []}
    failures: dict[str, list[str]] = {"twisted": [], "asyncio": []}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for index in range(args.runs):
        for stack in ("twisted", "asyncio"):
            command = [
                sys.executable, __file__, "--worker", stack,
                "--size-mib", str(args.size_mib), "--echoes", str(args.echoes),
                "--max-datagram-size", str(args.max_datagram_size),
            ]  # fmt: skip
            completed = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=900, check=False
            )
            if completed.returncode != 0:
                error = (completed.stderr.strip().splitlines() or ["no output"])[-1]
                failures[stack].append(error)
                print(f"run {index + 1} {stack:8s} FAILED: {error}", flush=True)
                continue
            measured = json.loads(completed.stdout.strip().splitlines()[-1])
            runs[stack].append(measured)
            values = "  ".join(f"{key}={value:.3f}" for key, value in measured.items())
            print(f"run {index + 1} {stack:8s} {values}", flush=True)
    if not runs["twisted"] or not runs["asyncio"]:
        raise SystemExit(f"no successful runs for a stack: {failures}")

    summary: dict[str, Any] = {}
    for metric in ("throughput_mib_s", "echo_p50_ms", "echo_p99_ms"):
        summary[metric] = {stack: summarise([r[metric] for r in runs[stack]]) for stack in runs}
        twisted, asyncio_ = (summary[metric][s]["median"] for s in ("twisted", "asyncio"))
        summary[metric]["ratio_twisted_over_asyncio"] = twisted / asyncio_
    report = {
        "benchmark": "quic",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "parameters": {
            "size_mib": args.size_mib,
            "echoes": args.echoes,
            "runs": args.runs,
            "max_datagram_size": args.max_datagram_size,
            "chunk": CHUNK,
            "echo_size": ECHO_SIZE,
        },
        "notes": "throughput: higher is better; echo: lower is better. "
        "twisted = pibridge.quic (SO_RCVBUF/SO_SNDBUF 4 MiB, read bursts); "
        "asyncio = aioquic.asyncio serve/connect with its defaults.",
        "summary": summary,
        "runs": runs,
        "failed_runs": failures,
    }
    results = RESULTS
    if args.max_datagram_size != 1200:
        results = RESULTS.with_name(f"quic-datagram-{args.max_datagram_size}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")
    for metric, values in summary.items():
        line = "  ".join(
            f"{stack}: median {v['median']:.3f} (min {v['min']:.3f}, max {v['max']:.3f})"
            for stack, v in values.items()
            if isinstance(v, dict)
        )
        print(f"{metric}: {line}  ratio twisted/asyncio {values['ratio_twisted_over_asyncio']:.2f}")
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
