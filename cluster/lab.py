"""`minik8s init`: the first control-plane host of a lab cluster, as `kubeadm init` makes it.

    minik8s init --advertise-address IP [--bind-port 6443] [--control-plane-endpoint HOST:PORT]
                 [--pod-network-cidr 10.244.0.0/16] [--service-cidr 10.96.0.0/12]
                 [--node-name NAME] [--network-backend host-gw|vxlan] [--token T] [--token-ttl 24h]
                 [--upload-certs] [--certificate-key HEX] [--config FILE]

`--config FILE`: a kubeadm ClusterConfiguration (kubeadm.k8s.io/v1beta3 or v1beta4, YAML);
of it, init reads `controllerManager.extraArgs` (v1beta4's list of name/value, or v1beta3's
map): flags added to the controller manager's unit, checked against its own flags before
anything is written, and stored in kubeadm-config, so `join --control-plane` runs its
controller manager with them too. Any other field is refused (the flags above set them).

Phases, in kubeadm's order and with its log prefixes:
- preflight: everything that can be wrong with the input or the host is checked before the
  first write (root; not initialised already; addresses, CIDRs, token; etcd and nft
  installed; the pod and Service CIDRs overlapping neither each other nor a host route;
  ports 6443, 2379, 2380, 10250, 10257, 10259 free). A problem is one line
  `error: <cause>; <fix>`, exit 1, host unchanged.
- certs: cluster/pki.py's PKI in /etc/minik8s/pki for this host (the API server's
  certificate names the advertise address, the control-plane endpoint's host, the
  `kubernetes` Service's ClusterIP, 127.0.0.1 and localhost, so the node-local load
  balancer at 127.0.0.1:6444 can forward to it; etcd's name the advertise address, so
  peers can join later).
- kubeconfig: admin.conf (server: the control-plane endpoint), controller-manager.conf and
  scheduler.conf (server: this host's API server), kubelet.conf (as kubeadm's
  kubelet-finalize leaves it: the client certificate of system:node:<name> in
  /var/lib/minik8s/kubelet/pki/kubelet-client-current.pem).
- units (cluster/units.py): etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler, kubelet, kube-proxy and podnet.
- wait-control-plane: etcd, then the API server's /readyz, then the controller manager's
  and the scheduler's /healthz.
- upload-config, mark-control-plane, bootstrap-token (the Secret, kubeadm's
  ClusterRoleBindings, kubeadm-config, cluster-info (the controller manager's
  bootstrapsigner adds its JWS keys) and its anonymous RBAC), addons (the cluster DNS of
  cluster/addons.py), then the node Ready.
The closing text is kubeadm's, with the join commands and how long it took. A failure
after preflight (a unit that keeps exiting fails at once, one that never gets healthy
after START_TIMEOUT) says which unit, where its log is and how it ends, and that
`minik8s reset` undoes what was done.

Reused by `join` (workers and control-plane hosts): `HostConfig` (config.yaml, which
`reset` reads too), `Api` (cluster/labapi.py), `make_pki`,
`write_control_plane_kubeconfigs`, `write_kubelet_conf`, `write_kubelet_client_pem`,
`write_kubelet_serving`, `control_plane_units`, `node_units`, `wait_unit`,
`wait_control_plane`, `wait_node_ready`, `preflight_ports`; `upload_certs` is the
`--upload-certs` phase.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import httpx
import yaml

from cluster import units
from cluster.labapi import Api, ApiError, LabError, collection_path, endpoint_of  # noqa: F401 - lab.Api & co.
from cluster.layout import (API_PORT, CONTROLLER_MANAGER_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT,
                            KUBELET_PORT, SCHEDULER_PORT, Layout, current)
from cluster.units import Unit

CLUSTER_NAME = "kubernetes"
KUBERNETES_VERSION = "v1.32.0"
DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
BACKENDS = ("host-gw", "vxlan")
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
CONTROL_PLANE_TAINT = {"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"}
NODE_CIDR_MASK = 24            # the controller manager's --node-cidr-mask-size default
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 120.0
NODE_TIMEOUT = 120.0


# -- what init or join decided -------------------------------------------------------------------

@dataclass
class HostConfig:
    """/etc/minik8s/config.yaml: what `init` (or `join`) decided for this host."""
    nodeName: str
    advertiseAddress: str
    role: str = "control-plane"                 # control-plane | worker
    bindPort: int = API_PORT
    controlPlaneEndpoint: str = ""              # HOST:PORT; "" -> advertiseAddress:bindPort
    podSubnet: str = DEFAULT_POD_CIDR
    serviceSubnet: str = DEFAULT_SERVICE_CIDR
    networkBackend: str = "host-gw"
    # ClusterConfiguration's controllerManager.extraArgs: flag name (no dashes) -> value
    controllerManagerExtraArgs: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """HOST:PORT every node and admin.conf reach the API through."""
        return self.controlPlaneEndpoint or f"{self.advertiseAddress}:{self.bindPort}"

    @property
    def local_api(self) -> str:
        return f"https://{self.advertiseAddress}:{self.bindPort}"

    @property
    def service_ip(self) -> str:
        """The `kubernetes` Service's ClusterIP: the Service range's first address."""
        return str(ipaddress.ip_network(self.serviceSubnet, strict=False)[1])

    @property
    def dns_ip(self) -> str:
        from cluster import addons
        return addons.cluster_dns_ip(self.serviceSubnet)

    def save(self, layout: Layout) -> None:
        units._write(layout.config_yaml, yaml.safe_dump(asdict(self), sort_keys=False))

    @classmethod
    def load(cls, layout: Layout) -> HostConfig | None:
        try:
            with open(layout.config_yaml) as f:
                doc = yaml.safe_load(f) or {}
        except FileNotFoundError:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


# -- PKI and kubeconfigs --------------------------------------------------------------------------

def cluster_facts(cfg: HostConfig):
    """What this host's certificates name (pki.ClusterFacts)."""
    from cluster import pki
    ep_host = split_endpoint(cfg.endpoint)[0]
    ips, names = [cfg.advertiseAddress, "127.0.0.1"], ["localhost"]
    try:
        ipaddress.ip_address(ep_host)
        ips.append(ep_host)
    except ValueError:
        names.append(ep_host)
    return pki.ClusterFacts(cluster_name=CLUSTER_NAME, apiserver_ips=tuple(dict.fromkeys(ips)),
                            apiserver_dns_names=tuple(dict.fromkeys(names)), service_ip=cfg.service_ip,
                            control_plane_name=cfg.nodeName, etcd_ips=(cfg.advertiseAddress,))


def make_pki(layout: Layout, cfg: HostConfig) -> list:
    """cluster/pki.ensure under /etc/minik8s/pki; its outcomes (made or kept)."""
    from cluster import pki
    try:
        return pki.ensure(layout.pki, cluster_facts(cfg))
    except pki.PKIError as e:
        raise LabError(f"{e}; run `minik8s reset` to start over") from None


def write_control_plane_kubeconfigs(layout: Layout, cfg: HostConfig) -> list[str]:
    """admin.conf (the control-plane endpoint), controller-manager.conf and scheduler.conf
    (this host's API server, as kubeadm's local endpoint); the paths written."""
    from cluster import pki
    out = []
    for leaf, path, server in (("admin", layout.admin_conf, f"https://{cfg.endpoint}"),
                               ("controller-manager", layout.controller_manager_conf, cfg.local_api),
                               ("scheduler", layout.scheduler_conf, cfg.local_api)):
        pki.write_kubeconfig(path, layout.pki, leaf, cluster_name=CLUSTER_NAME, server=server)
        out.append(path)
    return out


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def write_kubelet_client_pem(layout: Layout, node: str, cert_pem: bytes, key_pem: bytes) -> str:
    """The kubelet's client certificate as its certificate manager keeps it: one PEM file
    kubelet-client-<stamp>.pem (certificate then key, 0600) and the symlink
    kubelet-client-current.pem to it; the symlink's path."""
    os.makedirs(layout.kubelet_pki, mode=0o700, exist_ok=True)
    stamp = _now().strftime("%Y-%m-%d-%H-%M-%S")
    path = os.path.join(layout.kubelet_pki, f"kubelet-client-{stamp}.pem")
    units._write(path, (cert_pem + key_pem).decode(), 0o600)
    current_link = os.path.join(layout.kubelet_pki, "kubelet-client-current.pem")
    tmp = current_link + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(path, tmp)
    os.replace(tmp, current_link)
    return current_link


def write_kubelet_serving(layout: Layout, node: str, ip: str) -> tuple[str, str]:
    """A self-signed serving certificate in the kubelet's cert dir (kubelet.crt/.key), as
    the kubelet makes one when given none; kept if there is one. The API server does not
    verify it (kubeadm's default)."""
    from machinery import pki as mpki
    crt, key_path = os.path.join(layout.kubelet_pki, "kubelet.crt"), os.path.join(layout.kubelet_pki, "kubelet.key")
    if os.path.exists(crt) and os.path.exists(key_path):
        return crt, key_path
    now = _now()
    ca_key = mpki.new_key()
    ca = mpki.new_ca(f"{node}-ca@{int(now.timestamp())}", ca_key, now=now)
    key = mpki.new_key()
    cert = mpki.sign(mpki.CertSpec(f"{node}@{int(now.timestamp())}", dns_names=(node,), ips=(ip,),
                                   usages=(mpki.SERVER,)), key.public_key(), ca_cert=ca, ca_key=ca_key, now=now)
    units._write(key_path, mpki.key_pem(key).decode(), 0o600)
    units._write(crt, (mpki.cert_pem(cert) + mpki.cert_pem(ca)).decode())
    return crt, key_path


def write_kubelet_conf(layout: Layout, cfg: HostConfig) -> str:
    """kubelet.conf for this host's kubelet as kubeadm init leaves it: the CA embedded,
    the node's client certificate (system:node:<name> in system:nodes, signed by the
    cluster CA) in the kubelet's cert dir, server = the control-plane endpoint."""
    from client.kubeconfig import KubeConfig
    from machinery import pki as mpki
    try:
        with open(os.path.join(layout.pki, "ca.crt"), "rb") as f:
            ca_pem = f.read()
        with open(os.path.join(layout.pki, "ca.key"), "rb") as f:
            ca_key = mpki.load_key(f.read())
    except (OSError, ValueError) as e:
        raise LabError(f"cannot read the cluster CA in {layout.pki}: {e}; run `minik8s reset` to start over") from None
    now = _now()
    key = mpki.new_key()
    user = f"system:node:{cfg.nodeName}"
    cert = mpki.sign(mpki.CertSpec(user, ("system:nodes",)), key.public_key(),
                     ca_cert=mpki.load_cert(ca_pem), ca_key=ca_key, now=now)
    current_pem = write_kubelet_client_pem(layout, cfg.nodeName, mpki.cert_pem(cert), mpki.key_pem(key))
    write_kubelet_serving(layout, cfg.nodeName, cfg.advertiseAddress)
    kc = KubeConfig()
    kc.set_cluster(CLUSTER_NAME, server=f"https://{cfg.endpoint}", certificate_authority_data=ca_pem)
    kc.set_user(user, client_certificate=current_pem, client_key=current_pem)
    kc.set_context(f"{user}@{CLUSTER_NAME}", cluster=CLUSTER_NAME, user=user)
    kc.current_context = f"{user}@{CLUSTER_NAME}"
    kc.save(layout.kubelet_conf)
    return layout.kubelet_conf


# -- units ------------------------------------------------------------------------------------------

def minik8s(*args: str) -> list[str]:
    """argv of a `minik8s` subcommand with this installation's Python."""
    return [sys.executable, "-m", "cluster.cli", *args]


def etcd_unit(layout: Layout, cfg: HostConfig, *, initial_cluster: str | None = None,
              state: str = "new") -> Unit:
    """etcd as kubeadm's static pod runs it: TLS for clients and peers, clients on loopback
    and the advertise address, peers on the advertise address. A joining member gives
    `initial_cluster` (every member's name=peerURL) and state "existing"."""
    import shutil
    pki = lambda *p: os.path.join(layout.pki, *p)  # noqa: E731
    adv = cfg.advertiseAddress
    peer = f"https://{adv}:{ETCD_PEER_PORT}"
    return Unit("etcd", [
        shutil.which("etcd") or "etcd", "--name", cfg.nodeName, "--data-dir", layout.etcd_data,
        "--listen-client-urls", f"https://127.0.0.1:{ETCD_CLIENT_PORT},https://{adv}:{ETCD_CLIENT_PORT}",
        "--advertise-client-urls", f"https://{adv}:{ETCD_CLIENT_PORT}",
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", initial_cluster or f"{cfg.nodeName}={peer}",
        "--initial-cluster-state", state,
        "--listen-metrics-urls", "http://127.0.0.1:2381",
        "--cert-file", pki("etcd", "server.crt"), "--key-file", pki("etcd", "server.key"),
        "--client-cert-auth", "--trusted-ca-file", pki("etcd", "ca.crt"),
        "--peer-cert-file", pki("etcd", "peer.crt"), "--peer-key-file", pki("etcd", "peer.key"),
        "--peer-client-cert-auth", "--peer-trusted-ca-file", pki("etcd", "ca.crt"),
        "--snapshot-count", "10000"])


def apiserver_unit(layout: Layout, cfg: HostConfig, *,
                   etcd_servers: str = f"https://127.0.0.1:{ETCD_CLIENT_PORT}") -> Unit:
    pki = lambda *p: os.path.join(layout.pki, *p)  # noqa: E731
    return Unit("kube-apiserver", minik8s(
        "apiserver", "--advertise-address", cfg.advertiseAddress, "--bind-address", "0.0.0.0",
        "--secure-port", str(cfg.bindPort), "--etcd-servers", etcd_servers,
        "--etcd-cafile", pki("etcd", "ca.crt"), "--etcd-certfile", pki("apiserver-etcd-client.crt"),
        "--etcd-keyfile", pki("apiserver-etcd-client.key"),
        "--tls-cert-file", pki("apiserver.crt"), "--tls-private-key-file", pki("apiserver.key"),
        "--client-ca-file", pki("ca.crt"), "--enable-bootstrap-token-auth",
        "--authorization-mode", "Node,RBAC",
        "--service-account-key-file", pki("sa.pub"), "--service-account-signing-key-file", pki("sa.key"),
        "--service-account-issuer", SA_ISSUER, "--service-cluster-ip-range", cfg.serviceSubnet,
        # kubeadm's default: kubelets' serving certificates are not verified
        "--kubelet-client-certificate", pki("apiserver-kubelet-client.crt"),
        "--kubelet-client-key", pki("apiserver-kubelet-client.key"),
        *_aggregation_flags(layout.pki)))


def controller_manager_unit(layout: Layout, cfg: HostConfig) -> Unit:
    pki = lambda *p: os.path.join(layout.pki, *p)  # noqa: E731
    # kubeadm turns on the two controllers Kubernetes leaves off by default
    return Unit("kube-controller-manager", minik8s(
        "controller-manager", "--kubeconfig", layout.controller_manager_conf, "--leader-elect=true",
        "--controllers", "*,bootstrapsigner,tokencleaner", "--root-ca-file", pki("ca.crt"),
        "--allocate-node-cidrs=true", "--cluster-cidr", cfg.podSubnet,
        "--cluster-signing-cert-file", pki("ca.crt"), "--cluster-signing-key-file", pki("ca.key"),
        "--bind-address", "127.0.0.1", "--secure-port", str(CONTROLLER_MANAGER_PORT),
        *extra_args_flags(cfg.controllerManagerExtraArgs)))


def extra_args_flags(extra: dict[str, str]) -> list[str]:
    """kubeadm's extraArgs as flags, after the component's own (so they win)."""
    return [f"--{k}={v}" for k, v in extra.items()]


def scheduler_unit(layout: Layout, cfg: HostConfig) -> Unit:
    return Unit("kube-scheduler", minik8s(
        "scheduler", "--kubeconfig", layout.scheduler_conf, "--leader-elect=true",
        "--bind-address", "127.0.0.1", "--secure-port", str(SCHEDULER_PORT)))


def control_plane_units(layout: Layout, cfg: HostConfig, *, initial_cluster: str | None = None,
                        etcd_state: str = "new") -> list[Unit]:
    return [etcd_unit(layout, cfg, initial_cluster=initial_cluster, state=etcd_state),
            apiserver_unit(layout, cfg), controller_manager_unit(layout, cfg), scheduler_unit(layout, cfg)]


def kubelet_unit(layout: Layout, cfg: HostConfig, *, extra: list[str] | None = None) -> Unit:
    """The host's kubelet: kubelet.conf, its certificates in /var/lib/minik8s/kubelet/pki,
    a control-plane host's registering with the control-plane taint. `extra`: flags a
    joining worker adds (--bootstrap-kubeconfig, --rotate-certificates...)."""
    from cluster import addons
    crt, key = (os.path.join(layout.kubelet_pki, n) for n in ("kubelet.crt", "kubelet.key"))
    taint = (["--register-with-taints", f"{CONTROL_PLANE_LABEL}:NoSchedule"]
             if cfg.role == "control-plane" else [])
    # kubeadm's KubeletConfiguration rotates the client certificate (with the CSR slice)
    rotate = (["--cert-dir", layout.kubelet_pki, "--rotate-certificates"]
              if "--cert-dir" not in (extra or []) else [])
    return Unit("kubelet", minik8s(
        "kubelet", "--kubeconfig", layout.kubelet_conf, "--node-name", cfg.nodeName,
        "--root-dir", layout.kubelet_dir, "--address", cfg.advertiseAddress, "--port", str(KUBELET_PORT),
        "--tls-cert-file", crt, "--tls-private-key-file", key,
        "--client-ca-file", os.path.join(layout.pki, "ca.crt"), "--authentication-token-webhook",
        "--authorization-mode", "Webhook", "--image-store-dir", layout.path("var", "lib", "minik8s", "images"),
        "--pod-cidr-timeout", "300", *addons.kubelet_flags(cfg.dns_ip), *taint, *rotate,
        *(extra or [])))


def proxy_unit(layout: Layout, cfg: HostConfig) -> Unit:
    """kube-proxy with the node's own credentials (system:nodes is bound to
    system:node-proxier: there are no DaemonSets to give it a ServiceAccount)."""
    return Unit("kube-proxy", minik8s("proxy", "--kubeconfig", layout.kubelet_conf,
                                      "--hostname-override", cfg.nodeName, "--cluster-cidr", cfg.podSubnet))


def podnet_unit(layout: Layout, cfg: HostConfig) -> Unit:
    """The pod network agent, on the advertise address's interface (the default route's
    device may not be the one the other hosts are reached through)."""
    return Unit("podnet", minik8s("podnet", "--kubeconfig", layout.kubelet_conf, "--node-name", cfg.nodeName,
                                  "--backend", cfg.networkBackend, "--iface", cfg.advertiseAddress))


def node_units(layout: Layout, cfg: HostConfig, *, kubelet_extra: list[str] | None = None) -> list[Unit]:
    """What runs on every node: kubelet, kube-proxy and podnet."""
    return [kubelet_unit(layout, cfg, extra=kubelet_extra), proxy_unit(layout, cfg), podnet_unit(layout, cfg)]


# -- waiting --------------------------------------------------------------------------------------

def _poll(cond, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except (httpx.HTTPError, OSError, LabError):
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def unit_log_hint(layout: Layout, name: str) -> str:
    if units.systemd_runs(layout):
        return f"`journalctl -u minik8s-{name}`"
    return layout.log(name)


CRASHES = 3          # restarts after which a unit is said to keep exiting (as `minik8s up` says)


def wait_unit(layout: Layout, name: str, check, where: str, timeout: float = START_TIMEOUT):
    """Poll check() until it returns something true (returned). LabError when the unit
    keeps exiting (the host supervisor restarted it CRASHES times) or at the timeout,
    naming its log and ending with the log's last lines."""
    def crashing() -> bool:
        comp = (units.status(layout).get("components") or {}).get(name) or {}
        return comp.get("restarts", 0) >= CRASHES

    value = _poll(lambda: "crashing" if crashing() else check(), timeout)
    if value and value != "crashing":
        return value
    why = "keeps exiting" if value == "crashing" else f"did not become healthy at {where} within {timeout:.0f}s"
    tail = ""
    if not units.systemd_runs(layout):
        from cluster.bringup import log_tail
        tail = log_tail(layout.log(name))
    raise LabError(f"{name} {why}; see {unit_log_hint(layout, name)}, then `minik8s reset` to start over"
                   + (f"; its log ends:\n{tail}" if tail else ""))


def wait_etcd(layout: Layout, url: str = f"https://127.0.0.1:{ETCD_CLIENT_PORT}",
              timeout: float = START_TIMEOUT) -> None:
    import ssl
    ctx = ssl.create_default_context(cafile=os.path.join(layout.pki, "etcd", "ca.crt"))
    ctx.load_cert_chain(os.path.join(layout.pki, "etcd", "healthcheck-client.crt"),
                        os.path.join(layout.pki, "etcd", "healthcheck-client.key"))
    wait_unit(layout, "etcd", lambda: httpx.get(f"{url}/health", verify=ctx, timeout=2).status_code == 200,
              url, timeout)


def wait_control_plane(layout: Layout, cfg: HostConfig, timeout: float = START_TIMEOUT) -> float:
    """etcd, the API server (/readyz of this host's), the controller manager and the
    scheduler (/healthz); seconds it took."""
    t0 = time.monotonic()
    wait_etcd(layout, timeout=timeout)
    with Api.from_kubeconfig(layout.admin_conf, server=cfg.local_api) as api:
        wait_unit(layout, "kube-apiserver", lambda: api.http.get("/readyz", timeout=2).status_code == 200,
                  cfg.local_api, timeout)
    for name, port in (("kube-controller-manager", CONTROLLER_MANAGER_PORT), ("kube-scheduler", SCHEDULER_PORT)):
        url = f"http://127.0.0.1:{port}/healthz"
        wait_unit(layout, name, lambda u=url: httpx.get(u, timeout=2).status_code == 200, url, timeout)
    return time.monotonic() - t0


def node_ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or ())


def wait_node_ready(api: Api, layout: Layout, name: str, timeout: float = NODE_TIMEOUT) -> dict:
    """The Node once Ready and given its pod CIDR by the node IPAM (a kubelet reports
    Ready from its first status on, but runs no pod before it has a CIDR)."""
    return wait_unit(layout, "kubelet", lambda: (n := api.get_or_none(f"/api/v1/nodes/{name}"))
                     and node_ready(n) and (n.get("spec") or {}).get("podCIDR") and n,
                     f"node {name} (Ready with a pod CIDR)", timeout)


# -- the cluster objects --------------------------------------------------------------------------

def _group(name: str) -> dict:
    return {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def _crb(name: str, role: str, *subjects: dict) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": list(subjects)}


def _role_and_binding(ns: str, name: str, rules: list[dict], *subjects: dict) -> list[dict]:
    rbac = "rbac.authorization.k8s.io/v1"
    return [{"apiVersion": rbac, "kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules},
            {"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": list(subjects)}]


def cluster_configuration(layout: Layout, cfg: HostConfig) -> str:
    """kubeadm-config's ClusterConfiguration (YAML), with our networkBackend."""
    return yaml.safe_dump({
        "apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
        "clusterName": CLUSTER_NAME, "kubernetesVersion": KUBERNETES_VERSION,
        "controlPlaneEndpoint": cfg.endpoint, "certificatesDir": layout.pki,
        "etcd": {"local": {"dataDir": layout.etcd_data}},
        "networking": {"dnsDomain": "cluster.local", "podSubnet": cfg.podSubnet,
                       "serviceSubnet": cfg.serviceSubnet},
        "networkBackend": cfg.networkBackend,
        **({"controllerManager": {"extraArgs": [{"name": k, "value": v}
                                                for k, v in cfg.controllerManagerExtraArgs.items()]}}
           if cfg.controllerManagerExtraArgs else {})}, sort_keys=False)


KUBEADM_API_VERSIONS = ("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4")


class _ArgError(Exception):
    pass


def parse_extra_args(value, where: str) -> dict[str, str]:
    """extraArgs, as v1beta4's [{name, value}] or v1beta3's {name: value}, checked against the
    controller manager's own flags. ValueError: one line `cause; fix`."""
    if value is None:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(a, dict) and set(a) == {"name", "value"} for a in value):
        pairs = [(a["name"], a["value"]) for a in value]
    else:
        raise ValueError(f"{where} must be a list of {{name, value}} (v1beta4) or a map (v1beta3); "
                         "fix the configuration file")
    out: dict[str, str] = {}
    for name, val in pairs:
        if not isinstance(name, str) or not name or name.startswith("-") or isinstance(val, (dict, list)):
            raise ValueError(f"{where}: {name!r} is not a flag name with a scalar value; "
                             "name flags without dashes, e.g. node-monitor-grace-period: 20s")
        out[name] = "true" if val is True else "false" if val is False else str(val)
    from controller_manager.main import parser

    def refuse(message: str):
        raise _ArgError(message)
    p = parser()
    p.error = refuse   # type: ignore[method-assign]  # a clear error, not argparse's exit
    try:
        p.parse_args(extra_args_flags(out))
    except _ArgError as e:
        raise ValueError(f"{where}: the controller manager refuses it ({e}); "
                         "see `minik8s controller-manager --help`") from None
    return out


def read_init_config(path: str) -> dict[str, str]:
    """`init --config FILE`: its ClusterConfiguration's controllerManager.extraArgs.
    ValueError: one line `cause; fix`, before anything is written."""
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except OSError as e:
        raise ValueError(f"cannot read --config {path}: {e.strerror or e}; give a readable file") from None
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path} is not YAML ({str(e).splitlines()[0]}); fix the file") from None
    found: dict[str, str] | None = None
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "ClusterConfiguration":
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f"--config {path}: minik8s init reads only a ClusterConfiguration, not {kind!r}; "
                             "give the rest as flags")
        if doc.get("apiVersion") not in KUBEADM_API_VERSIONS:
            raise ValueError(f"--config {path}: apiVersion {doc.get('apiVersion')!r} is not one of "
                             f"{', '.join(KUBEADM_API_VERSIONS)}; fix the file")
        other = sorted(set(doc) - {"apiVersion", "kind", "controllerManager"})
        cm = doc.get("controllerManager") or {}
        if not isinstance(cm, dict):
            other.append("controllerManager")
        else:
            other += [f"controllerManager.{k}" for k in sorted(set(cm) - {"extraArgs"})]
        if other:
            raise ValueError(f"--config {path}: minik8s init does not read {', '.join(other)} of a "
                             "ClusterConfiguration; give them as flags (only controllerManager.extraArgs is read)")
        if found is not None:
            raise ValueError(f"--config {path} holds more than one ClusterConfiguration; keep one")
        found = parse_extra_args(cm.get("extraArgs") if isinstance(cm, dict) else None,
                                 "controllerManager.extraArgs")
    return found or {}


def cluster_info_kubeconfig(server: str, ca_pem: bytes) -> str:
    """kube-public/cluster-info's `kubeconfig`: one unnamed cluster, no user (kubeadm's)."""
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": [
        {"name": "", "cluster": {"server": server,
                                 "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "contexts": None, "current-context": "", "preferences": {}, "users": None}, sort_keys=False)


def bootstrap_objects(layout: Layout, cfg: HostConfig, ca_pem: bytes) -> list[dict]:
    """kubeadm's upload-config and bootstrap-token phases' objects (the token aside)."""
    from cluster.tokens import DEFAULT_GROUP
    nodes, bootstrappers = _group("system:nodes"), _group(DEFAULT_GROUP)
    config_map = lambda ns, name, data: {"apiVersion": "v1", "kind": "ConfigMap",  # noqa: E731
                                         "metadata": {"name": name, "namespace": ns}, "data": data}
    get_cm = lambda name: [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],  # noqa: E731
                            "resourceNames": [name]}]
    return [
        config_map("kube-system", "kubeadm-config", {"ClusterConfiguration": cluster_configuration(layout, cfg)}),
        *_role_and_binding("kube-system", "kubeadm:nodes-kubeadm-config", get_cm("kubeadm-config"),
                           bootstrappers, nodes),
        _crb("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", bootstrappers),
        _crb("kubeadm:node-autoapprove-bootstrap",
             "system:certificates.k8s.io:certificatesigningrequests:nodeclient", bootstrappers),
        _crb("kubeadm:node-autoapprove-certificate-rotation",
             "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", nodes),
        _crb("minik8s:node-proxier", "system:node-proxier", nodes),
        # join checks that no Node has its name yet (kubeadm's kubeadm:get-nodes)
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "kubeadm:get-nodes"},
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]},
        _crb("kubeadm:get-nodes", "kubeadm:get-nodes", bootstrappers),
        config_map("kube-public", "cluster-info",
                   {"kubeconfig": cluster_info_kubeconfig(f"https://{cfg.endpoint}", ca_pem)}),
        *_role_and_binding("kube-public", "kubeadm:bootstrap-signer-clusterinfo", get_cm("cluster-info"),
                           {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:anonymous"}),
    ]


def mark_control_plane(api: Api, name: str) -> None:
    """kubeadm's mark-control-plane: the role label (which NodeRestriction keeps a kubelet
    from setting) and the NoSchedule taint (the kubelet registered with it; made sure)."""
    node = api.get(f"/api/v1/nodes/{name}")
    taints = list((node.get("spec") or {}).get("taints") or [])
    if not any(t.get("key") == CONTROL_PLANE_TAINT["key"] and t.get("effect") == "NoSchedule" for t in taints):
        taints.append(dict(CONTROL_PLANE_TAINT))
    api.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": {CONTROL_PLANE_LABEL: "", EXCLUDE_LB_LABEL: ""}},
                                         "spec": {"taints": taints}})


# -- preflight --------------------------------------------------------------------------------------

def split_endpoint(ep: str, default_port: int = API_PORT) -> tuple[str, int]:
    """HOST[:PORT] (an IPv6 host in brackets) -> (host, port); ValueError if not one."""
    host, port = ep, str(default_port)
    if ep.startswith("["):
        host, _, rest = ep[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif ep.count(":") == 1:
        host, port = ep.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() or c == "/" for c in host):
        raise ValueError(ep)
    return host, int(port)


def local_addresses() -> list[str]:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)]


def initialised(layout: Layout) -> str | None:
    """What shows that this host runs (or ran) minik8s already, or None."""
    if os.path.exists(layout.admin_conf):
        return layout.admin_conf
    if os.path.exists(layout.kubelet_conf):
        return layout.kubelet_conf
    if os.path.isdir(layout.etcd_data) and os.listdir(layout.etcd_data):
        return layout.etcd_data
    if units.installed(layout):
        return layout.units
    return None


def preflight_ports(ports: list[int]) -> list[tuple[str, str]]:
    from cluster import host
    return [(f"port {p} is in use", f"stop what listens on it (`ss -ltnp 'sport = :{p}'`)")
            for p in ports if host.port_in_use("0.0.0.0", p)]


def preflight(layout: Layout, cfg: HostConfig, args) -> list[tuple[str, str]]:
    """Every problem as (cause, fix), in kubeadm's order; [] when init may go on."""
    out: list[tuple[str, str]] = []
    if os.geteuid() != 0:
        return [("minik8s init must run as root", "run it with sudo")]
    done = initialised(layout)
    if done:
        return [(f"this host is initialised already ({done} exists)",
                 "run `minik8s reset` first to start over")]
    try:
        adv = ipaddress.ip_address(cfg.advertiseAddress)
        if adv.version != 4 or adv.is_unspecified or adv.is_loopback or adv.is_multicast:
            out.append((f"--advertise-address {adv} cannot be reached by other hosts",
                        "give an IPv4 address of this host on the network the hosts share"))
        elif str(adv) not in local_addresses():
            mine = ", ".join(a for a in local_addresses() if not a.startswith("127.")) or "its addresses"
            out.append((f"--advertise-address {adv} is not an address of this host", f"give one of {mine}"))
    except ValueError:
        out.append((f"--advertise-address {cfg.advertiseAddress!r} is not an IP address",
                    "give this host's IPv4 address, e.g. --advertise-address 192.168.56.10"))
    if args.control_plane_endpoint:
        try:
            split_endpoint(args.control_plane_endpoint, cfg.bindPort)
        except ValueError:
            out.append((f"--control-plane-endpoint {args.control_plane_endpoint!r} is not HOST[:PORT]",
                        "give a DNS name or address, e.g. --control-plane-endpoint lab-api:6443"))
    if not 0 < cfg.bindPort < 65536:
        out.append((f"--bind-port {cfg.bindPort} is not a port", "give 1-65535 (kubeadm's default: 6443)"))
    why = _dns_subdomain(cfg.nodeName)
    if why:
        out.append((f"--node-name {cfg.nodeName!r}: {why}", "give a lower-case DNS name, e.g. --node-name cp-1"))
    nets = {}
    for flag, value in (("--pod-network-cidr", cfg.podSubnet), ("--service-cidr", cfg.serviceSubnet)):
        try:
            net = ipaddress.ip_network(value)
            if net.version != 4:
                raise ValueError
            nets[flag] = net
        except ValueError:
            out.append((f"{flag} {value!r} is not an IPv4 CIDR", f"give one like {flag} "
                        f"{DEFAULT_POD_CIDR if flag == '--pod-network-cidr' else DEFAULT_SERVICE_CIDR}"))
    pod, svc = nets.get("--pod-network-cidr"), nets.get("--service-cidr")
    if pod is not None and pod.prefixlen > NODE_CIDR_MASK:
        out.append((f"--pod-network-cidr {pod} is smaller than one node's /{NODE_CIDR_MASK}",
                    f"give a /{NODE_CIDR_MASK} or larger, e.g. {DEFAULT_POD_CIDR}"))
    if svc is not None and svc.prefixlen < 12:
        out.append((f"--service-cidr {svc} is larger than a /12", "give a /12 or smaller, e.g. 10.96.0.0/12"))
    if pod is not None and svc is not None and pod.overlaps(svc):
        out.append((f"--pod-network-cidr {pod} overlaps --service-cidr {svc}", "give ranges that do not overlap"))
    for flag, net in nets.items():
        try:
            if ipaddress.ip_address(cfg.advertiseAddress) in net:
                out.append((f"{flag} {net} contains the advertise address {cfg.advertiseAddress}",
                            f"give a {flag} outside the hosts' network"))
        except ValueError:
            pass
    if cfg.networkBackend not in BACKENDS:
        out.append((f"--network-backend {cfg.networkBackend!r} is not one of {', '.join(BACKENDS)}",
                    "give host-gw (hosts on one link) or vxlan"))
    if args.token:
        from cluster import tokens
        try:
            tokens.check_token(args.token)
        except tokens.TokenError as e:
            out.append(tuple(str(e).split("; ", 1)))  # type: ignore[arg-type]
    if args.token_ttl < 0:
        out.append(("--token-ttl must not be negative", "give 0 for a token that never expires"))
    if args.certificate_key and not args.upload_certs:
        out.append(("--certificate-key is only used with --upload-certs", "add --upload-certs"))
    if args.certificate_key and not _is_hex_key(args.certificate_key):
        out.append(("--certificate-key is not 64 hex digits (an AES-256 key)",
                    "give none to have one made, or one from `minik8s certs certificate-key`"))
    if args.upload_certs and upload_certs is None:
        out.append(("--upload-certs is not supported by this build",
                    "copy /etc/minik8s/pki's CAs and sa.* to the other control-plane hosts by hand"))
    # the host's state, once the input is known to be good (kubeadm: validation, then preflight)
    if nets and not out:
        from cluster import network
        for clash in network.overlapping_routes(*(str(n) for n in nets.values())):
            out.append((f"a host route {clash}", "give --pod-network-cidr/--service-cidr ranges no host network uses"))
    import shutil
    if not shutil.which("etcd"):
        out.append(("etcd is not installed (no etcd on PATH)", "install Debian's etcd-server (hack/setup.sh does)"))
    if not shutil.which("nft") and not os.path.exists("/usr/sbin/nft"):
        out.append(("nft is not installed (kube-proxy programs nftables)", "install Debian's nftables"))
    out += preflight_ports([cfg.bindPort, ETCD_CLIENT_PORT, ETCD_PEER_PORT, KUBELET_PORT,
                            CONTROLLER_MANAGER_PORT, SCHEDULER_PORT])
    return out


def _is_hex_key(s: str) -> bool:
    return len(s) == 64 and all(c in "0123456789abcdefABCDEF" for c in s)


def _dns_subdomain(name: str) -> str | None:
    from machinery import labels
    return labels.validate_dns1123_subdomain(name)


def upload_certs(api: Api, layout: Layout, certificate_key: str | None) -> str:
    """`init --upload-certs` (cluster/uploadcerts.py): the key used."""
    from cluster import uploadcerts
    try:
        return uploadcerts.init_hook(api, layout, certificate_key)
    except uploadcerts.CopyCertsError as e:
        raise LabError(str(e)) from None


# -- init ----------------------------------------------------------------------------------------

def add_parser(sub) -> None:
    from machinery import flags
    p = sub.add_parser("init", help="set up the first control-plane host of a lab cluster (as kubeadm init)",
                       description="Make this host the first control-plane node of a cluster: PKI, "
                                   "kubeconfigs, etcd, the API server, controller manager and scheduler, "
                                   "the kubelet, kube-proxy and the pod network, as units.")
    p.add_argument("--advertise-address", required=True, metavar="IP",
                   help="the address the API server and etcd advertise to the other hosts")
    p.add_argument("--bind-port", type=int, default=API_PORT, metavar="PORT",
                   help="the API server's port (default 6443)")
    p.add_argument("--control-plane-endpoint", default="", metavar="HOST[:PORT]",
                   help="a stable address of every control-plane host (a DNS name or load balancer); "
                        "default: the advertise address and bind port")
    p.add_argument("--pod-network-cidr", default=DEFAULT_POD_CIDR, metavar="CIDR",
                   help=f"the pods' addresses; each node gets a /{NODE_CIDR_MASK} (default {DEFAULT_POD_CIDR})")
    p.add_argument("--service-cidr", default=DEFAULT_SERVICE_CIDR, metavar="CIDR",
                   help=f"the Services' virtual addresses (default {DEFAULT_SERVICE_CIDR})")
    p.add_argument("--node-name", default=None, metavar="NAME", help="the Node's name (default: the hostname)")
    p.add_argument("--network-backend", default="host-gw", metavar="host-gw|vxlan",
                   help="how pods reach pods on other hosts (default host-gw: hosts share a link)")
    p.add_argument("--token", default=None, metavar="TOKEN", help="the bootstrap token (default: a new one)")
    p.add_argument("--token-ttl", type=flags.duration, default=24 * 3600.0, metavar="DURATION",
                   help="how long the token is valid; 0: forever (default 24h)")
    p.add_argument("--upload-certs", action="store_true",
                   help="upload the control-plane certificates, encrypted, for `join --control-plane`")
    p.add_argument("--certificate-key", default="", metavar="HEX",
                   help="the key that encrypts the uploaded certificates (default: a new one)")
    p.add_argument("--config", default="", metavar="FILE",
                   help="a kubeadm ClusterConfiguration; its controllerManager.extraArgs are read")


def host_config_from(args, controller_manager_extra_args: dict[str, str] | None = None) -> HostConfig:
    ep = args.control_plane_endpoint
    if ep:
        try:
            host, port = split_endpoint(ep, args.bind_port)
            ep = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        except ValueError:
            pass   # preflight names it
    return HostConfig(nodeName=args.node_name or socket.gethostname().lower(),
                      advertiseAddress=args.advertise_address, role="control-plane", bindPort=args.bind_port,
                      controlPlaneEndpoint=ep, podSubnet=args.pod_network_cidr, serviceSubnet=args.service_cidr,
                      networkBackend=args.network_backend,
                      controllerManagerExtraArgs=dict(controller_manager_extra_args or {}))


def say(text: str) -> None:
    print(text, flush=True)


def run_init(args) -> int:
    t0 = time.monotonic()
    layout = current()
    try:   # read once: FILE may be a pipe (/dev/stdin)
        extra = read_init_config(args.config) if getattr(args, "config", "") else {}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cfg = host_config_from(args, extra)
    problems = preflight(layout, cfg, args)
    if problems:
        cause, fix = problems[0]
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        print(f"error: {cause}; {fix}{more}", file=sys.stderr)
        return 1
    say(f"[init] Using Kubernetes version: {KUBERNETES_VERSION}")
    say("[preflight] Running pre-flight checks: passed")
    try:
        return _init(layout, cfg, args, t0)
    except (LabError, units.UnitError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:   # a file or directory in the way, a full disk...
        print(f"error: {e}; fix that, then `minik8s reset` to start over", file=sys.stderr)
        return 1


def _init(layout: Layout, cfg: HostConfig, args, t0: float) -> int:
    from cluster import addons, tokens
    say(f'[certs] Using certificateDir folder "{layout.pki}"')
    for o in make_pki(layout, cfg):
        if o.made:
            say(f'[certs] Generating "{o.name}" ' + ("key and public key" if o.name == "sa" else "certificate and key"))
    for path in write_control_plane_kubeconfigs(layout, cfg):
        say(f'[kubeconfig] Writing "{os.path.basename(path)}" kubeconfig file')
    write_kubelet_conf(layout, cfg)
    say(f'[kubeconfig] Writing "kubelet.conf" kubeconfig file (client certificate in {layout.kubelet_pki})')
    os.makedirs(layout.etcd_data, mode=0o700, exist_ok=True)
    cfg.save(layout)
    how = "systemd" if units.systemd_runs(layout) else "the minik8s host supervisor"
    cp = control_plane_units(layout, cfg)
    node = node_units(layout, cfg)
    for u in cp + node:
        phase = "etcd" if u.name == "etcd" else "control-plane" if u in cp else "kubelet-start"
        say(f'[{phase}] Creating unit "{u.name}" (run by {how})')
    units.install(cp + node, layout)
    say(f"[wait-control-plane] Waiting for etcd, the API server at {cfg.local_api}, the controller manager "
        f"and the scheduler (up to {START_TIMEOUT:.0f}s)")
    took = wait_control_plane(layout, cfg)
    say(f"[apiclient] All control plane components are healthy after {took:.6f} seconds")
    with Api.from_kubeconfig(layout.admin_conf, server=cfg.local_api) as api:
        ca_pem = api.ca_pem()
        say('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the '
            '"kube-system" Namespace')
        for obj in bootstrap_objects(layout, cfg, ca_pem):
            api.apply(obj)
        token = tokens.new(args.token, ttl=args.token_ttl, description=tokens.INIT_DESCRIPTION)
        say(f"[bootstrap-token] Using token: {token.token}")
        say("[bootstrap-token] Configured RBAC rules to allow Node Bootstrap tokens to get nodes, post CSRs, "
            "and have their certificates approved and rotated")
        say('[bootstrap-token] Creating the "cluster-info" ConfigMap in the "kube-public" namespace')
        tokens.create(api, token)
        cert_key = None
        if args.upload_certs and upload_certs is not None:
            cert_key = upload_certs(api, layout, args.certificate_key or None)
            say('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')
        try:
            addons.ensure_dns(cfg.local_api, _admin_verify(layout), cfg.dns_ip)
            say("[addons] Applied essential addon: CoreDNS")
        except httpx.HTTPError as e:
            say(f"[addons] WARNING: the DNS addon was not applied: {e}")
        try:
            local_path = os.path.join(layout.var, "local-path")  # beside the kubelet's root dir
            addons.ensure_storage_class(cfg.local_api, _admin_verify(layout), local_path)
            say(f'[addons] Applied addon: the default StorageClass "local-path" ({local_path})')
        except httpx.HTTPError as e:
            say(f"[addons] WARNING: the local-path StorageClass was not applied: {e}")
        say("[addons] Applied essential addon: kube-proxy (a unit on every host)")
        say(f"[kubelet-check] Waiting for node {cfg.nodeName} to be Ready (up to {NODE_TIMEOUT:.0f}s)")
        wait_node_ready(api, layout, cfg.nodeName)
        say(f"[mark-control-plane] Marking the node {cfg.nodeName} as control-plane by adding the labels: "
            f"[{CONTROL_PLANE_LABEL} {EXCLUDE_LB_LABEL}]")
        say(f"[mark-control-plane] Marking the node {cfg.nodeName} as control-plane by adding the taints "
            f"[{CONTROL_PLANE_LABEL}:NoSchedule]")
        mark_control_plane(api, cfg.nodeName)
    ca_hash = tokens.ca_cert_hash(ca_pem)
    say(closing_text(layout, cfg, token.token, ca_hash, cert_key, time.monotonic() - t0))
    return 0


def _admin_verify(layout: Layout):
    from client import kubeconfig
    return kubeconfig.load(layout.admin_conf).connection().ssl_context()


def closing_text(layout: Layout, cfg: HostConfig, token: str, ca_hash: str, cert_key: str | None,
                 seconds: float) -> str:
    """kubeadm init's closing text, with minik8s's paths and commands."""
    from cluster.tokens import join_command
    worker = _wrap(join_command(cfg.endpoint, token, ca_hash))
    lines = [
        "",
        f"Your Kubernetes control-plane has initialized successfully! (in {seconds:.1f}s)",
        "",
        "To start using your cluster, you need to run the following as a regular user:",
        "",
        "  mkdir -p $HOME/.kube",
        f"  sudo cp -i {layout.admin_conf} $HOME/.kube/config",
        "  sudo chown $(id -u):$(id -g) $HOME/.kube/config",
        "",
        "Alternatively, if you are the root user, you can run:",
        "",
        f"  export KUBECONFIG={layout.admin_conf}",
        "",
    ]
    lines += [f"The pod network ({cfg.networkBackend}, {cfg.podSubnet}) runs on every host as the "
              "`podnet` unit: there is no pod network add-on to deploy.", ""]
    if cert_key:
        cp = join_command(cfg.endpoint, token, ca_hash, control_plane=True, certificate_key=cert_key)
        lines += [
            "You can now join any number of the control-plane node running the following command on each as root:",
            "",
            "  " + _wrap(cp),
            "",
            "Please note that the certificate-key gives access to cluster sensitive data, keep it secret!",
            "As a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use",
            '"minik8s init phase upload-certs --upload-certs" to reload certs afterward.',
            "",
        ]
    else:
        lines += [
            "You can now join any number of control-plane nodes by copying certificate authorities",
            "and service account keys on each node and then running the following as root:",
            "",
            "  " + _wrap(join_command(cfg.endpoint, token, ca_hash, control_plane=True)),
            "",
        ]
    lines += ["Then you can join any number of worker nodes by running the following on each as root:", "",
              worker, ""]
    return "\n".join(lines)


def _wrap(cmd: str) -> str:
    """A join command over lines, as kubeadm prints it (a backslash, a tab)."""
    return cmd.replace(" --discovery", " \\\n\t--discovery").replace(" --control-plane", " \\\n\t--control-plane")


def main_init(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="minik8s")
    sub = p.add_subparsers(dest="command")
    add_parser(sub)
    return run_init(p.parse_args(["init", *argv]))


def _aggregation_flags(directory: str) -> list[str]:
    from cluster import pki as cluster_pki  # loaded only where an API server is started
    return cluster_pki.aggregation_flags(directory)
