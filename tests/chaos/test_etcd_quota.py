"""etcd's space quota runs out under the API server, and comes back.

An etcd of the test's own with a 4 MiB ``--quota-backend-bytes`` is filled through the
API by rewriting one ConfigMap (history piles up, as in a real cluster whose compactor
fell behind) until etcd raises its NOSPACE alarm. Then:
- every write is answered with a clear Status (507 InsufficientStorage, etcd's own
  "database space exceeded" message): not a generic 500, and the API server lives on;
- reads (get and list) keep working and return the last acknowledged value, and the
  server stays ready (its etcd check is a read);
- after compaction, defragmentation and disarming the alarm (etcd's maintenance API, as
  ``etcdctl compact/defrag/alarm disarm`` do) writes resume.

Takes about 15 s (an etcd and an API server of its own); one scenario, at most 200 writes.
`figures()` runs it once for bench/chaos.py and returns what it saw.
"""
import asyncio
import contextlib
import os
import time

import pytest
from aetcd import rpc

from tests.procs import APIServer, Etcd, wait_for

pytestmark = pytest.mark.chaos

QUOTA = 4 * 1024 * 1024
CHUNK = 256 * 1024


@contextlib.contextmanager
def small_quota_cluster():
    """An etcd with a 4 MiB quota and an API server on it, stopped (and the etcd's data
    dir removed by Etcd.stop) whatever happens."""
    etcd = Etcd(args=("--quota-backend-bytes", str(QUOTA))).start()
    try:
        server = APIServer(etcd.url).start()
        try:
            yield etcd, server
        finally:
            server.stop()
    finally:
        etcd.stop()


@pytest.fixture
def full_cluster():
    with small_quota_cluster() as c:
        yield c


def figures() -> dict[str, object]:
    """For bench/chaos.py: the scenario once, with what it saw."""
    with small_quota_cluster() as (etcd, server):
        seen: dict[str, object] = {}
        test_quota_exceeded_refuses_writes_clearly_keeps_reads_and_recovers((etcd, server), seen)
        return {f"etcd quota: {k}": v for k, v in seen.items()}


def configmap(name: str, data: str, rv: str | None = None) -> dict:
    meta = {"name": name, **({"resourceVersion": rv} if rv else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"blob": data}}


async def _maintain(url: str, *, disarm: bool) -> list:
    """Compact to the current revision, defragment, and (if asked) disarm every alarm;
    the alarms that were active before."""
    channel = rpc.insecure_channel(url.removeprefix("http://"))
    try:
        kv, maint = rpc.KVStub(channel), rpc.MaintenanceStub(channel)
        alarms = (await maint.Alarm(rpc.AlarmRequest(action=rpc.AlarmRequest.GET))).alarms
        if disarm:
            head = (await kv.Range(rpc.RangeRequest(key=b"\0", range_end=b"\0", limit=1))).header
            await kv.Compact(rpc.CompactionRequest(revision=head.revision, physical=True))
            await maint.Defragment(rpc.DefragmentRequest())
            for a in alarms:
                await maint.Alarm(rpc.AlarmRequest(action=rpc.AlarmRequest.DEACTIVATE,
                                                   memberID=a.memberID, alarm=a.alarm))
        return list(alarms)
    finally:
        await channel.close()


def test_quota_exceeded_refuses_writes_clearly_keeps_reads_and_recovers(full_cluster, seen=None):
    etcd, server = full_cluster
    seen = {} if seen is None else seen
    path = "/api/v1/namespaces/default/configmaps"
    with server.client() as http:
        r = http.post(path, json=configmap("filler", "x"))
        assert r.status_code == 201, r.text
        rv, last, refused, acknowledged = r.json()["metadata"]["resourceVersion"], "x", None, 1
        for _ in range(200):
            data = os.urandom(CHUNK // 2).hex()  # random: nothing for bbolt to share
            r = http.put(f"{path}/filler", json=configmap("filler", data, rv))
            if r.status_code != 200:
                refused = r
                break
            rv, last = r.json()["metadata"]["resourceVersion"], data
            acknowledged += 1
        assert refused is not None, "a 4 MiB quota took 200 writes of 256 KiB"
        seen["writes acknowledged before NOSPACE"] = acknowledged
        seen["refused write"] = f"{refused.status_code} {refused.json().get('reason')}"
        assert refused.status_code == 507, refused.text
        status = refused.json()
        assert (status["kind"], status["reason"]) == ("Status", "InsufficientStorage")
        assert "database space exceeded" in status["message"]
        assert [a.alarm for a in asyncio.run(_maintain(etcd.url, disarm=False))] == [rpc.AlarmType.NOSPACE]

        # Every kind of write is refused the same way; nothing is half-done.
        r = http.post(path, json=configmap("new", "y"))
        assert r.status_code == 507 and r.json()["reason"] == "InsufficientStorage", r.text
        assert http.get(f"{path}/new").status_code == 404
        assert server.alive()
        assert http.get("/readyz").status_code == 200  # etcd answers; only space is short

        # Reads keep working and see the last acknowledged write.
        got = http.get(f"{path}/filler")
        assert got.status_code == 200 and got.json()["data"]["blob"] == last
        listed = http.get(path)
        assert listed.status_code == 200
        assert [i["metadata"]["name"] for i in listed.json()["items"]] == ["filler"]

        assert asyncio.run(_maintain(etcd.url, disarm=True))
        assert asyncio.run(_maintain(etcd.url, disarm=False)) == []

        def writes_again():
            return http.post(path, json=configmap("new", "y")).status_code == 201
        started = time.monotonic()
        wait_for(writes_again, timeout=30, what="writes after compaction, defrag and disarm")
        seen["seconds from disarm to the first write"] = round(time.monotonic() - started, 2)
        assert http.get(f"{path}/filler").json()["data"]["blob"] == last
