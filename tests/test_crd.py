"""CustomResourceDefinitions and the dynamic registry under them.

The first tests drive the registry seam directly (apiserver/registry.py's register,
unregister, served, and one kind served at two versions from one stored object) on
the in-memory store; the rest run a real API server on real etcd."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from apiserver import registry
from apiserver.cache import WatchCache
from apiserver.resources import Resources, Selection
from apiserver.storage import MemoryStore
from apiserver.strategies import Strategy
from machinery import errors, kinds

NAMESPACES = registry.by_plural("namespaces")


class _Loose(Strategy):
    def schema_causes(self, rt, obj):
        return []


def _widget(version: str) -> registry.ResourceType:
    return registry.ResourceType(
        group="example.com", version=version, kind="Widget", plural="widgets", namespaced=True,
        strategy=_Loose(), storage_version="v1", storage_root="/registry/example.com/widgets/")


@pytest.fixture
def widgets():
    rows = (_widget("v1"), _widget("v1beta1"))
    for rt in rows:
        registry.register(rt)
    yield rows
    for rt in rows:
        registry.unregister(rt)


@pytest.fixture
async def api():
    store = MemoryStore()
    cache = WatchCache(store, history=50, bookmark_interval=3600)
    await cache.start()
    async with asyncio.timeout(10):
        await cache.ready.wait()
    api = Resources(store, cache)
    await api.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": "team"}})
    yield api
    await cache.stop()


def test_register_and_unregister_change_what_is_served(widgets):
    v1, beta = widgets
    assert registry.lookup("example.com", "v1beta1", "widgets") is beta
    assert registry.served()[-2:] == (v1, beta)
    assert registry.groups()["example.com"] == ["v1", "v1beta1"]
    assert registry.by_kind("example.com/v1beta1", "Widget") is beta
    assert registry.by_kind("example.com/v9", "Widget") is v1  # the stored version's row
    before = registry.generation()
    registry.unregister(beta)
    assert registry.lookup("example.com", "v1beta1", "widgets") is None
    assert registry.generation() == before + 1
    assert "example.com" in registry.groups()
    with pytest.raises(ValueError):
        registry.register(dataclasses.replace(registry.by_plural("pods")))


def test_custom_resources_are_keyed_by_group_and_plural(widgets):
    assert widgets[1].key("team", "a") == "/registry/example.com/widgets/team/a"
    assert registry.by_plural("pods").key("team", "a") == "/registry/pods/team/a"


async def test_one_stored_object_is_served_at_every_version(api, widgets):
    v1, beta = widgets
    made = await api.create(beta, "team", {"apiVersion": "example.com/v1beta1", "kind": "Widget",
                                           "metadata": {"name": "a"}, "spec": {"size": 1}})
    assert made["apiVersion"] == "example.com/v1beta1"
    kv = await api.store.get("/registry/example.com/widgets/team/a")
    assert b'"apiVersion":"example.com/v1"' in kv.value  # stored at the storage version
    assert (await api.get(beta, "team", "a"))["apiVersion"] == "example.com/v1beta1"
    assert (await api.get(v1, "team", "a"))["apiVersion"] == "example.com/v1"
    entries, *_ = await api.list(beta, Selection(beta, "team"))
    assert [e.obj["apiVersion"] for e in entries] == ["example.com/v1beta1"]
    assert b"example.com/v1beta1" in entries[0].raw
    stream = await api.watch(beta, Selection(beta, "team"), resource_version=made["metadata"]["resourceVersion"],
                             bookmarks=False)
    updated = await api.patch(beta, "team", "a", "application/merge-patch+json", {"spec": {"size": 2}})
    assert updated["apiVersion"] == "example.com/v1beta1" and updated["spec"] == {"size": 2}
    async with asyncio.timeout(10):
        batch = await anext(stream)
    assert [(t, e.obj["apiVersion"], e.obj["spec"]) for t, e in batch] == \
        [("MODIFIED", "example.com/v1beta1", {"size": 2})]
    await stream.aclose()
    kv = await api.store.get("/registry/example.com/widgets/team/a")
    assert b'"apiVersion":"example.com/v1"' in kv.value
    # A request's apiVersion must still be the one it is sent to.
    with pytest.raises(errors.BadRequest):
        await api.create(beta, "team", {"apiVersion": "example.com/v1", "kind": "Widget",
                                        "metadata": {"name": "b"}})


def test_kinds_module_is_untouched_by_registration(widgets):
    assert "widgets" not in {k.plural for k in kinds.KINDS}
