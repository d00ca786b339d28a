"""The node-local API server load balancer (cluster.apiserverlb) in front of two real
API servers sharing one etcd: clients, informers and watches through it carry on when
either server is killed, and see exactly the data the servers hold."""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys

import httpx
import pytest

from client.informer import Informer
from client.rest import Client
from client.watch import Watch
from cluster.host import free_port
from machinery import errors
from tests.procs import APIServer, Component, Etcd, wait_for


class Pair:
    """etcd, API servers a and b on it, and a balancer in front of both."""

    def __init__(self):
        self.etcd = Etcd().start()
        self.a = APIServer(self.etcd.url).start()
        self.b = APIServer(self.etcd.url).start()
        self.lb_port = free_port()
        self.lb = self.start_lb(f"127.0.0.1:{self.a.port},127.0.0.1:{self.b.port}")

    def start_lb(self, servers: str, *flags: str) -> Component:
        lb = Component("apiserver-lb", "--listen", f"127.0.0.1:{self.lb_port}", "--servers", servers,
                       "--health-interval", "0.2", *flags).start()
        wait_for(lambda: self.through_lb().get("/readyz").status_code == 200, what="the balancer")
        return lb

    def through_lb(self) -> httpx.Client:
        return httpx.Client(base_url=f"https://127.0.0.1:{self.lb_port}", verify=self.a.admin_tls(), timeout=10)

    def connection(self):
        return dataclasses.replace(self.a.connection(), server=f"https://127.0.0.1:{self.lb_port}")

    def stop(self):
        self.lb.stop()
        for s in (self.a, self.b):
            s.stop()
        self.etcd.stop()


@pytest.fixture
def pair():
    p = Pair()
    try:
        yield p
    finally:
        p.stop()


async def _namespace(client: Client) -> str:
    ns = await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"generateName": "lb-"}})
    return ns["metadata"]["name"]


async def _create(client: Client, ns: str, name: str) -> None:
    """Create, retrying what a dropped connection leaves unknown: AlreadyExists then
    means our earlier attempt was applied."""
    for _ in range(50):
        try:
            await client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                 "data": {"k": name}}, namespace=ns)
            return
        except errors.AlreadyExists:
            return
        except (httpx.TransportError, errors.APIError) as e:
            if isinstance(e, errors.APIError) and e.code < 500:
                raise
            await asyncio.sleep(0.1)  # the balancer marks the dead server at the next dial
    raise AssertionError(f"could not create {name} through the balancer")


async def _until(cond, what: str, timeout: float = 30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_informer_through_the_balancer_survives_a_killed_server(pair):
    async with Client(pair.connection()) as client:
        ns = await _namespace(client)
        for i in range(3):
            await _create(client, ns, f"before-{i}")
        inf = Informer(client, "configmaps", namespace=ns)
        inf.start()
        try:
            assert await inf.wait_for_sync(timeout=30)
            pair.a.proc.kill()  # by PID, as a crash: its connections die with it
            pair.a.proc.wait()
            for i in range(3):
                await _create(client, ns, f"after-{i}")
            await client.delete("configmaps", "before-0", namespace=ns)

            async def truth():
                lst = await client.list("configmaps", namespace=ns)
                return {(o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in lst["items"]}
            want = await truth()
            assert {n for n, _ in want} == {"before-1", "before-2", "after-0", "after-1", "after-2"}

            def cached():
                return {(o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in inf.store.list()}
            await _until(lambda: cached() == want, "the informer to match the server")
        finally:
            await inf.stop()


async def test_watch_through_the_balancer_resumes_on_either_server(pair):
    async with Client(pair.connection()) as client:
        ns = await _namespace(client)
        start = (await client.list("configmaps", namespace=ns))["metadata"]["resourceVersion"]
        seen: list[tuple[str, str]] = []

        async def watch():
            async for ev in Watch(client, "configmaps", namespace=ns, resource_version=start):
                if ev.type != "BOOKMARK":
                    seen.append((ev.type, ev.object["metadata"]["name"]))
        task = asyncio.create_task(watch())
        try:
            await _create(client, ns, "one")
            await _until(lambda: ("ADDED", "one") in seen, "the first event")
            # Kill each server in turn, so the watch certainly loses its server once.
            for victim, name in ((pair.a, "two"), (pair.b, "three")):
                victim.proc.kill()
                victim.proc.wait()
                await _create(client, ns, name)
                await _until(lambda n=name: ("ADDED", n) in seen, f"the event for {name}")
                victim.start()
            assert seen == [("ADDED", "one"), ("ADDED", "two"), ("ADDED", "three")]
        finally:
            task.cancel()


def test_a_hung_server_loses_its_connections(pair, tmp_path):
    """SIGSTOP leaves the kernel accepting on the server's port, so only /readyz (the
    check with a kubeconfig) sees it; its open watch is closed and resumes elsewhere."""
    kc = pair.a.write_kubeconfig(tmp_path / "kc")
    pair.lb.stop()
    pair.lb = pair.start_lb(f"127.0.0.1:{pair.a.port},127.0.0.1:{pair.b.port}", "--kubeconfig", kc)

    async def run():
        async with Client(pair.connection()) as client:
            ns = await _namespace(client)
            start = (await client.list("configmaps", namespace=ns))["metadata"]["resourceVersion"]
            seen: list[str] = []

            async def watch():
                async for ev in Watch(client, "configmaps", namespace=ns, resource_version=start):
                    if ev.type == "ADDED":
                        seen.append(ev.object["metadata"]["name"])
            task = asyncio.create_task(watch())
            try:
                for victim, name in ((pair.a, "one"), (pair.b, "two")):
                    await _create(client, ns, name + "-before")
                    await _until(lambda n=name: n + "-before" in seen, "the event before")
                    victim.proc.send_signal(signal.SIGSTOP)
                    try:
                        await _create(client, ns, name)
                        await _until(lambda n=name: n in seen, f"{name} through the other server")
                    finally:
                        victim.proc.send_signal(signal.SIGCONT)
                assert seen == ["one-before", "one", "two-before", "two"]
            finally:
                task.cancel()
    asyncio.run(run())


def test_servers_follow_the_kubernetes_endpoints(pair, tmp_path):
    """Seeded with server a alone, the balancer learns b from default/kubernetes (both
    servers keep a lease there) and carries on through b when a dies."""
    with pair.a.client() as c:
        def both():
            ep = c.get("/api/v1/namespaces/default/endpoints/kubernetes").json()
            return {p["port"] for sub in ep.get("subsets") or [] for p in sub["ports"]} == {pair.a.port, pair.b.port}
        wait_for(both, timeout=30, interval=0.2, what="both servers in the kubernetes Endpoints")
    pair.lb.stop()
    pair.lb = pair.start_lb(f"127.0.0.1:{pair.a.port}", "--kubeconfig",
                            pair.a.write_kubeconfig(tmp_path / "kc"))
    wait_for(lambda: "servers: " in pair.lb.log(), what="the balancer to read the Endpoints")
    pair.a.proc.kill()
    pair.a.proc.wait()
    with pair.through_lb() as c:
        wait_for(lambda: c.get("/api/v1/namespaces/default/configmaps").status_code == 200,
                 timeout=30, what="the balancer to reach b")
    pair.a.start()  # stopped by the fixture


def test_bad_flags_are_one_line():
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "apiserver-lb", "--servers", "a:b"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
