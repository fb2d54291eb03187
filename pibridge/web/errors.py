"""JSON error bodies: ``{"error": {"code": ..., "message": ...}}``, never a traceback."""

from __future__ import annotations

import json

from twisted.web.iweb import IRequest


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def write_error(request: IRequest, status: int, code: str, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return error_body(code, message)
