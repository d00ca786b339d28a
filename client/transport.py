"""The lean HTTP/1.1 transport under `client.rest.Client` (httpx's `transport=` seam),
its default for every component.

Why: through httpx's default transport (httpcore) a request cost a component 1-3 ms of
CPU on the benchmark machine - more than the scheduler's whole scheduling cycle for the
pod it binds - because httpcore rescans every pooled connection (a poll() per idle one)
twice per request, and re-tries a failing `import sniffio` each time when sniffio is
not installed. This transport keeps httpx's client API, retries, errors and streaming
(watches, `logs -f`) but speaks HTTP/1.1 over asyncio streams itself.

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
- Two ways in: httpx's `handle_async_request` (streaming bodies: watches, `logs -f`),
  and `fetch`, which takes the request as bytes and answers a `Reply` read to its end,
  with the same connections, retry rule and errors. `client.rest.Client` uses `fetch`
  for every non-streaming request: building and reading httpx's Request and Response
  models (URL parsing, header models) cost more CPU than the exchange itself.
- `connections_opened` counts the connections made so far.

Concurrency: one asyncio loop; a connection serves one request at a time.
"""
from __future__ import annotations

import asyncio
import ssl
from http import HTTPStatus
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


class Reply:
    """A response read to its end (`LeanTransport.fetch`): what `client.rest` reads of
    an httpx.Response, without httpx's models. Header names are lower case."""
    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def reason_phrase(self) -> str:
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""


def _parse_head(method: str, head: bytes) -> tuple:
    """-> (version, status, raw headers, chunked, content length or None, keep-alive)."""
    status_line, *lines = head[:-4].split(b"\r\n")
    try:
        version, code, *_ = status_line.split(None, 2)
        status = int(code)
    except ValueError:
        raise httpx.RemoteProtocolError(f"bad status line {status_line[:60]!r}") from None
    headers: list[tuple[bytes, bytes]] = []
    chunked, length, keep_alive = False, None, version == b"HTTP/1.1"
    for line in lines:
        name, _, value = line.partition(b":")
        name, value = name.strip(), value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            if not value.isdigit():
                raise httpx.RemoteProtocolError(f"bad content-length {value[:20]!r}")
            length = int(value)
        elif lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lname == b"connection":
            v = value.lower()
            keep_alive = b"close" not in v and (keep_alive or b"keep-alive" in v)
    if method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
        chunked, length = False, 0
    elif chunked:
        length = None
    return version, status, headers, chunked, length, keep_alive


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
                data = await self._read(r.readexactly(min(left, _CHUNK)))
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
        self.connections_opened = 0

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
            if self._ssl is None:  # once: loading the system's CA bundle is not cheap
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        try:
            r, w = await _timed(asyncio.open_connection(host, port, ssl=ctx, limit=1 << 20),
                                timeout, httpx.ConnectTimeout, f"connecting to {host}:{port}")
        except (OSError, ssl.SSLError) as e:
            raise httpx.ConnectError(str(e) or type(e).__name__) from None
        self.connections_opened += 1
        return _Conn(r, w)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        body = await request.aread()
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        head += [b"%s: %s\r\n" % (k, v) for k, v in request.headers.raw]
        head.append(b"\r\n")
        read_timeout = timeouts.get("read")
        conn, version, status, headers, chunked, length, keep_alive = await self._exchange(
            request.method, key, b"".join(head) + body, timeouts.get("connect"), read_timeout)
        stream = _Body(self, key, conn, chunked=chunked, length=length, reusable=keep_alive,
                       read_timeout=read_timeout)
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": version})

    async def fetch(self, method: str, key: tuple[str, str, int], target: bytes,
                    headers: list[bytes], body: bytes = b"", *, connect_timeout: float | None,
                    read_timeout: float | None) -> Reply:
        """One request without httpx's Request and Response models, read to its end:
        `client.rest.Client`'s path for everything but streams. `key` is (scheme, host,
        port); `headers` are whole `name: value` lines without their line ends (Host and
        Content-Length are added here)."""
        host = f"[{key[1]}]" if ":" in key[1] else key[1]  # an IPv6 address
        lines = [b"%s %s HTTP/1.1" % (method.encode(), target), *headers,
                 b"host: %s:%d" % (host.encode("idna"), key[2])]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: %d" % len(body))
        payload = b"\r\n".join(lines) + b"\r\n\r\n" + body
        conn, _, status, raw, chunked, length, keep_alive = await self._exchange(
            method, key, payload, connect_timeout, read_timeout)
        reader = _Body(self, key, conn, chunked=chunked, length=length, reusable=keep_alive,
                       read_timeout=read_timeout)
        try:
            if length is not None and length <= _CHUNK:
                content = await reader._read(conn.reader.readexactly(length)) if length else b""
                reader._done = True
            else:
                content = b"".join([chunk async for chunk in reader])
        finally:
            await reader.aclose()
        return Reply(status, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}, content)

    async def _exchange(self, method: str, key: tuple, payload: bytes, connect_timeout: float | None,
                        read_timeout: float | None) -> tuple:
        """Send the request and read the response's head: -> (connection, version,
        status, raw headers, chunked, content length or None, keep-alive)."""
        retry = method in ("GET", "HEAD")
        while True:
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, connect_timeout)
            try:
                conn.writer.write(payload)
                head = await _timed(conn.reader.readuntil(b"\r\n\r\n"), read_timeout,
                                    httpx.ReadTimeout, "waiting for the response")
            except asyncio.IncompleteReadError as e:
                conn.close()
                if e.partial:
                    raise httpx.RemoteProtocolError("the server closed the connection in the headers") from None
                if reused and retry:
                    retry = False
                    continue
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from None
            except asyncio.LimitOverrunError:
                conn.close()
                raise httpx.RemoteProtocolError("the response headers are too large") from None
            except (OSError, ssl.SSLError) as e:
                conn.close()
                if reused and retry:
                    retry = False
                    continue
                raise (httpx.ReadError if reused else httpx.WriteError)(str(e) or type(e).__name__) from None
            except BaseException:  # ReadTimeout, or cancelled: the connection is in an unknown state
                conn.close()
                raise
            break
        try:
            return (conn, *_parse_head(method, head))
        except httpx.RemoteProtocolError:
            conn.close()
            raise

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
        self._n_idle = 0
