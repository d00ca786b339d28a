"""The resource logic and the watch cache on the in-memory store: no etcd, no server.

`Resources(MemoryStore(), WatchCache(...))` is the API server's write and read path
with etcd's revision semantics, so create/get/update/delete, list paging and watches
are checked here directly; the HTTP tests cover the same paths on a real etcd."""
from __future__ import annotations

import asyncio
import copy

import pytest

from apiserver.cache import WatchCache
from apiserver.registry import by_plural
from apiserver.resources import Resources, Selection
from apiserver.storage import MemoryStore
from machinery import errors

CONFIGMAPS = by_plural("configmaps")
NAMESPACES = by_plural("namespaces")


def cm(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": dict(data)}


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


async def next_batch(stream) -> list:
    async with asyncio.timeout(10):
        return await anext(stream)


async def test_create_get_and_already_exists(api):
    made = await api.create(CONFIGMAPS, "team", cm("a", k="v"))
    rv = int(made["metadata"]["resourceVersion"])
    assert rv == await api.store.current_revision()
    got = await api.get(CONFIGMAPS, "team", "a")
    assert got["data"] == {"k": "v"} and got["metadata"]["uid"] == made["metadata"]["uid"]
    with pytest.raises(errors.AlreadyExists):
        await api.create(CONFIGMAPS, "team", cm("a"))
    with pytest.raises(errors.NotFound):
        await api.create(CONFIGMAPS, "nowhere", cm("b"))


async def test_update_with_a_stale_resource_version_is_a_conflict(api):
    made = await api.create(CONFIGMAPS, "team", cm("a", k="1"))
    updated = await api.update(CONFIGMAPS, "team", "a", {**copy.deepcopy(made), "data": {"k": "2"}})
    assert int(updated["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])
    stale = {**copy.deepcopy(made), "data": {"k": "3"}}  # carries the first resourceVersion
    with pytest.raises(errors.Conflict):
        await api.update(CONFIGMAPS, "team", "a", stale)
    assert (await api.get(CONFIGMAPS, "team", "a"))["data"] == {"k": "2"}


async def test_delete_removes_and_a_second_delete_is_not_found(api):
    await api.create(CONFIGMAPS, "team", cm("a"))
    _, gone = await api.delete(CONFIGMAPS, "team", "a", {})
    assert gone
    with pytest.raises(errors.NotFound):
        await api.get(CONFIGMAPS, "team", "a")
    with pytest.raises(errors.NotFound):
        await api.delete(CONFIGMAPS, "team", "a", {})


async def test_list_pages_through_one_snapshot_while_writes_happen(api):
    for i in range(5):
        await api.create(CONFIGMAPS, "team", cm(f"cm-{i}"))
    sel = Selection(CONFIGMAPS, "team")
    page, rev, token, remaining = await api.list(CONFIGMAPS, sel, limit=2)
    names = [e.obj["metadata"]["name"] for e in page]
    assert names == ["cm-0", "cm-1"] and token and remaining == 3
    # Writes between pages move the cache past the list's revision: the rest is read
    # from the store at that revision, so the pages still form one snapshot.
    await api.create(CONFIGMAPS, "team", cm("cm-2a"))
    await api.delete(CONFIGMAPS, "team", "cm-3", {})
    assert await api.cache.wait_for(await api.store.current_revision())
    while token:
        page, page_rev, token, _ = await api.list(CONFIGMAPS, sel, limit=2, continue_token=token)
        assert page_rev == rev
        names += [e.obj["metadata"]["name"] for e in page]
    assert names == [f"cm-{i}" for i in range(5)]
    now, _, _, _ = await api.list(CONFIGMAPS, sel)
    assert [e.obj["metadata"]["name"] for e in now] == ["cm-0", "cm-1", "cm-2", "cm-2a", "cm-4"]


async def test_a_continue_token_older_than_the_compaction_is_gone(api):
    for i in range(3):
        await api.create(CONFIGMAPS, "team", cm(f"cm-{i}"))
    sel = Selection(CONFIGMAPS, "team")
    _, _, token, _ = await api.list(CONFIGMAPS, sel, limit=1)
    await api.create(CONFIGMAPS, "team", cm("later"))
    await api.store.compact(await api.store.current_revision())
    assert await api.cache.wait_for(await api.store.current_revision())  # moved past the token
    with pytest.raises(errors.Gone):
        await api.list(CONFIGMAPS, sel, limit=1, continue_token=token)


async def test_a_continued_page_comes_from_the_cache_while_its_range_is_unchanged(api):
    """Writes outside the rest of a list (another namespace, a key before the page) move
    the cache past the token's revision but leave that range as it was: the cache serves
    the page, at the token's revision (only the cache's pages carry remainingItemCount). A
    write inside the range sends the same token to the store, which serves it as it was."""
    await api.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    for i in range(5):
        await api.create(CONFIGMAPS, "team", cm(f"cm-{i}", k="1"))
    sel = Selection(CONFIGMAPS, "team")
    _, rev, token, _ = await api.list(CONFIGMAPS, sel, limit=2)
    await api.create(CONFIGMAPS, "other", cm("elsewhere"))
    first = await api.get(CONFIGMAPS, "team", "cm-0")
    await api.update(CONFIGMAPS, "team", "cm-0", {**first, "data": {"k": "2"}})
    assert await api.cache.wait_for(await api.store.current_revision())
    assert api.cache.revision > rev
    page, page_rev, next_token, remaining = await api.list(CONFIGMAPS, sel, limit=2, continue_token=token)
    assert [e.obj["metadata"]["name"] for e in page] == ["cm-2", "cm-3"]
    assert (page_rev, remaining) == (rev, 1) and next_token
    last, _, _, _ = await api.list(CONFIGMAPS, sel, limit=2, continue_token=next_token)
    assert [e.obj["metadata"]["name"] for e in last] == ["cm-4"]

    third = await api.get(CONFIGMAPS, "team", "cm-3")
    await api.update(CONFIGMAPS, "team", "cm-3", {**third, "data": {"k": "2"}})
    await api.delete(CONFIGMAPS, "team", "cm-4", {})
    assert await api.cache.wait_for(await api.store.current_revision())
    page, page_rev, next_token, remaining = await api.list(CONFIGMAPS, sel, limit=2, continue_token=token)
    assert [(e.obj["metadata"]["name"], e.obj["data"]["k"]) for e in page] == [("cm-2", "1"), ("cm-3", "1")]
    assert page_rev == rev and remaining is None and next_token  # the store's page: cm-4 was there


async def test_a_continue_token_older_than_the_compaction_is_gone_though_its_range_is_unchanged(api):
    for i in range(3):
        await api.create(CONFIGMAPS, "team", cm(f"cm-{i}"))
    sel = Selection(CONFIGMAPS, "team")
    _, _, token, _ = await api.list(CONFIGMAPS, sel, limit=1)
    await api.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    await api.store.compact(await api.store.current_revision())
    assert await api.cache.wait_for(await api.store.current_revision())
    with pytest.raises(errors.Gone):
        await api.list(CONFIGMAPS, sel, limit=1, continue_token=token)


async def test_watch_from_a_list_revision_sees_each_later_change_in_order(api):
    await api.create(CONFIGMAPS, "team", cm("a", k="1"))
    _, rev, _, _ = await api.list(CONFIGMAPS, Selection(CONFIGMAPS, "team"))
    stream = await api.watch(CONFIGMAPS, Selection(CONFIGMAPS, "team"),
                             resource_version=str(rev), bookmarks=False)
    try:
        a = await api.get(CONFIGMAPS, "team", "a")
        await api.update(CONFIGMAPS, "team", "a", {**a, "data": {"k": "2"}})
        await api.create(CONFIGMAPS, "team", cm("b"))
        await api.delete(CONFIGMAPS, "team", "a", {})
        seen: list[tuple[str, str]] = []
        while len(seen) < 3:
            seen += [(t, e.obj["metadata"]["name"]) for t, e in await next_batch(stream)]
        assert seen == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    finally:
        await stream.aclose()


async def test_watch_older_than_the_cache_history_reads_the_store_then_410_once_compacted(api):
    start = await api.store.current_revision()
    for i in range(60):  # more than the cache's history of 50 events
        await api.create(CONFIGMAPS, "team", cm(f"cm-{i:02d}"))
    sel = Selection(CONFIGMAPS, "team")
    assert await api.cache.wait_for(await api.store.current_revision())
    assert not api.cache.covers(CONFIGMAPS, start)
    stream = await api.watch(CONFIGMAPS, sel, resource_version=str(start), bookmarks=False)
    try:
        first = await next_batch(stream)
        assert (first[0][0], first[0][1].obj["metadata"]["name"]) == ("ADDED", "cm-00")
    finally:
        await stream.aclose()
    await api.store.compact(await api.store.current_revision())
    with pytest.raises(errors.Gone):
        await api.watch(CONFIGMAPS, sel, resource_version=str(start), bookmarks=False)


async def test_watch_cache_follows_the_store_and_replays_its_history(api):
    store, cache = api.store, api.cache
    before = await store.current_revision()
    await api.create(CONFIGMAPS, "team", cm("a"))
    await api.create(CONFIGMAPS, "team", cm("b"))
    assert await cache.wait_for(await store.current_revision())
    assert [e.obj["metadata"]["name"] for e in cache.entries(CONFIGMAPS, "team")] == ["a", "b"]
    w = cache.watch(CONFIGMAPS, lambda obj: True, after=before, bookmarks=False)
    try:
        async with asyncio.timeout(10):
            batch = await w.next_batch()
        assert [(t, e.obj["metadata"]["name"]) for t, e in batch] == [("ADDED", "a"),
                                                                      ("ADDED", "b")]
    finally:
        cache.unwatch(CONFIGMAPS, w)
