"""Services benchmark: prints figures.

On one `minik8s up --nodes 3` cluster (root), with the per-node proxies and the cluster
DNS that `up` runs:

1. Time to program 1,000 Services from scratch. 1,000 Services without selectors, each
   with one EndpointSlice of 10 ready endpoints (addresses from 198.18.0.0/15, the
   benchmarking range, never contacted: kube-proxy's scale tests use such endpoints
   too, since the proxy programs addresses, not pods). Then every node's proxy table is
   deleted and its proxy killed; the supervisor restarts it, and the figure is from the
   kill to the last Service's rules live on every node (its last endpoint's chain in
   the node's proxy table: see "Observing" below).
2. Network programming latency, Kubernetes' SLI, at 1,000 Services x 10 endpoints: an
   EndpointSlice of a random Service gets one endpoint replaced by a new address; from
   just before that write to the new address live in every node's rules. p50, p99, max
   over `--changes` changes, one at a time, each after a random pause of 0 to 2 s (so
   they meet the proxy's 1 s --min-sync-period at random phases, as a trickle of
   changes does). Target p99 <= 1 s (Kubernetes' SLO: 30 s).
   The proxies' mean partial sync meanwhile is printed too (their
   kubeproxy_sync_partial_proxy_rules_duration_seconds).
   The proxies' own `kubeproxy_network_programming_duration_seconds` is not used: it
   starts from the EndpointSlice controller's trigger time, which hand-written slices
   do not have, and its buckets are coarser than the figure.
3. Cluster DNS with a warm cache: UDP A queries for the 1,000 Services' names, paced at
   `--dns-rate` per second for `--dns-seconds` from node-1's network namespace to the
   kube-dns ClusterIP (10.96.0.10, so through the proxy's DNAT), with bench/dns.py's
   receiver; queries/s answered, p50, p99, lost. Target p99 <= 5 ms at 1,000 q/s.
4. Connection rate through a ClusterIP against the pod IP directly: a pod on node-2
   that accepts, writes one byte and closes after the client has; a client in node-1's
   network namespace opens connections one after another, alternating rounds against
   the pod IP and the Service's ClusterIP. Prints both rates and their ratio (median of
   the rounds), and how many connections failed. Target >= 0.9x.

Observing: an endpoint is live on a node when its chain (`endpoint-...__<ip>/<port>`)
is in the node's table: the proxy creates it in the same nft transaction that adds it
to the Service's dispatch chain, and the bench never reuses an address. Each node is
asked by a helper process in its network namespace (this script, `--chain-probe`) with
one netlink get of that chain, well under a millisecond; the bench asks the three
nodes, pauses 5 ms, and asks again (the figures' resolution: about 6 ms). It does not
run `nft list chain`: nft reads every chain of the table first (about 55 ms of CPU at
1,000 Services x 10 endpoints), and polling that in a loop on three nodes took most of
one of the machine's two cores from the proxies being measured (the figures before
2026-12-05 09:20 were measured that way).

The cluster gets its own temporary state dir, port and address ranges, and is taken
down at the end. Needs root, and the proxies and DNS in `minik8s up`.

Run: .venv/bin/python -m bench.services [--services 1000] [--endpoints 10] [--changes 100]
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.cluster import machine, minik8s, pct  # noqa: E402
from cluster import host  # noqa: E402
from cluster.bringup import admin_tls, read_json, status_path  # noqa: E402
from cluster.state import ClusterConfig  # noqa: E402
from kubelet.images import HOST_ROOT_IMAGE  # noqa: E402
from proxy.rules import TABLE, _name  # noqa: E402
from tests.procs import free_port, wait_for  # noqa: E402
from tests.test_cluster_network import unique_cidrs  # noqa: E402

NS = "/api/v1/namespaces/default"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
FAKE = ipaddress.ip_address("198.18.0.1")
CLUSTER_DNS = "10.96.0.10"


# -- observing the rules -------------------------------------------------------------------

def endpoint_chain(i: int, ip: str) -> str:
    """The name of bench-i's chain for endpoint `ip` in the proxy's table (proxy/rules.py
    names it). The proxy creates it in the same transaction that puts it in the
    Service's dispatch chain (its numgen map), and the bench never reuses an address, so
    the chain being there means the endpoint is live."""
    return _name("endpoint-", f"default/bench-{i}/tcp/http__{ip}/8080")


class Probe:
    """Asks one node's kernel whether a chain is in the proxy's table: a helper process
    in the node's network namespace (this script, `--chain-probe`) that does one
    netlink NFT_MSG_GETCHAIN per question (well under a millisecond). Not `nft list
    chain`: nft reads every chain of the table first (about 55 ms of CPU at 1,000
    Services x 10 endpoints), and a bench polling that in a loop on three nodes takes
    most of a core from the proxies it measures."""

    def __init__(self, netns: str):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "bench.services", "--chain-probe"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def has(self, chain: str) -> bool:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(chain + "\n")
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the chain probe exited")
        return answer.strip() == "1"

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def chain_probe() -> None:
    """The helper behind Probe: chain names in on stdin, "1" (there) or "0" out."""
    from pyroute2.netlink import NLM_F_REQUEST
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_GETCHAIN, NFTSocket, nft_chain_msg
    sock = NFTSocket()
    for line in sys.stdin:
        msg = nft_chain_msg()
        msg["attrs"] = [("NFTA_CHAIN_TABLE", TABLE), ("NFTA_CHAIN_NAME", line.strip())]
        try:
            there = bool(sock.request_get(msg, NFT_MSG_GETCHAIN, NLM_F_REQUEST))
        except NetlinkError:   # ENOENT: no such chain (or table)
            there = False
        print("1" if there else "0", flush=True)


POLL_PAUSE = 0.005   # between rounds of questions: the figures' resolution, with the probe's


def live_everywhere(probes: list[Probe], chain: str, *, timeout: float = 120) -> float:
    """Poll every node until `chain` is in its table; the monotonic time the last one
    had it."""
    pending = list(probes)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [p for p in pending if not p.has(chain)]
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{chain} not live on {len(pending)} nodes after {timeout} s")
            time.sleep(POLL_PAUSE)
    return time.monotonic()


# -- the objects -----------------------------------------------------------------------------

def endpoint_ip(n: int) -> str:
    return str(FAKE + n)


def service(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"bench-{i}"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoint_slice(i: int, ips: list[str]) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"bench-{i}", "labels": {"kubernetes.io/service-name": f"bench-{i}",
                                                          "endpointslice.kubernetes.io/managed-by": "bench"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False}}
                          for ip in ips]}


async def create_all(api_url: str, verify, objs: list[tuple[str, dict]], *, parallel: int = 20) -> None:
    async with httpx.AsyncClient(base_url=api_url, verify=verify, timeout=60) as http:
        sem = asyncio.Semaphore(parallel)

        async def one(path: str, obj: dict) -> None:
            async with sem:
                r = await http.post(path, json=obj)
                if r.status_code != 201:
                    raise SystemExit(f"create {obj['metadata']['name']}: {r.status_code} {r.text}")
        await asyncio.gather(*(one(p, o) for p, o in objs))


# -- clients run inside node-1's network namespace (this script, re-run under `ip netns exec`)

def connect_client(ip: str, port: int, count: int) -> None:
    """`count` connections one after another, each reading the one byte; the time, and
    how many failed (refused or reset: counted, not retried)."""
    failed = 0
    start = time.perf_counter()
    for _ in range(count):
        try:
            with socket.create_connection((ip, port), timeout=5) as s:
                s.recv(1)
        except ConnectionError:
            failed += 1
    print(json.dumps({"seconds": time.perf_counter() - start, "failed": failed}))


def dns_client(server: str, names: list[str], rate: int, seconds: float) -> None:
    from bench.dns import load
    proto, total, elapsed = asyncio.run(load(53, names, rate=rate, seconds=seconds, host=server))
    print(json.dumps({"latencies": proto.latencies, "total": total, "elapsed": elapsed}))


def in_node(cfg: ClusterConfig, node: str, *argv: str, timeout: float = 300) -> dict:
    r = subprocess.run(["ip", "netns", "exec", cfg.netns(node), sys.executable, "-m", "bench.services", *argv],
                       capture_output=True, text=True, timeout=timeout,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if r.returncode != 0:   # an Exception, so that wait_for polls on through it
        raise RuntimeError(f"client in {node} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- the figures -----------------------------------------------------------------------------

def from_scratch(cfg: ClusterConfig, netnses: list[str], probes: list[Probe], last: int, last_ip: str) -> float:
    """Delete each node's proxy table and kill its proxy; seconds until the restarted
    proxies have every Service's rules live again (one transaction: the last Service's
    chain stands for all)."""
    comps = read_json(status_path(cfg))["components"]
    proxies = [comps[f"kube-proxy-{n}"] for n in cfg.node_names()]
    for c, netns in zip(proxies, netnses):
        host.kill(c["pid"], c["start"], signal.SIGSTOP)   # no rewrite between the delete and the kill
        subprocess.run(["ip", "netns", "exec", netns, "nft", "delete", "table", "ip", TABLE], check=True)
    assert not any(p.has(endpoint_chain(last, last_ip)) for p in probes)
    t0 = time.monotonic()
    for c in proxies:
        host.kill(c["pid"], c["start"], signal.SIGKILL)
    return live_everywhere(probes, endpoint_chain(last, last_ip), timeout=300) - t0


def sync_seconds(netnses: list[str]) -> list[tuple[float, float]]:
    """Each node's proxy's partial syncs so far: (seconds summed, count), from its
    kubeproxy_sync_partial_proxy_rules_duration_seconds at 127.0.0.1:10249."""
    out = []
    for ns in netnses:
        text = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "http://127.0.0.1:10249/metrics"],
                              capture_output=True, text=True, timeout=30).stdout
        values = dict(line.split()[:2] for line in text.splitlines()
                      if line.startswith("kubeproxy_sync_partial_proxy_rules_duration_seconds_"))
        out.append((float(values.get("kubeproxy_sync_partial_proxy_rules_duration_seconds_sum", 0)),
                    float(values.get("kubeproxy_sync_partial_proxy_rules_duration_seconds_count", 0))))
    return out


def programming_latency(api: httpx.Client, probes: list[Probe], services: int, endpoints: int,
                        changes: int) -> list[float]:
    rng = random.Random(1)
    current = {i: [endpoint_ip(i * endpoints + j) for j in range(endpoints)] for i in range(services)}
    fresh = services * endpoints
    out = []
    for _ in range(changes):
        # Changes arrive at random, not just after the last sync: each one waits a
        # uniform 0 to 2 s first, so the proxy's 1 s --min-sync-period bites as often
        # as it would under a steady trickle of changes (back to back, every change
        # would land just after a sync and wait out the whole period).
        time.sleep(rng.uniform(0, 2))
        i = rng.randrange(services)
        ips = current[i]
        ips[rng.randrange(endpoints)] = new = endpoint_ip(fresh)
        fresh += 1
        t0 = time.monotonic()
        r = api.patch(f"{SLICES}/bench-{i}", json={"endpoints": endpoint_slice(i, ips)["endpoints"]},
                      headers={"content-type": "application/merge-patch+json"})
        r.raise_for_status()
        out.append(live_everywhere(probes, endpoint_chain(i, new)) - t0)
    return out


# Writes one byte, then waits for the client to close first, so TIME_WAIT stays on the
# client's side. (A server closing first leaves its TIME_WAIT sockets under tuples that
# masquerading's random source ports soon reuse: the SYN then meets a stale socket and
# waits out a 1 s retransmission, which measures that collision, not the proxy.)
ACCEPTOR = ("import socket\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('', 9000)); s.listen(1024)\n"
            "while True:\n"
            "    c, _ = s.accept(); c.send(b'x'); c.recv(1); c.close()\n")


def connection_rates(cfg: ClusterConfig, api: httpx.Client, rounds: int,
                     count: int) -> tuple[float, float, int, int]:
    api.post(f"{NS}/pods", json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "acceptor", "labels": {"app": "acceptor"}},
        "spec": {"nodeName": "node-2", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "a", "image": HOST_ROOT_IMAGE, "command": ["python3", "-c", ACCEPTOR],
                                 "ports": [{"containerPort": 9000}]}]}}).raise_for_status()
    svc = api.post(f"{NS}/services", json={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "acceptor"},
        "spec": {"selector": {"app": "acceptor"}, "ports": [{"port": 9000, "targetPort": 9000}]}})
    svc.raise_for_status()
    cluster_ip = svc.json()["spec"]["clusterIP"]
    pod_ip = wait_for(lambda: api.get(f"{NS}/pods/acceptor").json()["status"].get("podIP"), timeout=120,
                      what="the acceptor pod's IP")
    wait_for(lambda: in_node(cfg, "node-1", "--connect-client", cluster_ip, "9000", "1", timeout=10)["failed"] == 0,
             timeout=60, what="the acceptor through its ClusterIP")
    direct, through = [], []
    failed = [0, 0]
    for _ in range(rounds):
        for i, (ip, rates) in enumerate(((pod_ip, direct), (cluster_ip, through))):
            r = in_node(cfg, "node-1", "--connect-client", ip, "9000", str(count))
            rates.append(count / r["seconds"])
            failed[i] += r["failed"]
    return statistics.median(direct), statistics.median(through), failed[0], failed[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--dns-rate", type=int, default=1000)
    ap.add_argument("--dns-seconds", type=float, default=10.0)
    ap.add_argument("--connect-rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=2000)
    # the clients this script runs inside a node's network namespace
    ap.add_argument("--connect-client", nargs=3, metavar=("IP", "PORT", "COUNT"))
    ap.add_argument("--dns-client", nargs=3, metavar=("SERVER", "RATE", "SECONDS"))
    ap.add_argument("--chain-probe", action="store_true")
    args = ap.parse_args()
    if args.chain_probe:
        return chain_probe()
    if args.connect_client:
        ip, port, count = args.connect_client
        return connect_client(ip, int(port), int(count))
    if args.dns_client:
        server, rate, seconds = args.dns_client
        names = [f"bench-{i}.default.svc.cluster.local." for i in range(args.services)]
        return dns_client(server, names, int(rate), float(seconds))
    if os.geteuid() != 0:
        raise SystemExit("bench/services.py needs root (the linux runtime, nft in the nodes' namespaces)")

    state = tempfile.mkdtemp(prefix="minik8s-bench-")
    probes: list[Probe] = []
    node_cidr, cluster_cidr = unique_cidrs()
    print(f"Services benchmark, {time.strftime('%Y-%m-%d')}, {machine()}")
    try:
        minik8s("up", "--nodes", "3", "--state-dir", state, "--port", str(free_port()),
                "--node-cidr", node_cidr, "--cluster-cidr", cluster_cidr)
        cfg = ClusterConfig.load(state)
        tls = admin_tls(cfg)
        netnses = [cfg.netns(n) for n in cfg.node_names()]
        probes += [Probe(ns) for ns in netnses]
        api = httpx.Client(base_url=cfg.api_url, verify=tls, timeout=60)
        n, k = args.services, args.endpoints
        t0 = time.monotonic()
        asyncio.run(create_all(cfg.api_url, tls, [(f"{NS}/services", service(i)) for i in range(n)]))
        asyncio.run(create_all(cfg.api_url, tls, [
            (SLICES, endpoint_slice(i, [endpoint_ip(i * k + j) for j in range(k)])) for i in range(n)]))
        created = time.monotonic() - t0
        last_ip = endpoint_ip(n * k - 1)
        live_everywhere(probes, endpoint_chain(n - 1, last_ip), timeout=600)
        print(f"{n} Services x {k} endpoints created in {created:.1f} s, live on every node "
              f"{time.monotonic() - t0:.1f} s after the first create")

        scratch = from_scratch(cfg, netnses, probes, n - 1, last_ip)
        print(f"programming {n} Services x {k} endpoints from scratch (proxies killed, tables deleted; "
              f"to the last rule live on all 3 nodes): {scratch:.2f} s")

        syncs0 = sync_seconds(netnses)
        lat = programming_latency(api, probes, n, k, args.changes)
        syncs = [((s1 - s0) / (c1 - c0) if c1 > c0 else 0.0)
                 for (s0, c0), (s1, c1) in zip(syncs0, sync_seconds(netnses))]
        print(f"network programming latency at {n} Services x {k} endpoints, {len(lat)} EndpointSlice "
              f"changes: p50 {pct(lat, 50) * 1000:.0f} ms, p99 {pct(lat, 99) * 1000:.0f} ms, "
              f"max {max(lat) * 1000:.0f} ms (target p99 <= 1 s; SLO 30 s); the proxies' partial "
              f"syncs meanwhile took {', '.join(f'{x * 1000:.0f}' for x in syncs)} ms on average")

        r = in_node(cfg, "node-1", "--services", str(n), "--dns-client", CLUSTER_DNS, str(args.dns_rate),
                    str(args.dns_seconds), timeout=args.dns_seconds + 120)
        dl = sorted(r["latencies"])
        if dl:
            print(f"cluster DNS through {CLUSTER_DNS}, warm cache: offered {args.dns_rate} q/s for "
                  f"{args.dns_seconds:g} s; answered {len(dl) / r['elapsed']:,.0f} q/s; "
                  f"p50 {pct(dl, 50) * 1000:.2f} ms, p99 {pct(dl, 99) * 1000:.2f} ms (target <= 5 ms), "
                  f"max {dl[-1] * 1000:.2f} ms; lost {r['total'] - len(dl)}")
        else:
            print(f"cluster DNS through {CLUSTER_DNS}: no answers")

        direct, through, failed_direct, failed_through = connection_rates(
            cfg, api, args.connect_rounds, args.connections)
        print(f"connections/s from node-1 to a pod on node-2: {direct:,.0f} to the pod IP, {through:,.0f} "
              f"through the ClusterIP, {through / direct:.2f}x (target >= 0.9x; medians of "
              f"{args.connect_rounds} rounds of {args.connections}); failed (refused or reset): "
              f"{failed_direct} direct, {failed_through} through the ClusterIP; "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        for p in probes:
            p.close()
        subprocess.run([sys.executable, "-m", "cluster.cli", "down", "--purge", "--state-dir", state],
                       capture_output=True, timeout=300)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
