"""The `Store` contract (apiserver/storage/interface.py), run against both stores: the
real etcd one and the in-memory one the unit tests of the layers above use, so the two
keep the same revision semantics. etcd-only behaviour (reconnects, fail-over, etcd's
own watchers) stays in test_storage.py."""
from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Mapping
from contextlib import aclosing

import pytest

from apiserver.storage import (Compacted, EtcdStore, Event, KeyValue, MemoryStore, Store,
                               TooLarge, Unavailable)
from apiserver.storage.encryption import EncryptedStore, parse_config
from tests.procs import Etcd


@pytest.fixture(scope="module")
def own_etcd():
    """An etcd of this module's own: the contract compacts, which would break other
    modules' watches on the session's etcd."""
    e = Etcd()
    try:
        yield e.start()
    finally:
        e.stop()


class EveryKey(Mapping):
    """Encryption for every key (the contract's keys are under a prefix of each test's own)."""

    def __init__(self, t):
        self.t = t

    def get(self, key, default=None):
        return self.t

    def __getitem__(self, key):
        return self.t

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


@pytest.fixture(params=["memory", "etcd", "encrypted-etcd"])
def make_store(request):
    """A new, unopened store of each kind (the etcd ones share this module's etcd);
    encrypted-etcd is the encryption layer (aesgcm) over etcd, which must be invisible."""
    if request.param == "memory":
        return MemoryStore
    url = request.getfixturevalue("own_etcd").url
    if request.param == "encrypted-etcd":
        key = {"name": "k", "secret": base64.b64encode(b"k" * 32).decode()}
        rules = parse_config({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                              "resources": [{"resources": ["*.*"], "providers": [{"aesgcm": {"keys": [key]}}]}]})
        return lambda: EncryptedStore(EtcdStore([url]), EveryKey(rules[0].transformer))
    return lambda: EtcdStore([url])


@pytest.fixture
async def store(make_store):
    s: Store = make_store()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def prefix():
    return f"/contract/{uuid.uuid4().hex}/"


async def events(store: Store, prefix: str, from_revision: int, n: int,
                 **kw) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(30), aclosing(store.watch(prefix, from_revision, **kw)) as w:
        async for batch in w:
            assert batch, "a watch never yields an empty batch"
            out.extend(batch)
            if len(out) >= n:
                return out
    raise AssertionError("the watch ended")


async def test_revisions_are_one_global_counter(store, prefix):
    r0 = await store.current_revision()
    ok, r1 = await store.create(prefix + "a", b"1")
    assert ok and r1 == r0 + 1
    _, r2 = await store.create(prefix + "b", b"1")
    _, r3 = await store.update(prefix + "a", b"2", r1)
    _, gone = await store.delete(prefix + "b")
    assert (r2, r3, gone.mod_revision) == (r1 + 1, r1 + 2, r1 + 3)
    assert await store.get(prefix + "a") == KeyValue(prefix + "a", b"2", r3, r1)
    assert await store.current_revision() == r1 + 3
    assert await store.count(prefix) == 1


async def test_writes_are_compare_and_swap_and_failures_answer_the_current_value(store, prefix):
    key = prefix + "k"
    _, r1 = await store.create(key, b"v1")
    assert await store.create(key, b"again") == (False, KeyValue(key, b"v1", r1, r1))
    _, r2 = await store.update(key, b"v2", r1)
    assert await store.update(key, b"v3", r1) == (False, KeyValue(key, b"v2", r2, r1))
    assert await store.delete(key, r1) == (False, KeyValue(key, b"v2", r2, r1))
    ok, deleted = await store.delete(key, r2)
    assert ok and deleted == KeyValue(key, b"v2", r2 + 1, r1)
    assert await store.get(key) is None
    assert await store.update(key, b"v4", r2) == (False, None)
    assert await store.delete(key) == (False, None)
    with pytest.raises(ValueError):
        await store.update(key, b"v5", 0)
    ok, r3 = await store.create(key, b"reborn")  # a new life: a new create_revision
    assert ok and (await store.get(key)).create_revision == r3


async def test_concurrent_updates_from_one_revision_let_exactly_one_win(store, prefix):
    _, rev = await store.create(prefix + "k", b"v0")
    results = await asyncio.gather(*(store.update(prefix + "k", b"%d" % i, rev)
                                     for i in range(20)))
    assert sum(ok for ok, _ in results) == 1


async def test_a_value_over_the_request_limit_is_too_large(store, prefix):
    with pytest.raises(TooLarge):
        await store.create(prefix + "big", b"x" * (2 * 1024 * 1024))
    assert await store.get(prefix + "big") is None


async def test_list_pages_in_key_order_at_one_revision(store, prefix):
    keys = [f"{prefix}{i:02d}" for i in range(7)]
    for k in keys:
        await store.create(k, b"old")
    await store.create(prefix[:-1] + "-sibling/x", b"")  # shares the text, not the prefix
    first = await store.list(prefix, limit=3)
    assert [kv.key for kv in first.items] == keys[:3] and first.more
    kv = await store.get(keys[5])
    await store.update(keys[5], b"new", kv.mod_revision)
    await store.delete(keys[6])
    await store.create(prefix + "99", b"new")
    rest = await store.list(prefix, revision=first.revision, start_key=keys[2] + "\x00")
    assert rest.revision == first.revision and not rest.more
    assert [(kv.key, kv.value) for kv in rest.items] == [(k, b"old") for k in keys[3:]]
    now = await store.list(prefix)
    assert [kv.key for kv in now.items] == keys[:6] + [prefix + "99"]
    assert now.revision == await store.current_revision()
    with pytest.raises(ValueError):
        await store.list(prefix, start_key="/elsewhere")


async def test_watch_replays_from_a_revision_then_goes_live(store, prefix):
    a, b = prefix + "a", prefix + "b"
    _, r1 = await store.create(a, b"a1")
    _, r2 = await store.update(a, b"a2", r1)
    _, r3 = await store.create(b, b"b1")
    _, deleted = await store.delete(a)
    await store.create(prefix[:-1] + "-sibling/x", b"")
    want = [Event("PUT", a, b"a2", b"a1", r2, False), Event("PUT", b, b"b1", None, r3, True),
            Event("DELETE", a, None, b"a2", deleted.mod_revision, False)]
    assert await events(store, prefix, r2, 3) == want

    async def later():
        await asyncio.sleep(0)
        return await store.update(b, b"b2", r3)
    writer = asyncio.create_task(later())
    got = await events(store, prefix, r2, 4)
    _, r5 = await writer
    assert got == want + [Event("PUT", b, b"b2", b"b1", r5, False)]
    no_prev = await events(store, prefix, r2, 4, prev_values=False)
    assert [e.prev_value for e in no_prev] == [None] * 4


async def test_watch_from_zero_sees_only_later_writes(store, prefix):
    await store.create(prefix + "before", b"")
    seen: list[Event] = []

    async def watch():
        async with aclosing(store.watch(prefix, 0)) as w:
            async for batch in w:
                seen.extend(batch)
    task = asyncio.create_task(watch())
    try:
        i = 0
        async with asyncio.timeout(30):
            while not seen:  # the watch starts at a moment we cannot observe
                await store.create(f"{prefix}after-{i}", b"")
                i += 1
                await asyncio.sleep(0.01)
        assert all(e.key.startswith(prefix + "after-") for e in seen)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_compaction_makes_older_revisions_compacted_for_list_and_watch(store, prefix):
    _, old = await store.create(prefix + "a", b"v1")
    _, new = await store.update(prefix + "a", b"v2", old)
    _, gone = await store.create(prefix + "b", b"b")
    _, deleted = await store.delete(prefix + "b")
    current = await store.current_revision()
    await store.compact(new)
    await store.compact(new)  # again, and older: no-ops
    await store.compact(old)
    with pytest.raises(Compacted) as listed:
        await store.list(prefix, revision=old)
    assert (listed.value.compact_revision, listed.value.current_revision) == (new, current)
    with pytest.raises(Compacted) as watched:
        await events(store, prefix, old, 1)
    assert watched.value.compact_revision == new
    page = await store.list(prefix, revision=new)  # the compaction revision stays readable
    assert [(kv.key, kv.value) for kv in page.items] == [(prefix + "a", b"v2")]
    replay = await events(store, prefix, new, 3)  # and so does the history from it on
    assert [(e.type, e.revision) for e in replay] == [
        ("PUT", new), ("PUT", gone), ("DELETE", deleted.mod_revision)]
    assert [kv.key for kv in (await store.list(prefix)).items] == [prefix + "a"]


async def test_closing_the_store_ends_its_watches_with_unavailable(make_store, prefix):
    s: Store = make_store()
    await s.open()
    seen: list[Event] = []

    async def watch():
        async with aclosing(s.watch(prefix, 0)) as w:
            async for batch in w:
                seen.extend(batch)
    task = asyncio.create_task(watch())
    try:
        i = 0
        async with asyncio.timeout(30):
            while not seen:  # until the watch is surely established
                await s.create(f"{prefix}{i}", b"")
                i += 1
                await asyncio.sleep(0.01)
    finally:
        await s.close()
    with pytest.raises(Unavailable):
        async with asyncio.timeout(60):
            await task
