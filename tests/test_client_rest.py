"""The REST client against the real API server: verbs, subresources, typed errors,
retries (where a real failure is hard to stage, through httpx's MockTransport seam)."""
import asyncio

import httpx
import orjson
import pytest

from client.rest import ALL, Client, Resources, SyncClient, retry_on_conflict
from client.transport import LeanTransport
from machinery import errors
from tests.procs import free_port
from tests.util import deployment, pod


@pytest.fixture
async def client(apiserver):
    async with Client(apiserver.connection()) as c:
        yield c


def cm(name, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def test_resources_resolve_every_spelling():
    r = Resources()
    for name in ("pods", "pod", "po", "Pod"):
        assert r.get(name).plural == "pods"
    assert r.get("deploy").group == "apps"
    assert r.get("deployments.apps").kind == "Deployment"
    assert r.get("Lease").path(namespace="kube-system", name="x") == \
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x"
    assert r.get("nodes").path(namespace="ignored", name="n1", subresource="status") == \
        "/api/v1/nodes/n1/status"
    with pytest.raises(errors.NotFound):
        r.get("widgets")


async def test_crud_round_trip(client, ns):
    made = await client.create(cm("a", k="1"), namespace=ns)
    assert made["metadata"]["namespace"] == ns and made["data"] == {"k": "1"}
    got = await client.get("configmaps", "a", namespace=ns)
    assert got["metadata"]["uid"] == made["metadata"]["uid"]
    got["data"]["k"] = "2"
    updated = await client.update(got)
    assert updated["data"]["k"] == "2"
    assert int(updated["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])
    merged = await client.patch("cm", "a", {"data": {"m": "x"}}, namespace=ns)
    assert merged["data"] == {"k": "2", "m": "x"}
    jsonp = await client.patch("cm", "a", [{"op": "remove", "path": "/data/m"}], namespace=ns,
                               patch_type="json")
    assert jsonp["data"] == {"k": "2"}
    await client.delete("configmaps", "a", namespace=ns)
    with pytest.raises(errors.NotFound):
        await client.get("configmaps", "a", namespace=ns)


async def test_strategic_patch_merges_containers_by_name(client, ns):
    p = pod("web")
    p["spec"]["containers"].append({"name": "side", "image": "busybox"})
    await client.create(p, namespace=ns)
    out = await client.patch("pods", "web", {"spec": {"containers": [{"name": "side", "image": "alpine"}]}},
                             namespace=ns, patch_type="strategic")
    assert [(c["name"], c["image"]) for c in out["spec"]["containers"]] == [("c", "busybox"), ("side", "alpine")]


async def test_list_selectors_paging_and_delete_collection(client, ns):
    for i in range(5):
        body = cm(f"c{i}")
        body["metadata"]["labels"] = {"parity": "even" if i % 2 == 0 else "odd"}
        await client.create(body, namespace=ns)
    even = await client.list("configmaps", namespace=ns, label_selector="parity=even")
    assert sorted(o["metadata"]["name"] for o in even["items"]) == ["c0", "c2", "c4"]
    page1 = await client.list("configmaps", namespace=ns, limit=2)
    assert len(page1["items"]) == 2 and page1["metadata"]["continue"]
    rest = await client.list("configmaps", namespace=ns, limit=10, continue_=page1["metadata"]["continue"])
    assert len(page1["items"]) + len(rest["items"]) == 5
    everywhere = await client.list("configmaps", namespace=ALL, field_selector=f"metadata.namespace={ns}")
    assert len(everywhere["items"]) == 5
    await client.delete_collection("configmaps", namespace=ns, label_selector="parity=odd")
    left = await client.list("configmaps", namespace=ns)
    assert sorted(o["metadata"]["name"] for o in left["items"]) == ["c0", "c2", "c4"]


async def test_subresources_status_scale_binding_log(client, ns):
    await client.create(pod("p"), namespace=ns)
    p = await client.get("pods", "p", namespace=ns)
    p["status"] = {"phase": "Running"}
    p["spec"]["containers"][0]["image"] = "ignored-by-status-writes"
    out = await client.update_status(p)
    assert out["status"]["phase"] == "Running" and out["spec"]["containers"][0]["image"] == "busybox"
    await client.bind("p", "node-1", namespace=ns)
    assert (await client.get("pods", "p", namespace=ns))["spec"]["nodeName"] == "node-1"
    with pytest.raises(errors.Conflict):
        await client.bind("p", "node-2", namespace=ns)
    with pytest.raises(errors.BadRequest):
        await client.log("p", namespace=ns)  # no kubelet serves logs yet

    await client.create(deployment("d", replicas=2), namespace=ns)
    assert (await client.get_scale("deployments", "d", namespace=ns))["spec"]["replicas"] == 2
    await client.scale("deployments", "d", 5, namespace=ns)
    assert (await client.get("deploy", "d", namespace=ns))["spec"]["replicas"] == 5


async def test_typed_errors_from_the_real_server(client, ns):
    with pytest.raises(errors.NotFound) as e:
        await client.get("pods", "missing", namespace=ns)
    assert e.value.code == 404 and e.value.name == "missing"

    await client.create(cm("dup"), namespace=ns)
    with pytest.raises(errors.AlreadyExists) as e:
        await client.create(cm("dup"), namespace=ns)
    assert e.value.code == 409

    stale = await client.get("configmaps", "dup", namespace=ns)
    await client.update({**stale, "data": {"x": "1"}})
    with pytest.raises(errors.Conflict) as e:
        await client.update({**stale, "data": {"x": "2"}})
    assert e.value.code == 409 and not isinstance(e.value, errors.AlreadyExists)

    bad = pod("Bad_Name")
    bad["spec"]["containers"] = []
    with pytest.raises(errors.Invalid) as e:
        await client.create(bad, namespace=ns)
    assert e.value.code == 422
    fields = {c.get("field") for c in e.value.causes}
    assert "metadata.name" in fields and any("containers" in (f or "") for f in fields)


def status(code, reason, message="m", **details):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message, "details": details}


@pytest.mark.parametrize("code,body,cls", [
    (401, status(401, "Unauthorized"), errors.Unauthorized),
    (403, status(403, "Forbidden"), errors.Forbidden),
    (404, status(404, "NotFound", name="x", kind="pods"), errors.NotFound),
    (409, status(409, "AlreadyExists"), errors.AlreadyExists),
    (409, status(409, "Conflict"), errors.Conflict),
    (410, status(410, "Expired"), errors.Gone),
    (413, status(413, "RequestEntityTooLarge"), errors.TooLarge),
    (422, status(422, "Invalid", causes=[{"field": "spec", "message": "bad"}]), errors.Invalid),
    (504, status(504, "Timeout"), errors.ServerTimeout),
    (403, b"plain text forbidden", errors.Forbidden),
    (502, b"<html>bad gateway</html>", errors.APIError),
])
async def test_error_answers_map_to_typed_errors(code, body, cls):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    transport = httpx.MockTransport(lambda req: httpx.Response(code, content=content))
    async with Client("http://test", transport=transport, max_retries=0) as c:
        with pytest.raises(cls) as e:
            await c.get("pods", "x", namespace="default")
    assert e.value.code == code
    if cls is errors.Invalid:
        assert e.value.causes == [{"field": "spec", "message": "bad"}]


class Flaky:
    """A transport that fails the first `n` requests with `exc` (or a response)."""

    def __init__(self, n, failure):
        self.n, self.failure, self.calls = n, failure, 0

    def __call__(self, request):
        self.calls += 1
        if self.calls <= self.n:
            if isinstance(self.failure, httpx.Response):
                return self.failure
            raise self.failure("boom", request=request)
        return httpx.Response(200 if request.method == "GET" else 201, json={"kind": "Pod"})


@pytest.mark.parametrize("method,failure,retried", [
    ("GET", httpx.ConnectError, True),
    ("POST", httpx.ConnectError, True),       # nothing was sent: safe for any verb
    ("GET", httpx.ReadError, True),
    ("POST", httpx.ReadError, False),         # the server may have acted on it
    ("POST", httpx.Response(429, headers={"retry-after": "0"}), True),
    ("GET", httpx.Response(503, headers={"retry-after": "0"}), True),
    ("POST", httpx.Response(503, headers={"retry-after": "0"}), False),
    ("GET", httpx.Response(500), False),      # no Retry-After: the server did not ask
])
async def test_retries_only_where_safe(method, failure, retried):
    flaky = Flaky(2, failure)
    async with Client("http://test", transport=httpx.MockTransport(flaky), backoff=0.001) as c:
        call = c.get("pods", "x", namespace="d") if method == "GET" else \
            c.create(pod("x"), namespace="d")
        if retried:
            assert await call == {"kind": "Pod"}
            assert flaky.calls == 3
        else:
            with pytest.raises((httpx.TransportError, errors.APIError)):
                await call
            assert flaky.calls == 1


async def test_retries_are_bounded():
    async with Client(f"http://127.0.0.1:{free_port()}", max_retries=3, backoff=0.001) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get("pods", "x", namespace="default")


async def test_connections_are_kept_alive_and_reused(apiserver, ns):
    transport = LeanTransport(ssl_context=apiserver.connection().ssl_context())
    async with Client(apiserver.connection(), transport=transport) as c:
        for _ in range(20):
            await c.list("configmaps", namespace=ns)
    assert transport.connections_opened == 1, "sequential requests should share one pooled connection"


async def test_retry_on_conflict_converges_with_concurrent_writers(client, ns):
    await client.create(cm("counter", n="0"), namespace=ns)
    writers, increments = 8, 5
    conflicts = 0

    async def increment():
        nonlocal conflicts
        current = await client.get("configmaps", "counter", namespace=ns)
        current["data"]["n"] = str(int(current["data"]["n"]) + 1)
        try:
            return await client.update(current)
        except errors.Conflict:
            conflicts += 1
            raise

    async def writer():
        for _ in range(increments):
            await retry_on_conflict(increment, steps=100)
    await asyncio.gather(*(writer() for _ in range(writers)))
    final = await client.get("configmaps", "counter", namespace=ns)
    assert final["data"]["n"] == str(writers * increments)
    assert conflicts > 0, "the writers should really have contended"


async def test_retry_on_conflict_gives_up_after_its_steps():
    calls = 0

    async def always_conflicts():
        nonlocal calls
        calls += 1
        raise errors.Conflict("nope")
    with pytest.raises(errors.Conflict):
        await retry_on_conflict(always_conflicts, steps=3, backoff=0.001)
    assert calls == 3


async def test_discovery_adds_what_the_server_serves(apiserver):
    async with Client(apiserver.connection(), resources=Resources(())) as c:
        with pytest.raises(errors.NotFound):
            c.resources.get("leases")
        await c.discover()
        lease = c.resources.get("leases")
        assert (lease.group, lease.version, lease.namespaced) == ("coordination.k8s.io", "v1", True)
        assert "binding" in c.resources.get("po").subresources


def test_sync_client_for_the_cli(apiserver, ns):
    with SyncClient(apiserver.connection()) as c:
        c.create(cm("s", a="1"), namespace=ns)
        assert c.get("configmaps", "s", namespace=ns)["data"] == {"a": "1"}
        rv = c.list("configmaps", namespace=ns)["metadata"]["resourceVersion"]
        c.patch("configmaps", "s", {"data": {"a": "2"}}, namespace=ns)
        for event in c.watch("configmaps", namespace=ns, resource_version=rv):
            assert event.type == "MODIFIED" and event.object["data"] == {"a": "2"}
            break
        with pytest.raises(errors.NotFound):
            c.get("configmaps", "nope", namespace=ns)
