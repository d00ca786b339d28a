"""Who may use the kubelet's endpoint, and for what (pkg/kubelet/server/auth.go and the
kubelet's --client-ca-file, --authorization-mode).

Two modes:
- TLS (--tls-cert-file): the caller is who its client certificate says, the certificate
  having been verified by the TLS handshake against --client-ca-file (a certificate from
  another CA never completes the handshake): CN the user, O the groups, plus
  `system:authenticated`. Without a certificate, with --authentication-token-webhook, a
  bearer token is who the API server's TokenReview says (answers cached for 2 minutes,
  the kubelet's --authentication-token-webhook-cache-ttl). Anyone else is 401. The shared
  token is not accepted.
- plain HTTP: the caller must present the token shared with the API server
  (`Authorization: Bearer`), else 401; there is no user and no authorization.

Authorization maps a request as the kubelet does (GetRequestAttributes): verb from the
HTTP method (GET and HEAD get, POST create, PUT update, PATCH patch, DELETE delete),
resource `nodes`, name the node's, subresource by path (/stats stats, /metrics metrics,
/logs log, /spec spec, /checkpoint checkpoint, /configz configz, /healthz healthz, else
proxy: /containerLogs and /exec are `nodes/proxy`). `AlwaysAllow` allows every
authenticated caller; `Webhook` asks the API server with a SubjectAccessReview and caches
the answer per (user, groups, verb, subresource): allowed for 5 minutes, denied for 30
seconds (the kubelet's --authorization-webhook-cache-*-ttl defaults), on the injected
clock. A denial is 403 worded as the kubelet words it, `Forbidden (user=..., verb=...,
resource=nodes, subresource=...)`; a review that fails is a 500 naming the same.
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from client.clock import Clock, RealClock
from client.rest import Client
from machinery.errors import APIError, Forbidden, InternalError, Unauthorized

log = logging.getLogger("minik8s.kubelet.auth")

AUTHORIZED_TTL = 300.0
UNAUTHORIZED_TTL = 30.0
TOKEN_TTL = 120.0

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}
_SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/spec", "spec"),
                 ("/checkpoint", "checkpoint"), ("/configz", "configz"), ("/healthz", "healthz"))


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attributes:
    user: User
    verb: str
    node: str
    subresource: str


def request_attributes(user: User, method: str, path: str, node: str) -> Attributes:
    sub = next((s for prefix, s in _SUBRESOURCES if path == prefix or path.startswith(prefix + "/")),
               "proxy")
    return Attributes(user, _VERBS.get(method.upper(), ""), node, sub)


def user_from_peer_cert(cert: Mapping[str, Any] | None) -> User | None:
    """The user a verified client certificate (ssl's getpeercert() dict) names."""
    if not cert:
        return None
    cn, orgs = None, []
    for rdn in cert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName" and cn is None:
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return User(cn, (*orgs, "system:authenticated"))


class Authorizer(Protocol):
    async def authorize(self, attrs: Attributes) -> tuple[bool, str]: ...


class AlwaysAllow:
    async def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        return True, ""


class Webhook:
    """SubjectAccessReviews to the API server, cached."""

    def __init__(self, client: Client, *, clock: Clock | None = None,
                 authorized_ttl: float = AUTHORIZED_TTL, unauthorized_ttl: float = UNAUTHORIZED_TTL):
        self.client, self.clock = client, clock or RealClock()
        self.ttls = (unauthorized_ttl, authorized_ttl)
        self._cache: dict[Attributes, tuple[float, bool, str]] = {}
        self.reviews = 0  # SubjectAccessReviews sent (tests read it)

    async def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        now = self.clock.monotonic()
        hit = self._cache.get(attrs)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": attrs.user.name, "groups": list(attrs.user.groups),
                           "resourceAttributes": {"verb": attrs.verb, "group": "", "version": "v1",
                                                  "resource": "nodes", "subresource": attrs.subresource,
                                                  "name": attrs.node}}}
        self.reviews += 1
        answer = await self.client.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                           body=review)
        status = (answer or {}).get("status") or {}
        allowed = bool(status.get("allowed")) and not status.get("denied")
        reason = status.get("reason") or ""
        if len(self._cache) > 10_000:  # a bound on memory, not a policy: drop what expired
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[attrs] = (now + self.ttls[allowed], allowed, reason)
        return allowed, reason


class TokenWebhook:
    """Bearer tokens authenticated by TokenReviews to the API server, cached."""

    def __init__(self, client: Client, *, clock: Clock | None = None, ttl: float = TOKEN_TTL):
        self.client, self.clock, self.ttl = client, clock or RealClock(), ttl
        self._cache: dict[str, tuple[float, User | None]] = {}
        self.reviews = 0

    async def authenticate(self, token: str) -> User | None:
        now = self.clock.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        self.reviews += 1
        answer = await self.client.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
        status = (answer or {}).get("status") or {}
        user = None
        if status.get("authenticated") and (status.get("user") or {}).get("username"):
            u = status["user"]
            user = User(u["username"], tuple(u.get("groups") or ()))
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[token] = (now + self.ttl, user)
        return user


class EndpointAuth:
    """The kubelet endpoint's authentication and authorization of one request."""

    def __init__(self, *, node_name: str, tls: bool, token: str | None = None,
                 authorizer: Authorizer | None = None, token_webhook: TokenWebhook | None = None):
        self.node_name, self.tls, self.token = node_name, tls, token
        self.authorizer: Authorizer = authorizer or AlwaysAllow()
        self.token_webhook = token_webhook

    async def check(self, *, method: str, path: str, headers: Mapping[str, str],
                    peer_cert: Mapping[str, Any] | None) -> APIError | None:
        """None if the request may go on, else the error to answer."""
        if not self.tls:
            auth = headers.get("authorization", "")
            if self.token and auth.startswith("Bearer ") and \
                    hmac.compare_digest(auth[7:].encode(), self.token.encode()):
                return None
            return Unauthorized("Unauthorized")
        user = user_from_peer_cert(peer_cert)
        bearer = headers.get("authorization", "")
        if user is None and self.token_webhook is not None and bearer.startswith("Bearer "):
            try:
                user = await self.token_webhook.authenticate(bearer[7:].strip())
            except Exception as exc:  # noqa: BLE001 - the review could not be made: not known
                log.warning("TokenReview failed: %s", exc)
        if user is None:
            return Unauthorized("Unauthorized")
        attrs = request_attributes(user, method, path, self.node_name)
        what = (f"user={user.name}, verb={attrs.verb}, resource=nodes, "
                f"subresource={attrs.subresource}")
        try:
            allowed, _reason = await self.authorizer.authorize(attrs)
        except Exception as exc:  # noqa: BLE001 - the review could not be made: answered 500
            return InternalError(f"Authorization error ({what}): {exc}")
        if not allowed:
            return Forbidden(f"Forbidden ({what})")
        return None
