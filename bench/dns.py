"""Cluster DNS benchmark: queries/s and latency against `minik8s dns` with a warm cache.

A real etcd, API server and `minik8s dns` (tests.procs); 100 Services are created, the
DNS server is started on a free loopback port, and an open-loop sender paces UDP
queries at `--rate` per second for `--seconds`, cycling over the Services' names (all
answered from the informers' caches: the "warm cache" of the issue's target).
Latency is from send to receipt per query id; a query unanswered within 1 s counts as
lost. Prints achieved queries/s, p50, p99, max, lost. Target: p99 <= 5 ms at 1,000 q/s.

Run: .venv/bin/python -m bench.dns [--rate 1000] [--seconds 10]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import dns.message
import dns.query
import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.procs import APIServer, Component, Etcd, free_port, wait_for  # noqa: E402

SERVICES = 100


class Sender(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []

    def datagram_received(self, data: bytes, addr: object) -> None:
        qid = int.from_bytes(data[:2], "big")
        t0 = self.sent.pop(qid, None)
        if t0 is not None:
            self.latencies.append(time.perf_counter() - t0)


async def load(port: int, names: list[str], *, rate: int, seconds: float,
               host: str = "127.0.0.1") -> tuple[Sender, int, float]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Sender, remote_addr=(host, port))
    wires = [dns.message.make_query(n, "A") for n in names]
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        q = wires[i % len(wires)]
        q.id = i % 65536
        proto.sent[q.id] = time.perf_counter()
        transport.sendto(q.to_wire())
    elapsed = time.perf_counter() - start
    deadline = time.perf_counter() + 1.0
    while proto.sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    transport.close()
    return proto, total, elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    etcd = Etcd().start()
    server = APIServer(etcd.url, plain=True).start()
    dns_proc = None
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(SERVICES):
                r = http.post("/api/v1/namespaces/default/services", json={
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}"},
                    "spec": {"clusterIP": f"10.96.{i // 250}.{i % 250 + 2}", "ports": [{"port": 80}]}})
                assert r.status_code == 201, r.text
        kubeconfig = os.path.join(etcd.dir, "kubeconfig")
        with open(kubeconfig, "w") as f:
            f.write("apiVersion: v1\nkind: Config\n"
                    f"clusters:\n- name: c\n  cluster:\n    server: {server.url}\n"
                    "users:\n- name: u\n  user: {}\n"
                    "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n"
                    "current-context: c\n")
        port = free_port()
        dns_proc = Component("dns", "--kubeconfig", kubeconfig, "--bind-address", "127.0.0.1",
                             "--port", str(port), "--upstream", "127.0.0.1:9", "--metrics-port", "0").start()
        names = [f"svc-{i}.default.svc.cluster.local." for i in range(SERVICES)]
        wait_for(lambda: dns.query.udp(dns.message.make_query(names[-1], "A"), "127.0.0.1", port=port,
                                       timeout=0.5).answer, what="dns server")
        proto, total, elapsed = asyncio.run(load(port, names, rate=args.rate, seconds=args.seconds))
        lat = sorted(proto.latencies)
        if not lat:
            print("no answers")
            return
        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
        print(f"cluster DNS, warm cache: offered {args.rate} q/s for {args.seconds:g} s; answered "
              f"{len(lat) / elapsed:,.0f} q/s; p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms "
              f"(target <= 5 ms), max {lat[-1] * 1000:.2f} ms; lost {total - len(lat)}; "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if dns_proc is not None:
            dns_proc.stop()
        server.stop()
        etcd.stop()


if __name__ == "__main__":
    main()
