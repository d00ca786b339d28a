"""A lean HTTP/1.1 transport for `client.rest.Client` (httpx's `transport=` seam).

Why: the scheduler makes one binding and one event request per pod, and through
httpx's default transport (httpcore) each costs the scheduler 1-3 ms of CPU on the
benchmark machine - more than the scheduling cycle itself - because httpcore rescans
every pooled connection (a poll() per idle one) twice per request, and re-tries a
failing `import sniffio` each time when sniffio is not installed. This transport keeps
httpx's client API, retries, errors and streaming (watches) but speaks HTTP/1.1 over
asyncio streams itself. It is not scheduler-specific: it belongs in `client/`, where
every component would gain from it.

Guarantees
- Keep-alive connections per (scheme, host, port), reused last-in first-out; at most
  `max_idle` idle ones are kept. A connection the server has closed while idle is
  noticed (EOF already read) and not reused; a request whose reused connection turns
  out dead before any byte of the answer arrives is re-sent once on a fresh one, but
  only for GET/HEAD (anything else may have been acted on: the caller sees the error).
- Bodies are framed by Content-Length, chunked transfer encoding (watches stream as
  chunks, yielded as they arrive), or the connection's end. A response whose body was
  not read to its end closes its connection instead of returning it to the pool.
- Failures are httpx's exceptions, as httpx's own transport raises them:
  ConnectError / ConnectTimeout (nothing was sent), WriteError, ReadError,
  RemoteProtocolError, ReadTimeout; the timeouts are the request's (httpx's `timeout`
  extension: connect, read).
- TLS with the given `ssl.SSLContext` for https URLs.

Concurrency: one asyncio loop; a connection serves one request at a time.
"""
from __future__ import annotations

import asyncio
import ssl
from typing import AsyncIterator

import httpx

_NO_BODY_STATUS = (204, 304)
_CHUNK = 1 << 16


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


async def _timed(aw, timeout: float | None, exc: type[Exception], what: str):
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except TimeoutError:
        raise exc(f"timed out {what}") from None


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: LeanTransport, key: tuple, conn: _Conn, *, chunked: bool,
                 length: int | None, reusable: bool, read_timeout: float | None):
        self._transport, self._key, self._conn = transport, key, conn
        self._chunked, self._length, self._reusable = chunked, length, reusable
        self._timeout = read_timeout
        self._done = False
        self._closed = False

    async def _read(self, aw):
        try:
            return await _timed(aw, self._timeout, httpx.ReadTimeout, "reading the response")
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("the server closed the connection mid-response") from None
        except (OSError, ssl.SSLError) as e:
            raise httpx.ReadError(str(e) or type(e).__name__) from None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        r = self._conn.reader
        if self._chunked:
            while True:
                line = await self._read(r.readline())
                if not line:
                    raise httpx.RemoteProtocolError("the server closed the connection mid-response")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    while (await self._read(r.readline())) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                data = await self._read(r.readexactly(size + 2))
                yield data[:-2]
        elif self._length is not None:
            left = self._length
            while left > 0:
                data = await self._read(r.read(min(left, _CHUNK)))
                if not data:
                    raise httpx.RemoteProtocolError("the server closed the connection mid-response")
                left -= len(data)
                yield data
        else:
            while data := await self._read(r.read(_CHUNK)):
                yield data
            self._reusable = False
        self._done = True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._done and self._reusable:
            self._transport._release(self._key, self._conn)
        else:
            self._conn.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, ssl_context: ssl.SSLContext | bool | None = None, max_idle: int = 64):
        self._ssl = ssl_context if isinstance(ssl_context, ssl.SSLContext) else None
        self.max_idle = max_idle
        self._idle: dict[tuple, list[_Conn]] = {}
        self._n_idle = 0

    def _release(self, key: tuple, conn: _Conn) -> None:
        if self._n_idle >= self.max_idle or not conn.usable():
            conn.close()
            return
        self._idle.setdefault(key, []).append(conn)
        self._n_idle += 1

    def _take(self, key: tuple) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            self._n_idle -= 1
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple, timeout: float | None) -> _Conn:
        scheme, host, port = key
        ctx = None
        if scheme == "https":
            ctx = self._ssl or ssl.create_default_context()
        try:
            r, w = await _timed(asyncio.open_connection(host, port, ssl=ctx, limit=1 << 20),
                                timeout, httpx.ConnectTimeout, f"connecting to {host}:{port}")
        except (OSError, ssl.SSLError) as e:
            raise httpx.ConnectError(str(e) or type(e).__name__) from None
        return _Conn(r, w)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        body = await request.aread()
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        head += [b"%s: %s\r\n" % (k, v) for k, v in request.headers.raw]
        head.append(b"\r\n")
        payload = b"".join(head) + body
        retry = request.method in ("GET", "HEAD")
        while True:
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, timeouts.get("connect"))
            try:
                conn.writer.write(payload)
                status_line = await _timed(conn.reader.readline(), timeouts.get("read"),
                                           httpx.ReadTimeout, "waiting for the response")
            except httpx.ReadTimeout:
                conn.close()
                raise
            except (OSError, ssl.SSLError) as e:
                conn.close()
                if reused and retry:
                    retry = False
                    continue
                raise (httpx.ReadError if reused else httpx.WriteError)(str(e) or type(e).__name__) from None
            except BaseException:  # cancelled: the connection is in an unknown state
                conn.close()
                raise
            if not status_line:
                conn.close()
                if reused and retry:
                    retry = False
                    continue
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            break
        return await self._response(request, key, conn, status_line, timeouts.get("read"))

    async def _response(self, request: httpx.Request, key: tuple, conn: _Conn, status_line: bytes,
                        read_timeout: float | None) -> httpx.Response:
        try:
            version, code, *_ = status_line.split(None, 2)
            status = int(code)
        except ValueError:
            conn.close()
            raise httpx.RemoteProtocolError(f"bad status line {status_line[:60]!r}") from None
        headers: list[tuple[bytes, bytes]] = []
        chunked, length, keep_alive = False, None, version == b"HTTP/1.1"
        while True:
            try:
                line = await _timed(conn.reader.readline(), read_timeout, httpx.ReadTimeout,
                                    "reading the response headers")
            except (OSError, ssl.SSLError) as e:
                conn.close()
                raise httpx.ReadError(str(e) or type(e).__name__) from None
            except BaseException:  # ReadTimeout, or cancelled
                conn.close()
                raise
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                conn.close()
                raise httpx.RemoteProtocolError("the server closed the connection in the headers")
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            lname = name.lower()
            if lname == b"content-length":
                if not value.isdigit():
                    conn.close()
                    raise httpx.RemoteProtocolError(f"bad content-length {value[:20]!r}")
                length = int(value)
            elif lname == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lname == b"connection":
                v = value.lower()
                keep_alive = b"close" not in v and (keep_alive or b"keep-alive" in v)
        if request.method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
            chunked, length = False, 0
        elif chunked:
            length = None
        stream = _Body(self, key, conn, chunked=chunked, length=length, reusable=keep_alive,
                       read_timeout=read_timeout)
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": version})

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
        self._n_idle = 0
