"""The API server's /metrics (kube-apiserver's names and labels) and its health checks,
against a real etcd and a real `minik8s apiserver` process."""
from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import APIServer, Etcd, wait_for
from tests.util import WatchReader


def samples(http: httpx.Client) -> dict[tuple[str, frozenset], float]:
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def value(all_: dict, name: str, **labels: str) -> float:
    return all_.get((name, frozenset(labels.items())), 0.0)


REQ = dict(dry_run="", group="", version="v1", resource="configmaps", subresource="",
           component="apiserver")


def test_request_metrics_have_kube_apiserver_labels(http, ns):
    before = samples(http)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"a": "1"}}
    assert http.post(f"/api/v1/namespaces/{ns}/configmaps", json=cm).status_code == 201
    assert http.post(f"/api/v1/namespaces/{ns}/configmaps", json=cm).status_code == 409
    assert http.post(f"/api/v1/namespaces/{ns}/configmaps?dryRun=All",
                     json={**cm, "metadata": {"name": "d"}}).status_code == 201
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/m").status_code == 200
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps").status_code == 200
    assert http.get("/api/v1/configmaps").status_code == 200
    applied = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\ndata: {b: '2'}\n"
    assert http.patch(f"/api/v1/namespaces/{ns}/configmaps/m?fieldManager=t", content=applied,
                      headers={"content-type": "application/apply-patch+yaml"}).status_code == 200
    after = samples(http)

    def delta(code: str, **labels: str) -> float:
        key = {**REQ, **labels, "code": code}
        return value(after, "apiserver_request_total", **key) - value(before, "apiserver_request_total", **key)

    assert delta("201", verb="POST", scope="namespace") == 1
    assert delta("409", verb="POST", scope="namespace") == 1
    assert delta("201", verb="POST", scope="namespace", dry_run="All") == 1
    assert delta("200", verb="GET", scope="resource") == 1
    assert delta("200", verb="LIST", scope="namespace") == 1
    assert delta("200", verb="LIST", scope="cluster") == 1
    assert delta("200", verb="APPLY", scope="resource") == 1
    count = {**REQ, "verb": "POST", "scope": "namespace"}
    assert (value(after, "apiserver_request_duration_seconds_count", **count)
            - value(before, "apiserver_request_duration_seconds_count", **count)) == 2
    assert value(after, "apiserver_request_duration_seconds_bucket", **count, le="60.0") >= 2
    # Every storage call is timed, by operation and resource.
    for op in ("create", "get"):
        assert value(after, "etcd_request_duration_seconds_count", operation=op, type="configmaps") > 0
    assert value(after, "apiserver_storage_objects", resource="configmaps") >= 1
    assert value(after, "apiserver_storage_objects", resource="namespaces") >= 1
    assert value(after, "process_resident_memory_bytes") > 0
    assert ("process_cpu_seconds_total", frozenset()) in after


def test_watch_metrics(apiserver, http, ns):
    pods = dict(group="", version="v1", kind="Pod")
    before = samples(http)
    w = WatchReader(apiserver, f"/api/v1/namespaces/{ns}/configmaps")
    try:
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}}
        assert http.post(f"/api/v1/namespaces/{ns}/configmaps", json=cm).status_code == 201
        w.wait(lambda ev: any(e["type"] == "ADDED" for e in ev))
        during = samples(http)
        labels = dict(verb="WATCH", group="", version="v1", resource="configmaps", subresource="",
                      scope="namespace", component="apiserver")
        assert value(during, "apiserver_longrunning_requests", **labels) >= 1
        cms = dict(group="", version="v1", kind="ConfigMap")
        assert value(during, "apiserver_registered_watchers", **cms) >= 1
        assert (value(during, "apiserver_watch_events_total", **cms)
                - value(before, "apiserver_watch_events_total", **cms)) >= 1
        assert ("apiserver_registered_watchers", frozenset(pods.items())) in during
    finally:
        w.close()
    wait_for(lambda: value(samples(http), "apiserver_longrunning_requests", **labels)
             == value(before, "apiserver_longrunning_requests", **labels), what="watch to end")


def test_health_endpoints_name_their_checks(http):
    for endpoint in ("healthz", "livez", "readyz"):
        r = http.get(f"/{endpoint}")
        assert (r.status_code, r.text) == (200, "ok")
    r = http.get("/readyz?verbose")
    assert r.status_code == 200
    lines = r.text.splitlines()
    for check in ("ping", "log", "etcd", "etcd-readiness", "informer-sync", "shutdown"):
        assert f"[+]{check} ok" in lines
    assert lines[-1] == "readyz check passed"
    assert "[+]informer-sync ok" not in http.get("/livez?verbose").text
    r = http.get("/livez?verbose&exclude=etcd&exclude=nope")
    assert "[+]etcd excluded: ok" in r.text
    assert 'warn: some health checks cannot be excluded: no matches for "nope"' in r.text
    assert (http.get("/readyz/etcd").status_code, http.get("/readyz/etcd").text) == (200, "ok")
    assert http.get("/livez/no-such-check").status_code == 404


def test_readyz_fails_while_etcd_is_down():
    etcd = Etcd().start()
    server = APIServer(etcd.url).start()
    try:
        with server.client(timeout=30) as http:
            etcd.kill()
            wait_for(lambda: http.get("/readyz").status_code == 500, what="readyz to fail")
            r = http.get("/readyz?verbose")
            assert r.status_code == 500
            assert "[-]etcd failed: reason withheld" in r.text.splitlines()
            assert "[+]ping ok" in r.text.splitlines()
            assert r.text.splitlines()[-1] == "readyz check failed"
            r = http.get("/readyz/etcd")
            assert r.status_code == 500 and r.text.startswith("internal server error: ")
            assert http.get("/readyz?exclude=etcd&exclude=etcd-readiness").status_code == 200
            etcd.start()
            wait_for(lambda: http.get("/readyz").status_code == 200, what="readyz to recover")
            assert re.search(r"^\[\+\]etcd ok$", http.get("/readyz?verbose").text, re.M)
    finally:
        server.stop()
        etcd.stop()


def test_exec_upgrade_is_counted_as_kube_apiserver_counts_it(apiserver, http, ns):
    from websockets.exceptions import InvalidStatus
    from client.wsclient import connect

    labels = dict(verb="GET", dry_run="", group="", version="v1", resource="pods", subresource="exec",
                  scope="resource", component="apiserver", code="404")
    before = value(samples(http), "apiserver_request_total", **labels)
    url = apiserver.ws_url(f"/api/v1/namespaces/{ns}/pods/nope/exec?command=ls")
    with pytest.raises(InvalidStatus) as refused:
        connect(url, subprotocols=["v5.channel.k8s.io"], open_timeout=10, ssl=apiserver.ws_ssl()).close()
    assert refused.value.response.status_code == 404
    assert value(samples(http), "apiserver_request_total", **labels) == before + 1
