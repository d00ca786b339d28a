"""The async REST client: every verb on every kind, typed errors, bounded retries.

Guarantees
- Objects go in and come out as plain dicts (JSON via orjson); nothing is cached.
- A non-2xx answer raises the `machinery.errors` class its `Status` names (NotFound,
  AlreadyExists, Conflict, Invalid with `causes`, Gone, Forbidden, Unauthorized,
  TooLarge, ServerTimeout, ...), built by `from_status`, so `except Conflict` reads the
  same in the server and in a controller.
- Retries are bounded (`max_retries`) with jittered exponential backoff and happen only
  where repeating cannot do harm: a connection that could not be opened (nothing was
  sent) for any verb; a dropped connection or a 5xx carrying Retry-After only for GET;
  429 Too Many Requests (the server did nothing) for any verb, after Retry-After (plus up
  to a fifth at random, and never less than the backoff, so retries neither come back in
  step after an overload burst nor spin on `Retry-After: 0`).
  Everything else is raised at once: a 409 is the caller's business (`retry_on_conflict`).
- One pooled HTTP/1.1 keep-alive connection pool per `Client` (`client.transport`,
  unless another httpx transport is passed); watches (client.watch) hold one
  connection each for their lifetime.
- Credentials from the connection: a bearer token, a client certificate, or an exec
  plugin (client/execcred.py) run before the first request and again once its
  credential expires or the server answers 401 Unauthorized (once per request,
  within max_retries).
  Proxies and tls-server-name are the transport's (client/transport.py).
- `dial()` tells a caller that opens its own connection to the server (kubectl-lite's
  exec WebSocket) how this client reaches it: the proxy (kubeconfig proxy-url, else
  HTTP(S)_PROXY / NO_PROXY), the TLS context with the current client certificate, the
  name to verify (tls-server-name) and the headers (User-Agent, the current bearer
  token; the exec plugin is run first if its credential is missing or expired).
- The User-Agent is client-go's by default (client/useragent.py).
- Every wait (retry backoff) is on the injected `clock` (client/clock.py).
- `namespace=None` means the connection's default namespace (from the kubeconfig
  context); `namespace=ALL` ("") means every namespace for list, watch and
  delete_collection. Cluster-scoped kinds ignore it.
- Kinds are resolved from a local table (`Resources`) built from `machinery.kinds`, so
  no discovery round trip is needed at start; `discover()` adds whatever the server lists.

Metrics: client-go's `rest_client_requests_total` (each attempt) and
`rest_client_request_duration_seconds` (each request, retries included), in
client.metrics. At `-v 6` and more every request is logged as kubectl logs it
(client.round_trippers); the lean fast path is then not taken.

Concurrency: a `Client` is shared by any number of tasks on one event loop. `SyncClient`
wraps it for synchronous callers (the CLI) by running a private event loop.
"""
from __future__ import annotations

import asyncio
import weakref
import threading
import bisect
import contextlib
import dataclasses
import inspect
import logging
import os
import random
import ssl
import sys
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterator, NamedTuple, TypeVar
from urllib.parse import quote, urlencode

import httpx
import orjson

from client.clock import Clock, RealClock
from client.kubeconfig import Connection
from client.transport import LeanTransport, Reply
from machinery.errors import APIError, Conflict, NotFound, from_status
from machinery.kinds import KINDS, Kind

if TYPE_CHECKING:
    from client.execcred import ExecCredential, ExecPlugin
    from client.proxy import Proxy

log = logging.getLogger("minik8s.client")
TOKEN_FILE_PERIOD = 60.0  # client-go: a token file is read again after a minute
# client-go's CertCallbackRefreshDuration: client certificate files are looked at again
# every five minutes, and used anew when they changed (a kubelet's rotated certificate).
CERT_FILE_PERIOD = 300.0


# -- request counts (client-go's restclient metrics) ----------------------------------------
# Counted here, in plain per-client dicts, and handed to prometheus_client by
# client.metrics when a component's /metrics is scraped: a program that serves no
# metrics (kubectl-lite) never imports prometheus_client (~8 ms of its start-up).

METRIC_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

# Counted in plain dicts per client and handed to prometheus_client when scraped: a
# Counter.inc plus a Histogram.observe cost ~1.7 us a request on the benchmark machine
# (their per-value locks and checks), ~5% of the lean transport's ~33 us; `result` plus
# `observe` cost ~0.4 us. A client is used from one event loop, so its dicts need no lock; a client that
# is garbage-collected hands its counts to `RETIRED_METRICS`, so no counter ever goes down.
METRICS_LOCK = threading.RLock()  # re-entered if a collection retires a client mid-merge
LIVE_METRICS: weakref.WeakSet[RestClientMetrics] = weakref.WeakSet()
MetricCounts = dict[tuple[str, ...], int]
MetricLatency = dict[tuple[str, ...], list[float]]
RETIRED_METRICS: tuple[MetricCounts, MetricLatency] = ({}, {})  # as RestClientMetrics' counts and latency


def merge_metrics(into: tuple[MetricCounts, MetricLatency], counts: MetricCounts, latency: MetricLatency) -> None:
    for k, n in list(counts.items()):
        into[0][k] = into[0].get(k, 0) + n
    for k, h in list(latency.items()):
        acc = into[1].setdefault(k, [0.0] * len(h))
        for i, v in enumerate(list(h)):
            acc[i] += v


def _retire_metrics(counts: MetricCounts, latency: MetricLatency) -> None:
    with METRICS_LOCK:
        merge_metrics(RETIRED_METRICS, counts, latency)


class RestClientMetrics:
    """One client's `rest_client_requests_total` and `rest_client_request_duration_seconds`
    (host = the server's host:port). Used from the client's event loop only."""

    __slots__ = ("host", "counts", "latency", "__weakref__")

    def __init__(self, host: str):
        self.host = host
        self.counts: MetricCounts = {}     # (code, method, host) -> requests
        self.latency: MetricLatency = {}  # (verb, host) -> bucket counts, +Inf, sum
        with METRICS_LOCK:
            LIVE_METRICS.add(self)
        weakref.finalize(self, _retire_metrics, self.counts, self.latency)

    def result(self, code: int | str, method: str) -> None:
        key = (str(code), method, self.host)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1

    def observe(self, verb: str, seconds: float) -> None:
        h = self.latency.get((verb, self.host))
        if h is None:
            h = self.latency[(verb, self.host)] = [0.0] * (len(METRIC_BUCKETS) + 2)
        h[bisect.bisect_left(METRIC_BUCKETS, seconds)] += 1  # the first bucket with seconds <= le
        h[-1] += seconds


def _verbosity() -> int:
    """klog's -v, if a program set one: machinery.klog not imported means nobody did
    (kubectl-lite imports it only with -v, so its start-up does not pay for it)."""
    klog = sys.modules.get("machinery.klog")
    return int(klog.verbosity()) if klog is not None else 0

_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # what a URL path may hold unescaped (RFC 3986)
ALL = ""  # namespace=ALL: every namespace (list, watch, delete_collection)
T = TypeVar("T")

PATCH_TYPES = {"merge": "application/merge-patch+json", "json": "application/json-patch+json",
               "strategic": "application/strategic-merge-patch+json",
               "apply": "application/apply-patch+yaml"}


# A kind as the client knows it: the shared table's row (group, version, kind, plural,
# namespaced, short names, subresources, categories) and its REST paths.
Resource = Kind

# What minik8s serves (machinery/kinds.py, the table the API server serves from), so
# clients start without discovery and without importing the server.
RESOURCES: tuple[Resource, ...] = KINDS


class Resources:
    """Name -> Resource: plural, singular, short name, Kind, or any of them qualified
    with the group ('deployments.apps'); (apiVersion, Kind) for objects."""

    def __init__(self, resources: tuple[Resource, ...] = RESOURCES):
        self._by_name: dict[str, Resource] = {}
        self._by_kind: dict[tuple[str, str], Resource] = {}
        self._by_version: dict[tuple[str, str], Resource] = {}
        self._verbs: dict[tuple[str, str], tuple[str, ...]] = {}
        for r in resources:
            self.add(r)

    def add(self, r: Resource, *, preferred: bool = False, verbs: tuple[str, ...] | None = None) -> None:
        """Add or update a kind. A kind served at several versions maps to the version
        that discovery says its group prefers (`preferred`), else to the first added.
        `verbs`: what discovery says the kind takes (unknown for the built-in table)."""
        if verbs is not None:
            self._verbs[(r.group, r.plural)] = verbs
        have = self._by_kind.get((r.group, r.kind))
        current = have is None or have.version == r.version or preferred
        if current:
            self._by_kind[(r.group, r.kind)] = r
        self._by_version[(r.api_version, r.kind)] = r
        for n in (r.plural, r.kind.lower(), *r.short_names):
            for name in (n, f"{n}.{r.group}" if r.group else n):
                # the first (core) kind keeps an ambiguous name; a kind's own names follow it
                was = self._by_name.get(name)
                if was is None or (current and (was.group, was.kind) == (r.group, r.kind)):
                    self._by_name[name] = r

    def verbs(self, r: Resource) -> tuple[str, ...] | None:
        """The verbs discovery listed for `r`; None when it came from the built-in table."""
        return self._verbs.get((r.group, r.plural))

    def get(self, name: str | Resource) -> Resource:
        if isinstance(name, Resource):
            return name
        r = self._by_name.get(name) or self._by_name.get(name.lower())
        if r is None:
            raise NotFound(f'the server doesn\'t have a resource type "{name}"')
        return r

    def for_object(self, obj: dict[str, Any]) -> Resource:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        r = self._by_version.get((api_version, kind)) or self._by_kind.get((api_version.rpartition("/")[0], kind))
        if r is None:
            raise NotFound(f'no matches for kind "{kind}" in version "{api_version}"')
        return r

    def __iter__(self) -> Iterator[Resource]:
        return iter(self._by_kind.values())

    def in_category(self, category: str) -> list[Resource]:
        """The kinds that name `category` (`all`, or one a CRD declares), in the order added."""
        return [r for r in self._by_kind.values() if category in r.categories]


class Dial(NamedTuple):  # not a frozen dataclass: that costs ~0.6 ms of a CLI's start-up
    """`Client.dial()`: what a connection of one's own to the server needs."""
    server: str                          # the server's URL (http or https)
    proxy: Proxy | None                  # go through it (CONNECT for a tunnel), or direct
    ssl_context: ssl.SSLContext | None   # for https: the cluster's CA, the client certificate
    server_hostname: str | None          # for https: the name to verify (tls-server-name)
    headers: dict[str, str]              # User-Agent, Authorization


def _stat(*paths: str | None) -> tuple[tuple[int, int, int], ...] | None:
    """What tells that files changed (inode, mtime, size, following symlinks); None
    without files or when one cannot be read."""
    if not all(paths):
        return None
    try:
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in (os.stat(p) for p in paths if p))
    except OSError:
        return None


def _lean_under(transport: object) -> LeanTransport | None:
    t: object = transport
    while t is not None:
        if isinstance(t, LeanTransport):
            return t
        t = getattr(t, "inner", None)
    return None


class Client:
    def __init__(self, connection: Connection | str, *, resources: Resources | None = None,
                 timeout: float = 30.0, max_retries: int = 5, backoff: float = 0.05,
                 max_backoff: float = 2.0, max_keepalive: int = 32,
                 transport: httpx.AsyncBaseTransport | None = None,
                 user_agent: str | None = None, clock: Clock | None = None):
        self.connection = Connection(connection) if isinstance(connection, str) else connection
        self.resources = resources or Resources()
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.clock = clock or RealClock()
        if not user_agent:
            from client.useragent import default_user_agent  # kubectl-lite names itself
            user_agent = default_user_agent()
        headers = {"user-agent": user_agent, "accept": "application/json"}
        if self.connection.token:
            headers["authorization"] = f"Bearer {self.connection.token}"
        verify = self.connection.ssl_context()
        if transport is None:
            transport = LeanTransport.for_connection(self.connection, max_idle=max_keepalive)
        self._exec: ExecPlugin | None = None
        if self.connection.exec:
            from client.execcred import ExecPlugin  # only then: ~2 ms of a CLI's start-up
            self._exec = ExecPlugin(self.connection.exec, cluster=self.connection.exec_cluster,
                                    clock=self.clock)
        self._credential: ExecCredential | None = None  # the exec credential in use
        # A token from a file (a pod's projected ServiceAccount token rotates) is read
        # again once a minute, as client-go's cached file token source does.
        self._token_file = self.connection.token_file if self.connection.token else None
        self._token_read = self.clock.monotonic()
        self._cert_read = self._token_read
        self._cert_seen = _stat(self.connection.cert_file, self.connection.key_file)
        self._header_values = headers
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else None  # current client cert
        # An exec plugin's client certificate goes to the lean transport, also when it
        # is wrapped (kubectl-lite's Accept and -v wrappers keep it as `inner`).
        self._lean_inner = _lean_under(transport)
        if _verbosity() >= 6:  # client-go's DebugWrappers: every request logged
            from client.round_trippers import debug_wrappers
            transport = debug_wrappers(transport)
        self._http = httpx.AsyncClient(
            base_url=self.connection.server, headers=headers, timeout=timeout, transport=transport,
            verify=verify, http1=True, http2=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=max_keepalive))
        # With the lean transport, requests that are not streams skip httpx's models
        # (see client/transport.py); streams, and any other transport, go through httpx.
        self._lean = transport if isinstance(transport, LeanTransport) else None
        self._metrics = RestClientMetrics(self._http.base_url.netloc.decode("ascii"))
        if self._lean is not None:
            url = self._http.base_url
            self._key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
            self._prefix = url.raw_path.rstrip(b"/")
            self._timeout = timeout
            self._headers = [b"%s: %s" % (k.encode(), v.encode()) for k, v in headers.items()]

    def _reread_cert(self) -> None:
        """Use the client certificate files anew if they changed (checked every
        CERT_FILE_PERIOD): what shares a kubelet's kubelet.conf follows its rotation."""
        now = self.clock.monotonic()
        if self._cert_seen is None or self._lean_inner is None or now - self._cert_read < CERT_FILE_PERIOD:
            return
        self._cert_read = now
        conn = self.connection
        if _stat(conn.cert_file, conn.key_file) == self._cert_seen:
            return
        try:
            self.use_client_certificate(conn.cert_file or "", conn.key_file or "")
        except (OSError, ValueError) as e:  # half-written, say: the old one is still good
            log.warning("rereading client certificate %s: %s", conn.cert_file, e)

    def _reread_token(self) -> None:
        self._reread_cert()
        now = self.clock.monotonic()
        if self._token_file is None or now - self._token_read < TOKEN_FILE_PERIOD:
            return
        self._token_read = now
        try:
            with open(self._token_file) as f:
                token = f.read().strip()
        except OSError as e:  # the last token is still the best there is
            log.warning("rereading token file %s: %s", self._token_file, e)
            return
        if not token or self._header_values.get("authorization") == f"Bearer {token}":
            return
        self._header_values["authorization"] = f"Bearer {token}"
        self._http.headers = self._header_values
        if self._lean is not None:
            self._headers = [b"%s: %s" % (k.encode(), v.encode()) for k, v in self._header_values.items()]

    async def _authenticate(self) -> ExecCredential:
        """Make the exec plugin's current credential the one requests carry."""
        assert self._exec is not None
        cred = await self._exec.credential()
        if cred is self._credential:
            return cred
        if cred.token:
            self._header_values["authorization"] = f"Bearer {cred.token}"
        else:
            self._header_values.pop("authorization", None)
        self._http.headers = self._header_values
        if cred.client_certificate_data and self.connection.server.startswith("https://"):
            if self._lean_inner is None:
                from client.execcred import ExecPluginError
                raise ExecPluginError("a client certificate from an exec plugin needs the default transport")
            ctx = dataclasses.replace(self.connection, cert_data=cred.client_certificate_data,
                                      key_data=cred.client_key_data, cert_file=None,
                                      key_file=None).ssl_context()
            assert isinstance(ctx, ssl.SSLContext)
            self._lean_inner.set_ssl_context(ctx)
            self._ssl = ctx
        if self._lean is not None:
            self._headers = [b"%s: %s" % (k.encode(), v.encode()) for k, v in self._header_values.items()]
        self._credential = cred
        return cred

    def use_client_certificate(self, cert_file: str, key_file: str) -> None:
        """Present the client certificate and key of these files (read now) on every
        connection opened from now on; idle connections made with the old one are
        closed. How a kubelet whose certificate rotated goes on without a restart
        (client-go's dynamic client certificate). ValueError or OSError if the files do
        not hold a certificate and its key; the old one stays in use then."""
        conn = dataclasses.replace(self.connection, cert_file=cert_file, key_file=key_file,
                                   cert_data=None, key_data=None)
        ctx = conn.ssl_context()
        if not isinstance(ctx, ssl.SSLContext):
            raise ValueError("a client certificate needs an https:// server")
        if self._lean_inner is None:
            raise ValueError("changing the client certificate needs the default transport")
        self._lean_inner.set_ssl_context(ctx)
        self._ssl = ctx
        self.connection = conn
        self._cert_seen = _stat(cert_file, key_file)

    async def dial(self) -> Dial:
        """How to reach the server as this client's requests do, for a connection the
        caller opens itself (a WebSocket upgrade), with the current credential."""
        if self._exec is not None:
            await self._authenticate()
        self._reread_token()
        from client.proxy import choose_proxy
        url = self._http.base_url
        secure = url.scheme == "https"
        return Dial(server=self.connection.server,
                    proxy=choose_proxy(self.connection.proxy_url, url.scheme, url.host,
                                       url.port or (443 if secure else 80)),
                    ssl_context=self._ssl if secure else None,
                    server_hostname=(self.connection.tls_server_name or None) if secure else None,
                    headers={k: v for k, v in self._header_values.items()
                             if k in ("user-agent", "authorization")})

    @property
    def namespace(self) -> str:
        """The default namespace (from the kubeconfig context)."""
        return self.connection.namespace

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the one place requests are made -------------------------------------------

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      raw: bool = False) -> Any:
        """Send one request (retrying where safe) and decode the answer: JSON as Python
        values, or text when `raw`. A non-2xx answer raises its typed APIError."""
        content = None if body is None else (
            body if isinstance(body, (bytes, str)) else orjson.dumps(body))
        headers = {"content-type": content_type} if content is not None else None
        params = {k: v for k, v in (params or {}).items() if v is not None}
        reauthenticated = False
        started = time.perf_counter()  # rest_client_request_duration_seconds: retries included
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            cred = await self._authenticate() if self._exec is not None else None
            self._reread_token()
            resp: httpx.Response | Reply
            try:
                if self._lean is not None:
                    resp = await self._fetch(method, path, params, content, content_type)
                else:
                    resp = await self._http.request(method, path, params=params, content=content,
                                                    headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self._metrics.result("<error>", method)
                if last:
                    self._metrics.observe(method, time.perf_counter() - started)
                    raise  # nothing reached the server, so any verb may be repeated
                log.debug("%s %s: %s; retrying", method, path, exc)
                await self.clock.sleep(self._delay(attempt))
                continue
            except httpx.TransportError as exc:
                self._metrics.result("<error>", method)
                if last or method != "GET":
                    self._metrics.observe(method, time.perf_counter() - started)
                    raise  # the server may have acted on it
                log.debug("%s %s: %s; retrying", method, path, exc)
                await self.clock.sleep(self._delay(attempt))
                continue
            self._metrics.result(resp.status_code, method)
            if resp.is_success:
                self._metrics.observe(method, time.perf_counter() - started)
                if raw:
                    return resp.text
                return orjson.loads(resp.content) if resp.content else None
            if resp.status_code == 401 and self._exec is not None and not reauthenticated and not last:
                # The plugin's credential may have been revoked or expired early: run
                # it again, once (client-go's exec authenticator does the same).
                reauthenticated = True
                self._exec.invalidate(cred)
                continue
            retry_after = _retry_after(resp)
            if not last and retry_after is not None and (
                    resp.status_code == 429 or (resp.status_code >= 500 and method == "GET")):
                await self.clock.sleep(self._retry_after_delay(retry_after, attempt))
                continue
            self._metrics.observe(method, time.perf_counter() - started)
            raise error_from_response(resp)
        raise AssertionError("unreachable")

    async def _object(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        """`request` for the verbs, whose answers are JSON objects."""
        answer: dict[str, Any] = await self.request(method, path, params=params, body=body,
                                                    content_type=content_type)
        return answer

    def _fetch(self, method: str, path: str, params: dict[str, Any], content: bytes | str | None,
               content_type: str) -> Awaitable[Reply]:
        target = self._prefix + quote(path, safe=_PATH_SAFE).encode()
        if params:
            target += b"?" + urlencode({k: _query_value(v) for k, v in params.items()}).encode()
        assert self._lean is not None
        headers = self._headers
        if content is not None:
            headers = [*headers, b"content-type: " + content_type.encode()]
            if isinstance(content, str):
                content = content.encode()
        return self._lean.fetch(method, self._key, target, headers, content or b"",
                                connect_timeout=self._timeout, read_timeout=self._timeout)

    def _delay(self, attempt: int) -> float:
        return min(self.backoff * 2.0 ** attempt, self.max_backoff) * random.uniform(0.5, 1.0)

    def _retry_after_delay(self, retry_after: int, attempt: int) -> float:
        """The wait before repeating a request answered with Retry-After: the server's
        figure (capped), stretched by up to a fifth at random so that clients turned
        away by one overload burst do not all come back at the same instant, and never
        shorter than the connection-error backoff, so `Retry-After: 0` does not make
        the retries back to back."""
        wait = min(retry_after, self.max_backoff * 5) * random.uniform(1.0, 1.2)
        return max(wait, self._delay(attempt))

    @contextlib.asynccontextmanager
    async def stream(self, path: str, *, params: dict[str, Any] | None = None,
                     read_timeout: float | None = None) -> AsyncIterator[httpx.Response]:
        """A streaming GET (for watches): no retries; a non-2xx answer raises."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        if self._exec is not None:
            await self._authenticate()
        self._reread_token()
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        async with self._http.stream("GET", path, params=params, timeout=timeout) as resp:
            self._metrics.result(resp.status_code, "GET")
            if not resp.is_success:
                await resp.aread()
                raise error_from_response(resp)
            yield resp

    def namespace_for(self, r: Resource, namespace: str | None, obj: dict[str, Any] | None = None) -> str:
        if not r.namespaced:
            return ""
        if namespace is None and obj is not None:
            namespace = (obj.get("metadata") or {}).get("namespace")
        return self.namespace if namespace is None else namespace

    # -- verbs ----------------------------------------------------------------------

    async def get(self, resource: str | Resource, name: str, *,
                  namespace: str | None = None) -> dict[str, Any]:
        r = self.resources.get(resource)
        return await self._object("GET", r.path(namespace=self.namespace_for(r, namespace), name=name))

    async def list(self, resource: str | Resource, *, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None,
                   limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None) -> dict[str, Any]:
        """One List (a page, if `limit` is given: follow `metadata.continue`)."""
        r = self.resources.get(resource)
        return await self._object("GET", r.path(namespace=self.namespace_for(r, namespace)), params={
            "labelSelector": label_selector or None, "fieldSelector": field_selector or None,
            "limit": limit, "continue": continue_, "resourceVersion": resource_version})

    async def create(self, obj: dict[str, Any], *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> dict[str, Any]:
        r = self.resources.for_object(obj)
        return await self._object("POST", r.path(namespace=self.namespace_for(r, namespace, obj)), body=obj,
                                  params=_write_params(dry_run, field_validation))

    async def update(self, obj: dict[str, Any], *, namespace: str | None = None,
                     subresource: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> dict[str, Any]:
        """PUT. With `metadata.resourceVersion` set it is a compare-and-swap (409 if stale)."""
        r = self.resources.for_object(obj)
        name = obj["metadata"]["name"]
        return await self._object(
            "PUT", r.path(namespace=self.namespace_for(r, namespace, obj), name=name, subresource=subresource),
            body=obj, params=_write_params(dry_run, field_validation))

    async def update_status(self, obj: dict[str, Any], *, namespace: str | None = None,
                            dry_run: bool = False, field_validation: str | None = None) -> dict[str, Any]:
        return await self.update(obj, subresource="status", namespace=namespace, dry_run=dry_run,
                                 field_validation=field_validation)

    async def patch(self, resource: str | Resource, name: str, patch: Any, *,
                    namespace: str | None = None, patch_type: str = "merge",
                    subresource: str | None = None, field_manager: str | None = None,
                    force: bool | None = None, dry_run: bool = False) -> dict[str, Any]:
        """patch_type: merge (RFC 7386), json (RFC 6902), strategic, or apply."""
        r = self.resources.get(resource)
        params = _write_params(dry_run, None)
        params.update(fieldManager=field_manager, force="true" if force else None)
        return await self._object(
            "PATCH", r.path(namespace=self.namespace_for(r, namespace), name=name, subresource=subresource),
            body=patch, content_type=PATCH_TYPES[patch_type], params=params)

    async def apply(self, obj: dict[str, Any], *, field_manager: str, force: bool = False,
                    namespace: str | None = None) -> dict[str, Any]:
        """Server-side apply (PATCH application/apply-patch+yaml)."""
        r = self.resources.for_object(obj)
        return await self.patch(r, obj["metadata"]["name"], obj, namespace=self.namespace_for(r, namespace, obj),
                                patch_type="apply", field_manager=field_manager, force=force)

    async def delete(self, resource: str | Resource, name: str, *, namespace: str | None = None,
                     grace_period_seconds: int | None = None,
                     propagation_policy: str | None = None,
                     preconditions: dict[str, Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Answers the object as the server last had it (still present while a grace
        period or finalizers hold it)."""
        r = self.resources.get(resource)
        return await self._object(
            "DELETE", r.path(namespace=self.namespace_for(r, namespace), name=name),
            body=_delete_options(grace_period_seconds, propagation_policy, preconditions),
            params=_write_params(dry_run, None))

    async def delete_collection(self, resource: str | Resource, *, namespace: str | None = None,
                                label_selector: str | None = None,
                                field_selector: str | None = None,
                                grace_period_seconds: int | None = None,
                                propagation_policy: str | None = None,
                                dry_run: bool = False) -> dict[str, Any]:
        r = self.resources.get(resource)
        params = _write_params(dry_run, None)
        params.update(labelSelector=label_selector or None, fieldSelector=field_selector or None)
        return await self._object(
            "DELETE", r.path(namespace=self.namespace_for(r, namespace)), params=params,
            body=_delete_options(grace_period_seconds, propagation_policy, None))

    # -- subresources ---------------------------------------------------------------

    async def get_scale(self, resource: str | Resource, name: str, *,
                        namespace: str | None = None) -> dict[str, Any]:
        r = self.resources.get(resource)
        return await self._object("GET", r.path(namespace=self.namespace_for(r, namespace), name=name,
                                               subresource="scale"))

    async def scale(self, resource: str | Resource, name: str, replicas: int, *,
                    namespace: str | None = None) -> dict[str, Any]:
        return await self.patch(resource, name, {"spec": {"replicas": replicas}},
                                namespace=namespace, subresource="scale")

    async def bind(self, pod: str, node: str, *, namespace: str | None = None,
                   uid: str | None = None) -> None:
        """The scheduler's write: POST pods/<pod>/binding. With `uid`, only that
        incarnation of the pod is bound."""
        r = self.resources.get("pods")
        meta: dict[str, Any] = {"name": pod}
        if uid:
            meta["uid"] = uid
        await self.request("POST", r.path(namespace=self.namespace_for(r, namespace), name=pod,
                                          subresource="binding"),
                           body={"apiVersion": "v1", "kind": "Binding", "metadata": meta,
                                 "target": {"apiVersion": "v1", "kind": "Node", "name": node}})

    async def log(self, pod: str, *, namespace: str | None = None, container: str | None = None,
                  tail_lines: int | None = None, previous: bool = False) -> str:
        r = self.resources.get("pods")
        text: str = await self.request(
            "GET", r.path(namespace=self.namespace_for(r, namespace), name=pod, subresource="log"),
            params={"container": container, "tailLines": tail_lines,
                    "previous": "true" if previous else None}, raw=True)
        return text

    # -- discovery ------------------------------------------------------------------

    async def discover(self) -> Resources:
        """Add every resource the server's discovery lists to `self.resources`."""
        docs = [(await self.request("GET", "/api/v1"), True)]
        for group in (await self.request("GET", "/apis")).get("groups", []):
            preferred = (group.get("preferredVersion") or {}).get("groupVersion")
            for v in group.get("versions", []):
                docs.append((await self.request("GET", f"/apis/{v['groupVersion']}"),
                             v["groupVersion"] == preferred))
        # A kind served at several versions is its group's preferred one (as client-go's
        # RESTMapper picks it), whatever order the versions come in; every version is
        # still known by its own apiVersion (Resources.add).
        docs.sort(key=lambda d: not d[1])
        for doc, preferred in docs:
            group, _, version = doc["groupVersion"].rpartition("/")
            subs: dict[str, list[str]] = {}
            for e in doc["resources"]:
                if "/" in e["name"]:
                    plural, sub = e["name"].split("/", 1)
                    subs.setdefault(plural, []).append(sub)
            for e in doc["resources"]:
                if "/" not in e["name"]:
                    self.resources.add(Resource(group, version, e["kind"], e["name"], e["namespaced"],
                                                tuple(e.get("shortNames", ())),
                                                tuple(subs.get(e["name"], ())),
                                                tuple(e.get("categories", ()))), preferred=preferred,
                                        verbs=tuple(e.get("verbs", ())))
        return self.resources


def error_from_response(resp: httpx.Response | Reply) -> APIError:
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        body = None
    if not (isinstance(body, dict) and body.get("kind") == "Status"):
        body = {"message": resp.text.strip() or resp.reason_phrase, "code": resp.status_code}
    err = from_status(body, resp.status_code)
    if err.retry_after is None:
        err.retry_after = _retry_after(resp)
    return err


def _query_value(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)  # as httpx encodes it


def _retry_after(resp: httpx.Response | Reply) -> int | None:
    value = resp.headers.get("retry-after", "")
    return int(value) if value.isdigit() else None


def _write_params(dry_run: bool, field_validation: str | None) -> dict[str, Any]:
    return {"dryRun": "All" if dry_run else None, "fieldValidation": field_validation}


def _delete_options(grace: int | None, policy: str | None,
                    preconditions: dict[str, Any] | None) -> dict[str, Any] | None:
    opts = {k: v for k, v in (("gracePeriodSeconds", grace), ("propagationPolicy", policy),
                              ("preconditions", preconditions)) if v is not None}
    return {"kind": "DeleteOptions", "apiVersion": "v1", **opts} if opts else None


async def retry_on_conflict(fn: Callable[[], Awaitable[T]], *, steps: int = 5,
                            backoff: float = 0.01, factor: float = 2.0,
                            max_backoff: float = 1.0, clock: Clock | None = None) -> T:
    """Run `fn` (which must re-read what it writes) until it does not raise Conflict,
    at most `steps` times, sleeping a jittered, growing delay in between; the last
    Conflict is raised (client-go's retry.RetryOnConflict)."""
    for attempt in range(steps):
        try:
            return await fn()
        except Conflict:
            if attempt == steps - 1:
                raise
            await (clock or RealClock()).sleep(
                min(backoff * factor ** attempt, max_backoff) * random.uniform(1.0, 2.0))
    raise AssertionError("unreachable")


class SyncClient:
    """The same verbs, blocking: each call runs the async method on a private loop that
    lives as long as this object (so connections stay pooled between calls).
    Not for use inside a running event loop."""

    def __init__(self, connection: Connection | str, **kw: Any):
        self._runner = asyncio.Runner()
        self._client = self._runner.run(self._make(connection, kw))

    @staticmethod
    async def _make(connection: Connection | str, kw: dict[str, Any]) -> Client:
        return Client(connection, **kw)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        return lambda *a, **kw: self._runner.run(attr(*a, **kw))

    def watch(self, resource: str | Resource, **kw: Any) -> Iterator[Any]:
        """Blocking iteration over a `client.watch.Watch` (see there)."""
        from client.watch import Watch
        agen = Watch(self._client, resource, **kw).__aiter__()
        try:
            while True:
                try:
                    yield self._runner.run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(agen.aclose())

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
