"""Slow and flaky API paths: components back off with jitter, recover, and never spin.

Through the fault proxy (tests/chaos/faultproxy.py), each a defect it found or a rule
it keeps:
- the REST client's retries after `Retry-After` are spread at random and never back to
  back; a 503 without it is raised at once (waits recorded on the client's clock);
- a node's lease renewals and status updates are jittered while refused;
- an informer whose WATCH is refused after a good LIST backs off growing, not in a
  tight relist loop;
- the garbage collector's discovery loop outlives a cut connection;
- the fake kubelet retries a pod status write that failed (no later event comes);
- one chaos run (tests/chaos/flaky_run.py): the scheduler, the controller manager and
  a fake kubelet of 3 nodes under 10 % 429, 10 % 503, 3 % cut answers, 10 % delayed
  answers and watches cut every 1-15 events, while a Deployment is created and scaled
  every few seconds; afterwards it converges, every component is still running and
  carries out a new scale, and no component's request rate while the faults ran
  shows a spin.

Time: ~45 s on 2 cores beyond the session's API server: the chaos run ~34 s (30 s of
faults; $MINIK8S_CHAOS_SECONDS lengthens them for a long local run, e.g. 180), the
rest ~10 s.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

import pytest

from client.clock import RealClock
from client.informer import Informer, SharedInformerFactory
from client.kubeconfig import Connection
from client.rest import Client
from cluster import pki as cluster_pki
from controller_manager.controllers.garbagecollector import GarbageCollector, GarbageCollectorOptions
from kubelet.node import Node
from machinery.errors import APIError, TooManyRequests
from tests.chaos.faultproxy import FaultProxy, Faults, rate_per_second
from tests.chaos.flaky_run import flaky_run
from tests.procs import Component, session_pki, wait_for

pytestmark = pytest.mark.chaos

# A spinning component makes hundreds of requests a second; these make a few (a fake
# kubelet of 3 nodes renews 3 leases and 3 statuses every 2 s, plus its pods' status).
MAX_RATE = 20.0


class RecordingClock(RealClock):
    """The real clock, except that sleeps are recorded and not slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def proxy(apiserver):
    with FaultProxy(apiserver.url, session_pki(), seed=7) as p:
        p.listen("client", "admin")
        yield p


def _client(proxy: FaultProxy, clock: RealClock) -> Client:
    pki = session_pki()
    return Client(Connection(server=proxy.urls["client"], ca_file=os.path.join(pki, "ca.crt")), clock=clock)


@pytest.mark.parametrize("retry_after", [0, 1])
async def test_retries_after_retry_after_are_jittered_and_never_back_to_back(proxy, retry_after):
    proxy.set_faults(Faults(p429=1.0, retry_after=retry_after))
    clock = RecordingClock()
    async with _client(proxy, clock) as client:
        with pytest.raises(TooManyRequests):
            await client.get("namespaces", "default")
    assert len(clock.sleeps) == client.max_retries
    assert len([r for r in proxy.records() if r.fault == "429"]) == client.max_retries + 1
    assert all(s > 0 for s in clock.sleeps), clock.sleeps          # Retry-After: 0 does not spin
    assert all(s >= retry_after for s in clock.sleeps), clock.sleeps  # the server's figure is a floor
    assert len(set(clock.sleeps)) == len(clock.sleeps), clock.sleeps  # and the waits are spread


async def test_a_503_without_retry_after_is_raised_at_once(proxy):
    # client-go's rule: a 5xx is retried only when it carries Retry-After (and then only
    # a GET here); the caller's own backoff (informer, work queue) handles the rest.
    proxy.set_faults(Faults(p503=1.0, p503_retry_after=0.0))
    clock = RecordingClock()
    async with _client(proxy, clock) as client:
        with pytest.raises(APIError) as err:
            await client.get("namespaces", "default")
    assert err.value.code == 503
    assert clock.sleeps == [] and len(proxy.records()) == 1


def test_components_back_off_recover_and_do_not_spin_through_a_flaky_api():
    run = flaky_run()
    logs = "\n\n".join(f"--- {k}\n{v}" for k, v in run["logs"].items())
    assert run["alive_after_faults"] == {"scheduler": True, "controller-manager": True, "kubelet": True}, logs
    # The faults happened, to every component, of every kind.
    assert {"429", "503", "cut", "watch-cut", "delay"} <= set(run["faults_injected"]), run["faults_injected"]
    assert all(sum(1 for r in run["records"] if r.listener == c and r.fault) > 0
               for c in ("scheduler", "controller-manager", "kubelet"))
    assert run["converged"], logs
    assert run["rescaled"], logs
    assert run["alive_at_end"] == run["alive_after_faults"], logs
    # A spin is sustained: rates over 5-s windows (start-up's initial lists are a burst).
    for component in ("scheduler", "controller-manager", "kubelet"):
        during = [r for r in run["records"] if r.listener == component and r.at < run["faults_off"]]
        rate = rate_per_second(during, window=5.0)
        assert rate < MAX_RATE, (component, rate, run["max_request_rate"])


def test_the_fake_kubelet_retries_a_failed_pod_status_write(apiserver, http, ns, tmp_path):
    # Nothing else changes the pod after its status write failed: only the kubelet's own
    # requeue (with backoff) makes it Running.
    prefix = "flaky-" + uuid.uuid4().hex[:6]
    with FaultProxy(apiserver.url, session_pki(), seed=3) as proxy:
        kc = str(tmp_path / "kubelet.conf")
        cluster_pki.write_kubeconfig(kc, session_pki(), "admin", cluster_name="flaky",
                                     server=proxy.listen("kubelet", "admin"))
        kubelet = Component("kubelet", "--kubeconfig", kc, "--runtime", "fake", "--nodes", "1",
                            "--node-name", prefix, "--healthz-port", "0").start()
        try:
            wait_for(lambda: http.get(f"/api/v1/nodes/{prefix}-0").status_code == 200, what="the fake node")
            proxy.set_faults(Faults(p503=1.0, p503_retry_after=0.0, only=r"^PATCH .*/pods/p/status\?"))
            r = http.post(f"/api/v1/namespaces/{ns}/pods", json={
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"nodeName": f"{prefix}-0", "containers": [{"name": "c", "image": "busybox"}]}})
            assert r.status_code == 201, r.text
            wait_for(lambda: any(x.fault == "503" for x in proxy.records()), what="a refused status write")
            proxy.set_faults(Faults())
            wait_for(lambda: http.get(f"/api/v1/namespaces/{ns}/pods/p").json()["status"].get("phase")
                     == "Running", timeout=20, what="the pod's status to be written again")
            assert kubelet.alive(), kubelet.log()
        finally:
            kubelet.stop()
            http.delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{prefix}-0")
            http.delete(f"/api/v1/nodes/{prefix}-0")


async def test_node_heartbeats_are_jittered_through_refusals(proxy):
    # A refused lease renewal or status update is tried again a period later, and the
    # periods are stretched at random (JitterUntil's 4 %), so nodes that an outage
    # turned away do not come back in step.
    proxy.set_faults(Faults(p503=1.0, p503_retry_after=0.0))
    clock = RecordingClock()
    async with _client(proxy, RealClock()) as client:
        node = Node(client, "flaky-" + uuid.uuid4().hex[:6], address="127.0.0.1", port=0,
                    capacity={"cpu": "1", "memory": "1Gi", "pods": "10"}, clock=clock,
                    renew_interval=2.0, status_interval=2.0)
        task = asyncio.create_task(node.run())
        try:
            async with asyncio.timeout(30):
                while len(clock.sleeps) < 8:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert all(2.0 <= s <= 2.0 * 1.04 for s in clock.sleeps), clock.sleeps
    assert len(set(clock.sleeps)) == len(clock.sleeps), clock.sleeps
    assert any(r.fault == "503" for r in proxy.records())


async def test_the_garbage_collectors_discovery_outlives_a_cut_connection(proxy):
    # Discovery runs in a loop of its own beside the workers: a connection cut during it
    # (not an APIError) must cost one period, not the loop.
    proxy.set_faults(Faults(p_cut=1.0, only=r"^GET /apis\?"))
    async with _client(proxy, RealClock()) as client:
        factory = SharedInformerFactory(client)
        gc = GarbageCollector(client, factory, options=GarbageCollectorOptions(discovery_period=0.05))
        task = asyncio.create_task(gc._resync_kinds())
        try:
            async with asyncio.timeout(30):
                # every attempt of one discovery's GET cut: the client gives up
                while sum(r.fault == "cut" for r in proxy.records()) <= client.max_retries and not task.done():
                    await asyncio.sleep(0.01)
                proxy.set_faults(Faults())
                cut_at = max(r.at for r in proxy.records() if r.fault == "cut")
                while not task.done() and not any(r.path == "/apis" and not r.fault and r.at > cut_at
                                                  for r in proxy.records()):
                    await asyncio.sleep(0.01)
            assert not task.done(), task.exception()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await factory.stop()


async def test_an_informer_whose_watch_is_refused_backs_off_growing(proxy):
    # The LIST succeeds and the WATCH is refused (RBAC granting list but not watch, say):
    # the informer must not relist in a tight loop because each LIST went well.
    proxy.set_faults(Faults(p_error=1.0, error_code=403, only=r"watch=true"))
    clock = RecordingClock()
    async with _client(proxy, RealClock()) as client:
        inf = Informer(client, "namespaces", clock=clock)
        inf.start()
        try:
            async with asyncio.timeout(30):
                while len(clock.sleeps) < 8:
                    await asyncio.sleep(0.01)
        finally:
            await inf.stop()
    assert any(r.fault == "403" for r in proxy.records())
    waits = clock.sleeps[:8]
    assert waits[-1] > 8 * inf.backoff * 0.5 and waits[-1] > waits[0], waits  # it grows
