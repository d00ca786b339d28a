"""Where a lab host keeps what `minik8s init`, `join` and `reset` make (kubeadm's layout,
with /etc/kubernetes and /var/lib/kubelet renamed to minik8s).

Every path hangs off one root, the environment's MINIK8S_ROOT ("" or unset: "/"), so a
test that builds no mount namespace can give a host a temporary directory instead:

    /etc/minik8s/                 admin.conf, controller-manager.conf, scheduler.conf,
                                  kubelet.conf, bootstrap-kubelet.conf, config.yaml
    /etc/minik8s/pki/             cluster/pki.py's files (kubeadm's names)
    /etc/minik8s/units/           <unit>.json when systemd does not run the host
    /etc/systemd/system/          minik8s-<unit>.service when it does
    /var/lib/minik8s/etcd/        etcd's data
    /var/lib/minik8s/kubelet/     the kubelet's --root-dir; its certificates in pki/
    /var/lib/minik8s/logs/        <unit>.log of every unit the host supervisor runs
    /run/minik8s/                 the host supervisor's lock, pid and status files

Logs live under /var/lib/minik8s rather than /var/log so that a lab host whose
/var/lib/minik8s is its own (a mount namespace) keeps its logs to itself, and `reset`
leaves nothing behind. Ports are kubeadm's (k3s's for the node-local load balancer,
flannel's for VXLAN). Nothing here touches the disk: these are names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

ROOT_ENV = "MINIK8S_ROOT"

# Ports (kubeadm's defaults; 6444 is the k3s agent's load balancer, 8472 flannel's VXLAN).
API_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
KUBELET_PORT = 10250
SCHEDULER_PORT = 10259
CONTROLLER_MANAGER_PORT = 10257
PROXY_HEALTHZ_PORT = 10256
LB_ADDRESS = "127.0.0.1"
LB_PORT = 6444
VXLAN_PORT = 8472

# Unit names (contract16.md); systemd's unit for NAME is minik8s-NAME.service.
UNITS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
         "kube-proxy", "podnet", "apiserver-lb")


def root() -> str:
    """The root all paths hang off: MINIK8S_ROOT, "/" when unset or empty."""
    return os.environ.get(ROOT_ENV) or "/"


@dataclass(frozen=True)
class Layout:
    """Every path of a host, under `root`."""
    root: str = "/"

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *(p.lstrip("/") for p in parts))

    # /etc/minik8s
    @property
    def etc(self) -> str:
        return self.path("etc", "minik8s")

    @property
    def pki(self) -> str:
        return os.path.join(self.etc, "pki")

    def etc_file(self, name: str) -> str:
        return os.path.join(self.etc, name)

    @property
    def admin_conf(self) -> str:
        return self.etc_file("admin.conf")

    @property
    def controller_manager_conf(self) -> str:
        return self.etc_file("controller-manager.conf")

    @property
    def scheduler_conf(self) -> str:
        return self.etc_file("scheduler.conf")

    @property
    def kubelet_conf(self) -> str:
        return self.etc_file("kubelet.conf")

    @property
    def bootstrap_kubelet_conf(self) -> str:
        return self.etc_file("bootstrap-kubelet.conf")

    @property
    def config_yaml(self) -> str:
        return self.etc_file("config.yaml")

    @property
    def units(self) -> str:
        return os.path.join(self.etc, "units")

    def unit_spec(self, name: str) -> str:
        return os.path.join(self.units, f"{name}.json")

    @property
    def systemd_dir(self) -> str:
        return self.path("etc", "systemd", "system")

    def systemd_unit(self, name: str) -> str:
        return os.path.join(self.systemd_dir, f"minik8s-{name}.service")

    # /var/lib/minik8s
    @property
    def var(self) -> str:
        return self.path("var", "lib", "minik8s")

    @property
    def etcd_data(self) -> str:
        return os.path.join(self.var, "etcd")

    @property
    def kubelet_dir(self) -> str:
        return os.path.join(self.var, "kubelet")

    @property
    def kubelet_pki(self) -> str:
        return os.path.join(self.kubelet_dir, "pki")

    @property
    def logs(self) -> str:
        return os.path.join(self.var, "logs")

    def log(self, unit: str) -> str:
        return os.path.join(self.logs, f"{unit}.log")

    # /run/minik8s
    @property
    def run(self) -> str:
        return self.path("run", "minik8s")

    @property
    def supervisor_lock(self) -> str:
        return os.path.join(self.run, "supervisor.lock")

    @property
    def supervisor_pid(self) -> str:
        return os.path.join(self.run, "supervisor.pid")

    @property
    def supervisor_status(self) -> str:
        return os.path.join(self.run, "status.json")

    def owned_dirs(self) -> tuple[str, str, str]:
        """What `reset` removes whole: /etc/minik8s, /var/lib/minik8s, /run/minik8s."""
        return self.etc, self.var, self.run


def current() -> Layout:
    """The layout under MINIK8S_ROOT."""
    return Layout(root())
