"""``pibridge-attach``: show a remote pi (or any program) in this terminal.

The network transport is a seam: a `Connector` gets the parsed options and a
ready `TerminalClient`, connects however it does (direct MoQ or a relay),
builds the channels, calls ``client.attach(channels)`` and ``client.start()``,
and fires once attached. This module owns everything local around it: raw
mode, signals, window size changes, the exit status and the last message.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import jwt
from attrs import frozen
from twisted.internet import defer

from pibridge.attach.client import EXIT_CONNECTION, EXIT_REFUSED, Outcome, TerminalClient
from pibridge.attach.local_terminal import StdioTerminal
from pibridge.attach.tty import RawTerminal
from pibridge.seal.box import parse_public_key

DEFAULT_PORT: Final = 4443
DEFAULT_HTTP_PORT: Final = 8080
UI_MODES: Final = ("pty", "rpc")
UI_MODE_VARIABLE: Final = "PIBRIDGE_UI_MODE"
TOKEN_VARIABLE: Final = "PIBRIDGE_TOKEN"
#: Where the MoQ transport's connector is looked up when none is given.
CONNECTOR_PATH: Final = "pibridge.attach.transport:connect"
EXIT_USAGE: Final = 2
#: Longest wait for remaining output to reach the terminal after the session ended.
FLUSH_TIMEOUT: Final = 5.0


@frozen
class AttachOptions:
    host: str
    port: int
    token: str = attrs.field(repr=False)
    session_id: str
    group: str
    ui: str
    term: str
    relay: str | None = None
    known_hosts: Path | None = None
    fingerprint: str | None = None
    bot_key: str | None = None
    base_url: str | None = None
    new_session: bool = True

    @property
    def http_base_url(self) -> str:
        if self.base_url:
            return self.base_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{DEFAULT_HTTP_PORT}"


Connector = Callable[[Any, AttachOptions, TerminalClient], "defer.Deferred[object]"]


class UsageProblem(Exception):
    pass


class MissingCredential(UsageProblem):
    """No token at all: the bot would refuse, so this is a refusal (exit 77), said up front."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pibridge-attach",
        description=(
            "Attach this terminal to a terminal session on a pibridge bot: the remote "
            "program (pi) runs in a PTY on the bot and its exact output is shown here. "
            "Keys, paste, resize and Ctrl-C go to the remote program; the local terminal "
            "is put in raw mode and restored on exit, whatever the reason. The exit "
            "status is the remote program's (128+N when killed by signal N); 77 when "
            "the bot refused the session; 255 when the connection failed or was lost."
        ),
        epilog=(
            f"Environment: {UI_MODE_VARIABLE}=pty|rpc chooses the view when --ui is not "
            f"given; {TOKEN_VARIABLE} holds the token when neither --token nor --token-file "
            "is given. Get a token on the bot host with pibridge-token."
        ),
    )
    parser.add_argument(
        "target",
        nargs="?",
        metavar="HOST[:PORT]",
        help=f"the bot (MoQ port, default {DEFAULT_PORT}); not needed with --relay",
    )
    credential = parser.add_mutually_exclusive_group()
    credential.add_argument("--token", help="the session token (visible in ps; prefer a file)")
    credential.add_argument("--token-file", type=Path, help="read the token from this file")
    parser.add_argument(
        "--session",
        metavar="SID",
        help="reattach to this session id (a UUID); default: start a new session",
    )
    parser.add_argument("--group", help="the agent group (default: the group named in the token)")
    parser.add_argument(
        "--relay",
        metavar="moqt://HOST:PORT",
        help="reach the bot through this MoQ relay instead of directly",
    )
    parser.add_argument(
        "--bot-key",
        metavar="pibridge-bot-...",
        help="with --relay: the bot's identity key (its log and /api/capabilities show it); "
        "everything is sealed to it, so the relay sees nothing",
    )
    parser.add_argument(
        "--known-hosts",
        type=Path,
        metavar="PATH",
        help="file of pinned bot identity keys (trust on first use)",
    )
    parser.add_argument(
        "--fingerprint",
        metavar="SHA256:...",
        help="the bot's identity key fingerprint to require",
    )
    parser.add_argument(
        "--ui",
        choices=UI_MODES,
        help=f"pty: the remote TUI itself (default); rpc: line-based chat [env {UI_MODE_VARIABLE}]",
    )
    parser.add_argument(
        "--base-url",
        help=f"HTTP API of the bot for --ui rpc (default: http://HOST:{DEFAULT_HTTP_PORT})",
    )
    return parser


def _split_target(target: str) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif target.count(":") == 1:
        host, _, port_text = target.partition(":")
    else:
        host, port_text = target, ""
    if not host:
        raise UsageProblem(f"{target!r}: no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageProblem(f"{target!r}: {port_text!r} is not a port")
    return host, int(port_text)


def _relay_address(url: str) -> tuple[str, int]:
    scheme, _, rest = url.partition("://")
    if scheme not in ("moqt", "moq") or not rest:
        raise UsageProblem(f"--relay: {url!r} should be a moqt://HOST:PORT URL")
    return _split_target(rest.rstrip("/"))


def _group_from_token(token: str) -> str | None:
    """The group the token names (read, not verified: the bot verifies)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    group = claims.get("grp")
    return group if isinstance(group, str) and group else None


def parse_arguments(argv: Sequence[str], environ: Mapping[str, str]) -> AttachOptions:
    """Options from the command line and environment; `UsageProblem` says what is wrong."""
    arguments = _parser().parse_args(argv)
    if arguments.relay is not None:
        host, port = _relay_address(arguments.relay)
    elif arguments.target is None:
        raise UsageProblem("say which bot: HOST[:PORT], or --relay moqt://HOST:PORT --bot-key KEY")
    else:
        host, port = _split_target(arguments.target)
    if arguments.token_file is not None:
        try:
            token = arguments.token_file.read_text().strip()
        except OSError as e:
            raise UsageProblem(f"--token-file: {e.strerror}") from None
    else:
        token = arguments.token or environ.get(TOKEN_VARIABLE, "")
    ui = arguments.ui or environ.get(UI_MODE_VARIABLE, "pty")
    if ui not in UI_MODES:
        raise UsageProblem(f"{UI_MODE_VARIABLE}={ui!r}: use pty or rpc")
    if ui == "pty" and not token:
        raise MissingCredential(f"a token is needed: --token-file, --token or {TOKEN_VARIABLE}")
    session_id = arguments.session or str(uuid.uuid4())
    try:
        if str(uuid.UUID(session_id)) != session_id.lower():
            raise ValueError
    except ValueError:
        raise UsageProblem(f"--session: {session_id!r} is not a UUID") from None
    group = arguments.group or (_group_from_token(token) if token else None)
    if ui == "pty" and not group:
        raise UsageProblem("--group is needed (the token names none)")
    if arguments.relay is not None and not arguments.relay.startswith(("moqt://", "moq://")):
        raise UsageProblem(f"--relay: {arguments.relay!r} should be a moqt://HOST:PORT URL")
    if arguments.relay is not None and ui == "pty" and not arguments.bot_key:
        raise UsageProblem("--relay needs --bot-key: a relay is not trusted with the session")
    if arguments.bot_key is not None:
        try:
            parse_public_key(arguments.bot_key)
        except ValueError as e:
            raise UsageProblem(f"--bot-key: {e}") from None
    return AttachOptions(
        host=host,
        port=port,
        token=token,
        session_id=session_id.lower(),
        group=group or "",
        ui=ui,
        term=environ.get("TERM") or "xterm-256color",
        relay=arguments.relay,
        known_hosts=arguments.known_hosts,
        fingerprint=arguments.fingerprint,
        bot_key=arguments.bot_key,
        base_url=arguments.base_url,
        new_session=arguments.session is None,
    )


def load_connector(path: str = CONNECTOR_PATH) -> Connector | None:
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return None
    connector: Connector = getattr(module, name)
    return connector


async def run_pty(
    reactor: Any,
    options: AttachOptions,
    connector: Connector,
    *,
    input_fd: int = 0,
    output_fd: int = 1,
) -> Outcome:
    """Raw mode on, attach, wait for the end, raw mode off; the outcome says how it ended."""
    raw = RawTerminal(input_fd, output_fd)
    terminal = StdioTerminal(reactor, input_fd, output_fd)
    client = TerminalClient(
        reactor,
        terminal,
        options.session_id,
        options.group,
        options.token,
        term=options.term,
        screen=raw.screen,
    )
    attaching: list[defer.Deferred[object]] = []

    def signalled(signum: int) -> None:
        """Runs in the reactor thread, after the terminal was restored."""
        client.close(signum)
        for pending in attaching:
            pending.cancel()

    raw.on_signal = lambda signum: reactor.callFromThread(signalled, signum)
    previous_winch = signal.signal(
        signal.SIGWINCH, lambda signum, frame: reactor.callFromThread(client.window_changed)
    )
    try:
        with raw:
            connecting = connector(reactor, options, client)
            attaching.append(connecting)
            try:
                await connecting
            except defer.CancelledError:
                pass
            except Exception as e:
                client.connection_lost(f"could not attach: {e}")
            attaching.clear()
            outcome = await client.finished
            # The program's last output (its own clean-up sequences) goes out
            # before the resets; a terminal stuck on XOFF must not hang the exit.
            await (
                terminal.when_closed().addTimeout(FLUSH_TIMEOUT, reactor).addErrback(lambda _: None)
            )
    finally:
        signal.signal(signal.SIGWINCH, previous_winch)
    return outcome


def _run_reactor(start: Callable[[Any], defer.Deferred[int]]) -> int:
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    result: list[int] = []

    def finished(value: object) -> None:
        if isinstance(value, int):
            result.append(value)
        else:
            sys.stderr.write(f"pibridge-attach: {getattr(value, 'getErrorMessage', str)()}\n")
            result.append(EXIT_CONNECTION)
        reactor.stop()

    reactor.callWhenRunning(lambda: start(reactor).addBoth(finished))
    reactor.run(installSignalHandlers=False)
    return result[0] if result else EXIT_CONNECTION


def main(argv: Sequence[str] | None = None, *, connector: Connector | None = None) -> int:
    """Entry point of ``pibridge-attach``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parse_arguments(arguments, os.environ)
    except UsageProblem as e:
        sys.stderr.write(f"pibridge-attach: {e}\n")
        return EXIT_REFUSED if isinstance(e, MissingCredential) else EXIT_USAGE
    if options.ui == "rpc":
        from pibridge.attach.rpc_ui import run_rpc_ui

        return _run_reactor(
            lambda reactor: run_rpc_ui(
                reactor,
                options.http_base_url,
                stdin=sys.stdin,
                stdout=sys.stdout,
                session_id=None if options.new_session else options.session_id,
                token=options.token or None,
            )
        )
    chosen = connector if connector is not None else load_connector()
    if chosen is None:
        sys.stderr.write("pibridge-attach: this installation has no terminal transport\n")
        return EXIT_CONNECTION
    if not (os.isatty(0) and os.isatty(1)):
        sys.stderr.write("pibridge-attach: stdin and stdout must be a terminal (or use --ui rpc)\n")
        return EXIT_USAGE

    async def attach(reactor: Any) -> int:
        outcome = await run_pty(reactor, options, chosen)
        sys.stderr.write(f"pibridge-attach: {outcome.message}\n")
        return outcome.exit_code

    return _run_reactor(lambda reactor: defer.ensureDeferred(attach(reactor)))
