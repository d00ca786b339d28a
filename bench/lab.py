"""Lab cluster benchmark (root): prints figures; not part of the tests.

On the lab of tests/lab.py (hosts cp1..cp3, w1 and w2 on one bridge, w3 behind a router),
with this checkout's `minik8s` run over SSH as an operator would (not through Ansible, so
each step is timed alone):

1. `minik8s init` on cp1, then `join --control-plane` on cp2 and cp3 and `join` on each
   worker, one at a time: wall time of each command (until it returned, i.e. the node
   Ready, as init and join wait for it).
2. Failover, from the kill to the first successful write (a ConfigMap create through a
   worker's node-local load balancer, 127.0.0.1:6444, as its kubelet writes), or for the
   leader-elected components to the Lease changing hands:
   - the etcd leader's host crashing (every process but sshd killed);
   - the API server the worker's balancer was using (cp2's, then the seed cp1's) killed;
   - the scheduler's and the controller manager's leaders killed.
3. Pod to pod across hosts, TCP throughput and round trips (bench/podnet.py's sender and
   receiver, Python on both ends), against host to host in the same run: VXLAN w1 -> w2
   (one link) and w1 -> w3 (routed), then, after `reset` everywhere and a new cluster
   with `--network-backend host-gw` (cp1, w1, w2), host-gw w1 -> w2. Target: >= 0.8x.

Run: sudo .venv/bin/python -m bench.lab [--seconds 2] [--rounds 3] [--round-trips 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.podnet import RECEIVER, SENDER  # noqa: E402
from tests.lab import Host, Lab  # noqa: E402
from tests.procs import wait_for  # noqa: E402

BIN = os.path.dirname(sys.executable)
MINIK8S = os.path.join(BIN, "minik8s")
KUBECTL = os.path.join(BIN, "kubectl-lite")

# Run inside a worker: creates ConfigMaps through its load balancer with the admin's
# credentials until stdin closes, printing "<monotonic> ok|err" per attempt.
WRITER = r"""
import os, ssl, sys, threading, time, uuid, yaml, base64, http.client, json
cfg = yaml.safe_load(open(sys.argv[1]))
user = cfg["users"][0]["user"]; cluster = cfg["clusters"][0]["cluster"]
d = sys.argv[2]
open(d + "/ca", "wb").write(base64.b64decode(cluster["certificate-authority-data"]))
open(d + "/crt", "wb").write(base64.b64decode(user["client-certificate-data"]))
open(d + "/key", "wb").write(base64.b64decode(user["client-key-data"]))
ctx = ssl.create_default_context(cafile=d + "/ca"); ctx.load_cert_chain(d + "/crt", d + "/key")
ctx.check_hostname = False
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while not done.is_set():
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b-" + uuid.uuid4().hex[:10],
                       "labels": {"bench": "failover"}}})
    try:
        c = http.client.HTTPSConnection("127.0.0.1", 6444, context=ctx, timeout=2)
        c.request("POST", "/api/v1/namespaces/default/configmaps", body, {"content-type": "application/json"})
        ok = c.getresponse().status == 201
        c.close()
    except Exception:
        ok = False
    print(time.monotonic(), "ok" if ok else "err", flush=True)
    if not ok:
        time.sleep(0.02)
"""


def ssh_timed(h: Host, command: str) -> float:
    t = time.monotonic()
    r = h.ssh(command, check=False, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{h.name}: {command}: {r.stderr.strip() or r.stdout[-2000:]}")
    return time.monotonic() - t


def bring_up(lab: Lab, cps: list[str], workers: list[str], backend: str) -> dict[str, float]:
    times = {}
    cp1 = lab.host(cps[0])
    times[f"init {cps[0]}"] = ssh_timed(cp1, (
        f"{MINIK8S} init --advertise-address {cp1.ip} --control-plane-endpoint {cp1.ip}:6443 "
        f"--pod-network-cidr {lab.cluster_cidr} --network-backend {backend} --node-name {cp1.name}"))
    join = cp1.ssh(f"{MINIK8S} token create --print-join-command").stdout.strip().split("\n")[-1]
    join_args = join.split(" ", 2)[2]
    if len(cps) > 1:
        key = cp1.ssh(f"{MINIK8S} certs certificate-key").stdout.strip()
        cp1.ssh(f"{MINIK8S} init phase upload-certs --upload-certs --certificate-key {key}")
        for s in cps[1:]:
            h = lab.host(s)
            times[f"join --control-plane {s}"] = ssh_timed(h, (
                f"{MINIK8S} join {join_args} --control-plane --certificate-key {key} "
                f"--apiserver-advertise-address {h.ip} --advertise-address {h.ip} --node-name {h.name}"))
    for s in workers:
        h = lab.host(s)
        times[f"join {s}"] = ssh_timed(h, f"{MINIK8S} join {join_args} --advertise-address {h.ip} --node-name {h.name}")
    return times


def kubectl(lab: Lab, *args: str, via: str = "cp1") -> str:
    """kubectl-lite as the admin on control-plane host `via`, through its own API server
    (every admin.conf names the control-plane endpoint, cp1, which a failover may have killed)."""
    h = lab.host(via)
    return h.run(KUBECTL, "--kubeconfig", "/etc/minik8s/admin.conf", "--server", f"https://{h.ip}:6443",
                 *args).stdout


class Writes:
    """WRITER running on a worker; `first_ok_after(t)` is the first success after t."""

    def __init__(self, h: Host):
        conf = os.path.join(h.dir, "admin.conf")
        with open(conf, "w") as f:
            f.write(h.lab.host("cp1").read("/etc/minik8s/admin.conf"))
        self.p = subprocess.Popen(["nsenter", "-t", str(h.init_pid), "-n", "-m", "-p", "--",
                                   sys.executable, "-c", WRITER, conf, h.dir],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, bool]] = []

    def stop(self) -> list[tuple[float, bool]]:
        out, _ = self.p.communicate("", timeout=60)
        self.lines = [(float(t), s == "ok") for t, s in (ln.split() for ln in out.splitlines())]
        return self.lines


def failover(lab: Lab, worker: Host, label: str, kill) -> None:
    w = Writes(worker)
    time.sleep(3)   # a steady stream before the kill (a benchmark's warm-up, not a test's wait)
    t0 = time.monotonic()
    kill()
    time.sleep(20)  # long enough for any election to finish; the figure is read from the log
    lines = w.stop()
    before = [t for t, ok in lines if ok and t < t0]
    after = [t for t, ok in lines if ok and t >= t0]
    errs = len([1 for t, ok in lines if not ok and t >= t0])
    gap = max((b - a for a, b in zip([t0] + after, after)), default=float("nan"))
    first = (after[0] - t0) if after else float("nan")
    print(f"  {label:<44} first write {first * 1000:8.0f} ms after the kill; longest gap {gap * 1000:7.0f} ms; "
          f"{errs} failed writes ({len(before)} before, {len(after)} after)", flush=True)


def lease_holder(lab: Lab, name: str, via: str) -> str:
    out = kubectl(lab, "get", "lease", "-n", "kube-system", name, "-o", "jsonpath={.spec.holderIdentity}", via=via)
    return out.strip()


def leader_failover(lab: Lab, cps: list[str], name: str, pattern: str) -> None:
    """`cps`: the control-plane hosts still up; the first one answers the reads."""
    holder = lease_holder(lab, name, cps[0])
    host = next(lab.host(s) for s in cps if holder.startswith(lab.host(s).name))
    t0 = time.monotonic()
    host.kill_matching(pattern)
    new = wait_for(lambda: (h := lease_holder(lab, name, cps[0])) != holder and h, timeout=120, interval=0.1,
                   what=f"a new {name} leader")
    print(f"  {name + ' leader':<44} {(time.monotonic() - t0) * 1000:8.0f} ms to a new holder ({new})", flush=True)


def etcd_leader(lab: Lab, cps: list[str]) -> Host:
    for s in cps:
        h = lab.host(s)
        r = h.run("sh", "-c", "cd /etc/minik8s/pki/etcd && python3 -c \"import ssl, urllib.request as u; "
                  "c = ssl.create_default_context(cafile='ca.crt'); "
                  "c.load_cert_chain('healthcheck-client.crt', 'healthcheck-client.key'); "
                  f"print(u.urlopen('https://{h.ip}:2379/metrics', context=c, timeout=5).read().decode())\"",
                  check=False)
        if "\netcd_server_is_leader 1" in r.stdout:
            return h
    raise RuntimeError("no etcd leader")


# --- pod network ------------------------------------------------------------------------
def pod_pid(lab: Lab, short: str, marker: str) -> int:
    h = lab.host(short)
    return wait_for(lambda: next((p for p in h.processes() if marker in _cmd(p)), None), timeout=180,
                    what=f"the bench pod on {short}")


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def make_pod(lab: Lab, short: str) -> tuple[int, str]:
    """A host-root pod on the node; (a PID in its network namespace, its IP)."""
    marker = str(100000 + uuid.uuid4().int % 800000)
    name = f"bench-{short}-{marker}"
    manifest = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                           "spec": {"nodeName": lab.host(short).name, "containers": [
                               {"name": "c", "image": "minik8s.local/host-root", "command": ["sleep", marker]}]}})
    lab.host("cp1").run("sh", "-c", f"echo '{manifest}' | {KUBECTL} --kubeconfig /etc/minik8s/admin.conf apply -f -")
    ip = wait_for(lambda: kubectl(lab, "get", "pod", name, "-o", "jsonpath={.status.podIP}").strip(), timeout=180,
                  what=f"{name}'s IP")
    return pod_pid(lab, short, f"sleep {marker}"), ip


def measure(src: list[str], dst: list[str], ip: str, mode: str, arg: float) -> list[float]:
    rx = subprocess.Popen([*dst, sys.executable, "-c", RECEIVER, ip, mode], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None and rx.stdout.readline().strip() == "listening"
        r = subprocess.run([*src, sys.executable, "-c", SENDER, ip, mode, str(arg)], capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return [float(x) for x in r.stdout.split()]
    finally:
        rx.wait(30)


def pair(label: str, src: list[str], dst: list[str], ip: str, args) -> dict[str, float]:
    gbits, p50s = [], []
    for _ in range(args.rounds):
        gbits.append(measure(src, dst, ip, "stream", args.seconds)[0] * 8 / 1e9)
        p50s.append(measure(src, dst, ip, "rr", args.round_trips)[0] * 1e6)
    out = {"gbit": statistics.median(gbits), "p50": statistics.median(p50s)}
    print(f"  {label:<44} {out['gbit']:6.2f} Gbit/s   round trip p50 {out['p50']:6.0f} us", flush=True)
    return out


def ns_of_host(h: Host) -> list[str]:
    return ["nsenter", "-t", str(h.init_pid), "-n"]


def ns_of_pid(pid: int) -> list[str]:
    return ["nsenter", "-t", str(pid), "-n"]


def ratio(label: str, pod: dict[str, float], host: dict[str, float]) -> None:
    print(f"  {label:<44} throughput {pod['gbit'] / host['gbit']:.2f}x   "
          f"round trip p50 {pod['p50'] / host['p50']:.2f}x", flush=True)


def reset_all(lab: Lab, order: list[str]) -> None:
    for s in order:
        lab.host(s).ssh(f"{MINIK8S} reset --force", timeout=300)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--round-trips", type=int, default=2000)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("error: needs root (the lab's namespaces)", file=sys.stderr)
        return 1
    cps, workers = ["cp1", "cp2", "cp3"], ["w1", "w2", "w3"]
    lab = Lab(cps + ["w1", "w2"], behind_router=["w3"])
    try:
        lab.start()
        print("bring-up (vxlan), wall time of each command:", flush=True)
        for k, v in bring_up(lab, cps, workers, "vxlan").items():
            print(f"  {k:<44} {v:6.1f} s", flush=True)

        print("pod to pod (vxlan) against host to host:", flush=True)
        (w1pod, _), (w2pod, w2ip), (w3pod, w3ip) = (make_pod(lab, s) for s in workers)
        w1, w2, w3 = (lab.host(s) for s in workers)
        h12 = pair("w1 -> w2 host to host", ns_of_host(w1), ns_of_host(w2), w2.ip, args)
        v12 = pair("w1 -> w2 pod to pod, vxlan", ns_of_pid(w1pod), ns_of_pid(w2pod), w2ip, args)
        h13 = pair("w1 -> w3 host to host (router)", ns_of_host(w1), ns_of_host(w3), w3.ip, args)
        v13 = pair("w1 -> w3 pod to pod, vxlan (router)", ns_of_pid(w1pod), ns_of_pid(w3pod), w3ip, args)

        print("failover (writes through w1's node-local load balancer):", flush=True)
        leader = etcd_leader(lab, cps)
        failover(lab, w1, f"etcd leader ({leader.name}) host crash", leader.crash)
        survivors = [s for s in cps if lab.host(s) is not leader]
        api_victim = lab.host(survivors[0])
        failover(lab, w1, f"API server of {api_victim.name} killed",
                 lambda: api_victim.kill_matching(r"cluster\.cli apiserver( |$)"))
        probe = f"import socket; socket.create_connection(('{api_victim.ip}', 6443), 2)"
        wait_for(lambda: api_victim.run("python3", "-c", probe, check=False).returncode == 0, timeout=120,
                 what="the API server restarted")
        leader_failover(lab, survivors, "kube-scheduler", r"cluster\.cli scheduler( |$)")
        leader_failover(lab, survivors, "kube-controller-manager", r"cluster\.cli controller-manager( |$)")

        reset_all(lab, ["w3", "w2", "w1", "cp3", "cp2", "cp1"])
        print("bring-up (host-gw; cp1, w1, w2):", flush=True)
        for k, v in bring_up(lab, ["cp1"], ["w1", "w2"], "host-gw").items():
            print(f"  {k:<44} {v:6.1f} s", flush=True)
        (g1pod, _), (g2pod, g2ip) = (make_pod(lab, s) for s in ["w1", "w2"])
        # host to host again beside it: single-connection figures drift over a run
        g12h = pair("w1 -> w2 host to host", ns_of_host(w1), ns_of_host(w2), w2.ip, args)
        g12 = pair("w1 -> w2 pod to pod, host-gw", ns_of_pid(g1pod), ns_of_pid(g2pod), g2ip, args)
        print("ratios, pod to pod against host to host (same run, same phase):", flush=True)
        ratio("host-gw, w1 -> w2 (target >= 0.8x)", g12, g12h)
        ratio("vxlan, w1 -> w2", v12, h12)
        ratio("vxlan across the router, w1 -> w3", v13, h13)
        reset_all(lab, ["w2", "w1", "cp1"])
    finally:
        lab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
