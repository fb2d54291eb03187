"""Kernel-level impaired paths: two network namespaces joined by a veth pair.

This kernel has no netem, so the kernel can lose packets (nftables on the
ingress hook: a drop on the output hook makes ``sendto`` fail with EPERM,
which no real link does), take the link down and up, and limit the rate
(``tbf``); delay, reordering and rebinding are the user-space relay's job
(:mod:`tests.faults.impair`).

The addresses (a /30 in 10.203.0.0/16) exist only inside the namespaces made
here; nothing is ever sent outside them. Programs run inside a namespace with
``ip netns exec``; :func:`spawn_in` starts one under the Twisted reactor and
reads its JSON lines.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

REPO_ROOT = Path(__file__).resolve().parents[2]
# Tools the helpers run, with the Debian package that has each.
REQUIRED_TOOLS = {"ip": "iproute2", "nft": "nftables", "ethtool": "ethtool", "tc": "iproute2"}
LOSS_TABLE = "pibridge_faults"

_pair_numbers = itertools.count()


class NamespacesUnavailable(Exception):
    """This process may not create network namespaces (not root, no CAP_NET_ADMIN)."""


class CommandFailed(Exception):
    """A namespace command exited non-zero; the message has its output."""


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run a short command to completion and return its output."""
    completed = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and completed.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} exited {completed.returncode}: "
            f"{completed.stderr.strip() or completed.stdout.strip()}"
        )
    return completed.stdout


def missing_tools() -> list[str]:
    """Debian packages to install before these helpers can work (empty when all is there)."""
    return sorted({package for tool, package in REQUIRED_TOOLS.items() if not shutil.which(tool)})


@attrs.frozen
class Namespace:
    """One side: a namespace, its end of the veth pair, and its address on it."""

    name: str
    device: str
    address: str
    prefix: int = 30

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


@attrs.define(eq=False)
class NamespacePair:
    """Two namespaces joined by a veth pair; change the link while programs run.

    ``a`` and ``b`` are the two sides. Build it with :func:`namespace_pair`,
    which always cleans up.
    """

    a: Namespace
    b: Namespace
    _down: bool = False

    @property
    def sides(self) -> tuple[Namespace, Namespace]:
        return (self.a, self.b)

    def run_in(self, side: Namespace, argv: Sequence[str], *, check: bool = True) -> str:
        """Run a short command inside ``side``'s namespace and return its output."""
        return run(side.exec_argv(argv), check=check)

    def set_loss(self, side: Namespace, percent: int, *, udp_only: bool = True) -> None:
        """Drop ``percent`` % of the packets arriving at ``side`` (0 removes the rule).

        Only UDP by default, so ARP keeps working and the loss falls on QUIC.
        """
        if not 0 <= percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        match = "ip protocol udp " if udp_only else ""
        rule = f"{match}numgen random mod 100 < {percent} counter drop" if percent else ""
        # Adding then deleting first makes the replacement work whether or not
        # the table existed; the whole script applies atomically.
        script = (
            f"add table netdev {LOSS_TABLE}\n"
            f"delete table netdev {LOSS_TABLE}\n"
            f"table netdev {LOSS_TABLE} {{\n"
            f"  chain ingress {{\n"
            f'    type filter hook ingress device "{side.device}" priority 0; policy accept;\n'
            f"    {rule}\n"
            f"  }}\n"
            f"}}\n"
        )
        run(side.exec_argv(["nft", "-f", "-"]), stdin=script)

    def set_loss_both(self, percent: int, *, udp_only: bool = True) -> None:
        """The same ingress loss on both sides (so each direction loses ``percent`` %)."""
        for side in self.sides:
            self.set_loss(side, percent, udp_only=udp_only)

    def dropped_by_loss(self, side: Namespace) -> int:
        """Packets the loss rule at ``side`` has dropped so far (read from its counter)."""
        listing = run(side.exec_argv(["nft", "-j", "list", "table", "netdev", LOSS_TABLE]))
        for item in json.loads(listing).get("nftables", []):
            for expression in item.get("rule", {}).get("expr", []):
                if "counter" in expression:
                    return int(expression["counter"]["packets"])
        return 0

    def link_down(self) -> None:
        """Take both ends of the veth pair down: nothing passes either way."""
        for side in self.sides:
            self.run_in(side, ["ip", "link", "set", "dev", side.device, "down"])
        self._down = True

    def link_up(self) -> None:
        """Bring both ends up again; the kernel keeps the addresses and restores the route."""
        for side in self.sides:
            self.run_in(side, ["ip", "link", "set", "dev", side.device, "up"])
        self._down = False

    @property
    def is_down(self) -> bool:
        return self._down

    def set_rate(
        self, side: Namespace, rate: str, *, burst: str = "32kbit", latency: str = "50ms"
    ) -> None:
        """Limit what ``side`` sends to ``rate`` (``tc`` units, e.g. ``4mbit``) with tbf."""
        self.run_in(
            side,
            [
                "tc", "qdisc", "replace", "dev", side.device, "root",
                "tbf", "rate", rate, "burst", burst, "latency", latency,
            ],
        )  # fmt: skip

    def clear_rate(self, side: Namespace) -> None:
        """Remove the rate limit from ``side``."""
        self.run_in(side, ["tc", "qdisc", "del", "dev", side.device, "root"], check=False)


@contextmanager
def namespace_pair(tag: str = "pbf") -> Iterator[NamespacePair]:
    """Two fresh namespaces joined by a veth pair, always removed afterwards.

    Raises :class:`NamespacesUnavailable` when this process may not create
    namespaces, so a fixture can skip with that reason.
    """
    missing = missing_tools()
    if missing:
        raise CommandFailed(f"install the Debian packages: {' '.join(missing)}")
    _remove_leftovers(tag)
    number = next(_pair_numbers)
    unique = f"{tag}{os.getpid()}x{number}"
    subnet = number % 256
    a = Namespace(f"{unique}a", "pbfa", f"10.203.{subnet}.1")
    b = Namespace(f"{unique}b", "pbfb", f"10.203.{subnet}.2")
    created: list[Namespace] = []
    try:
        for side in (a, b):
            try:
                run(["ip", "netns", "add", side.name])
            except CommandFailed as error:
                if "permitted" in str(error) or "denied" in str(error):
                    raise NamespacesUnavailable(
                        f"cannot create network namespaces here (need root or "
                        f"CAP_NET_ADMIN): {error}"
                    ) from error
                raise
            created.append(side)
        # Create the pair with each end already in its namespace: the names
        # never exist outside them, so parallel pairs cannot collide.
        run(
            [
                "ip", "link", "add", a.device, "netns", a.name, "type", "veth",
                "peer", "name", b.device, "netns", b.name,
            ]
        )  # fmt: skip
        pair = NamespacePair(a, b)
        for side in (a, b):
            pair.run_in(side, ["ip", "link", "set", "dev", "lo", "up"])
            pair.run_in(side, ["ip", "addr", "add", f"{side.address}/30", "dev", side.device])
            pair.run_in(
                side,
                [
                    "ethtool", "-K", side.device,
                    "gro", "off", "gso", "off", "tso", "off", "tx", "off", "rx", "off",
                ],
            )  # fmt: skip
            pair.run_in(side, ["ip", "link", "set", "dev", side.device, "up"])
        yield pair
    finally:
        for side in reversed(created):
            _remove(side)


def _remove_leftovers(tag: str) -> None:
    """Delete namespaces an earlier, killed test process of ours left behind.

    Names carry the creating process id; only those whose process is gone go.
    """
    pattern = re.compile(rf"^{re.escape(tag)}(\d+)x\d+[ab]$")
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        match = pattern.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        _remove(Namespace(name, "", ""))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(side: Namespace) -> None:
    """Delete a namespace made here, ending any process still left inside it first."""
    pids = run(["ip", "netns", "pids", side.name], check=False).split()
    for pid in pids:
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "del", side.name], check=False)


class NamespaceProcess(ProcessProtocol):
    """A program running inside a namespace, read as JSON lines.

    ``next_line()`` gives the next parsed line; ``ended`` fires with the exit
    code. Standard error is kept for failure messages.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.lines: list[Any] = []
        self._waiters: list[Deferred[Any]] = []
        self._unread = 0
        self.stderr = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if not line.strip():
                continue
            parsed = json.loads(line)
            self.lines.append(parsed)
            if self._waiters:
                self._waiters.pop(0).callback(parsed)
            else:
                self._unread += 1

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def next_line(self) -> Deferred[Any]:
        """The next JSON line the program prints (already printed ones first)."""
        waiter: Deferred[Any] = Deferred()
        if self._unread:
            self._unread -= 1
            waiter.callback(self.lines[len(self.lines) - self._unread - 1])
        else:
            self._waiters.append(waiter)
        return waiter

    def processEnded(self, reason: Failure) -> None:
        code = 0
        if isinstance(reason.value, ProcessTerminated):
            code = reason.value.exitCode if reason.value.exitCode is not None else -1
        elif not isinstance(reason.value, ProcessDone):
            code = -1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(
                CommandFailed(f"the program ended (code {code}): {self.stderr.decode()[-2000:]}")
            )
        self.ended.callback(code)

    def stop(self, clock: IReactorTime, grace: float = 5.0) -> Deferred[int]:
        """End the program (SIGTERM, then SIGKILL after ``grace`` s); fire once it is gone."""
        self._signal("TERM")
        if not self.ended.called:
            killer = clock.callLater(grace, self._signal, "KILL")
            self.ended.addBoth(_cancelling(killer))
        return self.ended

    def _signal(self, name: str) -> None:
        if not self.ended.called and self.transport is not None:
            with suppress(ProcessExitedAlready):
                self.transport.signalProcess(name)


def _cancelling(call: IDelayedCall) -> Any:
    def cancel(result: Any) -> Any:
        if call.active():
            call.cancel()
        return result

    return cancel


def spawn_in(
    reactor: Any, side: Namespace, argv: Sequence[str], *, python_module: bool = False
) -> NamespaceProcess:
    """Start ``argv`` inside ``side``'s namespace; ``python_module`` runs ``-m argv[0]``.

    The program runs from the repository root with this interpreter, so
    ``tests.faults.quic_peer`` and ``pibridge`` import as they do here.
    """
    command = [sys.executable, "-m", *argv] if python_module else list(argv)
    full = side.exec_argv(command)
    process = NamespaceProcess()
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")])
    )
    reactor.spawnProcess(
        process, shutil.which(full[0]) or full[0], full, env=environment, path=str(REPO_ROOT)
    )
    return process
