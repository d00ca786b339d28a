"""The node: registration, status and the heartbeat Lease (kubelet_node_status.go and
the node lease controller).

- `register()` creates the Node (labels, capacity/allocatable, addresses, nodeInfo,
  conditions, the kubelet's endpoint in daemonEndpoints); if it exists already (a
  restarted kubelet, a re-created node) its labels and status are brought up to date.
- `renew_lease()` keeps `kube-node-lease/<node>` renewed (holderIdentity = the node,
  owned by the Node): an update of the last known Lease, re-read on a conflict and
  created when missing. This is the node's heartbeat.
- `update_status()` recomputes the status and patches it only when something other than
  heartbeat times changed, or when `report_interval` (5 minutes) has passed.
- `status.images` (when the node has an image service) lists the images in the store as
  the kubelet's Images setter does: each image (by config digest) with its
  `repo@sha256:<digest>` names, then its `repo:tag` names (at most 5 names), and its size
  in bytes; largest first, at most 50 (nodeStatusMaxImages). It is read again at every
  status update, so the scheduler's ImageLocality sees pulls within one update period.
Wall-clock times are written to the API; intervals read the injectable clock.

`host_capacity()` and `node_info()` read the machine (/proc, /etc, uname). Every method
is a coroutine for one event loop; one `Node` per node name.
"""
from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
import logging
import os
import platform
import random
import socket
import time

from client.clock import Clock, RealClock
from client.rest import Client
from kubelet.images import reference
from kubelet.images.service import ImageService
from kubelet.status import rfc3339
from machinery import times
from machinery.platforms import goarch
from machinery.errors import AlreadyExists, Conflict, NotFound

log = logging.getLogger("minik8s.kubelet.node")

LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.32.0-minik8s"
RUNTIME_VERSION = "minik8s://0.1.0"
ARCH = goarch()
NODE_STATUS_MAX_IMAGES = 50          # the kubelet's nodeStatusMaxImages default
MAX_NAMES_PER_IMAGE_IN_NODE_STATUS = 5


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def host_capacity(root_dir: str = "/") -> dict[str, str]:
    """cpu (cores), memory and ephemeral-storage of this machine, as quantities."""
    mem_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    st = os.statvfs(root_dir if os.path.exists(root_dir) else "/")
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki",
            "ephemeral-storage": f"{st.f_blocks * st.f_frsize // 1024}Ki", "pods": "110"}


def node_info() -> dict[str, str]:
    os_image = "Linux"
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_image = line.split("=", 1)[1].strip('"')
    return {"machineID": _read("/etc/machine-id"), "systemUUID": _read("/sys/class/dmi/id/product_uuid"),
            "bootID": _read("/proc/sys/kernel/random/boot_id"), "kernelVersion": platform.release(),
            "osImage": os_image, "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": ARCH}


def node_images(service: ImageService, limit: int = NODE_STATUS_MAX_IMAGES) -> list[dict]:
    """`status.images` from the image service's store (reads files: call it off the loop)."""
    groups: dict[str, tuple[list[str], list[str], int]] = {}
    for record in service.store.list_images():
        try:
            ref = reference.parse(record.name)
        except ValueError:
            continue  # not a name this node wrote
        digests, tags, _ = groups.setdefault(record.config_digest, ([], [], service.size(record)))
        by_digest = f"{ref.name}@{record.manifest_digest}"
        if by_digest not in digests:
            digests.append(by_digest)
        if ref.tag is not None and f"{ref.name}:{ref.tag}" not in tags:
            tags.append(f"{ref.name}:{ref.tag}")
    images = sorted(groups.values(), key=lambda g: (-g[2], sorted(g[0] + g[1])))[:limit]
    return [{"names": (sorted(digests) + sorted(tags))[:MAX_NAMES_PER_IMAGE_IN_NODE_STATUS], "sizeBytes": size}
            for digests, tags, size in images]


CONDITIONS = (  # (type, status, reason, message) of a healthy node
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def labels_for(name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": ARCH,
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": ARCH, **(extra or {})}


def _differs(new: dict, current: dict) -> bool:
    """Whether the API's status lacks anything of ours (heartbeat times aside)."""
    def norm(c: dict) -> dict:
        return {k: v for k, v in c.items() if k not in ("lastHeartbeatTime", "lastTransitionTime")}
    have = {c.get("type"): norm(c) for c in current.get("conditions") or []}
    if any(have.get(c["type"]) != norm(c) for c in new["conditions"]):
        return True
    return any(current.get(k) != new[k] for k in new if k != "conditions")


class Node:
    def __init__(self, client: Client, name: str, *, address: str, port: int,
                 capacity: dict[str, str], allocatable: dict[str, str] | None = None,
                 info: dict[str, str] | None = None, hostname: str | None = None,
                 labels: dict[str, str] | None = None, clock: Clock | None = None,
                 lease_duration: int = 40, renew_interval: float = 10.0,
                 status_interval: float = 10.0, report_interval: float = 300.0,
                 images: Callable[[], list[dict]] | None = None,
                 taints: list[dict] | None = None,
                 pressure: Callable[[], list[tuple[str, str, str, str]]] | None = None):
        self.client, self.name = client, name
        self.address, self.port = address, port
        self.capacity = capacity
        self.allocatable = allocatable or dict(capacity)
        self.info = info if info is not None else node_info()
        self.hostname = hostname or socket.gethostname()
        self.labels = labels_for(name, labels)
        self.taints = list(taints or [])    # --register-with-taints: set when the Node is created
        # MemoryPressure and DiskPressure as the eviction manager sees them (kubelet/eviction.py)
        self.pressure = pressure
        self.clock = clock or RealClock()
        self.lease_duration, self.renew_interval = lease_duration, renew_interval
        self.status_interval, self.report_interval = status_interval, report_interval
        self.images = images  # status.images, read off the event loop; None: not reported
        self.node: dict | None = None
        self.lease: dict | None = None
        self._reported_at = 0.0

    # -- status ---------------------------------------------------------------------

    def status(self, previous: dict | None = None, images: list[dict] | None = None) -> dict:
        now = rfc3339(time.time())
        before = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
        conditions = []
        observed = {c[0]: c for c in self.pressure()} if self.pressure else {}
        for type_, status, reason, message in (observed.get(c[0], c) for c in CONDITIONS):
            old = before.get(type_) or {}
            since = old.get("lastTransitionTime") if old.get("status") == status else None
            conditions.append({"type": type_, "status": status, "reason": reason, "message": message,
                               "lastHeartbeatTime": now, "lastTransitionTime": since or now})
        addresses = [{"type": "InternalIP", "address": self.address}]
        if self.hostname:
            addresses.append({"type": "Hostname", "address": self.hostname})
        out = {"capacity": dict(self.capacity), "allocatable": dict(self.allocatable),
               "conditions": conditions, "addresses": addresses,
               "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
               "nodeInfo": dict(self.info)}
        if images is not None:
            out["images"] = images
        return out

    async def _images(self) -> list[dict] | None:
        if self.images is None:
            return None
        try:
            return await asyncio.to_thread(self.images)
        except OSError as exc:  # the store's disk; the rest of the status still counts
            log.warning("node %s: listing images: %s", self.name, exc)
            return None

    async def register(self) -> dict:
        """Create the Node, or bring an existing one up to date; -> the Node."""
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": dict(self.labels)},
                "spec": {"taints": list(self.taints)} if self.taints else {},
                "status": self.status(images=await self._images())}
        try:
            self.node = await self.client.create(body)
            log.info("registered node %s", self.name)
        except AlreadyExists:
            node = await self.client.get("nodes", self.name)
            if any((node["metadata"].get("labels") or {}).get(k) != v for k, v in self.labels.items()):
                node = await self.client.patch("nodes", self.name, {"metadata": {"labels": self.labels}})
            self.node = node
            await self.update_status(force=True)
            log.info("node %s was registered already; status updated", self.name)
        self._reported_at = self.clock.monotonic()
        return self.node

    async def update_status(self, *, force: bool = False) -> None:
        """Compare with the Node as the API has it (a controller may have marked it
        NotReady meanwhile) and patch what differs; the heartbeat times alone only every
        report_interval. A strategic merge patch: conditions and addresses are merged by
        type, so conditions others own are kept."""
        self.node = await self.client.get("nodes", self.name)
        current = self.node.get("status") or {}
        new = self.status(current, await self._images())
        due = self.clock.monotonic() - self._reported_at >= self.report_interval
        if not force and not due and _differs(new, current) is False:
            return
        self.node = await self.client.patch("nodes", self.name, {"status": new}, subresource="status",
                                            patch_type="strategic")
        self._reported_at = self.clock.monotonic()

    # -- the lease --------------------------------------------------------------------

    def _new_lease(self) -> dict:
        owner = []
        if self.node is not None:
            owner = [{"apiVersion": "v1", "kind": "Node", "name": self.name,
                      "uid": self.node["metadata"]["uid"]}]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE, "ownerReferences": owner},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": self.lease_duration,
                         "renewTime": times.rfc3339_micro()}}

    async def renew_lease(self) -> None:
        for _ in range(3):
            try:
                if self.lease is None:
                    try:
                        self.lease = await self.client.get("leases", self.name, namespace=LEASE_NAMESPACE)
                    except NotFound:
                        self.lease = await self.client.create(self._new_lease())
                        return
                lease = copy.deepcopy(self.lease)
                lease["spec"].update(holderIdentity=self.name, leaseDurationSeconds=self.lease_duration,
                                     renewTime=times.rfc3339_micro())
                self.lease = await self.client.update(lease)
                return
            except (Conflict, NotFound, AlreadyExists):
                self.lease = None  # someone else wrote it, or it went: read it again

    # -- loops ------------------------------------------------------------------------

    async def run(self) -> None:
        """Renew the lease and refresh the status, each on its own period, forever."""
        await asyncio.gather(self._every(self.renew_interval, self.renew_lease),
                             self._every(self.status_interval, self.update_status))

    async def _every(self, period: float, fn) -> None:
        while True:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the API server may be away; try again
                log.warning("node %s: %s failed: %s", self.name, fn.__name__, exc)
            # The kubelet's JitterUntil(period, 0.04): a node's heartbeats drift apart
            # from the others' rather than all arriving together after an outage.
            await self.clock.sleep(period * random.uniform(1.0, 1.04))
