"""Who is asking: kube-apiserver's authenticator chain (k8s.io/apiserver/pkg/authentication).

What this module guarantees
- `Chain.authenticate(scope)` answers the `UserInfo` of one ASGI request, trying what
  kube-apiserver tries, in its order:
  1. an x509 client certificate: the TLS layer (apiserver/serving.py) has already
     verified it against --client-ca-file during the handshake and hands the leaf over in
     the ASGI TLS extension (`scope["extensions"]["tls"]["client_cert_chain"]`); its
     subject's CN is the user and its O values the groups;
  2. a bearer token (`Authorization: Bearer <token>`), offered to each token
     authenticator of `token_authenticators` in turn (ServiceAccount tokens first, then
     bootstrap tokens, as kube-apiserver orders them). An authenticator answers the user,
     None (not one of its tokens), or raises `AuthenticationError` (one of its tokens,
     but invalid). A token nobody accepts is "invalid bearer token": a presented
     credential that fails never falls through to anonymous (bearertoken.New);
  3. anonymous, when enabled (--anonymous-auth): `system:anonymous` in
     `system:unauthenticated`, only for a request that presents no credential
     (union.NewFailOnError).
  Every authenticated user (anonymous excepted) also gets `system:authenticated`.
  `ignore_unknown_tokens` (the server's --plain-http mode, for local experiments) makes a
  token that no authenticator claims count as no credential, so a client configured
  with some token still reaches a plain local server as anonymous; a token an
  authenticator claims and refuses is still a 401.
  A request that nothing authenticates raises `AuthenticationError`, which the request
  path answers with the 401 Status `Unauthorized`.
- `BootstrapTokenAuthenticator` accepts `<id>.<secret>` tokens (`[a-z0-9]{6}.[a-z0-9]{16}`)
  held in the `bootstrap-token-<id>` Secret of kube-system (type
  `bootstrap.kubernetes.io/token`) whose `usage-bootstrap-authentication` is "true" and
  whose `expiration`, if any, has not passed. The user is `system:bootstrap:<id>` in
  `system:bootstrappers` plus the Secret's `auth-extra-groups`. As in Kubernetes, every
  refusal is "not mine" (the chain's answer is then 401); the secret is compared in
  constant time.

Concurrency: everything runs on the server's event loop; authenticators read the watch
cache, which only that loop changes.
"""
from __future__ import annotations

import hmac
import re
import time
from functools import lru_cache
from typing import Any, Awaitable, Callable, Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from apiserver.auth.authorizer import ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, ANONYMOUS, UserInfo
from machinery import bootstraptoken, errors

BOOTSTRAP_USER_PREFIX = "system:bootstrap:"
BOOTSTRAPPERS_GROUP = "system:bootstrappers"
_BOOTSTRAP_GROUP = re.compile(r"^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$")


class AuthenticationError(Exception):
    """A credential that was presented and is not valid: the request is answered 401."""


def unauthorized() -> errors.Unauthorized:
    """kube-apiserver's answer to a request it cannot authenticate (responsewriters.Unauthorized)."""
    return errors.Unauthorized("Unauthorized")


class TokenAuthenticator(Protocol):
    async def authenticate_token(self, token: str) -> UserInfo | None: ...


def authenticated(user: UserInfo) -> UserInfo:
    """`user` with `system:authenticated` added (authenticator.AuthenticatedGroupAdder)."""
    if ALL_AUTHENTICATED in user.groups or user.name == ANONYMOUS:
        return user
    return UserInfo(user.name, (*user.groups, ALL_AUTHENTICATED), user.uid, user.extra)


ANONYMOUS_USER = UserInfo(ANONYMOUS, (ALL_UNAUTHENTICATED,))


@lru_cache(maxsize=1024)
def certificate_user(pem: str) -> UserInfo:
    """The user of a verified client certificate: CN the name, O the groups
    (x509.CommonNameUserConversion). Cached: a connection presents one certificate for
    all its requests, and few certificates are in use at once."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    cn = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not cn or not cn[0]:
        raise AuthenticationError("x509: subject with cn=\"\" is not allowed")
    orgs = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return authenticated(UserInfo(cn[0], orgs))


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer` header; None without one (an empty token
    counts as none, as bearertoken.AuthenticateRequest)."""
    for k, v in headers:
        if k == b"authorization":
            scheme, _, token = v.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
    return None


class Chain:
    """The authenticator chain of one API server (see the module docstring)."""

    def __init__(self, *, token_authenticators: list[TokenAuthenticator] | None = None,
                 anonymous: bool = True, ignore_unknown_tokens: bool = False):
        self.token_authenticators: list[TokenAuthenticator] = list(token_authenticators or [])
        self.anonymous = anonymous
        self.ignore_unknown_tokens = ignore_unknown_tokens

    async def authenticate(self, scope: dict) -> UserInfo:
        tls = (scope.get("extensions") or {}).get("tls")
        chain = tls.get("client_cert_chain") if tls else None
        if chain:
            return certificate_user(chain[0])
        token = bearer_token(scope["headers"])
        if token is not None:
            for a in self.token_authenticators:
                user = await a.authenticate_token(token)
                if user is not None:
                    return authenticated(user)
            if not (self.ignore_unknown_tokens and self.anonymous):
                raise AuthenticationError("invalid bearer token")
        if self.anonymous:
            return ANONYMOUS_USER
        raise AuthenticationError("no credentials")


SecretGetter = Callable[[str, str], Awaitable[dict | None]]


class BootstrapTokenAuthenticator:
    """Bootstrap tokens (plugin/pkg/auth/authenticator/token/bootstrap). `get_secret(namespace,
    name)` answers the Secret or None."""

    def __init__(self, get_secret: SecretGetter, *, clock: Callable[[], float] = time.time):
        self.get_secret = get_secret
        self.clock = clock

    async def authenticate_token(self, token: str) -> UserInfo | None:
        try:
            token_id, token_secret = bootstraptoken.parse(token)
        except ValueError:
            return None
        secret = await self.get_secret(bootstraptoken.NAMESPACE, bootstraptoken.SECRET_PREFIX + token_id)
        if secret is None or secret.get("type") != bootstraptoken.SECRET_TYPE:
            return None
        if (secret.get("metadata") or {}).get("deletionTimestamp"):
            return None
        value = lambda key: bootstraptoken.secret_value(secret, key)  # noqa: E731
        if not hmac.compare_digest(value(bootstraptoken.TOKEN_SECRET).encode(), token_secret.encode()):
            return None
        if value(bootstraptoken.TOKEN_ID) != token_id:
            return None
        # an unparseable expiration is treated as expired
        if bootstraptoken.expired(secret, now=self.clock()):
            return None
        if value(bootstraptoken.USAGE_AUTHENTICATION) != "true":
            return None
        extra: list[str] = []
        for g in value("auth-extra-groups").split(","):
            g = g.strip()
            if not g:
                continue
            if not _BOOTSTRAP_GROUP.match(g):
                return None  # an invalid group makes the whole token unusable
            extra.append(g)
        return UserInfo(BOOTSTRAP_USER_PREFIX + token_id, (BOOTSTRAPPERS_GROUP, *extra))


def user_info_json(user: UserInfo) -> dict[str, Any]:
    """authentication.k8s.io/v1 UserInfo as reviews and audit events carry it (every
    field omitempty: a request refused before it had a user has `{}`)."""
    out: dict[str, Any] = {"username": user.name} if user.name else {}
    if user.uid:
        out["uid"] = user.uid
    if user.groups:
        out["groups"] = list(user.groups)
    if user.extra:
        out["extra"] = {k: list(v) for k, v in user.extra.items()}
    return out
