"""The kubelet's ServiceAccount token manager (pkg/kubelet/token/token_manager.go).

`get(namespace, service_account, pod_name, pod_uid, audience, expiration_seconds)` answers
a token for a projected `serviceAccountToken` source: one TokenRequest
(POST serviceaccounts/<name>/token) bound to the pod, for the audience asked (none: the
API server's own audiences) and the lifetime asked. The answer is cached per
(namespace, service account, audience, lifetime, pod uid) and served from the cache until
it needs a refresh, which is, as upstream's requiresRefresh, once 80 % of its lifetime has
passed or it is 24 h old (each less a jitter of up to 10 s, so that many pods do not
refresh at once). A refresh that fails hands out the cached token while it has not
expired (the API server may be briefly away); past expiry the error is raised.
A token's age is measured on the kubelet's clock from when it arrived, its lifetime
being the one the TokenRequest granted (spec.expirationSeconds): upstream measures
against the server's expirationTimestamp, which is the same when the clocks agree, but a
kubelet clock ahead of the server's would then find every new token already due and
request it again on every sync.

`refresh_in(...)` says how long a cached token stays good, so the pod's worker can sync
again then and rewrite the file. `forget_pod(uid)` drops a deleted pod's tokens and
`collect()` the expired ones. Time is the injected clock's wall time (`clock.now()`),
so tests move it instead of waiting. One asyncio loop; concurrent `get`s of one key may
both request a token (harmless: the last one is cached).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable

from client.clock import Clock, RealClock
from client.rest import Client

log = logging.getLogger("minik8s.kubelet.token")

MAX_TTL = 24 * 3600.0     # seconds: a token older than this is refreshed whatever its lifetime
MAX_JITTER = 10.0


class TokenError(Exception):
    """No token could be had for the source; the message says why."""


@dataclass(frozen=True)
class _Key:
    namespace: str
    service_account: str
    audience: str
    expiration_seconds: int
    pod_uid: str


@dataclass
class _Token:
    token: str
    received: float         # the kubelet's wall time when it arrived
    expiration_seconds: int  # its lifetime, as granted

    @property
    def expires(self) -> float:
        return self.received + self.expiration_seconds

    @property
    def due(self) -> float:
        """When it wants a refresh (before jitter): 80 % of its life, at most 24 h."""
        return self.received + min(MAX_TTL, self.expiration_seconds * 80 / 100)


class TokenManager:
    def __init__(self, client: Client, *, clock: Clock | None = None,
                 jitter: Callable[[], float] | None = None):
        self.client = client
        self.clock = clock or RealClock()
        self.jitter = jitter or (lambda: random.uniform(0.0, MAX_JITTER))
        self._cache: dict[_Key, _Token] = {}
        self.requests = 0  # TokenRequests made (tests read it)

    def _requires_refresh(self, t: _Token) -> bool:
        return self.clock.now() > t.due - self.jitter()

    async def get(self, namespace: str, service_account: str, *, pod_name: str, pod_uid: str,
                  audience: str, expiration_seconds: int) -> str:
        key = _Key(namespace, service_account, audience, expiration_seconds, pod_uid)
        cached = self._cache.get(key)
        if cached is not None and not self._requires_refresh(cached):
            return cached.token
        try:
            fresh = await self._request(key, pod_name)
        except Exception as exc:  # noqa: BLE001 - any failure: the cached token while valid
            if cached is not None and self.clock.now() < cached.expires:
                log.warning("refreshing the token of serviceaccount %s/%s for pod %s: %s; the cached "
                            "token is still valid", namespace, service_account, pod_name, exc)
                return cached.token
            raise TokenError(f'failed to fetch token: {exc}') from exc
        self._cache[key] = fresh
        return fresh.token

    async def _request(self, key: _Key, pod_name: str) -> _Token:
        spec: dict = {"audiences": [key.audience] if key.audience else [],
                      "expirationSeconds": key.expiration_seconds,
                      "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name,
                                         "uid": key.pod_uid}}
        self.requests += 1
        answer = await self.client.request(
            "POST", f"/api/v1/namespaces/{key.namespace}/serviceaccounts/{key.service_account}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        status = (answer or {}).get("status") or {}
        if not status.get("token") or not status.get("expirationTimestamp"):
            raise TokenError("the TokenRequest's answer has no token")
        granted = int(((answer.get("spec") or {}).get("expirationSeconds")) or key.expiration_seconds)
        return _Token(status["token"], self.clock.now(), granted)

    def refresh_in(self, namespace: str, service_account: str, *, pod_uid: str, audience: str,
                   expiration_seconds: int) -> float | None:
        """Seconds until the cached token wants a refresh (0 if it does now); None if
        none is cached."""
        t = self._cache.get(_Key(namespace, service_account, audience, expiration_seconds, pod_uid))
        if t is None:
            return None
        return max(0.0, t.due - self.clock.now())

    def forget_pod(self, pod_uid: str) -> None:
        for key in [k for k in self._cache if k.pod_uid == pod_uid]:
            del self._cache[key]

    def collect(self) -> None:
        now = self.clock.now()
        for key in [k for k, t in self._cache.items() if now > t.expires]:
            del self._cache[key]
