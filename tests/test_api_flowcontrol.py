"""API Priority and Fairness (apiserver/flowcontrol/): the default FlowSchemas and
PriorityLevelConfigurations, kubectl's columns for them, validation, and the point of it
all: a user flooding LISTs is refused 429 with Retry-After while a node's and the
controller manager's requests keep being served.

One secure API server of its own (tests/secure.py) with a small concurrency budget
(--max-requests-inflight=4, --max-mutating-requests-inflight=2: one seat per level) and
a short queue wait (--request-timeout=400ms: 100 ms in a queue at most), so the flood
overflows its level within a second. About 45 s on 2 cores, most of it making the PKI
and 600 ConfigMaps.
"""
from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from tests.procs import wait_for
from tests.secure import SecureCluster

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")

FC = "/apis/flowcontrol.apiserver.k8s.io/v1"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
SCHEMAS = {"exempt", "probes", "system-leader-election", "endpoint-controller", "workload-leader-election",
           "system-node-high", "system-nodes", "kube-controller-manager", "kube-scheduler",
           "kube-system-service-accounts", "service-accounts", "global-default", "catch-all"}
LEVELS = {"exempt", "catch-all", "system", "node-high", "leader-election", "workload-high", "workload-low",
          "global-default"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SecureCluster(str(tmp_path_factory.mktemp("apf")), "--max-requests-inflight=4",
                      "--max-mutating-requests-inflight=2", "--request-timeout=400ms").start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    with cluster.client(cluster.admin) as c:
        wait_for(lambda: {o["metadata"]["name"] for o in c.get(f"{FC}/flowschemas").json()["items"]} >= SCHEMAS,
                 what="the default FlowSchemas")
        yield c


def test_default_objects_and_kubectl_columns(cluster, admin):
    levels = {o["metadata"]["name"]: o for o in admin.get(f"{FC}/prioritylevelconfigurations").json()["items"]}
    assert set(levels) >= LEVELS
    assert levels["exempt"]["spec"]["type"] == "Exempt"
    assert levels["workload-low"]["spec"]["limited"]["nominalConcurrencyShares"] == 100
    assert levels["global-default"]["spec"]["limited"]["limitResponse"] == {
        "type": "Queue", "queuing": {"queues": 128, "handSize": 6, "queueLengthLimit": 50}}
    assert levels["catch-all"]["spec"]["limited"]["limitResponse"] == {"type": "Reject"}
    assert levels["system"]["metadata"]["annotations"]["apf.kubernetes.io/autoupdate-spec"] == "true"

    table = admin.get(f"{FC}/flowschemas", headers={"Accept": TABLE}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "PriorityLevel", "MatchingPrecedence", "DistinguisherMethod", "Age", "MissingPL"]
    table = admin.get(f"{FC}/prioritylevelconfigurations", headers={"Accept": TABLE}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Type", "NominalConcurrencyShares", "Queues", "HandSize", "QueueLengthLimit", "Age"]

    def missing_pl() -> dict:
        return {o["metadata"]["name"]: [c["status"] for c in o.get("status", {}).get("conditions", [])
                                        if c["type"] == "Dangling"]
                for o in admin.get(f"{FC}/flowschemas").json()["items"]}
    wait_for(lambda: all(v == ["False"] for v in missing_pl().values()), what="the Dangling conditions")

    kc = cluster.kubeconfig("admin", cluster.admin)
    out = cluster.kubectl(kc, "get", "flowschemas")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PRIORITYLEVEL", "MATCHINGPRECEDENCE", "DISTINGUISHERMETHOD", "AGE",
                                "MISSINGPL"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["global-default"][1:4] == ["global-default", "9900", "ByUser"]
    assert rows["global-default"][5] == "False"
    assert rows["exempt"][1:4] == ["exempt", "1", "<none>"]
    out = cluster.kubectl(kc, "get", "prioritylevelconfigurations")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "NOMINALCONCURRENCYSHARES", "QUEUES", "HANDSIZE",
                                "QUEUELENGTHLIMIT", "AGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["workload-high"][1:6] == ["Limited", "40", "128", "6", "50"]
    assert rows["exempt"][1:6] == ["Exempt", "<none>", "<none>", "<none>", "<none>"]


def test_invalid_objects_are_refused_with_kubernetes_wording(admin):
    bad = {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
           "metadata": {"name": "bad-level"},
           "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 5, "limitResponse": {
               "type": "Queue", "queuing": {"queues": 4, "handSize": 8, "queueLengthLimit": 0}}}}}
    r = admin.post(f"{FC}/prioritylevelconfigurations", json=bad)
    assert r.status_code == 422, r.text
    messages = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert messages["spec.limited.limitResponse.queuing.handSize"] == \
        "Invalid value: 8: should not be greater than queues (4)"
    assert messages["spec.limited.limitResponse.queuing.queueLengthLimit"] == "Invalid value: 0: must be positive"
    bad = {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": "bad"},
           "spec": {"matchingPrecedence": 20000, "priorityLevelConfiguration": {"name": "global-default"},
                    "rules": [{"subjects": [], "resourceRules": [{"verbs": ["get"], "apiGroups": [""],
                                                                  "resources": ["pods"]}]}]}}
    r = admin.post(f"{FC}/flowschemas", json=bad)
    assert r.status_code == 422, r.text
    messages = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert messages["spec.matchingPrecedence"] == "Invalid value: 20000: must be between 1 and 10000, inclusive"
    assert messages["spec.rules[0].subjects"] == "Required value: subjects must contain at least one value"
    assert messages["spec.rules[0].resourceRules[0].namespaces"] == (
        "Required value: resource rules that are not cluster scoped must supply at least one namespace")
    assert admin.get(f"{FC}/flowschemas/bad").status_code == 404


def test_a_schema_naming_no_level_is_dangling_and_skipped(cluster, admin):
    fs = {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": "orphan"},
          "spec": {"matchingPrecedence": 50, "priorityLevelConfiguration": {"name": "no-such-level"},
                   "rules": [{"subjects": [{"kind": "Group", "group": {"name": "system:authenticated"}}],
                              "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                              "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                 "clusterScope": True, "namespaces": ["*"]}]}]}}
    assert admin.post(f"{FC}/flowschemas", json=fs).status_code == 201

    def dangling():
        conditions = admin.get(f"{FC}/flowschemas/orphan").json().get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Dangling" and c["status"] == "True"), None)
    condition = wait_for(dangling, what="orphan's Dangling condition")
    assert condition["reason"] == "NotFound"
    user = cluster.user("someone")
    with httpx.Client(base_url=cluster.url, verify=cluster.tls(user), timeout=30) as c:
        r = c.get("/version")
    global_default = admin.get(f"{FC}/flowschemas/global-default").json()["metadata"]["uid"]
    assert r.headers["X-Kubernetes-PF-FlowSchema-UID"] == global_default
    assert admin.delete(f"{FC}/flowschemas/orphan").status_code == 200


def _rejected(metrics: str, schema: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("apiserver_flowcontrol_rejected_requests_total{") and f'flow_schema="{schema}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_flood_of_lists_is_refused_while_nodes_and_controllers_are_served(cluster, admin):
    admin.post("/api/v1/namespaces", json={"metadata": {"name": "flood"}})
    # A large collection: 600 ConfigMaps of 2 KiB, about 1.3 MB a LIST.
    for i in range(600):
        r = admin.post("/api/v1/namespaces/flood/configmaps",
                       json={"metadata": {"name": f"cm-{i}"}, "data": {"k": "x" * 2048}})
        assert r.status_code in (201, 409), r.text
    admin.post("/api/v1/nodes", json={"metadata": {"name": "n1"}})
    # (the bootstrap `view` role is filled by the aggregation controller, not running here)
    admin.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", json={
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
    admin.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json={
        "metadata": {"name": "flooder-reads-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "configmap-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "flooder"}]})
    flooder = cluster.user("flooder")
    node = cluster.user("system:node:n1", "system:nodes")
    kcm = cluster.user("system:kube-controller-manager")
    uids = {o["metadata"]["name"]: o["metadata"]["uid"] for o in admin.get(f"{FC}/flowschemas").json()["items"]}
    wait_for(lambda: httpx.get(cluster.url + "/api/v1/namespaces/flood/configmaps?limit=1",
                               verify=cluster.tls(flooder)).status_code == 200, what="the flooder's binding")

    statuses: list[int] = []
    refusals: list[httpx.Response] = []
    served = {"node": [], "controller": []}

    async def flood(client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            r = await client.get("/api/v1/namespaces/flood/configmaps")
            statuses.append(r.status_code)
            if r.status_code == 429:
                refusals.append(r)

    async def steady(who: str, client: httpx.AsyncClient, paths: list[str]) -> None:
        for _ in range(10):
            for p in paths:
                r = await client.get(p)
                served[who].append(r.status_code)
                await asyncio.sleep(0.05)  # a steady trickle, as a kubelet's and a controller's

    async def main() -> None:
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=cluster.url, verify=cluster.tls(flooder), timeout=60,
                                     limits=limits) as fc, \
                httpx.AsyncClient(base_url=cluster.url, verify=cluster.tls(node), timeout=60) as nc, \
                httpx.AsyncClient(base_url=cluster.url, verify=cluster.tls(kcm), timeout=60) as cc:
            floods = [asyncio.create_task(flood(fc, stop)) for _ in range(40)]
            await asyncio.sleep(0.5)  # the flood is on
            await asyncio.gather(
                steady("node", nc, ["/api/v1/nodes/n1", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"]),
                steady("controller", cc, ["/api/v1/namespaces/flood/configmaps/cm-1",
                                          "/apis/apps/v1/namespaces/flood/deployments"]))
            stop.set()
            await asyncio.gather(*floods)

    asyncio.run(main())

    assert refusals, f"the flood was never refused: {statuses.count(200)} LISTs served"
    r = refusals[0]
    assert r.headers["Retry-After"] == "1"
    body = r.json()
    assert (body["kind"], body["code"], body["reason"]) == ("Status", 429, "TooManyRequests")
    assert r.headers["X-Kubernetes-PF-FlowSchema-UID"] == uids["global-default"]
    assert statuses.count(200) > 0  # refused, not starved: the flow still gets its share
    # Every request of the node and the controller was served: none refused.
    assert served["node"] == [200] * 20
    assert served["controller"] == [200] * 20
    metrics = admin.get("/metrics").text
    assert _rejected(metrics, "global-default") >= len(refusals)
    assert _rejected(metrics, "system-nodes") == _rejected(metrics, "kube-controller-manager") == 0
    assert any(line.startswith("apiserver_request_total{") and 'code="429"' in line and 'verb="LIST"' in line
               and 'resource="configmaps"' in line for line in metrics.splitlines())
    assert "apiserver_flowcontrol_current_executing_requests" in metrics
    assert "apiserver_flowcontrol_request_wait_duration_seconds_bucket" in metrics


def test_the_response_names_the_schema_and_level(cluster, admin):
    node = cluster.user("system:node:n2", "system:nodes")
    with httpx.Client(base_url=cluster.url, verify=cluster.tls(node), timeout=30) as c:
        r = c.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2")
    fs = admin.get(f"{FC}/flowschemas/system-node-high").json()
    pl = admin.get(f"{FC}/prioritylevelconfigurations/node-high").json()
    assert r.headers["X-Kubernetes-PF-FlowSchema-UID"] == fs["metadata"]["uid"]
    assert r.headers["X-Kubernetes-PF-PriorityLevel-UID"] == pl["metadata"]["uid"]
    # system:masters is exempt.
    r = admin.get("/api/v1/namespaces")
    assert r.headers["X-Kubernetes-PF-FlowSchema-UID"] == \
        admin.get(f"{FC}/flowschemas/exempt").json()["metadata"]["uid"]
