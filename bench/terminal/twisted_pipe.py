"""The floor of any Twisted design: raw bytes over loopback UDP between two Python processes.

It has pibridge's shape (a client process holding the local terminal in raw
mode, a bot process running the program in a PTY) with nothing in between: no
QUIC, no TLS, no MoQ framing, no sessions, no flow control. Its keystroke echo
is what the reactor, two Python processes and the PTYs cost before any
protocol work, so pibridge's echo can be read against it as well as against ssh.

Without retransmission loopback UDP is only sound for the echo measurement;
the benchmark runs nothing else through it.

``python twisted_pipe.py bot COMMAND`` prints ``listening on PORT`` and serves one
client; ``python twisted_pipe.py attach PORT`` is that client.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Stays under loopback's datagram limit; the echo sends one byte at a time anyway.
CHUNK = 60_000


def _bot(command: str) -> None:
    from twisted.internet import reactor as installed
    from twisted.internet.protocol import DatagramProtocol, ProcessProtocol

    reactor: Any = installed

    class Program(ProcessProtocol):
        def __init__(self, send: Callable[[bytes], None]) -> None:
            self.send = send

        def childDataReceived(self, childFD: int, data: bytes) -> None:
            for start in range(0, len(data), CHUNK):
                self.send(data[start : start + CHUNK])

        def processEnded(self, reason: Any) -> None:
            reactor.stop()

    class Pipe(DatagramProtocol):
        program: Any = None

        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            transport = self.transport
            assert transport is not None
            if self.program is None:  # the client's hello: now its address is known
                transport.connect(*addr)
                self.program = reactor.spawnProcess(
                    Program(lambda data: transport.write(data, None)),
                    "/bin/sh",
                    ["sh", "-c", command],
                    env=dict(os.environ),
                    usePTY=True,
                )
                return
            self.program.write(datagram)

    port = reactor.listenUDP(0, Pipe(), interface="127.0.0.1")
    print(f"listening on {port.getHost().port}", flush=True)
    reactor.run()


def _attach(port: int) -> None:
    from twisted.internet import reactor as installed
    from twisted.internet import stdio
    from twisted.internet.protocol import DatagramProtocol, Protocol

    reactor: Any = installed

    class Keys(Protocol):
        def __init__(self, send: Callable[[bytes], None]) -> None:
            self.send = send

        def dataReceived(self, data: bytes) -> None:
            self.send(data)

    class Pipe(DatagramProtocol):
        def startProtocol(self) -> None:
            transport = self.transport
            assert transport is not None
            transport.connect("127.0.0.1", port)
            transport.write(b"hello", None)
            stdio.StandardIO(Keys(lambda data: transport.write(data, None)))  # type: ignore[no-untyped-call]

        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            os.write(sys.stdout.fileno(), datagram)

    saved = termios.tcgetattr(sys.stdin.fileno())
    tty.setraw(sys.stdin.fileno())
    try:
        reactor.listenUDP(0, Pipe(), interface="127.0.0.1")
        reactor.run()
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


@contextlib.contextmanager
def twisted_pipe_peer(local_pty: Callable[[list[str]], Any]) -> Iterator[Callable[[str], Any]]:
    """Spawn callables for ``sshd.py``: each starts a bot for the command and attaches to it."""
    bots: list[subprocess.Popen[str]] = []
    script = str(Path(__file__).resolve())

    def spawn(command: str) -> Any:
        bot = subprocess.Popen(
            [sys.executable, script, "bot", command],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        bots.append(bot)
        assert bot.stdout is not None
        line = bot.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the pipe's bot did not start: {line!r}")
        return local_pty([sys.executable, script, "attach", line.split()[-1]])

    try:
        yield spawn
    finally:
        for bot in bots:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bot.pid, 9)
            bot.wait(timeout=10)


if __name__ == "__main__":
    if sys.argv[1] == "bot":
        _bot(sys.argv[2])
    else:
        _attach(int(sys.argv[2]))
