"""The seeded impairment relay as its own process, steered one command per line on stdin.

``python -m tests.e2e.impair_process HOST PORT SEED`` prints ``LISTENING <port>``,
then obeys: ``set key=value ...`` (fields of `LinkConditions`, both directions),
``cut``, ``restore``, ``rebind``, ``stats``; each is answered with one ``OK ...`` line.
The pibridge-attach process under test is a separate program, so the relay
cannot share a reactor with it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import attrs
from twisted.internet import reactor, stdio
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from tests.faults.impair import ImpairmentRelay, LinkConditions


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, relay: ImpairmentRelay) -> None:
        self.relay = relay

    def connectionMade(self) -> None:
        self.sendLine(f"LISTENING {self.relay.address[1]}".encode())

    def lineReceived(self, line: bytes) -> None:
        command, *arguments = line.decode().split()
        if command == "set":
            values: dict[str, Any] = {}
            for argument in arguments:
                key, _, value = argument.partition("=")
                values[key] = float(value) if key != "keep_order" else value == "true"
            self.relay.set(both=LinkConditions(**values))
            self.sendLine(b"OK set")
        elif command == "cut":
            self.relay.cut()
            self.sendLine(b"OK cut")
        elif command == "restore":
            self.relay.restore()
            self.sendLine(b"OK restore")
        elif command == "rebind":
            port = self.relay.rebind()[1]
            self.sendLine(f"OK rebind {port}".encode())
        elif command == "stats":
            counters = {
                name: attrs.asdict(getattr(self.relay, name).counters)
                for name in ("upstream", "downstream")
            }
            self.sendLine(b"OK " + json.dumps(counters).encode())
        else:
            self.sendLine(f"ERROR unknown command {command}".encode())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        reactor.stop()  # type: ignore[attr-defined]


def main() -> None:
    host, port, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    relay = ImpairmentRelay(reactor, (host, port), seed=seed)
    relay.start()
    stdio.StandardIO(Commands(relay))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
