"""A fault-injecting HTTP reverse proxy in front of the API server, on loopback.

What it guarantees
- Each `listen(name, user)` opens one HTTPS listener on 127.0.0.1 for one component: it
  serves the session PKI's API server certificate (valid for 127.0.0.1, so a kubeconfig
  that names the proxy verifies it with the cluster's CA) and asks for no client
  certificate; it forwards every request to the real API server over TLS presenting
  `user`'s certificate of the PKI. So a component behind it keeps its own identity (its
  RBAC, the Node authorizer's rules) and requests are counted per component by listener.
- Faults are drawn from one `random.Random(seed)`, per request, at the rates of the
  current `Faults` (changed at any time with `set_faults`):
  429 with `Retry-After` (and a TooManyRequests Status), 503 (a ServiceUnavailable
  Status, with `Retry-After` for a share of them), a delay before forwarding, a unary
  answer cut after its headers (the request did reach the server), and watch streams cut
  after a random 1..N events, and any other error code (`p_error`); `Faults.only` limits
  them to the requests a regex finds in "METHOD path?query". A cut closes the TCP connection mid-response, as a
  crashing server or a dropped link would. `set_faults(f, listener=name)` gives one
  listener faults of its own (one component cut off while the others see the common
  faults); `set_faults(None, listener=name)` returns it to the common ones.
- Every request is recorded (monotonic time, listener, method, path, fault or ""), so
  a test reads request rates and faults by kind from `records()` / `figures()`.

Concurrency: the proxy runs its own asyncio loop on a daemon thread (uvicorn servers, one
per listener, and httpx clients upstream); its public methods are thread-safe and are
called from the test's thread. `close()` stops the thread.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
from typing import Any, NamedTuple

import httpx
import orjson
import uvicorn

log = logging.getLogger("minik8s.tests.faultproxy")

# Hop-by-hop headers (RFC 9110 7.6.1) and what the HTTP layers recompute.
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
        b"proxy-connection", b"host", b"content-length"}


@dataclasses.dataclass(frozen=True)
class Faults:
    """Per-request probabilities (drawn in this order: 429, 503, cut; delay independently)."""
    p429: float = 0.0
    p503: float = 0.0
    p_cut: float = 0.0                 # a unary answer cut after its headers
    p_delay: float = 0.0
    delay: tuple[float, float] = (0.05, 0.5)  # seconds, uniform
    retry_after: int = 1               # the Retry-After of a 429 (and of a 503 that has one)
    p503_retry_after: float = 0.5      # the share of 503s that carry Retry-After
    watch_cut_after: int = 0           # cut each watch after 1..N events; 0: never
    only: str = ""                     # a regex: fault only requests whose "METHOD path?query" it finds
    p_error: float = 0.0               # another error answer (after the above): `error_code`
    error_code: int = 403

    @property
    def any(self) -> bool:
        return bool(self.p429 or self.p503 or self.p_cut or self.p_delay or self.watch_cut_after)


NO_FAULTS = Faults()


class Record(NamedTuple):
    at: float       # time.monotonic() when the request arrived
    listener: str   # the component's listener name
    method: str
    path: str
    fault: str      # "", "429", "503", "cut", "watch-cut", "delay"


class _Cut(Exception):
    """Raised inside the ASGI app after the response started: uvicorn then closes the
    connection without ending the response (what a test means by a cut)."""


def _status(code: int, reason: str, message: str, retry_after: int | None) -> bytes:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": retry_after}
    return orjson.dumps(body)


class FaultProxy:
    def __init__(self, upstream: str, pki_dir: str, *, seed: int = 0, faults: Faults = NO_FAULTS):
        self.upstream = upstream
        self.pki_dir = pki_dir
        self._rng = random.Random(seed)
        self._faults = faults
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._by_listener: dict[str, Faults] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        self._servers: list[tuple[uvicorn.Server, asyncio.Future[None]]] = []
        self._clients: list[httpx.AsyncClient] = []
        self.urls: dict[str, str] = {}

    # -- the test's side --------------------------------------------------------------

    def set_faults(self, faults: Faults | None, *, listener: str | None = None) -> None:
        """The faults of every listener, or of `listener` alone (None: the common ones)."""
        with self._lock:
            if listener is None:
                assert faults is not None
                self._faults = faults
            elif faults is None:
                self._by_listener.pop(listener, None)
            else:
                self._by_listener[listener] = faults

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def listen(self, name: str, user: str) -> str:
        """Open a listener for component `name`, forwarding as PKI user `user`; its URL."""
        return asyncio.run_coroutine_threadsafe(self._listen(name, user), self._loop).result(30)

    def close(self) -> None:
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the proxy's loop --------------------------------------------------------------

    async def _listen(self, name: str, user: str) -> str:
        upstream_tls = ssl.create_default_context(cafile=os.path.join(self.pki_dir, "ca.crt"))
        upstream_tls.load_cert_chain(os.path.join(self.pki_dir, f"{user}.crt"),
                                     os.path.join(self.pki_dir, f"{user}.key"))
        # No read timeout: a watch is quiet for as long as nothing changes.
        client = httpx.AsyncClient(base_url=self.upstream, verify=upstream_tls,
                                   timeout=httpx.Timeout(30.0, read=None),
                                   limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        self._clients.append(client)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(name, client), log_level="critical", access_log=False,
                                ssl_certfile=os.path.join(self.pki_dir, "apiserver.crt"),
                                ssl_keyfile=os.path.join(self.pki_dir, "apiserver.key"),
                                lifespan="off", timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._servers.append((server, asyncio.ensure_future(server.serve(sockets=[sock]))))
        while not server.started:
            await asyncio.sleep(0.01)
        url = f"https://127.0.0.1:{port}"
        self.urls[name] = url
        return url

    async def _close(self) -> None:
        for server, _ in self._servers:
            server.should_exit = True
            server.force_exit = True  # watches are open: do not wait for them
        await asyncio.wait([task for _, task in self._servers], timeout=5)
        for client in self._clients:
            await client.aclose()

    def _draw(self, name: str, method: str, path: str, query: str,
              watch: bool) -> tuple[str, float, int, int]:
        """The fault for one request, its delay, the events before a watch's cut (0: none)
        and the Retry-After of a 429 or 503 (-1: none)."""
        with self._lock:
            f, rng = self._by_listener.get(name, self._faults), self._rng
            if f.only and not re.search(f.only, f"{method} {path}?{query}"):
                f = NO_FAULTS
            u = rng.random()
            fault = ("429" if u < f.p429 else "503" if u < f.p429 + f.p503 else
                     "cut" if u < f.p429 + f.p503 + f.p_cut and not watch else
                     str(f.error_code) if u < f.p429 + f.p503 + f.p_cut + f.p_error else "")
            delay = rng.uniform(*f.delay) if rng.random() < f.p_delay else 0.0
            cut_after = rng.randint(1, f.watch_cut_after) if watch and f.watch_cut_after else 0
            with_retry_after = rng.random() < f.p503_retry_after
            self._records.append(Record(time.monotonic(), name, method, path,
                                        fault or ("delay" if delay else "")))
            retry_after = f.retry_after if fault == "429" or (fault == "503" and with_retry_after) else -1
        return fault, delay, cut_after, retry_after

    def _note(self, name: str, method: str, path: str, fault: str) -> None:
        with self._lock:
            self._records.append(Record(time.monotonic(), name, method, path, fault))

    def _app(self, name: str, client: httpx.AsyncClient) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            method, path = scope["method"], scope["path"]
            query = scope.get("query_string", b"")
            watch = b"watch=true" in query or b"watch=1" in query
            fault, delay, cut_after, retry_after = self._draw(name, method, path, query.decode("latin-1"), watch)
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            if delay:
                await asyncio.sleep(delay)
            if fault not in ("", "cut"):
                headers = [(b"content-type", b"application/json")]
                if retry_after >= 0:
                    headers.append((b"retry-after", str(retry_after).encode()))
                code = int(fault)
                reason = {429: "TooManyRequests", 503: "ServiceUnavailable", 403: "Forbidden",
                          500: "InternalError", 400: "BadRequest"}.get(code, "Unknown")
                await send({"type": "http.response.start", "status": code, "headers": headers})
                await send({"type": "http.response.body",
                            "body": _status(code, reason, f"injected by the fault proxy ({name})",
                                            retry_after if retry_after >= 0 else None)})
                return
            headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
            target = path + ("?" + query.decode("latin-1") if query else "")
            req = client.build_request(method, target, headers=headers, content=body)
            try:
                resp = await client.send(req, stream=True)
            except httpx.TransportError as exc:  # the server is away: say so as a gateway would
                await send({"type": "http.response.start", "status": 502,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body",
                            "body": _status(502, "InternalError", f"upstream: {exc!r}", None)})
                return
            try:
                out = [(k, v) for k, v in resp.headers.raw if k.lower() not in _HOP or k.lower() == b"content-length"]
                await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
                if fault == "cut":
                    raise _Cut(name)
                events = 0
                async for chunk in resp.aiter_raw():
                    if cut_after:
                        events += chunk.count(b"\n")
                        if events >= cut_after:
                            self._note(name, method, path, "watch-cut")
                            raise _Cut(name)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                await resp.aclose()
        return app


def rate_per_second(records: list[Record], *, window: float = 1.0) -> float:
    """The most requests in any `window`-second sliding window, per second."""
    times = sorted(r.at for r in records)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window
