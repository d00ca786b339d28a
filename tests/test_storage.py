"""The storage layer against a real etcd: compare-and-swap writes, snapshot paging,
watches that resume without losing or repeating events, and compaction."""
import asyncio
import inspect
import re
import uuid
from contextlib import aclosing

import httpx
import pytest

from apiserver.storage import (Compacted, EtcdStore, Event, KeyValue, TooLarge,
                               Unavailable)
from tests.procs import Etcd, free_port


async def until(cond, timeout=30.0, what="condition"):
    """Polls cond() (plain or async) until it is true; the timeout only catches hangs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ((await value) if inspect.isawaitable(value := cond()) else value):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def prefix():
    return f"/test/{uuid.uuid4().hex}/"


@pytest.fixture
async def store(etcd):
    s = EtcdStore([etcd.url])
    await s.open()
    yield s
    await s.close()


@pytest.fixture(scope="module")
def own_etcd():
    """An etcd of this module's own, for tests that compact or count watchers."""
    e = Etcd()
    try:
        yield e.start()
    finally:
        e.stop()


@pytest.fixture
async def own_store(own_etcd):
    s = EtcdStore([own_etcd.url])
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def crashable_etcd():
    e = Etcd()
    try:
        yield e.start()
    finally:
        e.stop()


class Collector:
    """Runs a watch in a task and keeps every event it yields."""

    def __init__(self, store: EtcdStore, prefix: str, from_revision: int):
        self.events: list[Event] = []
        self.task = asyncio.create_task(self._run(store, prefix, from_revision))

    async def _run(self, store, prefix, from_revision):
        async with aclosing(store.watch(prefix, from_revision)) as watch:
            async for batch in watch:
                assert batch, "a watch never yields an empty batch"
                self.events.extend(batch)

    async def wait_for(self, n: int):
        await until(lambda: len(self.events) >= n or self.task.done(), what=f"{n} events")
        if self.task.done():
            self.task.result()  # surfaces the watch's error
        return self.events

    async def stop(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Proxy:
    """A TCP proxy in front of etcd that can cut every connection and refuse new ones
    while etcd itself stays up."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: asyncio.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self):
        self.server.close()
        for w in list(self.conns):
            w.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self.conns |= {writer, up_writer}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.conns -= {writer, up_writer}


async def watchers(etcd: Etcd) -> int:
    """How many watchers etcd is serving, from its own metrics."""
    async with httpx.AsyncClient() as c:
        metrics = (await c.get(etcd.url + "/metrics")).text
    return int(re.search(r"^etcd_debugging_mvcc_watcher_total (\d+)", metrics, re.M).group(1))


def watchers_are(etcd: Etcd, n: int):
    async def check():
        return await watchers(etcd) == n
    return check


# -- compare-and-swap writes -------------------------------------------------------

async def test_create_of_an_existing_key_returns_the_existing_value(store, prefix):
    ok, rev = await store.create(prefix + "a", b"first")
    assert ok and rev > 0
    ok, existing = await store.create(prefix + "a", b"second")
    assert not ok
    assert existing == KeyValue(prefix + "a", b"first", rev, rev)
    assert await store.get(prefix + "a") == existing


async def test_update_with_a_stale_revision_fails_and_returns_the_current_value(store, prefix):
    key = prefix + "a"
    _, r1 = await store.create(key, b"v1")
    ok, r2 = await store.update(key, b"v2", r1)
    assert ok and r2 > r1
    ok, current = await store.update(key, b"v3", r1)
    assert not ok
    assert current == KeyValue(key, b"v2", r2, r1)
    await store.delete(key)
    assert await store.update(key, b"v4", r2) == (False, None)
    with pytest.raises(ValueError):
        await store.update(key, b"v5", 0)  # would be a create in disguise


async def test_delete_is_compare_and_swap(store, prefix):
    key = prefix + "a"
    _, r1 = await store.create(key, b"v1")
    _, r2 = await store.update(key, b"v2", r1)
    ok, current = await store.delete(key, r1)
    assert not ok and current == KeyValue(key, b"v2", r2, r1)
    ok, deleted = await store.delete(key, r2)
    assert ok
    assert deleted.key == key and deleted.value == b"v2" and deleted.create_revision == r1
    assert deleted.mod_revision > r2  # the delete's own revision
    assert await store.get(key) is None
    assert await store.delete(key, r2) == (False, None)
    assert await store.delete(key) == (False, None)


async def test_unconditional_delete_removes_whatever_is_there(store, prefix):
    key = prefix + "a"
    _, r1 = await store.create(key, b"v1")
    ok, deleted = await store.delete(key)
    assert ok and deleted.value == b"v1" and deleted.mod_revision > r1


async def test_concurrent_updates_from_one_revision_let_exactly_one_win(store, prefix):
    key = prefix + "a"
    _, rev = await store.create(key, b"v0")
    results = await asyncio.gather(*(store.update(key, b"v%d" % i, rev) for i in range(100)))
    winners = [i for i, (ok, _) in enumerate(results) if ok]
    assert len(winners) == 1
    kv = await store.get(key)
    assert kv.value == b"v%d" % winners[0]
    assert all(current == kv for ok, current in results if not ok)


async def test_a_value_over_etcds_limit_is_too_large(store, prefix):
    with pytest.raises(TooLarge):
        await store.create(prefix + "big", b"x" * (2 * 1024 * 1024))


# -- reads ---------------------------------------------------------------------------

async def test_get_count_and_current_revision(store, prefix):
    assert await store.get(prefix + "missing") is None
    before = await store.current_revision()
    for name in "abc":
        await store.create(prefix + name, b"")
    await store.create(prefix[:-1] + "-sibling/x", b"")  # shares the prefix's text, not the dir
    assert await store.count(prefix) == 3
    assert await store.current_revision() == before + 4


async def test_list_pages_at_one_revision_see_one_snapshot_while_writes_happen(store, prefix):
    keys = [f"{prefix}{i:02d}" for i in range(10)]
    for k in keys:
        await store.create(k, b"old")
    page = await store.list(prefix, limit=3)
    snapshot = page.revision
    seen = list(page.items)
    assert page.more and [kv.key for kv in page.items] == keys[:3]

    stop = asyncio.Event()

    async def churn():  # rewrites, deletes and adds keys all through the paging
        i = 0
        while not stop.is_set():
            k = keys[i % len(keys)]
            kv = await store.get(k)
            if kv is None:
                await store.create(k, b"new")
            elif i % 3:
                await store.update(k, b"new", kv.mod_revision)
            else:
                await store.delete(k, kv.mod_revision)
            await store.create(f"{prefix}{i:02d}-added", b"new")
            i += 1
    writer = asyncio.create_task(churn())
    try:
        while page.more:
            page = await store.list(prefix, revision=snapshot, limit=3,
                                    start_key=page.items[-1].key + "\x00")
            assert page.revision == snapshot
            seen.extend(page.items)
            await store.create(f"{prefix}{len(seen):02d}-between-pages", b"new")
    finally:
        stop.set()
        await writer
    assert [kv.key for kv in seen] == keys
    assert all(kv.value == b"old" and kv.mod_revision <= snapshot for kv in seen)
    assert len((await store.list(prefix)).items) > len(keys)  # the writes did happen


async def test_list_limit_and_start_key_without_a_revision(store, prefix):
    for name in "abcde":
        await store.create(prefix + name, name.encode())
    page = await store.list(prefix, limit=2, start_key=prefix + "b")
    assert [kv.value for kv in page.items] == [b"b", b"c"] and page.more
    page = await store.list(prefix, limit=2, start_key=prefix + "d")
    assert [kv.value for kv in page.items] == [b"d", b"e"] and not page.more
    assert page.revision == await store.current_revision()


# -- watch ---------------------------------------------------------------------------

async def test_watch_from_a_revision_delivers_exactly_the_later_events_in_order(store, prefix):
    a, b = prefix + "a", prefix + "b"
    _, r1 = await store.create(a, b"a1")
    _, r2 = await store.update(a, b"a2", r1)
    _, r3 = await store.create(b, b"b1")
    _, deleted = await store.delete(a)
    r4 = deleted.mod_revision
    await store.create(prefix[:-1] + "-sibling/x", b"")  # outside the prefix
    _, r5 = await store.create(prefix + "last", b"")

    watch = Collector(store, prefix, r2)
    try:
        events = await watch.wait_for(4)
        assert events == [
            Event("PUT", a, b"a2", b"a1", r2, False),
            Event("PUT", b, b"b1", None, r3, True),
            Event("DELETE", a, None, b"a2", r4, False),
            Event("PUT", prefix + "last", b"", None, r5, True),
        ]
        _, r6 = await store.update(b, b"b2", r3)  # and live events follow
        events = await watch.wait_for(5)
        assert events[4:] == [Event("PUT", b, b"b2", b"b1", r6, False)]
    finally:
        await watch.stop()


async def test_watch_from_revision_zero_starts_now(store, prefix):
    await store.create(prefix + "before", b"")
    watch = Collector(store, prefix, 0)

    async def write_until_seen():  # the watch starts at a moment we cannot observe
        i = 0
        while not watch.events:
            await store.create(f"{prefix}after-{i}", b"")
            i += 1
    writer = asyncio.create_task(write_until_seen())
    try:
        await watch.wait_for(1)
        assert all(e.key.startswith(prefix + "after-") for e in watch.events)
    finally:
        writer.cancel()
        await watch.stop()
        await asyncio.gather(writer, return_exceptions=True)


async def test_watch_resumes_after_etcd_restarts_without_losing_or_repeating_events(
        crashable_etcd, prefix):
    watching = EtcdStore([crashable_etcd.url])
    writing = EtcdStore([crashable_etcd.url])
    watch = None
    try:
        await watching.open()
        await writing.open()
        start = await writing.current_revision() + 1
        watch = Collector(watching, prefix, start)
        revisions = [(await writing.create(f"{prefix}{i:02d}", b"%d" % i))[1] for i in range(5)]
        await watch.wait_for(5)

        crashable_etcd.kill()
        await asyncio.to_thread(crashable_etcd.start)
        revisions += [(await writing.create(f"{prefix}{i:02d}", b"%d" % i))[1]
                      for i in range(5, 10)]

        events = await watch.wait_for(10)
        assert [e.revision for e in events] == revisions
        assert [e.key for e in events] == [f"{prefix}{i:02d}" for i in range(10)]
        assert all(e.created and e.type == "PUT" for e in events)
    finally:
        if watch:
            await watch.stop()
        await watching.close()
        await writing.close()


async def test_watch_resumes_after_a_dropped_connection_from_the_last_event(etcd, store, prefix):
    proxy = Proxy(int(etcd.url.rsplit(":", 1)[1]))
    await proxy.start()
    watching = EtcdStore([proxy.url])
    watch = None
    try:
        await watching.open()
        watch = Collector(watching, prefix, await store.current_revision() + 1)
        revisions = [(await store.create(f"{prefix}{i:02d}", b""))[1] for i in range(3)]
        await watch.wait_for(3)

        await proxy.cut()
        # Written while the watch cannot reconnect: only a resume from the last
        # delivered revision brings these, and a resume from the start repeats 0-2.
        revisions += [(await store.create(f"{prefix}{i:02d}", b""))[1] for i in range(3, 8)]
        await proxy.start()
        revisions += [(await store.create(f"{prefix}{i:02d}", b""))[1] for i in range(8, 10)]

        events = await watch.wait_for(10)
        await store.create(prefix + "sentinel", b"")
        events = await watch.wait_for(11)
        assert [e.revision for e in events[:10]] == revisions
        assert events[10].key == prefix + "sentinel"
    finally:
        if watch:
            await watch.stop()
        await watching.close()
        await proxy.cut()


async def test_watch_gives_up_with_unavailable_when_etcd_stays_away(etcd, prefix):
    proxy = Proxy(int(etcd.url.rsplit(":", 1)[1]))
    await proxy.start()
    watching = EtcdStore([proxy.url], watch_retry_seconds=0.5)
    try:
        await watching.open()
        rev = await watching.current_revision()
        await proxy.cut()
        with pytest.raises(Unavailable):
            async with aclosing(watching.watch(prefix, rev)) as w:
                async for _ in w:
                    pass
    finally:
        await watching.close()
        await proxy.cut()


async def test_closing_or_cancelling_a_watch_cancels_it_in_etcd(own_etcd, own_store, prefix):
    base = await watchers(own_etcd)

    watch = Collector(own_store, prefix, 0)
    await until(watchers_are(own_etcd, base + 1), what="the watch to start")
    await watch.stop()  # cancels the task iterating the watch
    await until(watchers_are(own_etcd, base), what="the cancelled watch to go")

    _, rev = await own_store.create(prefix + "a", b"")
    async with aclosing(own_store.watch(prefix, rev)) as w:
        async for _ in w:
            assert await watchers(own_etcd) == base + 1
            break
    await until(watchers_are(own_etcd, base), what="the closed watch to go")


async def test_closing_the_store_ends_its_watches_with_unavailable(own_etcd, prefix):
    base = await watchers(own_etcd)
    s = EtcdStore([own_etcd.url])
    await s.open()
    watch = Collector(s, prefix, 0)
    try:
        await until(watchers_are(own_etcd, base + 1), what="the watch to start")
    finally:
        await s.close()
    await until(watch.task.done, what="the watch to end")
    with pytest.raises(Unavailable):
        watch.task.result()


# -- compaction ------------------------------------------------------------------------

async def test_compacted_revisions_raise_compacted_from_list_and_watch(own_store, prefix):
    _, old = await own_store.create(prefix + "a", b"v1")
    _, new = await own_store.update(prefix + "a", b"v2", old)
    await own_store.compact(new)
    await own_store.compact(new)  # again: already done, not an error
    await own_store.compact(old)  # and older: likewise
    current = await own_store.current_revision()

    with pytest.raises(Compacted) as listed:
        await own_store.list(prefix, revision=old)
    assert (listed.value.compact_revision, listed.value.current_revision) == (new, current)

    with pytest.raises(Compacted) as watched:
        async with aclosing(own_store.watch(prefix, old)) as w:
            async for _ in w:
                pass
    assert watched.value.compact_revision == new

    page = await own_store.list(prefix, revision=new)  # the compaction revision stays readable
    assert [kv.value for kv in page.items] == [b"v2"]


async def test_compactor_compacts_history_older_than_the_window(own_store, prefix):
    _, old = await own_store.create(prefix + "a", b"v1")
    await own_store.update(prefix + "a", b"v2", old)
    compactor = asyncio.create_task(own_store.compactor(window_seconds=0, interval=0.01))
    try:
        async def compacted():
            try:
                await own_store.list(prefix, revision=old)
                return False
            except Compacted:
                return True
        await until(compacted, what="the compactor to compact")
    finally:
        compactor.cancel()
        await asyncio.gather(compactor, return_exceptions=True)


# -- connection ------------------------------------------------------------------------

async def test_open_fails_over_to_the_next_endpoint(etcd, prefix):
    s = EtcdStore([f"http://127.0.0.1:{free_port()}", etcd.url], retries=3)
    try:
        await s.open()
        assert (await s.create(prefix + "a", b""))[0]
    finally:
        await s.close()


async def test_unreachable_etcd_raises_unavailable():
    s = EtcdStore([f"http://127.0.0.1:{free_port()}"], retries=2)
    with pytest.raises(Unavailable):
        await s.open()
