"""Terminal peers side by side: a bare local PTY, OpenSSH ``ssh -tt`` on loopback, and pibridge.

Each peer is a function that yields a "spawn" callable: given a shell command
it starts that command behind the peer's terminal path and returns the file
descriptor a terminal emulator would hold (the master side of a local PTY).
Peers: ``bare_pty`` (no transport at all), ``ssh`` (``ssh -tt`` to an sshd
started here), ``twisted_pipe`` (raw bytes over UDP between two Twisted
processes: what any design in Python and Twisted costs before its protocol;
echo only), and ``pibridge`` / ``pibridge_relay`` (``pibridge_peer.py``).

Measured per peer:

* keystroke echo round trip with ``stty raw -echo; cat`` (p50, p99, min, max);
* throughput of a 64 MB stream read as fast as possible;
* Ctrl-C under a ``yes`` flood read at a fixed pace (2 and 10 MB/s, like a
  terminal that renders at that speed): time from writing ``\\x03`` to the
  program's own "stopped" marker reaching the reader. A reader that keeps up
  hides the cost of buffers; a paced one shows it.

Usage: ``python bench/terminal/sshd.py [--quick]``; writes ``bench/results/terminal.json``.
Needs Debian's ``openssh-server`` and ``openssh-client`` (installed with apt-get when missing
and running as root).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import select
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "terminal.json"
COLS, ROWS = 120, 40
STOP_MARKER = b"STOPPED-MARKER"
#: Extra ssh options (e.g. ["-v", "-E", "/tmp/ssh.log"] when investigating).
SSH_EXTRA: list[str] = []
FLOOD = f"trap 'printf {STOP_MARKER.decode()}; exit 0' INT; yes"


class Session:
    """A command running behind some terminal path; ``fd`` is the local PTY master."""

    def __init__(self, fd: int, process: subprocess.Popen[bytes]) -> None:
        self.fd = fd
        self.process = process

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.close(self.fd)


Spawn = Callable[[str], Session]


def _local_pty(argv: list[str], env: dict[str, str] | None = None) -> Session:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_terminal,
        env=env or {**os.environ, "TERM": "xterm-256color"},
    )
    os.close(slave)
    return Session(master, process)


@contextlib.contextmanager
def bare_pty_peer() -> Iterator[Spawn]:
    """The floor: the command in a PTY on this machine, no transport at all."""
    yield lambda command: _local_pty(["sh", "-c", command])


def _ensure_openssh() -> None:
    if (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) and shutil.which("ssh"):
        return
    if os.geteuid() != 0:
        raise SystemExit("openssh-server and openssh-client are needed (apt-get install them)")
    subprocess.run(["apt-get", "install", "-y", "openssh-server", "openssh-client"], check=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {port}")


@contextlib.contextmanager
def ssh_peer() -> Iterator[Spawn]:
    """``ssh -tt`` to a throwaway sshd on a high loopback port, from a local PTY."""
    _ensure_openssh()
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    with tempfile.TemporaryDirectory(prefix="pibridge-bench-ssh-") as scratch:
        directory = Path(scratch)
        host_key, client_key = directory / "host_key", directory / "client_key"
        for key in (host_key, client_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        authorized = directory / "authorized_keys"
        authorized.write_bytes(Path(f"{client_key}.pub").read_bytes())
        port = _free_port()
        server = subprocess.Popen(
            [
                sshd, "-D", "-f", "/dev/null", "-p", str(port), "-h", str(host_key),
                "-o", "ListenAddress=127.0.0.1",
                "-o", f"PidFile={directory / 'sshd.pid'}",
                "-o", f"AuthorizedKeysFile={authorized}",
                "-o", "StrictModes=no",
                "-o", "PermitRootLogin=prohibit-password",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(port)
            user = os.environ.get("USER") or "root"

            def spawn(command: str) -> Session:
                return _local_pty(
                    [
                        "ssh", "-tt", "-q", *SSH_EXTRA, "-p", str(port), "-i", str(client_key),
                        "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "BatchMode=yes",
                        f"{user}@127.0.0.1", command,
                    ]
                )  # fmt: skip

            yield spawn
        finally:
            server.terminate()
            server.wait(timeout=10)


def pibridge_direct_peer() -> contextlib.AbstractContextManager[Spawn]:
    """``pibridge-attach`` straight to a loopback bot (MoQ over QUIC)."""
    from pibridge_peer import pibridge_peer

    return pibridge_peer(_local_pty)  # type: ignore[no-any-return]


def pibridge_relay_peer() -> contextlib.AbstractContextManager[Spawn]:
    """``pibridge-attach`` and the bot meeting at the moq-rs relay, sealed end to end."""
    from pibridge_peer import pibridge_peer

    return pibridge_peer(_local_pty, through_relay=True)  # type: ignore[no-any-return]


def twisted_pipe_peer() -> contextlib.AbstractContextManager[Spawn]:
    """Raw bytes over loopback UDP between two Twisted processes: the floor under pibridge."""
    from twisted_pipe import twisted_pipe_peer

    return twisted_pipe_peer(_local_pty)  # type: ignore[no-any-return]


PEERS: dict[str, Callable[[], contextlib.AbstractContextManager[Spawn]]] = {
    "bare_pty": bare_pty_peer,
    "ssh": ssh_peer,
    "twisted_pipe": twisted_pipe_peer,
    "pibridge": pibridge_direct_peer,
    "pibridge_relay": pibridge_relay_peer,
}
#: Peers measured for keystroke echo only (no retransmission, so no bulk transfers).
ECHO_ONLY = {"twisted_pipe"}


def _read_until(fd: int, marker: bytes, timeout: float = 20) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{marker!r} not seen")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            seen += os.read(fd, 65536)
    return seen


def measure_echo(spawn: Spawn, samples: int) -> dict[str, Any]:
    """Write one byte, time until it comes back, one at a time."""
    session = spawn("stty raw -echo; printf READY; exec cat")
    try:
        _read_until(session.fd, b"READY")
        times = []
        for index in range(samples):
            key = bytes([ord("a") + index % 26])
            start = time.perf_counter()
            os.write(session.fd, key)
            got = b""
            while key not in got:
                select.select([session.fd], [], [], 5)
                got += os.read(session.fd, 1024)
            times.append(time.perf_counter() - start)
    finally:
        session.close()
    times.sort()
    return {
        "samples": samples,
        "p50_ms": 1000 * times[len(times) // 2],
        "p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))],
        "min_ms": 1000 * times[0],
        "max_ms": 1000 * times[-1],
    }


def measure_first_output(spawn: Spawn, runs: int) -> dict[str, Any]:
    """From starting the client to the program's first output reaching the terminal."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session = spawn("printf FIRST-OUTPUT; exec cat")
        try:
            _read_until(session.fd, b"FIRST-OUTPUT")
            times.append(1000 * (time.perf_counter() - start))
        finally:
            session.close()
    return _summary(times, "ms")


def measure_throughput(spawn: Spawn, size: int, runs: int) -> dict[str, Any]:
    rates = []
    for _ in range(runs):
        session = spawn(f"stty raw -echo; printf READY; head -c {size} /dev/zero")
        try:
            _read_until(session.fd, b"READY")
            received = 0
            start = time.perf_counter()
            while received < size:
                ready, _, _ = select.select([session.fd], [], [], 10)
                if not ready:
                    raise TimeoutError(f"output stalled after {received} of {size} bytes")
                try:
                    chunk = os.read(session.fd, 1 << 20)
                except OSError:
                    break
                if not chunk:
                    break
                received += len(chunk)
            elapsed = time.perf_counter() - start
        finally:
            session.close()
        rates.append(received / elapsed / 1e6)
    return _summary(rates, "MB_per_s")


def measure_ctrl_c(
    spawn: Spawn, rate_bytes_per_s: float, runs: int, warmup: float
) -> dict[str, Any]:
    """Read a flood at a fixed pace; time from ``\\x03`` to the stop marker reaching us."""
    results = []
    for _ in range(runs):
        session = spawn(FLOOD)
        try:
            results.append(_ctrl_c_once(session.fd, rate_bytes_per_s, warmup))
        finally:
            session.close()
    return _summary([1000 * r for r in results], "ms")


def _ctrl_c_once(fd: int, rate: float, warmup: float) -> float:
    # The clock starts once the flood is flowing: before that, ssh may not have
    # put its local terminal in raw mode, and a Ctrl-C would interrupt ssh itself.
    _read_until(fd, b"y\r\ny\r\n")
    tick = 0.005
    start = time.perf_counter()
    budget = 0.0
    sent_at: float | None = None
    tail = b""
    next_tick = start
    while True:
        now = time.perf_counter()
        if sent_at is None and now - start >= warmup:
            os.write(fd, b"\x03")
            sent_at = time.perf_counter()
        if sent_at is not None and now - sent_at > 20:
            raise TimeoutError("no stop marker within 20 s")
        budget = min(budget + rate * tick, rate)  # at most one second of backlog credit
        while budget >= 1:
            ready, _, _ = select.select([fd], [], [], 0)
            if not ready:
                break
            try:
                chunk = os.read(fd, int(min(budget, 65536)))
            except OSError:
                chunk = b""
            if not chunk:
                raise RuntimeError("the program ended before its stop marker arrived")
            budget -= len(chunk)
            # Look at the whole chunk: the marker may be followed in the same
            # read by the client's own last words, pushing it out of a short tail.
            window = tail + chunk
            tail = window[-64:]
            if sent_at is not None and STOP_MARKER in window:
                return time.perf_counter() - sent_at
        next_tick += tick
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def _summary(values: list[float], unit: str) -> dict[str, Any]:
    return {
        "unit": unit,
        "runs": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def run_peer(spawn: Spawn, quick: bool, echo_only: bool = False) -> dict[str, Any]:
    """Every measurement for one peer (or its echo alone)."""
    measurements: dict[str, Callable[[], dict[str, Any]]] = {
        "first_output": lambda: measure_first_output(spawn, 3 if quick else 10),
        "echo": lambda: measure_echo(spawn, 200 if quick else 1000),
        "throughput": lambda: measure_throughput(
            spawn, 16_000_000 if quick else 64_000_000, 1 if quick else 3
        ),
        "ctrl_c_2MBps": lambda: measure_ctrl_c(spawn, 2e6, 2 if quick else 5, 1.0),
        "ctrl_c_10MBps": lambda: measure_ctrl_c(spawn, 10e6, 2 if quick else 5, 1.0),
    }
    if echo_only:
        measurements = {"echo": measurements["echo"]}
    results: dict[str, Any] = {}
    for name, measure in measurements.items():
        # A peer that stalls or fails one measurement still gets the others.
        try:
            results[name] = measure()
        except (TimeoutError, RuntimeError, OSError) as error:
            results[name] = {"error": f"{type(error).__name__}: {error}"}
    return results


def _headline(measured: dict[str, Any], name: str, key: str = "median") -> float | None:
    """One number of a measurement, or None when it failed."""
    value = measured.get(name, {}).get(key)
    return float(value) if isinstance(value, int | float) else None


#: (label, measurement, key): the numbers compared across peers.
HEADLINES = (
    ("first_output", "first_output", "median"),
    ("echo_p50", "echo", "p50_ms"),
    ("echo_p99", "echo", "p99_ms"),
    ("throughput", "throughput", "median"),
    ("ctrl_c_2MBps", "ctrl_c_2MBps", "median"),
    ("ctrl_c_10MBps", "ctrl_c_10MBps", "median"),
)


def _ratios(results: dict[str, dict[str, Any]], baseline: str) -> dict[str, dict[str, float]]:
    base = results[baseline]
    ratios: dict[str, dict[str, float]] = {}
    for peer, measured in results.items():
        if peer == baseline:
            continue
        ratio: dict[str, float] = {}
        for label, name, key in HEADLINES:
            mine, theirs = _headline(measured, name, key), _headline(base, name, key)
            if mine is not None and theirs:
                ratio[label] = mine / theirs
        ratios[f"{peer}/{baseline}"] = ratio
    return ratios


def _describe(name: str, measured: dict[str, Any]) -> str:
    parts = []
    for label, measurement, key in HEADLINES:
        if measurement not in measured:
            continue  # not measured for this peer
        value = _headline(measured, measurement, key)
        text = "failed" if value is None else f"{value:.3f}"
        if value is not None and measurement.startswith("ctrl_c"):
            text += f" (max {measured[measurement]['max']:.1f})"
        parts.append(f"{label} {text}")
    return f"{name:>14}: " + " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--peer", action="append", choices=sorted(PEERS), help="only these peers")
    arguments = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for name in arguments.peer or list(PEERS):
        with PEERS[name]() as spawn:
            results[name] = run_peer(spawn, arguments.quick, echo_only=name in ECHO_ONLY)
        print(_describe(name, results[name]), flush=True)
    document = {
        "benchmark": "terminal",
        "quick": arguments.quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "peers": results,
        "ratios": {
            **(_ratios(results, "bare_pty") if "bare_pty" in results else {}),
            **(_ratios(results, "ssh") if "ssh" in results else {}),
        },
    }
    for label, ratio in document["ratios"].items():
        print(label, {key: round(value, 2) for key, value in ratio.items()})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
