"""VolumeBinding (kube-scheduler's plugins/volumebinding): a pod goes where its
persistent volumes can be.

- PreFilter: every `persistentVolumeClaim` the pod names must exist and not be being
  deleted (UnschedulableAndUnresolvable `persistentvolumeclaim "x" not found` / `... is
  being deleted`); an unbound claim whose class binds Immediate (or has no class object)
  makes the pod UnschedulableAndUnresolvable with upstream's "pod has unbound immediate
  PersistentVolumeClaims": the PV binder must bind it first. A pod without claims skips
  the plugin.
- Filter: a bound claim's volume must exist ("node(s) unavailable due to one or more
  pvc(s) bound to non-existent pv(s)") and its nodeAffinity admit the node ("node(s) had
  volume node affinity conflict"); an unbound WaitForFirstConsumer claim needs, on this
  node, a free static volume that matches it or a class with a provisioner ("node(s)
  didn't find available persistent volumes to bind"); one whose
  `volume.kubernetes.io/selected-node` names another node is a conflict too.
- Bind, before DefaultBinder (upstream does this in PreBind): each unbound
  WaitForFirstConsumer claim gets `volume.kubernetes.io/selected-node: <node>`, then the
  binding waits until the PV binder (a static volume) or the provisioner (a new one) has
  bound every claim, up to `bindTimeoutSeconds` (600, upstream's default); then it
  returns Skip and DefaultBinder binds the pod. A timeout fails this binding and the
  pod is retried. Upstream's scheduler binds matching static volumes itself; here the
  PV binder does it, restricted to the selected node.

The plugin reads claims, volumes and classes from the scheduler's informers, and writes
only through the handle's `annotate_claim`, at Bind.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from machinery.volumes import SELECTED_NODE, claim_class, find_best_match, volume_fits_node
from scheduler.framework import SKIP, ActionType, ClusterEvent, CycleState, Status, plugin_args
from scheduler.types import NodeInfo, PodInfo

NAME = "VolumeBinding"
ERR_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
ERR_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
ERR_PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
PVC, PV, SC = "PersistentVolumeClaim", "PersistentVolume", "StorageClass"


def claim_names(pod: PodInfo) -> list[str]:
    return [((v or {}).get("persistentVolumeClaim") or {}).get("claimName")
            for v in (pod.pod.get("spec") or {}).get("volumes") or ()
            if ((v or {}).get("persistentVolumeClaim") or {}).get("claimName")]


class VolumeBinding:
    NAME = NAME
    EVENTS = (ClusterEvent(PVC, ActionType.ADD | ActionType.UPDATE),
              ClusterEvent(PV, ActionType.ADD | ActionType.UPDATE),
              ClusterEvent(SC, ActionType.ADD | ActionType.UPDATE),
              ClusterEvent("Node", ActionType.ADD | ActionType.UPDATE_NODE_LABEL))

    def __init__(self, handle: Any, *, bind_timeout: float = 600.0):
        self.handle = handle
        self.bind_timeout = bind_timeout

    def _get(self, kind: str, key: str) -> dict | None:
        informer = getattr(self.handle, kind, None)
        return informer.store.get(key) if informer is not None else None

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        names = claim_names(pod)
        if not names:
            return SKIP
        bound: list[tuple[dict, dict | None]] = []
        delayed: list[dict] = []
        for name in names:
            claim = self._get("pvcs", f"{pod.namespace}/{name}")
            if claim is None:
                return Status.unresolvable(f'persistentvolumeclaim "{name}" not found')
            if claim["metadata"].get("deletionTimestamp"):
                return Status.unresolvable(f'persistentvolumeclaim "{name}" is being deleted')
            volume_name = (claim.get("spec") or {}).get("volumeName")
            if volume_name:
                bound.append((claim, self._get("pvs", volume_name)))
                continue
            sc = self._get("storageclasses", claim_class(claim))
            if sc is None or sc.get("volumeBindingMode") != "WaitForFirstConsumer":
                return Status.unresolvable(ERR_UNBOUND_IMMEDIATE)
            delayed.append(claim)
        state.write(NAME, (bound, delayed))
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        bound, delayed = state.read(NAME)
        for _, volume in bound:
            if volume is None:
                return Status.unresolvable(ERR_PV_NOT_EXIST)
            if not volume_fits_node(volume, node.name, node.labels):
                return Status.unresolvable(ERR_NODE_CONFLICT)
        if not delayed:
            return None
        pvs = getattr(self.handle, "pvs", None)
        free = list(pvs.store.list()) if pvs is not None else []
        for claim in delayed:
            selected = (claim["metadata"].get("annotations") or {}).get(SELECTED_NODE)
            if selected and selected != node.name:
                return Status.unresolvable(ERR_NODE_CONFLICT)
            match = find_best_match(free, claim, node=(node.name, node.labels))
            if match is not None:
                free = [v for v in free if v is not match]  # one volume per claim
                continue
            sc = self._get("storageclasses", claim_class(claim)) or {}
            if not sc.get("provisioner") or sc.get("provisioner") == NO_PROVISIONER:
                return Status.unschedulable(ERR_BIND_CONFLICT)
        return None

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        try:
            _, delayed = state.read(NAME)
        except KeyError:
            return SKIP  # no claims: nothing to do before the pod is bound
        if not delayed:
            return SKIP
        annotate = getattr(self.handle, "annotate_claim", None)
        if annotate is None:
            return Status.error("VolumeBinding has no way to write claims")
        try:
            for claim in delayed:
                if (claim["metadata"].get("annotations") or {}).get(SELECTED_NODE) != node_name:
                    await annotate(pod.namespace, claim["metadata"]["name"], {SELECTED_NODE: node_name})
        except Exception as e:  # noqa: BLE001 - this binding's failure: the pod is retried
            return Status.error(f"binding volumes: {e}")
        deadline = time.monotonic() + self.bind_timeout
        keys = [f"{pod.namespace}/{c['metadata']['name']}" for c in delayed]
        while True:
            claims = [self._get("pvcs", k) for k in keys]
            if any(c is None or c["metadata"].get("deletionTimestamp") for c in claims):
                return Status.error("binding volumes: a PersistentVolumeClaim was deleted")
            if all((c.get("status") or {}).get("phase") == "Bound" for c in claims if c is not None):
                return SKIP  # bound: DefaultBinder binds the pod
            if time.monotonic() > deadline:
                return Status.error("binding volumes: context deadline exceeded")
            await asyncio.sleep(0.1)  # the informer's next event; a poll keeps this simple


def new(args: dict, handle: Any) -> VolumeBinding:
    a = plugin_args(args, "bindTimeoutSeconds", "shape")
    timeout = a.get("bindTimeoutSeconds", 600)
    if not isinstance(timeout, int) or timeout < 0:
        raise ValueError("bindTimeoutSeconds must be a non-negative integer")
    return VolumeBinding(handle, bind_timeout=float(timeout))
