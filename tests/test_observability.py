"""The observability pieces every component shares: health checks with
k8s.io/apiserver's healthz answers, the component server (real uvicorn on a free port,
scraped with an HTTP client and parsed with prometheus_client's parser), client/'s
workqueue and REST client metrics, and klog-like logging."""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.clock import FakeClock
from client.componentserver import ComponentServer, informer_sync_check, leader_election_check
from client.rest import Client
from client.workqueue import RateLimitingQueue, WorkQueue
from machinery import errors, klog
from machinery.healthz import Health, named_check


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fail(reason: str):
    def check():
        raise RuntimeError(reason)
    return check


# -- health checks -----------------------------------------------------------------------

async def test_healthz_answers_as_kubernetes_does():
    h = Health()
    h.add(named_check("log", lambda: None))
    h.add(named_check("etcd", fail("connection refused")), endpoints=["readyz"])
    assert await h.respond("healthz") == (200, "ok")
    assert await h.respond("healthz", verbose=True) == (
        200, "[+]ping ok\n[+]log ok\nhealthz check passed\n")
    # A failure is always verbose, and its reason is withheld on the public endpoint...
    assert await h.respond("readyz") == (
        500, "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\nreadyz check failed\n")
    # ...but given on the check's own path.
    assert await h.respond_check("readyz", "etcd") == (500, "internal server error: connection refused\n")
    assert await h.respond_check("readyz", "ping") == (200, "ok")
    assert await h.respond_check("livez", "etcd") is None
    assert await h.respond("readyz", verbose=True, exclude=["etcd", "nope"]) == (
        200, "[+]ping ok\n[+]log ok\n[+]etcd excluded: ok\n"
             'warn: some health checks cannot be excluded: no matches for "nope"\nreadyz check passed\n')


async def test_handle_routes_paths_and_queries():
    h = Health()
    h.add(named_check("etcd", fail("down")), endpoints=["readyz"])
    assert await h.handle("/livez") == (200, "ok")
    assert await h.handle("/readyz", "exclude=etcd&verbose") == (
        200, "[+]ping ok\n[+]etcd excluded: ok\nreadyz check passed\n")
    assert await h.handle("/readyz/etcd") == (500, "internal server error: down\n")
    assert await h.handle("/healthz/etcd") is None
    assert await h.handle("/metrics") is None
    assert await h.handle("/readyz/etcd/x") is None


async def test_a_hung_async_check_fails_instead_of_hanging_the_probe():
    h = Health(timeout=0.05)

    async def hangs():
        await asyncio.Event().wait()
    h.add(named_check("etcd", hangs))
    code, body = await h.respond("livez")
    assert code == 500 and "[-]etcd failed: reason withheld" in body
    assert (await h.respond_check("livez", "etcd"))[1].startswith("internal server error: no answer")


def test_a_check_name_is_unique_per_endpoint():
    h = Health()
    with pytest.raises(ValueError, match="already"):
        h.add(named_check("ping", lambda: None))
    with pytest.raises(ValueError, match="unknown health endpoint"):
        h.add(named_check("x", lambda: None), endpoints=["health"])
    with pytest.raises(ValueError):
        named_check("a/b", lambda: None)


# -- the component server ------------------------------------------------------------------

@pytest.fixture
async def server():
    s = ComponentServer()
    await s.start("127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.port}") as c:
        yield s, c
    await s.stop()


async def test_component_server_serves_health_and_metrics(server):
    s, c = server
    ready = {"synced": False}

    def synced():
        if not ready["synced"]:
            raise RuntimeError("waiting for handlers to sync")
    s.health.add(named_check("sched-handler-sync", synced), endpoints=["readyz"])

    r = await c.get("/healthz")
    assert (r.status_code, r.text, r.headers["content-type"]) == (200, "ok", "text/plain; charset=utf-8")
    r = await c.get("/readyz", params={"verbose": ""})
    assert r.status_code == 500
    assert r.text == "[+]ping ok\n[-]sched-handler-sync failed: reason withheld\nreadyz check failed\n"
    r = await c.get("/readyz/sched-handler-sync")
    assert (r.status_code, r.text) == (500, "internal server error: waiting for handlers to sync\n")
    r = await c.get("/readyz?exclude=sched-handler-sync")
    assert (r.status_code, r.text) == (200, "ok")
    ready["synced"] = True
    r = await c.get("/readyz?verbose")
    assert (r.status_code, r.text) == (200, "[+]ping ok\n[+]sched-handler-sync ok\nreadyz check passed\n")
    assert (await c.get("/livez/ping")).text == "ok"
    assert (await c.get("/livez/sched-handler-sync")).status_code == 404
    r = await c.get("/nothing")
    assert (r.status_code, r.text) == (404, "404 page not found\n")
    assert (await c.post("/healthz")).status_code == 405

    r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = samples(r.text)
    assert m[("process_cpu_seconds_total", ())] > 0
    assert m[("process_resident_memory_bytes", ())] > 1e6
    assert not any(name.endswith("_created") for name, _ in m)
    r = await c.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text") and r.text.endswith("# EOF\n")


async def test_a_taken_port_is_an_error_to_the_caller(server):
    s, _ = server
    other = ComponentServer()
    with pytest.raises(OSError):
        await other.start("127.0.0.1", s.port)


class _Elector:
    name = "kube-scheduler"

    def __init__(self):
        self.stuck = False

    def is_leader(self):
        return True

    def check(self, timeout):
        if self.stuck:
            raise RuntimeError("failed election to renew leadership on lease kube-scheduler")


class _Informer:
    class resource:
        plural = "pods"

    def __init__(self):
        self.synced = False

    def has_synced(self):
        return self.synced


async def test_client_checks_name_what_they_wait_for():
    h = Health()
    elector, informer = _Elector(), _Informer()
    h.add(leader_election_check(elector))
    h.add(informer_sync_check([informer]), endpoints=["readyz"])
    assert await h.respond_check("readyz", "informer-sync") == (
        500, "internal server error: 1 informers not started yet: ['pods']\n")
    informer.synced = True
    assert await h.respond("readyz") == (200, "ok")
    elector.stuck = True
    assert (await h.respond("livez"))[0] == 500
    assert "leaderElection failed: reason withheld" in (await h.respond("healthz"))[1]


async def test_leader_elector_check_fails_only_for_a_leader_past_its_lease():
    from client.leaderelection import LeaderElector
    clock = FakeClock()
    async with Client("http://127.0.0.1:1") as client:  # never called
        e = LeaderElector(client, name="x", namespace="default", identity="me",
                          on_started_leading=asyncio.sleep, lease_duration=15, renew_deadline=10,
                          retry_period=2, clock=clock)
        clock.step(1000)
        e.check(20)  # not leading: healthy
        e._leading, e._observed_at = True, clock.now()
        clock.step(30)
        e.check(20)  # 30 s < 15 + 20
        clock.step(10)
        with pytest.raises(RuntimeError, match="failed election to renew leadership on lease x"):
            e.check(20)


# -- client/ metrics ---------------------------------------------------------------------------

async def test_workqueue_metrics_move_with_adds_gets_and_retries(server):
    _, c = server
    clock = FakeClock()
    q = RateLimitingQueue(clock=clock, name="obs-test")
    unnamed = WorkQueue(clock=clock)

    async def scrape():
        return samples((await c.get("/metrics")).text)
    label = (("name", "obs-test"),)
    before = await scrape()
    adds0 = before.get(("workqueue_adds_total", label), 0)
    for key in ("a", "b", "a"):  # the second "a" is already queued: not an add
        q.add(key)
    unnamed.add("z")
    m = await scrape()
    assert m[("workqueue_adds_total", label)] == adds0 + 2
    assert m[("workqueue_depth", label)] == 2
    assert not any(dict(lbl).get("name") == "" for _, lbl in m)  # unnamed queues report nothing

    clock.step(2.0)
    key = await q.get()
    clock.step(3.0)
    m = await scrape()
    assert m[("workqueue_depth", label)] == 1
    assert m[("workqueue_queue_duration_seconds_count", label)] >= 1
    assert m[("workqueue_queue_duration_seconds_sum", label)] >= 2.0
    assert m[("workqueue_unfinished_work_seconds", label)] == 3.0
    assert m[("workqueue_longest_running_processor_seconds", label)] == 3.0
    q.done(key)
    q.add_rate_limited(key)
    m = await scrape()
    assert m[("workqueue_work_duration_seconds_sum", label)] >= 3.0
    assert m[("workqueue_longest_running_processor_seconds", label)] == 0
    assert m[("workqueue_retries_total", label)] == before.get(("workqueue_retries_total", label), 0) + 1
    q.shutdown()


async def test_rest_client_metrics_count_requests_by_code_and_time_them(apiserver, server, ns):
    _, c = server
    host = apiserver.url.split("//", 1)[1]
    req = lambda code, method: ("rest_client_requests_total",  # noqa: E731
                                (("code", code), ("host", host), ("method", method)))
    lat = ("rest_client_request_duration_seconds_count", (("host", host), ("verb", "GET")))
    before = samples((await c.get("/metrics")).text)
    async with Client(apiserver.connection()) as client:
        await client.get("namespaces", ns)
        await client.list("pods", namespace=ns)
        with pytest.raises(errors.NotFound):
            await client.get("pods", "absent", namespace=ns)
    m = samples((await c.get("/metrics")).text)
    assert m[req("200", "GET")] - before.get(req("200", "GET"), 0) == 2
    assert m[req("404", "GET")] - before.get(req("404", "GET"), 0) == 1
    assert m[lat] - before.get(lat, 0) == 3

    async with Client("http://127.0.0.1:1", max_retries=1, backoff=0.001) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("pods", "x", namespace="default")
    m = samples((await c.get("/metrics")).text)
    assert m[("rest_client_requests_total",
              (("code", "<error>"), ("host", "127.0.0.1:1"), ("method", "GET")))] >= 2  # each try


# -- logging ----------------------------------------------------------------------------------

@pytest.fixture
def logged():
    """A stream to log to; the root logger as it was afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO()
    klog.setup(0, stream=io.StringIO())  # the verbosity back to 0
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_verbosity_flags_select_what_is_logged(logged):
    p = argparse.ArgumentParser()
    klog.add_flags(p)
    args = p.parse_args(["-v=2"])
    assert (args.v, args.logging_format) == (2, "text")
    assert p.parse_args(["--v", "3", "--logging-format=json"]).v == 3
    with pytest.raises(SystemExit):
        p.parse_args(["-v", "-1"])
    klog.setup_from_args(args, stream=logged)
    log = logging.getLogger("minik8s.test")
    log.info("shown at 0")
    log.log(klog.V(2), "shown at 2")
    log.log(klog.V(3), "hidden at 3")
    log.debug("hidden debug")
    log.warning("a warning")
    lines = logged.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["shown at 0", "shown at 2", "a warning"]
    assert lines[0][0] == "I" and lines[2][0] == "W"
    assert "test_observability.py:" in lines[0]
    assert klog.enabled(2) and not klog.enabled(3)
    assert klog.verbosity_of(logging.DEBUG) == 4 and klog.verbosity_of(logging.ERROR) == 0


def test_structured_records_in_text_and_json(logged):
    klog.setup(4, "text", stream=logged)
    log = logging.getLogger("minik8s.test")
    klog.info_s(log, 2, "Pod status updated", pod="default/nginx", ready=True, body="a\nb")
    assert logged.getvalue().split("] ", 1)[1] == (
        '"Pod status updated" pod="default/nginx" ready=true body=<\n\ta\n\tb\n >\n')

    out = io.StringIO()
    klog.setup(4, "json", stream=out)
    klog.info_s(log, 2, "Pod status updated", pod="default/nginx")
    log.debug("debugging %d", 7)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "Pod status updated" and first["v"] == 2 and first["pod"] == "default/nginx"
    assert isinstance(first["ts"], float) and first["caller"].startswith("test_observability.py:")
    assert second["msg"] == "debugging 7" and second["v"] == 4
    assert third["msg"] == "it failed" and third["err"] == "boom" and "v" not in third
    with pytest.raises(ValueError):
        klog.setup(0, "yaml")
