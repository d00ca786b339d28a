"""The resuming watch: against scripted streams (MockTransport) for the wire cases, and
against a real API server that is restarted under it."""
import asyncio

import httpx
import orjson
import pytest

from client.rest import Client
from client.watch import Event, Watch
from machinery import errors
from tests.procs import APIServer


def line(type_, rv, name="a"):
    return orjson.dumps({"type": type_, "object": {
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "d", "resourceVersion": str(rv)}}}) + b"\n"


def error_line(code, reason):
    return orjson.dumps({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
        "message": "scripted"}}) + b"\n"


class Script:
    """Answers each watch request with the next scripted response, recording params."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.params: list[dict] = []

    def __call__(self, request: httpx.Request):
        self.params.append(dict(request.url.params))
        answer = self.answers.pop(0)
        if isinstance(answer, type) and issubclass(answer, Exception):
            raise answer("scripted failure", request=request)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, content=answer, headers={"content-type": "application/json"})


async def collect(watch: Watch, n: int) -> list[Event]:
    out = []
    async for ev in watch:
        out.append(ev)
        if len(out) == n:
            break
    return out


async def test_resumes_from_the_last_revision_and_bookmarks_advance_it():
    script = Script(line("ADDED", 6) + line("BOOKMARK", 9),   # then the server times out
                    httpx.ConnectError,                        # the server is away
                    line("MODIFIED", 10) + line("DELETED", 11),
                    error_line(410, "Expired"))
    async with Client("http://t", transport=httpx.MockTransport(script)) as c:
        w = Watch(c, "configmaps", namespace="d", resource_version="5", backoff=0.001)
        events = await collect(w, 4)
        assert [(e.type, e.object["metadata"]["resourceVersion"]) for e in events] == [
            ("ADDED", "6"), ("BOOKMARK", "9"), ("MODIFIED", "10"), ("DELETED", "11")]
        assert w.resource_version == "11"
        with pytest.raises(errors.Gone):
            await collect(w, 1)
    assert [p["resourceVersion"] for p in script.params] == ["5", "9", "9", "11"]
    assert all(p["watch"] == "true" and p["allowWatchBookmarks"] == "true" and
               int(p["timeoutSeconds"]) > 0 for p in script.params)


async def test_events_split_across_chunks_blank_lines_and_an_unended_last_line():
    big = orjson.dumps({"type": "ADDED", "object": {
        "kind": "ConfigMap", "apiVersion": "v1", "data": {"x": "y" * 300_000},
        "metadata": {"name": "big", "namespace": "d", "resourceVersion": "7"}}}) + b"\n"
    wire = line("ADDED", 6) + b"\n" + big + line("MODIFIED", 8)[:-1]  # the last without its \n
    pieces = [wire[i:i + 1000] for i in range(0, len(wire), 1000)]

    async def stream():
        for p in pieces:
            yield p
    script = Script(httpx.Response(200, content=stream()))
    async with Client("http://t", transport=httpx.MockTransport(script)) as c:
        events = await collect(Watch(c, "configmaps", namespace="d", resource_version="5"), 3)
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"), ("ADDED", "big"), ("MODIFIED", "a")]
    assert len(events[1].object["data"]["x"]) == 300_000


async def test_http_410_before_streaming_is_gone():
    gone = httpx.Response(410, json={"kind": "Status", "code": 410, "reason": "Expired",
                                     "message": "too old resource version"})
    async with Client("http://t", transport=httpx.MockTransport(Script(gone))) as c:
        with pytest.raises(errors.Gone):
            await collect(Watch(c, "configmaps", namespace="d", resource_version="1"), 1)


async def test_server_trouble_is_retried_and_client_errors_are_raised():
    script = Script(error_line(500, "InternalError"),
                    httpx.Response(429, json={"kind": "Status", "code": 429, "reason": "TooManyRequests"}),
                    line("ADDED", 3),
                    httpx.Response(403, json={"kind": "Status", "code": 403, "reason": "Forbidden"}))
    async with Client("http://t", transport=httpx.MockTransport(script)) as c:
        w = Watch(c, "configmaps", namespace="d", resource_version="2", backoff=0.001)
        assert [e.type for e in await collect(w, 1)] == ["ADDED"]
        with pytest.raises(errors.Forbidden):
            await collect(w, 1)


async def test_watch_resumes_across_an_apiserver_restart_without_loss_or_repeats(etcd):
    server = await asyncio.to_thread(APIServer(etcd.url).start)
    try:
        async with Client(server.connection()) as c:
            await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "wr"}})
            rv = (await c.list("configmaps", namespace="wr"))["metadata"]["resourceVersion"]
            w = Watch(c, "configmaps", namespace="wr", resource_version=rv, backoff=0.02,
                      max_backoff=0.2)
            seen: list[tuple[str, str]] = []

            async def consume():
                async for ev in w:
                    if ev.type != "BOOKMARK":
                        seen.append((ev.type, ev.object["metadata"]["name"]))
            task = asyncio.create_task(consume())
            await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "before"}},
                           namespace="wr")
            await eventually(lambda: len(seen) == 1)
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}},
                           namespace="wr")
            await eventually(lambda: len(seen) == 2)
            task.cancel()
            assert seen == [("ADDED", "before"), ("ADDED", "after")]
    finally:
        server.stop()


async def eventually(cond, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)
