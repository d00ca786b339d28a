"""Kubelet benchmark: prints figures measured against a real etcd + API server and real
`minik8s kubelet` processes running real pods.

(a) pod startup latency: 2 kubelets on this machine, 100 pods (one `sleep` container,
    spec.nodeName alternating between the two nodes), from the create request being
    sent to the pod being seen Running by a watch. p50/p99/max, once with the pods
    created as fast as the API server takes them (100 in flight: a burst) and once at a
    steady 10 pods/s (the SLO's measuring condition: pods created at a rate, as in the
    density tests). CPU per pod started: the kubelets, API server and etcd processes,
    and the node side: the kubelets' helpers (the fork server and what it reaped, the
    containers' monitors) and the pods' cgroups (sandbox holders, containers with their
    set-up before exec). The paced run follows the burst's deletion, so it also pays for
    the kernel's and the filesystem's clean-up after it.
(b) cost of a running pod: with 50 pods running on each kubelet, the kubelet's RSS and
    CPU (over 20 s of steady state) against the same kubelet with no pods, per pod; and
    the node-side helpers a pod has (its sandbox process and a monitor per container).
(c) exec probes: pods with an exec readiness probe (`true`) every second on one
    kubelet; the kubelet's and the node side's CPU per probe run, over 20 s.
(d) fake runtime: `minik8s kubelet --runtime fake --nodes 1000` renewing 1,000 leases
    every 10 s: its CPU per 1,000 nodes over 30 s, and the API server's.

Run (root): .venv/bin/python -m bench.kubelet [--pods 100] [--probe-pods 20] [--fake-nodes 1000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from client.rest import Client  # noqa: E402
from kubelet.images import HOST_ROOT_IMAGE  # noqa: E402
from client.watch import Watch  # noqa: E402
from tests.procs import APIServer, Component, Etcd, free_port  # noqa: E402

TOKEN_ENV = "MINIK8S_KUBELET_TOKEN"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def run_seconds(pid: int) -> float:
    """CPU time of one process (its threads included, children excluded), to the ns:
    the clock ticks of /proc/PID/stat round a short-lived helper's few ms to 0."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except OSError:
            pass
    return total


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pss_mib(pid: int) -> float:
    """Proportional set size: shared pages (the interpreter) split among their users."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def kubeconfig(path: str, server: str) -> str:
    with open(path, "w") as f:
        f.write("apiVersion: v1\nkind: Config\n"
                f"clusters:\n- name: c\n  cluster:\n    server: {server}\n"
                "users:\n- name: u\n  user: {}\n"
                "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n"
                "current-context: c\n")
    return path


class Node:
    def __init__(self, tmp: str, kc: str, i: int, cidr: str):
        tag = uuid.uuid4().hex[:6]
        self.name, self.root = f"bench-{tag}", os.path.join(tmp, f"node{i}")
        self.bridge, self.cgroup = f"mk8sb{tag}", f"minik8s-bench-{tag}"
        self.cidr = cidr
        self.proc = Component("kubelet", "--kubeconfig", kc, "--node-name", self.name, "--pod-cidr", self.cidr,
                              "--root-dir", self.root, "--address", "127.0.0.1", "--port", str(free_port()),
                              "--bridge", self.bridge, "--cgroup-parent", self.cgroup)

    def helpers(self) -> list[int]:
        """The node-side processes of its pods (sandboxes, container monitors)."""
        from kubelet.runtime.linux.cgroups import Hierarchies
        out = []
        for d in Hierarchies(self.cgroup).dirs[:1]:
            for dirpath, _dirs, _files in os.walk(d):
                if os.path.basename(dirpath) == "sandbox":
                    out += [int(x) for x in open(os.path.join(dirpath, "cgroup.procs")).read().split()]
        for cfg in _glob(os.path.join(self.root, "pods", "*", "containers", "*", "state.json")):
            import json
            try:
                out.append(json.load(open(cfg))["shim_pid"])
            except (OSError, ValueError, KeyError):
                pass
        return out

    def node_cpu(self) -> dict:
        """CPU seconds spent on the node for pods, outside the kubelet process itself,
        by process: what the kubelet's helpers used (those it reaped, those still its
        children, such as a fork server), the containers' monitors, and the pods' cgroups
        (sandbox holders and containers, including their set-up before exec)."""
        kubelet = self.proc.proc.pid
        out: dict = {}
        try:
            f = _stat(kubelet)
            out["reaped"] = (int(f[13]) + int(f[14])) / TICK
        except OSError:
            pass
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                f = _stat(int(pid))
                if int(f[1]) == kubelet:
                    out[("child", pid, f[19])] = run_seconds(int(pid)) + (int(f[13]) + int(f[14])) / TICK
            except (OSError, IndexError, ValueError):
                pass
        for cfg in _glob(os.path.join(self.root, "pods", "*", "containers", "*", "state.json")):
            import json
            try:
                st = json.load(open(cfg))
                f = _stat(st["shim_pid"])
                if int(f[19]) == st["shim_start"]:
                    out[("monitor", st["shim_pid"], f[19])] = run_seconds(st["shim_pid"])
            except (OSError, ValueError, KeyError):
                pass
        from kubelet.runtime.linux.cgroups import Hierarchies, v1_mounts
        h = Hierarchies(self.cgroup)
        for d in h.dirs:
            try:
                if h.v2:
                    with open(os.path.join(d, "cpu.stat")) as f:
                        out["cgroups"] = int(f.readline().split()[1]) / 1e6
                elif d.startswith(v1_mounts().get("cpuacct", "/nonexistent")):
                    with open(os.path.join(d, "cpuacct.usage")) as f:
                        out["cgroups"] = int(f.read()) / 1e9
            except OSError:
                pass
        return out

    def cleanup(self) -> None:
        self.proc.stop()
        from kubelet.runtime.linux.cgroups import Cgroup
        from kubelet.runtime.linux.runtime import LinuxRuntime
        rt = LinuxRuntime(self.root, pod_cidr=self.cidr, bridge=self.bridge, cgroup_parent=self.cgroup)
        for uid in os.listdir(rt.pods_dir):
            rt.remove_pod(uid)
        rt.cleanup_orphans(keep=[])
        rt.network.delete_bridge()
        Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()


def _glob(pattern: str) -> list[str]:
    import glob
    return glob.glob(pattern)


def pod(name: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": HOST_ROOT_IMAGE, "command": ["sleep", "infinity"]}]}}


async def startup_latency(c: Client, ns: str, nodes: list[Node], n: int, *, rate: float | None) -> list[float]:
    sent: dict[str, float] = {}
    running: dict[str, float] = {}
    listed = await c.list("pods", namespace=ns)

    async def watch():
        async for ev in Watch(c, "pods", namespace=ns, resource_version=listed["metadata"]["resourceVersion"]):
            if ev.type == "BOOKMARK":
                continue
            name = ev.object["metadata"]["name"]
            if (ev.object.get("status") or {}).get("phase") == "Running" and name not in running:
                running[name] = time.perf_counter()
                if len(running) == n:
                    return
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)  # the watch is open

    async def create(i: int):
        name = f"p{i}"
        sent[name] = time.perf_counter()
        await c.create(pod(name, nodes[i % len(nodes)].name), namespace=ns)
    if rate is None:
        await asyncio.gather(*(create(i) for i in range(n)))
    else:
        start = time.perf_counter()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            asyncio.create_task(create(i))
    try:
        await asyncio.wait_for(watcher, 300)
    except TimeoutError:
        for p in (await c.list("pods", namespace=ns))["items"]:
            if p["metadata"]["name"] not in running:
                print("not running:", p["metadata"]["name"], p["spec"]["nodeName"], p.get("status"), file=sys.stderr)
        for nd in nodes:
            print(f"--- {nd.name}:\n{nd.proc.log()}", file=sys.stderr)
        raise
    return [running[k] - sent[k] for k in sent]


def exec_probed(name: str, node: str) -> dict:
    p = pod(name, node)
    p["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    return p


async def _all_ready(c: Client, ns: str, n: int) -> bool:
    ready = [p for p in (await c.list("pods", namespace=ns))["items"]
             if any(x.get("type") == "Ready" and x.get("status") == "True"
                    for x in (p.get("status") or {}).get("conditions") or [])]
    return len(ready) >= n


async def delete_all(c: Client, ns: str) -> None:
    pods = (await c.list("pods", namespace=ns))["items"]
    await asyncio.gather(*(c.delete("pods", p["metadata"]["name"], namespace=ns) for p in pods))
    deadline = time.monotonic() + 120
    while (await c.list("pods", namespace=ns))["items"]:
        if time.monotonic() > deadline:
            raise TimeoutError("pods were not deleted")
        await asyncio.sleep(0.2)


def report(label: str, lat: list[float]) -> None:
    print(f"  {label}: p50 {statistics.median(lat):.2f} s, p99 {pct(lat, 0.99):.2f} s, max {max(lat):.2f} s")


async def main_async(args) -> None:
    tmp = tempfile.mkdtemp(prefix="minik8s-bench-kubelet-")
    os.environ.setdefault(TOKEN_ENV, uuid.uuid4().hex)
    etcd = Etcd().start()
    server = APIServer(etcd.url, "--compaction-window", "0", plain=True).start()
    kc = kubeconfig(os.path.join(tmp, "kubeconfig"), server.url)
    nodes = [Node(tmp, kc, i, cidr) for i, cidr in enumerate(args.cidrs)]
    fake = None
    try:
        load = os.getloadavg()
        print(f"# minik8s kubelet benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
              f"load average at start {load[0]:.1f}")
        for nd in nodes:
            nd.proc.start()
        async with Client(server.url) as c:
            for nd in nodes:
                await _until(lambda nd=nd: c.get("nodes", nd.name))
            ns = "bench-kubelet"
            await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

            await asyncio.sleep(5)
            base = {nd.name: (rss_mib(nd.proc.proc.pid), cpu_seconds(nd.proc.proc.pid)) for nd in nodes}
            await asyncio.sleep(args.window)
            idle = {nd.name: (cpu_seconds(nd.proc.proc.pid) - base[nd.name][1]) / args.window for nd in nodes}

            print(f"(a) pod startup latency, create -> Running seen by a watch, {args.pods} pods on 2 kubelets")
            procs = {"kubelets": [nd.proc.proc.pid for nd in nodes], "apiserver": [server.proc.pid],
                     "etcd": [etcd.proc.pid]}
            modes = ((f"burst ({args.pods} creates in flight)", None), (f"paced ({args.rate:g} pods/s)", args.rate))
            for label, rate in modes:
                before = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
                node_before = [nd.node_cpu() for nd in nodes]
                lat = await startup_latency(c, ns, nodes, args.pods, rate=rate)
                used = {k: (sum(cpu_seconds(p) for p in v) - before[k]) / args.pods * 1000 for k, v in procs.items()}
                node_after = [nd.node_cpu() for nd in nodes]
                used["node side (helpers, pods)"] = sum(
                    v - b.get(k, 0.0) for b, a in zip(node_before, node_after) for k, v in a.items()
                ) / args.pods * 1000
                report(label, lat)
                print("    CPU per pod started: " + ", ".join(f"{k} {v:.0f} ms" for k, v in used.items())
                      + f" (load average {os.getloadavg()[0]:.1f})")
                if rate is None:
                    await delete_all(c, ns)

            per_node = args.pods / len(nodes)
            await asyncio.sleep(5)  # steady state: PLEG relists, lease renewals, resyncs
            t0 = {nd.name: cpu_seconds(nd.proc.proc.pid) for nd in nodes}
            helpers0 = {nd.name: {p: cpu_seconds(p) for p in nd.helpers()} for nd in nodes}
            await asyncio.sleep(args.window)
            print(f"(b) a running pod's cost ({per_node:.0f} pods per kubelet, {args.window:.0f} s window)")
            for nd in nodes:
                pid = nd.proc.proc.pid
                cpu = (cpu_seconds(pid) - t0[nd.name]) / args.window
                rss = rss_mib(pid)
                hp = helpers0[nd.name]
                hrss = sum(pss_mib(p) for p in hp)
                hcpu = sum(cpu_seconds(p) - v for p, v in hp.items()) / args.window
                print(f"  kubelet {nd.name}: RSS {base[nd.name][0]:.1f} MiB idle -> {rss:.1f} MiB "
                      f"(+{(rss - base[nd.name][0]) / per_node * 1024:.0f} KiB/pod); CPU {idle[nd.name] * 100:.2f}% "
                      f"idle -> {cpu * 100:.2f}% of a core ({(cpu - idle[nd.name]) / per_node * 100:.3f}%/pod); "
                      f"node helpers {len(hp)} processes, PSS {hrss / per_node:.1f} MiB/pod, "
                      f"CPU {hcpu * 100:.2f}%")
            await delete_all(c, ns)

            if args.probe_pods:
                nd = nodes[0]
                probed = [exec_probed(f"probed-{i}", nd.name) for i in range(args.probe_pods)]
                await asyncio.gather(*(c.create(p, namespace=ns) for p in probed))
                await _until(lambda: _all_ready(c, ns, args.probe_pods), timeout=120)
                await asyncio.sleep(3)
                k0, n0 = cpu_seconds(nd.proc.proc.pid), nd.node_cpu()
                await asyncio.sleep(args.window)
                runs = args.probe_pods * args.window  # one run a second per pod
                k = (cpu_seconds(nd.proc.proc.pid) - k0) / runs * 1000
                n = sum(v - n0.get(key, 0.0) for key, v in nd.node_cpu().items()) / runs * 1000
                print(f"(c) exec probes, {args.probe_pods} pods probed every second, {args.window:.0f} s: "
                      f"CPU per probe run: kubelet {k:.1f} ms, node side {n:.1f} ms "
                      f"(load average {os.getloadavg()[0]:.1f})")
                await delete_all(c, ns)
        for nd in nodes:  # netlink (pyroute2) must not run on the event loop's thread
            await asyncio.to_thread(nd.cleanup)

        if args.fake_nodes:
            fake = Component("kubelet", "--kubeconfig", kc, "--runtime", "fake", "--nodes", str(args.fake_nodes),
                             "--node-name", "fake").start()
            async with Client(server.url) as c:
                t = time.perf_counter()
                await _until(lambda: _count_leases(c, args.fake_nodes), timeout=600)
                reg = time.perf_counter() - t
                await asyncio.sleep(10)
                f0, a0 = cpu_seconds(fake.proc.pid), cpu_seconds(server.proc.pid)
                await asyncio.sleep(30)
                fcpu = (cpu_seconds(fake.proc.pid) - f0) / 30
                acpu = (cpu_seconds(server.proc.pid) - a0) / 30
            print(f"(d) fake runtime, {args.fake_nodes} nodes, leases renewed every 10 s: registered in "
                  f"{reg:.1f} s; fake kubelet CPU {fcpu * 100:.1f}% of a core "
                  f"({fcpu * 100 * 1000 / args.fake_nodes:.1f}% per 1,000 nodes), "
                  f"RSS {rss_mib(fake.proc.pid):.0f} MiB; "
                  f"API server CPU {acpu * 100:.1f}%")
    finally:
        if fake:
            fake.stop(signal.SIGTERM)
        for nd in nodes:
            try:
                await asyncio.to_thread(nd.cleanup)
            except Exception as exc:  # noqa: BLE001
                print(f"cleanup of {nd.name}: {exc}", file=sys.stderr)
        server.stop()
        etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _count_leases(c: Client, n: int) -> bool:
    items = (await c.list("leases", namespace="kube-node-lease"))["items"]
    return sum(1 for x in items if x["metadata"]["name"].startswith("fake-")) >= n


async def _until(fn, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await fn():
                return
        except Exception:  # noqa: BLE001 - not there yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=int, default=100)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--fake-nodes", type=int, default=1000)
    p.add_argument("--probe-pods", type=int, default=20)
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.kubelet runs real pods: run it as root")
    from tests.test_kubelet_runtime import free_cidr
    args.cidrs = [free_cidr()]
    while len(args.cidrs) < 2:
        cidr = free_cidr()
        if cidr not in args.cidrs:
            args.cidrs.append(cidr)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
