"""`pods/{name}/portforward`: kubectl port-forward and the client libraries' port
forwarding, proxied to the pod's kubelet.

Clients speak one of two WebSocket protocols to the API server:
- `SPDY/3.1+portforward.k8s.io` (kubectl since 1.31, client-go's tunneling dialer; also
  `v2.portforward.k8s.io`, the name its first version asked for): SPDY/3.1 frames
  carried in binary WebSocket messages. For each local connection the client opens an
  error stream and a data stream, both with the headers `streamType`, `port` and
  `requestID`.
- `v4.channel.k8s.io`, `v4.base64.channel.k8s.io` or no subprotocol (the official
  Python client's `kubernetes.stream.portforward`): the ports are named up front
  (`?ports=80,81` or `ports` repeated); each port has a data channel (2i) and an error
  channel (2i+1), each starting with the port as two little-endian bytes.

A client without WebSockets (kubectl's fallback, client-go before 1.31) asks for a plain
`Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io`: the same SPDY
session, straight on the connection (`http_protocol` below).

The kubelet serves only the v4 channel protocol (kubelet/server.py, `/portForward/{ns}/{pod}`, as
the kubelet's websocket.go does). So the SPDY tunnel ends here: each pair of streams
becomes one WebSocket to the kubelet for its one port, and bytes are relayed between
the pair and the WebSocket's channels; a v4 client is relayed to the kubelet frame by
frame, its subprotocol and ports passed on. Kubernetes relays SPDY bytes end to end
instead, to a kubelet that speaks SPDY; ending it here keeps one protocol, and one
implementation of it, between the API server and the kubelets.

What this guarantees
- A connection the pod refuses gets Kubernetes' message on that pair's error stream
  (or error channel), written by the kubelet; the session and the other pairs go on.
- A pair ends when the pod's side ends (its data and error streams are finished, FIN)
  or when the client resets its data stream (the kubelet's WebSocket is closed, which
  closes the connection in the pod). The client's FIN alone ends nothing: the pod's
  answer still comes back, as with Go's io.Copy in both directions.
- The WebSocket to the client closes when the client goes away; every pair ends then.
- A request whose other stream does not come within 30 s is told `(request=ID) timed out
  waiting for streams` on its error stream, as the kubelet's monitorStreamPair says.
- `WebSocketProtocol` (the API server's uvicorn WebSocket protocol) takes kubectl's
  subprotocol, whose "/" the websockets library would refuse in the handshake.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import WebSocketException
from websockets.server import ServerProtocol

from machinery import errors, klog
from machinery.spdy import REFUSED_STREAM, Session, SpdyError, Stream

log = logging.getLogger("minik8s.apiserver.portforward")

SPDY_PROTOCOLS = ("SPDY/3.1+portforward.k8s.io", "v2.portforward.k8s.io")
CHANNEL_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io")
KUBELET_PROTOCOL = "v4.channel.k8s.io"
STREAM_CREATION_TIMEOUT = 30.0  # the kubelet streaming server's StreamCreationTimeout

# dial(ports, subprotocol) -> a connected `websockets` client to the kubelet
Dial = Callable[[list[int], str], AbstractAsyncContextManager[Any]]


def parse_ports(values: list[str]) -> list[int]:
    """`ports` as the Python client sends it (comma-joined, or repeated)."""
    ports = []
    for value in values:
        for p in value.split(","):
            try:
                port = int(p)
            except ValueError:
                raise errors.BadRequest(f'unable to parse "{value}" as a port') from None
            if not 0 < port < 65536:
                raise errors.BadRequest(f'port "{value}" must be > 0 and < 65536')
            ports.append(port)
    return ports


def negotiate(ws: WebSocket) -> tuple[str | None, list[int]]:
    """(subprotocol to accept, ports for a channel client); BadRequest if neither fits."""
    offered = ws.scope.get("subprotocols") or []
    spdy = next((p for p in offered if p in SPDY_PROTOCOLS), None)
    if spdy is not None:
        return spdy, []
    channel = next((p for p in offered if p in CHANNEL_PROTOCOLS), None)
    if offered and channel is None:
        raise errors.BadRequest("unable to upgrade: requested protocol(s) are not supported: "
                                + ", ".join(offered))
    values = ws.query_params.getlist("ports") or ws.query_params.getlist("port")
    if not values:
        raise errors.BadRequest('query parameter "port" is required')
    return channel, parse_ports(values)


async def serve(ws: WebSocket, protocol: str | None, ports: list[int], dial: Dial) -> None:
    """Run an accepted port-forward WebSocket to its end."""
    if protocol in SPDY_PROTOCOLS:
        await serve_spdy(ws, dial)
    else:
        await relay_channels(ws, ports, protocol or KUBELET_PROTOCOL, dial)


class _AnySubprotocol(ServerProtocol):
    def process_subprotocol(self, headers: Any) -> None:
        return None  # the application chooses (the ASGI accept), from uvicorn's own split


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, taking offered subprotocols that are not RFC 7230
    tokens. `SPDY/3.1+portforward.k8s.io` has a "/", which the websockets library refuses
    with a 400 before the application sees the request; Go's gorilla/websocket, which
    kube-apiserver and kubectl use, takes it. uvicorn itself splits the header on commas
    for the ASGI scope and writes the chosen subprotocol into the 101 response."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conn.__class__ = _AnySubprotocol


# -- SPDY/3.1 by HTTP upgrade ---------------------------------------------------------------

SPDY_UPGRADE = "minik8s.spdy_upgrade"  # the scope extension: the connection's upgrade


def http_protocol() -> type:
    """uvicorn's httptools protocol, able to hand a connection over to SPDY/3.1: a request
    with `Connection: Upgrade` and `Upgrade: SPDY/3.1` (kubectl's fallback when the
    WebSocket upgrade fails, and client-go before 1.31) is passed to the application as
    an ordinary request whose scope carries `extensions[SPDY_UPGRADE]`, an async
    callable (headers) -> (read, write, close). Calling it writes the 101 response and
    from then on the connection's bytes go to `read` (b"" at its end), not to the HTTP
    parser. Authentication and authorization have run on the request by then, as on any."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class SpdyUpgradingProtocol(HttpToolsProtocol):
        tunnel: asyncio.Queue[bytes] | None = None

        def _spdy(self) -> bool:
            return (self._get_upgrade() or b"").startswith(b"spdy/")

        def on_headers_complete(self) -> None:
            if self.parser.should_upgrade() and self._spdy():
                self.scope.setdefault("extensions", {})[SPDY_UPGRADE] = self._upgrade  # type: ignore[typeddict-unknown-key]
            super().on_headers_complete()

        def _unsupported_upgrade_warning(self) -> None:
            if not self._spdy():
                super()._unsupported_upgrade_warning()

        def data_received(self, data: bytes) -> None:
            if self.tunnel is not None:
                self.tunnel.put_nowait(data)
                if self.tunnel.qsize() > 64:  # the session is behind: TCP's window holds the client
                    self.flow.pause_reading()
                return
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.tunnel is not None:
                self.tunnel.put_nowait(b"")
            super().connection_lost(exc)

        async def _upgrade(self, headers: list[tuple[str, str]]) -> tuple[Any, Any, Any]:
            # The cycle counts as answered, so uvicorn writes nothing more on it.
            self.cycle.response_started = self.cycle.response_complete = True
            tunnel = self.tunnel = asyncio.Queue()
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\n" + b"".join(
                f"{k}: {v}\r\n".encode("latin-1") for k, v in headers) + b"\r\n")

            async def read() -> bytes:
                data = await tunnel.get()
                if tunnel.qsize() < 16:
                    self.flow.resume_reading()
                if not data:
                    tunnel.put_nowait(b"")
                return data

            async def write(data: bytes) -> None:
                if self.transport.is_closing():
                    raise ConnectionResetError("the connection is closed")
                self.transport.write(data)
                await self.flow.drain()
            return read, write, self.transport.close

    return SpdyUpgradingProtocol


async def serve_upgraded(upgrade: Callable[..., Awaitable[Any]], dial: Dial) -> None:
    """Answer 101 on an upgradable connection and serve SPDY on it to its end."""
    read, write, close = await upgrade([("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                        ("X-Stream-Protocol-Version", "portforward.k8s.io")])
    try:
        await serve_session(Session(read, write, client=False), dial)
    finally:
        close()


# -- SPDY over WebSocket -------------------------------------------------------------------

async def _receive(ws: WebSocket) -> bytes:
    """The next bytes of the tunnel; b"" only at its end. (Go's framer writes a frame in
    pieces, each its own message, and a DATA frame with no payload ends in an empty one.)"""
    while True:
        try:
            msg = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return b""
        if msg["type"] == "websocket.disconnect":
            return b""
        if data := msg.get("bytes") or (msg.get("text") or "").encode():
            return data


async def serve_spdy(ws: WebSocket, dial: Dial) -> None:
    await serve_session(Session(lambda: _receive(ws), ws.send_bytes, client=False), dial)


async def serve_session(session: Session, dial: Dial, *, stream_timeout: float = STREAM_CREATION_TIMEOUT) -> None:
    """Pair the client's streams by requestID and forward each pair, until the session
    ends. A request whose other stream does not come within `stream_timeout` is told so
    on its error stream (or its data stream is reset), as the kubelet's monitorStreamPair."""
    pending: dict[str, dict[str, Stream]] = {}
    pairs: set[asyncio.Task[None]] = set()
    reader = asyncio.create_task(session.run())
    try:
        while (stream := await session.accept()) is not None:
            kind = stream.headers.get("streamtype", "")
            request = stream.headers.get("requestid") or stream.headers.get("port", "")
            if kind not in ("data", "error") or "port" not in stream.headers:
                await stream.reset(REFUSED_STREAM)
                continue
            await stream.reply()
            pair = pending.get(request)
            if pair is None:
                pair = pending[request] = {}
                task = asyncio.create_task(_expire(pending, request, pair, stream_timeout))
                pairs.add(task)
                task.add_done_callback(pairs.discard)
            if kind in pair:  # a second stream of one kind for one request: refuse it
                await stream.reset(REFUSED_STREAM)
                continue
            pair[kind] = stream
            if len(pair) == 2:
                del pending[request]
                task = asyncio.create_task(forward_pair(pair["data"], pair["error"], dial))
                pairs.add(task)
                task.add_done_callback(pairs.discard)
    except (OSError, SpdyError, RuntimeError, WebSocketDisconnect) as exc:
        log.log(klog.V(4), "port-forward session ended: %r", exc)
    finally:
        await session.goaway()
        reader.cancel()
        for task in pairs:
            task.cancel()
        await asyncio.gather(reader, *pairs, return_exceptions=True)


async def _expire(pending: dict[str, dict[str, Stream]], request: str, pair: dict[str, Stream],
                  timeout: float) -> None:
    await asyncio.sleep(timeout)
    if pending.get(request) is not pair:
        return  # complete: being forwarded
    del pending[request]
    with contextlib.suppress(SpdyError, OSError, RuntimeError):
        if "error" in pair:
            await pair["error"].write(f"(request={request}) timed out waiting for streams".encode())
            await pair["error"].close()
        else:
            await pair["data"].reset()


async def forward_pair(data: Stream, error: Stream, dial: Dial) -> None:
    """One local connection of the client: its streams to one kubelet WebSocket."""
    try:
        port = parse_ports([data.headers.get("port", "")])[0]
    except errors.APIError as err:
        await _fail(data, error, err.message)
        return
    try:
        async with dial([port], KUBELET_PROTOCOL) as kubelet:
            async def down() -> None:
                started = [False, False]
                async for frame in kubelet:
                    frame = frame if isinstance(frame, bytes) else frame.encode()
                    if not frame or frame[0] > 1:
                        continue
                    channel, payload = frame[0], frame[1:]
                    if not started[channel]:  # the port, once, as two bytes
                        started[channel], payload = True, payload[2:]
                    if payload:
                        await (data if channel == 0 else error).write(payload)

            async def up() -> None:
                while chunk := await data.read():
                    await kubelet.send(b"\x00" + chunk)
                if not data.was_reset:  # the client's FIN: the pod's answer still comes
                    await asyncio.Event().wait()

            await _first_of(down, up)
    except errors.APIError as err:
        await _fail(data, error, err.message)
        return
    except (OSError, SpdyError, RuntimeError, WebSocketException) as exc:
        log.log(klog.V(4), "port-forward pair ended: %r", exc)
    for s in (data, error):
        with contextlib.suppress(SpdyError, OSError, RuntimeError):
            await s.close()


async def _fail(data: Stream, error: Stream, message: str) -> None:
    with contextlib.suppress(SpdyError, OSError, RuntimeError):
        await error.write(message.encode())
        await error.close()
        await data.close()


async def _first_of(*steps: Callable[[], Awaitable[None]]) -> None:
    """Run the steps together until the first one ends; an error in it is raised."""
    tasks = [asyncio.create_task(step()) for step in steps]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        if not t.cancelled() and (exc := t.exception()) is not None:
            raise exc


# -- v4 channels ----------------------------------------------------------------------------

async def relay_channels(ws: WebSocket, ports: list[int], protocol: str, dial: Dial) -> None:
    """Frames both ways between the client and the kubelet until either side closes."""
    try:
        async with dial(ports, protocol) as kubelet:
            async def down() -> None:
                async for frame in kubelet:
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_text(frame)

            async def up() -> None:
                while (msg := await ws.receive())["type"] != "websocket.disconnect":
                    if msg.get("bytes") is not None:
                        await kubelet.send(msg["bytes"])
                    elif msg.get("text") is not None:
                        await kubelet.send(msg["text"])

            await _first_of(down, up)
    except errors.APIError as err:
        # Where the client reads errors: the first port's error channel.
        with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
            prefix = ports[0].to_bytes(2, "little")
            if protocol.startswith("v4.base64"):
                import base64
                await ws.send_text("1" + base64.b64encode(prefix + err.message.encode()).decode())
            else:
                await ws.send_bytes(b"\x01" + prefix + err.message.encode())
    except (OSError, RuntimeError, WebSocketDisconnect, WebSocketException) as exc:
        log.log(klog.V(4), "port-forward relay ended: %r", exc)
