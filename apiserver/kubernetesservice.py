"""The `default/kubernetes` Service and its Endpoints, kept by the API server as
kube-apiserver's controlplane controller (pkg/controlplane/controller/kubernetesservice)
keeps them:
- at start, after the allocation repair (apiserver/allocators.py), and every 10 s after,
  the Service exists at the service range's first address (10.96.0.1 by default) with
  port 443 named `https`, TCP, targeting the server's secure port, labelled
  component=apiserver, provider=kubernetes; a Service whose ports or type were changed is
  put back;
- its Endpoints (labelled endpointslice.kubernetes.io/skip-mirror, as Kubernetes writes
  them) list this server's advertised address and secure port.
Unlike kube-apiserver's lease reconciler, the Endpoints hold this server alone: several
API servers over one etcd would each write their own address (see README)."""
from __future__ import annotations

import logging

from apiserver.registry import by_plural
from apiserver.resources import Resources
from machinery import errors

log = logging.getLogger("minik8s.apiserver")

NAME, NAMESPACE = "kubernetes", "default"
INTERVAL = 10.0


def service(cluster_ip: str, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}


def endpoints(address: str, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": address}],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}


async def reconcile(resources: Resources, cluster_ip: str, address: str, port: int) -> None:
    """Create or put back the Service and its Endpoints (see the module docstring)."""
    svc_rt, ep_rt = by_plural("services"), by_plural("endpoints")
    want = service(cluster_ip, port)
    try:
        have = await resources.get(svc_rt, NAMESPACE, NAME)
    except errors.NotFound:
        try:
            await resources.create(svc_rt, NAMESPACE, want)
        except errors.AlreadyExists:
            pass
        except errors.Invalid as e:  # the address is another Service's: nothing to do but say so
            log.error("cannot create the kubernetes service: %s", e)
    else:
        spec = have.get("spec") or {}
        wanted_ports = want["spec"]["ports"]
        if spec.get("type") != "ClusterIP" or [
                {k: p.get(k) for k in ("name", "port", "protocol", "targetPort")}
                for p in spec.get("ports") or []] != wanted_ports:
            have["spec"].update(type="ClusterIP", ports=wanted_ports)
            try:
                await resources.update(svc_rt, NAMESPACE, NAME, have)
            except (errors.Conflict, errors.NotFound, errors.Invalid) as e:
                log.warning("cannot reconcile the kubernetes service: %s", e)
    want_ep = endpoints(address, port)
    try:
        have_ep = await resources.get(ep_rt, NAMESPACE, NAME)
    except errors.NotFound:
        try:
            await resources.create(ep_rt, NAMESPACE, want_ep)
        except errors.AlreadyExists:
            pass
        return
    if have_ep.get("subsets") != want_ep["subsets"] or \
            (have_ep["metadata"].get("labels") or {}) != want_ep["metadata"]["labels"]:
        have_ep["subsets"] = want_ep["subsets"]
        have_ep["metadata"]["labels"] = want_ep["metadata"]["labels"]
        try:
            await resources.update(ep_rt, NAMESPACE, NAME, have_ep)
        except (errors.Conflict, errors.NotFound) as e:
            log.warning("cannot reconcile the kubernetes endpoints: %s", e)
