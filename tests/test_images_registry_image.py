"""The images hack/build-registry-image.sh builds, run on the Linux runtime (root) from a
store they were put in by `minik8s image`: the registry imported from its archive serves
the Distribution API from its own root filesystem, an image pushed to it with skopeo is
pulled back with `minik8s image pull`, and runs with the Entrypoint and Cmd of its config.
The README walk-through without the cluster (tests/upcluster/test_cluster_registry.py runs it on
`minik8s up`)."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest

from kubelet.images.service import ImageService
from kubelet.images.store import ContentStore
from kubelet.runtime import ContainerConfig, Mount, PodSandboxConfig
from kubelet.runtime.linux.cgroups import Cgroup
from kubelet.runtime.linux.runtime import LinuxRuntime
from tests.images_fixtures import require_tools
from tests.procs import wait_for
from tests.test_cluster_cli import ROOT
from tests.test_kubelet_runtime import node_args  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real pods: needs root")

SCRIPT = os.path.join(ROOT, "hack", "build-registry-image.sh")


def image_cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "image", *args], capture_output=True, text=True,
                       timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture
def store_dir(tmp_path) -> str:
    return str(tmp_path / "images")


@pytest.fixture
def node(node_args, store_dir):  # noqa: F811
    rt = LinuxRuntime(**node_args, images=ImageService(ContentStore(store_dir)))
    try:
        yield rt
    finally:
        for uid in os.listdir(rt.pods_dir):
            rt.remove_pod(uid)
        rt.cleanup_orphans(keep=[])
        rt.network.delete_bridge()
        Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
        rt.close()


def test_the_registry_image_serves_and_an_image_pushed_to_it_runs(node, store_dir, tmp_path):
    require_tools()
    registry_tar, hello_tar = str(tmp_path / "registry.tar"), str(tmp_path / "hello.tar")
    for args in (["-o", registry_tar], ["--hello", "-o", hello_tar, "--format", "docker"]):
        r = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
    assert "unpacking minik8s.local/registry:2.8 (sha256:" in image_cli("import", registry_tar, "--store", store_dir)

    data = tmp_path / "registry-data"
    data.mkdir()
    reg_uid = str(uuid.uuid4())
    node.run_pod_sandbox(PodSandboxConfig(uid=reg_uid, name="registry"))
    c = node.start_container(reg_uid, ContainerConfig(
        name="registry", image="minik8s.local/registry:2.8",
        mounts=[Mount(host_path=str(data), container_path="/var/lib/registry")]))
    host = f"{node.pod_sandbox_status(reg_uid).ip}:5000"
    wait_for(lambda: httpx.get(f"http://{host}/v2/", timeout=2).status_code == 200, timeout=60,
             what=f"the registry on {host}")
    # It runs its own binary from its own root (the image's Entrypoint): no host tools in it.
    assert node.exec_sync(c.id, ["/bin/sh", "-c", "true"], timeout=10).exit_code != 0

    image = f"{host}/lab/hello:v1"
    r = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{hello_tar}",
                        f"docker://{image}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.path.isdir(data / "docker" / "registry" / "v2" / "repositories" / "lab" / "hello")
    out = image_cli("pull", image, "--insecure-registry", host, "--store", store_dir)
    assert out.startswith(f"Image is up to date for {image} (sha256:")
    assert "lab/hello" in image_cli("ls", "--store", store_dir)

    hello_uid = str(uuid.uuid4())
    node.run_pod_sandbox(PodSandboxConfig(uid=hello_uid, name="hello-1"))
    node.start_container(hello_uid, ContainerConfig(name="hello", image=image))  # no command: the image's
    ip = node.pod_sandbox_status(hello_uid).ip
    page = wait_for(lambda: httpx.get(f"http://{ip}:8080/", timeout=2).text, timeout=60, what="the hello server")
    assert page == "hello from hello-1\n"
