"""HTTP routes: capabilities now; chat sessions and the page join them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
from klein import Klein
from twisted.web.iweb import IRequest

from pibridge import __version__


@attrs.define(eq=False)
class HttpApi:
    config: Mapping[str, Any]
    app: Klein = attrs.field(factory=Klein)

    def __attrs_post_init__(self) -> None:
        self.app.route("/api/capabilities", methods=["GET"])(self.capabilities)

    def capabilities(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "version": __version__,
                "features": {"pi": True, "terminal": True},
                "services": {"pi": {"mode": "backend", "url": self.public_url(request)}},
            }
        ).encode()

    def public_url(self, request: IRequest) -> str:
        configured = self.config.get("public-url")
        if configured:
            return str(configured)
        host = request.getHeader(b"host") or b"127.0.0.1"
        return f"http://{host.decode('ascii', 'replace')}"
