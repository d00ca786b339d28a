"""The storage-object-in-use protection controllers (pkg/controller/volume/pvcprotection
and pvprotection): they remove the finalizers the API server's
StorageObjectInUseProtection admission puts on every claim and volume, once deleting
the object can no longer pull storage from under someone.

- `pvc-protection`: a claim being deleted keeps `kubernetes.io/pvc-protection` while a
  pod in its namespace that has not finished (phase neither Succeeded nor Failed) names
  it in a `persistentVolumeClaim` volume. The pod cache saying "unused" is confirmed
  with a live list before the finalizer goes (the cache may lag a new pod), as upstream.
- `pv-protection`: a volume being deleted keeps `kubernetes.io/pv-protection` while it
  is Bound.

Keys: a claim's `ns/name` (enqueued also by a change to a pod that uses it) and a
volume's name. One asyncio loop; level-based.
"""
from __future__ import annotations

import logging

import orjson

from client.informer import key_of
from controller_manager.controller import Controller

log = logging.getLogger("minik8s.controller.volumeprotection")

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"


def claims_of(pod: dict) -> list[str]:
    """The claims a pod's volumes name (`persistentVolumeClaim.claimName`)."""
    out = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        name = ((v or {}).get("persistentVolumeClaim") or {}).get("claimName")
        if name:
            out.append(name)
    return out


def _uses(pod: dict, claim: str) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and claim in claims_of(pod)


async def _drop_finalizer(client, obj: dict, finalizer: str) -> None:
    new = orjson.loads(orjson.dumps(obj))
    new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers") or [] if f != finalizer]
    await client.update(new)


class PVCProtectionController(Controller):
    name = "pvc-protection"
    queue_name = "pvcprotection"

    def __init__(self, client, factory, *, recorder=None, clock=None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.claims = self.watch(factory.informer("persistentvolumeclaims"))
        self.pods = self.watch(factory.informer("pods"), key_fn=lambda p: [
            f"{p['metadata'].get('namespace')}/{c}" for c in claims_of(p)])

    async def reconcile(self, key) -> None:
        claim = self.claims.store.get(key)
        if claim is None:
            return
        md = claim["metadata"]
        if not md.get("deletionTimestamp") or PVC_PROTECTION not in (md.get("finalizers") or []):
            return
        ns, name = md["namespace"], md["name"]
        if any(_uses(p, name) for p in self.pods.store.list() if p["metadata"].get("namespace") == ns):
            return  # a pod's change re-enqueues the claim
        live = await self.client.list("pods", namespace=ns)
        if any(_uses(p, name) for p in live.get("items") or []):
            return
        log.info("%s: claim %s is no longer used by pods; removing its finalizer", self.name, key_of(claim))
        await _drop_finalizer(self.client, claim, PVC_PROTECTION)


class PVProtectionController(Controller):
    name = "pv-protection"
    queue_name = "pvprotection"

    def __init__(self, client, factory, *, recorder=None, clock=None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.volumes = self.watch(factory.informer("persistentvolumes"))

    async def reconcile(self, key) -> None:
        volume = self.volumes.store.get(key)
        if volume is None:
            return
        md = volume["metadata"]
        if not md.get("deletionTimestamp") or PV_PROTECTION not in (md.get("finalizers") or []):
            return
        if (volume.get("status") or {}).get("phase") == "Bound":
            return
        log.info("%s: volume %s is not bound; removing its finalizer", self.name, key)
        await _drop_finalizer(self.client, volume, PV_PROTECTION)
