"""kube-controller-manager's `bootstrapsigner` and `tokencleaner` (Kubernetes'
pkg/controller/bootstrap): the two controllers behind kubeadm's token discovery. Both
are off unless named in `--controllers` (as in kube-controller-manager; see
controller_manager.manager.DISABLED_BY_DEFAULT).

What `bootstrapsigner` guarantees
- ConfigMap kube-public/cluster-info, when it exists and has a `kubeconfig` key, holds
  one `jws-kubeconfig-<token-id>` key per bootstrap token Secret in kube-system that may
  sign (machinery.bootstraptoken.signing_token: `usage-bootstrap-signing: "true"`, name
  and `token-id` agreeing, not expired), whose value is the detached JWS of the
  `kubeconfig` value made with that token; keys of tokens that are gone, expired or no
  longer signing are removed. Other keys are left alone. The ConfigMap is written only
  when a signature changed, appeared or went.
- A token that expires drops out at its expiration time without waiting for
  `tokencleaner` (the cluster-info is looked at again then), so a joining host never
  finds a signature of an expired token for longer than the informers' lag.
- No ConfigMap, or none with `kubeconfig`: nothing is done (kubeadm init makes it).

What `tokencleaner` guarantees
- A bootstrap token Secret in kube-system whose `expiration` has passed is deleted, with
  its uid as a precondition (so a new Secret of the same name is safe); one not yet
  expired is looked at again when it expires. A 404 or 409 on delete is success.

Keys: the signer has one ("kube-public/cluster-info"), enqueued by any change to that
ConfigMap or to a kube-system Secret of type bootstrap.kubernetes.io/token; the cleaner
has one per Secret. Time is the injected clock's wall time.

Concurrency: one asyncio loop; the work queue never hands a key to two workers at once.
"""
from __future__ import annotations

import logging

from controller_manager.controller import Controller
from machinery import bootstraptoken as bt
from machinery import errors

log = logging.getLogger("minik8s.controller.bootstrap")

CLUSTER_INFO_KEY = f"{bt.CLUSTER_INFO_NAMESPACE}/{bt.CLUSTER_INFO}"


class BootstrapSigner(Controller):
    name = "bootstrapsigner"
    queue_name = "bootstrap_signer_queue"  # kube-controller-manager's

    def __init__(self, client, factory, *, recorder=None, clock=None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.configmaps = self.watch(factory.informer("configmaps", namespace=bt.CLUSTER_INFO_NAMESPACE),
                                     key_fn=self._cluster_info)
        self.secrets = self.watch(factory.informer("secrets", namespace=bt.NAMESPACE),
                                  key_fn=self._token_secret)

    @staticmethod
    def _cluster_info(cm: dict) -> str | None:
        return CLUSTER_INFO_KEY if cm["metadata"].get("name") == bt.CLUSTER_INFO else None

    @staticmethod
    def _token_secret(secret: dict) -> str | None:
        return CLUSTER_INFO_KEY if secret.get("type") == bt.SECRET_TYPE else None

    def tokens(self, now: float) -> dict[str, str]:
        """token id -> token secret of every Secret that may sign now."""
        out: dict[str, str] = {}
        for secret in self.secrets.store.list():
            if secret["metadata"].get("namespace") != bt.NAMESPACE:
                continue
            token = bt.signing_token(secret, now=now)
            if token is not None:
                out.setdefault(*token)
        return out

    def _next_expiry(self, now: float) -> float | None:
        times = [exp for s in self.secrets.store.list()
                 if bt.signing_token(s, now=now) and (exp := bt.expiration(s)) is not None]
        return min(times) - now if times else None

    async def reconcile(self, key) -> None:
        now = self.clock.now()
        ttl = self._next_expiry(now)
        if ttl is not None:
            # Upstream leaves this to tokencleaner's delete; looking again at the expiry
            # keeps the promise when tokencleaner is not running.
            self.queue.add_after(key, ttl + 0.001)
        cm = self.configmaps.store.get(key)
        if cm is None:
            return
        data = dict(cm.get("data") or {})
        content = data.get(bt.KUBECONFIG_KEY)
        if content is None:
            log.debug("%s: no %s key in ConfigMap %s", self.name, bt.KUBECONFIG_KEY, key)
            return
        signed = {k: v for k, v in data.items() if not k.startswith(bt.JWS_PREFIX)}
        for tid, tsecret in self.tokens(now).items():
            signed[bt.JWS_PREFIX + tid] = bt.detached_signature(content, tid, tsecret)
        if signed == data:
            return
        log.info("%s: signing %s for %d token(s)", self.name, key,
                 sum(1 for k in signed if k.startswith(bt.JWS_PREFIX)))
        await self.client.update({**cm, "data": signed}, namespace=bt.CLUSTER_INFO_NAMESPACE)


class TokenCleaner(Controller):
    name = "tokencleaner"
    queue_name = "token_cleaner"  # kube-controller-manager's

    def __init__(self, client, factory, *, recorder=None, clock=None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.secrets = self.watch(factory.informer("secrets", namespace=bt.NAMESPACE))

    async def reconcile(self, key) -> None:
        secret = self.secrets.store.get(key)
        if secret is None or secret.get("type") != bt.SECRET_TYPE:
            return
        exp = bt.expiration(secret)
        if exp is None:
            return
        ttl = exp - self.clock.now()
        if ttl > 0:
            self.queue.add_after(key, ttl + 0.001)
            return
        md = secret["metadata"]
        log.info("%s: deleting expired bootstrap token Secret %s", self.name, key)
        try:
            await self.client.delete("secrets", md["name"], namespace=md["namespace"],
                                     preconditions={"uid": md["uid"]} if md.get("uid") else None)
        except (errors.NotFound, errors.Conflict):
            pass  # already gone, or replaced by a new Secret of that name
