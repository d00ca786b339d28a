"""Controller benchmark: a real etcd, API server, scheduler and controller manager
(`--controllers replicaset,deployment,job,daemonset,serviceaccount`), each its own process; nodes are simulated by
a loop in this process that plays every kubelet: it marks each pod bound to a node
Running and Ready through pods/status (one write per pod, with the pod's uid as a
precondition), and finishes the graceful deletion of a bound pod (a delete with
grace 0), as a kubelet does once the containers have stopped.

(a) scale-up: from creating a Deployment of N replicas (default 1,000) to N pods
    created, N bound, N ready and the Deployment available;
(b) replacement: delete one pod, time until its replacement is created (the ADDED
    event in this process' watch), 100 times, one after another: p50 / p99;
(c) rolling update of the N replicas (maxSurge 25%, maxUnavailable 25%, the
    defaults) to a new image: until the Deployment reports the rollout complete;
(d) a Job of N completions (default 1,000), parallelism 100: from creating it to its
    Complete condition, and the CPU seconds every process spent per pod, against (a)
    in the same run (the issue's target: at most 1.5x the scale-up's time). The
    simulated kubelets finish each Job pod (Succeeded, exit code 0) in one status write;
(e) a DaemonSet over 100 more simulated nodes (--ds-nodes): until it is available on
    every one, then a rolling update to a new image with the default maxUnavailable 1
    (--ds-max-unavailable): until every node runs an updated, available pod.

Without `minik8s scheduler` (or with --bind) pods are bound by this process instead,
round-robin through the binding API.

Run: .venv/bin/python -m bench.controllers [--replicas N] [--nodes N] [--deletions N]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from client.informer import Informer  # noqa: E402
from client.rest import Client  # noqa: E402
from machinery import errors  # noqa: E402
from tests.procs import APIServer, Component, Etcd, free_port  # noqa: E402

NS = "bench-controllers"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPU:
    """CPU seconds each process spent between marks (wall time is at the mercy of
    whatever else the machine runs; CPU time much less so)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.last = self.read()

    def read(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        out["bench"] = time.process_time()
        return out

    def mark(self) -> str:
        now = self.read()
        used = {k: now[k] - self.last[k] for k in now}
        self.last = now
        return ", ".join(f"{k} {v:.1f}" for k, v in used.items())


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def node(i: int) -> dict:
    capacity = {"cpu": "64", "memory": "256Gi", "pods": "250"}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{i}",
                                                             "labels": {"kubernetes.io/hostname": f"node-{i}"}},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}}


def job(completions: int, parallelism: int) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch"},
            "spec": {"completions": completions, "parallelism": parallelism, "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


def daemonset(image: str, max_unavailable) -> dict:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"nodeSelector": {"bench-ds": "yes"},
                                           "containers": [{"name": "c", "image": image, "resources": {
                                               "requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


def target_node(pod: dict) -> str | None:
    """The node a daemon pod's required affinity names (matchFields metadata.name)."""
    required = (((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("operator") == "In":
                return (f.get("values") or [None])[0]
    return None


def deployment(replicas: int, image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image, "resources": {
                                      "requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


class Nodes:
    """Every kubelet at once: bound pods become Running and Ready (a Job's pods finish:
    Succeeded, exit code 0); bound pods being deleted are finished off. Optionally binds
    pods itself (no scheduler): round-robin, or a daemon pod to the node it names."""

    def __init__(self, client: Client, nodes: int, *, bind: bool, workers: int = 8):
        self.client, self.nodes, self.bind = client, nodes, bind
        self.informer = Informer(client, "pods", namespace=NS)
        self.todo: asyncio.Queue = asyncio.Queue()
        self.workers = workers
        self.created: dict[str, float] = {}   # pod name -> when this process first saw it
        self.bound: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.succeeded: dict[str, float] = {}
        self.informer.add_handler(on_add=self._changed, on_update=lambda _, p: self._changed(p))
        self._next_node = 0
        self._inflight: set[str] = set()
        # uids whose status this kubelet wrote: one write per pod, as a kubelet does,
        # even when its own write comes back through the watch after the next look.
        self._started: set[str] = set()
        self._tasks: list[asyncio.Task] = []

    def _changed(self, pod: dict) -> None:
        t = time.perf_counter()
        name = pod["metadata"]["name"]
        if name not in self.created:
            self.created[name] = t
        if pod["spec"].get("nodeName") and name not in self.bound:
            self.bound[name] = t
        if name not in self.ready and any(c.get("type") == "Ready" and c.get("status") == "True"
                                          for c in (pod.get("status") or {}).get("conditions") or ()):
            self.ready[name] = t
        if (pod.get("status") or {}).get("phase") == "Succeeded":
            self.succeeded.setdefault(name, t)
        if name in self._inflight:
            return
        if pod["metadata"].get("deletionTimestamp"):
            if pod["spec"].get("nodeName"):
                self._inflight.add(name)
                self.todo.put_nowait(("finish", name))
        elif not pod["spec"].get("nodeName"):
            if self.bind:
                self._inflight.add(name)
                self.todo.put_nowait(("bind", name))
        elif name not in self.ready and pod["metadata"]["uid"] not in self._started:
            self._inflight.add(name)
            self.todo.put_nowait(("run", name, pod["metadata"]["uid"]))

    async def _work(self) -> None:
        while True:
            what, name, *uid = await self.todo.get()
            try:
                if what == "finish":
                    await self.client.delete("pods", name, namespace=NS, grace_period_seconds=0)
                elif what == "bind":
                    pod = self.informer.store.get(f"{NS}/{name}")
                    target = target_node(pod) if pod is not None else None
                    if target is None:
                        self._next_node = (self._next_node + 1) % self.nodes
                        target = f"node-{self._next_node}"
                    await self.client.bind(name, target, namespace=NS)
                elif "batch.kubernetes.io/job-name" in (self._labels(name) or {}):
                    t = now()
                    await self.client.patch("pods", name, namespace=NS, subresource="status", patch={
                        "metadata": {"uid": uid[0]},
                        "status": {"phase": "Succeeded", "containerStatuses": [{
                            "name": "c", "ready": False, "restartCount": 0, "image": "busybox", "imageID": "",
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                     "startedAt": t, "finishedAt": t}}}]}})
                    self._started.add(uid[0])
                else:
                    t = now()
                    await self.client.patch("pods", name, namespace=NS, subresource="status", patch={
                        "metadata": {"uid": uid[0]},  # this pod, not a successor of its name
                        "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                            {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
                            {"type": "Ready", "status": "True", "lastTransitionTime": t}]}})
                    self._started.add(uid[0])
            except (errors.NotFound, errors.Conflict):
                pass
            finally:
                self._inflight.discard(name)
                pod = self.informer.store.get(f"{NS}/{name}")
                if pod is not None and what != "finish":
                    self._changed(pod)  # look again: it may have changed meanwhile

    def _labels(self, name: str) -> dict | None:
        pod = self.informer.store.get(f"{NS}/{name}")
        return None if pod is None else pod["metadata"].get("labels")

    async def start(self) -> None:
        self._tasks = [self.informer.start()] + [asyncio.create_task(self._work()) for _ in range(self.workers)]
        await self.informer.wait_for_sync()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def live(self) -> list[dict]:
        return [p for p in self.informer.store.list() if not p["metadata"].get("deletionTimestamp")]


def reconciles(port: int) -> str:
    """`replicaset 1234 (5.6 ms avg)`, ... from the controller manager's /metrics: each
    controller's work queue times its reconciles."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    values = {(s.name, s.labels["name"]): s.value for f in text_string_to_metric_families(text)
              for s in f.samples if s.name in ("workqueue_work_duration_seconds_count",
                                               "workqueue_work_duration_seconds_sum")}
    out = []
    for n in sorted({n for _, n in values}):
        count = values[("workqueue_work_duration_seconds_count", n)]
        total = values[("workqueue_work_duration_seconds_sum", n)]
        out.append(f"{n} {count:.0f} ({1000 * total / max(1, count):.1f} ms avg)")
    return ", ".join(out)


async def until(cond, timeout: float, what: str, interval: float = 0.005) -> float:
    start = time.perf_counter()
    while not cond():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
    return time.perf_counter()


async def rolled_out(client: Client, replicas: int, image: str) -> bool:
    d = await client.get("deployments", "web", namespace=NS)
    st = d.get("status") or {}
    return (st.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and st.get("updatedReplicas") == st.get("replicas") == st.get("availableReplicas") == replicas
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == image)


def ds_node(i: int) -> dict:
    n = node(i)
    n["metadata"]["name"] = n["metadata"]["labels"]["kubernetes.io/hostname"] = f"ds-node-{i}"
    n["metadata"]["labels"]["bench-ds"] = "yes"
    return n


async def job_complete(client: Client) -> bool:
    j = await client.get("jobs", "batch", namespace=NS)
    return any(c.get("type") == "Complete" and c.get("status") == "True"
               for c in (j.get("status") or {}).get("conditions") or [])


async def ds_rolled_out(client: Client, n: int, image: str) -> bool:
    d = await client.get("daemonsets", "agent", namespace=NS)
    st = d.get("status") or {}
    return (st.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and st.get("desiredNumberScheduled") == st.get("updatedNumberScheduled") == st.get("numberAvailable") == n
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == image)


async def poll(fn, timeout: float, what: str, interval: float = 0.05) -> float:
    start = time.perf_counter()
    while not await fn():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
    return time.perf_counter()


async def bench(url: str, args, bind: bool, pids: dict[str, int]) -> dict:
    out: dict = {}
    async with Client(url) as client:
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        await asyncio.gather(*(client.create(node(i)) for i in range(args.nodes)))
        nodes = Nodes(client, args.nodes, bind=bind)
        await nodes.start()
        n = args.replicas

        # Warm-up: every component is up, synced and has done one round trip.
        warm = deployment(1, "nginx:1")
        warm["metadata"]["name"] = "warm-up"
        warm["spec"]["selector"]["matchLabels"] = warm["spec"]["template"]["metadata"]["labels"] = {"app": "warm"}
        await client.create(warm, namespace=NS)
        await until(lambda: len(nodes.ready) >= 1, args.timeout, "the warm-up pod")
        await client.delete("deployments", "warm-up", namespace=NS)
        await client.delete_collection("replicasets", namespace=NS, label_selector="app=warm")
        await client.delete_collection("pods", namespace=NS, label_selector="app=warm", grace_period_seconds=0)
        await until(lambda: not nodes.live(), args.timeout, "the warm-up pod gone")
        for d in (nodes.created, nodes.bound, nodes.ready):
            d.clear()
        cpu = CPU(pids)

        # (a) scale-up
        t0 = time.perf_counter()
        await client.create(deployment(n, "nginx:1"), namespace=NS)
        await until(lambda: len(nodes.bound) >= n, args.timeout, f"{n} pods bound")
        t_ready = await poll(lambda: rolled_out(client, n, "nginx:1"), args.timeout, "available")
        created = sorted(nodes.created.values())
        out["created"] = created[n - 1] - t0
        out["bound"] = sorted(nodes.bound.values())[n - 1] - t0
        out["ready"] = sorted(nodes.ready.values())[n - 1] - t0
        out["available"] = t_ready - t0
        out["cpu_a"] = cpu.mark()

        # (b) replacement latency
        lat = []
        for i in range(args.deletions):
            victim = nodes.live()[i % len(nodes.live())]["metadata"]["name"]
            before = len(nodes.created)
            t = time.perf_counter()
            await client.delete("pods", victim, namespace=NS)
            await until(lambda before=before: len(nodes.created) > before, 10, "a replacement", interval=0.0005)
            lat.append(max(nodes.created.values()) - t)
            # Settled (replacement ready, statuses written) before the next one, so
            # each figure is one replacement's latency, not a queue behind the last.
            await until(lambda: len(nodes.live()) == n and len(nodes.ready) == len(nodes.created),
                        10, "replacement ready", interval=0.001)
            await poll(lambda: rolled_out(client, n, "nginx:1"), 10, "settled", interval=0.01)
        out["replace_p50"] = statistics.median(lat)
        out["replace_p99"] = pct(lat, 99)
        out["replace_max"] = max(lat)
        out["cpu_b"] = cpu.mark()

        # (c) rolling update
        await poll(lambda: rolled_out(client, n, "nginx:1"), args.timeout, "settled before update")
        t0 = time.perf_counter()
        await client.patch("deployments", "web", {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:2"}]}}}}, namespace=NS, patch_type="strategic")
        out["rollout"] = await poll(lambda: rolled_out(client, n, "nginx:2"), args.timeout, "rollout") - t0
        out["cpu_c"] = cpu.mark()

        # (d) a Job of N completions, parallelism 100
        t0 = time.perf_counter()
        await client.create(job(args.completions, args.parallelism), namespace=NS)
        out["job"] = await poll(lambda: job_complete(client), args.timeout, "the Job Complete") - t0
        out["cpu_d"] = cpu.mark()
        out["cpu_d_total"] = sum(float(x.split()[1]) for x in out["cpu_d"].split(", "))

        # (e) a DaemonSet over --ds-nodes more nodes
        await asyncio.gather(*(client.create(ds_node(i)) for i in range(args.ds_nodes)))
        t0 = time.perf_counter()
        await client.create(daemonset("agent:1", args.ds_max_unavailable), namespace=NS)
        out["ds_up"] = await poll(lambda: ds_rolled_out(client, args.ds_nodes, "agent:1"),
                                  args.timeout, "the DaemonSet available") - t0
        t0 = time.perf_counter()
        await client.patch("daemonsets", "agent", {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "agent:2"}]}}}}, namespace=NS, patch_type="strategic")
        out["ds_rollout"] = await poll(lambda: ds_rolled_out(client, args.ds_nodes, "agent:2"),
                                       args.timeout, "the DaemonSet rolled out") - t0
        out["cpu_e"] = cpu.mark()
        await nodes.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--deletions", type=int, default=100)
    p.add_argument("--completions", type=int, default=1000, help="(d) the Job's completions")
    p.add_argument("--parallelism", type=int, default=100, help="(d) the Job's parallelism")
    p.add_argument("--ds-nodes", type=int, default=100, help="(e) nodes the DaemonSet runs on")
    p.add_argument("--ds-max-unavailable", default="1", help="(e) the rollout's maxUnavailable")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--bind", action="store_true", help="bind pods here instead of running the scheduler")
    args = p.parse_args()
    mu = args.ds_max_unavailable
    args.ds_max_unavailable = mu if mu.endswith("%") else int(mu)

    etcd = Etcd().start()
    api = APIServer(etcd.url, plain=True).start()
    procs: list[Component] = []
    with tempfile.TemporaryDirectory() as tmp:
        kc = os.path.join(tmp, "kubeconfig")
        with open(kc, "w") as f:
            f.write(f"apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster: {{server: {api.url}}}\n"
                    "users:\n- name: a\n  user: {}\ncontexts:\n- name: m\n  context: {cluster: m, user: a}\n"
                    "current-context: m\n")
        try:
            bind = args.bind
            if not bind:
                sched = Component("scheduler", "--kubeconfig", kc, "--leader-elect=false").start()
                time.sleep(0.5)
                if not sched.alive():
                    print(f"(scheduler not runnable, binding here: {sched.log()[-300:]!r})")
                    bind = True
                else:
                    procs.append(sched)
            cm_port = free_port()
            procs.append(Component("controller-manager", "--kubeconfig", kc, "--controllers",
                                   # serviceaccount: the namespace's default ServiceAccount,
                                   # which the ServiceAccount admission plugin requires of pods.
                                   "replicaset,deployment,job,daemonset,serviceaccount", "--leader-elect=false",
                                   "--port", str(cm_port)).start())
            pids = {"apiserver": api.proc.pid, "etcd": etcd.proc.pid,
                    **{c.args[0]: c.proc.pid for c in procs}}
            try:
                out = asyncio.run(bench(api.url, args, bind, pids))
            except BaseException:
                for c in procs:  # what the components said, for the failure's cause
                    print(f"--- {c.args[0]} ({'alive' if c.alive() else 'exited'}):\n{c.log()[-2000:]}")
                raise
            out["reconciles"] = reconciles(cm_port)
            for c in procs:
                if not c.alive():
                    print(f"{c.args[0]} died:\n{c.log()}")
        finally:
            for c in procs:
                c.stop()
            api.stop()
            etcd.stop()

    n = args.replicas
    print(f"controllers benchmark, {datetime.now():%Y-%m-%d}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {n} replicas on {args.nodes} simulated nodes; "
          f"binding by {'this process' if bind else 'minik8s scheduler'}")
    print(f"(a) Deployment of {n}: created {out['created']:.2f}s, bound {out['bound']:.2f}s "
          f"(target < 10s), ready {out['ready']:.2f}s, available {out['available']:.2f}s")
    print(f"    CPU seconds: {out['cpu_a']}")
    print(f"(b) replacement after a delete, {args.deletions}x: p50 {out['replace_p50'] * 1000:.1f}ms, "
          f"p99 {out['replace_p99'] * 1000:.1f}ms (target < 200ms), max {out['replace_max'] * 1000:.1f}ms")
    print(f"    CPU seconds: {out['cpu_b']}")
    print(f"(c) rolling update of {n} (25%/25%): {out['rollout']:.2f}s")
    print(f"    CPU seconds: {out['cpu_c']}")
    print(f"(d) Job of {args.completions} completions, parallelism {args.parallelism}: Complete in "
          f"{out['job']:.2f}s = {out['job'] / out['available']:.2f}x the scale-up of (a) (target <= 1.5x); "
          f"CPU {1000 * out['cpu_d_total'] / args.completions:.1f} ms per pod")
    print(f"    CPU seconds: {out['cpu_d']}")
    print(f"(e) DaemonSet on {args.ds_nodes} nodes: available on all in {out['ds_up']:.2f}s; rolling update "
          f"(maxUnavailable {args.ds_max_unavailable}) in {out['ds_rollout']:.2f}s")
    print(f"    CPU seconds: {out['cpu_e']}")
    print(f"reconciles over the whole run: {out['reconciles']}")


if __name__ == "__main__":
    main()
