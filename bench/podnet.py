"""Pod network benchmark: prints figures.

The lab of tests/test_podnet.py (root): hosts A and B as network namespaces on one bridge
subnet, C on a second subnet behind a router namespace, each with a pod made by the
kubelet's PodNetwork, a real API server and one `minik8s podnet` per host. In one run:

1. host-gw: A's pod to B's pod, against A to B host to host.
2. vxlan: A's pod to B's pod (the tunnel over the same link), and A's pod to C's pod
   (across the router), against A to C host to host.

Per pair: TCP throughput (one connection, a Python sender writing 256 KiB buffers for
`--seconds`, counted by the receiver) and TCP round-trip latency (1-byte request and
answer, `--round-trips` times on one connection, p50 and p99). Each figure is the median
of `--rounds`; the ratios are pod-to-pod against host-to-host measured in the same run.
Python on both ends, so a figure is what one Python connection gets, bounded by the
interpreter on the machine's cores as much as by the network: compare the ratios, not the
absolute numbers, with other tools'. Target: >= 0.8x with host-gw.

Run: sudo .venv/bin/python -m bench.podnet [--seconds 2] [--rounds 3] [--round-trips 2000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.test_podnet import Host, Lab, start, start_server, wait_for  # noqa: E402

RECEIVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9100)); s.listen(); print("listening", flush=True)
mode = sys.argv[2]
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if mode == "stream":
    n, buf = 0, bytearray(1 << 18)
    while (k := c.recv_into(buf)):
        n += k
    c.sendall(str(n).encode())
else:
    while (d := c.recv(1)):
        c.sendall(d)
c.close()
"""

SENDER = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], 9100), timeout=30)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
mode, arg = sys.argv[2], float(sys.argv[3])
if mode == "stream":
    buf = b"x" * (1 << 18)
    start = time.perf_counter(); end = start + arg
    while time.perf_counter() < end:
        c.sendall(buf)
    c.shutdown(socket.SHUT_WR)
    n = int(c.recv(64))
    print(n / (time.perf_counter() - start))
else:
    rtts = []
    for _ in range(int(arg)):
        t = time.perf_counter(); c.sendall(b"x"); c.recv(1); rtts.append(time.perf_counter() - t)
    rtts.sort()
    print(rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)])
"""


def measure(src_ns: str, dst_ns: str, dst_ip: str, mode: str, arg: float) -> list[float]:
    rx = subprocess.Popen(["ip", "netns", "exec", dst_ns, sys.executable, "-c", RECEIVER, dst_ip, mode],
                          stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "listening"
        r = subprocess.run(["ip", "netns", "exec", src_ns, sys.executable, "-c", SENDER, dst_ip, mode, str(arg)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return [float(x) for x in r.stdout.split()]
    finally:
        rx.wait(30)


def pair(label: str, src: tuple[str, str], dst: tuple[str, str], args: argparse.Namespace) -> dict[str, float]:
    """(src netns, _), (dst netns, dst IP): medians of throughput, p50 and p99 round trip."""
    gbits, p50s, p99s = [], [], []
    for _ in range(args.rounds):
        gbits.append(measure(src[0], dst[0], dst[1], "stream", args.seconds)[0] * 8 / 1e9)
        p50, p99 = measure(src[0], dst[0], dst[1], "rr", args.round_trips)
        p50s.append(p50 * 1e6)
        p99s.append(p99 * 1e6)
    out = {"gbit": statistics.median(gbits), "p50": statistics.median(p50s), "p99": statistics.median(p99s)}
    print(f"  {label:<34} {out['gbit']:6.2f} Gbit/s   round trip p50 {out['p50']:6.0f} us  p99 {out['p99']:6.0f} us"
          f"   (throughput rounds {', '.join(f'{g:.2f}' for g in gbits)})", flush=True)
    return out


def ratio(label: str, pod: dict[str, float], host: dict[str, float]) -> None:
    print(f"  {label:<34} throughput {pod['gbit'] / host['gbit']:.2f}x   "
          f"round trip p50 {pod['p50'] / host['p50']:.2f}x", flush=True)


def host_of(h: Host) -> tuple[str, str]:
    return h.ns, h.addr


def pod_of(h: Host) -> tuple[str, str]:
    assert h.pod_ip is not None
    return h.pod_ns, h.pod_ip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--round-trips", type=int, default=2000)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("error: needs root (network namespaces)", file=sys.stderr)
        return 1
    pki = tempfile.mkdtemp(prefix="minik8s-bench-podnet-")
    etcd, server = start_server(pki)
    try:
        lab = Lab(server).build()
        try:
            a, b, c = lab.hosts["a"], lab.hosts["b"], lab.hosts["c"]
            print("host-gw (A and B on one link):", flush=True)
            start(lab, "host-gw")
            wait_for(lambda: b.pod_cidr in a.routes() and a.pod_cidr in b.routes(), what="host-gw routes")
            host_ab = pair("A -> B host to host", host_of(a), host_of(b), args)
            gw_ab = pair("A -> B pod to pod, host-gw", pod_of(a), pod_of(b), args)
            for h in lab.hosts.values():
                h.stop_agent()
                assert h.cleanup_agent().returncode == 0
                h.remove_pod()
                lab.delete_node(h.node)
            print("vxlan:", flush=True)
            start(lab, "vxlan")
            wait_for(lambda: b.pod_cidr in a.routes() and c.pod_cidr in a.routes(), what="vxlan routes")
            vx_ab = pair("A -> B pod to pod, vxlan", pod_of(a), pod_of(b), args)
            host_ac = pair("A -> C host to host (router)", host_of(a), host_of(c), args)
            vx_ac = pair("A -> C pod to pod, vxlan (router)", pod_of(a), pod_of(c), args)
            print("ratios, pod to pod against host to host:", flush=True)
            ratio("host-gw, A -> B", gw_ab, host_ab)
            ratio("vxlan, A -> B", vx_ab, host_ab)
            ratio("vxlan across the router, A -> C", vx_ac, host_ac)
        finally:
            lab.teardown()
    finally:
        server.stop()
        etcd.stop()
        subprocess.run(["rm", "-rf", pki])
    return 0


if __name__ == "__main__":
    sys.exit(main())
