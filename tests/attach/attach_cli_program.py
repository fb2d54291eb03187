"""Runs pibridge-attach's main with an in-memory bot; driven by test_attach_cli.py in a PTY.

The fake bot echoes each stdin object as hex, reports resizes, ends with
exit status 5 on "q", refuses the session on "r" and drops the connection on "x".
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer

from pibridge.attach.cli import AttachOptions, main
from pibridge.attach.client import TerminalClient
from pibridge.terminal import control


class EchoBot:
    def __init__(self, reactor: Any, client: TerminalClient) -> None:
        self.reactor = reactor
        self.client = client

    def send_control(self, message: control.Message) -> None:
        if isinstance(message, control.Close):
            sys.stderr.write(f"bot got close {message.reason}\n")

    def send_input(self, data: bytes) -> None:
        if data == b"q":
            sid = self.client.session_id
            self.reactor.callLater(
                0, self.client.control_received, control.Close(sid, "remote_exit", exit_code=5)
            )
        elif data == b"r":
            refusal = control.Close(
                self.client.session_id, "refused", message="the token has expired"
            )
            self.reactor.callLater(0, self.client.control_received, refusal)
        elif data == b"x":
            self.reactor.callLater(0, self.client.connection_lost, "the connection closed")
        else:
            self.reactor.callLater(
                0, self.client.output_received, b"echo:" + data.hex().encode() + b"\r\n"
            )

    def send_resize(self, cols: int, rows: int) -> None:
        self.client.output_received(b"resize %dx%d\r\n" % (cols, rows))

    def register_input_producer(self, producer: Any) -> None:
        pass

    def shown_output(self, count: int) -> None:
        pass

    def pause_output(self) -> None:
        pass

    def resume_output(self) -> None:
        pass

    def close(self) -> None:
        pass


def connect(reactor: Any, options: AttachOptions, client: TerminalClient) -> defer.Deferred[object]:
    bot = EchoBot(reactor, client)
    client.attach(bot)
    request = client.open_request()
    client.start()
    client.control_received(control.OpenAck(options.session_id))
    client.output_received(
        b"\x1b[?2004h\x1b[>7u\x1b[?25lhello %dx%d\r\n" % (request.cols, request.rows)
    )
    return defer.succeed(None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], connector=connect))
