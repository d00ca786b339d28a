"""The kubelet's exec endpoint keeps its event loop free (kubelet/server.py): an in-process
kubelet (tests/test_kubelet_sync.py's fixture: the real API server, a real pod in the
Linux runtime) serving its endpoint, and an exec whose exit code the runtime's helper
reports late, as on a loaded node where the helper is scheduled seconds after the
command ended. While that exec waits for its code, the same kubelet answers other
requests. The runtime holds the report until the test lets it go (at most 30 s, which
only a blocked loop would reach). About 10 s.
"""
from __future__ import annotations

import asyncio
import os
import threading
import uuid

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from kubelet.runtime.linux.runtime import LinuxRuntime
from kubelet.server import KubeletServer
from tests.kubelet_diag import pod_report, until
from tests.procs import free_port
from tests.test_kubelet_sync import kubelet  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs a real pod: needs root")

HOLD = 30.0


class LateExitReports(LinuxRuntime):
    """An exec's exit code is given to its first waiter only once `release` is set (or
    HOLD seconds have passed, which `held_out` records)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waiting = threading.Event()  # someone waits for an exec's exit code
        self.release = threading.Event()
        self.held_out = False

    def exec(self, container_id, argv, *, stdin=False):
        proc = super().exec(container_id, argv, stdin=stdin)
        collect = proc.wait

        def wait(timeout=None):
            if not self.release.is_set():
                self.waiting.set()
                if not self.release.wait(HOLD):
                    self.held_out = True
            return collect(timeout)
        proc.wait = wait
        return proc


@pytest.mark.parametrize("kubelet", [LateExitReports], indirect=True)
async def test_the_kubelet_serves_other_requests_while_an_exec_waits_for_its_exit_code(kubelet, ns):
    kl, _clock, client = kubelet
    rt: LateExitReports = kl.runtime
    token, port = "exec-test-" + uuid.uuid4().hex, free_port()
    started = asyncio.Event()
    serving = asyncio.create_task(KubeletServer(kl, token=token).serve("127.0.0.1", port, started=started))
    try:
        await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sh", "namespace": ns},
                             "spec": {"nodeName": kl.node_name, "terminationGracePeriodSeconds": 0,
                                      "containers": [{"name": "c", "image": "busybox",
                                                      "command": ["sleep", "3600"]}]}})

        async def running():
            p = await client.get("pods", "sh", namespace=ns)
            return (p.get("status") or {}).get("phase") == "Running"
        await until(running, 30, "sh Running", report=lambda: pod_report(client, ns, "sh", kubelets=[kl]))
        await asyncio.wait_for(started.wait(), 30)

        url = f"ws://127.0.0.1:{port}/exec/{ns}/sh/c?command=echo&command=hi&stdout=true"
        async with connect(url, subprotocols=["v5.channel.k8s.io"],
                           additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            async def frames() -> list[bytes]:
                got = []
                async for frame in ws:
                    got.append(frame if isinstance(frame, bytes) else frame.encode())
                return got
            reading = asyncio.create_task(frames())

            async def waiting():
                return rt.waiting.is_set()
            await until(waiting, 30, "the exec to wait for its exit code")
            async with httpx.AsyncClient() as h:  # the kubelet's endpoint, not the API server
                assert (await h.get(f"http://127.0.0.1:{port}/healthz", timeout=30)).text == "ok"
            rt.release.set()
            got = await asyncio.wait_for(reading, 30)
        assert not rt.held_out, "the exec's wait for its exit code held the kubelet's event loop"
        assert b"\x01hi\n" in got
        assert orjson.loads(got[-1][1:]) == {"metadata": {}, "status": "Success"}
    finally:
        rt.release.set()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
