"""`kubectl-lite top` and the real `kubectl top` against the API server, which serves
metrics.k8s.io through its aggregation layer from a real metrics server scraping real
fake-runtime kubelets (tests/metrics_pipeline.py); pods' usage is what their
`fake.minik8s.io/usage` annotation sets. And kubectl's error when the API is missing."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.metrics_pipeline import API, make_pod, pipeline
from tests.procs import wait_for
from tests.test_kubectl_lite import KubectlLite, write_kubeconfig

KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def metrics(apiserver, tmp_path_factory):
    """The pipeline registered as APIService v1beta1.metrics.k8s.io, and two namespaces
    of pods: `web` (two containers) and `db` in one, `batch` in the other."""
    tmp = tmp_path_factory.mktemp("top")
    with apiserver.client() as c:
        if c.get("/apis/apiregistration.k8s.io/v1").status_code != 200:
            pytest.skip("this API server has no aggregation layer (apiregistration.k8s.io)")
    with pipeline(apiserver, tmp, register=True) as p:
        http = p["http"]
        n0, n1 = p["nodes"]
        ns1, ns2 = "top-" + uuid.uuid4().hex[:6], "top-" + uuid.uuid4().hex[:6]
        for ns in (ns1, ns2):
            assert http.post("/api/v1/namespaces", json={"metadata": {"name": ns}}).status_code == 201
            http.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json={"metadata": {"name": "default"}})
        make_pod(http, ns1, "web", n0, {"app": {"cpu": "250m", "memory": "64Mi"},
                                        "side": {"cpu": "50m", "memory": "16Mi"}}, {"tier": "front"})
        make_pod(http, ns1, "db", n1, {"db": {"cpu": "1", "memory": "512Mi"}}, {"tier": "back"})
        make_pod(http, ns2, "batch", n1, {"work": {"cpu": "500m", "memory": "128Mi"}})

        def ready():
            r = http.get(f"{API}/pods")
            names = {i["metadata"]["name"] for i in r.json()["items"]} if r.status_code == 200 else set()
            nodes = http.get(f"{API}/nodes")
            have = {i["metadata"]["name"] for i in nodes.json()["items"]} if nodes.status_code == 200 else set()
            return {"web", "db", "batch"} <= names and {n0, n1} <= have
        wait_for(ready, timeout=90, interval=0.5, what="metrics of every pod and node through the API server")
        yield {**p, "ns": ns1, "ns2": ns2, "kubeconfig": write_kubeconfig(tmp / "kc", apiserver, ns1), "tmp": tmp}
        for ns in (ns1, ns2):
            http.delete(f"/api/v1/namespaces/{ns}")


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def _cpu(cell: str) -> int:
    assert cell.endswith("m"), cell
    return int(cell[:-1])


def test_top_pods_prints_kubectls_columns(metrics):
    kl = KubectlLite(metrics["kubeconfig"], str(metrics["tmp"]), metrics["ns"])
    rows = _rows(kl.out("top", "pods"))
    assert rows[0] == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert [r[0] for r in rows[1:]] == ["db", "web"]
    by = {r[0]: r for r in rows[1:]}
    # CPU is a rate over the server's window: within a few millicores of the annotation
    assert abs(_cpu(by["web"][1]) - 300) <= 5 and by["web"][2] == "80Mi"
    assert abs(_cpu(by["db"][1]) - 1000) <= 10 and by["db"][2] == "512Mi"

    rows = _rows(kl.out("top", "pods", "--containers", "--sort-by", "memory"))
    assert rows[0] == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert [(r[0], r[1], r[3]) for r in rows[1:]] == [("db", "db", "512Mi"), ("web", "app", "64Mi"),
                                                    ("web", "side", "16Mi")]
    rows = _rows(kl.out("top", "pods", "-l", "tier=front", "--no-headers"))
    assert [r[0] for r in rows] == ["web"]
    rows = _rows(kl.out("top", "pods", "-A", "--sort-by", "cpu"))
    assert rows[0] == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    mine = [r for r in rows[1:] if r[0] in (metrics["ns"], metrics["ns2"])]
    assert [r[1] for r in mine] == ["db", "batch", "web"]
    assert _rows(kl.out("top", "pod", "web", "--no-headers"))[0][0] == "web"


def test_top_nodes_prints_kubectls_columns(metrics):
    kl = KubectlLite(metrics["kubeconfig"], str(metrics["tmp"]), metrics["ns"])
    n0, n1 = metrics["nodes"]
    rows = _rows(kl.out("top", "nodes"))
    assert rows[0] == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    by = {r[0]: r for r in rows[1:]}
    # n1 runs db and batch: 1.5 cores of 32 allocatable (4%), 640Mi of 256Gi (0%)
    assert abs(_cpu(by[n1][1]) - 1500) <= 15 and by[n1][2] == "4%" and by[n1][3:] == ["640Mi", "0%"]
    assert by[n0][3] == "80Mi"
    assert [r[0] for r in _rows(kl.out("top", "node", n0, "--no-headers"))] == [n0]


def test_top_errors_are_kubectls(metrics):
    kl = KubectlLite(metrics["kubeconfig"], str(metrics["tmp"]), metrics["ns"])
    assert kl.err("top", "pods", "--sort-by", "name").strip() == "error: --sort-by accepts only cpu or memory"
    assert kl.err("top", "pods", "web", "-l", "a=b").strip() == "error: only one of NAME or selector can be provided"
    assert kl.err("top", "pod", "ghost").strip() == 'Error from server (NotFound): pods "ghost" not found'
    r = kl("top", "pods", "-l", "tier=none")
    assert r.stdout == "" and r.stderr == f"No resources found in {metrics['ns']} namespace.\n"
    # a pod the kubelet reports no usage for: the metrics server's NotFound, through the proxy
    ns = metrics["ns"]
    make_pod(metrics["http"], ns, "idle", metrics["nodes"][0], None)
    assert kl.err("top", "pod", "idle").strip() == \
        f'Error from server (NotFound): podmetrics.metrics.k8s.io "{ns}/idle" not found'


def test_top_is_refused_without_rbac(metrics, apiserver):
    """The extension server asks the API server (SubjectAccessReview) about the user the
    front proxy names: the scheduler's user may read no metrics."""
    kc = apiserver.write_kubeconfig(metrics["tmp"] / "scheduler.conf", user="scheduler", namespace=metrics["ns"])
    kl = KubectlLite(kc, str(metrics["tmp"]), metrics["ns"])
    assert kl.err("top", "nodes").strip() == (
        'Error from server (Forbidden): nodes.metrics.k8s.io is forbidden: User "system:kube-scheduler" cannot '
        'list resource "nodes" in API group "metrics.k8s.io" at the cluster scope')


@pytest.mark.kubectl
def test_real_kubectl_top(metrics):
    n0, n1 = metrics["nodes"]
    base = [KUBECTL, "--kubeconfig", metrics["kubeconfig"], "--cache-dir", str(metrics["tmp"] / "kcache")]
    r = subprocess.run([*base, "top", "pods"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = _rows(r.stdout)
    assert rows[0] == ["NAME", "CPU(cores)", "MEMORY(bytes)"] and [x[0] for x in rows[1:]] == ["db", "web"]
    assert {x[0]: x[2] for x in rows[1:]} == {"db": "512Mi", "web": "80Mi"}
    # kubectl-lite prints what kubectl prints (the CPU column moves with time: not compared)
    kl = KubectlLite(metrics["kubeconfig"], str(metrics["tmp"]), metrics["ns"])
    mask = lambda text: re.sub(r"\d+m\b", "Nm", text)  # noqa: E731
    assert mask(kl.out("top", "pods")) == mask(r.stdout)
    r = subprocess.run([*base, "top", "nodes", n1], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _rows(r.stdout)[0] == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert _rows(r.stdout)[1][3] == "640Mi"
    assert mask(kl.out("top", "nodes", n1)) == mask(r.stdout)


def test_metrics_api_not_available(private_apiserver, tmp_path):
    kc = write_kubeconfig(tmp_path / "kc", private_apiserver, "default")
    r = subprocess.run([sys.executable, "-m", "kubectl_lite.cli", "--kubeconfig", kc, "top", "pods"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (1, "error: Metrics API not available\n")
    if KUBECTL:
        r = subprocess.run([KUBECTL, "--kubeconfig", kc, "--cache-dir", str(tmp_path / "kcache"), "top", "nodes"],
                           capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stderr) == (1, "error: Metrics API not available\n")
