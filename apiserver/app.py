"""The HTTP face of the API server: Kubernetes' REST paths on top of `Resources`.

The application shell is a Starlette `Router`, and it really routes: every fixed path
(/version, health, metrics, OpenAPI, discovery) is a route, and one route per API
prefix (`/api/<version>/...`, `/apis/<group>/<version>/...`) takes every resource path
to `API.serve`; a path no route takes is a 404 Status. Every endpoint is a plain ASGI
app that answers every error, an unsupported method included, as a Status itself.

Why not FastAPI, nor a Starlette application: nothing here wants FastAPI's request
models, dependency injection or generated OpenAPI (the server serves Kubernetes' own
schemas), and both stacks wrap every request in middleware that `API.serve` does not
need. A quick throughput check (4 x 8,000 GETs of one ConfigMap, 16 in flight, uvicorn
and real etcd on a 2-core machine under load; server CPU per GET): calling `API.serve`
straight from the ASGI entry 200 us; this Router 215 us (+7%); a Starlette application
with the same routes 245 us (+20%); FastAPI's application stack costs more again (about
+5 to +15 us over Starlette's in an in-process check).

`/healthz`, `/livez` and `/readyz` (and `/<endpoint>/<check>`) answer from
machinery.healthz with kube-apiserver's checks: `ping`, `log`, `etcd` (one etcd round
trip, 2 s at most, as --etcd-healthcheck-timeout's default), and on readyz
`etcd-readiness`, `informer-sync` (the watch cache has listed) and `shutdown`.
`/metrics` is machinery.metrics' exposition; what the server records is in
apiserver/metrics.py.

Every request, fixed paths included, first passes `Secured`: the authenticator chain
(apiserver/auth/authn.py) puts the user in `scope["user"]` (or the request is a 401
Status), then the authorizer union --authorization-mode builds (system:masters first)
decides on the request's attributes, kept in `scope["attributes"]` (or a 403 Status with
Kubernetes' wording). Between the two, as kube-apiserver's filter chain orders them, API
Priority and Fairness (apiserver/flowcontrol/) gives the request a seat of its priority
level or refuses it 429 with Retry-After (`Secured.limited`). Writes are admitted after validation and before storage
(`API.admitter`): RBAC's escalation check on roles and bindings, then every plugin of
`API.admission`, each `async admit(user, attrs, obj, old)`.

Within a resource path, routing is by path shape, not by kind: the path is parsed into
(resource type, namespace, name, subresource), and the handler is looked up in `ROUTES`
by (Kubernetes verb, subresource). Every failure leaves as a `kind: Status` body with
the right code; an unexpected exception is logged and answered 500, and is always a bug.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol
from urllib.parse import parse_qsl, quote, unquote

import anyio
import httpx
import orjson
import yaml
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, Router, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketClose, WebSocketDisconnect

from apiserver import (aggregator, discovery, eviction, kubernetesservice, metrics, openapi, portforward,
                       registry, tables, version)
from apiserver.apiextensions import crd as crds
from apiserver.apiextensions.controller import CRDController
from apiserver.serving import WatchResponse
from apiserver.allocators import (DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDR, REPAIR_INTERVAL,
                                  IPAllocator, PortAllocator, ServiceAllocations)
from apiserver.auth import authn, bootstrappolicy, reviews, serviceaccount
from apiserver.auth.certificates import CertificateAdmission
from apiserver.auth import rbac as rbac_auth
from apiserver.auth.authorizer import (ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, ANONYMOUS,
                                       SERVICE_ACCOUNT_PREFIX, SERVICE_ACCOUNTS_GROUP,
                                       SYSTEM_PRIVILEGED_GROUP, Attributes, Authorizer, Decision,
                                       PrivilegedGroups, Union, UserInfo, forbidden,
                                       request_attributes)
from apiserver.auth.node import NodeAuthorizer
from apiserver.auth.noderestriction import NodeRestriction
from apiserver.auth.feed import CacheFeed
from apiserver.auth.rbac import KINDS as RBAC_KINDS, RBACAuthorizer
from apiserver.cache import Entry, WatchCache
from apiserver.flowcontrol import apf
from apiserver.flowcontrol import bootstrap as flowcontrol_bootstrap
from apiserver.resources import Resources, Selection, WriteOptions
from apiserver.audit import AuditLog, new_audit_id
from apiserver.audit import event as audit_event
from apiserver.storage import EtcdStore, NoSpace, Store, TooLarge, Unavailable
from apiserver.storage.interface import StorageError
from apiserver.storage.encryption import EncryptedStore, ResourceRule, transformers_by_prefix
from apiserver.storage.etcd import TLSFiles
from machinery import errors, healthz, klog, protobuf, yamlutil
from machinery.healthz import Health, named_check
from machinery.metrics import exposition

log = logging.getLogger("minik8s.apiserver")

MAX_BODY = 3 * 1024 * 1024
# orjson serializes at most this many levels; Kubernetes' JSON decoder allows 10,000.
MAX_DEPTH = 254
JSON = "application/json"


# A LIST of more objects than this is streamed: its items go out from the cache's
# serialized bytes in chunks of about LIST_CHUNK bytes, each written once the previous one
# is (uvicorn's flow control), so the response is never built whole in memory.
STREAM_LIST_ITEMS = 500
LIST_CHUNK = 256 * 1024


# The start of a watch event's line, by type; the object's JSON and `}\n` follow.
_EVENT_HEAD = {k: b'{"type":"' + k.encode() + b'","object":' for k in ("ADDED", "MODIFIED", "DELETED")}


async def _list_chunks(head: bytes, entries: list[Entry]) -> AsyncIterator[bytes]:
    parts, size = [head], len(head)
    for i, e in enumerate(entries):
        if i:
            parts.append(b",")
        parts.append(e.raw)
        size += len(e.raw)
        if size >= LIST_CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(b"]}")
    yield b"".join(parts)


def warning_header(warnings: list[str]) -> str:
    """A Warning header's value: code 299, RFC 7234 quoted strings (`\\` and `"` escaped),
    as Kubernetes writes them."""
    return ", ".join('299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in warnings)


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def status_response(err: errors.APIError) -> Response:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
    return json_response(err.to_status(), err.code, headers)


@dataclass
class Target:
    rt: registry.ResourceType
    namespace: str
    name: str | None
    subresource: str | None


def parse_path(path: str) -> Target:
    """`/api/v1/namespaces/ns/pods/x/status` -> Target(pods, 'ns', 'x', 'status')."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[1:]
    else:
        group, rest = (parts[1] if len(parts) > 1 else ""), parts[2:]
    if not rest:
        raise errors.NotFound("the server could not find the requested resource")
    version, rest = rest[0], rest[1:]
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise errors.NotFound("the server could not find the requested resource")
    rt = registry.lookup(group, version, rest[0])
    if rt is None or (namespace and not rt.namespaced):
        raise errors.NotFound("the server could not find the requested resource")
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in rt.subresources:
        raise errors.NotFound("the server could not find the requested resource")
    if rt.namespaced and name is not None and not namespace:
        raise errors.NotFound("the server could not find the requested resource")
    return Target(rt, namespace, name, sub)


async def read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise errors.TooLarge(f"Request entity too large: limit is {MAX_BODY}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise errors.TooLarge(f"Request entity too large: limit is {MAX_BODY}")
        chunks.append(chunk)
    return b"".join(chunks)


BODY_TYPES = ("", "application/json", "application/yaml", "text/yaml", protobuf.MEDIA_TYPE)
PATCH_TYPES = ("application/merge-patch+json", "application/json-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")
CR_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                  "application/apply-patch+yaml")


def decode_body(raw: bytes, content_type: str, allowed: tuple[str, ...] = BODY_TYPES) -> Any:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in allowed:
        raise errors.UnsupportedMediaType(
            f'the body of the request was in an unknown format - accepted media types '
            f'include: {", ".join(t for t in allowed if t)}')
    if not raw.strip():
        raise errors.BadRequest("the request body is empty")
    if ctype == protobuf.MEDIA_TYPE:  # what client-go's typed clients (and kubectl) send
        return protobuf.decode(raw)
    try:
        if ctype in ("application/yaml", "application/apply-patch+yaml", "text/yaml"):
            value = yamlutil.load(raw)
        else:
            value = orjson.loads(raw)
    except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise errors.BadRequest(f"the request body could not be decoded: {msg}") from None
    try:
        orjson.dumps(value)  # a few microseconds: what is accepted can be stored and served
    except TypeError:
        raise errors.BadRequest(f"the request body could not be decoded: nested more than "
                                f"{MAX_DEPTH} levels deep") from None
    return value


# DeleteOptions' fields and their JSON types; Kubernetes' decoder refuses any other (400).
_DELETE_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "gracePeriodSeconds": (int,), "preconditions": (dict,), "orphanDependents": (bool,),
    "propagationPolicy": (str,), "dryRun": (list,), "ignoreStoreReadErrorWithClusterBreakingPotential": (bool,)}


def check_delete_options(options: dict) -> None:
    for key, types in _DELETE_OPTION_TYPES.items():
        value = options.get(key)
        # bool is an int to Python, never to JSON's decoders
        if value is not None and not (isinstance(value, types) and isinstance(value, bool) == (bool in types)):
            raise errors.BadRequest(f"the body of a delete request must be DeleteOptions: {key} "
                                    f"must be of type {types[0].__name__.replace('dict', 'object')}")
    pre = options.get("preconditions") or {}
    for key in ("uid", "resourceVersion"):
        if pre.get(key) is not None and not isinstance(pre[key], str):
            raise errors.BadRequest(f"the body of a delete request must be DeleteOptions: "
                                    f"preconditions.{key} must be of type string")
    if not all(isinstance(d, str) for d in options.get("dryRun") or ()):
        raise errors.BadRequest("the body of a delete request must be DeleteOptions: dryRun must be "
                                "a list of strings")


def wants_table(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


def query_flag(q, name: str) -> bool:
    return q.get(name, "").lower() in ("1", "true")


def query_int(q, name: str) -> int:
    raw = q.get(name)
    if raw in (None, ""):
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise errors.BadRequest(f'invalid value for {name}: "{raw}"') from None
    if value < 0:
        raise errors.BadRequest(f"{name} must not be negative")
    return value


def dry_run(q) -> bool:
    values = q.getlist("dryRun")
    for v in values:
        if v != "All":
            raise errors.BadRequest(f'unsupported dryRun value "{v}": only "All" is supported')
    return bool(values)


def field_manager(request: Request, *, apply: bool = False) -> str:
    """The request's fieldManager; without one, an update is owned by the User-Agent's
    program name (`kubectl`, `python-requests`), as in Kubernetes."""
    q = request.query_params
    manager = q.get("fieldManager", "")
    causes = []
    if apply and not manager:
        causes.append({"reason": "FieldValueRequired", "field": "fieldManager",
                       "message": "Required value: is required for apply patch"})
    if len(manager) > 128:
        causes.append({"reason": "FieldValueTooLong", "field": "fieldManager",
                       "message": "Too long: may not be more than 128 bytes"})
    if "force" in q and not apply:
        causes.append({"reason": "FieldValueForbidden", "field": "force",
                       "message": "Forbidden: may not be specified for non-apply patch"})
    if causes:
        kind = "PatchOptions" if request.method == "PATCH" else \
            "CreateOptions" if request.method == "POST" else "UpdateOptions"
        raise errors.invalid(kind, "", causes, group="meta.k8s.io")
    return manager or request.headers.get("user-agent", "").split("/")[0][:128] or "unknown"


def field_validation(q) -> str:
    v = q.get("fieldValidation", "")
    if v not in ("", "Ignore", "Warn", "Strict"):
        raise errors.BadRequest(f'fieldValidation "{v}" is invalid: must be Ignore, Warn or Strict')
    return v


def pod_container(pod: dict, container: str | None) -> str:
    """The container a log or exec request is for, checked as Kubernetes checks it."""
    spec, name = pod.get("spec") or {}, pod["metadata"]["name"]
    names = [c.get("name") for c in spec.get("containers") or []]
    if not container:
        if len(names) == 1:
            return names[0]
        raise errors.BadRequest(f"a container name must be specified for pod {name}, "
                                f"choose one of: [{' '.join(names)}]")
    if container not in names + [c.get("name") for c in spec.get("initContainers") or []]:
        raise errors.BadRequest(f"container {container} is not valid for pod {name}")
    return container


def no_kubelet(pod: dict) -> errors.APIError:
    """Why a pod's log or exec stream cannot be served: it has no node, or its node (or
    the Node object) has no kubelet endpoint to proxy to."""
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        return errors.BadRequest(f"pod {pod['metadata']['name']} does not have a host assigned")
    return errors.BadRequest(f'no kubelet is connected to serve pods on node "{node}"')


EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
ETCD_CHECK_TIMEOUT = 2.0


def _log_check() -> None:
    """kube-apiserver's `log` check fails when klog's flush hangs; records here are
    written synchronously by the handler, so there is nothing that can hang."""


class AlwaysAllow:
    def authorize(self, attrs: Attributes) -> tuple[Decision, str]:
        return Decision.ALLOW, ""


class AlwaysDeny:
    """kube-apiserver's AlwaysDeny has no opinion, so the request is refused with its reason."""

    def authorize(self, attrs: Attributes) -> tuple[Decision, str]:
        return Decision.NO_OPINION, "Everything is forbidden."


class AdmissionPlugin(Protocol):
    """An admission plugin for writes (contract 4): raises machinery errors to refuse.
    `obj` is the object as it is to be stored (None for a delete), `old` the stored one
    (None for a create)."""

    async def admit(self, user: UserInfo, attrs: Attributes, obj: dict | None,
                    old: dict | None) -> None: ...


_DELETE_VERBS = ("delete", "deletecollection")


class API:
    def __init__(self, store: Store, *, compaction_window: float = 300.0,
                 bookmark_interval: float = 5.0, kubelet_token: str | None = None,
                 kubelet_tls: ssl.SSLContext | None = None,
                 authorization_modes: tuple[str, ...] = ("AlwaysAllow",),
                 anonymous_auth: bool = True, enable_bootstrap_token_auth: bool = False,
                 plain_http: bool = False, flags: Any = None,
                 service_account_flags: dict[str, Any] | None = None):
        """service_account_flags: serviceaccount.from_flags' keywords but `get` (kube-apiserver's
        --service-account-* flags); ValueError (KeyFileError) if they cannot be used."""
        store = metrics.InstrumentedStore(store)  # every call below is timed
        self.store: Store = store
        # Kubelets are dialed over HTTPS with the client certificate of `kubelet_tls`
        # (apiserver/kubeletclient.py); the shared token is only for plain-HTTP kubelets.
        self.kubelet_tls = kubelet_tls
        self.kubelet_headers = ({"authorization": f"Bearer {kubelet_token}"}
                                if kubelet_token and kubelet_tls is None else {})
        self._kubelet_http: httpx.AsyncClient | None = None
        self.cache = WatchCache(store, bookmark_interval=bookmark_interval)
        self.resources = Resources(store, self.cache)
        # ClusterIPs and NodePorts (apiserver/allocators.py); ValueError for a bad range.
        self.service_allocations = ServiceAllocations(
            IPAllocator(store, getattr(flags, "service_cluster_ip_range", None) or DEFAULT_SERVICE_CIDR),
            PortAllocator(store, getattr(flags, "service_node_port_range", None) or DEFAULT_NODE_PORT_RANGE))
        self.resources.allocations["services"] = self.service_allocations
        # Serves CustomResourceDefinitions' kinds from the moment they are Established.
        self.crds = CRDController(self.resources)
        metrics.track_cache(self.cache)
        # The process's flags (apiserver/main.py), for the parts configured from them.
        self.flags = flags
        # Authentication: x509, then the token authenticators in this order, then
        # anonymous. ServiceAccount tokens go first in the token list, as in kube-apiserver.
        self.service_accounts = serviceaccount.from_flags(get=self.get_object, **(service_account_flags or {}))
        self._openid: tuple[bytes, bytes] | bool | None = None  # see openid_metadata
        tokens: list[authn.TokenAuthenticator] = [self.service_accounts.authenticator]
        if enable_bootstrap_token_auth:
            tokens.append(authn.BootstrapTokenAuthenticator(self.cached_object("secrets")))
        self.authn = authn.Chain(token_authenticators=tokens, anonymous=anonymous_auth,
                                 ignore_unknown_tokens=plain_http)
        # Authorization as kube-apiserver chains it: system:masters first, then the
        # --authorization-mode members in order. RBAC's index follows the watch cache.
        self.rbac = RBACAuthorizer()
        self.node_authorizer: NodeAuthorizer | None = None  # set by mode Node; its graph follows the cache
        self.authorization_modes = authorization_modes
        self.authorizer = Union([PrivilegedGroups(SYSTEM_PRIVILEGED_GROUP),
                                 *(self._mode(m) for m in authorization_modes)])
        self.rbac_feed = CacheFeed(self.cache, self.rbac.index, RBAC_KINDS, "rbac")
        # API Priority and Fairness (apiserver/flowcontrol/): its config follows the cache.
        self.flowcontrol: apf.Controller | None = None
        self.flowcontrol_feed: CacheFeed | None = None
        if getattr(flags, "enable_priority_and_fairness", True):
            limit = (getattr(flags, "max_requests_inflight", 400) or 0) + \
                (getattr(flags, "max_mutating_requests_inflight", 200) or 0)
            wait = min(apf.MAX_WAIT, (getattr(flags, "request_timeout", 60.0) or 60.0) / 4)
            self.flowcontrol = apf.Controller(limit, max_wait=wait)
            self.flowcontrol_feed = CacheFeed(self.cache, self.flowcontrol,
                                              ("prioritylevelconfigurations", "flowschemas"), "flowcontrol")
        # Admission plugins for writes, called in order after validation, before storage.
        self.admission: list[AdmissionPlugin] = []
        self.audit: AuditLog | None = None  # --audit-log-path
        # --disable-admission-plugins (apiserver/main.py): Kubernetes' integration tests turn
        # ServiceAccount off on servers no serviceaccount controller serves.
        disabled = getattr(flags, "disabled_admission", frozenset())
        self.resources.disabled_admission = disabled
        if self.node_authorizer is not None and "NodeRestriction" not in disabled:
            # NodeRestriction goes with the Node authorizer, as kubeadm enables them together:
            # the authorizer lets nodes write Nodes, pods and leases; the plugin keeps each
            # node to its own.
            self.admission.append(NodeRestriction(self.cache))
        # CertificateApproval, CertificateSigning and CertificateSubjectRestriction, which
        # kube-apiserver enables by default (apiserver/auth/certificates.py).
        self.admission.append(CertificateAdmission(self.authorizer, disabled=disabled))
        self.compaction_window = compaction_window
        self._tasks: list[asyncio.Task] = []
        self.stopping = False
        self.health = Health()
        self.health.add(named_check("log", _log_check))
        self.health.add(named_check("etcd", self._etcd_check))
        for check in (named_check("etcd-readiness", self._etcd_check),
                      named_check("informer-sync", self._informer_sync_check),
                      named_check("shutdown", self._shutdown_check),
                      named_check("crd-informer-synced", self._crd_check)):
            self.health.add(check, endpoints=("readyz",))
        # The aggregation layer (apiserver/aggregator/): APIServices, the proxy to extension
        # servers, their discovery and availability. OSError for an unreadable CA file.
        self.aggregator = aggregator.Aggregator(self, aggregator.options_from_flags(flags))

    def _mode(self, mode: str) -> Authorizer:
        if mode == "AlwaysAllow":
            return AlwaysAllow()
        if mode == "AlwaysDeny":
            return AlwaysDeny()
        if mode == "RBAC":
            return self.rbac
        if mode == "Node":
            self.node_authorizer = NodeAuthorizer(self)
            return self.node_authorizer
        raise ValueError(f'--authorization-mode: unknown authorization mode "{mode}"')

    def cached_object(self, plural: str) -> Callable[[str, str], Awaitable[dict | None]]:
        """An async getter of one object of a kind: the watch cache's copy (read-only),
        etcd's when the cache has none."""
        rt = registry.by_plural(plural)
        assert rt is not None

        async def get(namespace: str, name: str) -> dict | None:
            entry = self.cache.get(rt, rt.key(namespace, name))
            if entry is not None:
                return entry.obj
            try:
                return await self.resources.get(rt, namespace, name)
            except errors.NotFound:
                return None
        return get

    # -- who is asking, and may they ---------------------------------------------------

    async def authenticate_and_authorize(self, scope: dict) -> errors.APIError | None:
        """Sets scope["user"] (an authorizer.UserInfo) and scope["attributes"] (what the
        authorizers were asked), or answers the 401 or 403 that refuses the request."""
        try:
            user = await self.authn.authenticate(scope)
        except authn.AuthenticationError as exc:
            log.log(klog.V(4), "Unable to authenticate the request: %s", exc)
            return authn.unauthorized()
        if any(k.startswith(b"impersonate-") for k, _ in scope["headers"]):
            scope["impersonator"] = user  # the audit event's user; impersonatedUser is scope["user"]
            try:
                user = self.impersonate(user, scope["headers"])
            except errors.APIError as err:
                return err
        scope["user"] = user
        query: dict[str, str] = {}
        if scope.get("query_string"):
            for k, v in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
                query.setdefault(k, v)
        # A WebSocket upgrade (pods/exec) asks for `create`, as kube-apiserver does
        # since the AuthorizePodWebsocketUpgradeCreatePermission gate.
        method = "POST" if scope["type"] == "websocket" else scope["method"]
        attrs = request_attributes(user, method, scope["path"], query)
        scope["attributes"] = attrs
        decision, reason = self.authorizer.authorize(attrs)
        if self.audit is not None:  # what kube-apiserver's audit events carry of the decision
            scope["audit_annotations"] = {
                "authorization.k8s.io/decision": "allow" if decision is Decision.ALLOW else "forbid",
                "authorization.k8s.io/reason": reason}
        if decision is not Decision.ALLOW:
            return forbidden(attrs, reason)
        return None

    def impersonate(self, user: UserInfo, headers: list[tuple[bytes, bytes]]) -> UserInfo:
        """The user the Impersonate-* headers ask for, once `user` may impersonate each part
        of it (k8s.io/apiserver's WithImpersonation): the `impersonate` verb on users (or
        serviceaccounts), groups, uids and userextras/<key>."""
        name, uid, groups = "", "", []
        extra: dict[str, list[str]] = {}
        for k, v in headers:
            key, value = k.decode("latin-1").lower(), v.decode("latin-1").strip()
            if key == "impersonate-user":
                name = value
            elif key == "impersonate-group":
                groups.append(value)
            elif key == "impersonate-uid":
                uid = value
            elif key.startswith("impersonate-extra-"):
                extra.setdefault(unquote(key[len("impersonate-extra-"):]), []).append(value)
        if not name:
            raise errors.BadRequest("requested impersonation of groups, uid or extra without "
                                    "impersonating a user")
        checks = []
        if name.startswith(SERVICE_ACCOUNT_PREFIX) and name.count(":") == 3:
            sa_ns, sa_name = name[len(SERVICE_ACCOUNT_PREFIX):].split(":")
            checks.append(Attributes(user, "impersonate", sa_ns, "", "", "serviceaccounts", name=sa_name))
            groups += [SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{sa_ns}"]
        else:
            checks.append(Attributes(user, "impersonate", resource="users", name=name))
        checks += [Attributes(user, "impersonate", resource="groups", name=g) for g in groups
                   if not g.startswith(SERVICE_ACCOUNTS_GROUP)]
        if uid:
            checks.append(Attributes(user, "impersonate", api_group="authentication.k8s.io",
                                     resource="uids", name=uid))
        checks += [Attributes(user, "impersonate", api_group="authentication.k8s.io",
                              resource="userextras", subresource=k, name=v)
                   for k, values in extra.items() for v in values]
        for attrs in checks:
            decision, reason = self.authorizer.authorize(attrs)
            if decision is not Decision.ALLOW:
                raise forbidden(attrs, reason)
        if name == ANONYMOUS:
            if ALL_UNAUTHENTICATED not in groups:
                groups.append(ALL_UNAUTHENTICATED)
        elif ALL_AUTHENTICATED not in groups:
            groups.append(ALL_AUTHENTICATED)
        return UserInfo(name, tuple(groups), uid, {k: tuple(v) for k, v in extra.items()})

    def admitter(self, request: Request) -> Callable[[dict, dict | None], Awaitable[None]] | None:
        """The admission of one write request (WriteOptions.admit): RBAC's escalation check
        on roles and bindings, then every admission plugin. None for a request the server
        makes itself (no user) or one nothing has to admit."""
        user: UserInfo | None = request.scope.get("user")
        attrs: Attributes | None = request.scope.get("attributes")
        if user is None or attrs is None:
            return None
        escalation = (attrs.api_group == rbac_auth.GROUP and attrs.resource in rbac_auth.KINDS
                      and attrs.verb in ("create", "update", "patch"))
        plugins = tuple(self.admission)
        if not plugins and not escalation:
            return None

        async def admit(obj: dict, old: dict | None) -> None:
            if escalation:
                rbac_auth.check_escalation(self.rbac, user, resource=attrs.resource,
                                           namespace=attrs.namespace, obj=obj, old=old,
                                           authorizer=self.authorizer)
            new = None if attrs.verb in _DELETE_VERBS else obj
            for plugin in plugins:
                await plugin.admit(user, attrs, new, old)
        return admit

    # -- health: kube-apiserver's checks ----------------------------------------------

    async def _etcd_check(self) -> None:
        """One cheap etcd round trip (a count-only range), bounded by kube-apiserver's
        default --etcd-healthcheck-timeout: the store's own retries would take longer."""
        try:
            async with asyncio.timeout(ETCD_CHECK_TIMEOUT):
                await self.store.current_revision()
        except TimeoutError:
            raise RuntimeError(f"etcd did not answer within {ETCD_CHECK_TIMEOUT:g}s") from None

    def _informer_sync_check(self) -> None:
        if not self.cache.ready.is_set():
            raise RuntimeError("the watch cache has not synced yet")

    def _crd_check(self) -> None:
        if not self.crds.synced.is_set():
            raise RuntimeError("the CustomResourceDefinitions stored have not all been served yet")

    def _shutdown_check(self) -> None:
        # Fails from the start of the lifespan's shutdown. uvicorn has stopped accepting
        # connections by then, so only requests on connections still open see it
        # (kube-apiserver fails it for --shutdown-delay-duration while still accepting).
        if self.stopping:
            raise RuntimeError("process is shutting down")

    async def start(self) -> None:
        if self.audit is not None:
            await self.audit.start()
        await self.store.open()
        await self.cache.start()
        await self.resources.ensure_system_namespaces()
        await self.cache.ready.wait()
        await bootstrappolicy.reconcile(self.resources)  # kube-apiserver's rbac/bootstrap-roles
        if self.flowcontrol_feed is not None:
            await flowcontrol_bootstrap.ensure(self.resources)  # APF's config-producer
            await self.flowcontrol_feed.start()
            self._tasks.append(asyncio.create_task(self._keep_flowcontrol_status()))
        await self.crds.start()
        await self.repair_allocations()
        await self.reconcile_kubernetes_service()
        self._tasks.append(asyncio.create_task(self._keep_kubernetes_service()))
        self._tasks.append(asyncio.create_task(self._keep_repairing()))
        await self.rbac_feed.start()
        await self.aggregator.start()
        if self.node_authorizer is not None and self.node_authorizer.feed is not None:
            await self.node_authorizer.feed.start()
        if self.compaction_window > 0:
            self._tasks.append(asyncio.create_task(self.store.compactor(
                window_seconds=self.compaction_window,
                interval=min(60.0, self.compaction_window / 2))))

    async def _keep_flowcontrol_status(self) -> None:
        """APF's config-consumer: the FlowSchemas' Dangling conditions follow the config."""
        assert self.flowcontrol is not None
        while True:
            await self.flowcontrol.changed.wait()
            self.flowcontrol.changed.clear()
            await asyncio.sleep(0.2)  # one pass for a burst of changes
            try:
                await flowcontrol_bootstrap.update_status(self.resources)
            except (StorageError, errors.APIError, OSError) as e:  # the next change tries again
                log.warning("flowcontrol status: %s", e)

    async def repair_allocations(self) -> None:
        """A pass of the repair controllers (at start, then every REPAIR_INTERVAL):
        the allocation bitmaps are brought in line with what the stored Services use."""
        rt = registry.by_plural("services")
        listed = await self.store.list(rt.prefix())
        services = [orjson.loads(kv.value) for kv in listed.items]
        for note in await self.service_allocations.repair(services):
            log.warning("service allocation repair: %s", note)

    async def _keep_repairing(self) -> None:
        while True:
            await asyncio.sleep(REPAIR_INTERVAL)
            try:
                await self.repair_allocations()
            except (StorageError, errors.APIError, OSError) as e:  # the next pass tries again
                log.warning("service allocation repair: %s", e)

    def openid_metadata(self) -> tuple[bytes, bytes] | None:
        """The OIDC discovery document and JWKS, rendered once; None (and a warning, once)
        when the issuer cannot have them, as kube-apiserver then serves neither."""
        if self._openid is None:
            address, port = self._advertised()
            host = f"[{address}]" if ":" in address else address
            sa = self.service_accounts
            try:
                self._openid = serviceaccount.openid_metadata(
                    sa.issuer.issuer, sa.authenticator.keys,
                    jwks_uri=getattr(self.flags, "service_account_jwks_uri", "") or "",
                    external_address=f"{host}:{port}")
            except ValueError as e:
                log.warning("OIDC discovery disabled: %s", e)
                self._openid = False
        return self._openid or None

    def _advertised(self) -> tuple[str, int]:
        """(--advertise-address, else the first bind address that is neither loopback
        nor unspecified, else the first; the secure port)."""
        import ipaddress
        flags = self.flags
        port = getattr(flags, "port", 6443) or 6443
        if getattr(flags, "advertise_address", ""):
            return flags.advertise_address, port
        binds = [a.strip() for a in (getattr(flags, "bind_address", "") or "127.0.0.1").split(",") if a.strip()]
        for a in binds:
            try:
                ip = ipaddress.ip_address(a)
            except ValueError:
                continue
            if not ip.is_loopback and not ip.is_unspecified:
                return a, port
        return (binds[0] if binds and not ipaddress.ip_address(binds[0]).is_unspecified
                else "127.0.0.1"), port

    async def reconcile_kubernetes_service(self) -> None:
        address, port = self._advertised()
        peers = await kubernetesservice.renew_lease(self.store, address, port)
        await kubernetesservice.reconcile(self.resources, self.service_allocations.ips.first(),
                                          address, port, peers)

    async def _keep_kubernetes_service(self) -> None:
        while True:
            await asyncio.sleep(getattr(self.flags, "endpoint_reconciler_interval", None)
                                or kubernetesservice.INTERVAL)
            try:
                await self.reconcile_kubernetes_service()
            except (StorageError, errors.APIError, OSError) as e:  # the next round tries again
                log.warning("kubernetes service reconcile: %s", e)

    async def stop(self) -> None:
        self.stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:  # the other API servers drop this one from the Endpoints at their next round
            await kubernetesservice.release_lease(self.store, *self._advertised())
        except (StorageError, OSError) as e:
            log.warning("cannot release the master lease: %s", e)
        if self._kubelet_http is not None:
            await self._kubelet_http.aclose()
        await self.crds.stop()
        await self.rbac_feed.stop()
        if self.flowcontrol_feed is not None:
            await self.flowcontrol_feed.stop()
        await self.aggregator.stop()
        if self.node_authorizer is not None and self.node_authorizer.feed is not None:
            await self.node_authorizer.feed.stop()
        await self.cache.stop()
        await self.store.close()
        if self.audit is not None:
            await self.audit.stop()  # flushes what is buffered

    async def get_object(self, resource: str, namespace: str, name: str) -> dict | None:
        """cached_object's read, by resource: the serviceaccount module's getter (tokens'
        ServiceAccounts, Pods, Secrets and Nodes). Shared and read-only."""
        rt = registry.by_plural(resource)
        return await self.cached_object(resource)(namespace if rt is not None and rt.namespaced else "", name)

    # -- dispatch -------------------------------------------------------------------

    async def serve(self, request: Request) -> tuple[Response, tuple[str, ...] | None]:
        """The response, and the request's metric labels (None for a path that names no
        resource, which kube-apiserver does not count either)."""
        labels = None
        try:
            target = parse_path(request.scope["path"])  # request.url would parse the Host header too
            labels = request_labels(request, target)
            response = await self.dispatch(request, target)
            if deprecated := target.rt.extra.get("deprecation"):  # a CRD's deprecated version
                said = response.headers.get("Warning")
                response.headers["Warning"] = ", ".join(filter(None, (said, warning_header([deprecated]))))
            return response, labels
        except errors.APIError as err:
            return status_response(err), labels
        except ClientDisconnect:
            return Response(status_code=499), labels
        except TooLarge:
            return status_response(errors.TooLarge("the object is too large to store")), labels
        except Unavailable as exc:
            return status_response(errors.ServerTimeout(f"etcd is unavailable: {exc}", retry_after=1)), labels
        except NoSpace as exc:  # no Retry-After: space comes back only by an operator's hand
            return status_response(errors.InsufficientStorage(str(exc))), labels
        except Exception:  # noqa: BLE001 - the last line of defence; always a bug
            log.exception("internal error serving %s %s", request.method, request.url)
            return status_response(errors.InternalError("an internal error occurred")), labels

    async def dispatch(self, request: Request, t: Target) -> Response:
        handler = ROUTES.get((verb(request, t), t.subresource))
        if t.rt.extra.get("review") and handler is not API._create:
            handler = None
        if handler is None:
            if t.subresource in ("binding", "eviction"):
                raise errors.MethodNotAllowed(f"only POST is allowed on pods/{t.subresource}")
            raise errors.MethodNotAllowed("the server does not allow this method on the requested resource")
        return await handler(self, request, t)

    # -- one handler per (verb, subresource) ----------------------------------------------

    def _selection(self, request: Request, t: Target) -> Selection:
        q = request.query_params
        return Selection(t.rt, t.namespace, q.get("labelSelector", ""), q.get("fieldSelector", ""))

    async def _list(self, request: Request, t: Target) -> Response:
        return await self.list(request, t.rt, self._selection(request, t))

    async def _watch(self, request: Request, t: Target) -> Response:
        return await self.watch(request, t.rt, self._selection(request, t))

    async def _create(self, request: Request, t: Target) -> Response:
        body = decode_body(await read_body(request), request.headers.get("content-type", ""))
        if t.rt.extra.get("review"):
            return await reviews.create(self, request, t.rt, t.namespace, body)
        if t.rt.extra.get("terminating"):
            raise crds.terminating_error("create")
        opts = write_options(request, admit=self.admitter(request))
        obj = await self.resources.create(t.rt, t.namespace, body, opts)
        return self.object_response(obj, 201, opts.warnings)

    async def _delete_collection(self, request: Request, t: Target) -> Response:
        sel = self._selection(request, t)
        options = await self.delete_options(request)
        items, revision = await self.resources.delete_collection(
            t.rt, sel, options, WriteOptions(dry_run=dry_run(request.query_params),
                                             admit=self.admitter(request)))
        return json_response({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version,
                              "metadata": {"resourceVersion": str(revision)}, "items": items})

    async def _get(self, request: Request, t: Target) -> Response:
        obj = await self.resources.get(t.rt, t.namespace, t.name)
        return self.object_response(obj, table_rt=t.rt, request=request)

    async def _update(self, request: Request, t: Target) -> Response:
        body = decode_body(await read_body(request), request.headers.get("content-type", ""))
        opts = write_options(request, admit=self.admitter(request))
        obj = await self.resources.update(t.rt, t.namespace, t.name, body, opts,
                                          subresource=main_or_status(t))
        return self.object_response(obj, 200, opts.warnings)

    async def _patch(self, request: Request, t: Target) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            return await self._apply(request, t)
        # Custom resources have no strategic merge patch (no patch strategies to follow).
        body = decode_body(await read_body(request), ctype,
                           CR_PATCH_TYPES if t.rt.extra.get("crd") else PATCH_TYPES)
        obj = await self.resources.patch(t.rt, t.namespace, t.name, ctype, body,
                                         opts := write_options(request, admit=self.admitter(request)),
                                         subresource=main_or_status(t))
        return self.object_response(obj, 200, opts.warnings)

    async def _apply(self, request: Request, t: Target) -> Response:
        body = decode_body(await read_body(request), "application/apply-patch+yaml", PATCH_TYPES)
        opts = write_options(request, apply=True, admit=self.admitter(request))
        obj, created = await self.resources.apply(t.rt, t.namespace, t.name, body, opts,
                                                  subresource=main_or_status(t))
        return self.object_response(obj, 201 if created else 200, opts.warnings)

    async def _delete(self, request: Request, t: Target) -> Response:
        options = await self.delete_options(request)
        obj, gone = await self.resources.delete(t.rt, t.namespace, t.name, options,
                                                WriteOptions(dry_run=dry_run(request.query_params),
                                                             admit=self.admitter(request)))
        # Kubernetes answers 202 only for an object still held after a delete that asked,
        # with the deprecated orphanDependents: false, for its dependents to go first;
        # every other delete is 200, whether the object went or a grace period or
        # finalizers hold it (handlers/delete.go keeps this for existing clients).
        held_for_dependents = not gone and options.get("orphanDependents") is False
        return self.object_response(obj, 202 if held_for_dependents else 200)

    async def _bind(self, request: Request, t: Target) -> Response:
        body = decode_body(await read_body(request), request.headers.get("content-type", ""))
        await self.resources.bind(t.rt, t.namespace, t.name, body,
                                  WriteOptions(dry_run=dry_run(request.query_params),
                                               admit=self.admitter(request)))
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "code": 201}, 201)

    async def _evict(self, request: Request, t: Target) -> Response:
        """pods/eviction: a delete that honours PodDisruptionBudgets (apiserver/eviction.py)."""
        body = decode_body(await read_body(request), request.headers.get("content-type", ""))
        await eviction.evict(self.resources, t.namespace, t.name, body,
                             WriteOptions(dry_run=dry_run(request.query_params),
                                          admit=self.admitter(request)))
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "code": 201}, 201)

    async def _token(self, request: Request, t: Target) -> Response:
        """serviceaccounts/<name>/token: a TokenRequest answered with a signed token."""
        body = decode_body(await read_body(request), request.headers.get("content-type", ""))
        sa, warnings = self.service_accounts, []
        out = await serviceaccount.token_request(sa.issuer, self.get_object, t.namespace, t.name, body,
                                                 audiences=sa.audiences, max_expiration=sa.max_expiration,
                                                 warnings=warnings)
        return self.object_response(out, 201, warnings)

    async def _get_scale(self, request: Request, t: Target) -> Response:
        return json_response(await self.resources.get_scale(t.rt, t.namespace, t.name))

    async def _update_scale(self, request: Request, t: Target) -> Response:
        # Kubernetes takes every patch type on /scale: the official Python client sends a
        # strategic merge patch (of an autoscaling/v1 Scale).
        patch = request.method == "PATCH"
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        body = decode_body(await read_body(request), ctype, PATCH_TYPES if patch else BODY_TYPES)
        opts = WriteOptions(dry_run=dry_run(request.query_params), field_manager=field_manager(request),
                            admit=self.admitter(request))
        return json_response(await self.resources.update_scale(
            t.rt, t.namespace, t.name, body, opts, patch_type=ctype if patch else None))

    async def _log(self, request: Request, t: Target) -> Response:
        pod = await self.resources.get(t.rt, t.namespace, t.name)
        container = pod_container(pod, request.query_params.get("container"))
        if not (pod.get("spec") or {}).get("nodeName"):
            return Response(b"", media_type="text/plain")  # nothing ran yet: no log
        return await self.proxy_log(request, pod, container)

    async def _exec_without_upgrade(self, request: Request, t: Target) -> Response:
        pod = await self.resources.get(t.rt, t.namespace, t.name)
        pod_container(pod, request.query_params.get("container"))
        raise errors.BadRequest("Upgrade request required")

    async def _portforward_without_upgrade(self, request: Request, t: Target) -> Response:
        """pods/portforward as plain HTTP: a SPDY/3.1 upgrade (apiserver/portforward.py's
        http_protocol lets the connection be taken over) or 400 Upgrade request required."""
        pod = await self.resources.get(t.rt, t.namespace, t.name)
        upgrade = (request.scope.get("extensions") or {}).get(portforward.SPDY_UPGRADE)
        if upgrade is None or not request.headers.get("upgrade", "").lower().startswith("spdy/3.1"):
            raise errors.BadRequest("Upgrade request required")
        offered = [p.strip() for v in request.headers.getlist("x-stream-protocol-version") for p in v.split(",")]
        if not offered:
            raise errors.BadRequest("unable to upgrade: X-Stream-Protocol-Version is required")
        if "portforward.k8s.io" not in offered:
            raise errors.Forbidden(f"unable to upgrade: unable to negotiate protocol: client supports "
                                   f"[{' '.join(offered)}], server accepts [portforward.k8s.io]")
        if not (pod.get("spec") or {}).get("nodeName"):
            raise no_kubelet(pod)
        return _Upgraded(lambda: portforward.serve_upgraded(upgrade, self.kubelet_portforward(pod)))

    async def exec(self, ws: WebSocket) -> None:
        """`pods/{name}/exec` over WebSocket (kubectl exec): channel-framed messages, the
        first byte naming the stream (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize), relayed
        to and from the node's kubelet. Without one, a failure Status on the error channel.
        Counted as kube-apiserver counts it: a long-running GET of pods/exec, answered 101
        once upgraded."""
        labels = ("GET", "", "", "v1", "pods", "exec", "resource", "apiserver")
        start, code = time.perf_counter(), 500
        metrics.longrunning(labels, 1)
        try:
            code = await self._exec(ws)
        finally:
            metrics.longrunning(labels, -1)
            metrics.record_request(labels, code, time.perf_counter() - start)

    async def _exec(self, ws: WebSocket) -> int:
        try:
            pods = registry.by_plural("pods")
            pod = await self.resources.get(pods, ws.path_params["namespace"], ws.path_params["name"])
            pod_container(pod, ws.query_params.get("container"))
            if not ws.query_params.getlist("command"):
                raise errors.BadRequest("you must specify at least 1 command")
            protocol = next((p for p in EXEC_PROTOCOLS if p in ws.scope.get("subprotocols", ())), None)
            if protocol is None:
                raise errors.BadRequest("a WebSocket subprotocol is required, one of: "
                                        + ", ".join(EXEC_PROTOCOLS))
        except errors.APIError as err:
            await ws.send_denial_response(status_response(err))
            return err.code
        await ws.accept(subprotocol=protocol)
        try:
            await self.proxy_exec(ws, pod, pod_container(pod, ws.query_params.get("container")), protocol)
        except errors.APIError as err:
            await ws.send_bytes(b"\x03" + orjson.dumps(err.to_status()))
        await ws.close()
        return 101

    async def portforward(self, ws: WebSocket) -> None:
        """`pods/{name}/portforward` over WebSocket (apiserver/portforward.py), counted
        as kube-apiserver counts it: a long-running GET of pods/portforward."""
        labels = ("GET", "", "", "v1", "pods", "portforward", "resource", "apiserver")
        start, code = time.perf_counter(), 500
        metrics.longrunning(labels, 1)
        try:
            try:
                pod = await self.resources.get(registry.by_plural("pods"), ws.path_params["namespace"],
                                               ws.path_params["name"])
                protocol, ports = portforward.negotiate(ws)
                if not (pod.get("spec") or {}).get("nodeName"):
                    raise no_kubelet(pod)
            except errors.APIError as err:
                await ws.send_denial_response(status_response(err))
                code = err.code
                return
            await ws.accept(subprotocol=protocol)
            code = 101
            await portforward.serve(ws, protocol, ports, self.kubelet_portforward(pod))
            with contextlib.suppress(RuntimeError, OSError):
                await ws.close()
        finally:
            metrics.longrunning(labels, -1)
            metrics.record_request(labels, code, time.perf_counter() - start)

    def kubelet_portforward(self, pod: dict) -> portforward.Dial:
        """Dials the kubelet's /portForward for the pod; its refusal comes out as the
        APIError its Status names."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        md = pod["metadata"]

        @contextlib.asynccontextmanager
        async def dial(ports: list[int], protocol: str):
            url = (f"{'wss' if self.kubelet_tls else 'ws'}://{await self.kubelet_address(pod)}/portForward/"
                   f"{md['namespace']}/{md['name']}?" + "&".join(f"port={p}" for p in ports))
            try:
                conn = await connect(url, subprotocols=[protocol], additional_headers=self.kubelet_headers,
                                     max_size=None, open_timeout=10, ssl=self.kubelet_tls)
            except InvalidStatus as exc:
                try:
                    raise errors.from_status(orjson.loads(exc.response.body)) from None
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    raise errors.InternalError(f"kubelet: {exc}") from None
            except (OSError, TimeoutError, WebSocketException) as exc:
                raise errors.InternalError(f'error dialing the kubelet at "{url}": {exc}') from None
            try:
                yield conn
            finally:
                await conn.close()
        return dial

    # -- the node's kubelet: pods/log and pods/exec are proxied to it ---------------------

    async def kubelet_address(self, pod: dict) -> str:
        """host:port of the kubelet serving the pod's node, from the Node's status
        (InternalIP, daemonEndpoints.kubeletEndpoint.Port); no_kubelet() if it has none."""
        node_name = (pod.get("spec") or {}).get("nodeName")
        try:
            node = await self.resources.get(registry.by_plural("nodes"), "", node_name) if node_name else {}
        except errors.NotFound:
            node = {}
        status = node.get("status") or {}
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        ip = next((a.get("address") for a in status.get("addresses") or []
                   if a.get("type") == "InternalIP"), None)
        if not port or not ip:
            raise no_kubelet(pod)
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    async def proxy_log(self, request: Request, pod: dict, container: str) -> Response:
        md = pod["metadata"]
        scheme = "https" if self.kubelet_tls else "http"
        url = f"{scheme}://{await self.kubelet_address(pod)}/containerLogs/{md['namespace']}/{md['name']}/{container}"
        if self._kubelet_http is None:
            self._kubelet_http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None),
                                                   verify=self.kubelet_tls or True)
        http = self._kubelet_http
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "container"]
        try:
            resp = await http.send(http.build_request("GET", url, params=params, headers=self.kubelet_headers),
                                   stream=True)
        except httpx.HTTPError as exc:
            raise errors.InternalError(f'Get "{url}": {exc or type(exc).__name__}') from None

        async def body():
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            finally:
                await resp.aclose()
        return WatchResponse(body(), status_code=resp.status_code,
                             media_type=resp.headers.get("content-type", "text/plain"))

    async def proxy_exec(self, ws: WebSocket, pod: dict, container: str, protocol: str) -> None:
        """Relay frames between the client and the kubelet's exec WebSocket until either
        side closes."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        md = pod["metadata"]
        query = "&".join(f"{k}={quote(v)}" for k, v in ws.query_params.multi_items() if k != "container")
        url = (f"{'wss' if self.kubelet_tls else 'ws'}://{await self.kubelet_address(pod)}/exec/"
               f"{md['namespace']}/{md['name']}/{container}?{query}")
        try:
            async with connect(url, subprotocols=[protocol], additional_headers=self.kubelet_headers,
                               max_size=None, open_timeout=10, ssl=self.kubelet_tls) as kubelet:
                # Two pumps in one task group: the first to end, however it ends (its
                # side closed, or a send to the other side failed because that one
                # closed), cancels the other, and the group waits for both.
                async with anyio.create_task_group() as tg:
                    async def pump(relay: Callable[[], Awaitable[None]]) -> None:
                        try:
                            await relay()
                        except (OSError, RuntimeError, WebSocketException, WebSocketDisconnect) as exc:
                            log.log(klog.V(4), "exec relay for %s/%s ended: %r", md["namespace"], md["name"], exc)
                        finally:
                            tg.cancel_scope.cancel()

                    async def down() -> None:
                        async for frame in kubelet:
                            await ws.send_bytes(frame if isinstance(frame, bytes) else frame.encode())

                    async def up() -> None:
                        while (msg := await ws.receive())["type"] != "websocket.disconnect":
                            await kubelet.send(msg.get("bytes") or (msg.get("text") or "").encode())

                    tg.start_soon(pump, down)
                    tg.start_soon(pump, up)
        except InvalidStatus as exc:  # the kubelet refused: relay its Status
            try:
                status = orjson.loads(exc.response.body)
            except orjson.JSONDecodeError:
                status = errors.InternalError(f"kubelet: {exc}").to_status()
            await ws.send_bytes(b"\x03" + orjson.dumps(status))
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise errors.InternalError(f'error dialing the kubelet at "{url}": {exc}') from None

    async def delete_options(self, request: Request) -> dict:
        raw = await read_body(request)
        options: Any = {}
        if raw.strip():
            options = decode_body(raw, request.headers.get("content-type", ""))
            if not isinstance(options, dict):
                raise errors.BadRequest("the body of a delete request must be DeleteOptions")
            check_delete_options(options)
        q = request.query_params
        if "gracePeriodSeconds" in q:
            try:
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise errors.BadRequest("gracePeriodSeconds must be an integer") from None
        if "propagationPolicy" in q:
            options["propagationPolicy"] = q["propagationPolicy"]
        if "orphanDependents" in q:
            if q["orphanDependents"] not in ("true", "false"):
                raise errors.BadRequest("orphanDependents must be true or false")
            options["orphanDependents"] = q["orphanDependents"] == "true"
        return options

    def object_response(self, obj: dict, status: int = 200, warnings: list[str] | None = None,
                        table_rt: registry.ResourceType | None = None,
                        request: Request | None = None) -> Response:
        headers = {}
        if warnings:
            headers["Warning"] = warning_header(warnings[:20])
        if table_rt is not None and request is not None and wants_table(request):
            entry = Entry.of("", obj, 0)
            return json_response(tables.table(table_rt, [entry], obj["metadata"].get("resourceVersion", ""),
                                              wide=True), status, headers)
        return json_response(obj, status, headers or None)

    async def list(self, request: Request, rt: registry.ResourceType, sel: Selection) -> Response:
        q = request.query_params
        entries, revision, token, remaining = await self.resources.list(
            rt, sel, limit=query_int(q, "limit"), continue_token=q.get("continue", ""),
            resource_version=q.get("resourceVersion"), rv_match=q.get("resourceVersionMatch", ""))
        if wants_table(request):
            table = tables.table(rt, entries, str(revision), wide=True)
            if token:
                table["metadata"]["continue"] = token
            return json_response(table)
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if token:
            meta["continue"] = token
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        head = orjson.dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        if len(entries) <= STREAM_LIST_ITEMS:
            return Response(b"".join((head[:-1], b',"items":[', b",".join(e.raw for e in entries), b"]}")),
                            media_type=JSON)
        return StreamingResponse(_list_chunks(head[:-1] + b',"items":[', entries), media_type=JSON)

    async def watch(self, request: Request, rt: registry.ResourceType, sel: Selection) -> Response:
        q = request.query_params
        timeout = query_int(q, "timeoutSeconds") or 1800
        as_table = wants_table(request)
        stream = await self.resources.watch(rt, sel, resource_version=q.get("resourceVersion"),
                                            bookmarks=query_flag(q, "allowWatchBookmarks"))

        def line(kind: str, item: Any) -> bytes:
            """A BOOKMARK's, an ERROR's or (as_table) a Table's line; an object's is
            written straight from the cache's bytes (see body)."""
            if kind == "BOOKMARK":
                obj = {"kind": rt.kind, "apiVersion": rt.api_version,
                       "metadata": {"resourceVersion": str(item)}}
                return b'{"type":"BOOKMARK","object":' + orjson.dumps(obj) + b"}\n"
            if kind == "ERROR":
                return b'{"type":"ERROR","object":' + orjson.dumps(item.to_status()) + b"}\n"
            body = orjson.dumps(tables.table(rt, [item], str(item.revision), wide=True))
            return b'{"type":"' + kind.encode() + b'","object":' + body + b"}\n"

        async def body():
            # The deadline guards only the wait for the next batch: a timeout must not
            # fire while the server is in the middle of writing a chunk.
            deadline = asyncio.get_running_loop().time() + timeout
            try:
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            batch = await stream.__anext__()
                    except (TimeoutError, StopAsyncIteration):
                        return
                    metrics.watch_events(rt, len(batch))
                    # In pieces of about LIST_CHUNK bytes, each written once the connection
                    # has taken the previous one: a client that stops reading holds one
                    # piece here, its backlog stays in the cache's bounded queue.
                    parts, size = [], 0
                    for kind, item in batch:
                        if kind in _EVENT_HEAD and not as_table:
                            # The cache's bytes go into the chunk as they are: no per-event
                            # copy is made, and none is kept.
                            parts += (_EVENT_HEAD[kind], item.raw, b"}\n")
                            size += len(item.raw) + 32
                        else:
                            part = line(kind, item)
                            parts.append(part)
                            size += len(part)
                        if size >= LIST_CHUNK:
                            yield b"".join(parts)
                            parts, size = [], 0
                    if parts:
                        yield b"".join(parts)
            finally:
                await stream.aclose()

        return WatchResponse(body(), media_type=JSON,
                                 headers={"Cache-Control": "no-cache, private"})


class _Transformers(dict):
    """The transformers of --encryption-provider-config by etcd key prefix: the built-in
    kinds' up front, a group's resource's (`/registry/<group>/<plural>/`: custom
    resources) worked out the first time a key under it is read or written, whether or
    not its kind is served yet (the watch cache reads every key at start)."""

    def __init__(self, rules: list[ResourceRule]):
        super().__init__(transformers_by_prefix(
            rules, ((rt.group, rt.plural, rt.prefix()) for rt in registry.RESOURCES)))
        self.rules = rules

    def get(self, prefix: str, default: Any = None) -> Any:
        if prefix in self:
            return self[prefix]
        parts = prefix.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "registry" or "." not in parts[1]:
            return default
        found = self[prefix] = transformers_by_prefix(self.rules, [(parts[1], parts[2], prefix)]).get(prefix)
        return found


class _Upgraded(Response):
    """The response to a request whose connection was taken over (a SPDY/3.1 upgrade):
    `run` writes the 101 itself and serves the connection to its end."""

    def __init__(self, run: Callable[[], Awaitable[None]]):
        super().__init__(status_code=101)
        self.run = run

    async def __call__(self, scope, receive, send) -> None:
        scope["minik8s.upgraded"] = True  # answered 101, outside the ASGI messages
        await self.run()


_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete", "POST": "create"}


def verb(request: Request, t: Target) -> str:
    """The Kubernetes verb a request asks for ("" for none): list, watch, create and
    deletecollection on a collection; get, update, patch, delete on an object; create
    (POST) only on a collection or on a subresource that takes it."""
    m = request.method
    if t.name is None:
        if m == "GET":
            return "watch" if query_flag(request.query_params, "watch") else "list"
        return {"POST": "create", "DELETE": "deletecollection"}.get(m, "")
    if m == "POST" and t.subresource is None:
        return ""
    return _VERBS.get(m, "")


_METRIC_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "CONNECT", "GET", "LIST", "WATCH"}
LONGRUNNING_SUBRESOURCES = ("log", "exec", "portforward")


def request_labels(request: Request, t: Target) -> tuple[str, ...]:
    """apiserver_request_total's labels but `code`, as kube-apiserver's MonitorRequest
    derives them: the HTTP method made canonical (LIST, WATCH, APPLY), the scope, and
    the dryRun values."""
    m = request.method
    scope = "resource" if t.name is not None else "namespace" if t.namespace else "cluster"
    if m in ("GET", "HEAD"):
        m = "GET" if scope == "resource" else \
            "WATCH" if query_flag(request.query_params, "watch") else "LIST"
    elif m == "PATCH" and request.headers.get("content-type", "").startswith("application/apply-patch+yaml"):
        m = "APPLY"
    elif m not in _METRIC_VERBS:
        m = "other"
    dry = request.query_params.getlist("dryRun") if b"dryRun" in request.scope["query_string"] else ()
    return (m, "" if not dry else "All" if all(v == "All" for v in dry) else "invalid",
            t.rt.group, t.rt.version, t.rt.plural, t.subresource or "", scope, "apiserver")


def main_or_status(t: Target) -> str | None:
    """The subresource an update writes through: `status` (or a CSR's `approval`), or the
    main resource (also for namespaces/x/finalize, which writes spec.finalizers)."""
    return t.subresource if t.subresource in ("status", "approval") else None


def write_options(request: Request, *, apply: bool = False,
                  admit: Callable[[dict, dict | None], Awaitable[None]] | None = None) -> WriteOptions:
    q = request.query_params
    force = False
    if apply:
        raw = q.get("force", "false")
        if raw not in ("true", "false"):
            raise errors.BadRequest(f'invalid value for force: "{raw}"')
        force = raw == "true"
    return WriteOptions(dry_run=dry_run(q), field_validation=field_validation(q),
                        field_manager=field_manager(request, apply=apply), force=force,
                        warnings=[], admit=admit, user=request.scope.get("user"))


# (verb, subresource) -> handler: what the server does for every request on a resource
# path. A pair that is not here is 405 Method Not Allowed.
ROUTES = {
    ("list", None): API._list,
    ("watch", None): API._watch,
    ("create", None): API._create,
    ("deletecollection", None): API._delete_collection,
    ("get", None): API._get,
    ("update", None): API._update,
    ("patch", None): API._patch,
    ("delete", None): API._delete,
    **{(v, sub): h for sub in ("status", "finalize", "approval")
       for v, h in (("get", API._get), ("update", API._update), ("patch", API._patch))},
    ("create", "binding"): API._bind,
    ("create", "eviction"): API._evict,
    ("create", "token"): API._token,
    ("get", "scale"): API._get_scale,
    ("update", "scale"): API._update_scale,
    ("patch", "scale"): API._update_scale,
    ("get", "log"): API._log,
    ("get", "exec"): API._exec_without_upgrade,  # a WebSocket upgrade is routed to API.exec
    ("create", "exec"): API._exec_without_upgrade,
    ("get", "portforward"): API._portforward_without_upgrade,  # upgrades go to API.portforward
    ("create", "portforward"): API._portforward_without_upgrade,
}


class ResourceEndpoint:
    """The endpoint of every resource path, as a plain ASGI app: the router calls it
    without Starlette's request/response adapter and its exception layer, which
    `API.serve` does not need (it answers every error itself)."""

    def __init__(self, api: API):
        self.api = api

    async def __call__(self, scope, receive, send) -> None:
        start = time.perf_counter()
        response, labels = await self.api.serve(Request(scope, receive, send))
        if labels is None:
            await response(scope, receive, send)
            return
        long = labels[0] == "WATCH" or labels[5] in LONGRUNNING_SUBRESOURCES
        if long:
            metrics.longrunning(labels, 1)
        try:
            await response(scope, receive, send)
        finally:
            if long:
                metrics.longrunning(labels, -1)
            elapsed = time.perf_counter() - start
            metrics.record_request(labels, response.status_code, elapsed)
            if klog.enabled(3):  # kube-apiserver's httplog line, at the same verbosity
                klog.info_s(log, 3, "HTTP", verb=labels[0], URI=scope["path"] + (
                    "?" + scope["query_string"].decode() if scope["query_string"] else ""),
                    latency=f"{elapsed * 1000:.3f}ms", resp=response.status_code)


async def not_found(scope, receive, send) -> None:
    """The router's answer for a path no route takes."""
    if scope["type"] == "websocket":
        await WebSocketClose()(scope, receive, send)
        return
    await status_response(errors.NotFound("the server could not find the requested resource"))(
        scope, receive, send)


class ReadOnly:
    """A read-only endpoint (health, version, discovery, OpenAPI) as an ASGI app that
    answers any method but GET and HEAD with a 405 Status."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]):
        self.endpoint = endpoint

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope, receive, send)
        if request.method in ("GET", "HEAD"):
            response = await self.endpoint(request)
        else:
            response = status_response(errors.MethodNotAllowed(
                "the server does not allow this method on the requested resource"))
        await response(scope, receive, send)


class Secured:
    """The server's ASGI entry: every HTTP request and WebSocket is authenticated and
    authorized (API.authenticate_and_authorize) before the router sees it, the fixed
    paths (/version, health, /metrics, OpenAPI, discovery) included, as kube-apiserver's
    filter chain does. A refusal is the 401 or 403 Status; the lifespan passes through."""

    def __init__(self, app: Router, api: API):
        self.app = app
        self.api = api

    async def __call__(self, scope, receive, send) -> None:
        if self.api.audit is not None and scope["type"] in ("http", "websocket"):
            await self.audited(scope, receive, send)
            return
        await self.secured(scope, receive, send)

    async def audited(self, scope, receive, send) -> None:
        """Serve, then give the audit log the request's event if its policy asks for one.
        Outside authentication and authorization, as kube-apiserver's WithAudit, so a 401
        or a 403 is logged too; the policy is asked once the user is known. Every response
        carries its Audit-ID header."""
        audit = self.api.audit
        assert audit is not None
        received = time.time()
        audit_id = new_audit_id(scope)
        code = 0
        failure: list[bytes] = []  # the Status body of a failure, for responseStatus

        async def send_and_note(message) -> None:
            nonlocal code
            kind = message["type"]
            # A WebSocket (pods/exec) is accepted (101), refused with a response
            # (websocket.http.response.*), or closed before acceptance (403, as uvicorn says).
            if kind in ("http.response.start", "websocket.http.response.start", "websocket.accept"):
                code = message.get("status", 101)
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"audit-id", audit_id.encode())]}
            elif kind in ("http.response.body", "websocket.http.response.body") and code >= 300 \
                    and len(failure) < 4:
                failure.append(message.get("body", b""))
            elif kind == "websocket.close" and not code:
                code = 403
            await send(message)

        try:
            await self.secured(scope, receive, send_and_note)
        finally:
            attrs = audit.attributes(scope)
            if not code and scope.get("minik8s.upgraded"):
                code = 101
            if attrs is not None:
                audit.record(audit_event(scope, attrs, audit_id=audit_id, code=code or 500,
                                         body=b"".join(failure), received=received,
                                         completed=time.time()))

    async def secured(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            refused = await self.api.authenticate_and_authorize(scope)
            if refused is not None:
                if scope["type"] == "websocket":
                    await WebSocket(scope, receive, send).send_denial_response(status_response(refused))
                elif self.api.flowcontrol is not None and "attributes" in scope:
                    # Authenticated, then refused by authorization, which kube-apiserver
                    # runs after APF: the refusal is classified and limited too.
                    await self.limited(self.api.flowcontrol, scope, receive, send, status_response(refused))
                else:
                    await status_response(refused)(scope, receive, send)
                return
            if scope["type"] == "http" and self.api.flowcontrol is not None:
                await self.limited(self.api.flowcontrol, scope, receive, send, self.routed)
                return
        await self.routed(scope, receive, send)

    async def routed(self, scope, receive, send) -> None:
        # An aggregated group/version goes to its extension server, once authorized
        # here, as kube-aggregator serves in front of kube-apiserver's own handlers.
        apisvc = self.api.aggregator.claims(scope["path"]) if scope["type"] == "http" else None
        if apisvc is not None:
            response = await self.api.aggregator.proxy.serve(Request(scope, receive, send), apisvc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def limited(self, fc: apf.Controller, scope, receive, send, inner) -> None:
        """API Priority and Fairness (apiserver/flowcontrol/apf.py) around `inner` (an
        ASGI app), after authentication and before authorization's answer, as in
        kube-apiserver's filter chain: the request waits for a seat of its priority level,
        or is refused 429 with Retry-After. A watch gives its seat back once its response
        has started; other long-running requests are not limited."""
        attrs: Attributes = scope["attributes"]
        if attrs.subresource in LONGRUNNING_SUBRESOURCES or attrs.subresource in ("attach", "proxy"):
            await inner(scope, receive, send)
            return
        found = fc.classify(attrs)
        if found is None:  # before the config is loaded
            await inner(scope, receive, send)
            return
        schema, level = found
        headers = [(b"x-kubernetes-pf-flowschema-uid", schema.uid.encode()),
                   (b"x-kubernetes-pf-prioritylevel-uid", level.uid.encode())]
        try:
            seat = await fc.admit(schema, level, attrs)
        except apf.Rejected:
            response = status_response(errors.TooManyRequests(
                "Too many requests, please try again later.", retry_after=apf.RETRY_AFTER))
            response.raw_headers.extend(headers)
            await response(scope, receive, send)
            try:  # counted in apiserver_request_total, code 429, as kube-apiserver counts it
                metrics.record_request(request_labels(Request(scope), parse_path(scope["path"])), 429, 0.0)
            except errors.APIError:
                pass  # not a resource path: not counted there
            return
        watch = attrs.verb == "watch"

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
                if watch:
                    seat.release()
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                seat.release()

        try:
            await inner(scope, receive, send_with_headers)
        finally:
            seat.release()


def create_app(etcd_servers: list[str], *, compaction_window: float = 300.0,
               bookmark_interval: float = 5.0, kubelet_token: str | None = None,
               kubelet_tls: ssl.SSLContext | None = None,
               authorization_modes: tuple[str, ...] = ("AlwaysAllow",), anonymous_auth: bool = True,
               enable_bootstrap_token_auth: bool = False, plain_http: bool = False,
               flags: Any = None, encryption: list[ResourceRule] | None = None,
               audit_log: AuditLog | None = None,
               service_account_flags: dict[str, Any] | None = None) -> Secured:
    """kubelet_token: presented to plain-HTTP kubelets when proxying log and exec
    (default: $MINIK8S_KUBELET_TOKEN); kubelet_tls: dial kubelets over HTTPS with it
    instead (apiserver/kubeletclient.py). ValueError names an authorization mode that
    cannot be built, or service account flags (see API) that cannot be used.
    encryption: the rules of --encryption-provider-config (apiserver/storage/encryption.py);
    audit_log: --audit-log-path's log (apiserver/audit.py)."""
    etcd_tls = None
    if flags is not None and (flags.etcd_cafile or flags.etcd_certfile or flags.etcd_keyfile):
        if bool(flags.etcd_certfile) != bool(flags.etcd_keyfile):
            raise ValueError("--etcd-certfile and --etcd-keyfile go together")
        etcd_tls = TLSFiles(flags.etcd_cafile, flags.etcd_certfile, flags.etcd_keyfile)
        etcd_tls.credentials()  # an unreadable file is an OSError now, not at start-up
    store: Store = EtcdStore(etcd_servers, tls=etcd_tls)
    if encryption:
        store = EncryptedStore(store, _Transformers(encryption))
    api = API(store, compaction_window=compaction_window, bookmark_interval=bookmark_interval,
              kubelet_token=kubelet_token or os.environ.get("MINIK8S_KUBELET_TOKEN"),
              kubelet_tls=kubelet_tls,
              authorization_modes=authorization_modes, anonymous_auth=anonymous_auth,
              enable_bootstrap_token_auth=enable_bootstrap_token_auth, plain_http=plain_http,
              flags=flags, service_account_flags=service_account_flags)
    api.audit = audit_log
    version_info = version.info()

    async def version_endpoint(request: Request) -> Response:
        return json_response(version_info, headers={"Cache-Control": "no-cache, private"})

    async def health(request: Request) -> Response:
        answer = await api.health.handle(request.scope["path"], request.scope["query_string"].decode())
        if answer is None:
            return status_response(errors.NotFound("the server could not find the requested resource"))
        code, body = answer
        return Response(body.encode(), status_code=code, media_type=healthz.CONTENT_TYPE,
                        headers={"Cache-Control": "no-cache, private", "X-Content-Type-Options": "nosniff"})

    async def openid(request: Request) -> Response:
        """OIDC discovery of the ServiceAccount issuer (readable by
        system:service-account-issuer-discovery, which the bootstrap policy binds to every
        ServiceAccount; anonymous too if an admin binds it so)."""
        docs = api.openid_metadata()
        if docs is None:
            return status_response(errors.NotFound("the server could not find the requested resource"))
        config, keyset = docs
        if request.url.path == serviceaccount.JWKS_PATH:
            body, media = keyset, serviceaccount.JWKS_CONTENT_TYPE
        else:
            body, media = config, JSON
        return Response(body, media_type=media,
                        headers={"Cache-Control": f"public, max-age={serviceaccount.OPENID_MAX_AGE}"})

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def api_root(request: Request) -> Response:
        try:
            return discovery.handle(request, api.aggregator)
        except errors.APIError as err:
            return status_response(err)

    async def openapi_v3(request: Request) -> Response:
        # The index names each document by a content hash, so a document fetched by its
        # current hash never changes and clients may cache it for good.
        remote = api.aggregator.openapi  # the extension servers' documents (aggregator)
        if request.url.path.rstrip("/") == "/openapi/v3":
            return Response(openapi.index(remote), media_type=JSON,
                            headers={"Cache-Control": "no-cache, private"})
        path = request.path_params["path"].strip("/")
        found = openapi.documents().get(path) or remote.get(path)
        if found is None:
            return status_response(errors.NotFound("the server could not find the requested resource"))
        doc, digest = found
        cache = "public, immutable, max-age=31536000" if request.query_params.get("hash") == digest \
            else "no-cache, private"
        return Response(doc, media_type=JSON, headers={"Cache-Control": cache, "Etag": f'"{digest}"'})

    @contextlib.asynccontextmanager
    async def lifespan(app: Router) -> AsyncIterator[None]:
        await api.start()
        try:
            yield
        finally:
            await api.stop()

    discovery_paths = ("/api", "/apis", "/api/{version}", "/apis/{group}", "/apis/{group}/{version}")
    fixed = [("/version", version_endpoint), ("/metrics", metrics_endpoint),
             *((f"/{e}{tail}", health) for e in healthz.ENDPOINTS for tail in ("", "/{check}")),
             ("/openapi/v2", openapi.v2_endpoint),
             ("/openapi/v3", openapi_v3), ("/openapi/v3/{path:path}", openapi_v3),
             (serviceaccount.OPENID_CONFIG_PATH, openid), (serviceaccount.JWKS_PATH, openid),
             *((p, api_root) for p in discovery_paths)]
    resources = ResourceEndpoint(api)
    # Every endpoint is an ASGI app, so a route takes every method (methods=None) and
    # the endpoint answers the ones it does not serve with a Status.
    routes: list[BaseRoute] = [
        # Every path below discovery is a resource's: API.serve parses it and answers
        # every error (a method no verb takes included) as a Status itself. First,
        # because nearly every request is one and the Router tries routes in order (a
        # miss costs ~2 us: with these last, a resource request paid ~35 us).
        Route("/api/{version}/{rest:path}", resources),
        Route("/apis/{group}/{version}/{rest:path}", resources),
        WebSocketRoute("/api/v1/namespaces/{namespace}/pods/{name}/exec", api.exec),
        WebSocketRoute("/api/v1/namespaces/{namespace}/pods/{name}/portforward", api.portforward),
    ]
    routes += [Route(path, ReadOnly(endpoint)) for path, endpoint in fixed]
    return Secured(Router(routes=routes, lifespan=lifespan, default=not_found), api)
