"""Services: what an update carries over and drops, as Kubernetes' service REST does
before it allocates (pkg/registry/core/service/storage: patchAllocatedValues,
normalizeClusterIPs, dropTypeDependentFields). The allocation itself is I/O, so it is
not here: apiserver/allocators.py does it, called by apiserver/resources.py around the
write.
- An update that leaves clusterIP/clusterIPs (or a port's nodePort, matched by port name)
  unset keeps the stored value, so a client that sends back what it created (an `apply`
  of the original manifest) does not ask for a new address.
- A clusterIP changed alone moves clusterIPs[0] with it, so validation reports the change
  ("may not change once set") rather than a mismatch.
- Becoming a type that needs no cluster IP (ExternalName) or no node ports wipes the
  values the client did not itself change; they are released once the update is stored.
  externalTrafficPolicy goes when the type is neither NodePort nor LoadBalancer, and a
  healthCheckNodePort the client left as it was when it is no longer a LoadBalancer
  with externalTrafficPolicy Local; one left unset while it still is keeps its value."""
from __future__ import annotations

from apiserver.strategies.generic import Strategy


def _type(svc: dict) -> str:
    return (svc.get("spec") or {}).get("type") or "ClusterIP"


def _needs_cluster_ip(svc: dict) -> bool:
    return _type(svc) != "ExternalName"  # "None" counts as a value here


def _needs_node_port(svc: dict) -> bool:
    return _type(svc) in ("NodePort", "LoadBalancer")


def _needs_health_check(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return _type(svc) == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


class ServiceStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(status_subresource=True)

    def prepare_for_update(self, new: dict, old: dict) -> None:
        super().prepare_for_update(new, old)
        nspec, ospec = new.setdefault("spec", {}), old.get("spec") or {}
        if not isinstance(nspec, dict):
            return
        if _needs_cluster_ip(old) and _needs_cluster_ip(new):
            if not nspec.get("clusterIP") and ospec.get("clusterIP"):
                nspec["clusterIP"] = ospec["clusterIP"]
            if not nspec.get("clusterIPs") and ospec.get("clusterIPs"):
                nspec["clusterIPs"] = list(ospec["clusterIPs"])
            for k in ("ipFamilies", "ipFamilyPolicy"):
                if k not in nspec and k in ospec:
                    nspec[k] = ospec[k]
            ips = nspec.get("clusterIPs")
            if (nspec.get("clusterIP") != ospec.get("clusterIP") and isinstance(ips, list) and ips
                    and ips == ospec.get("clusterIPs")):
                nspec["clusterIPs"] = [nspec.get("clusterIP"), *ips[1:]]
        new_ports = [p for p in nspec.get("ports") or [] if isinstance(p, dict)]
        old_ports = [p for p in ospec.get("ports") or [] if isinstance(p, dict)]
        if _needs_node_port(old) and _needs_node_port(new):
            used = {p.get("nodePort") for p in old_ports} & {p.get("nodePort") for p in new_ports}
            by_name = {p.get("name", ""): p.get("nodePort") for p in old_ports}
            for p in new_ports:
                if not p.get("nodePort"):
                    was = by_name.get(p.get("name", ""))
                    if was and was not in used:
                        p["nodePort"] = was
        if _needs_cluster_ip(old) and not _needs_cluster_ip(new):
            if nspec.get("clusterIP") == ospec.get("clusterIP") and \
                    nspec.get("clusterIPs") == ospec.get("clusterIPs"):
                nspec.pop("clusterIP", None)
                nspec.pop("clusterIPs", None)
            for k in ("ipFamilies", "ipFamilyPolicy"):
                if nspec.get(k) == ospec.get(k):
                    nspec.pop(k, None)
        if _needs_node_port(old) and not _needs_node_port(new):
            if [p.get("nodePort") for p in new_ports] == [p.get("nodePort") for p in old_ports]:
                for p in new_ports:
                    p.pop("nodePort", None)
        old_hc, new_hc = _needs_health_check(old), _needs_health_check(new)
        if old_hc and new_hc and not nspec.get("healthCheckNodePort") and ospec.get("healthCheckNodePort"):
            nspec["healthCheckNodePort"] = ospec["healthCheckNodePort"]
        if old_hc and not new_hc and nspec.get("healthCheckNodePort") == ospec.get("healthCheckNodePort"):
            nspec.pop("healthCheckNodePort", None)
        if not _needs_node_port(new):
            nspec.pop("externalTrafficPolicy", None)
