"""Serve the page's static folder and pass everything else to a running pibridge.

Used only while the server itself does not serve the page at ``/``: the page
then still talks to the real chat API, cookie and streaming included.
"""

from __future__ import annotations

import http.client
import mimetypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

STATIC_DIR = Path(__file__).resolve().parents[2] / "pibridge" / "web" / "static"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "content-length",
}


class PageProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: ClassVar[tuple[str, int]] = ("127.0.0.1", 0)

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        query = urlsplit(self.path).query
        if path == "/" and "token=" not in query:
            self.send_file(STATIC_DIR / "index.html")
        elif path.startswith("/static/"):
            target = (STATIC_DIR / path.removeprefix("/static/")).resolve()
            if STATIC_DIR in target.parents and target.is_file():
                self.send_file(target)
            else:
                self.send_error(404)
        else:
            self.forward()

    def do_POST(self) -> None:
        self.forward()

    def send_file(self, path: Path) -> None:
        body = path.read_bytes()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".js":
            kind = "text/javascript"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
        except OSError:
            connection.close()
            self.send_error(502)
            return
        self.close_connection = True
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("connection", "close")
        self.end_headers()
        try:
            while chunk := response.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass
        finally:
            connection.close()


@contextmanager
def page_proxy(upstream_url: str) -> Iterator[str]:
    """A proxy on an ephemeral loopback port; yields its base URL."""
    parts = urlsplit(upstream_url)
    handler = type(
        "BoundPageProxyHandler",
        (PageProxyHandler,),
        {"upstream": (parts.hostname or "127.0.0.1", parts.port or 80)},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def main(argv: list[str]) -> None:
    """``python -m tests.browser.static_proxy UPSTREAM``: print the URL, serve until killed."""
    import signal
    import sys

    with page_proxy(argv[0]) as base:
        print(base, flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    sys.exit(0)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
