"""The EndpointSlice controller: for each Service with a selector, the
discovery.k8s.io/v1 EndpointSlices listing the pods behind it (Kubernetes'
pkg/controller/endpointslice and the reconciler in staging/src/k8s.io/endpointslice).

What it guarantees
- Slices are labelled `kubernetes.io/service-name: <svc>` and
  `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, carry the
  Service's other labels (and `service.kubernetes.io/headless` for a headless one),
  are named `<svc>-<random>` (generateName) and owned by the Service (ownerReference
  with `controller: true`), so the garbage collector deletes them with it. Slices
  other writers manage (another managed-by) are never touched.
- One set of slices per address type the Service has (its `ipFamilies`) and per set of
  ports: a pod is listed in the slices whose ports are the Service ports resolved for
  that pod. A named targetPort is looked up among the pod's container ports, then its
  sidecars' (same name and protocol); a pod that lacks it is listed without that port
  (in a slice of its own port set), so nothing sends that port's traffic to it, as in
  Kubernetes.
- A pod is listed when it has an IP and is not Succeeded or Failed, terminating pods
  included: `serving` is the pod's Ready condition, `terminating` whether it is being
  deleted, `ready` is serving and not terminating (always true with
  `publishNotReadyAddresses`). Each endpoint has the pod's one address of the slice's
  family, `targetRef`, `nodeName`, `zone` (the node's `topology.kubernetes.io/zone`
  label) and `hostname` when the pod's hostname and subdomain name this Service. A pod
  whose node is not (yet) known is left out (unless the Service publishes not-ready
  addresses) and the Service retried with backoff, after the rest is written, with a
  FailedToUpdateEndpointSlices event, as in Kubernetes.
- At most `--max-endpoints-per-slice` (100) endpoints a slice. Changes are minimal, as
  Kubernetes' reconciler makes them: an endpoint stays in the slice it is in; changed
  endpoints are rewritten in place; new ones first fill slices that are being updated
  anyway, then the closest-fitting unchanged slice, and only then a new slice; a slice
  left empty is deleted, unless a create of the same address type can reuse it (an
  update instead of a delete plus a create). A Service with no endpoints keeps one
  empty placeholder slice. Slices of address types or owners the Service no longer
  has are deleted.
- Every slice written carries `endpoints.kubernetes.io/last-change-trigger-time`: the
  earliest change that caused this write and was not reflected in an earlier one (the
  Service's creation on first sync, else the earliest Ready transition among changed
  pods, or the Service's creation if it is new), or none when nothing known triggered
  it. The service proxy reads it for the network-programming-latency SLI.
- Services without a selector, and ExternalName Services, are left alone.
- A stale informer cache is never acted on: the slices this controller wrote are
  remembered by uid and generation (Kubernetes' EndpointSliceTracker); until the cache
  shows them (and no longer shows those it deleted) a sync is retried with backoff, so
  a slow watch cannot make it create duplicates. A change to one of its slices by
  someone else (a newer generation, a delete it did not make) makes it look again.

Keys are Service keys (namespace/name). Pod changes that can alter an endpoint enqueue
the Services selecting the pod before and after; slice events enqueue their Service as
said above.

Metrics: `endpoint_slice_controller_changes_total{operation=create|update|delete}`, as
Kubernetes counts them (besides the `endpoint_slice` work queue's).

Not done: topology hints (and node events for them), the dual-stack `IP` address type
migration, the endpoint-updates batch period, and the mirroring controller.

Concurrency: one asyncio loop; a Service is never synced by two workers at once, so the
trackers need no lock.
"""
from __future__ import annotations

import copy
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client import Counter

from client.events import WARNING
from client.informer import LABEL, NAMESPACE, key_of, split_key
from controller_manager.controller import Controller
from controller_manager.controller_utils import is_pod_ready, ready_condition
from machinery import errors, labels, times
from machinery.metrics import REGISTRY

log = logging.getLogger("minik8s.controller.endpointslice")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
ZONE_LABEL = "topology.kubernetes.io/zone"
_RESERVED = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)

# Kubernetes' endpoint_slice_controller_changes: the slices it wrote, by operation.
CHANGES = Counter("endpoint_slice_controller_changes", "Number of EndpointSlice changes",
                  ["operation"], registry=REGISTRY)


# -- what a Service's slices should hold (pure) -------------------------------------------

def address_types(service: dict) -> list[str]:
    """The address types the Service's slices have (getAddressTypesForService)."""
    spec = service.get("spec") or {}
    families = spec.get("ipFamilies") or []
    out = [t for t in ("IPv4", "IPv6") if t in families]
    if out:
        return out
    cluster_ip = spec.get("clusterIP") or ""
    if cluster_ip and cluster_ip != "None":
        return ["IPv6" if ":" in cluster_ip else "IPv4"]
    return ["IPv4", "IPv6"]  # headless without families: both


def should_be_listed(pod: dict) -> bool:
    """ShouldPodBeInEndpoints(pod, includeTerminating=true)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return False
    return bool(status.get("podIP") or status.get("podIPs"))


def find_port(pod: dict, service_port: dict) -> int | None:
    """The pod's port for a Service port (FindPort): a number as it is; a name looked up
    among the containers' ports, then the sidecars' (restartPolicy Always init
    containers), with the same protocol. None: the pod does not offer it."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = service_port.get("protocol", "TCP")
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or ()) + [
        c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or ():
            if p.get("name") == target and p.get("protocol", "TCP") == protocol:
                return p.get("containerPort")
    return None


def endpoint_ports(service: dict, pod: dict) -> list[dict]:
    """The Service's ports as this pod offers them; a port the pod lacks is left out."""
    spec = service.get("spec") or {}
    out = []
    for sp in spec.get("ports") or ():
        number = find_port(pod, sp)
        if number is None:
            continue
        port: dict[str, Any] = {"name": sp.get("name", ""), "port": number,
                                "protocol": sp.get("protocol", "TCP")}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    return out


def port_key(ports: list[dict] | None) -> tuple:
    """Slices with equal keys list the same ports (endpointsliceutil.NewPortMapKey)."""
    return tuple(sorted((p.get("name") or "", p.get("protocol") or "TCP", p.get("port"),
                         p.get("appProtocol") or "") for p in ports or ()))


def _pod_addresses(pod: dict, address_type: str) -> list[str]:
    status = pod.get("status") or {}
    ips = [x.get("ip") for x in status.get("podIPs") or () if x.get("ip")] or \
        ([status["podIP"]] if status.get("podIP") else [])
    want = 6 if address_type == "IPv6" else 4
    out = []
    for ip in ips:
        try:
            if ipaddress.ip_address(ip).version == want:
                out.append(ip)
        except ValueError:
            continue
    return out


def pod_to_endpoint(pod: dict, node: dict | None, service: dict, address_type: str) -> dict:
    md, spec = pod["metadata"], pod.get("spec") or {}
    serving = is_pod_ready(pod)
    terminating = bool(md.get("deletionTimestamp"))
    # Never ready while terminating, for old consumers that read only `ready`, unless the
    # Service publishes not-ready addresses.
    ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses")) or (serving and not terminating)
    ep: dict[str, Any] = {
        "addresses": _pod_addresses(pod, address_type),
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": md.get("namespace", ""), "name": md["name"],
                      "uid": md.get("uid", "")}}
    if spec.get("nodeName"):
        ep["nodeName"] = spec["nodeName"]
    zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(ZONE_LABEL)
    if zone:
        ep["zone"] = zone
    smd = service["metadata"]
    if spec.get("hostname") and spec.get("subdomain") == smd["name"] \
            and md.get("namespace") == smd.get("namespace"):
        ep["hostname"] = spec["hostname"]
    return ep


def endpoint_id(ep: dict) -> tuple:
    """What makes two endpoints the same one (endpointsliceutil's endpoint hash)."""
    ref = ep.get("targetRef") or {}
    return (tuple(sorted(ep.get("addresses") or ())), ep.get("hostname") or "",
            ref.get("namespace") or "", ref.get("name") or "")


def slice_labels(service: dict) -> dict[str, str]:
    """The Service's labels (but the reserved ones) plus the slice's own."""
    out = {k: v for k, v in (service["metadata"].get("labels") or {}).items() if k not in _RESERVED}
    if (service.get("spec") or {}).get("clusterIP") in ("None", "", None):
        out[HEADLESS_LABEL] = ""
    out[SERVICE_NAME_LABEL] = service["metadata"]["name"]
    out[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return out


def owned_by(slice_: dict, service: dict) -> bool:
    uid = service["metadata"].get("uid")
    return any(r.get("uid") == uid and r.get("kind") == "Service" and r.get("apiVersion") == "v1"
               for r in slice_["metadata"].get("ownerReferences") or ())


def new_slice(service: dict, ports: list[dict], address_type: str) -> dict:
    smd = service["metadata"]
    # generateName `<svc>-`, or the bare name where the dash would make it invalid.
    prefix = smd["name"] + "-" if len(smd["name"]) < 253 else smd["name"]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"generateName": prefix, "namespace": smd.get("namespace", ""),
                         "labels": slice_labels(service),
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": smd["name"],
                                              "uid": smd.get("uid", ""), "controller": True,
                                              "blockOwnerDeletion": True}]},
            "addressType": address_type, "endpoints": [], "ports": copy.deepcopy(ports)}


def _is_placeholder(have: dict, want: dict) -> bool:
    """placeholderSliceCompare: namespace, labels, type, ports and endpoints equal, a
    missing list counting as an empty one."""
    hmd, wmd = have["metadata"], want["metadata"]
    return (hmd.get("namespace") == wmd.get("namespace")
            and (hmd.get("labels") or {}) == (wmd.get("labels") or {})
            and have.get("addressType") == want.get("addressType")
            and (have.get("ports") or []) == (want.get("ports") or [])
            and (have.get("endpoints") or []) == (want.get("endpoints") or []))


@dataclass
class Plan:
    """The writes that bring a Service's slices to the desired state, and the pods that
    could not be placed (their nodes unknown)."""
    create: list[dict] = field(default_factory=list)
    update: list[dict] = field(default_factory=list)
    delete: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def plan(service: dict, pods: list[dict], existing: list[dict], *,
         node_of: Callable[[str], dict | None], max_per_slice: int = 100) -> Plan:
    """The reconciler's decisions (Reconcile), with no I/O. `existing` are the slices this
    controller manages for the Service, not being deleted."""
    supported = address_types(service)
    out = Plan()
    by_type: dict[str, list[dict]] = {t: [] for t in supported}
    stale_types = []
    for s in existing:
        if s.get("addressType") in by_type:
            by_type[s["addressType"]].append(s)
        else:
            stale_types.append(s)
    for t in supported:
        _plan_address_type(out, service, pods, by_type[t], t, node_of, max_per_slice)
    out.delete += stale_types
    return out


def _plan_address_type(out: Plan, service: dict, pods: list[dict], existing: list[dict],
                       address_type: str, node_of: Callable[[str], dict | None],
                       max_per_slice: int) -> None:
    create: list[dict] = []
    update: list[dict] = []
    delete: list[dict] = []
    existing_by_ports: dict[tuple, list[dict]] = {}
    for s in existing:
        if owned_by(s, service):
            existing_by_ports.setdefault(port_key(s.get("ports")), []).append(s)
        else:  # an older Service of the same name's
            delete.append(s)
    desired: dict[tuple, dict[tuple, dict]] = {}
    desired_ports: dict[tuple, list[dict]] = {}
    for pod in pods:
        if not should_be_listed(pod):
            continue
        ports = endpoint_ports(service, pod)
        key = port_key(ports)
        desired.setdefault(key, {})
        desired_ports.setdefault(key, ports)
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        node = node_of(node_name)
        # A Service that publishes not-ready addresses lists the pod all the same.
        if node is None and not (service.get("spec") or {}).get("publishNotReadyAddresses"):
            out.problems.append(f"skipping Pod {pod['metadata']['name']} for Service "
                                f"{service['metadata'].get('namespace')}/{service['metadata']['name']}: "
                                f"Node {node_name} Not Found")
            continue
        ep = pod_to_endpoint(pod, node, service, address_type)
        if ep["addresses"]:
            desired[key][endpoint_id(ep)] = ep
    for key, want in desired.items():
        c, u, d = _plan_ports(service, existing_by_ports.get(key, []), want, desired_ports[key],
                              address_type, max_per_slice)
        create += c
        update += u
        delete += d
    for key, slices in existing_by_ports.items():
        if key not in desired:
            delete += slices
    if len(existing) == len(delete) and not create:
        # No endpoints at all: one empty slice says so; keep the one there is.
        placeholder = new_slice(service, [], address_type)
        if len(delete) == 1 and _is_placeholder(delete[0], placeholder):
            delete = []
        else:
            create.append(placeholder)
    # A create and a delete of the same type make one update of the deleted slice.
    i = 0
    while i < len(delete) and create:
        gone, new = delete[i], create[-1]
        if gone.get("addressType") == new["addressType"] and owned_by(gone, service):
            create.pop()
            new["metadata"].pop("generateName", None)
            for k in ("name", "uid", "resourceVersion", "generateName"):
                if k in gone["metadata"]:
                    new["metadata"][k] = gone["metadata"][k]
            update.append(new)
            delete.pop(i)
        else:
            i += 1
    out.create += create
    out.update += update
    out.delete += delete


def _plan_ports(service: dict, existing: list[dict], want: dict[tuple, dict], ports: list[dict],
                address_type: str, max_per_slice: int) -> tuple[list[dict], list[dict], list[dict]]:
    """reconcileByPortMapping: the slices of one port set."""
    want = dict(want)
    by_name: dict[str, dict] = {}
    unchanged: list[str] = []
    to_update: list[str] = []
    to_delete: list[str] = []
    labels_ = slice_labels(service)
    # 1. Keep each wanted endpoint where it is; drop the unwanted; note the changed.
    for s in existing:
        name = s["metadata"]["name"]
        by_name[name] = s
        kept, changed = [], False
        for ep in s.get("endpoints") or ():
            got = want.pop(endpoint_id(ep), None)
            if got is not None:
                kept.append(got)
                changed = changed or got != ep
        if changed or len(kept) != len(s.get("endpoints") or ()):
            if not kept:
                to_delete.append(name)
                continue
            s = by_name[name] = copy.deepcopy(s)
            s["endpoints"] = kept
            s["metadata"]["labels"] = dict(labels_)
            to_update.append(name)
        elif (s["metadata"].get("labels") or {}) != labels_:
            s = by_name[name] = copy.deepcopy(s)
            s["metadata"]["labels"] = dict(labels_)
            to_update.append(name)
        else:
            unchanged.append(name)
    remaining = [want[k] for k in sorted(want)]
    # 2. New endpoints go first into slices written anyway, the fullest first.
    if remaining and to_update:
        for s in sorted((by_name[n] for n in to_update), key=lambda s: -len(s["endpoints"])):
            while remaining and len(s["endpoints"]) < max_per_slice:
                s["endpoints"].append(remaining.pop(0))
    # 3. Then into the unchanged slice they fit best, then into new slices.
    create: list[dict] = []
    while remaining:
        fill = None
        if len(remaining) < max_per_slice and unchanged:
            fill = _slice_to_fill([by_name[n] for n in unchanged], len(remaining), max_per_slice)
        if fill is None:
            fill = new_slice(service, ports, address_type)
        else:
            fill = by_name[fill["metadata"]["name"]] = copy.deepcopy(fill)
            fill["endpoints"] = list(fill.get("endpoints") or ())
        while remaining and len(fill["endpoints"]) < max_per_slice:
            fill["endpoints"].append(remaining.pop(0))
        name = fill["metadata"].get("name")
        if name:
            to_update.append(name)
            unchanged.remove(name)
        else:
            create.append(fill)
    return create, [by_name[n] for n in to_update], [by_name[n] for n in to_delete]


def _slice_to_fill(slices: list[dict], count: int, max_per_slice: int) -> dict | None:
    """The slice that `count` more endpoints fill most closely, if any fits them all."""
    best, best_gap = None, max_per_slice
    for s in slices:
        gap = max_per_slice - count - len(s.get("endpoints") or ())
        if 0 <= gap < best_gap:
            best, best_gap = s, gap
            if gap == 0:
                break
    return best


# -- trackers ------------------------------------------------------------------------------

_DELETION_EXPECTED = -1


class SliceTracker:
    """The generation of each slice this controller wrote, by Service key (Kubernetes'
    EndpointSliceTracker): what tells a stale cache, and its own echoes, apart."""

    def __init__(self) -> None:
        self._by_service: dict[str, dict[str, int]] = {}

    @staticmethod
    def _service_key(s: dict) -> str:
        md = s["metadata"]
        return f"{md.get('namespace', '')}/{(md.get('labels') or {}).get(SERVICE_NAME_LABEL, '')}"

    def _gens(self, s: dict) -> dict[str, int] | None:
        return self._by_service.get(self._service_key(s))

    def has(self, s: dict) -> bool:
        gens = self._gens(s)
        return gens is not None and s["metadata"].get("uid") in gens

    def should_sync(self, s: dict) -> bool:
        """Whether a slice event is news: not one this controller wrote, or newer."""
        gens = self._gens(s)
        g = None if gens is None else gens.get(s["metadata"].get("uid", ""))
        return g is None or s["metadata"].get("generation", 0) > g

    def update(self, s: dict) -> None:
        self._by_service.setdefault(self._service_key(s), {})[s["metadata"]["uid"]] = \
            s["metadata"].get("generation", 0)

    def expect_deletion(self, s: dict) -> None:
        self._by_service.setdefault(self._service_key(s), {})[s["metadata"]["uid"]] = _DELETION_EXPECTED

    def handle_deletion(self, s: dict) -> bool:
        """Forget a deleted slice; True if its deletion was this controller's own."""
        gens = self._gens(s)
        if gens is None:
            return True
        g = gens.pop(s["metadata"].get("uid", ""), None)
        return g is None or g == _DELETION_EXPECTED

    def stale(self, service_key: str, slices: list[dict]) -> bool:
        """Whether the cache lags what this controller wrote for the Service."""
        gens = self._by_service.get(service_key)
        if not gens:
            return False
        seen = set()
        for s in slices:
            uid = s["metadata"].get("uid", "")
            seen.add(uid)
            g = gens.get(uid)
            if g is not None and (g == _DELETION_EXPECTED or g > s["metadata"].get("generation", 0)):
                return True
        return any(g != _DELETION_EXPECTED and uid not in seen for uid, g in gens.items())

    def delete_service(self, service_key: str) -> None:
        self._by_service.pop(service_key, None)


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return times.parse(value)
    except ValueError:
        return None


def _pod_trigger_time(pod: dict) -> float | None:
    return _time((ready_condition(pod) or {}).get("lastTransitionTime"))


class TriggerTimeTracker:
    """When the change a sync reflects happened (Kubernetes' TriggerTimeTracker): per
    Service, the pods' Ready transition times and the Service's creation time as of the
    last sync."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[dict[str, float | None], float | None]] = {}

    def compute(self, key: str, service: dict, pods: list[dict]) -> float | None:
        before = self._state.get(key)
        pod_times = {p["metadata"]["name"]: _pod_trigger_time(p) for p in pods}
        created = _time(service["metadata"].get("creationTimestamp"))
        self._state[key] = (pod_times, created)
        if before is None:
            return created
        old_pods, old_created = before
        changed = [t for name, t in pod_times.items()
                   if t is not None and (old_pods.get(name) is None or t > (old_pods[name] or 0))]
        if created is not None and (old_created is None or created > old_created):
            changed.append(created)
        return min(changed) if changed else None

    def delete_service(self, key: str) -> None:
        self._state.pop(key, None)


def _trigger_annotation(t: float) -> str:
    return times.rfc3339(t) if t == int(t) else times.rfc3339_micro(t)


# -- the controller ------------------------------------------------------------------------

class StaleCache(errors.Conflict):
    """The slice cache has not caught up with this controller's own writes: a normal
    race, retried with backoff like a Conflict."""


@dataclass(frozen=True, kw_only=True)
class EndpointSliceOptions:
    max_endpoints_per_slice: int = 100  # kube-controller-manager's --max-endpoints-per-slice

    def __post_init__(self) -> None:
        if not 1 <= self.max_endpoints_per_slice <= 1000:
            raise ValueError(f"--max-endpoints-per-slice must be between 1 and 1000, "
                             f"got {self.max_endpoints_per_slice}")


def _relevant(pod: dict) -> tuple:
    """The parts of a pod its endpoints depend on (podEndpointsChanged)."""
    md, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    return (md.get("labels"), status.get("podIP"), status.get("podIPs"), is_pod_ready(pod),
            bool(md.get("deletionTimestamp")), status.get("phase"), spec.get("nodeName"),
            spec.get("hostname"), spec.get("subdomain"))


class EndpointSliceController(Controller):
    name = "endpointslice"
    queue_name = "endpoint_slice"
    Options = EndpointSliceOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: EndpointSliceOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.max_per_slice = (options or EndpointSliceOptions()).max_endpoints_per_slice
        self.tracker = SliceTracker()
        self.trigger_times = TriggerTimeTracker()
        self.services = self.watch(factory.informer("services"))
        self.pods = factory.informer("pods")
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new, old),
                              on_delete=self._pod_changed)
        self.slices = factory.informer("endpointslices")
        self.slices.add_handler(on_add=self._slice_added, on_update=self._slice_updated,
                                on_delete=self._slice_deleted)
        self.nodes = factory.informer("nodes")
        self.informers += [self.pods, self.slices, self.nodes]

    # -- event handlers: keys only ---------------------------------------------------

    def _pod_changed(self, pod: dict, old: dict | None = None) -> None:
        if old is not None and _relevant(old) == _relevant(pod):
            return
        keys = set(self._services_selecting(pod))
        if old is not None and old["metadata"].get("labels") != pod["metadata"].get("labels"):
            keys.update(self._services_selecting(old))
        for key in keys:
            self.enqueue(key)

    def _services_selecting(self, pod: dict) -> list[str]:
        md = pod["metadata"]
        pod_labels = md.get("labels") or {}
        return [key_of(svc) for svc in self.services.store.by_index(NAMESPACE, md.get("namespace", ""))
                if (sel := (svc.get("spec") or {}).get("selector"))
                and labels.from_set(sel).matches(pod_labels)]

    @staticmethod
    def _ours(s: dict) -> bool:
        return (s["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == CONTROLLER_NAME

    def _enqueue_service_of(self, s: dict) -> None:
        md = s["metadata"]
        name = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if name:
            self.enqueue(f"{md.get('namespace', '')}/{name}")

    def _slice_added(self, s: dict) -> None:
        if self._ours(s) and self.tracker.should_sync(s):
            self._enqueue_service_of(s)

    def _slice_updated(self, old: dict, new: dict) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        ol, nl = old["metadata"].get("labels") or {}, new["metadata"].get("labels") or {}
        if ol.get(MANAGED_BY_LABEL) != nl.get(MANAGED_BY_LABEL) or \
                ol.get(SERVICE_NAME_LABEL) != nl.get(SERVICE_NAME_LABEL):
            self._enqueue_service_of(old)
        if self._ours(new) and self.tracker.should_sync(new):
            self._enqueue_service_of(new)

    def _slice_deleted(self, s: dict) -> None:
        # Kubernetes looks again only for a tracked slice; one deleted behind its back
        # after a restart (untracked) is put back here too, not at the next resync.
        expected = self.tracker.has(s) and self.tracker.handle_deletion(s)
        if self._ours(s) and not expected:
            self._enqueue_service_of(s)

    # -- reconcile -------------------------------------------------------------------

    def _selected_pods(self, namespace: str, selector: dict) -> list[dict]:
        k, v = next(iter(sorted(selector.items())))
        sel = labels.from_set(selector)
        return [p for p in self.pods.store.by_index(LABEL, f"{k}={v}")
                if p["metadata"].get("namespace") == namespace
                and sel.matches(p["metadata"].get("labels") or {})]

    def _managed_slices(self, namespace: str, name: str) -> list[dict]:
        return [s for s in self.slices.store.by_index(LABEL, f"{SERVICE_NAME_LABEL}={name}")
                if s["metadata"].get("namespace") == namespace and self._ours(s)
                and not s["metadata"].get("deletionTimestamp")]

    def _node(self, name: str) -> dict | None:
        return self.nodes.store.get(name) if name else None

    async def reconcile(self, key) -> None:
        namespace, name = split_key(key)
        service = self.services.store.get(key)
        if service is None:
            # Its slices go with it: the garbage collector follows their ownerReferences.
            self.trigger_times.delete_service(key)
            self.tracker.delete_service(key)
            return
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" or not spec.get("selector"):
            return  # no endpoints, or endpoints the user writes
        pods = self._selected_pods(namespace, spec["selector"])
        slices = self._managed_slices(namespace, name)
        if self.tracker.stale(key, slices):
            raise StaleCache("EndpointSlice informer cache is out of date")
        # Computed on every sync, so the tracker's state advances even when nothing is written.
        trigger = self.trigger_times.compute(key, service, pods)
        decided = plan(service, pods, slices, node_of=self._node, max_per_slice=self.max_per_slice)
        try:
            await self._write(service, decided, trigger)
            if decided.problems:
                raise RuntimeError("; ".join(decided.problems))
        except StaleCache:
            raise
        except Exception as exc:
            if self.recorder is not None:
                message = getattr(exc, "message", None) or str(exc)
                self.recorder.event(service, WARNING, "FailedToUpdateEndpointSlices",
                                    f"Error updating Endpoint Slices for Service {key}: {message}")
            raise

    async def _write(self, service: dict, decided: Plan, trigger: float | None) -> None:
        """finalize: creates (none for a Service being deleted, which would race the
        garbage collector), then updates, then deletes; each remembered by the tracker."""
        namespace = service["metadata"].get("namespace", "")

        def annotate(s: dict) -> dict:
            annotations = s["metadata"].setdefault("annotations", {})
            if trigger is not None:
                annotations[TRIGGER_TIME_ANNOTATION] = _trigger_annotation(trigger)
            else:
                annotations.pop(TRIGGER_TIME_ANNOTATION, None)
            if not annotations:
                del s["metadata"]["annotations"]
            return s

        if not service["metadata"].get("deletionTimestamp"):
            for s in decided.create:
                try:
                    created = await self.client.create(annotate(s), namespace=namespace)
                except errors.Forbidden as e:
                    if "being terminated" in e.message:
                        return  # the namespace is going; so are its slices
                    raise
                log.info("%s: created EndpointSlice %s/%s", self.name, namespace, created["metadata"]["name"])
                self.tracker.update(created)
                CHANGES.labels("create").inc()
        for s in decided.update:
            updated = await self.client.update(annotate(s))
            self.tracker.update(updated)
            CHANGES.labels("update").inc()
        for s in decided.delete:
            try:
                await self.client.delete("endpointslices", s["metadata"]["name"], namespace=namespace,
                                         preconditions={"uid": s["metadata"]["uid"]})
            except errors.NotFound:
                pass
            log.info("%s: deleted EndpointSlice %s/%s", self.name, namespace, s["metadata"]["name"])
            self.tracker.expect_deletion(s)
            CHANGES.labels("delete").inc()
