"""The metrics server in `minik8s up`: its process, its objects, its APIService.

kubernetes-sigs/metrics-server's components.yaml, adapted to a server that runs as a
process beside the control plane rather than in a pod (as kube-proxy's does here):
- the ServiceAccount `kube-system/metrics-server`, whose name the process's client
  certificate carries (user `system:serviceaccount:kube-system:metrics-server`, groups
  system:serviceaccounts and system:serviceaccounts:kube-system), so the manifests'
  bindings apply unchanged;
- the ClusterRoles `system:aggregated-metrics-reader` (get, list, watch of
  metrics.k8s.io pods and nodes; aggregated into view, edit and admin) and
  `system:metrics-server` (nodes/metrics get; pods and nodes get, list, watch), the
  bindings `system:metrics-server`, `metrics-server:system:auth-delegator` (TokenReviews
  and SubjectAccessReviews) and `kube-system/metrics-server-auth-reader` (the
  extension-apiserver-authentication ConfigMap, through kube-apiserver's Role
  `extension-apiserver-authentication-reader`, made here while this API server does not);
- the Service `kube-system/metrics-server` (443, `https`) without a selector: no pod
  backs it, so its EndpointSlice `metrics-server` is written here, naming the address the
  API server dials for it: the host's address on the cluster bridge (linux runtime),
  else the host's own address on its default route (EndpointSlices refuse loopback), and
  the port the process serves on, which changes with every supervisor start;
- the APIService `v1beta1.metrics.k8s.io` (groupPriorityMinimum 100, versionPriority
  100, insecureSkipTLSVerify: the server's certificate is self-signed, as the manifests
  have it).

`ensure_for(cfg, verify, port)` creates what is missing and brings the rest back to
this (cluster/addons.py's ensure); it returns a line for `up`'s progress.
"""
from __future__ import annotations

import ipaddress
import socket
import ssl

import httpx

from cluster import addons
from cluster.state import ClusterConfig

NAME = "metrics-server"
NAMESPACE = "kube-system"
USER = f"system:serviceaccount:{NAMESPACE}:{NAME}"
GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}")
APISERVICE = "v1beta1.metrics.k8s.io"
RESOLUTION = "15s"      # components.yaml's --metric-resolution
LABELS = {"k8s-app": NAME}
_RBAC = "rbac.authorization.k8s.io"


def _sa() -> dict:
    return {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}


def objects(address: str | None, port: int) -> list[dict]:
    """What components.yaml creates, minus the Deployment; the EndpointSlice only with
    an address."""
    rbac = f"{_RBAC}/v1"
    objs: list[dict] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)}},
        {"apiVersion": rbac, "kind": "ClusterRole",
         "metadata": {"name": "system:aggregated-metrics-reader",
                      "labels": {**LABELS, f"{_RBAC}/aggregate-to-admin": "true",
                                 f"{_RBAC}/aggregate-to-edit": "true", f"{_RBAC}/aggregate-to-view": "true"}},
         "rules": [{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": rbac, "kind": "ClusterRole",
         "metadata": {"name": "system:metrics-server", "labels": dict(LABELS)},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
        # kube-apiserver's bootstrap policy has this Role in kube-system (rbac's
        # NamespaceRoles); made here as long as this API server's does not
        {"apiVersion": rbac, "kind": "Role",
         "metadata": {"name": "extension-apiserver-authentication-reader", "namespace": NAMESPACE,
                      "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"],
                    "resourceNames": ["extension-apiserver-authentication"]}]},
        {"apiVersion": rbac, "kind": "RoleBinding",
         "metadata": {"name": "metrics-server-auth-reader", "namespace": NAMESPACE, "labels": dict(LABELS)},
         "roleRef": {"apiGroup": _RBAC, "kind": "Role", "name": "extension-apiserver-authentication-reader"},
         "subjects": [_sa()]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding",
         "metadata": {"name": "metrics-server:system:auth-delegator", "labels": dict(LABELS)},
         "roleRef": {"apiGroup": _RBAC, "kind": "ClusterRole", "name": "system:auth-delegator"},
         "subjects": [_sa()]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:metrics-server", "labels": dict(LABELS)},
         "roleRef": {"apiGroup": _RBAC, "kind": "ClusterRole", "name": "system:metrics-server"},
         "subjects": [_sa()]},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
         "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}},
    ]
    if address:
        family = "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"
        objs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            # no managed-by label: the EndpointSlice controller leaves it alone, as it
            # leaves the API server's own `kubernetes` slice
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {**LABELS, "kubernetes.io/service-name": NAME}},
            "addressType": family,
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
    objs.append({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": APISERVICE, "labels": dict(LABELS)},
        "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                 "versionPriority": 100, "insecureSkipTLSVerify": True,
                 "service": {"name": NAME, "namespace": NAMESPACE, "port": 443}}})
    return objs


def default_route_address() -> str | None:
    """The host's source address towards the default route (a UDP connect sends
    nothing), or None when it has only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # TEST-NET-3: routed by the default route, never reached
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(ip).is_loopback else ip


def serving_address(cfg: ClusterConfig) -> str | None:
    """Where the metrics server listens and the API server dials it."""
    return cfg.host_ip if cfg.runtime == "linux" else default_route_address()


def args(cfg: ClusterConfig, port: int, kubeconfig: str) -> list[str]:
    """The process's flags, components.yaml's (resolution, address types, node status
    port). Real kubelets' serving certificates are the cluster CA's (the kubeconfig's);
    the fake runtime's are self-signed, so there it skips verifying them, as clusters
    whose kubelets sign their own (kind, minikube) run metrics-server."""
    address = serving_address(cfg) or "127.0.0.1"
    return ["--kubeconfig", kubeconfig, "--secure-port", str(port), "--bind-address", address,
            "--cert-dir", cfg.path("metrics-server"), "--metric-resolution", RESOLUTION,
            "--kubelet-preferred-address-types", "InternalIP,ExternalIP,Hostname",
            "--kubelet-use-node-status-port", *(["--kubelet-insecure-tls"] if cfg.runtime == "fake" else [])]


def ensure(api_url: str, verify: ssl.SSLContext | bool, address: str | None, port: int,
           *, timeout: float = 10.0) -> list[str]:
    done = []
    with httpx.Client(base_url=api_url, verify=verify, timeout=timeout) as http:
        for obj in objects(address, port):
            for _ in range(5):
                outcome = addons._ensure(http, obj)  # noqa: SLF001 - the one ensure of cluster/
                if outcome != "conflict":
                    break
            if outcome:
                done.append(f"{obj['kind'].lower()}/{obj['metadata']['name']} {outcome}")
    return done


def ensure_for(cfg: ClusterConfig, verify: ssl.SSLContext | bool, port: int) -> str:
    address = serving_address(cfg)
    try:
        ensure(cfg.api_url, verify, address, port)
    except httpx.HTTPError as e:
        return f"not registered: {str(e).splitlines()[0]}"
    if not address:
        return f"apiservice/{APISERVICE} registered, but the host has no address the API server may dial"
    return f"apiservice/{APISERVICE} -> service/{NAME} ({address}:{port})"
