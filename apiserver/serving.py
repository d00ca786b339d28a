"""HTTPS for the API server under uvicorn, as kube-apiserver serves it (secure_serving.go).

What this module guarantees
- `server_context(cert, key, client_ca)` is the server's TLS context: TLS 1.2 or newer, the
  serving certificate, and, with a client CA, a request for a client certificate that
  is optional (a client without one is still served, as kube-apiserver's
  `tls.RequestClientCert` in k8s.io/apiserver's secure_serving.go) and verified against
  that CA. A certificate that does not verify ends the handshake with an alert: Python's
  ssl cannot request a certificate without verifying it, where Go's server lets the x509
  authenticator refuse it with a 401 later. Either way nothing is served to it.
- `tls_front(inner, context)` is a uvicorn HTTP protocol class that reads the first
  bytes of a connection before any TLS: a TLS record goes on to the handshake; plain
  HTTP (`GET /`, `POST `, ...) is answered as Go's net/http answers it,
  `HTTP/1.0 400 Bad Request` with "Client sent an HTTP request to an HTTPS server.", and
  closed; anything else is closed. Never a traceback.
- After the handshake, every request and WebSocket of the connection carries the ASGI
  TLS extension (`scope["extensions"]["tls"]`: `client_cert_chain` with the verified
  client leaf in PEM, or empty; `tls_version`; `cipher_suite` None), which
  apiserver/auth/authn.py reads. uvicorn 0.55 does not implement that extension (its
  PRs for it, Kludex/uvicorn#1119, #3132 and #3133, are open), so the front gives the
  connection's uvicorn protocol a per-connection shallow copy of its config whose
  application adds it; WebSocket upgrades inherit that config. Only the leaf is
  available before Python 3.13 (SSLObject.get_verified_chain), which is all the x509
  authenticator needs.

How: asyncio's `SSLProtocol` (what `loop.start_tls` builds) is put on the connection's
transport by hand, then fed the bytes already read. `loop.start_tls` itself cannot be
used: it would lose those bytes, and reading them is the only way to tell HTTP from TLS.
"""
from __future__ import annotations

import asyncio
import copy
import ssl
from asyncio import sslproto
from typing import Any

import anyio
from starlette.responses import StreamingResponse

HTTP_TO_HTTPS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_HTTP_STARTS = (b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO")  # Go's tlsRecordHeaderLooksLikeHTTP
_TLS_HANDSHAKE = 0x16
# Go's http.Server bounds a TLS handshake by its ReadHeaderTimeout, 32 s in kube-apiserver.
HANDSHAKE_TIMEOUT = 32.0
# How long a closing connection waits for the client's close_notify. Go's server does not
# wait at all; asyncio waits 30 s by default, which held every idle keep-alive connection
# (and so the server's graceful shutdown) that long.
SHUTDOWN_TIMEOUT = 2.0


def server_context(cert_file: str, key_file: str, client_ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.load_verify_locations(cafile=client_ca_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def tls_extension(ssl_object: Any) -> dict[str, Any]:
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    version = ssl_object.version() if ssl_object is not None else None
    return {"server_cert": None,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": None, "client_cert_error": None,
            "tls_version": {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}.get(version or ""),
            "cipher_suite": None}


def tls_front(inner: type[asyncio.Protocol], context: ssl.SSLContext) -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class serving `inner` (uvicorn's own) over TLS."""

    class TLSFront(asyncio.Protocol):
        def __init__(self, config: Any, server_state: Any, app_state: Any,
                     _loop: asyncio.AbstractEventLoop | None = None):
            self.config, self.server_state, self.app_state = config, server_state, app_state
            self.loop = _loop or asyncio.get_event_loop()
            self.transport: asyncio.Transport | None = None
            self.head = b""
            self.tls: sslproto.SSLProtocol | None = None
            self.extension: dict[str, Any] | None = None
            self.idle: asyncio.TimerHandle

        def connection_made(self, transport: Any) -> None:
            self.transport = transport  # uvloop's transports are no asyncio.Transport
            # A client that never sends its first bytes is closed as one that never ends
            # its handshake would be.
            self.idle = self.loop.call_later(HANDSHAKE_TIMEOUT, self._give_up)

        def _give_up(self) -> None:
            if self.transport is not None and self.tls is None:
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            assert self.transport is not None
            self.head += data
            if self.head[0] != _TLS_HANDSHAKE:
                if len(self.head) < 5 and self.head[0] in b"GHPO":
                    return  # not yet enough to tell
                if self.head[:5] in _HTTP_STARTS:
                    self.transport.write(HTTP_TO_HTTPS)
                self.transport.close()
                self.head = b"\x00"  # whatever else arrives before the close is dropped
                return
            self._start_tls()

        def _start_tls(self) -> None:
            assert self.transport is not None
            self.idle.cancel()
            config = copy.copy(self.config)
            app = config.loaded_app
            front = self

            async def with_tls(scope: dict, receive: Any, send: Any) -> None:
                if front.extension is None:  # once per connection, at its first request
                    # uvicorn's protocol keeps the TLS transport it was handed once the
                    # handshake was done.
                    front.extension = tls_extension(protocol.transport.get_extra_info("ssl_object"))
                extensions = scope.get("extensions")
                if extensions is None:
                    scope["extensions"] = extensions = {}
                extensions["tls"] = front.extension
                await app(scope, receive, send)

            config.loaded_app = with_tls
            protocol: Any = inner(config=config, server_state=self.server_state,  # type: ignore[call-arg]
                             app_state=self.app_state, _loop=self.loop)
            self.tls = sslproto.SSLProtocol(self.loop, protocol, context, None, server_side=True,
                                            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                                            ssl_shutdown_timeout=SHUTDOWN_TIMEOUT)
            self.transport.set_protocol(self.tls)
            self.tls.connection_made(self.transport)
            data, self.head = self.head, b""
            while data:  # feed what was already read, as the transport would have
                buf = self.tls.get_buffer(len(data))
                n = min(len(buf), len(data))
                buf[:n] = data[:n]
                self.tls.buffer_updated(n)
                data = data[n:]

        def connection_lost(self, exc: Exception | None) -> None:
            self.idle.cancel()
            self.transport = None

    return TLSFront


class WatchResponse(StreamingResponse):
    """A stream that ends as soon as the client goes away, even while it is idle: a watch,
    or a body the aggregation layer relays from an extension server.

    Starlette (for ASGI >= 2.4) only notices a disconnect when a write fails, so an idle
    watch would hold its cache subscription (or a relay its upstream connection) until
    the next event or its timeout.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async with anyio.create_task_group() as tg:
            async def stream() -> None:
                try:
                    await self.stream_response(send)
                except OSError:
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()
        if self.background is not None:
            await self.background()
