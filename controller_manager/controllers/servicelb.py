"""The service load balancer: `type: LoadBalancer` Services get the nodes' addresses,
as k3s's ServiceLB (klipper-lb) gives them, so a lab without a cloud can use them.

k3s runs a `svclb-*` DaemonSet per Service whose pods forward the node's port to the
Service; here the per-node proxy already answers a LoadBalancer's ports on every node
address (its node ports and its ingress IPs), so only the status is this controller's.

What it guarantees
- A Service it handles (type LoadBalancer, a ClusterIP, no `spec.loadBalancerClass`:
  k3s, like every default load balancer, leaves classed Services to their own
  controller) has `status.loadBalancer.ingress` set to one entry per address of the
  eligible nodes, `{"ip": ..., "ipMode": "VIP"}`, sorted as k3s sorts them (as strings).
  The addresses are every eligible node's ExternalIP when any eligible node has one,
  else their InternalIPs (k3s's podIPs), of the Service's IP families only.
- Eligible nodes are those a svclb pod would run and be ready on: Ready=True; not
  tainted NoSchedule/NoExecute beyond what svclb and every DaemonSet pod tolerate;
  when some node carries `svccontroller.k3s.cattle.io/enablelb`, only nodes where it is
  `true`; when the Service carries `svccontroller.k3s.cattle.io/lbpool`, only nodes of
  that pool. With `externalTrafficPolicy: Local`, only nodes with a ready Pod endpoint
  in the Service's EndpointSlices (k3s's getStatus reads them the same way).
  No eligible node leaves the ingress empty: kubectl shows `<pending>`.
- The status follows nodes as they come, go, turn ready or not, and change addresses
  or labels. A Service whose type is no longer LoadBalancer has its ingress cleared;
  one with a class is never written.
- The status is written (a merge patch of the status subresource) only when it differs
  from the cached one, so a reconcile of a Service in sync makes no request.

Keys are service keys (namespace/name). A node change that can alter eligibility or
addresses enqueues every LoadBalancer Service; an EndpointSlice change enqueues its
Service (label `kubernetes.io/service-name`) when that is a Local LoadBalancer.

Concurrency: one asyncio loop; a Service is never handled by two workers at once.
"""
from __future__ import annotations

import ipaddress
import logging

from client.informer import NAMESPACE, key_of, split_key
from controller_manager.controller import Controller, NoOptions

log = logging.getLogger("minik8s.controller.servicelb")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ENABLE_LB_LABEL = "svccontroller.k3s.cattle.io/enablelb"
LB_POOL_LABEL = "svccontroller.k3s.cattle.io/lbpool"

# The taints a svclb pod tolerates: its own (CriticalAddonsOnly, the control-plane
# roles) and those the DaemonSet controller adds to every daemon pod.
_TOLERATED_TAINTS = frozenset({
    "CriticalAddonsOnly", "node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane",
    "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure", "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
})


def handles(service: dict) -> bool:
    """Whether the load balancer is this controller's to provide (k3s's shouldHandle)."""
    spec = service.get("spec") or {}
    return (spec.get("type") == "LoadBalancer" and spec.get("clusterIP") not in (None, "", "None")
            and not spec.get("loadBalancerClass"))


def _node_ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or ())


def _tolerated(node: dict) -> bool:
    return all(t.get("effect") not in ("NoSchedule", "NoExecute") or t.get("key") in _TOLERATED_TAINTS
               for t in (node.get("spec") or {}).get("taints") or ())


def _relevant(node: dict) -> tuple:
    """The parts of a node the ingress depends on."""
    return (_node_ready(node), _tolerated(node), (node["metadata"].get("labels") or {}).get(ENABLE_LB_LABEL),
            (node["metadata"].get("labels") or {}).get(LB_POOL_LABEL),
            [(a.get("type"), a.get("address")) for a in (node.get("status") or {}).get("addresses") or ()])


def _family(ip: str) -> str | None:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None  # a hostname or garbage: not an IP a load balancer can hand out


def eligible_nodes(service: dict, nodes: list[dict], local_nodes: set[str] | None) -> list[dict]:
    """The nodes a svclb pod for `service` would run and be ready on."""
    restricted = any(ENABLE_LB_LABEL in (n["metadata"].get("labels") or {}) for n in nodes)
    pool = (service["metadata"].get("labels") or {}).get(LB_POOL_LABEL)
    out = []
    for node in nodes:
        node_labels = node["metadata"].get("labels") or {}
        if restricted and node_labels.get(ENABLE_LB_LABEL) != "true":
            continue
        if pool is not None and node_labels.get(LB_POOL_LABEL) != pool:
            continue
        if local_nodes is not None and node["metadata"]["name"] not in local_nodes:
            continue
        if _node_ready(node) and _tolerated(node) and not node["metadata"].get("deletionTimestamp"):
            out.append(node)
    return out


def ingress_ips(service: dict, nodes: list[dict]) -> list[str]:
    """The addresses of `nodes` a LoadBalancer hands out: every ExternalIP when there
    is one, else every InternalIP, of the service's families, sorted as strings."""
    external: set[str] = set()
    internal: set[str] = set()
    for node in nodes:
        for a in (node.get("status") or {}).get("addresses") or ():
            if a.get("type") == "ExternalIP":
                external.add(a.get("address", ""))
            elif a.get("type") == "InternalIP":
                internal.add(a.get("address", ""))
    families = (service.get("spec") or {}).get("ipFamilies") or ["IPv4"]
    return sorted(ip for ip in (external or internal) if _family(ip) in families)


def _local_nodes(slices: list[dict]) -> set[str]:
    """The nodes with a ready Pod endpoint: the set k3s's getStatus builds for a Service
    that RequestsOnlyLocalTraffic."""
    return {ep["nodeName"] for s in slices for ep in s.get("endpoints") or ()
            if (ep.get("targetRef") or {}).get("kind") == "Pod" and ep.get("nodeName")
            and (ep.get("conditions") or {}).get("ready") is True}


class ServiceLBController(Controller):
    name = "service-lb-controller"  # cloud-controller-manager's name for it
    Options = NoOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: NoOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.services = self.watch(factory.informer("services"))
        self.nodes = factory.informer("nodes")
        self.nodes.add_handler(on_add=self._node_changed,
                               on_update=lambda old, new: self._node_changed(new, old),
                               on_delete=self._node_changed)
        self.slices = factory.informer("endpointslices")
        self.slices.add_handler(on_add=self._slice_changed,
                                on_update=lambda old, new: (self._slice_changed(old), self._slice_changed(new)),
                                on_delete=self._slice_changed)
        self.informers += [self.nodes, self.slices]

    def _node_changed(self, node: dict, old: dict | None = None) -> None:
        if old is not None and _relevant(old) == _relevant(node):
            return
        for svc in self.services.store.list():
            if (svc.get("spec") or {}).get("type") == "LoadBalancer":
                self.enqueue(key_of(svc))

    def _slice_changed(self, endpoint_slice: dict) -> None:
        md = endpoint_slice["metadata"]
        name = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not name:
            return
        key = f"{md.get('namespace', '')}/{name}"
        svc = self.services.store.get(key)
        if svc is not None and (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local":
            self.enqueue(key)

    def desired_ingress(self, service: dict) -> list[dict]:
        local = None
        if (service.get("spec") or {}).get("externalTrafficPolicy") == "Local":
            md = service["metadata"]
            local = _local_nodes([s for s in self.slices.store.by_index(NAMESPACE, md.get("namespace", ""))
                                  if (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == md["name"]])
        nodes = eligible_nodes(service, self.nodes.store.list(), local)
        return [{"ip": ip, "ipMode": "VIP"} for ip in ingress_ips(service, nodes)]

    async def reconcile(self, key) -> None:
        namespace, name = split_key(key)
        service = self.services.store.get(key)
        if service is None:
            return
        current = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if handles(service):
            want = self.desired_ingress(service)
        elif (service.get("spec") or {}).get("type") == "LoadBalancer":
            return  # another load balancer's (a class, or headless): never ours to write
        else:
            want = []  # no longer a LoadBalancer: its addresses go (the service controller's cleanup)
        if current == want:
            return
        log.info("%s: %s ingress %s", self.name, key, [i["ip"] for i in want] or "cleared")
        # None removes the key in a merge patch; the status then reads as k8s's empty one.
        await self.client.patch("services", name, {"status": {"loadBalancer": {"ingress": want or None}}},
                                namespace=namespace, subresource="status")
