"""Who may use the HTTP face: the Jupyter way, a token printed at start.

The server prints ``http://HOST:PORT/?token=T`` when it starts. Opening it
trades the token for an HttpOnly cookie and redirects to the bare URL, so the
token leaves the address bar and never reaches page scripts. Programs send
``Authorization: Bearer T`` instead. The cookie is an HMAC under a key kept in
the state directory, so a browser stays signed in across server restarts
while a new token is printed each start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import attrs
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest

from pibridge.secret_files import load_or_create_secret

COOKIE_NAME = b"pibridge_access"
COOKIE_PURPOSE = b"pibridge browser access v1"

UNAUTHORISED_PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>pibridge: sign in</title>
<p>This pibridge needs its access token. Open the URL the server printed when it
started (it ends in <code>?token=...</code>).</p>
"""


def load_or_create_key(path: Path) -> bytes:
    """A 32-byte secret kept 0600 in the state directory."""
    return load_or_create_secret(path, lambda: secrets.token_bytes(32), lambda key: len(key) == 32)


@attrs.frozen
class AccessPolicy:
    """Pure decisions: which credentials a request carries and whether they hold."""

    token: str = attrs.field(repr=False)
    cookie_key: bytes = attrs.field(repr=False)

    @classmethod
    def for_state_dir(cls, state_dir: Path, token: str | None = None) -> AccessPolicy:
        key = load_or_create_key(state_dir / "http" / "cookie.key")
        return cls(token or secrets.token_urlsafe(24), key)

    def cookie_value(self) -> str:
        return hmac.new(self.cookie_key, COOKIE_PURPOSE, hashlib.sha256).hexdigest()

    def token_matches(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def cookie_matches(self, offered: bytes | None) -> bool:
        return offered is not None and hmac.compare_digest(offered, self.cookie_value().encode())

    def bearer_matches(self, header: bytes | None) -> bool:
        if header is None:
            return False
        scheme, _, value = header.decode("latin-1").partition(" ")
        return scheme.lower() in ("bearer", "token") and self.token_matches(value.strip())


@attrs.define(eq=False)
class AccessGuard(Resource):
    """Wraps the whole HTTP face; lets through requests that carry a valid credential."""

    wrapped: IResource
    policy: AccessPolicy
    isLeaf = True

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: IRequest) -> bytes | int:
        offered = request.args.get(b"token", [b""])[0].decode("utf-8", "replace")
        if offered and self.policy.token_matches(offered):
            return self.sign_in(request)
        if self.policy.cookie_matches(request.getCookie(COOKIE_NAME)) or self.policy.bearer_matches(
            request.getHeader(b"authorization")
        ):
            return self.pass_through(request)
        return self.refuse(request)

    def pass_through(self, request: IRequest) -> bytes | int:
        # The guard is a leaf so nothing reaches the API around it; put the
        # path back and let the wrapped tree dispatch as if we were not here.
        request.postpath = request.prepath + request.postpath  # type: ignore[attr-defined]
        request.prepath = []  # type: ignore[attr-defined]
        resource = getChildForRequest(self.wrapped, request)
        result: bytes | int = resource.render(request)
        return result

    def sign_in(self, request: IRequest) -> bytes:
        request.addCookie(  # type: ignore[call-arg]
            COOKIE_NAME,
            self.policy.cookie_value().encode(),
            path=b"/",
            httpOnly=True,
            sameSite="strict",
        )
        query = [(k, v) for k, v in parse_qsl(request.uri.partition(b"?")[2]) if k != b"token"]
        location = request.path + (b"?" + urlencode(query).encode() if query else b"")
        request.setResponseCode(303)
        request.setHeader(b"location", location)
        request.setHeader(b"cache-control", b"no-store")
        return b""

    def refuse(self, request: IRequest) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"cache-control", b"no-store")
        if request.path.startswith(b"/api/"):
            request.setHeader(b"content-type", b"application/json")
            error = {
                "code": "unauthorised",
                "message": "send the access token the server printed "
                "(Authorization: Bearer TOKEN, or open the printed URL)",
            }
            return json.dumps({"error": error}).encode()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return UNAUTHORISED_PAGE
