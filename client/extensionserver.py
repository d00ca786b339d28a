"""The extension API server's side of aggregation: who is asking, and may they.

What an aggregated API server (metrics-server, a sample-apiserver) gets from
k8s.io/apiserver's delegated options, small:
- Authentication (DelegatingAuthenticationOptions): a client certificate verified by
  the TLS handshake against the requestheader CA, whose CN is one of the allowed names
  (any, if none are listed), is the front proxy: the user is the one its X-Remote-*
  headers name (machinery/requestheader.py), and a request without a username header is
  401. A certificate verified against the client CA is an x509 user (CN, O). Otherwise
  a bearer token is asked about with a TokenReview (cached for 10 s, as the delegated
  authenticator's default CacheTTL). Nothing else is authenticated (401): there is no
  anonymous user here.
- Authorization (DelegatingAuthorizationOptions): `system:masters` is always allowed,
  and so are the health paths (/healthz, /livez, /readyz); everything else is a
  SubjectAccessReview to the API server with the request's attributes
  (RequestInfoFactory), cached 10 s allowed and 10 s denied (the delegated defaults). A
  refusal is 403 with Kubernetes' wording; a review that cannot be made is 500.
- The trust comes from kube-system/extension-apiserver-authentication, which the API
  server publishes: `load_config(client)` reads it.
- `Delegated(app, auth)` is ASGI middleware that puts a `RemoteUser` in
  `scope["user"]` or answers the 401/403 Status; `ExtensionServer` serves such an app
  over HTTPS with the client CAs in the handshake (a certificate is optional, as
  kube-apiserver asks it) and starts and stops it on the caller's loop.

Concurrency: one asyncio loop; the caches are plain dicts on it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
import uvicorn
from cryptography import x509
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from client.clock import Clock, RealClock
from client.rest import Client
from machinery import errors, pki, requestheader
from machinery.requestheader import RemoteUser, RequestHeaderConfig

log = logging.getLogger("minik8s.extensionserver")

TOKEN_TTL = 10.0
AUTHORIZED_TTL = 10.0
UNAUTHORIZED_TTL = 10.0
ALWAYS_ALLOW_PATHS = ("/healthz", "/livez", "/readyz")
ALWAYS_ALLOW_GROUPS = ("system:masters",)

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


async def load_config(client: Client) -> RequestHeaderConfig:
    """kube-system/extension-apiserver-authentication, as the API server published it."""
    cm = await client.request("GET", f"/api/v1/namespaces/{requestheader.NAMESPACE}/configmaps/"
                                     f"{requestheader.CONFIGMAP}")
    return RequestHeaderConfig.from_data((cm or {}).get("data"))


@dataclass(frozen=True)
class Attributes:
    """authorizer.Attributes of one request, as a SubjectAccessReview carries them."""
    user: RemoteUser
    verb: str
    namespace: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""
    resource_request: bool = True

    def review(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"user": self.user.name, "groups": list(self.user.groups)}
        if self.user.uid:
            spec["uid"] = self.user.uid
        if self.user.extra:
            spec["extra"] = {k: list(v) for k, v in self.user.extra}
        if self.resource_request:
            spec["resourceAttributes"] = {k: v for k, v in (
                ("verb", self.verb), ("namespace", self.namespace), ("group", self.group),
                ("version", self.version), ("resource", self.resource),
                ("subresource", self.subresource), ("name", self.name)) if v}
        else:
            spec["nonResourceAttributes"] = {"verb": self.verb, "path": self.path}
        return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}

    def forbidden(self, reason: str = "") -> errors.Forbidden:
        """apierrors.NewForbidden worded as kube-apiserver words a refusal."""
        who = self.user.name
        if not self.resource_request:
            why = f'User "{who}" cannot {self.verb} path "{self.path}"'
        else:
            res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
            where = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
            why = f'User "{who}" cannot {self.verb} resource "{res}" in API group "{self.group}" {where}'
        if reason:
            why += f": {reason}"
        if not self.resource_request:
            return errors.Forbidden(f"forbidden: {why}")
        qualified = f"{self.resource}.{self.group}" if self.group else self.resource
        message = f'{qualified} "{self.name}" is forbidden: {why}' if self.name else f"{qualified} is forbidden: {why}"
        return errors.Forbidden(message, kind=self.resource, name=self.name, group=self.group)


def request_attributes(user: RemoteUser, method: str, path: str, query: dict[str, str]) -> Attributes:
    """k8s.io/apiserver's RequestInfoFactory: a resource path's attributes, else the path's."""
    parts = [p for p in path.split("/") if p]
    plain = Attributes(user, method.lower(), resource_request=False, path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return plain
    group, rest = "", parts[1:]
    if parts[0] == "apis":
        if len(rest) < 3:
            return plain
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = _VERBS.get(method.upper(), "")
    if rest[0] == "watch" and len(rest) > 1:
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "").lower() in ("1", "true") else "list"
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(user, verb, namespace, group, version, resource, sub, name, path)


def _cert_user(cert: x509.Certificate) -> RemoteUser | None:
    cn = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not cn or not cn[0]:
        return None
    orgs = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return RemoteUser(cn[0], (*orgs, "system:authenticated"))


def _bundle(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode()) if pem.strip() else []


@dataclass
class DelegatedAuth:
    """Authentication and authorization of an extension server's requests (see the module
    docstring). `client` reaches the API server as the extension server's own identity."""
    config: RequestHeaderConfig
    client: Client
    clock: Clock = field(default_factory=RealClock)
    always_allow_paths: tuple[str, ...] = ALWAYS_ALLOW_PATHS
    reviews: int = 0  # SubjectAccessReviews sent (tests read it)

    def __post_init__(self) -> None:
        self._front_cas = _bundle(self.config.requestheader_client_ca)
        self._client_cas = _bundle(self.config.client_ca)
        self._tokens: dict[str, tuple[float, RemoteUser | None]] = {}
        self._decisions: dict[Attributes, tuple[float, bool, str]] = {}

    def ca_pems(self) -> str:
        """Every CA the TLS handshake verifies client certificates against."""
        return "\n".join(p for p in (self.config.client_ca, self.config.requestheader_client_ca) if p)

    async def authenticate(self, *, peer_der: bytes | None, headers: list[tuple[str, str]]) -> RemoteUser:
        """The user, or errors.Unauthorized."""
        if peer_der:
            cert = x509.load_der_x509_certificate(peer_der)
            if any(pki.issued_by(cert, ca) for ca in self._front_cas):
                cn = _cert_user(cert)
                allowed = self.config.allowed_names
                if cn is not None and (not allowed or cn.name in allowed):
                    user = requestheader.user_from_headers(headers, self.config)
                    if user is not None:
                        return user
                else:
                    log.info("front proxy certificate CN %s is not one of %s",
                             cn.name if cn else "", list(allowed))
            if any(pki.issued_by(cert, ca) for ca in self._client_cas):
                user = _cert_user(cert)
                if user is not None:
                    return user
        token = next((v[7:].strip() for k, v in headers
                      if k.lower() == "authorization" and v[:7].lower() == "bearer "), "")
        if token:
            user = await self._token_user(token)
            if user is not None:
                return user
        raise errors.Unauthorized("Unauthorized")

    async def _token_user(self, token: str) -> RemoteUser | None:
        now = self.clock.monotonic()
        hit = self._tokens.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        answer = await self.client.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
        status = (answer or {}).get("status") or {}
        user = None
        if status.get("authenticated") and (status.get("user") or {}).get("username"):
            u = status["user"]
            user = RemoteUser(u["username"], tuple(u.get("groups") or ()), u.get("uid") or "",
                              tuple((k, tuple(v)) for k, v in (u.get("extra") or {}).items()))
        if len(self._tokens) > 10_000:  # a bound on memory: drop what expired
            self._tokens = {k: v for k, v in self._tokens.items() if v[0] > now}
        self._tokens[token] = (now + TOKEN_TTL, user)
        return user

    async def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        if not attrs.resource_request and attrs.path in self.always_allow_paths:
            return True, ""
        if any(g in ALWAYS_ALLOW_GROUPS for g in attrs.user.groups):
            return True, ""
        now = self.clock.monotonic()
        hit = self._decisions.get(attrs)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        self.reviews += 1
        answer = await self.client.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                           body=attrs.review())
        status = (answer or {}).get("status") or {}
        allowed = bool(status.get("allowed")) and not status.get("denied")
        reason = status.get("reason") or ""
        if len(self._decisions) > 10_000:
            self._decisions = {k: v for k, v in self._decisions.items() if v[0] > now}
        self._decisions[attrs] = (now + (AUTHORIZED_TTL if allowed else UNAUTHORIZED_TTL), allowed, reason)
        return allowed, reason

    async def check(self, scope: dict[str, Any]) -> errors.APIError | None:
        """Sets scope["user"] and scope["attributes"], or answers the error that refuses."""
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        try:
            user = await self.authenticate(peer_der=scope.get("minik8s.peer_der"), headers=headers)
        except errors.APIError as err:
            return err
        except Exception as exc:  # noqa: BLE001 - the TokenReview could not be made
            log.warning("TokenReview failed: %s", exc)
            return errors.Unauthorized("Unauthorized")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        method = "GET" if scope["type"] == "websocket" else scope["method"]
        attrs = request_attributes(user, method, scope["path"], query)
        scope["user"], scope["attributes"] = user, attrs
        try:
            allowed, reason = await self.authorize(attrs)
        except Exception as exc:  # noqa: BLE001 - the review could not be made: 500, as Kubernetes
            return errors.InternalError(f"Authorization error (user={user.name}, verb={attrs.verb}, "
                                        f"resource={attrs.resource}, subresource={attrs.subresource}): {exc}")
        if not allowed:
            return attrs.forbidden(reason)
        return None


Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Scope]], Callable[[Scope], Awaitable[None]]], Awaitable[None]]


class Delegated:
    """ASGI middleware: every HTTP request passes `auth.check` before `app` sees it."""

    def __init__(self, app: ASGIApp, auth: DelegatedAuth):
        self.app, self.auth = app, auth

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refused = await self.auth.check(scope)
            if refused is not None:
                body = orjson.dumps(refused.to_status())
                await send({"type": "http.response.start", "status": refused.code,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class _PeerHttp(HttpToolsProtocol):
    """uvicorn's protocol, with the connection's verified client certificate (DER) in
    every scope: uvicorn has no ASGI TLS extension yet."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        app = self.app

        async def with_peer(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope["minik8s.peer_der"] = der
            await app(scope, receive, send)
        self.app = with_peer


def server_context(cert_file: str, key_file: str, client_cas: str) -> ssl.SSLContext:
    """TLS 1.2+, the serving certificate, and an optional client certificate verified
    against `client_cas` (PEM), as k8s.io/apiserver's secure serving asks for one."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_cas.strip():
        ctx.load_verify_locations(cadata=client_cas)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class ExtensionServer:
    """`app` behind `Delegated(app, auth)`, served over HTTPS on the caller's loop."""

    def __init__(self, app: ASGIApp, auth: DelegatedAuth, *, cert_file: str, key_file: str):
        self.app = Delegated(app, auth)
        self.auth = auth
        self.context = server_context(cert_file, key_file, auth.ca_pems())
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        """Returns once the socket listens (port 0: any free one, then in `port`)."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", ws="none", http=_PeerHttp, timeout_graceful_shutdown=1)
        config.load()
        config.ssl = self.context  # uvicorn takes files only; a context built here instead
        server = self._server = _Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"extensionserver-{self.port}")
        while not server.started:
            if self._task.done():
                sock.close()
                await self._task
                raise OSError(f"could not serve on {host}:{port}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._task), 3)
        if not self._task.done():
            self._task.cancel()
        self._server = self._task = None


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield
