"""Runs pibridge-attach's main with run_rpc_ui replaced by a recorder; see test_attach_cli.py."""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import defer

import pibridge.attach.rpc_ui
from pibridge.attach.cli import main


def recorded_run_rpc_ui(reactor: Any, base_url: str, **kwargs: Any) -> defer.Deferred[int]:
    sys.stderr.write(
        json.dumps(
            {"base_url": base_url, "session_id": kwargs["session_id"], "token": kwargs["token"]}
        )
        + "\n"
    )
    return defer.succeed(7)


pibridge.attach.rpc_ui.run_rpc_ui = recorded_run_rpc_ui  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
