"""Informers against a real API server: the cache converges on the truth through storms,
API server restarts and compaction, and handlers see each object's story in order."""
import asyncio
import random

import httpx
import pytest

import orjson

from client.informer import (LABEL, NAMESPACE, NODE_NAME, OWNER_UID, Indexer, Informer, Interner,
                             SharedInformerFactory, key_of, strip_managed_fields)
from client.rest import Client
from client.transport import LeanTransport
from client.watch import Event
from machinery import errors
from tests.procs import APIServer, compact_etcd, eventually
from tests.util import pod


class Story:
    """Records every notification and checks that, object by object, it is a valid
    history: add only when absent, update/delete only when present, versions rising."""

    def __init__(self, informer: Informer):
        self.events: list[tuple[str, str, str]] = []
        informer.add_handler(on_add=lambda o: self.record("add", o),
                             on_update=lambda old, new: self.record("update", new, old),
                             on_delete=lambda o: self.record("delete", o))

    def record(self, kind, obj, old=None):
        self.events.append((kind, key_of(obj), obj["metadata"]["resourceVersion"]))
        if old is not None:
            assert key_of(old) == key_of(obj)

    def replay(self) -> dict[str, str]:
        present: dict[str, str] = {}
        for kind, key, rv in self.events:
            if kind == "add":
                assert key not in present, f"{key} added twice"
            else:
                assert key in present, f"{kind} of unknown {key}"
                if kind == "update":
                    assert int(rv) > int(present[key]), f"{key} went back in time"
            if kind == "delete":
                del present[key]
            else:
                present[key] = rv
        return present

    def of(self, key):
        return [kind for kind, k, _ in self.events if k == key]


def versions(items) -> dict[str, str]:
    return {key_of(o): o["metadata"]["resourceVersion"] for o in items}


async def converged(informer: Informer, client: Client, namespace: str) -> bool:
    fresh = await client.list(informer.resource, namespace=namespace)
    return versions(informer.store.list()) == versions(fresh["items"])


def cm(name, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


@pytest.fixture
async def client(apiserver):
    async with Client(apiserver.connection()) as c:
        yield c


async def storm(client: Client, namespace: str, *, ops: int, writers: int, names: int, seed: int):
    rng = random.Random(seed)

    async def writer():
        for _ in range(ops // writers):
            name = f"o{rng.randrange(names)}"
            op = rng.random()
            try:
                if op < 0.4:
                    await client.create(cm(name, v="0"), namespace=namespace)
                elif op < 0.8:
                    await client.patch("configmaps", name, {"data": {"v": str(rng.random())}},
                                       namespace=namespace)
                else:
                    await client.delete("configmaps", name, namespace=namespace)
            except (errors.NotFound, errors.AlreadyExists):
                pass  # racing writers: the object was deleted or created by another
    await asyncio.gather(*(writer() for _ in range(writers)))


async def test_cache_equals_a_fresh_list_after_a_storm(client, ns):
    for i in range(10):
        await client.create(cm(f"o{i}"), namespace=ns)
    inf = Informer(client, "configmaps", namespace=ns)
    story = Story(inf)
    assert not inf.has_synced()
    inf.start()
    try:
        assert await inf.wait_for_sync(10)
        assert len(inf.store) == 10
        await storm(client, ns, ops=600, writers=12, names=30, seed=1)
        await eventually(lambda: converged(inf, client, ns), what="cache == list")
        assert story.replay() == versions(inf.store.list())
        assert inf.relists == 0
    finally:
        await inf.stop()


async def test_survives_an_apiserver_restart_without_losing_or_duplicating_state(etcd):
    server = await asyncio.to_thread(APIServer(etcd.url).start)
    try:
        async with Client(server.connection()) as c:
            await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "inf-restart"}})
            inf = Informer(c, "configmaps", namespace="inf-restart")
            story = Story(inf)
            inf.start()
            assert await inf.wait_for_sync(10)
            await storm(c, "inf-restart", ops=200, writers=8, names=20, seed=2)
            await asyncio.to_thread(server.stop)   # changes just before stop are in flight
            await asyncio.to_thread(server.start)
            await storm(c, "inf-restart", ops=200, writers=8, names=20, seed=3)
            await eventually(lambda: converged(inf, c, "inf-restart"), what="cache == list")
            assert story.replay() == versions(inf.store.list())
            # Resumed from its resourceVersion (no relist), nothing delivered twice.
            assert inf.relists == 0
            assert len(set(story.events)) == len(story.events)
            await inf.stop()
    finally:
        server.stop()


async def test_relists_after_compaction_and_reports_deletions_missed_while_away(etcd, apiserver):
    server = await asyncio.to_thread(APIServer(etcd.url).start)
    ns = "inf-gone"
    try:
        async with Client(server.connection()) as c, Client(apiserver.connection()) as other:
            await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            for name in ("stays", "changes", "goes"):
                await c.create(cm(name), namespace=ns)
            inf = Informer(c, "configmaps", namespace=ns)
            story = Story(inf)
            inf.start()
            assert await inf.wait_for_sync(10)
            assert sorted(inf.store.keys()) == [f"{ns}/changes", f"{ns}/goes", f"{ns}/stays"]
            await asyncio.to_thread(server.stop)
            # While the informer's server is down, another server changes the truth ...
            await other.delete("configmaps", "goes", namespace=ns)
            await other.patch("configmaps", "changes", {"data": {"x": "1"}}, namespace=ns)
            await other.create(cm("new"), namespace=ns)
            # ... and the history the informer would resume from is compacted away.
            await asyncio.to_thread(compact_etcd, etcd.url)
            await asyncio.to_thread(server.start)
            await eventually(lambda: inf.relists >= 1, what="a relist after 410")
            await eventually(lambda: converged(inf, c, ns), what="cache == list")
            assert story.of(f"{ns}/goes") == ["add", "delete"]
            assert story.of(f"{ns}/changes") == ["add", "update"]
            assert story.of(f"{ns}/new") == ["add"]
            assert story.of(f"{ns}/stays") == ["add"]
            assert story.replay() == versions(inf.store.list())
            await inf.stop()
    finally:
        server.stop()


async def test_indexes_and_custom_indexers(client, ns):
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u-1", "controller": True}
    a = pod("a", labels={"app": "web", "tier": "fe"}, node="n1")
    a["metadata"]["ownerReferences"] = [owner]
    await client.create(a, namespace=ns)
    await client.create(pod("b", labels={"app": "web"}, node="n2"), namespace=ns)
    await client.create(pod("c", labels={"app": "db"}), namespace=ns)
    inf = Informer(client, "pods", namespace=ns)
    inf.start()
    try:
        assert await inf.wait_for_sync(10)
        assert inf.store.index_keys(NAMESPACE, ns) == [f"{ns}/a", f"{ns}/b", f"{ns}/c"]
        assert inf.store.index_keys(NODE_NAME, "n1") == [f"{ns}/a"]
        assert inf.store.index_keys(OWNER_UID, "u-1") == [f"{ns}/a"]
        assert inf.store.index_keys(LABEL, "app=web") == [f"{ns}/a", f"{ns}/b"]
        inf.add_indexers({"image": lambda o: [c["image"] for c in o["spec"]["containers"]]})
        assert len(inf.store.by_index("image", "busybox")) == 3
        await client.bind("c", "n1", namespace=ns)
        await eventually(lambda: inf.store.index_keys(NODE_NAME, "n1") == [f"{ns}/a", f"{ns}/c"])
        await client.delete("pods", "a", namespace=ns, grace_period_seconds=0)
        await eventually(lambda: inf.store.index_keys(OWNER_UID, "u-1") == [])
        assert inf.store.index_keys(NODE_NAME, "n1") == [f"{ns}/c"]
        assert "u-1" not in inf.store.index_values(OWNER_UID)
    finally:
        await inf.stop()


def test_indexer_moves_objects_between_index_values():
    idx = Indexer()
    idx.set("ns/p", {"metadata": {"name": "p", "namespace": "ns", "labels": {"a": "1"}},
                     "spec": {"nodeName": "n1"}})
    idx.set("ns/p", {"metadata": {"name": "p", "namespace": "ns", "labels": {"a": "2"}},
                     "spec": {"nodeName": "n2"}})
    assert idx.index_keys(NODE_NAME, "n1") == [] and idx.index_keys(NODE_NAME, "n2") == ["ns/p"]
    assert idx.index_values(LABEL) == ["a=2"]
    idx.delete("ns/p")
    assert idx.index_values(NODE_NAME) == [] and len(idx) == 0


async def test_late_handlers_first_see_the_current_objects(client, ns):
    await client.create(cm("x"), namespace=ns)
    inf = Informer(client, "configmaps", namespace=ns)
    inf.start()
    try:
        assert await inf.wait_for_sync(10)
        late = Story(inf)
        assert late.events == [("add", f"{ns}/x", inf.store.get(f"{ns}/x")["metadata"]["resourceVersion"])]

        def broken(obj):
            raise RuntimeError("a buggy handler")
        inf.add_handler(on_add=broken)
        await client.create(cm("y"), namespace=ns)
        await eventually(lambda: late.of(f"{ns}/y") == ["add"], what="other handlers still served")
    finally:
        await inf.stop()


async def test_shared_factory_keeps_one_watch_per_kind(apiserver, ns):
    requests = []

    class Recording(httpx.AsyncBaseTransport):
        def __init__(self):
            self.inner = LeanTransport(ssl_context=apiserver.connection().ssl_context())

        async def handle_async_request(self, request):
            if request.method == "GET" and request.url.path.endswith("/pods"):
                requests.append("watch" if request.url.params.get("watch") else "list")
            return await self.inner.handle_async_request(request)

        async def aclose(self):
            await self.inner.aclose()
    async with Client(apiserver.connection(), transport=Recording()) as c:
        factory = SharedInformerFactory(c, namespace=ns)
        first = factory.informer("pods")
        assert factory.informer("po") is first and factory.informer("Pod") is first
        assert factory.informer("configmaps") is not first
        assert factory.informer("pods", label_selector="app=x") is not first
        factory.start()
        factory.start()
        try:
            assert await factory.wait_for_cache_sync(10)
            await c.create(pod("p"), namespace=ns)
            await eventually(lambda: first.store.get(f"{ns}/p") is not None)
            assert requests.count("watch") == 2  # the unfiltered and the app=x pods informers
            assert requests.count("list") == 2
        finally:
            await factory.stop()


async def test_relist_reports_a_recreated_object_as_delete_then_add():
    async with Client("http://unused") as c:
        inf = Informer(c, "configmaps")
        story = Story(inf)

        def obj(uid, rv):
            return {"metadata": {"name": "x", "namespace": "n", "uid": uid, "resourceVersion": rv}}
        inf.replace([obj("u1", "5")], "5")
        inf.replace([obj("u1", "5")], "6")  # unchanged: no notification
        inf.replace([obj("u2", "9")], "9")  # deleted and re-created while away
        assert story.events == [("add", "n/x", "5"), ("delete", "n/x", "5"), ("add", "n/x", "9")]
        assert inf.has_synced() and inf.resource_version == "9"


async def test_cached_objects_share_equal_short_strings(client, ns):
    # Decoded from the server's JSON, equal values are distinct objects unless interned.
    node = "node-shared"
    for name in ("s1", "s2"):
        await client.create(pod(name, labels={"app": "shared"}, node=node), namespace=ns)
    inf = Informer(client, "pods", namespace=ns)
    inf.start()
    try:
        assert await inf.wait_for_sync(10)
        a, b = inf.store.get(f"{ns}/s1"), inf.store.get(f"{ns}/s2")
        assert a["spec"]["nodeName"] is b["spec"]["nodeName"]
        assert a["metadata"]["labels"]["app"] is b["metadata"]["labels"]["app"]
        await client.create(pod("s3", labels={"app": "shared"}, node=node), namespace=ns)  # via the watch
        await eventually(lambda: inf.store.get(f"{ns}/s3") is not None)
        assert inf.store.get(f"{ns}/s3")["spec"]["nodeName"] is a["spec"]["nodeName"]
        assert a["metadata"]["uid"] != b["metadata"]["uid"]  # equal only where the values are
        # Equal subtrees are one object too: the defaulted tolerations, the resources.
        assert a["spec"]["tolerations"] is b["spec"]["tolerations"]
        assert a["spec"]["tolerations"] is inf.store.get(f"{ns}/s3")["spec"]["tolerations"]
        fresh = (await client.list("pods", namespace=ns))["items"]
        assert sorted(inf.store.list(), key=key_of) == sorted(fresh, key=key_of)  # same values
    finally:
        await inf.stop()


def test_interner_shares_equal_subtrees_and_nothing_else():
    def decoded(name, cpu, port):  # as the reflector gets them: one decode per object
        return orjson.loads(orjson.dumps({
            "metadata": {"name": name, "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}},
                                     "ports": [{"containerPort": port}]}],
                     "tolerations": [{"key": "k", "operator": "Exists"}]}}))
    interner = Interner()
    a, b, c = (interner.intern(decoded(*args)) for args in (("a", "1", 80), ("b", "1", 80), ("c", "2", True)))
    assert a == decoded("a", "1", 80) and c == decoded("c", "2", True)  # values unchanged
    assert a["spec"]["containers"] is b["spec"]["containers"]
    assert a["metadata"]["labels"] is c["metadata"]["labels"]
    assert a["spec"]["tolerations"] is c["spec"]["tolerations"]
    assert a["spec"] is not b["spec"] and a["metadata"] is not b["metadata"]  # tops stay own
    assert c["spec"]["containers"] is not a["spec"]["containers"]
    # 80 == True in Python, and they hash alike: the key must still tell them apart.
    assert c["spec"]["containers"][0]["ports"][0]["containerPort"] is True
    assert a["spec"]["containers"][0]["ports"] is not c["spec"]["containers"][0]["ports"]


def test_interner_sweep_forgets_only_what_no_object_holds():
    interner = Interner()

    def obj(name, image):
        return orjson.loads(orjson.dumps({"metadata": {"name": name}, "spec": {
            "containers": [{"name": "c", "image": image, "env": [{"name": "E", "value": image}]}]}}))
    kept = interner.intern(obj("kept", "one"))
    gone = interner.intern(obj("gone", "two"))
    held = len(interner)
    del gone
    assert interner.sweep() == held // 2  # the containers list, its item, env and env[0]
    assert len(interner) == held // 2
    again = interner.intern(obj("again", "one"))
    assert again["spec"]["containers"] is kept["spec"]["containers"]
    assert len(interner) == held // 2


async def test_deletes_free_what_only_the_deleted_objects_held():
    async with Client("http://unused") as c:
        inf = Informer(c, "pods")

        def obj(i, rv):  # one unique part (the volume), one shared (the tolerations)
            return orjson.loads(orjson.dumps({
                "metadata": {"name": f"p{i}", "namespace": "n", "uid": f"u{i}", "resourceVersion": rv},
                "spec": {"volumes": [{"name": f"v{i}", "emptyDir": {}}], "tolerations": [{"key": "k"}]}}))
        inf.replace([obj(i, "1") for i in range(200)], "1")
        assert len(inf.interner) == 200 * 2 + 3  # volumes lists and volumes; emptyDir, tolerations, [0]
        for i in range(199):
            inf.apply(Event("DELETED", obj(i, str(2 + i))))
        # Swept each time the deletes reached half the cache: what is left is the
        # parts of the objects deleted since the last sweep, and of the one still cached.
        assert len(inf.interner) < 403 // 10
        inf.replace([obj(i, "301") for i in range(200, 300)], "301")  # a relist: p199 gone
        for i in range(200, 300):
            inf.apply(Event("DELETED", obj(i, str(400 + i))))
        assert len(inf.store) == 0 and len(inf.interner) < 603 // 10


async def test_a_transform_shapes_what_is_cached_and_what_handlers_see(client, ns):
    await client.create(pod("t1"), namespace=ns)
    assert (await client.get("pods", "t1", namespace=ns))["metadata"].get("managedFields")
    factory = SharedInformerFactory(client, transform=strip_managed_fields)
    inf = factory.informer("pods", namespace=ns)
    seen = []
    inf.add_handler(on_add=seen.append, on_update=lambda old, new: seen.append(new), on_delete=seen.append)
    factory.start()
    try:
        assert await factory.wait_for_cache_sync(10)
        await client.create(pod("t2"), namespace=ns)
        await client.patch("pods", "t1", {"metadata": {"labels": {"x": "y"}}}, namespace=ns)
        await eventually(lambda: len(seen) >= 3, what="t1 added and updated, t2 added")
        await client.delete("pods", "t1", namespace=ns, grace_period_seconds=0)
        await eventually(lambda: inf.store.get(f"{ns}/t1") is None, what="t1 deleted")
        assert [o["metadata"]["name"] for o in seen][-1] == "t1" and len(seen) >= 4
        assert not [o for o in seen if "managedFields" in o["metadata"]]
        assert "managedFields" not in inf.store.get(f"{ns}/t2")["metadata"]
        assert inf.store.get(f"{ns}/t2")["metadata"]["name"] == "t2"
    finally:
        await factory.stop()
