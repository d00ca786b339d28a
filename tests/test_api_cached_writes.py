"""Patches and bindings start from the watch cache's copy of the object, which may be
behind etcd. Here the cache is held still (never started) and seeded with an old copy,
against a real etcd: every answer must be the one a fresh read would give."""
import uuid

import orjson
import pytest

from apiserver.cache import WatchCache, decode
from apiserver.registry import by_plural
from apiserver.resources import Resources, WriteOptions
from apiserver.storage import EtcdStore
from machinery import errors
from tests.util import pod

PODS = by_plural("pods")


@pytest.fixture
async def res(etcd):
    store = EtcdStore([etcd.url])
    await store.open()
    yield Resources(store, WatchCache(store))
    await store.close()


@pytest.fixture
async def ns(res):
    name = "cached-" + uuid.uuid4().hex[:8]
    await res.create(by_plural("namespaces"), "", {"metadata": {"name": name}})
    # what the serviceaccount controller makes, without which admission refuses pods
    await res.create(by_plural("serviceaccounts"), name, {"metadata": {"name": "default"}})
    return name


async def stale(res: Resources, ns: str, name: str) -> str:
    """Create a pod, put its first version in the (still) cache, and return its key."""
    created = await res.create(PODS, ns, pod(name), WriteOptions(field_manager="test"))
    key = PODS.key(ns, name)
    kv = await res.store.get(key)
    res.cache.buckets[PODS.root].objects[key] = decode(key, kv.value, kv.mod_revision)
    assert created["metadata"]["resourceVersion"] == str(kv.mod_revision)
    return key


async def test_a_patch_that_changes_nothing_on_the_stale_copy_still_applies_to_the_current_one(res, ns):
    await stale(res, ns, "p")
    await res.patch(PODS, ns, "p", "application/merge-patch+json", {"metadata": {"labels": {"a": "2"}}})
    # Undoing the change is a no-op on the cache's copy, not on etcd's.
    got = await res.patch(PODS, ns, "p", "application/merge-patch+json", {"metadata": {"labels": {"a": None}}})
    assert "a" not in (got["metadata"].get("labels") or {})
    assert "a" not in (await res.get(PODS, ns, "p"))["metadata"].get("labels", {})


async def test_a_patch_pinned_to_the_current_version_succeeds_though_the_cache_is_behind(res, ns):
    key = await stale(res, ns, "p")
    current = await res.patch(PODS, ns, "p", "application/merge-patch+json", {"metadata": {"labels": {"a": "1"}}})
    got = await res.patch(PODS, ns, "p", "application/merge-patch+json", {
        "metadata": {"resourceVersion": current["metadata"]["resourceVersion"], "labels": {"b": "1"}}})
    assert got["metadata"]["labels"] == {"a": "1", "b": "1"}
    # ...and one pinned to the version the cache still holds is a conflict.
    old_rv = res.cache.get(PODS, key).obj["metadata"]["resourceVersion"]
    with pytest.raises(errors.Conflict):
        await res.patch(PODS, ns, "p", "application/merge-patch+json",
                        {"metadata": {"resourceVersion": old_rv, "labels": {"c": "1"}}})


async def test_a_status_patch_lands_on_the_current_object(res, ns):
    await stale(res, ns, "p")
    await res.bind(PODS, ns, "p", {"target": {"name": "node-1"}})
    got = await res.patch(PODS, ns, "p", "application/merge-patch+json",
                          {"status": {"phase": "Running"}}, subresource="status")
    assert got["spec"]["nodeName"] == "node-1" and got["status"]["phase"] == "Running"
    assert [c["type"] for c in got["status"]["conditions"]] == ["PodScheduled"]


async def test_binding_a_pod_bound_since_the_cached_copy_is_a_conflict(res, ns):
    await stale(res, ns, "p")
    await res.bind(PODS, ns, "p", {"target": {"name": "node-1"}})
    with pytest.raises(errors.Conflict, match='already assigned to node "node-1"'):
        await res.bind(PODS, ns, "p", {"target": {"name": "node-2"}})


async def test_binding_a_recreated_pod_is_judged_on_the_new_pod(res, ns):
    key = await stale(res, ns, "p")
    await res.bind(PODS, ns, "p", {"target": {"name": "node-1"}})
    kv = await res.store.get(key)
    res.cache.buckets[PODS.root].objects[key] = decode(key, kv.value, kv.mod_revision)  # bound
    ok, _ = await res.store.delete(key, kv.mod_revision)
    assert ok
    again = await res.create(PODS, ns, pod("p"))
    await res.bind(PODS, ns, "p", {"metadata": {"uid": again["metadata"]["uid"]}, "target": {"name": "node-2"}})
    stored = orjson.loads((await res.store.get(key)).value)
    assert stored["spec"]["nodeName"] == "node-2"
