"""The local-path provisioner (`local-path-provisioner`, on by default): minik8s's
`minik8s.io/local-path`, shaped as rancher's local-path-provisioner that k3s ships
(`rancher.io/local-path`), run as a controller in the controller manager.

What it guarantees:
- A claim handed to it by the binder (`volume.kubernetes.io/storage-provisioner:
  minik8s.io/local-path`), still unbound, whose StorageClass names this provisioner, gets
  one PersistentVolume `pvc-<claim uid>` once the scheduler has named the node in
  `volume.kubernetes.io/selected-node` (a local volume needs a node: a class that binds
  Immediate fails with rancher's "configuration error, no node was specified"). The
  volume is a hostPath `<nodePath>/pvc-<uid>_<namespace>_<claim>` (nodePath: the class's
  `parameters.nodePath`, else /var/lib/minik8s/local-path), type DirectoryOrCreate,
  with a required nodeAffinity on that node's `kubernetes.io/hostname`, the claim's
  size and access modes, the class's reclaim policy, `pv.kubernetes.io/provisioned-by`
  naming this provisioner, and a claimRef pre-binding it to the claim (the binder then
  binds the two). Events on the claim: `Provisioning`, `ProvisioningSucceeded`, or
  Warning `ProvisioningFailed`, as an external provisioner records them.
- The directory is made on the node by the kubelet when the first pod mounts the
  volume (hostPath DirectoryOrCreate makes it, parents included), not by a helper pod
  beforehand as rancher does: the kubelet is already on that node doing exactly that,
  so the result is the same with one pod fewer per claim.
- A volume it provisioned that is Released with reclaim policy Delete is deleted: a
  helper pod `helper-pod-delete-<pv>` in kube-system, bound to the volume's node
  (spec.nodeName, tolerating everything), mounts nodePath and runs `rm -rf` on the
  volume's directory; once it Succeeded the helper pod and then the PersistentVolume
  are deleted. A helper that failed is reported (Warning `VolumeFailedDelete` on the
  volume), deleted, and tried again with back-off. Retain leaves volume and directory.

Keys: ("claim", "ns/name") and ("volume", name); a helper pod's change enqueues its
volume. One asyncio loop, level-based: a restart mid-way finds the PV or the helper pod
it made and carries on.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from client.informer import key_of
from controller_manager.controller import Controller
from controller_manager.controllers.persistentvolume import STORAGE_PROVISIONER
from machinery.volumes import PROVISIONED_BY, SELECTED_NODE, claim_class
from machinery import errors

log = logging.getLogger("minik8s.controller.localpath")

PROVISIONER = "minik8s.io/local-path"
DEFAULT_NODE_PATH = "/var/lib/minik8s/local-path"
HELPER_NAMESPACE = "kube-system"
HELPER_LABEL = "minik8s.io/local-path-helper"
SELECTED_NODE_ANNOTATION = "local.path.provisioner/selected-node"  # rancher's, on the PV


@dataclass(frozen=True, kw_only=True)
class LocalPathOptions:
    # The helper pod's image: the host's root (no pull; it has rm), as the DNS addon's.
    local_path_helper_image: str = "minik8s.local/host-root"


def volume_name(claim: dict) -> str:
    return f"pvc-{claim['metadata']['uid']}"


def node_path(sc: dict | None) -> str:
    return ((sc or {}).get("parameters") or {}).get("nodePath") or DEFAULT_NODE_PATH


def volume_for(claim: dict, sc: dict, node: str, hostname: str) -> dict:
    """The PersistentVolume provisioned for `claim` on `node` (see the module docstring)."""
    md, spec = claim["metadata"], claim.get("spec") or {}
    name = volume_name(claim)
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER,
                                                   SELECTED_NODE_ANNOTATION: node}},
        "spec": {
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "0")},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
            "storageClassName": sc["metadata"]["name"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": os.path.join(node_path(sc), f"{name}_{md['namespace']}_{md['name']}"),
                         "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]}]}]}},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": md["namespace"],
                         "name": md["name"], "uid": md["uid"], "resourceVersion": md.get("resourceVersion", "")},
        },
    }


def helper_pod(volume: dict, image: str) -> dict:
    """The pod that deletes a volume's directory on its node."""
    path = volume["spec"]["hostPath"]["path"]
    parent, leaf = os.path.dirname(path.rstrip("/")), os.path.basename(path.rstrip("/"))
    node = (volume["metadata"].get("annotations") or {}).get(SELECTED_NODE_ANNOTATION, "")
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"helper-pod-delete-{volume['metadata']['name']}", "namespace": HELPER_NAMESPACE,
                     "labels": {HELPER_LABEL: volume["metadata"]["name"]}},
        "spec": {
            "nodeName": node, "restartPolicy": "Never", "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "data", "hostPath": {"path": parent, "type": "DirectoryOrCreate"}}],
            "containers": [{"name": "helper-pod", "image": image, "imagePullPolicy": "IfNotPresent",
                            "command": ["rm", "-rf", f"/minik8s-local-path/{leaf}"],
                            "volumeMounts": [{"name": "data", "mountPath": "/minik8s-local-path"}]}],
        },
    }


class LocalPathProvisioner(Controller):
    name = "local-path-provisioner"
    queue_name = "local_path_provisioner"
    Options = LocalPathOptions

    def __init__(self, client, factory, *, recorder=None, clock=None, options: LocalPathOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.image = (options or LocalPathOptions()).local_path_helper_image
        self.claims = self.watch(factory.informer("persistentvolumeclaims"),
                                 key_fn=lambda c: [("claim", key_of(c))])
        self.volumes = self.watch(factory.informer("persistentvolumes"),
                                  key_fn=lambda v: [("volume", v["metadata"]["name"])])
        self.classes = factory.informer("storageclasses")
        self.nodes = factory.informer("nodes")
        self.pods = self.watch(factory.informer("pods", namespace=HELPER_NAMESPACE),
                               key_fn=self._helper_volume)
        self.informers += [self.classes, self.nodes]

    def _helper_volume(self, pod: dict):
        name = (pod["metadata"].get("labels") or {}).get(HELPER_LABEL)
        return [("volume", name)] if name else None  # a list: a bare tuple reads as many keys

    async def reconcile(self, key) -> None:
        kind, name = key
        if kind == "claim":
            claim = self.claims.store.get(name)
            if claim is not None:
                await self._provision(claim)
        else:
            volume = self.volumes.store.get(name)
            if volume is not None:
                await self._delete(volume)

    # -- provisioning -----------------------------------------------------------------

    async def _provision(self, claim: dict) -> None:
        md, spec = claim["metadata"], claim.get("spec") or {}
        ann = md.get("annotations") or {}
        if ann.get(STORAGE_PROVISIONER) != PROVISIONER or spec.get("volumeName") or md.get("deletionTimestamp"):
            return
        if (claim.get("status") or {}).get("phase", "Pending") != "Pending":
            return
        sc = self.classes.store.get(claim_class(claim))
        if sc is None or sc.get("provisioner") != PROVISIONER:
            return
        name = volume_name(claim)
        if name in self.volumes.store:
            return  # made already; the binder binds it
        node = ann.get(SELECTED_NODE)
        if not node:
            self._event(claim, "Warning", "ProvisioningFailed",
                        f'failed to provision volume with StorageClass "{sc["metadata"]["name"]}": '
                        "configuration error, no node was specified")
            return
        n = self.nodes.store.get(node)
        hostname = ((n or {}).get("metadata", {}).get("labels") or {}).get("kubernetes.io/hostname", node)
        self._event(claim, "Normal", "Provisioning",
                    f'External provisioner is provisioning volume for claim "{md["namespace"]}/{md["name"]}"')
        try:
            await self.client.create(volume_for(claim, sc, node, hostname))
        except errors.AlreadyExists:
            return
        log.info("%s: provisioned %s for claim %s/%s on node %s", self.name, name, md["namespace"],
                 md["name"], node)
        self._event(claim, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {name}")

    # -- deleting ---------------------------------------------------------------------

    async def _delete(self, volume: dict) -> None:
        md = volume["metadata"]
        if (md.get("annotations") or {}).get(PROVISIONED_BY) != PROVISIONER:
            return
        pod_name = f"helper-pod-delete-{md['name']}"
        pod = self.pods.store.get(f"{HELPER_NAMESPACE}/{pod_name}")
        if md.get("deletionTimestamp"):
            if pod is not None:
                await self._delete_pod(pod)  # its work is done: the volume is going
            return
        if (volume.get("status") or {}).get("phase") != "Released" or \
                volume["spec"].get("persistentVolumeReclaimPolicy") != "Delete":
            return
        if pod is None:
            # The cache may not show yet that an earlier helper finished and the volume is
            # going: ask the API before starting a helper again.
            try:
                fresh = await self.client.get("persistentvolumes", md["name"])
            except errors.NotFound:
                return
            if fresh["metadata"].get("deletionTimestamp") or (fresh.get("status") or {}).get("phase") != "Released":
                return
            try:
                await self.client.create(helper_pod(fresh, self.image), namespace=HELPER_NAMESPACE)
                log.info("%s: deleting the directory of %s on its node", self.name, md["name"])
            except errors.AlreadyExists:
                pass
            return  # the helper's progress enqueues the volume again
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Failed":
            self._event(volume, "Warning", "VolumeFailedDelete",
                        f"failed to delete volume {md['name']}: the helper pod {pod_name} failed")
            await self._delete_pod(pod)
            raise RuntimeError(f"helper pod {pod_name} failed")  # retried with back-off
        if phase != "Succeeded":
            return
        # The volume first, then its helper: whoever looks next sees the volume going.
        try:
            await self.client.delete("persistentvolumes", md["name"], preconditions={"uid": md["uid"]})
            log.info("%s: deleted volume %s", self.name, md["name"])
        except (errors.NotFound, errors.Conflict):
            pass
        await self._delete_pod(pod)

    async def _delete_pod(self, pod: dict) -> None:
        try:
            await self.client.delete("pods", pod["metadata"]["name"], namespace=HELPER_NAMESPACE,
                                     grace_period_seconds=0)
        except errors.NotFound:
            pass

    def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(obj, type_, reason, message)
