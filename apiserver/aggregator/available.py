"""An APIService's Available condition, as kube-aggregator's AvailableConditionController
decides it (pkg/controllers/status/remote), with its reasons and messages:

- Local: no spec.service; "Local APIServices are always available".
- ServiceNotFound: the Service does not exist.
- ServicePortError: the Service has no port spec.service.port.
- MissingEndpoints: no EndpointSlice of the Service has a ready endpoint with that port.
- FailedDiscoveryCheck: GET /apis/<group>/<version> on an endpoint failed or was not 2xx.
- Passed: "all checks passed".
ServiceAccessError (the Service could not be read) is Kubernetes' answer to a lister
error, which the watch cache does not have. `resolve` is also the proxy's endpoint
resolution, so the proxy and the condition never disagree about an endpoint.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import httpx

from apiserver import registry
from machinery import times

if TYPE_CHECKING:
    from apiserver.aggregator import Aggregator

DISCOVERY_TIMEOUT = 5.0  # kube-aggregator's discovery check waits 5 s


class NotAvailable(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def condition(ok: bool, reason: str, message: str) -> dict:
    return {"type": "Available", "status": "True" if ok else "False", "reason": reason, "message": message}


def resolve(agg: Aggregator, apisvc: dict) -> tuple[str, int]:
    """(address, port) of a ready endpoint of the APIService's Service, chosen at random
    (the aggregator's endpoint routing), or NotAvailable with the condition's reason."""
    ref = (apisvc.get("spec") or {}).get("service") or {}
    ns, name, port = ref.get("namespace", ""), ref.get("name", ""), int(ref.get("port") or 443)
    services, slices = registry.by_plural("services"), registry.by_plural("endpointslices")
    assert services is not None and slices is not None
    entry = agg.api.cache.get(services, services.key(ns, name))
    if entry is None:
        raise NotAvailable("ServiceNotFound", f'service/{name} in "{ns}" is not present')
    svc = entry.obj
    if (svc.get("spec") or {}).get("type") == "ExternalName":
        host = (svc.get("spec") or {}).get("externalName", "")
        return host, port
    svc_port = next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") == port), None)
    if svc_port is None:
        raise NotAvailable("ServicePortError", f'service/{name} in "{ns}" is not listening on port {port}')
    port_name = svc_port.get("name") or ""
    found_slice = False
    candidates: list[tuple[str, int]] = []
    for e in agg.api.cache.entries(slices, ns):
        s = e.obj
        if ((s.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name") != name:
            continue
        found_slice = True
        target = next((p.get("port") for p in s.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if not target:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            candidates += [(a, int(target)) for a in ep.get("addresses") or []]
    if not candidates:
        if not found_slice:
            raise NotAvailable("MissingEndpoints", f'cannot find endpoints for service/{name} in "{ns}"')
        raise NotAvailable("MissingEndpoints",
                           f'endpoints for service/{name} in "{ns}" have no addresses with port name "{port_name}"')
    return random.choice(candidates)


async def check(agg: Aggregator, apisvc: dict) -> tuple[dict, dict | None]:
    """The condition now, and the group/version's APIResourceList when the check fetched it."""
    spec = apisvc.get("spec") or {}
    if not isinstance(spec.get("service"), dict):
        return condition(True, "Local", "Local APIServices are always available"), None
    try:
        host, port = resolve(agg, apisvc)
    except NotAvailable as e:
        return condition(False, e.reason, e.message), None
    path = f"/apis/{spec.get('group', '')}/{spec.get('version', '')}"
    url = f"https://{agg.proxy.netloc(host, port)}{path}"
    try:
        r = await agg.proxy.get(apisvc, host, port, path, timeout=DISCOVERY_TIMEOUT)
    except (httpx.HTTPError, OSError, ValueError) as e:
        return condition(False, "FailedDiscoveryCheck", f"failing or missing response from {url}: {e}"), None
    if not 200 <= r.status_code < 300:
        return condition(False, "FailedDiscoveryCheck",
                         f"failing or missing response from {url}: bad status from {url}: {r.status_code}"), None
    try:
        body = r.json()
    except ValueError:
        body = None
    return condition(True, "Passed", "all checks passed"), body if isinstance(body, dict) else None


def with_condition(obj: dict, cond: dict) -> dict | None:
    """`obj` (a copy) with the Available condition set, or None if it already says so.
    lastTransitionTime changes only with the status, as SetAPIServiceCondition does."""
    status = obj.get("status") or {}
    conds = [c for c in status.get("conditions") or []]
    old = next((c for c in conds if c.get("type") == "Available"), None)
    if old is not None and all(old.get(k) == cond[k] for k in ("status", "reason", "message")):
        return None
    new = dict(cond)
    new["lastTransitionTime"] = old["lastTransitionTime"] if old is not None and \
        old.get("status") == cond["status"] and old.get("lastTransitionTime") else times.rfc3339()
    conds = [c for c in conds if c.get("type") != "Available"] + [new]
    out = {**obj, "status": {**status, "conditions": conds}}
    out["metadata"] = dict(obj["metadata"])
    return out
