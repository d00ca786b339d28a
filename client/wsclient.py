"""A blocking WebSocket client whose socket is used by one thread only (kubectl-lite's
exec and port-forward, and the tests').

websockets' own blocking client (`websockets.sync.client`) reads in a background thread
while the caller's thread writes, both on one `ssl.SSLSocket`, which is not safe to use
from two threads at once (CPython's ssl module, OpenSSL's SSL objects). Over TLS 1.3 the
server's session tickets arrive just after the handshake; under load the reader thread
is inside SSL_read with them when the caller sends the upgrade request, and that request
can be lost: the client then waits for a response the server was never asked for (seen
here with `ss`: the client's bytes sent stopped at the TLS handshake's), and after the
timeout websockets' close waits on its reader for good. This wrapper runs
`websockets.asyncio.client` on an event loop of its own, in one thread, so every read and
write of the socket happens there, one at a time; callers block on its results.

`connect(url, **kwargs)` takes what `websockets.asyncio.client.connect` takes and returns
a `Connection` (a context manager) with `subprotocol`, `response`, `send(data)`,
`recv(timeout=None)` (TimeoutError when it passes; ConnectionClosed once closed) and
`close()`, and iterates over messages until the connection closes (normally: the loop
ends; with an error: ConnectionClosedError), as the sync client's connection does. Any
thread may send while another receives; the socket is touched only by the client's own.
A refused upgrade raises websockets' InvalidStatus (InvalidProxyStatus for a proxy's
refusal), as the sync client does.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from websockets.exceptions import ConnectionClosedOK

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _connect


class Connection:
    def __init__(self, url: str, **kwargs: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ws-client", daemon=True)
        self._thread.start()
        async def open() -> ClientConnection:
            return await _connect(url, **kwargs)
        try:
            self._ws: ClientConnection = self._run(open())
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol

    @property
    def response(self) -> Any:
        return self._ws.response

    def send(self, data: bytes | str) -> None:
        self._run(self._ws.send(data))

    def recv(self, timeout: float | None = None) -> bytes | str:
        """The next message; TimeoutError after `timeout` seconds (the message, if one
        comes later, is not lost: websockets' recv may be cancelled)."""
        message: bytes | str = self._run(asyncio.wait_for(self._ws.recv(), timeout))
        return message

    def __iter__(self) -> Iterator[bytes | str]:
        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._ws.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str, **kwargs: Any) -> Connection:
    return Connection(url, **kwargs)
