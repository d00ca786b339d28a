"""The watch cache's memory per object, and the selector semantics its compact entries
keep (apiserver/cache.py). On the in-memory store: no etcd, no server; about 2 s.

The memory figure is the Python heap (tracemalloc), which does not depend on the
machine's load; bench/cache_memory.py measures the same on a real etcd and API server."""
from __future__ import annotations

import asyncio
import gc
import tracemalloc

import orjson
import pytest

from apiserver.cache import WatchCache
from apiserver.registry import by_plural
from apiserver.resources import Resources, Selection
from apiserver.storage import MemoryStore
from bench.cache_memory import pod_body, status_patch

PODS = by_plural("pods")


def running_pod(i: int, **labels: str) -> bytes:
    pod = orjson.loads(pod_body(i))
    pod["metadata"].update(namespace="team", uid=f"uid-{i}")
    pod["metadata"]["labels"].update(labels)
    pod["spec"]["nodeName"] = f"node-{i % 3}"
    pod.update(orjson.loads(status_patch(i, pod["spec"]["nodeName"])))
    return orjson.dumps(pod)


def key(i: int) -> str:
    return PODS.key("team", f"web-7d4b9c8f6d-{i:05d}x")


async def started(store: MemoryStore) -> WatchCache:
    cache = WatchCache(store, history=100, bookmark_interval=3600)
    await cache.start()
    async with asyncio.timeout(10):
        await cache.ready.wait()
    return cache


def heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_the_cache_holds_each_object_in_little_more_than_its_json():
    store = MemoryStore()
    for i in range(1000):
        assert (await store.create(key(i), running_pod(i)))[0]
    tracemalloc.start()
    try:
        before = heap()
        cache = await started(store)
        grown = heap() - before
    finally:
        tracemalloc.stop()
    entries = cache.entries(PODS, "team")
    held = sum(len(e.raw) for e in entries)
    assert len(entries) == 1000
    # A decoded copy alone would be six to seven times the JSON (issue 20's target: 2x).
    assert grown < 1.5 * held, f"{grown} bytes of heap for {held} bytes of JSON"
    await cache.stop()


async def test_pods_of_one_template_share_a_label_set_and_selectors_still_match():
    store = MemoryStore()
    for i in range(4):
        await store.create(key(i), running_pod(i, idx="odd" if i % 2 else "even"))
    cache = await started(store)
    api = Resources(store, cache)
    a, b, c = (cache.get(PODS, key(i)) for i in range(3))
    assert a.labels is c.labels and a.labels is not b.labels
    assert a.labels == {"app": "web", "pod-template-hash": "7d4b9c8f6d", "tier": "frontend", "idx": "even"}

    def names(entries):
        return [e.key.rsplit("/", 1)[1][-6:] for e in entries]
    odd, *_ = await api.list(PODS, Selection(PODS, "team", "idx=odd,app in (web)"))
    assert names(odd) == ["00001x", "00003x"]
    on_node_1, *_ = await api.list(PODS, Selection(PODS, "team", "", "spec.nodeName=node-1,status.phase=Running"))
    assert names(on_node_1) == ["00001x"]
    # A write that changes the labels and the node is what the next selection reads.
    kv = await store.get(key(0))
    pod = orjson.loads(kv.value)
    pod["metadata"]["labels"]["idx"] = "odd"
    pod["spec"]["nodeName"] = "node-1"
    ok, rev = await store.update(key(0), orjson.dumps(pod), kv.mod_revision)
    assert ok and await cache.wait_for(rev)
    odd, *_ = await api.list(PODS, Selection(PODS, "team", "idx=odd"))
    assert names(odd) == ["00000x", "00001x", "00003x"]
    assert cache.get(PODS, key(0)).labels is b.labels
    on_node_1, *_ = await api.list(PODS, Selection(PODS, "team", "", "spec.nodeName=node-1"))
    assert names(on_node_1) == ["00000x", "00001x"]
    await cache.stop()


async def test_a_watch_from_the_window_sees_a_pod_leave_its_field_selector():
    store = MemoryStore()
    await store.create(key(0), running_pod(0))  # on node-0
    cache = await started(store)
    api = Resources(store, cache)
    start = cache.revision
    kv = await store.get(key(0))
    pod = orjson.loads(kv.value)
    pod["spec"]["nodeName"] = "node-2"
    ok, moved = await store.update(key(0), orjson.dumps(pod), kv.mod_revision)
    assert ok and await cache.wait_for(moved)
    stream = await api.watch(PODS, Selection(PODS, "team", "", "spec.nodeName=node-0"),
                             resource_version=str(start), bookmarks=False)
    async with asyncio.timeout(10):
        batch = await anext(stream)
    # The old version matched and the new one does not: DELETED, with the new object.
    assert [(kind, e.revision, e.obj["spec"]["nodeName"]) for kind, e in batch] == [("DELETED", moved, "node-2")]
    await stream.aclose()
    await cache.stop()


async def test_an_entrys_object_is_a_private_copy_and_fields_follow_the_extractor():
    store = MemoryStore()
    await store.create(key(0), running_pod(0))
    cache = await started(store)
    entry = cache.get(PODS, key(0))
    obj = entry.obj
    obj["spec"]["nodeName"] = "changed"
    assert entry.obj["spec"]["nodeName"] == "node-0"
    assert entry.fields(PODS.fields).get("spec.nodeName") == "node-0"
    # Another extractor (a custom resource's CRD given new selectableFields) is asked anew.
    view = entry.fields(lambda o: {"metadata.name": o["metadata"]["name"], "spec.hostname": "h"})
    assert view.get("spec.hostname") == "h" and view.get("spec.nodeName", "") == ""
    await cache.stop()


@pytest.fixture(autouse=True)
def no_tracing_left():
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()
