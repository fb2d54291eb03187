"""Request bodies past a limit are refused before they are stored, not after.

twisted.web buffers a whole body (to a temporary file beyond 100 KB) before
any route sees it; a route's own size check then comes too late to bound
disk and memory. This request counts bytes as they arrive, stops keeping
them past the limit, and answers 413 with the API's JSON error instead of
dispatching.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

#: Largest request body accepted (the chat API's own limit is the same).
MAX_BODY_BYTES = 1024 * 1024


class BoundedRequest(Request):
    max_body = MAX_BODY_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_bytes = 0
        self.body_too_large = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self.body_too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.body_bytes > self.max_body:
            self.body_too_large = True
        if not self.body_too_large:
            super().handleContentChunk(data)

    def process(self) -> None:
        if not self.body_too_large:
            super().process()
            return
        self.setResponseCode(413)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"connection", b"close")
        error = {
            "code": "body_too_large",
            "message": f"request bodies are limited to {self.max_body} bytes",
        }
        self.write(json.dumps({"error": error}).encode())
        self.finish()
