"""Request logging at high verbosity, as client-go's debugging round tripper (and so
kubectl's `-v`) prints it. `debug_wrappers(transport)` wraps an httpx transport when the
process runs at `-v 6` or more (machinery.klog) and returns it untouched otherwise (or
when a transport it wraps, through `inner`, already logs), so logging costs nothing at
ordinary verbosity.

What each verbosity logs, at V(6) through the `minik8s.client.round_trippers` logger
(the wording is client-go 1.32's):
- 6: `GET https://host:6443/api/v1/pods 200 OK in 5 milliseconds`;
- 7: `GET <url>`, `Request Headers:` with one `    Name: value` line per header (an
  Authorization value shows only its scheme: `Bearer <masked>`), then
  `Response Status: 200 OK in 5 milliseconds`;
- 8: 7, plus `Response Headers:` lines and the bodies as structured records
  (`"Request Body" body="..."`, `"Response Body" body="..."`), each cut to 1024
  characters with ` [truncated N chars]`;
- 9: the request as a curl command, `HTTP Statistics: Duration N ms`, the response
  headers, bodies up to 10240 characters; 10: whole bodies.
A response body is read (to log it) only when it has a Content-Length: streams
(watches, `logs -f`) stay streams. A request that got no answer logs an empty status.

Concurrency: stateless besides the wrapped transport; any number of requests at once.
"""
from __future__ import annotations

import logging
import time

import httpx

from machinery import klog

log = logging.getLogger("minik8s.client.round_trippers")

_AUTH_SCHEMES = ("bearer", "basic", "negotiate")


def debug_wrappers(transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """client-go's DebugWrappers: `transport`, logged as the verbosity asks."""
    v = klog.verbosity()
    if v < 6:
        return transport
    t: object = transport
    while t is not None:  # wrappers that keep the wrapped one as `inner` (kubectl-lite's)
        if isinstance(t, DebuggingTransport):
            return transport  # already logged further in
        t = getattr(t, "inner", None)
    return DebuggingTransport(transport, verbosity=v)


def _canonical(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def mask(name: str, value: str) -> str:
    """An Authorization value without its secret (client-go's maskValue)."""
    if name.lower() != "authorization" or not value:
        return value
    scheme, _, rest = value.partition(" ")
    if scheme.lower() not in _AUTH_SCHEMES:
        return "<masked>"
    return f"{scheme} <masked>" if rest else scheme


def truncate(body: str, verbosity: int) -> str:
    if verbosity >= 10:
        return body
    limit = 10240 if verbosity >= 9 else 1024
    if len(body) <= limit:
        return body
    return body[:limit] + f" [truncated {len(body) - limit} chars]"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class DebuggingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, *, verbosity: int):
        self.inner = inner
        self.verbosity = verbosity

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        v, level = self.verbosity, klog.V(6)
        url = str(request.url)
        headers = [(_canonical(k), mask(k, val)) for k, val in request.headers.items()
                   if k.lower() != "host"]
        if v >= 8:
            content = await request.aread()
            if content:
                klog.info_s(log, 6, "Request Body", body=truncate(_text(content), v))
        if v >= 9:
            flags = "".join(f' -H "{k}: {val}"' for k, val in headers)
            log.log(level, "curl -v -X%s %s '%s'", request.method, flags, url)
        elif v >= 7:
            log.log(level, "%s %s", request.method, url)
            log.log(level, "Request Headers:")
            for k, val in headers:
                log.log(level, "    %s: %s", k, val)
        start = time.monotonic()
        try:
            response = await self.inner.handle_async_request(request)
        except Exception:
            self._log_status(request.method, url, "", int((time.monotonic() - start) * 1000))
            raise
        ms = int((time.monotonic() - start) * 1000)
        status = f"{response.status_code} {response.reason_phrase}".rstrip()
        self._log_status(request.method, url, status, ms)
        if v >= 8:
            log.log(level, "Response Headers:")
            for k, val in response.headers.items():
                log.log(level, "    %s: %s", _canonical(k), val)
            if "content-length" in response.headers:
                # A finite body: read it here (the connection goes back to the pool) and
                # hand on a response that carries it.
                body = await response.aread()
                await response.aclose()
                klog.info_s(log, 6, "Response Body", body=truncate(_text(body), v))
                # (decoded: the Content-Encoding no longer applies)
                plain = [(k, val) for k, val in response.headers.raw if k.lower() != b"content-encoding"]
                response = httpx.Response(response.status_code, headers=plain, content=body,
                                          extensions=response.extensions, request=request)
        return response

    def _log_status(self, method: str, url: str, status: str, ms: int) -> None:
        """The answer's status ("" when none came) and how long it took."""
        level = klog.V(6)
        if self.verbosity == 6 or self.verbosity >= 9:
            log.log(level, "%s %s %s in %d milliseconds", method, url, status, ms)
        if self.verbosity >= 9:
            log.log(level, "HTTP Statistics: Duration %d ms", ms)
        if 7 <= self.verbosity < 9:
            log.log(level, "Response Status: %s in %d milliseconds", status, ms)

    async def aclose(self) -> None:
        await self.inner.aclose()
