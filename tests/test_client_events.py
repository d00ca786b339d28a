"""The event recorder against the real API server: new events, counted repeats."""
import itertools

import pytest

from client.events import NORMAL, WARNING, EventRecorder
from client.rest import Client
from tests.util import pod


@pytest.fixture
async def client(apiserver):
    async with Client(apiserver.connection()) as c:
        yield c


def ticking():
    """A fake wall clock: each reading is one second later."""
    counter = itertools.count()
    return lambda: f"2030-01-01T00:00:{next(counter):02d}Z"


async def events_for(client, ns, name):
    items = (await client.list("events", namespace=ns,
                               field_selector=f"involvedObject.name={name}"))["items"]
    return sorted(items, key=lambda e: (e["reason"], e["message"]))


async def test_records_events_and_counts_repeats(client, ns):
    p = await client.create(pod("web"), namespace=ns)
    rec = EventRecorder(client, component="test-scheduler", host="node-a", now=ticking())
    for _ in range(3):
        rec.event(p, WARNING, "FailedScheduling", "0/3 nodes are available")
    rec.event(p, NORMAL, "Scheduled", "assigned to node-1")
    rec.event(p, WARNING, "FailedScheduling", "0/4 nodes are available")
    await rec.flush()
    evs = await events_for(client, ns, "web")
    assert [(e["reason"], e["message"], e["count"]) for e in evs] == [
        ("FailedScheduling", "0/3 nodes are available", 3),
        ("FailedScheduling", "0/4 nodes are available", 1),
        ("Scheduled", "assigned to node-1", 1)]
    repeated = evs[0]
    assert repeated["firstTimestamp"] == "2030-01-01T00:00:00Z"
    assert repeated["lastTimestamp"] == "2030-01-01T00:00:02Z"
    assert repeated["type"] == WARNING
    assert repeated["source"] == {"component": "test-scheduler", "host": "node-a"}
    assert repeated["reportingComponent"] == "test-scheduler"
    ref = repeated["involvedObject"]
    assert (ref["kind"], ref["name"], ref["namespace"], ref["uid"], ref["apiVersion"]) == \
        ("Pod", "web", ns, p["metadata"]["uid"], "v1")
    await rec.close()


async def test_a_deleted_event_is_recreated_and_cluster_scoped_objects_use_default(client, ns):
    p = await client.create(pod("db"), namespace=ns)
    rec = EventRecorder(client, component="kubelet")
    first = await rec.emit(p, NORMAL, "Pulled", "image pulled")
    await client.delete("events", first["metadata"]["name"], namespace=ns)
    again = await rec.emit(p, NORMAL, "Pulled", "image pulled")
    assert again["count"] == 1 and again["metadata"]["name"] != first["metadata"]["name"]

    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-" + ns, "uid": "u"}}
    ev = await rec.emit(node, NORMAL, "NodeReady", "ready")
    assert ev["metadata"]["namespace"] == "default" and "namespace" not in ev["involvedObject"]
    await client.delete("events", ev["metadata"]["name"], namespace="default")


async def test_failures_are_logged_not_raised(caplog):
    async with Client("http://127.0.0.1:9", max_retries=0) as dead:
        rec = EventRecorder(dead, component="x")
        rec.event({"kind": "Pod", "metadata": {"name": "p", "namespace": "n"}}, NORMAL, "R", "m")
        await rec.flush()
        await rec.close()
    assert "dropped" in caplog.text
