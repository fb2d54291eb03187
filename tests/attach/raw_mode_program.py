"""Enters raw mode through pibridge's RawTerminal and leaves by the path named in argv[1].

Run by test_raw_mode.py under a real PTY.
"""

from __future__ import annotations

import os
import sys

from pibridge.attach.tty import RawTerminal


def main() -> None:
    path = sys.argv[1]
    if path == "reactor-sigterm":
        from twisted.internet import reactor, stdio
        from twisted.internet.protocol import Protocol

        raw = RawTerminal(0, 1, on_signal=lambda signum: reactor.callFromThread(reactor.stop))
        raw.enter()
        stdio.StandardIO(Protocol(), reactor=reactor)
        raw.screen.feed(b"\x1b[?2004h\x1b[>7u\x1b]0;pi\x07\x1b[?25l")
        os.write(1, b"\x1b[?2004h\x1b[>7u\x1b]0;pi\x07\x1b[?25l")
        reactor.callWhenRunning(os.write, 1, b"RAW\r\n")
        reactor.run(installSignalHandlers=False)
        raw.restore()
        os.write(1, b"STOPPED\n")
        return
    raw = RawTerminal(0, 1)
    with raw:
        raw.screen.feed(b"\x1b[>7u\x1b[?2004h\x1b[?2026h partial \x1b[3")
        os.write(1, b"RAW\r\n")
        os.read(0, 1)  # the test checks raw mode, then types a key or sends a signal
        if path == "normal":
            return
        if path == "exception":
            raise RuntimeError("boom")
        if path == "exit":
            sys.exit(3)


if __name__ == "__main__":
    main()
