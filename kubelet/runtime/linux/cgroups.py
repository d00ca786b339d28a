"""Pod and container cgroups through the cgroup filesystem, v1 or v2.

Layout: <base>/<parent>/pod<uid>/{sandbox,<container id>}, where <base> is, per hierarchy, the
cgroup this kubelet runs in (v1), or its parent (v2, where a cgroup holding processes
may not have children with controllers enabled). Nesting under our own cgroup keeps
pods inside whatever limits the node's supervisor put the kubelet in.

A `Cgroup` is a set of directories, one per hierarchy (v1) or one (v2), named by a
path relative to the base; `join`, `kill_all`, `remove` act on all of them. Resource
mapping, as the kubelet does it: cpu request -> cpu.shares (v2 cpu.weight), cpu limit ->
CFS quota over a 100 ms period, memory limit -> hard limit with swap off. OOM kills are
read from the kernel's per-cgroup oom_kill counter.

Usage (`Cgroup.usage`, `root`), as cadvisor reads it for the kubelet: CPU is the
cumulative time of v1 cpuacct.usage or v2 cpu.stat usage_usec; memory is v1
memory.usage_in_bytes or v2 memory.current, and the working set is that minus the
inactive file pages of memory.stat (total_inactive_file, v2 inactive_file), never below
0; RSS is total_rss (v2 anon). The v2 root has no memory.current: its usage comes from
/proc/meminfo (MemTotal - MemFree, Inactive(file), AnonPages), as runc reads it.

Stdlib only (the shim joins cgroups and reads OOM counters). No shared state; callers
serialize work on one pod.
"""
from __future__ import annotations

import os
import time

if False:  # typing only; the shim imports this module and starts faster without `typing`
    from collections.abc import Callable

ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
CFS_PERIOD_US = 100_000
MIN_SHARES, MAX_SHARES = 2, 262144


def is_v2(root: str = ROOT) -> bool:
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def shares(cpu_request_milli: int | None) -> int:
    return min(max(MIN_SHARES, (cpu_request_milli or 0) * 1024 // 1000), MAX_SHARES)


def quota_us(cpu_limit_milli: int) -> int:
    return max(1000, cpu_limit_milli * CFS_PERIOD_US // 1000)


def own_paths() -> dict[str, str]:
    """hierarchy key ('0' for v2, else each v1 controller) -> our cgroup path in it."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            if hid == "0":
                out["0"] = path
            for c in ctrls.split(","):
                if c:
                    out[c] = path
    return out


def v1_mounts() -> dict[str, str]:
    """controller -> mount point of its v1 hierarchy."""
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype, _src, opts = post.split()[:3]
            if fstype == "cgroup":
                for c in opts.split(","):
                    found.setdefault(c, pre.split()[4])
    return found


class Hierarchies:
    """Where the cgroups of one kubelet live: {directory of <base>/<parent>: controllers}."""

    def __init__(self, parent: str = "minik8s", root: str = ROOT):
        self.v2 = is_v2(root)
        self.dirs = [os.path.join(b, parent) for b in bases(root)]

    def ensure(self) -> None:
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
            if self.v2:  # let children use the cpu and memory controllers
                enable_controllers(d)

    def cgroup(self, *names: str) -> "Cgroup":
        return Cgroup([os.path.join(d, *names) for d in self.dirs], v2=self.v2)

    def children(self) -> list[str]:
        """Names of the cgroups directly under <parent> (in the first hierarchy)."""
        try:
            return sorted(e.name for e in os.scandir(self.dirs[0]) if e.is_dir())
        except (FileNotFoundError, IndexError):
            return []


def bases(root: str = ROOT) -> list[str]:
    """Where the cgroups this process makes go, one directory per hierarchy used: our own
    cgroup (v1, in each of V1_CONTROLLERS' hierarchies), or its parent (v2, where a
    cgroup holding processes may not delegate controllers to children). The kubelet's
    pods and the cluster's tree (cluster/cgroups.py) are both placed this way."""
    own = own_paths()
    if is_v2(root):
        return [root + (os.path.dirname(own.get("0", "/").rstrip("/")) or "/")]
    out: list[str] = []
    mounts = v1_mounts()
    for c in V1_CONTROLLERS:
        if c in mounts:
            d = mounts[c] + own.get(c, "/")
            if d not in out:
                out.append(d)
    return out


def enable_controllers(d: str) -> None:
    """Let v2 cgroup d's children use the cpu, memory and pids controllers it has."""
    try:
        with open(os.path.join(d, "cgroup.controllers")) as f:
            avail = f.read().split()
        wanted = " ".join("+" + c for c in ("cpu", "memory", "pids") if c in avail)
        if wanted:
            with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                f.write(wanted)
    except OSError:
        pass  # a controller we cannot delegate is a limit we cannot set, not an error


class Cgroup:
    def __init__(self, dirs: list[str], *, v2: bool):
        self.dirs, self.v2 = list(dirs), v2

    def to_json(self) -> dict:
        return {"dirs": self.dirs, "v2": self.v2}

    @classmethod
    def from_json(cls, d: dict) -> "Cgroup":
        return cls(d["dirs"], v2=d["v2"])

    def _find(self, filename: str) -> str | None:
        for d in self.dirs:
            p = os.path.join(d, filename)
            if os.path.exists(p):
                return p
        return None

    def _write(self, filename: str, value) -> None:
        p = self._find(filename)
        if p is not None:
            with open(p, "w") as f:
                f.write(str(value))

    def create(self, *, cpu_request_milli: int | None = None,
               cpu_limit_milli: int | None = None, memory_limit: int | None = None,
               inner: bool = False) -> None:
        """Make the cgroup and set its limits. inner: it will hold child cgroups, not
        processes (v2 lets only such cgroups delegate controllers to children)."""
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
            if self.v2 and inner:
                enable_controllers(d)
        if self.v2:
            s = shares(cpu_request_milli)
            self._write("cpu.weight", 1 + ((s - 2) * 9999) // 262142)
            if cpu_limit_milli:
                self._write("cpu.max", f"{quota_us(cpu_limit_milli)} {CFS_PERIOD_US}")
            if memory_limit:
                self._write("memory.max", memory_limit)
                self._write("memory.swap.max", 0)
        else:
            self._write("cpu.shares", shares(cpu_request_milli))
            if cpu_limit_milli:
                self._write("cpu.cfs_period_us", CFS_PERIOD_US)
                self._write("cpu.cfs_quota_us", quota_us(cpu_limit_milli))
            if memory_limit:
                self._write("memory.limit_in_bytes", memory_limit)
                try:  # memory+swap = memory: no swapping, as the kubelet wants
                    self._write("memory.memsw.limit_in_bytes", memory_limit)
                except OSError:
                    pass

    def join(self, pid: int = 0) -> None:
        """Move a process (0: the caller) into every hierarchy's cgroup."""
        for d in self.dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def pids(self) -> list[int]:
        """Every process in this cgroup and its descendants (first hierarchy)."""
        out = []
        for dirpath, _dirs, _files in os.walk(self.dirs[0]):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    out += [int(x) for x in f.read().split()]
            except FileNotFoundError:
                pass
        return out

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup tree and wait until it is empty."""
        def pids() -> list[int]:
            if self.v2 and self._find("cgroup.kill"):
                self._write("cgroup.kill", 1)
            return self.pids()
        kill_until_empty(pids, str(self.dirs[0]), timeout=timeout, interval=0.005)

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup."""
        p = self._find("memory.events" if self.v2 else "memory.oom_control")
        if p is None:
            return 0
        with open(p) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def usage(self) -> "dict[str, int] | None":
        """CPU and memory use now: cpu_ns (cumulative), memory, working_set, rss,
        pgfault, pgmajfault; None when the cgroup is gone (or has no such accounting)."""
        v2 = self.v2
        cpu = self._find("cpu.stat" if v2 else "cpuacct.usage")
        stat = self._find("memory.stat")
        if cpu is None or stat is None:
            return None
        try:
            if v2:
                cpu_ns = _keyed(cpu).get("usage_usec", 0) * 1000
            else:
                with open(cpu) as f:
                    cpu_ns = int(f.read())
            mem = _keyed(stat)
            current = self._find("memory.current" if v2 else "memory.usage_in_bytes")
            if current is None and v2:  # the root: no memory.current
                info = _keyed("/proc/meminfo")
                usage = (info.get("MemTotal:", 0) - info.get("MemFree:", 0)) * 1024
                inactive, rss = info.get("Inactive(file):", 0) * 1024, info.get("AnonPages:", 0) * 1024
            elif current is None:
                return None
            else:
                with open(current) as f:
                    usage = int(f.read())
                prefix = "" if v2 else "total_"
                inactive, rss = mem.get(prefix + "inactive_file", 0), mem.get(prefix + ("anon" if v2 else "rss"), 0)
        except (FileNotFoundError, ValueError):
            return None  # removed while being read
        fault = "pgfault" if v2 else "total_pgfault"
        return {"cpu_ns": cpu_ns, "memory": usage, "working_set": max(0, usage - inactive), "rss": rss,
                "pgfault": mem.get(fault, 0), "pgmajfault": mem.get(fault.replace("pgf", "pgmajf"), 0)}

    def remove(self) -> None:
        """Remove the cgroup and its children, killing whatever still runs there."""
        if not any(os.path.isdir(d) for d in self.dirs):
            return
        self.kill_all()
        remove_trees(self.dirs, timeout=1.0, interval=0.005)


def root(root: str = ROOT) -> Cgroup:
    """The root cgroup: the node's usage (cadvisor's "/" container)."""
    if is_v2(root):
        return Cgroup([root], v2=True)
    mounts = v1_mounts()
    return Cgroup([mounts[c] for c in ("cpuacct", "memory") if c in mounts], v2=False)


def _keyed(path: str) -> dict[str, int]:
    """A flat keyed file (memory.stat, cpu.stat, /proc/meminfo): key -> first number."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                out[parts[0]] = int(parts[1])
    return out


def remove_trees(roots: "list[str]", *, timeout: float, interval: float) -> None:
    """rmdir every cgroup directory under `roots`, deepest first. rmdir is EBUSY until
    the tasks that were killed have exited: each directory is retried for `timeout`,
    then the error is raised."""
    for root in roots:
        for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(interval)


def kill_until_empty(pids: "Callable[[], list[int]]", where: str, *, timeout: float,
                     interval: float) -> set[int]:
    """SIGKILL what `pids()` lists until it lists nothing (a process may fork while the
    list is read, so once is not enough); the pids killed. TimeoutError past `timeout`."""
    import signal  # here, not at the top: the shim starts faster without enum
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    while True:
        found = pids()
        if not found:
            return killed
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {found} of {where} did not die")
        time.sleep(interval)
