"""The kubelet's endpoint under generated requests (issue 19: "the same run covers the
kubelet's endpoint"): a real kubelet with a running pod, and every path it serves
(containerLogs, stats, metrics, healthz, exec and portForward without an upgrade) with
generated path segments, query parameters (tailLines, sinceSeconds, limitBytes,
timestamps, follow, previous, ...) and methods. Each is answered below 500, and the
kubelet lives on. The kubelet has no OpenAPI document to give schemathesis, so the
requests come from hypothesis strategies shaped like its routes. Derandomized and
bounded: MINIK8S_FUZZ_EXAMPLES (default 300); about 20 s beside the kubelet's start."""
from __future__ import annotations

import os

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.procs import wait_for

pytestmark = pytest.mark.host  # a real kubelet: a bridge, cgroups and a pod's namespaces

EXAMPLES = int(os.environ.get("MINIK8S_FUZZ_EXAMPLES", "300"))

SEGMENT = st.one_of(st.sampled_from(["", ".", "..", "%2F", "%00", "a" * 300, "pod", "c"]),
                    st.text(alphabet="abcxyz-._~%0123456789", max_size=12))
VALUE = st.one_of(st.sampled_from(["", "-1", "0", "1", "true", "false", "9" * 30, "1e9", "x", "2024-01-01T00:00:00Z",
                                   "%00", "1.5"]), st.text(max_size=8))
QUERY = st.dictionaries(st.sampled_from(["tailLines", "sinceSeconds", "sinceTime", "limitBytes", "timestamps",
                                         "follow", "previous", "container", "command", "stdin", "stdout",
                                         "tty", "port", "input", "output", "x"]), VALUE, max_size=4)


@pytest.fixture(scope="module")
def kubelet_and_pod(apiserver, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("runs a real pod: needs root")
    from tests.test_kubelet_e2e import TOKEN, KubeletNode, container, create, make_pod, running, wait_pod
    from tests.procs import default_service_account, root_ca_configmap
    node = KubeletNode(apiserver, tmp_path_factory.mktemp("kubelet-fuzz"))
    ns = "fuzz-kubelet"
    with apiserver.client() as http:
        http.post("/api/v1/namespaces", json={"metadata": {"name": ns}})
        default_service_account(http, ns)
        root_ca_configmap(http, ns)  # the pod's token volume projects it
        try:
            node.start()
            create(http, ns, make_pod("talk", node, container("c", ["sh", "-c", "while :; do echo hi; sleep 1; done"])))
            wait_pod(http, ns, "talk", running("c"), "running", timeout=60)
            yield node, ns, {"Authorization": f"Bearer {TOKEN}"}
        finally:
            http.delete(f"/api/v1/namespaces/{ns}/pods/talk", params={"gracePeriodSeconds": "0"})
            node.cleanup()


@st.composite
def requests(draw, ns: str):
    route = draw(st.sampled_from(["logs", "stats", "metrics", "resource", "healthz", "exec", "portforward", "any"]))
    pod, ctr = draw(st.one_of(st.just("talk"), SEGMENT)), draw(st.one_of(st.just("c"), SEGMENT))
    space = draw(st.one_of(st.just(ns), SEGMENT))
    path = {"logs": f"/containerLogs/{space}/{pod}/{ctr}", "stats": "/stats/summary",
            "metrics": "/metrics", "resource": "/metrics/resource", "healthz": "/healthz",
            "exec": f"/exec/{space}/{pod}/{ctr}", "portforward": f"/portForward/{space}/{pod}",
            "any": "/" + "/".join(draw(st.lists(SEGMENT, max_size=4)))}[route]
    method = draw(st.sampled_from(["GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD"]))
    return method, path, draw(QUERY)


def test_no_5xx_for_generated_requests_and_the_kubelet_lives_on(kubelet_and_pod):
    node, ns, auth = kubelet_and_pod
    seen: list[int] = []

    with httpx.Client(base_url=node.url, headers=auth, timeout=10) as c:
        @given(requests(ns))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(request):
            method, path, query = request
            if query.get("follow") in ("true", "1"):
                query = {**query, "follow": "false"}  # a followed log would stream for ever
            r = c.request(method, path, params=query)
            seen.append(r.status_code)
            assert r.status_code < 500, (method, path, query, r.status_code, r.text[:300])

        run()
        assert any(code == 200 for code in seen) and any(400 <= code < 500 for code in seen), sorted(set(seen))
        assert node.proc.alive()
        wait_for(lambda: c.get("/healthz").status_code == 200, what="the kubelet's healthz")
        logs = c.get(f"/containerLogs/{ns}/talk/c", params={"tailLines": "1"})
        assert logs.status_code == 200 and "hi" in logs.text
