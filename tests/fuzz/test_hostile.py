"""Hostile objects against a real API server (issue 19): each gets a 4xx Status or, where
Kubernetes accepts it, is stored whole; never a 5xx, nothing half-stored, and the
server's memory stays bounded while it answers them."""
from __future__ import annotations

import orjson
import pytest

from machinery.quantity import parse_quantity

MiB = 1024 * 1024


def _rss(apiserver) -> int:
    with open(f"/proc/{apiserver.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _status(r, code: int) -> dict:
    assert r.status_code == code, (r.status_code, r.text[:300])
    body = r.json()
    assert body["kind"] == "Status" and body["code"] == code
    return body


def _post(http, path: str, body) -> object:
    return http.post(path, content=body if isinstance(body, bytes) else orjson.dumps(body),
                     headers={"content-type": "application/json"})


def test_an_object_too_large_for_etcd_or_the_request_limit_is_413(http, ns):
    # Kubernetes: 3 MiB is the request limit; a ConfigMap's data is at most 1 MiB (422);
    # a 2 MiB Secret-free object fits neither etcd's 1.5 MiB request limit: 413.
    over = {"metadata": {"name": "over"}, "data": {"k": "x" * (3 * MiB + 1)}}
    _status(_post(http, f"/api/v1/namespaces/{ns}/configmaps", over), 413)
    cm = {"metadata": {"name": "cm"}, "data": {"k": "x" * (MiB + 1)}}
    _status(_post(http, f"/api/v1/namespaces/{ns}/configmaps", cm), 422)
    big = {"metadata": {"name": "big", "annotations": {"a": "x"}},
           "spec": {"containers": [{"name": "c", "image": "busybox",
                                    "env": [{"name": f"E{i}", "value": "x" * 1000} for i in range(2000)]}]}}
    r = _post(http, f"/api/v1/namespaces/{ns}/pods", big)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    for name in ("over", "cm"):
        assert http.get(f"/api/v1/namespaces/{ns}/configmaps/{name}").status_code == 404
    assert http.get(f"/api/v1/namespaces/{ns}/pods/big").status_code == 404


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("where", ["spec", "metadata.annotations", "data"])
def test_nesting_a_thousand_deep_is_a_4xx(http, ns, where):
    path = f"/api/v1/namespaces/{ns}/{'configmaps' if where == 'data' else 'pods'}"
    if where == "data":
        body = b'{"metadata":{"name":"deep"},"data":' + _deep(1000) + b"}"
    elif where == "spec":
        body = (b'{"metadata":{"name":"deep"},"spec":{"containers":[{"name":"c","image":"busybox","extra":'
                + _deep(1000) + b"}]}}")
    else:
        body = b'{"metadata":{"name":"deep","annotations":' + _deep(1000) + b'},"spec":{"containers":' \
            b'[{"name":"c","image":"busybox"}]}}'
    r = _post(http, path, body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["kind"] == "Status"
    assert http.get(f"{path}/deep").status_code == 404


def test_ten_thousand_labels_are_stored_whole_or_refused(http, ns):
    # Kubernetes has no limit on the number of labels, only on each key and value and on
    # the request's size: 10,000 valid labels are stored, and selectable.
    labels = {f"l{i}": f"v{i}" for i in range(10_000)}
    body = {"metadata": {"name": "many", "labels": labels}, "data": {}}
    r = _post(http, f"/api/v1/namespaces/{ns}/configmaps", body)
    assert r.status_code == 201, r.text[:300]
    got = http.get(f"/api/v1/namespaces/{ns}/configmaps/many").json()
    assert got["metadata"]["labels"] == labels
    items = http.get(f"/api/v1/namespaces/{ns}/configmaps", params={"labelSelector": "l9999=v9999"}).json()
    assert [i["metadata"]["name"] for i in items["items"]] == ["many"]
    bad = {"metadata": {"name": "many-bad", "labels": {**labels, "bad key!": "v"}}, "data": {}}
    body = _status(_post(http, f"/api/v1/namespaces/{ns}/configmaps", bad), 422)
    assert any("bad key!" in c.get("field", "") + c.get("message", "") for c in body["details"]["causes"])


@pytest.mark.parametrize("name", ["caf\u00e9", "nul\x00byte", "\u202eevil", "a" * 254, "emoji-\U0001F600",
                                  "..", ".", "a/b", "a%2Fb", " lead", "UPPER"])
def test_names_outside_the_dns_grammar_are_refused(http, ns, name):
    body = {"metadata": {"name": name}, "data": {}}
    r = _post(http, f"/api/v1/namespaces/{ns}/configmaps", body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["kind"] == "Status"
    names = [i["metadata"]["name"] for i in http.get(f"/api/v1/namespaces/{ns}/configmaps").json()["items"]]
    assert name not in names


@pytest.mark.parametrize("resources", [
    b'{"limits":{"memory":"' + b"9" * 40 + b'"}}', b'{"limits":{"cpu":"1e999999"}}',
    b'{"requests":{"memory":' + str(2 ** 70).encode() + b"}}", b'{"limits":{"memory":"99999999999999999999Ei"}}',
    b'{"limits":{"cpu":-1}}', b'{"limits":{"cpu":1e308}}'])
def test_quantities_that_overflow_int64_are_kept_exactly_or_refused(http, ns, resources):
    # Kubernetes parses quantities with arbitrary precision (inf.Dec): a huge one is valid
    # and stored exactly; a negative one is refused. Never a 5xx, and never a changed value.
    body = (b'{"metadata":{"name":"q"},"spec":{"containers":[{"name":"c","image":"busybox","resources":'
            + resources + b"}]}}")
    r = _post(http, f"/api/v1/namespaces/{ns}/pods", body)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code == 201:
        sent = orjson.loads(resources) if b"e999999" not in resources else None
        stored = r.json()["spec"]["containers"][0]["resources"]
        for part, values in sent.items():
            for k, v in values.items():
                assert parse_quantity(stored[part][k]) == parse_quantity(v if not isinstance(v, float) else repr(v))
    else:
        assert 400 <= r.status_code < 500 and r.json()["kind"] == "Status"
        assert http.get(f"/api/v1/namespaces/{ns}/pods/q").status_code == 404
    http.delete(f"/api/v1/namespaces/{ns}/pods/q", params={"gracePeriodSeconds": "0"})


@pytest.mark.parametrize("port", ["0", "-1", "65536", str(2 ** 31), str(2 ** 63), str(2 ** 64 + 1), "1.5", '"80"'])
def test_ports_out_of_range_or_of_the_wrong_type_are_refused(http, ns, port):
    body = (b'{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox",'
            b'"ports":[{"containerPort":' + port.encode() + b"}]}]}}")
    r = _post(http, f"/api/v1/namespaces/{ns}/pods", body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    svc = b'{"metadata":{"name":"s"},"spec":{"ports":[{"port":' + port.encode() + b"}]}}"
    r = _post(http, f"/api/v1/namespaces/{ns}/services", svc)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert http.get(f"/api/v1/namespaces/{ns}/pods/p").status_code == 404
    assert http.get(f"/api/v1/namespaces/{ns}/services/s").status_code == 404


def test_memory_stays_bounded_while_answering_hostile_objects(apiserver, http, ns):
    """Fifty 2.9 MiB bodies and fifty deep ones: the server's RSS grows by far less than
    what it was sent (it keeps none of it)."""
    before = _rss(apiserver)
    big = orjson.dumps({"metadata": {"name": "big"}, "data": {"k": "x" * (3 * MiB - 200)}})
    deep = b'{"metadata":{"name":"deep"},"data":' + b'{"a":' * 5000 + b"1" + b"}" * 5001
    for _ in range(50):
        assert 400 <= _post(http, f"/api/v1/namespaces/{ns}/configmaps", big).status_code < 500
        assert 400 <= _post(http, f"/api/v1/namespaces/{ns}/configmaps", deep).status_code < 500
    grown = _rss(apiserver) - before
    assert grown < 50 * MiB, f"RSS grew by {grown / MiB:.0f} MiB after 150 MiB of hostile bodies"
