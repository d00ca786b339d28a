"""schemathesis against the API server's own `/openapi/v3` (issue 19): every path and method,
with bodies, parameters and queries generated from the published schemas (and broken
ones), answered with no 5xx; and nothing that was not acknowledged is stored.

Bounded and reproducible: `MINIK8S_SCHEMATHESIS_EXAMPLES` examples per operation (3 by
default, as CI runs it), derandomized, against an etcd and API server of the module's
own. Requests go to one namespace of the test's own (else nearly every generated
namespace is missing and the body is never read).
"""
from __future__ import annotations

import json
import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

EXAMPLES = int(os.environ.get("MINIK8S_SCHEMATHESIS_EXAMPLES", "3"))
NAMESPACE = "fuzz-schemathesis"


class Record:
    """What the server acknowledged: (api path prefix, namespace, name) of each 2xx write."""

    def __init__(self) -> None:
        self.acknowledged: set[tuple[str, str]] = set()
        self.five_xx: list[str] = []
        self.examples = 0


RECORD = Record()


@pytest.fixture(scope="module")
def fuzz_server(private_apiserver):
    # Its own etcd and server: the fuzzer deletes collections (namespaces, cluster roles)
    # as the cluster's admin, which would wreck a server other tests share.
    apiserver = private_apiserver
    with apiserver.client() as c:
        c.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        index = c.get("/openapi/v3").json()["paths"]
        docs = [c.get(entry["serverRelativeURL"]).json() for entry in index.values()]
    merged: dict = {"openapi": "3.0.0", "info": {"title": "minik8s", "version": "v1.32"},
                    "paths": {}, "components": {"schemas": {}}}
    for doc in docs:
        merged["paths"].update(doc.get("paths") or {})
        merged["components"]["schemas"].update((doc.get("components") or {}).get("schemas") or {})
    session = requests.Session()
    session.verify = os.path.join(apiserver.pki_dir, "ca.crt")
    session.cert = (os.path.join(apiserver.pki_dir, "admin.crt"), os.path.join(apiserver.pki_dir, "admin.key"))
    return apiserver, merged, session


def _operations(merged: dict) -> list:
    schema = schemathesis.openapi.from_dict(merged)
    ops = []
    for result in schema.get_all_operations():
        ops.append(result.ok())  # an operation the schema cannot describe fails here, loudly
    return ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_for_any_request_the_schema_describes(fuzz_server, mode):
    """Every operation of every group-version, with bodies and parameters the schemas
    describe (positive) and ones they forbid (negative)."""
    apiserver, merged, session = fuzz_server
    failures: list[tuple] = []
    unsatisfiable = 0

    for op in _operations(merged):
        params = {"namespace": NAMESPACE} if "{namespace}" in op.path else None
        strategy = op.as_strategy(mode, path_parameters=params)

        @given(strategy)
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        def run(case):
            if case.method.upper() == "GET" and isinstance(case.query, dict) and "watch" in case.query:
                case.query["timeoutSeconds"] = 1  # a watch answers and then closes
            response = case.call(base_url=apiserver.url, session=session, timeout=30,
                                 verify=session.verify, cert=session.cert)
            RECORD.examples += 1
            if response.status_code >= 500:
                req = response.request
                failures.append((req.method, req.url, dict(req.headers), req.body,
                                 response.status_code, response.text[:300]))
            elif case.method.upper() in ("POST", "PUT", "PATCH") and response.status_code < 300:
                try:
                    md = response.json().get("metadata") or {}
                except (ValueError, AttributeError):
                    return
                if md.get("name"):
                    RECORD.acknowledged.add((md.get("namespace") or "", md["name"]))

        try:
            run()
        except Unsatisfiable:
            unsatisfiable += 1  # nothing the schema forbids here (negative mode only)
    print(f"schemathesis {mode.value}: {RECORD.examples} requests so far, {len(failures)} 5xx, "
          f"{unsatisfiable} operations with no {mode.value} case")
    if failures and os.environ.get("MINIK8S_SCHEMATHESIS_DUMP"):
        with open(os.environ["MINIK8S_SCHEMATHESIS_DUMP"], "w") as out:
            json.dump([[m, u, h, b.decode("utf-8", "replace") if isinstance(b, bytes) else b]
                       for m, u, h, b, *_ in failures], out, default=str)
    assert not failures, failures[:5]


def test_nothing_unacknowledged_was_stored(fuzz_server):
    """Runs after the operations above: every object now in the fuzz namespace was
    created by a request the server answered 2xx."""
    apiserver, merged, session = fuzz_server
    if not RECORD.examples:
        pytest.skip("the fuzz run did not happen in this session")
    collections = [p for p in merged["paths"] if p.endswith("}") is False
                   and "/namespaces/{namespace}/" in p and p.count("/") in (5, 6)]
    stray = []
    for path in collections:
        url = apiserver.url + path.replace("{namespace}", NAMESPACE)
        r = session.get(url, timeout=30, verify=session.verify, cert=session.cert)
        if r.status_code != 200:
            continue
        for item in r.json().get("items") or ():
            md = item.get("metadata") or {}
            if (md.get("namespace") or "", md.get("name")) not in RECORD.acknowledged:
                stray.append((path, md.get("name")))
    assert not stray, stray
