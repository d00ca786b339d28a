"""The `default/kubernetes` Service and its Endpoints, kept by the API server as
kube-apiserver's controlplane controller (pkg/controlplane/controller/kubernetesservice)
keeps them:
- at start, after the allocation repair (apiserver/allocators.py), and every
  --endpoint-reconciler-interval (10 s, as kube-apiserver's) after,
  the Service exists at the service range's first address (10.96.0.1 by default) with
  port 443 named `https`, TCP, targeting the server's secure port, labelled
  component=apiserver, provider=kubernetes; a Service whose ports or type were changed is
  put back;
- its Endpoints (labelled endpointslice.kubernetes.io/skip-mirror, as Kubernetes writes
  them) list this server's advertised address and secure port;
- so does its EndpointSlice `kubernetes`, as kube-apiserver's EndpointsAdapter writes it
  next to the Endpoints: labelled `kubernetes.io/service-name: kubernetes` only (no
  managed-by label, no owner, so the EndpointSlice controller leaves it alone), the
  endpoint ready, the address type IPv4 or IPv6 as the address is. An address the
  EndpointSlice validation refuses (loopback, say: a server bound to 127.0.0.1 alone)
  gets no slice, and a warning in the log, as Kubernetes' would.
- several API servers over one etcd share the Endpoints as kube-apiserver's lease
  reconciler (--endpoint-reconciler-type=lease) has them do: each keeps a record
  /registry/masterleases/<address>:<port> renewed every round and valid LEASE_TTL
  seconds, drops the records that expired, and writes the Endpoints (and the slice) of
  every live record, sorted, so all servers write the same thing and do not flap. A
  server stopping removes its own record first. (kube-apiserver's records are etcd
  leases; ours carry their expiry, wall time, so hosts need synchronised clocks.)"""
from __future__ import annotations

import logging

import time

import orjson

from apiserver.registry import by_plural
from apiserver.resources import Resources
from apiserver.storage.interface import Store
from machinery import errors

log = logging.getLogger("minik8s.apiserver")

NAME, NAMESPACE = "kubernetes", "default"
INTERVAL = 10.0
LEASE_PREFIX = "/registry/masterleases/"
LEASE_TTL = 15.0    # kube-apiserver's --endpoint-reconciler's lease TTL


def _lease_key(address: str, port: int) -> str:
    return f"{LEASE_PREFIX}{address}:{port}"


async def renew_lease(store: Store, address: str, port: int, *, now: float | None = None) -> list[tuple[str, int]]:
    """Renew this server's record; every live (address, port), sorted, this one included."""
    now = time.time() if now is None else now
    key = _lease_key(address, port)
    value = orjson.dumps({"address": address, "port": port, "expires": now + LEASE_TTL})
    ok, current = await store.create(key, value)
    if not ok and current is not None and not isinstance(current, int):
        await store.update(key, value, current.mod_revision)  # a lost race: the next round
    live = {(address, port)}
    for kv in (await store.list(LEASE_PREFIX)).items:
        try:
            rec = orjson.loads(kv.value)
            peer, expired = (str(rec["address"]), int(rec["port"])), float(rec["expires"]) < now
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            peer, expired = None, True
        if expired:
            await store.delete(kv.key, kv.mod_revision)
        elif peer is not None:
            live.add(peer)
    return sorted(live)


async def release_lease(store: Store, address: str, port: int) -> None:
    await store.delete(_lease_key(address, port))


def service(cluster_ip: str, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}


def endpoints(address: str, port: int, peers: list[tuple[str, int]] | None = None) -> dict:
    """The Endpoints of `peers` (default: this server alone), one subset per port."""
    by_port: dict[int, list[str]] = {}
    for a, p in sorted(peers or [(address, port)]):
        by_port.setdefault(p, []).append(a)
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": a} for a in addrs],
                         "ports": [{"name": "https", "port": p, "protocol": "TCP"}]}
                        for p, addrs in sorted(by_port.items())]}


def endpointslice(address: str, port: int, peers: list[tuple[str, int]] | None = None) -> dict:
    """The slice of the peers on this server's port and address type (a slice has one
    port list and one type)."""
    v6 = ":" in address
    addrs = sorted(a for a, p in (peers or [(address, port)]) if p == port and (":" in a) == v6) or [address]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": NAME}},
            "addressType": "IPv6" if v6 else "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addrs],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


_SLICE_FIELDS = ("addressType", "endpoints", "ports")


async def _reconcile_slice(resources: Resources, address: str, port: int,
                           peers: list[tuple[str, int]] | None) -> None:
    rt, want = by_plural("endpointslices"), endpointslice(address, port, peers)
    try:
        have = await resources.get(rt, NAMESPACE, NAME)
    except errors.NotFound:
        have = None
    try:
        if have is not None and have.get("addressType") != want["addressType"]:
            # The type is immutable: replace the slice (EnsureEndpointSliceFromEndpoints).
            await resources.delete(rt, NAMESPACE, NAME, {"preconditions": {"uid": have["metadata"]["uid"]}})
            have = None
        if have is None:
            await resources.create(rt, NAMESPACE, want)
        elif any(have.get(k) != want[k] for k in _SLICE_FIELDS) or \
                (have["metadata"].get("labels") or {}) != want["metadata"]["labels"]:
            for k in _SLICE_FIELDS:
                have[k] = want[k]
            have["metadata"]["labels"] = want["metadata"]["labels"]
            await resources.update(rt, NAMESPACE, NAME, have)
    except (errors.AlreadyExists, errors.Conflict, errors.NotFound) as e:
        log.warning("cannot reconcile the kubernetes endpointslice: %s", e)  # the next round
    except errors.Invalid as e:
        log.warning("cannot write the kubernetes endpointslice for %s: %s", address, e)


async def reconcile(resources: Resources, cluster_ip: str, address: str, port: int,
                    peers: list[tuple[str, int]] | None = None) -> None:
    """Create or put back the Service, its EndpointSlice and its Endpoints (see the
    module docstring): of `peers`, the live API servers (default: this one alone)."""
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
    await _reconcile_slice(resources, address, port, peers)
    want_ep = endpoints(address, port, peers)
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
