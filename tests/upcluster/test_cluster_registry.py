"""The README's "A registry on the cluster" walk-through, end to end on `minik8s up` (root):
build the registry image with hack/build-registry-image.sh, `minik8s image import` it into
the cluster's shared store, `kubectl apply -f manifests/registry.yaml`, push an image to it
with skopeo, and run a Deployment from it on a cluster whose registries.yaml marks the
registry insecure (plain HTTP).

The cluster is the package's (tests/upcluster/conftest.py), the registry's hostPath a
temporary directory.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess

import httpx
import pytest
import yaml

from tests.images_fixtures import require_tools
from tests.procs import wait_for
from tests.test_cluster import COMPONENT_MODULES, Cluster, dump_logs
from tests.test_cluster_cli import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.kubectl,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in COMPONENT_MODULES),
                       reason="a component is missing"),
]

SCRIPT = os.path.join(ROOT, "hack", "build-registry-image.sh")
MANIFEST = os.path.join(ROOT, "manifests", "registry.yaml")
REGISTRY_IMAGE = "minik8s.local/registry:2.8"


def build(*args: str) -> str:
    r = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    require_tools()
    d = tmp_path_factory.mktemp("images")
    out = {"registry": str(d / "registry-image.tar"), "hello": str(d / "hello-image.tar")}
    assert f"({REGISTRY_IMAGE}, oci archive)" in build("-o", out["registry"])
    build("--hello", "-o", out["hello"])
    return out


@pytest.fixture(scope="module")
def cluster(upcluster, tmp_path_factory):
    """The package's three-node cluster (tests/upcluster/conftest.py: its registries.yaml
    names the registry this module runs), and a directory for the registry's data."""
    upcluster.registry_data = str(tmp_path_factory.mktemp("registry-data"))
    return upcluster


def ready(pod: dict) -> bool:
    return (pod.get("status", {}).get("phase") == "Running"
            and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", ())))


def wait(cluster: Cluster, cond, *, timeout: float, what: str, selector: str):
    """wait_for, and on a timeout what the pods, their events and the logs say."""
    try:
        return wait_for(cond, timeout=timeout, interval=0.5, what=what)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{explain(cluster, selector)}") from None


def explain(cluster: Cluster, selector: str) -> str:
    """What the pods and their events say, for a failed wait."""
    pods = cluster.pods(selector)
    events = cluster.api.get("/api/v1/namespaces/default/events").json()["items"]
    return json.dumps([p.get("status") for p in pods], indent=1)[:3000] + "\n" + "\n".join(
        f"{e['reason']}: {e['message']}" for e in events[-20:]) + "\n" + dump_logs(cluster.cfg)


def test_the_registry_runs_on_the_cluster_from_an_imported_image(cluster, images, tmp_path):
    out = cluster.cli("image", "import", images["registry"]).stdout
    assert f"unpacking {REGISTRY_IMAGE} (sha256:" in out
    assert "minik8s.local/registry" in cluster.cli("image", "ls").stdout

    # The manifest as the README applies it, its hostPath moved to this test's directory.
    docs = list(yaml.safe_load_all(open(MANIFEST)))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["containers"][0]["image"] == REGISTRY_IMAGE
    assert spec["containers"][0]["imagePullPolicy"] == "Never"
    spec["volumes"][0]["hostPath"]["path"] = cluster.registry_data
    manifest = tmp_path / "registry.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    cluster.kubectl("apply", "-f", str(manifest))

    def up():
        pods = [p for p in cluster.pods("app=registry") if ready(p)]
        return pods[0] if pods else None
    pod = wait(cluster, up, timeout=120, what="the registry pod Ready", selector="app=registry")
    assert pod["spec"]["nodeName"] == "node-1"
    assert pod["status"]["podIP"] == cluster.registry.split(":")[0]  # host network: the node's address
    # Reachable from the host and from the other node's network namespace.
    assert httpx.get(f"http://{cluster.registry}/v2/", timeout=10).status_code == 200
    probe = subprocess.run(["ip", "netns", "exec", cluster.cfg.netns("node-2"), "python3", "-c",
                            f"import urllib.request; print(urllib.request.urlopen('http://{cluster.registry}/v2/')"
                            ".status)"], capture_output=True, text=True, timeout=30)
    assert probe.stdout.strip() == "200", probe.stderr


def test_an_image_pushed_to_it_runs_as_a_deployment(cluster, images):
    image = f"{cluster.registry}/lab/hello:v1"
    r = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{images['hello']}",
                        f"docker://{image}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.listdir(os.path.join(cluster.registry_data, "docker", "registry", "v2", "repositories")) == ["lab"]

    cluster.kubectl("create", "deployment", "hello", f"--image={image}", "--replicas=2", "--port=8080")

    def running():
        pods = cluster.pods("app=hello")
        return pods if len(pods) == 2 and all(map(ready, pods)) else None
    pods = wait(cluster, running, timeout=180, what="2 hello pods Ready", selector="app=hello")
    manifest_digest = httpx.head(f"http://{cluster.registry}/v2/lab/hello/manifests/v1", timeout=10, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"}).headers["docker-content-digest"]
    for p in pods:
        [status] = p["status"]["containerStatuses"]
        assert status["imageID"] == f"{cluster.registry}/lab/hello@{manifest_digest}"
        name = p["metadata"]["name"]
        # The image's own Entrypoint/Cmd wrote the page; the pod gave no command.
        assert cluster.kubectl("exec", name, "--", "cat", "/www/index.html").stdout.strip() == f"hello from {name}"
    reasons = {e["reason"] for e in cluster.api.get("/api/v1/namespaces/default/events").json()["items"]
               if e["involvedObject"]["name"] in {p["metadata"]["name"] for p in pods}}
    assert "Pulled" in reasons, reasons
    # The kubelets' shared store has it now.
    assert f"{cluster.registry}/lab/hello" in cluster.cli("image", "ls").stdout


def test_image_rm_refuses_an_image_pods_use(cluster):
    r = cluster.cli("image", "rm", REGISTRY_IMAGE)
    assert r.returncode == 1 and "in use" in r.stderr, r.stdout + r.stderr
    assert "minik8s.local/registry" in cluster.cli("image", "ls").stdout


def test_teardown_leaves_the_registry_data_to_the_user(cluster):
    cluster.kubectl("delete", "deployment", "hello", "registry")
    wait_for(lambda: not cluster.pods("app in (hello, registry)"), timeout=90, what="the pods gone")
    assert os.path.isdir(os.path.join(cluster.registry_data, "docker"))  # a hostPath is never deleted
    shutil.rmtree(cluster.registry_data)
