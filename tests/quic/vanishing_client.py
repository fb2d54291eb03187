"""A QUIC client that streams data until it is killed (run as a separate process)."""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Protocol

from pibridge.quic import PinnedFingerprintVerification, QuicSettings, connectQuic
from tests.quic.support import RecordingHandler


async def main(port: int, known_hosts: str) -> None:
    connection = await connectQuic(
        reactor,
        "127.0.0.1",
        port,
        RecordingHandler(),
        verification=PinnedFingerprintVerification(
            known_hosts=Path(known_hosts), notify=lambda message: None
        ),
        settings=QuicSettings(idle_timeout=0.5),
    )
    stream = connection.openStream(Protocol())
    block = b"v" * 16384

    def feed() -> None:
        stream.write(block)

    task.LoopingCall(feed).start(0.001)
    print("streaming", flush=True)


if __name__ == "__main__":
    started = defer.ensureDeferred(main(int(sys.argv[1]), sys.argv[2]))
    started.addErrback(lambda failure: print("failed", failure.getErrorMessage(), flush=True))
    reactor.run()
