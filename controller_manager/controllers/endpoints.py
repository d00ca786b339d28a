"""The endpoints controller: for each Service with a selector, an Endpoints object of
the same name listing the pods behind it (Kubernetes' pkg/controller/endpoint).

What it guarantees
- Pods in the service's namespace whose labels match `spec.selector`, that have an IP,
  are not terminal (Succeeded/Failed) and are not being deleted, are listed: ready
  ones (condition Ready=True, or every one when `publishNotReadyAddresses`) under
  `addresses`, the others under `notReadyAddresses`, each with `ip`, `nodeName` and a
  `targetRef` to the pod (and `hostname` when the pod's hostname/subdomain name the
  service).
- Ports come from the service ports: a numeric `targetPort` is used as is; a named one
  is looked up among the pod's container ports (same name and protocol), and a pod
  without it is left out for that port. Pods offering the same ports share a subset
  (Kubernetes' RepackSubsets); addresses, ports and subsets are sorted, so the
  object is a function of the state alone. A headless service without ports lists
  addresses without ports.
- The Endpoints object carries the service's labels (plus
  `service.kubernetes.io/headless` for headless services) and is written only when
  its subsets or labels differ from what is stored; it is deleted when the service
  goes. Services without a selector are left alone (their Endpoints are the user's).

Keys are service keys (namespace/name). A pod change that can alter an address
enqueues the services selecting the pod before and after; an Endpoints change
enqueues the service of that name, so a hand-edited or deleted Endpoints is repaired.

Not done: the 1000-address truncation and `endpoints.kubernetes.io/over-capacity`,
and the last-change-trigger-time annotation.

Concurrency: one asyncio loop; a service is never handled by two workers at once.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from client.informer import LABEL, NAMESPACE, key_of, split_key
from controller_manager.controller import Controller, NoOptions
from controller_manager.controller_utils import is_pod_ready
from machinery import errors, labels

log = logging.getLogger("minik8s.controller.endpoints")

HEADLESS_LABEL = "service.kubernetes.io/headless"
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"


def _in_endpoints(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return False
    if not status.get("podIP") and not status.get("podIPs"):
        return False
    return not pod["metadata"].get("deletionTimestamp")


def _relevant(pod: dict) -> tuple:
    """The parts of a pod an Endpoints object depends on."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return (pod["metadata"].get("labels"), status.get("podIP"), is_pod_ready(pod),
            bool(pod["metadata"].get("deletionTimestamp")), status.get("phase"),
            spec.get("nodeName"), spec.get("hostname"), spec.get("subdomain"),
            [c.get("ports") for c in spec.get("containers") or ()])


def find_port(pod: dict, service_port: dict) -> int | None:
    """The pod's port for `service_port` (podutil.FindPort), or None."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol", "TCP")
    for c in (pod.get("spec") or {}).get("containers") or ():
        for p in c.get("ports") or ():
            if p.get("name") == target and p.get("protocol", "TCP") == protocol:
                return p.get("containerPort")
    return None


def _address(pod: dict, service: dict) -> dict:
    md, spec = pod["metadata"], pod.get("spec") or {}
    addr: dict[str, Any] = {"ip": pod["status"].get("podIP") or pod["status"]["podIPs"][0]["ip"]}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        addr["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        addr["nodeName"] = spec["nodeName"]
    addr["targetRef"] = {"kind": "Pod", "namespace": md["namespace"], "name": md["name"],
                         "uid": md.get("uid", "")}
    return addr


def _port_key(p: dict) -> tuple:
    return (p.get("name", ""), p["port"], p.get("protocol", "TCP"), p.get("appProtocol", ""))


def _addr_key(a: dict) -> tuple:
    return (a["ip"], (a.get("targetRef") or {}).get("uid", ""))


def _endpoint_ports(pod: dict, service_ports: list[dict]) -> list[dict]:
    out = []
    for sp in service_ports:
        number = find_port(pod, sp)
        if number is None:
            continue  # this pod does not offer this port
        ep: dict[str, Any] = {"port": number, "protocol": sp.get("protocol", "TCP")}
        if sp.get("name"):
            ep["name"] = sp["name"]
        if sp.get("appProtocol"):
            ep["appProtocol"] = sp["appProtocol"]
        out.append(ep)
    return sorted(out, key=_port_key)


def desired_subsets(service: dict, pods: list[dict]) -> list[dict]:
    """The subsets for `service` given the pods its selector matches."""
    spec = service.get("spec") or {}
    tolerate_unready = bool(spec.get("publishNotReadyAddresses"))
    service_ports = spec.get("ports") or []
    portless = spec.get("clusterIP") == "None" and not service_ports
    # Pods offering the same ports share a subset: port set -> (ports, ready, not ready).
    groups: dict[tuple, tuple[list[dict], list[dict], list[dict]]] = {}
    for pod in pods:
        if not _in_endpoints(pod):
            continue
        ports = _endpoint_ports(pod, service_ports)
        if not ports and not portless:
            continue
        _, ready, not_ready = groups.setdefault(tuple(_port_key(p) for p in ports), (ports, [], []))
        (ready if tolerate_unready or is_pod_ready(pod) else not_ready).append(_address(pod, service))
    subsets = []
    for port_set in sorted(groups):
        ports, ready, not_ready = groups[port_set]
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = sorted(ready, key=_addr_key)
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=_addr_key)
        if ports:
            subset["ports"] = ports
        subsets.append(subset)
    return subsets


class EndpointsController(Controller):
    name = "endpoints"
    queue_name = "endpoint"

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: NoOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.services = self.watch(factory.informer("services"))
        self.endpoints = self.watch(factory.informer("endpoints"))
        self.pods = factory.informer("pods")
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new, old),
                              on_delete=self._pod_changed)
        self.informers.append(self.pods)

    def _pod_changed(self, pod: dict, old: dict | None = None) -> None:
        if old is not None and _relevant(old) == _relevant(pod):
            return
        for p in (pod, old) if old is not None else (pod,):
            for key in self._services_selecting(p):
                self.enqueue(key)

    def _services_selecting(self, pod: dict) -> list[str]:
        md = pod["metadata"]
        pod_labels = md.get("labels") or {}
        out = []
        for svc in self.services.store.by_index(NAMESPACE, md.get("namespace", "")):
            selector = (svc.get("spec") or {}).get("selector")
            if selector and labels.from_set(selector).matches(pod_labels):
                out.append(key_of(svc))
        return out

    def _selected_pods(self, namespace: str, selector: dict) -> list[dict]:
        k, v = next(iter(sorted(selector.items())))
        sel = labels.from_set(selector)
        return [p for p in self.pods.store.by_index(LABEL, f"{k}={v}")
                if p["metadata"].get("namespace") == namespace
                and sel.matches(p["metadata"].get("labels") or {})]

    async def reconcile(self, key) -> None:
        namespace, name = split_key(key)
        service = self.services.store.get(key)
        current = self.endpoints.store.get(key)
        if service is None:
            if current is not None:
                log.info("%s: service %s gone, deleting its Endpoints", self.name, key)
                try:
                    await self.client.delete("endpoints", name, namespace=namespace,
                                             preconditions={"uid": current["metadata"]["uid"]})
                except errors.NotFound:
                    pass
            return
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            return  # the user manages this service's endpoints
        if current is not None and LEADER_ANNOTATION in (current["metadata"].get("annotations") or {}):
            return  # a leader-election lock, not endpoints
        subsets = desired_subsets(service, self._selected_pods(namespace, selector))
        want_labels = dict(service["metadata"].get("labels") or {})
        if (service.get("spec") or {}).get("clusterIP") == "None":
            want_labels[HEADLESS_LABEL] = ""
        if current is not None:
            if (current.get("subsets") or []) == subsets and \
                    (current["metadata"].get("labels") or {}) == want_labels:
                return
            new = copy.deepcopy(current)
            new["subsets"] = subsets
            new["metadata"]["labels"] = want_labels
            log.info("%s: updating Endpoints %s", self.name, key)
            await self.client.update(new)
            return
        log.info("%s: creating Endpoints %s", self.name, key)
        md: dict[str, Any] = {"name": name, "namespace": namespace}
        if want_labels:
            md["labels"] = want_labels
        await self.client.create({"apiVersion": "v1", "kind": "Endpoints", "metadata": md,
                                  "subsets": subsets}, namespace=namespace)
