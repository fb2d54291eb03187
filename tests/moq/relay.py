"""The real MoQ relay from the ``moq-rs`` package, run beside the Twisted reactor.

``moq`` is asyncio: the relay and any Rust clients run on their own event loop
in a thread; results come back to Twisted as Deferreds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import moq
from twisted.internet.defer import Deferred

T = TypeVar("T")


class RustRelay:
    """A single-node relay (``moq.Server``) on loopback, in a thread of its own."""

    def __init__(self, cache_capacity_bytes: int | None = None) -> None:
        self.cache_capacity_bytes = cache_capacity_bytes
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.fingerprint = ""
        self._server: moq.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._held: set[asyncio.Task[None]] = set()

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        self.call(self._start()).result(timeout)

    async def _start(self) -> None:
        origin = moq.OriginProducer(cache_capacity_bytes=self.cache_capacity_bytes)
        server = moq.Server(
            "127.0.0.1:0", tls_generate=["localhost"], publish=origin, subscribe=origin
        )
        await server.__aenter__()
        self._server = server
        self.port = int(server.local_addr.rsplit(":", 1)[1])
        self.fingerprint = server.cert_fingerprints()[0]
        self._serving = asyncio.ensure_future(self._serve(server))

    async def _serve(self, server: moq.Server) -> None:
        """Accept sessions and hold each until it closes (peers closing is not an error)."""
        async for request in server:
            task = asyncio.ensure_future(self._hold(request))
            self._held.add(task)
            task.add_done_callback(self._held.discard)

    async def _hold(self, request: moq.Request) -> None:
        try:
            session = await request.accept()
            await session.closed()
        except Exception:  # the session's close reason: whatever the peer chose
            pass

    def stop(self, timeout: float = 10.0) -> None:
        try:
            self.call(self._stop()).result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)

    async def _stop(self) -> None:
        if self._serving is not None:
            self._serving.cancel()
        for task in list(self._held):
            task.cancel()
        await asyncio.gather(*self._held, return_exceptions=True)
        if self._server is not None:
            await self._server.__aexit__(None, None, None)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coroutine`` on the relay's loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def deferred(self, reactor: Any, coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
        """Run ``coroutine`` on the relay's loop; its result arrives as a Deferred."""
        d: Deferred[T] = Deferred()
        future = self.call(coroutine)

        def done(finished: concurrent.futures.Future[T]) -> None:
            error = finished.exception()
            if error is not None:
                reactor.callFromThread(d.errback, error)
            else:
                reactor.callFromThread(d.callback, finished.result())

        future.add_done_callback(done)
        return d

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"
