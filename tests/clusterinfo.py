"""Test helpers for kubeadm's token discovery: bootstrap token Secrets, the cluster-info
ConfigMap and its anonymous-read Role as `minik8s init` makes them (kubeadm's names), and
a control plane of the test's own that signs it.

`SigningControlPlane` is a real etcd, a secure API server (`--enable-bootstrap-token-auth`)
and `minik8s controller-manager --controllers bootstrapsigner,tokencleaner` running as
system:kube-controller-manager under RBAC, all child processes stopped by PID.
"""
from __future__ import annotations

import base64
import os
import secrets
import string
import time

import yaml

from cluster import pki as cluster_pki
from machinery import times
from tests.procs import APIServer, Component, Etcd, free_port, wait_for

ALPHABET = string.ascii_lowercase + string.digits
GROUP = "system:bootstrappers:kubeadm:default-node-token"


def new_token() -> str:
    pick = lambda n: "".join(secrets.choice(ALPHABET) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def token_secret(token: str, *, ttl: float | None = 3600.0, signing: bool = True,
                 authentication: bool = True) -> dict:
    tid, tsecret = token.split(".")
    data = {"token-id": tid, "token-secret": tsecret, "auth-extra-groups": GROUP}
    if ttl is not None:
        data["expiration"] = times.rfc3339(time.time() + ttl)
    if signing:
        data["usage-bootstrap-signing"] = "true"
    if authentication:
        data["usage-bootstrap-authentication"] = "true"
    return {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": f"bootstrap-token-{tid}", "namespace": "kube-system"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def cluster_info_kubeconfig(server: str, ca_pem: bytes) -> str:
    """What kubeadm puts under `kubeconfig`: one cluster named "" with the CA, nothing else."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "contexts": None, "users": None,
        "current-context": "",
        "clusters": [{"name": "", "cluster": {"server": server,
                                              "certificate-authority-data": base64.b64encode(ca_pem).decode()}}]})


def publish_cluster_info(admin, server: str, ca_pem: bytes) -> None:
    """The cluster-info ConfigMap and the Role and RoleBinding letting anonymous users read it
    (kubeadm's `kubeadm:bootstrap-signer-clusterinfo`)."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-info", "namespace": "kube-public"},
          "data": {"kubeconfig": cluster_info_kubeconfig(server, ca_pem)}}
    r = admin.post("/api/v1/namespaces/kube-public/configmaps", json=cm)
    assert r.status_code in (201, 409), r.text
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-public"
    name = "kubeadm:bootstrap-signer-clusterinfo"
    r = admin.post(f"{rbac}/roles", json={
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"],
                   "verbs": ["get"]}]})
    assert r.status_code in (201, 409), r.text
    r = admin.post(f"{rbac}/rolebindings", json={
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:anonymous"}]})
    assert r.status_code in (201, 409), r.text


def publish_kubeadm_config(admin, *, pod_subnet: str = "10.244.0.0/16", service_subnet: str = "10.96.0.0/12",
                           backend: str = "host-gw", endpoint: str = "") -> None:
    """kube-system/kubeadm-config and kubeadm's Role `kubeadm:nodes-kubeadm-config` letting
    bootstrappers and nodes read it."""
    text = yaml.safe_dump({"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
                           "controlPlaneEndpoint": endpoint, "networkBackend": backend,
                           "networking": {"podSubnet": pod_subnet, "serviceSubnet": service_subnet}})
    r = admin.post("/api/v1/namespaces/kube-system/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeadm-config"},
        "data": {"ClusterConfiguration": text}})
    assert r.status_code in (201, 409), r.text
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system"
    name = "kubeadm:nodes-kubeadm-config"
    r = admin.post(f"{rbac}/roles", json={
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kubeadm-config"],
                   "verbs": ["get"]}]})
    assert r.status_code in (201, 409), r.text
    r = admin.post(f"{rbac}/rolebindings", json={
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}
                     for g in (GROUP, "system:nodes")]})
    assert r.status_code in (201, 409), r.text


class SigningControlPlane:
    def __init__(self, directory: str):
        self.dir = directory
        self.etcd = Etcd()
        self.server: APIServer | None = None
        self.cm: Component | None = None

    def start(self) -> SigningControlPlane:
        self.etcd.start()
        try:
            self.server = APIServer(self.etcd.url, "--enable-bootstrap-token-auth").start()
            kc = os.path.join(self.dir, "controller-manager.conf")
            cluster_pki.write_kubeconfig(kc, self.server.pki_dir, "controller-manager", cluster_name="t",
                                         server=self.server.url)
            self.cm = Component("controller-manager", "--kubeconfig", kc, "--leader-elect=false",
                                "--controllers", "bootstrapsigner,tokencleaner", "--secure-port", "0").start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    @property
    def ca_pem(self) -> bytes:
        assert self.server is not None and self.server.ca_file
        with open(self.server.ca_file, "rb") as f:
            return f.read()

    def stop(self) -> None:
        if self.cm is not None:
            self.cm.stop()
        if self.server is not None:
            self.server.stop()
        self.etcd.stop()

    def signatures(self, admin) -> dict[str, str]:
        data = admin.get("/api/v1/namespaces/kube-public/configmaps/cluster-info").json().get("data") or {}
        return {k[len("jws-kubeconfig-"):]: v for k, v in data.items() if k.startswith("jws-kubeconfig-")}

    def wait_signed(self, admin, token_id: str, *, present: bool = True, timeout: float = 30.0) -> dict[str, str]:
        """The signatures once `token_id`'s is there (or, present=False, gone)."""
        def ok():
            s = self.signatures(admin)
            return [s] if (token_id in s) == present else None
        return wait_for(ok, timeout=timeout, what=f"signature of {token_id} {'present' if present else 'gone'}")[0]


def free_endpoint() -> str:
    """HOST:PORT where nothing listens."""
    return f"127.0.0.1:{free_port()}"
