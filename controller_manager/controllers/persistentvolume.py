"""The PersistentVolume binder (kube-controller-manager's `persistentvolume-binder`,
pkg/controller/volume/persistentvolume/pv_controller.go); the matching it shares with
the scheduler is machinery/volumes.py.

What it guarantees, for each claim (key `("claim", "ns/name")`):
- Pending, no `spec.volumeName`: the best Available volume is bound to it: same
  storage class ("" matches only volumes without a class), not bound to another claim,
  not being deleted, its labels matching the claim's selector, its volumeMode equal,
  its access modes a superset, and the smallest capacity that fits. A volume pre-bound
  to the claim (`claimRef` naming it) wins over the rest. A claim whose class binds
  WaitForFirstConsumer waits (Normal event `WaitForFirstConsumer`) until the scheduler
  names a node in `volume.kubernetes.io/selected-node`; then only volumes whose
  nodeAffinity admits that node match (upstream the scheduler binds those itself;
  here the binder does, so static local volumes still bind where the pod goes).
- No volume matches: with no class, Normal event `FailedBinding`; with a class that
  does not exist, Warning `ProvisioningFailed` `storageclass.storage.k8s.io "x" not
  found`; otherwise the claim is handed to the class's provisioner with
  `volume.kubernetes.io/storage-provisioner` (and the beta key), Normal event
  `ExternalProvisioning`, as for any external provisioner. The claim stays Pending.
- `spec.volumeName` set by the user: that volume is bound to it if it is free (or
  already pre-bound to it); missing or taken: Pending with a `FailedBinding` event.
- Binding writes, in upstream's order: the volume's claimRef (annotation
  `pv.kubernetes.io/bound-by-controller: "yes"` when the binder chose it), the volume's
  phase Bound, the claim's volumeName with `pv.kubernetes.io/bind-completed` (and
  bound-by-controller when chosen), then the claim's status: Bound, with the volume's
  capacity and access modes. Each write is level-based: a crash between two is
  finished by the next sync.
- A bound claim whose volume is gone or bound elsewhere: phase Lost, Warning
  `ClaimLost`.

For each volume (key `("volume", name)`):
- No claimRef, or pre-bound by name to a claim that has not bound yet: Available.
- Its claim exists and names it: Bound. Its claim is gone (or is a new claim with the
  same name, another uid): Released, then reclaimed: Retain keeps it Released; Delete
  of a dynamically provisioned volume (`pv.kubernetes.io/provisioned-by`) is the
  provisioner's (it deletes the storage and the PV); Delete of any other volume and
  Recycle fail (phase Failed, Warning `VolumeFailedDelete`/`VolumeFailedRecycle`): there
  is no in-tree volume plugin to do them.
- Its claim is bound to another volume and the binder bound this one: unbound again
  (claimRef cleared, Available).

Concurrency: one asyncio loop; a key is never synced by two workers at once. The
caches may lag the binder's own writes; a write on a stale object is a 409 and the key
is retried, which is the normal outcome.
"""
from __future__ import annotations

import logging
import orjson

from client.informer import key_of
from controller_manager.controller import Controller
from controller_manager.controller_utils import rfc3339, utcnow
from machinery import errors
from machinery.volumes import (BIND_COMPLETED, BOUND_BY_CONTROLLER, PROVISIONED_BY, SELECTED_NODE, bound_to,
                               claim_class, find_best_match)

log = logging.getLogger("minik8s.controller.persistentvolume")

STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"


def _copy(obj: dict) -> dict:
    return orjson.loads(orjson.dumps(obj))  # cached objects are shared: write a copy


def _annotations(obj: dict) -> dict:
    md = obj["metadata"]
    if not isinstance(md.get("annotations"), dict):
        md["annotations"] = {}
    return md["annotations"]


class PersistentVolumeBinder(Controller):
    name = "persistentvolume-binder"
    queue_name = "claims"

    def __init__(self, client, factory, *, recorder=None, clock=None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.claims = self.watch(factory.informer("persistentvolumeclaims"), key_fn=self._claim_keys)
        self.volumes = self.watch(factory.informer("persistentvolumes"), key_fn=self._volume_keys)
        self.classes = self.watch(factory.informer("storageclasses"), key_fn=self._class_claims)
        self.nodes = factory.informer("nodes")
        self.informers.append(self.nodes)

    def _claim_keys(self, claim: dict) -> list:
        # A claim's deletion is its volume's business (Released): enqueue both.
        keys: list = [("claim", key_of(claim))]
        if (claim.get("spec") or {}).get("volumeName"):
            keys.append(("volume", claim["spec"]["volumeName"]))
        return keys

    def _volume_keys(self, volume: dict) -> list:
        keys: list = [("volume", volume["metadata"]["name"])]
        ref = (volume.get("spec") or {}).get("claimRef")
        if ref:
            keys.append(("claim", f"{ref.get('namespace')}/{ref.get('name')}"))
        else:  # a free volume may be what a pending claim waits for
            keys += [("claim", key_of(c)) for c in self.claims.store.list()
                     if (c.get("status") or {}).get("phase", "Pending") == "Pending"]
        return keys

    def _class_claims(self, sc: dict) -> list:
        name = sc["metadata"]["name"]
        return [("claim", key_of(c)) for c in self.claims.store.list()
                if claim_class(c) == name and (c.get("status") or {}).get("phase", "Pending") == "Pending"]

    async def reconcile(self, key) -> None:
        kind, name = key
        if kind == "claim":
            claim = self.claims.store.get(name)
            if claim is not None:
                await self.sync_claim(claim)
        else:
            volume = self.volumes.store.get(name)
            if volume is not None:
                await self.sync_volume(volume)

    # -- claims --------------------------------------------------------------------------

    async def sync_claim(self, claim: dict) -> None:
        if claim["metadata"].get("deletionTimestamp") and not claim["spec"].get("volumeName"):
            return
        if BIND_COMPLETED in (claim["metadata"].get("annotations") or {}):
            await self._sync_bound_claim(claim)
        else:
            await self._sync_unbound_claim(claim)

    async def _sync_unbound_claim(self, claim: dict) -> None:
        spec = claim.get("spec") or {}
        if spec.get("volumeName"):
            volume = self.volumes.store.get(spec["volumeName"])
            if volume is None:
                self._event(claim, "Normal", "FailedBinding", f'volume "{spec["volumeName"]}" not found')
                await self._claim_phase(claim, "Pending")
                return
            if (volume["spec"].get("claimRef") or None) is None or bound_to(volume, claim):
                await self._bind(volume, claim, chosen=False)
                return
            self._event(claim, "Warning", "FailedBinding",
                        f'volume "{spec["volumeName"]}" already bound to a different claim.')
            await self._claim_phase(claim, "Pending")
            return
        klass = claim_class(claim)
        sc = self.classes.store.get(klass) if klass else None
        delayed = sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer"
        ann = claim["metadata"].get("annotations") or {}
        node = None
        if delayed:
            selected = ann.get(SELECTED_NODE)
            if not selected:
                self._event(claim, "Normal", "WaitForFirstConsumer",
                            "waiting for first consumer to be created before binding")
                return
            n = self.nodes.store.get(selected)
            node = (selected, ((n or {}).get("metadata") or {}).get("labels") or {})
        volume = find_best_match(self.volumes.store.list(), claim, node=node)
        if volume is not None:
            await self._bind(volume, claim, chosen=True)
            return
        if not klass:
            self._event(claim, "Normal", "FailedBinding",
                        "no persistent volumes available for this claim and no storage class is set")
            return
        if sc is None:
            self._event(claim, "Warning", "ProvisioningFailed",
                        f'storageclass.storage.k8s.io "{klass}" not found')
            return
        provisioner = sc.get("provisioner", "")
        if ann.get(STORAGE_PROVISIONER) != provisioner:
            new = _copy(claim)
            _annotations(new).update({STORAGE_PROVISIONER: provisioner, BETA_STORAGE_PROVISIONER: provisioner})
            await self.client.update(new)
        self._event(claim, "Normal", "ExternalProvisioning",
                    f"Waiting for a volume to be created either by the external provisioner '{provisioner}' "
                    "or manually by the system administrator. If volume creation is delayed, please verify "
                    "that the provisioner is running and correctly registered.")

    async def _sync_bound_claim(self, claim: dict) -> None:
        name = claim["spec"].get("volumeName")
        volume = self.volumes.store.get(name) if name else None
        if volume is None:
            if (claim.get("status") or {}).get("phase") != "Lost":
                self._event(claim, "Warning", "ClaimLost",
                            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!")
                await self._claim_phase(claim, "Lost")
            return
        if not volume["spec"].get("claimRef"):
            await self._bind(volume, claim, chosen=False)  # the volume forgot: bind it again
            return
        if bound_to(volume, claim):
            await self._bind(volume, claim, chosen=False)  # finish a bind, or confirm it
            return
        if (claim.get("status") or {}).get("phase") != "Lost":
            self._event(claim, "Warning", "ClaimMisbound",
                        "Two claims are bound to the same volume, this one is bound incorrectly")
            await self._claim_phase(claim, "Lost")

    async def _bind(self, volume: dict, claim: dict, *, chosen: bool) -> None:
        """pv_controller.bind: volume claimRef, volume phase, claim volumeName, claim
        status; each step only if it is not done yet."""
        md = claim["metadata"]
        ref = volume["spec"].get("claimRef") or {}
        if ref.get("uid") != md.get("uid") or ref.get("name") != md["name"]:
            new = _copy(volume)
            new["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": md["namespace"],
                                       "name": md["name"], "uid": md["uid"], "apiVersion": "v1",
                                       "resourceVersion": md.get("resourceVersion", "")}
            if chosen or not ref:
                _annotations(new)[BOUND_BY_CONTROLLER] = "yes"
            volume = await self.client.update(new)
        if (volume.get("status") or {}).get("phase") != "Bound":
            new = _copy(volume)
            new["status"] = {**(new.get("status") or {}), "phase": "Bound"}
            new["status"].pop("reason", None)
            new["status"].pop("message", None)
            volume = await self.client.update_status(new)
        ann = md.get("annotations") or {}
        if claim["spec"].get("volumeName") != volume["metadata"]["name"] or BIND_COMPLETED not in ann:
            new = _copy(claim)
            new["spec"]["volumeName"] = volume["metadata"]["name"]
            a = _annotations(new)
            a[BIND_COMPLETED] = "yes"
            if not claim["spec"].get("volumeName"):
                a[BOUND_BY_CONTROLLER] = "yes"
            claim = await self.client.update(new)
            log.info("%s: bound claim %s/%s to volume %s", self.name, md["namespace"], md["name"],
                     volume["metadata"]["name"])
        status = claim.get("status") or {}
        want = {"phase": "Bound", "accessModes": volume["spec"].get("accessModes") or [],
                "capacity": volume["spec"].get("capacity") or {}}
        if any(status.get(k) != x for k, x in want.items()):
            new = _copy(claim)
            new["status"] = {**status, **want}
            await self.client.update_status(new)

    async def _claim_phase(self, claim: dict, phase: str) -> None:
        if (claim.get("status") or {}).get("phase") == phase:
            return
        new = _copy(claim)
        new["status"] = {**(new.get("status") or {}), "phase": phase}
        await self.client.update_status(new)

    # -- volumes -------------------------------------------------------------------------

    async def sync_volume(self, volume: dict) -> None:
        ref = volume["spec"].get("claimRef")
        if not ref:
            await self._volume_phase(volume, "Available")
            return
        claim = self.claims.store.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if claim is None:
            try:  # the cache may be late: ask before releasing a volume
                claim = await self.client.get("persistentvolumeclaims", ref.get("name", ""),
                                              namespace=ref.get("namespace", ""))
            except errors.NotFound:
                claim = None
        if claim is not None and ref.get("uid") and claim["metadata"].get("uid") != ref["uid"]:
            claim = None  # a new claim of the same name: ours is gone
        if claim is None:
            if not ref.get("uid"):
                await self._volume_phase(volume, "Available")  # pre-bound; its claim may come
                return
            phase = (volume.get("status") or {}).get("phase")
            if phase not in ("Released", "Failed"):
                volume = await self._volume_phase(volume, "Released")
            await self._reclaim(volume)
            return
        name = claim["spec"].get("volumeName")
        if not name:
            self.enqueue(("claim", key_of(claim)))  # the claim's sync finishes the bind
            if not ref.get("uid"):
                await self._volume_phase(volume, "Available")
            return
        if name == volume["metadata"]["name"]:
            await self._volume_phase(volume, "Bound")
            return
        # The claim is bound to another volume.
        if (volume["metadata"].get("annotations") or {}).get(BOUND_BY_CONTROLLER) == "yes":
            new = _copy(volume)
            new["spec"].pop("claimRef", None)
            _annotations(new).pop(BOUND_BY_CONTROLLER, None)
            volume = await self.client.update(new)
            await self._volume_phase(volume, "Available")

    async def _reclaim(self, volume: dict) -> None:
        policy = volume["spec"].get("persistentVolumeReclaimPolicy", "Retain")
        if policy == "Retain" or (volume.get("status") or {}).get("phase") == "Failed":
            return
        if policy == "Delete" and PROVISIONED_BY in (volume["metadata"].get("annotations") or {}):
            return  # the provisioner that made it deletes it
        if policy == "Delete":
            reason, message = "VolumeFailedDelete", (
                f'error getting deleter volume plugin for volume "{volume["metadata"]["name"]}": '
                "no deletable volume plugin matched")
        else:
            reason, message = "VolumeFailedRecycle", "No recycler plugin found for the volume!"
        self._event(volume, "Warning", reason, message)
        await self._volume_phase(volume, "Failed", message=message)

    async def _volume_phase(self, volume: dict, phase: str, *, message: str = "") -> dict:
        status = volume.get("status") or {}
        if status.get("phase") == phase:
            return volume
        new = _copy(volume)
        new["status"] = {"phase": phase, "lastPhaseTransitionTime": _now()}
        if message:
            new["status"]["message"] = message
        return await self.client.update_status(new)

    def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(obj, type_, reason, message)


def _now() -> str:
    return rfc3339(utcnow())
