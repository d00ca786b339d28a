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
- `aclose` closes every connection, in use or idle, and waits (up to 1 s) until they
  have closed, TLS shutdowns included.
- TLS with the given `ssl.SSLContext` for https URLs; the name checked against the
  server's certificate (and sent as SNI) is `tls_server_name` when given (kubeconfig's
  `tls-server-name`), else the URL's host.
- Proxies as client-go's transport uses them (see client/proxy.py): `proxy` (a URL:
  kubeconfig's `proxy-url`) for every request, else, with `trust_env`, the one
  HTTP(S)_PROXY / NO_PROXY choose. An http URL goes to the proxy as an absolute-form
  request (with Proxy-Authorization from the proxy URL's user:password); an https URL
  is tunnelled with CONNECT and TLS is spoken end to end with the server through the
  tunnel. An https proxy is itself reached over TLS, checked with the same context.
  A proxy that refuses the CONNECT is an httpx.ProxyError naming its answer.
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
import os
import ssl
from http import HTTPStatus
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Mapping, TypeVar

import httpx

if TYPE_CHECKING:
    from client.kubeconfig import Connection
    from client.proxy import EnvProxy, Proxy

# What Go's ProxyFromEnvironment reads a proxy from (NO_PROXY alone proxies nothing).
_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")

_NO_BODY_STATUS = (204, 304)
T = TypeVar("T")
Key = tuple[str, str, int]  # (scheme, host, port): one pool of connections each
# A response's head: (version, status, raw headers, chunked, content length or None, keep-alive)
Head = tuple[bytes, int, list[tuple[bytes, bytes]], bool, int | None, bool]
_CHUNK = 1 << 16


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


async def _close_when_open(opening: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    try:
        async with asyncio.timeout(1.0):
            _, w = await asyncio.shield(opening)
            w.close()
            await w.wait_closed()
    except BaseException:  # noqa: BLE001 - failed or too slow: nothing more to do for it
        opening.cancel()


async def _closed(conn: _Conn) -> None:
    try:
        await conn.writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass  # a reset or an unclean TLS end: closed all the same


async def _timed(aw: Awaitable[T], timeout: float | None, exc: type[Exception], what: str) -> T:
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


def _parse_head(method: str, head: bytes) -> Head:
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
    def __init__(self, transport: LeanTransport, key: Key, conn: _Conn, *, chunked: bool,
                 length: int | None, reusable: bool, read_timeout: float | None):
        self._transport, self._key, self._conn = transport, key, conn
        self._chunked, self._length, self._reusable = chunked, length, reusable
        self._timeout = read_timeout
        self._done = False
        self._closed = False

    async def _read(self, aw: Awaitable[T]) -> T:
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


class _Route:
    """How requests for one (scheme, host, port) travel: directly, or via `proxy`."""
    __slots__ = ("proxy", "prefix", "headers")

    def __init__(self, key: Key, proxy: Proxy | None):
        self.proxy = proxy
        # Through a proxy, a plain-http request names its whole URL, and carries the
        # proxy's credentials; through a CONNECT tunnel nothing changes.
        self.prefix = b""
        self.headers: list[bytes] = []
        if proxy is not None and key[0] == "http":
            self.prefix = b"http://%s" % _host_header(key)
            if proxy.authorization:
                self.headers = [b"proxy-authorization: " + proxy.authorization.encode("latin-1")]


def _host_header(key: Key) -> bytes:
    host = f"[{key[1]}]" if ":" in key[1] else key[1]  # an IPv6 address
    return b"%s:%d" % (host.encode("idna"), key[2])


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, ssl_context: ssl.SSLContext | bool | None = None, max_idle: int = 64,
                 tls_server_name: str | None = None, proxy: str | None = None,
                 trust_env: bool = True, env: Mapping[str, str] | None = None):
        """`proxy` and the environment's proxies are read here, once: a bad proxy URL
        is a ValueError now rather than a failure on the first request."""
        self._ssl = ssl_context if isinstance(ssl_context, ssl.SSLContext) else None
        self.max_idle = max_idle
        self.tls_server_name = tls_server_name or None
        self._proxy: Proxy | None = None
        self._env: EnvProxy | None = None
        env = os.environ if env is None else env
        # client.proxy is imported only when a proxy can apply: it is ~2 ms of a CLI's
        # start-up (kubectl-lite), and most runs have no proxy at all.
        if proxy or (trust_env and any(env.get(name) for name in _PROXY_VARIABLES)):
            from client.proxy import EnvProxy, parse_proxy_url
            self._proxy = parse_proxy_url(proxy) if proxy else None
            self._env = EnvProxy(env) if trust_env and self._proxy is None else None
        self._routes: dict[Key, _Route] = {}
        self._idle: dict[Key, list[_Conn]] = {}
        self._n_idle = 0
        self.connections_opened = 0
        # Every connection not yet seen closing when the last one was opened: aclose
        # waits for their TLS shutdown (a loop closed under it logs a "Fatal error").
        self._open: set[_Conn] = set()

    @classmethod
    def for_connection(cls, conn: Connection, *, max_idle: int = 64) -> LeanTransport:
        """The transport a kubeconfig connection asks for: its CA and client
        certificate, tls-server-name and proxy-url (else the environment's proxies)."""
        return cls(ssl_context=conn.ssl_context(), max_idle=max_idle,
                   tls_server_name=conn.tls_server_name, proxy=conn.proxy_url)

    def route(self, key: Key) -> _Route:
        r = self._routes.get(key)
        if r is None:
            proxy = self._proxy or (self._env.proxy_for(*key) if self._env is not None else None)
            r = self._routes[key] = _Route(key, proxy)
        return r

    def set_ssl_context(self, ctx: ssl.SSLContext) -> None:
        """Use `ctx` for connections opened from now on (new client credentials); idle
        connections made with the old one are closed."""
        self._ssl = ctx
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
        self._n_idle = 0

    def _release(self, key: Key, conn: _Conn) -> None:
        if self._n_idle >= self.max_idle or not conn.usable():
            conn.close()
            return
        self._idle.setdefault(key, []).append(conn)
        self._n_idle += 1

    def _take(self, key: Key) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            self._n_idle -= 1
            if conn.usable():
                return conn
            conn.close()
        return None

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:  # once: loading the system's CA bundle is not cheap
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, key: Key, timeout: float | None) -> _Conn:
        scheme, host, port = key
        proxy = self.route(key).proxy
        ctx = self._context() if scheme == "https" else None
        sni = (self.tls_server_name or host) if ctx is not None else None
        if proxy is None:
            opening = asyncio.ensure_future(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=sni, limit=1 << 20))
            what = f"connecting to {host}:{port}"
        else:
            opening = asyncio.ensure_future(self._via(proxy, key, ctx, sni))
            what = f"connecting to {host}:{port} through proxy {proxy.url}"
        try:
            r, w = await _timed(asyncio.shield(opening), timeout, httpx.ConnectTimeout, what)
        except asyncio.CancelledError:
            # Cancelled mid-handshake, uvloop's TLS transport is torn down under its
            # protocol, which logs a traceback when the loop ends: let the connection
            # finish opening (a second at most), then close it cleanly.
            await _close_when_open(opening)
            raise
        except (OSError, ssl.SSLError) as e:
            raise httpx.ConnectError(str(e) or type(e).__name__) from None
        except BaseException:
            opening.cancel()
            raise
        self.connections_opened += 1
        conn = _Conn(r, w)
        self._open = {c for c in self._open if not c.writer.is_closing()}
        self._open.add(conn)
        return conn

    async def _via(self, proxy: Proxy, key: Key, ctx: ssl.SSLContext | None,
                   sni: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection through `proxy`: to the proxy itself for plain http, else a
        CONNECT tunnel to the server with TLS started inside it."""
        proxy_ctx = self._context() if proxy.scheme == "https" else None
        r, w = await asyncio.open_connection(
            proxy.host, proxy.port, ssl=proxy_ctx, limit=1 << 20,
            server_hostname=proxy.host if proxy_ctx is not None else None)
        if ctx is None:
            return r, w
        try:
            target = _host_header(key)
            lines = [b"CONNECT %s HTTP/1.1" % target, b"host: " + target]
            if proxy.authorization:
                lines.append(b"proxy-authorization: " + proxy.authorization.encode("latin-1"))
            w.write(b"\r\n".join(lines) + b"\r\n\r\n")
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                raise httpx.ProxyError(f"proxy {proxy.url} closed the connection during CONNECT") from None
            status_line = head.split(b"\r\n", 1)[0]
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[1].startswith(b"2"):
                raise httpx.ProxyError(f"proxy {proxy.url} answered CONNECT {target.decode()} with "
                                       f"{status_line.decode('latin-1')!r}")
            await w.start_tls(ctx, server_hostname=sni)
        except BaseException:
            w.close()
            raise
        return r, w

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        route = self.route(key)
        timeouts = request.extensions.get("timeout") or {}
        body = await request.aread()
        head = [b"%s %s%s HTTP/1.1\r\n" % (request.method.encode(), route.prefix, url.raw_path)]
        head += [b"%s: %s\r\n" % (k, v) for k, v in request.headers.raw]
        head += [h + b"\r\n" for h in route.headers]
        head.append(b"\r\n")
        read_timeout = timeouts.get("read")
        conn, version, status, headers, chunked, length, keep_alive = await self._exchange(
            request.method, key, b"".join(head) + body, timeouts.get("connect"), read_timeout)
        stream = _Body(self, key, conn, chunked=chunked, length=length, reusable=keep_alive,
                       read_timeout=read_timeout)
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": version})

    async def fetch(self, method: str, key: Key, target: bytes,
                    headers: list[bytes], body: bytes = b"", *, connect_timeout: float | None,
                    read_timeout: float | None) -> Reply:
        """One request without httpx's Request and Response models, read to its end:
        `client.rest.Client`'s path for everything but streams. `key` is (scheme, host,
        port); `headers` are whole `name: value` lines without their line ends (Host and
        Content-Length are added here)."""
        route = self.route(key)
        lines = [b"%s %s%s HTTP/1.1" % (method.encode(), route.prefix, target), *headers,
                 b"host: " + _host_header(key), *route.headers]
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

    async def _exchange(self, method: str, key: Key, payload: bytes, connect_timeout: float | None,
                        read_timeout: float | None) -> tuple[_Conn, *Head]:
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
        for idle in self._idle.values():
            for c in idle:
                c.close()
        self._idle.clear()
        self._n_idle = 0
        # Close every connection and let each finish closing (a TLS one sends its
        # close_notify; uvloop logs a traceback if the loop ends first), a second at most.
        conns, self._open = self._open, set()
        for c in conns:
            c.close()
        if conns:
            await asyncio.wait([asyncio.ensure_future(_closed(c)) for c in conns], timeout=1.0)
