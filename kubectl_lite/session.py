"""One invocation's view of the cluster: the kubeconfig resolved into a connection, a
blocking client on it, the default namespace, and resource names resolved to kinds.

Everything is built on first use, so a verb that never talks to the server (`config
view`) never builds a client. Resource names resolve from `client.rest`'s built-in table
first and from the server's discovery only for a name that table does not know, or for a
category (`all` included: custom resources join categories).

The client asks for `meta.k8s.io/v1` Tables only inside `session.accepting(TABLE)`: the
Accept header is set by a thin transport wrapper, the one seam `client.rest.Client`
offers for it. One invocation runs one thing at a time, so the switch is never shared.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, AsyncIterator, Iterator

from kubectl_lite import __version__
from kubectl_lite.common import CLIError

ALL = ""  # client.rest.ALL: every namespace
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
USER_AGENT = f"kubectl-lite/{__version__}"

_CLASSES: Any = None


def _classes() -> Any:
    """The HTTP-side classes, built on first use: importing httpx costs ~40 ms, which a
    verb that never talks to the server (`version --client`, `config`) should not pay."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    # httpx imports its own command line (click, rich: ~60 ms more) unless that import
    # fails; kubectl-lite never uses it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import httpx

    from client.rest import SyncClient
    from client.transport import LeanTransport

    class AcceptTransport(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport):
            self.inner = inner
            self.accept: str | None = None

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if self.accept:
                request.headers["accept"] = self.accept
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    class Client(SyncClient):
        """`client.rest.SyncClient` plus running any coroutine or async iterator of the
        underlying async client on the same private loop (streams: logs -f, watches)."""

        @property
        def aio(self):
            return self._client

        def run(self, coro):
            return self._runner.run(coro)

        def iterate(self, agen: AsyncIterator[Any], *, deadline: float | None = None) -> Iterator[Any]:
            """Blocking iteration; past `deadline` (time.monotonic()) raises TimeoutError."""
            import asyncio
            import time
            it = agen.__aiter__()
            try:
                while True:
                    step = it.__anext__()
                    if deadline is not None:
                        step = asyncio.wait_for(step, max(deadline - time.monotonic(), 0.001))
                    try:
                        yield self._runner.run(step)
                    except StopAsyncIteration:
                        return
            finally:
                aclose = getattr(it, "aclose", None)
                if aclose is not None:
                    self._runner.run(aclose())

    def lean(conn: Any) -> httpx.AsyncBaseTransport:
        # -v 6 and up: logged inside AcceptTransport, so the Accept sent is the one shown
        transport = LeanTransport.for_connection(conn)
        if "machinery.klog" in sys.modules:  # cli.py imports it for -v only
            from client.round_trippers import debug_wrappers
            transport = debug_wrappers(transport)
        return transport

    _CLASSES = (lean, AcceptTransport, Client)
    return _CLASSES


class Session:
    def __init__(self, opts: Any):
        self.opts = opts
        self._connection: Any = None
        self._client: Any = None
        self._transport: Any = None
        self._discovered = False

    # -- where to connect -----------------------------------------------------------

    def kubeconfig_paths(self) -> list[str]:
        if self.opts.kubeconfig:
            return [self.opts.kubeconfig]
        env = os.environ.get("KUBECONFIG")
        if env:
            return [p for p in env.split(os.pathsep) if p]
        return [os.path.join(os.path.expanduser("~"), ".kube", "config")]

    def kubeconfig(self, *, must_exist: bool = True) -> Any:
        path = self.opts.kubeconfig
        if path and not os.path.exists(path):
            raise CLIError(f'the kubeconfig file "{path}" does not exist')
        if must_exist and not any(os.path.exists(p) for p in self.kubeconfig_paths()):
            raise CLIError("no kubeconfig found: pass --kubeconfig or --server, set KUBECONFIG, "
                           "or write ~/.kube/config")
        from client.kubeconfig import load
        try:
            return load(path or None)
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise CLIError(f"cannot load kubeconfig: {exc}") from None
        except Exception as exc:  # yaml's errors, without importing yaml to name them
            if type(exc).__module__.startswith("yaml"):
                raise CLIError(f"cannot load kubeconfig: {' '.join(str(exc).split())}") from None
            raise

    @property
    def connection(self) -> Any:
        if self._connection is None:
            from client.kubeconfig import Connection
            o = self.opts
            # --server overrides the context's server and keeps the rest of it (its CA,
            # its user), as kubectl's does; with no kubeconfig context it stands alone.
            cfg = None
            if not o.server or any(os.path.exists(p) for p in self.kubeconfig_paths()):
                cfg = self.kubeconfig()
                if not (o.context or cfg.current_context):
                    if not o.server:
                        raise CLIError('current-context is not set in the kubeconfig: use '
                                       '"kubectl-lite config use-context NAME" or pass --context')
                    cfg = None
            if cfg is None:
                conn = Connection(server=o.server, namespace=o.namespace or "default",
                                  token=o.token or None)
            else:
                try:
                    conn = cfg.connection(o.context or None, namespace=o.namespace or None)
                except (ValueError, OSError) as exc:
                    raise CLIError(str(exc).replace("'", '"')) from None
                if o.server:
                    conn.server = o.server
                if o.token:
                    conn.token = o.token
            _override_tls(conn, o)
            if "://" not in conn.server:
                conn.server = "https://" + conn.server
            self._connection = conn
        return self._connection

    @property
    def timeout(self) -> float:
        """--request-timeout in seconds (30 when unset or 0)."""
        return _timeout(self.opts.request_timeout)

    @property
    def namespace(self) -> str:
        """The namespace to work in: -n, else the context's, else `default`."""
        return self.connection.namespace

    @property
    def namespace_given(self) -> bool:
        return bool(self.opts.namespace)

    @property
    def client(self) -> Any:
        if self._client is None:
            lean_transport, AcceptTransport, Client = _classes()
            conn = self.connection
            timeout = self.timeout
            # For HTTPS the connection's context carries the cluster's CA and the user's
            # certificate; plain HTTP needs none.
            try:
                transport = lean_transport(conn)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise CLIError(f"unable to use the TLS material of the kubeconfig: {_tls_error(exc)}") from None
            self._transport = AcceptTransport(transport)
            self._client = Client(conn, transport=self._transport, timeout=timeout,
                                  max_retries=2, user_agent=USER_AGENT)
        return self._client

    @contextlib.contextmanager
    def accepting(self, accept: str) -> Iterator[None]:
        self.client  # noqa: B018 - builds the transport
        assert self._transport is not None
        before, self._transport.accept = self._transport.accept, accept
        try:
            yield
        finally:
            self._transport.accept = before

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- names -> kinds -------------------------------------------------------------

    def resource(self, name: str) -> Any:
        from machinery.errors import NotFound
        try:
            return self.client.resources.get(name)
        except NotFound:
            if not self._discovered:
                self.discover()
                try:
                    return self.client.resources.get(name)
                except NotFound:
                    pass
        raise CLIError(f'the server doesn\'t have a resource type "{name}"')

    def resources_for(self, name: str, *, first: tuple[str, ...] = ()) -> list[Any]:
        """What a TYPE argument names, as kubectl's builder expands it: the kinds of a
        category, else one resource. Custom resources join categories (`all` too), so a
        category is looked up in discovery; `first` (plural names) go before the rest,
        in that order, as kubectl's legacy expansion of `all` lists them."""
        from machinery.errors import NotFound
        try:
            known = self.client.resources.get(name)
        except NotFound:
            known = None
        if known is None or name == "all":
            if not self._discovered:
                self.discover()
            members = self.client.resources.in_category(name)
            if members or first:
                head = [self.resource(k) for k in first]
                return head + [r for r in members if r not in head]
        return [self.resource(name)]

    def for_object(self, obj: dict, source: str = "") -> Any:
        from machinery.errors import NotFound
        try:
            return self.client.resources.for_object(obj)
        except NotFound as first:
            err = first
            if not self._discovered:
                self.discover()
                try:
                    return self.client.resources.for_object(obj)
                except NotFound as again:
                    err = again
            md = obj.get("metadata") or {}
            where = f' from "{source}"' if source else ""
            raise CLIError(f'resource mapping not found for name: "{md.get("name", "")}" '
                           f'namespace: "{md.get("namespace", "")}"{where}: {err.message}\n'
                           "ensure the kind is served by the API server") from None

    def discover(self) -> None:
        self._discovered = True
        self.client.discover()

    def namespace_of(self, r: Any, obj: dict | None = None) -> str:
        """The namespace an object of `r` goes to: its own, else -n / the context's.
        An object naming another namespace than an explicit -n is an error, as in kubectl."""
        if not r.namespaced:
            return ""
        own = ((obj or {}).get("metadata") or {}).get("namespace")
        if own and self.namespace_given and own != self.opts.namespace:
            raise CLIError(f'the namespace from the provided object "{own}" does not match the '
                           f'namespace "{self.opts.namespace}". You must pass '
                           f"'--namespace={own}' to perform this operation.")
        return own or self.namespace


def _override_tls(conn: Any, o: Any) -> None:
    """kubectl's flags over the kubeconfig, as clientcmd applies its ConfigOverrides: a
    CA given (or --insecure-skip-tls-verify) replaces the cluster's CA and its skip
    setting; a certificate or key file given replaces the user's inline data, which
    would otherwise win over any file. Every file named must be readable: kubectl's
    "unable to read ..." line, not a failure mid-request."""
    if o.certificate_authority or o.insecure_skip_tls_verify:
        conn.ca_file, conn.ca_data = o.certificate_authority or None, None
        conn.insecure = bool(o.insecure_skip_tls_verify)
    if o.client_certificate:
        conn.cert_file, conn.cert_data = o.client_certificate, None
    if o.client_key:
        conn.key_file, conn.key_data = o.client_key, None
    if o.tls_server_name:
        conn.tls_server_name = o.tls_server_name
    for what, path, owner in (("certificate-authority", conn.ca_file, "cluster"),
                              ("client-cert", conn.cert_file, "user"),
                              ("client-key", conn.key_file, "user")):
        if path and not os.access(path, os.R_OK):
            why = "no such file or directory" if not os.path.exists(path) else "permission denied"
            raise CLIError(f"unable to read {what} {path} for {owner} due to open {path}: {why}")
    # client-go's validation, in its words
    has_cert, has_key = bool(conn.cert_file or conn.cert_data), bool(conn.key_file or conn.key_data)
    if has_key != has_cert:
        missing = "client-cert-data or client-cert" if has_key else "client-key-data or client-key"
        raise CLIError(f"{missing} must be specified for the user to use the clientCert "
                       "authentication method.")


def _tls_error(exc: BaseException) -> str:
    import ssl
    if isinstance(exc, ssl.SSLError):
        return f"{exc.reason or exc}" + (" (a certificate and key that do not match, or not PEM)"
                                         if exc.reason in ("KEY_VALUES_MISMATCH", "PEM_LIB") else "")
    return str(exc)


def _timeout(value: str | None) -> float:
    if not value or value in ("0", "0s"):
        return 30.0
    from machinery.duration import parse_duration
    try:
        return parse_duration(value)
    except ValueError:
        raise CLIError(f'invalid request timeout "{value}": use a number with a unit, '
                       'e.g. 30s') from None
