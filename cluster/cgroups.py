"""The cluster's cgroup tree: every process of a cluster (its components, and through
the kubelets every pod) lives under one cgroup named after the cluster, so `down` can
find and kill all of them, even after a crash, and then remove the tree.

    <base>/minik8s-<id>/control-plane        etcd, API server, scheduler, ...
    <base>/minik8s-<id>/<node>/kubelet       that node's kubelet (its pods' cgroups are
                                             made by the kubelet, next to or below it)

<base> is, per hierarchy, the cgroup the supervisor runs in (v1) or its parent (v2,
where a cgroup holding processes may not delegate controllers), which is also how the
kubelet places its pods relative to itself. v1 hierarchies used: cpu, cpuacct, memory,
pids (the ones the kubelet uses). Each kubelet gets a cgroup of its own so that each
sees only its own pods there, as on separate machines.

Needs root; the fake runtime does not use it. Stdlib only: `join` runs in a child
between fork and exec.
"""
from __future__ import annotations

import os

# The kubelet's own placement rules, so its pods land under the cluster's tree.
from kubelet.runtime.linux.cgroups import (ROOT, bases, enable_controllers, is_v2, kill_until_empty,
                                           remove_trees)


class ClusterCgroups:
    def __init__(self, name: str, root: str = ROOT):
        self.v2 = is_v2(root)
        self.bases = [os.path.join(b, name) for b in bases(root)]

    def dirs(self, sub: str) -> list[str]:
        return [os.path.join(b, sub) for b in self.bases]

    def ensure(self, sub: str) -> list[str]:
        """Make <cluster>/<sub> in every hierarchy; the directories to join."""
        for base in self.bases:
            path = base
            if self.v2:
                enable_controllers(os.path.dirname(base))
            for part in sub.split("/"):
                os.makedirs(path, exist_ok=True)
                if self.v2:
                    enable_controllers(path)
                path = os.path.join(path, part)
            os.makedirs(path, exist_ok=True)
        return self.dirs(sub)

    def exists(self) -> bool:
        return any(os.path.isdir(b) for b in self.bases)

    def pids(self) -> list[int]:
        out = []
        for base in self.bases:
            for dirpath, _dirs, _files in os.walk(base):
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        out += [int(x) for x in f.read().split()]
                except (FileNotFoundError, ProcessLookupError):
                    pass
        return sorted(set(out))

    def kill_all(self, timeout: float = 10.0) -> int:
        """SIGKILL every process in the tree until it is empty; how many were killed."""
        me = os.getpid()
        return len(kill_until_empty(lambda: [p for p in self.pids() if p != me],
                                    f"cgroup {self.bases[0]}", timeout=timeout, interval=0.01))

    def remove(self) -> bool:
        """Kill what runs in the tree and remove it; whether there was one."""
        if not self.exists():
            return False
        self.kill_all()
        remove_trees(self.bases, timeout=5.0, interval=0.01)
        return True


def join(dirs: list[str]) -> None:
    """Move the calling process into each directory's cgroup."""
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
