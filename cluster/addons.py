"""The cluster's DNS addon, as kubeadm's CoreDNS addon phase makes it.

`dns_objects(...)` are the objects kubeadm creates in kube-system: the ServiceAccount
`coredns`, the ClusterRole `system:coredns` (list and watch endpoints, services, pods,
namespaces and endpointslices, as CoreDNS's RBAC has it) and its binding, the
Deployment `coredns` (label k8s-app=kube-dns, 2 replicas, dnsPolicy Default, a
readiness probe on /readyz) and the Service `kube-dns` at the cluster DNS address (UDP
and TCP 53, metrics 9153). The Deployment runs `minik8s dns` (clusterdns/) on the host's
root (image minik8s.local/host-root) with this checkout's Python, so nothing is pulled;
it reaches the API server with its ServiceAccount's in-cluster configuration. A
plain-HTTP cluster has no tokens (and in-cluster configuration is HTTPS): there the
ConfigMap `coredns-kubeconfig` holds a kubeconfig naming the API server's node address,
mounted into the pods and given as --kubeconfig.

`ensure_dns(...)` creates what is missing and brings the RBAC objects and the
Deployment back to what this version wants (kubeadm's CreateOrUpdate); a Service that
exists is left as it is (its cluster IP cannot change). It does not wait for the
Deployment to be ready: `minik8s up` reports ready once the nodes are.

`cluster_dns_ip(service_cidr)` is kubeadm's GetDNSIP: the 10th address of the Service
range (10.96.0.10 for 10.96.0.0/12), what kubelets get as --cluster-dns.
"""
from __future__ import annotations

import ipaddress
import os
import ssl
import sys

import httpx

from cluster.state import ClusterConfig

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"   # the API server's --service-cluster-ip-range default
CLUSTER_DOMAIN = "cluster.local"
NAMESPACE = "kube-system"
DNS_IMAGE = "minik8s.local/host-root"
REPLICAS = 2                            # kubeadm's
METRICS_PORT = 9153
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def service_cidr(apiserver_args: list[str]) -> str:
    """The Service range the API server is given (its extra args), else its default."""
    for i, a in enumerate(apiserver_args):
        if a.startswith("--service-cluster-ip-range="):
            return a.partition("=")[2].split(",")[0]
        if a == "--service-cluster-ip-range" and i + 1 < len(apiserver_args):
            return apiserver_args[i + 1].split(",")[0]
    return DEFAULT_SERVICE_CIDR


def cluster_dns_ip(cidr: str = DEFAULT_SERVICE_CIDR) -> str:
    """kubeadm's GetDNSIP: the range's 10th address."""
    return str(ipaddress.ip_network(cidr, strict=False)[10])


def kubelet_flags(dns_ip: str) -> list[str]:
    return ["--cluster-dns", dns_ip, "--cluster-domain", CLUSTER_DOMAIN]


KUBECONFIG_DIR = "/etc/minik8s-dns"


def plain_kubeconfig(server: str) -> str:
    """A kubeconfig with no credential, for a plain-HTTP cluster's DNS pods."""
    from client.kubeconfig import KubeConfig
    kc = KubeConfig()
    kc.set_cluster("cluster", server=server)
    kc.set_user("coredns")
    kc.set_context("cluster", cluster="cluster", user="coredns", namespace=NAMESPACE)
    kc.current_context = "cluster"
    return kc.dumps()


def _under_tmp(*paths: str) -> list[str]:
    """The distinct top directories among `paths` that lie under /tmp (outermost first)."""
    found: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths}):
        if p.startswith("/tmp/") and not any(p.startswith(f + "/") for f in found):
            found.append(p)
    return found


def dns_objects(dns_ip: str, *, python: str = sys.executable, kubeconfig: str | None = None) -> list[dict]:
    """kubeconfig: a kubeconfig's text, given to `minik8s dns` (from a ConfigMap) instead
    of its in-cluster configuration."""
    labels = {"k8s-app": "kube-dns"}
    command = [python, "-m", "cluster.cli", "dns", "--port", "53", "--cluster-domain", CLUSTER_DOMAIN,
               "--metrics-port", str(METRICS_PORT), "--metrics-bind-address", "0.0.0.0",
               *(["--kubeconfig", f"{KUBECONFIG_DIR}/kubeconfig"] if kubeconfig else [])]
    container = {
        "name": "coredns", "image": DNS_IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": command, "workingDir": CHECKOUT,
        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": METRICS_PORT, "scheme": "HTTP"},
                          "initialDelaySeconds": 60, "timeoutSeconds": 5, "successThreshold": 1,
                          "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": METRICS_PORT, "scheme": "HTTP"},
                           "periodSeconds": 2},
    }
    extra: list[dict] = []
    volumes: list[dict] = []
    mounts: list[dict] = []
    # Every container gets a /tmp of its own, so a checkout or venv under /tmp (a CI
    # clone) is not there on the host's root: bind it in at the same path.
    for i, path in enumerate(_under_tmp(CHECKOUT, sys.prefix)):
        volumes.append({"name": f"host-code-{i}", "hostPath": {"path": path, "type": "Directory"}})
        mounts.append({"name": f"host-code-{i}", "mountPath": path, "readOnly": True})
    if kubeconfig:
        extra.append({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "coredns-kubeconfig", "namespace": NAMESPACE},
                      "data": {"kubeconfig": kubeconfig}})
        volumes.append({"name": "kubeconfig", "configMap": {"name": "coredns-kubeconfig"}})
        mounts.append({"name": "kubeconfig", "mountPath": KUBECONFIG_DIR, "readOnly": True})
    if mounts:
        container["volumeMounts"] = mounts
    return extra + [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}]},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": NAMESPACE, "labels": dict(labels)},
         "spec": {"replicas": REPLICAS, "selector": {"matchLabels": dict(labels)},
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                  "template": {"metadata": {"labels": dict(labels)}, "spec": {
                      "serviceAccountName": "coredns", "dnsPolicy": "Default",
                      "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                                      {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                      "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                          {"weight": 100, "podAffinityTerm": {
                              "labelSelector": {"matchExpressions": [
                                  {"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]},
                              "topologyKey": "kubernetes.io/hostname"}}]}},
                      "containers": [container], **({"volumes": volumes} if volumes else {})}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": NAMESPACE,
                      "labels": {**labels, "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
                      "annotations": {"prometheus.io/port": str(METRICS_PORT), "prometheus.io/scrape": "true"}},
         "spec": {"selector": dict(labels), "clusterIP": dns_ip,
                  "ports": [{"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT,
                             "protocol": "TCP"}]}},
    ]


_PATHS = {"ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
          "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
          "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
          "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
          "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
          "Service": "/api/v1/namespaces/{ns}/services",
          "StorageClass": "/apis/storage.k8s.io/v1/storageclasses",
          # the metrics server's (cluster/metricsaddon.py)
          "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
          "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
          "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
          "APIService": "/apis/apiregistration.k8s.io/v1/apiservices"}
_COMPARED = {"ConfigMap": ("data",), "ClusterRole": ("rules",), "ClusterRoleBinding": ("roleRef", "subjects"),
             "Deployment": ("spec",), "RoleBinding": ("roleRef", "subjects"),
             "EndpointSlice": ("endpoints", "ports"), "APIService": ("spec",)}
_UPDATED = tuple(_COMPARED)


def ensure_dns(api_url: str, verify: ssl.SSLContext | bool, dns_ip: str, *,
               kubeconfig: str | None = None, timeout: float = 10.0) -> list[str]:
    """Create (or update) the DNS addon's objects; -> what was created or updated.
    Raises httpx.HTTPStatusError (or a transport error) when the API server refuses."""
    done = []
    with httpx.Client(base_url=api_url, verify=verify, timeout=timeout) as http:
        for obj in dns_objects(dns_ip, kubeconfig=kubeconfig):
            # An update races the controllers writing the object (the Deployment's status
            # moves its resourceVersion): on a 409, read it again and retry, as client-go's
            # RetryOnConflict does.
            for _ in range(5):
                outcome = _ensure(http, obj)
                if outcome != "conflict":
                    break
            else:
                raise httpx.HTTPStatusError(f"{obj['kind']} {obj['metadata']['name']}: update kept conflicting",
                                            request=httpx.Request("PUT", api_url), response=httpx.Response(409))
            if outcome:
                done.append(f"{obj['kind'].lower()}/{obj['metadata']['name']} {outcome}")
    return done


def _ensure(http: httpx.Client, obj: dict) -> str | None:
    """Make `obj` as wanted: "created", "updated", None (already so) or "conflict"."""
    collection = _PATHS[obj["kind"]].format(ns=NAMESPACE)
    name = obj["metadata"]["name"]
    # Looked up first: creating a Service that exists would fail on its cluster
    # IP (422, already allocated) before its name (409).
    current = http.get(f"{collection}/{name}")
    if current.status_code == 404:
        r = http.post(collection, json=obj)
        if r.status_code != 409:  # 409: made meanwhile (a second supervisor)
            r.raise_for_status()
            return "created"
        current = http.get(f"{collection}/{name}")
    current.raise_for_status()
    if obj["kind"] not in _UPDATED:
        return None
    have = current.json()
    want = {**obj, "metadata": {**have["metadata"], **obj["metadata"]}}
    if all(_same(have.get(f), want.get(f)) for f in _COMPARED[obj["kind"]]):
        return None
    if obj["kind"] == "Deployment":  # keep what the API server defaulted and the status
        want = {**have, "metadata": want["metadata"], "spec": _merged(have["spec"], obj["spec"])}
    r = http.put(f"{collection}/{name}", json=want)
    if r.status_code == 409:
        return "conflict"
    r.raise_for_status()
    return "updated"


def _merged(have: object, want: object) -> object:
    """`want` over `have`: what we set wins, what the server defaulted stays."""
    if isinstance(have, dict) and isinstance(want, dict):
        return {**have, **{k: _merged(have.get(k), v) for k, v in want.items()}}
    if isinstance(have, list) and isinstance(want, list) and len(have) == len(want):
        return [_merged(h, w) for h, w in zip(have, want)]
    return want


def _same(have: object, want: object) -> bool:
    return _merged(have, want) == have


def cluster_dns_of(cfg: ClusterConfig) -> str:
    return cluster_dns_ip(service_cidr(list(cfg.extra_args.get("apiserver", []))))


def ensure_for(cfg: ClusterConfig, verify: ssl.SSLContext | bool) -> str:
    """`minik8s up`'s DNS addon phase (linux runtime); -> a line for its progress."""
    ip = cluster_dns_of(cfg)
    # A plain-HTTP cluster issues no ServiceAccount tokens: the pods get a kubeconfig
    # naming the API server's address on the nodes' network, which a pod reaches.
    kubeconfig = plain_kubeconfig(cfg.node_api_url) if cfg.plain_http else None
    try:
        done = ensure_dns(cfg.api_url, verify, ip, kubeconfig=kubeconfig)
    except httpx.HTTPError as e:
        return f"not installed: {e}"
    return f"service/kube-dns {ip}, deployment/coredns ({REPLICAS} replicas)" + (
        "; " + ", ".join(done) if done and not any("created" in d for d in done) else "")


# --- the local-path StorageClass (k3s's default `local-path`) ------------------------------

LOCAL_PATH_CLASS = "local-path"
LOCAL_PATH_PROVISIONER = "minik8s.io/local-path"  # the controller manager's local-path-provisioner
DEFAULT_LOCAL_PATH = "/var/lib/minik8s/local-path"


def storage_class(node_path: str) -> dict:
    """The default StorageClass: volumes under `node_path` on the node a pod is scheduled
    to (WaitForFirstConsumer), deleted with their claim (Delete), as k3s's local-path."""
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": LOCAL_PATH_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer", "parameters": {"nodePath": node_path}}


def ensure_storage_class(api_url: str, verify: ssl.SSLContext | bool, node_path: str, *,
                         timeout: float = 10.0) -> str | None:
    """Create the `local-path` StorageClass if it is missing (one that exists is left as
    it is: its parameters are immutable); -> "created" or None. Raises httpx errors."""
    with httpx.Client(base_url=api_url, verify=verify, timeout=timeout) as http:
        return _ensure(http, storage_class(node_path))


def ensure_storage_for(cfg: ClusterConfig, verify: ssl.SSLContext | bool) -> str:
    """`minik8s up`'s storage addon phase: volumes under the state dir; -> a progress line."""
    path = cfg.path("local-path")
    try:
        ensure_storage_class(cfg.api_url, verify, path)
    except httpx.HTTPError as e:
        return f"not installed: {e}"
    return f"storageclass/{LOCAL_PATH_CLASS} (default) in {path}"
