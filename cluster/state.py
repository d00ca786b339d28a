"""A cluster's state directory: its configuration and where everything lives.

    <state>/cluster.json            what `minik8s up` was asked for (kept across restarts)
    <state>/pki/                    the cluster's PKI (cluster/pki.py: kubeadm's layout)
    <state>/kubeconfig              for the user: the admin certificate (system:masters),
                                    API server on loopback
    <state>/scheduler.conf          the scheduler's kubeconfig (system:kube-scheduler)
    <state>/controller-manager.conf the controller manager's (system:kube-controller-manager),
                                    which the route syncer shares (it is the routes half of
                                    kube-controller-manager's route controller)
    <state>/kubelet-token           plain-HTTP mode only: what the API server presents to
                                    kubelets (logs, exec)
    <state>/etcd/data               etcd's data: the cluster's objects
    <state>/logs/<component>.log    one log per component, and supervisor.log
    <state>/nodes/<node>/kubeconfig a node's kubelet's kubeconfig (system:node:<node>, API
                                    server on the cluster bridge)
    <state>/nodes/<node>/root       the node's kubelet root dir (removed by `down`)
    <state>/run/                    the running supervisor: lock, status, desired state

Every name the cluster gives to something on the host (bridge, links, network
namespaces, cgroups) carries an id derived from the state directory's path, so two
clusters (a user's and a test's) never touch each other's things, and `down` can find
all of its own even after a crash.

Plain data and file I/O; no processes, no network.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
from dataclasses import dataclass, field

DEFAULT_STATE_DIR = "~/.minik8s"
DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_NODE_CIDR = "10.250.0.0/24"
ROUTE_SYNCER = "route-syncer"
KUBELET_PREFIX = "kubelet-"


def state_dir(path: str | None) -> str:
    return os.path.realpath(os.path.expanduser(path or DEFAULT_STATE_DIR))


@dataclass
class ClusterConfig:
    state_dir: str
    runtime: str = "linux"          # "linux": real pods in node namespaces; "fake": simulated
    nodes: int = 3
    port: int = 6443                # the API server's port (loopback, and the bridge address)
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    node_cidr: str = DEFAULT_NODE_CIDR
    # Extra arguments per component (`--controller-manager-args` etc.), kept so that a
    # restart runs the same cluster.
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    merged_context: str = ""        # the context merged into ~/.kube/config, if any
    registry_config: str = ""       # registries.yaml given to every kubelet (`up --registry-config`)
    # `up --plain-http`: no TLS, no authentication, every request allowed (local
    # experiments only). The default is the secure cluster: TLS, certificates, RBAC.
    plain_http: bool = False

    # -- naming ---------------------------------------------------------------------

    @property
    def id(self) -> str:
        return hashlib.sha1(self.state_dir.encode()).hexdigest()[:6]

    @property
    def context_name(self) -> str:
        default = state_dir(None) == self.state_dir
        return "minik8s" if default else f"minik8s-{self.id}"

    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in range(1, self.nodes + 1)]

    @property
    def bridge(self) -> str:
        return f"mk-{self.id}"            # 9 characters; link names may have 15

    def host_veth(self, node: str) -> str:
        return f"mk-{self.id}-{self.node_index(node)}"

    def netns(self, node: str) -> str:
        return f"minik8s-{self.id}-{node}"

    @property
    def netns_prefix(self) -> str:
        return f"minik8s-{self.id}-"

    @property
    def cgroup_name(self) -> str:
        return f"minik8s-{self.id}"

    def node_index(self, node: str) -> int:
        return int(node.rsplit("-", 1)[1])

    # -- addresses --------------------------------------------------------------------

    @property
    def node_net(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.node_cidr)

    @property
    def host_ip(self) -> str:
        """The host's address on the cluster bridge: where nodes reach the API server."""
        return str(self.node_net.network_address + 1)

    def node_ip(self, node: str) -> str:
        return str(self.node_net.network_address + 1 + self.node_index(node))

    # -- files ----------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        return os.path.join(self.state_dir, *parts)

    @property
    def kubeconfig(self) -> str:
        return self.path("kubeconfig")

    @property
    def pki_dir(self) -> str:
        return self.path("pki")

    def component_kubeconfig(self, component: str) -> str:
        """"scheduler" or "controller-manager": its kubeconfig (kubeadm's file names)."""
        return self.path(f"{component}.conf")

    def node_kubeconfig(self, node: str) -> str:
        return os.path.join(self.node_dir(node), "kubeconfig")

    @property
    def scheme(self) -> str:
        return "http" if self.plain_http else "https"

    @property
    def kubelet_token(self) -> str:
        return self.path("kubelet-token")

    def node_dir(self, node: str) -> str:
        return self.path("nodes", node)

    def log_path(self, component: str) -> str:
        return self.path("logs", f"{component}.log")

    @property
    def run_dir(self) -> str:
        return self.path("run")

    @property
    def api_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def node_api_url(self) -> str:
        """The API server as the nodes see it."""
        return f"{self.scheme}://{self.host_ip}:{self.port}" if self.runtime == "linux" else self.api_url

    def validate(self) -> None:
        """Raise ValueError with a one-line reason for a configuration that cannot work."""
        if self.runtime not in ("linux", "fake"):
            raise ValueError(f"unknown runtime {self.runtime!r} (linux or fake)")
        if self.nodes < 1:
            raise ValueError("--nodes must be at least 1")
        cluster = ipaddress.ip_network(self.cluster_cidr)   # ValueError names a bad one
        node_net = self.node_net
        if cluster.version != 4 or node_net.version != 4:
            raise ValueError("--cluster-cidr and --node-cidr must be IPv4")
        if cluster.overlaps(node_net):
            raise ValueError(f"--cluster-cidr {cluster} overlaps --node-cidr {node_net}")
        if self.runtime == "linux" and self.nodes > node_net.num_addresses - 3:
            raise ValueError(f"--node-cidr {node_net} has room for {node_net.num_addresses - 3} "
                             f"nodes, not {self.nodes}")

    # -- persistence ----------------------------------------------------------------

    def save(self) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = self.path("cluster.json.tmp")
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)
        os.replace(tmp, self.path("cluster.json"))

    @classmethod
    def load(cls, directory: str) -> "ClusterConfig | None":
        try:
            with open(os.path.join(directory, "cluster.json")) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["state_dir"] = directory  # the directory may have been moved
        return cls(**data)


def kubelet_component(node: str) -> str:
    return KUBELET_PREFIX + node
