"""`persistentVolumeClaim` pod volumes: what the kubelet's volume manager does for them
(pkg/kubelet/volumemanager's desired state of world, reduced to the sources minik8s
mounts).

`resolve(client, namespace, volume)` turns a pod's claim volume into the volume the
runtime mounts: the claim (which must exist and be Bound) -> its PersistentVolume ->
a hostPath volume at the PV's hostPath (its type kept: the local-path provisioner's
DirectoryOrCreate makes the directory on first mount) or at a `local` PV's path (which
must exist, type Directory). Anything else raises VolumeError, with upstream's
wording where it has one; the kubelet reports it as FailedMount and keeps the pod in
ContainerCreating, trying again, until the claim is bound. The reads go to the API
server (the Node authorizer allows a node the claims of its pods and their volumes).

`read_only(pod)`: the names of claim volumes marked `readOnly`, whose every mount is
read-only.
"""
from __future__ import annotations

from typing import Any

from client.rest import Client
from kubelet.runtime import VolumeError
from machinery import errors


async def resolve(client: Client, namespace: str, volume: dict[str, Any]) -> dict[str, Any]:
    name = (volume.get("persistentVolumeClaim") or {}).get("claimName") or ""
    try:
        claim = await client.get("persistentvolumeclaims", name, namespace=namespace)
    except errors.NotFound:
        raise VolumeError(f'persistentvolumeclaim "{name}" not found') from None
    pv_name = (claim.get("spec") or {}).get("volumeName")
    if (claim.get("status") or {}).get("phase") != "Bound" or not pv_name:
        raise VolumeError(f"error processing PVC {namespace}/{name}: PVC is not bound")
    if claim["metadata"].get("deletionTimestamp"):
        raise VolumeError(f"error processing PVC {namespace}/{name}: PVC is being deleted")
    try:
        pv = await client.get("persistentvolumes", pv_name)
    except errors.NotFound:
        raise VolumeError(f'persistentvolume "{pv_name}" not found') from None
    spec = pv.get("spec") or {}
    if spec.get("hostPath"):
        return {"name": volume["name"], "hostPath": dict(spec["hostPath"])}
    if spec.get("local"):
        return {"name": volume["name"], "hostPath": {"path": spec["local"].get("path", ""), "type": "Directory"}}
    raise VolumeError(f'persistentvolume "{pv_name}": no volume plugin matched (minik8s mounts hostPath '
                      "and local volumes)")


def read_only(pod: dict[str, Any]) -> set[str]:
    return {v["name"] for v in (pod.get("spec") or {}).get("volumes") or ()
            if isinstance(v, dict) and (v.get("persistentVolumeClaim") or {}).get("readOnly")}
