"""The kubelet gets images onto the node (kubelet/images/puller.py through kubelet.py):
real registries and images from tests/images_fixtures.py, a real API server, and a real
Kubelet in-process with the Linux runtime and an ImageService over a store of the test's
own (as tests/test_kubelet_sync.py builds one).

Each test's node has its own store, bridge, cgroup parent and pod network, torn down
afterwards; downloads are counted at the registry (its access log). The back-off test
steps an injected clock instead of sleeping; every wait is a poll or a watch with a timeout
that only catches hangs, and a wait that times out says what it last saw of the pod, its
events and its kubelet's worker (tests/kubelet_diag.py).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from client.clock import Clock, FakeClock
from client.rest import Client
from client.watch import Watch
from kubelet.images import HOST_ROOT_IMAGE
from kubelet.images.registry import RegistryHostConfig
from kubelet.images.service import ImageService
from kubelet.images.store import ContentStore
from kubelet.kubelet import Kubelet
from kubelet.node import Node, node_images
from kubelet.runtime.linux.cgroups import Cgroup
from kubelet.runtime.linux.runtime import LinuxRuntime
from kubelet.server import KubeletServer
from tests.kubelet_diag import pod_report, until
from tests.images_fixtures import (PASSWORD, USER, Registry, TamperingProxy, _run, _tar,  # noqa: F401
                                   auth_registry, oci_images, plain_registry)
from tests.procs import APIServer, default_service_account, free_port, root_ca_configmap
from tests.test_kubelet_runtime import free_cidr

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real pods: needs root")

TOKEN = "kubelet-pull-test-" + uuid.uuid4().hex
TOKEN_ENV = "MINIK8S_KUBELET_TOKEN"
KUBECTL = shutil.which("kubectl")
INSECURE = RegistryHostConfig(insecure=True)
KUBELETS: dict[str, PullNode] = {}  # the running nodes by name, for the waits' reports


@pytest.fixture(scope="module")
def api(etcd):
    """An API server that presents TOKEN to kubelets (for `kubectl logs`)."""
    old = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = TOKEN
    try:
        server = APIServer(etcd.url, kubelet_tls=False).start()  # kubelets here serve the shared token
    finally:
        if old is None:
            del os.environ[TOKEN_ENV]
        else:
            os.environ[TOKEN_ENV] = old
    yield server
    server.stop()


@pytest.fixture
def ns(api):
    name = "t-" + uuid.uuid4().hex[:10]
    with api.client() as c:
        r = c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": name}})
        assert r.status_code == 201, r.text
        default_service_account(c, name)
        root_ca_configmap(c, name)
    return name


class PullNode:
    """An in-process kubelet whose runtime resolves images through an ImageService, with
    its Node registered and its endpoint served (for logs)."""

    def __init__(self, api: APIServer, tmp, registries: dict, clock: Clock | None, store_dir: str | None = None):
        tag = uuid.uuid4().hex[:8]
        self.name, self.tmp, self.tag = f"pull-{tag}", tmp, tag
        self.store_dir = store_dir or str(tmp / f"store-{tag}")
        self.service = ImageService(ContentStore(self.store_dir), registries=registries)
        self.client = Client(api.connection())
        self.clock = clock
        self.rt: LinuxRuntime | None = None
        self.kl: Kubelet | None = None
        self.node: Node | None = None
        self.serving: asyncio.Task | None = None

    async def start(self) -> PullNode:
        self.rt = LinuxRuntime(str(self.tmp / f"node-{self.tag}"), pod_cidr=await asyncio.to_thread(free_cidr),
                               bridge=f"mk8sp{self.tag}", cgroup_parent=f"minik8s-test-{self.tag}",
                               images=self.service)
        self.kl = Kubelet(self.client, self.rt, node_name=self.name, node_ip="127.0.0.1", clock=self.clock,
                          pleg_period=0.1, images=self.service)
        await self.kl.start()
        port = free_port()
        self.serving = asyncio.create_task(KubeletServer(self.kl, token=TOKEN).serve("127.0.0.1", port))
        self.node = Node(self.client, self.name, address="127.0.0.1", port=port,
                         capacity={"cpu": "2", "memory": "4Gi", "pods": "20"},
                         images=lambda: node_images(self.service))
        await self.node.register()
        KUBELETS[self.name] = self
        return self

    async def close(self) -> None:
        KUBELETS.pop(self.name, None)
        if self.serving is not None:
            self.serving.cancel()
            await asyncio.gather(self.serving, return_exceptions=True)
        if self.node is not None:
            await self.client.delete("nodes", self.name)
        if self.kl is not None:
            await self.kl.stop()
        await self.service.aclose()
        await self.client.close()
        rt = self.rt
        if rt is None:
            return

        def clean():
            for uid in os.listdir(rt.pods_dir):
                rt.remove_pod(uid)
            rt.cleanup_orphans(keep=[])
            rt.network.delete_bridge()
            Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
            rt.close()
        await asyncio.to_thread(clean)


@pytest.fixture
async def make_node(api, tmp_path):
    made: list[PullNode] = []

    async def make(registries: dict, *, clock: Clock | None = None, store_dir: str | None = None) -> PullNode:
        node = PullNode(api, tmp_path, registries, clock, store_dir)
        made.append(node)
        return await node.start()
    try:
        yield make
    finally:
        for node in made:
            await node.close()


# -- helpers ----------------------------------------------------------------------------

def pod(name: str, node: PullNode, image: str, *, container: dict | None = None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node.name, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": image, **(container or {})}], **spec}}


def report(client: Client, ns: str, name: str):
    """For a wait's TimeoutError: the pod as last seen, its events, and its kubelet's side."""
    return lambda: pod_report(client, ns, name, kubelets=[n.kl for n in KUBELETS.values() if n.kl])


async def cstatus(client: Client, ns: str, name: str) -> dict:
    p = await client.get("pods", name, namespace=ns)
    return ((p.get("status") or {}).get("containerStatuses") or [{}])[0]


async def waiting(client: Client, ns: str, name: str, reason: str, timeout: float = 60.0) -> dict:
    async def check():
        w = ((await cstatus(client, ns, name)).get("state") or {}).get("waiting") or {}
        return w if w.get("reason") == reason else None
    return await until(check, timeout, what=f"{name} waiting {reason}", report=report(client, ns, name))


async def first_waiting(client: Client, created: dict, reason: str, timeout: float = 60.0) -> dict:
    """The first waiting state `reason` of the pod's container, by a watch from the pod's
    creation: every status the kubelet wrote is seen, so a state it shows only until its
    next sync (ErrImagePull, before ImagePullBackOff) is caught when it is written, not at
    the next pull 10 s later."""
    meta = created["metadata"]

    async def watch() -> dict:
        async for ev in Watch(client, "pods", namespace=meta["namespace"],
                              field_selector=f"metadata.name={meta['name']}",
                              resource_version=meta["resourceVersion"]):
            st = ((ev.object.get("status") or {}).get("containerStatuses") or [{}])[0].get("state") or {}
            if (st.get("waiting") or {}).get("reason") == reason:
                return st["waiting"]
        raise AssertionError(f"the watch of {meta['name']} ended")
    try:
        return await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        state = await report(client, meta["namespace"], meta["name"])()
        raise TimeoutError(f"timed out waiting for {meta['name']} waiting {reason}; last seen:\n{state}") from None


async def phase(client: Client, ns: str, name: str, want: str, timeout: float = 60.0) -> dict:
    async def check():
        p = await client.get("pods", name, namespace=ns)
        return p if (p.get("status") or {}).get("phase") == want else None
    return await until(check, timeout, what=f"{name} {want}", report=report(client, ns, name))


async def events(client: Client, ns: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the pod's events, in the order they were first recorded."""
    items = [e for e in (await client.list("events", namespace=ns))["items"]
             if e["involvedObject"]["name"] == name]
    items.sort(key=lambda e: int(e["metadata"]["name"].rsplit(".", 1)[1], 16))
    return [(e["type"], e["reason"], e["message"]) for e in items]


async def has_event(client: Client, ns: str, name: str, reason: str, text: str, timeout: float = 30.0) -> None:
    async def check():
        return any(r == reason and text in m for _, r, m in await events(client, ns, name))
    await until(check, timeout, what=f"event {reason} {text!r} of {name}", report=report(client, ns, name))


def manifest_gets(registry: Registry, repository: str) -> int:
    needle = f'"GET /v2/{repository}/manifests/'
    with open(registry.log_path, errors="replace") as f:
        return sum(1 for line in f if needle in line and '" 200 ' in line)


def dockerconfigjson(name: str, host: str, user: str, password: str) -> dict:
    doc = {"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(doc).encode()).decode()}}


# -- pull policy --------------------------------------------------------------------------

async def test_a_pod_runs_from_a_registry_image_with_the_kubelets_events(make_node, ns, plain_registry, oci_images):
    node = await make_node({plain_registry.host: INSECURE})
    client = node.client
    image = f"{plain_registry.host}/lab/app-a:v1"
    await client.create(pod("app", node, image), namespace=ns)
    p = await phase(client, ns, "app", "Succeeded")
    assert p["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"  # defaulted by the API server
    cs = p["status"]["containerStatuses"][0]
    assert cs["state"]["terminated"]["exitCode"] == 0
    built = oci_images.images["app-a"]
    assert cs["imageID"] == f"{plain_registry.host}/lab/app-a@{built.manifest_digest}"
    assert (await client.log("app", namespace=ns)).strip() == "this is app a"  # the image's Entrypoint + Cmd

    await has_event(client, ns, "app", "Started", "Started container c")
    seen = [(r, m) for _, r, m in await events(client, ns, "app")]
    reasons = [r for r, _ in seen]
    assert reasons.index("Pulling") < reasons.index("Pulled") < reasons.index("Created") < reasons.index("Started")
    assert ("Pulling", f'Pulling image "{image}"') in seen
    pulled = next(m for r, m in seen if r == "Pulled")
    size = os.path.getsize(os.path.join(oci_images.layout, "blobs", "sha256", built.config_digest[7:])) + sum(
        os.path.getsize(os.path.join(oci_images.layout, "blobs", "sha256", d[7:])) for d in built.layers)
    assert pulled.startswith(f'Successfully pulled image "{image}" in ')
    assert "including waiting). Image size: " in pulled and pulled.endswith(f"Image size: {size} bytes.")


async def test_if_not_present_pulls_once_and_always_pulls_every_time(make_node, ns, plain_registry, oci_images):
    node = await make_node({plain_registry.host: INSECURE})
    client = node.client
    image = f"{plain_registry.host}/lab/app-b:v1"
    top = oci_images.images["app-b"].layers[-1]
    blobs0, manifests0 = plain_registry.blob_gets("lab/app-b", top), manifest_gets(plain_registry, "lab/app-b")

    await client.create(pod("one", node, image), namespace=ns)
    await phase(client, ns, "one", "Succeeded")
    await client.create(pod("two", node, image), namespace=ns)
    await phase(client, ns, "two", "Succeeded")
    assert plain_registry.blob_gets("lab/app-b", top) == blobs0 + 1
    assert manifest_gets(plain_registry, "lab/app-b") == manifests0 + 1  # IfNotPresent: not asked again
    assert any(r == "Pulled" and m == f'Container image "{image}" already present on machine'
               for _, r, m in await events(client, ns, "two"))

    await client.create(pod("three", node, image, container={"imagePullPolicy": "Always"}), namespace=ns)
    await phase(client, ns, "three", "Succeeded")
    assert manifest_gets(plain_registry, "lab/app-b") == manifests0 + 2  # Always: the registry is asked
    assert plain_registry.blob_gets("lab/app-b", top) == blobs0 + 1     # ... and the store has the blobs
    reasons = [r for _, r, _ in await events(client, ns, "three")]
    assert "Pulling" in reasons and "Pulled" in reasons


async def test_never_with_a_missing_image_is_err_image_never_pull(make_node, ns, plain_registry):
    node = await make_node({plain_registry.host: INSECURE})
    client = node.client
    image = f"{plain_registry.host}/lab/app-a:v1"
    await client.create(pod("never", node, image, container={"imagePullPolicy": "Never"}), namespace=ns)
    w = await waiting(client, ns, "never", "ErrImageNeverPull")
    assert w["message"] == f'Container image "{image}" is not present with pull policy of Never'
    await has_event(client, ns, "never", "ErrImageNeverPull", "is not present with pull policy of Never")
    await has_event(client, ns, "never", "Failed", "Error: ErrImageNeverPull")
    assert node.service.get(image) is None  # nothing was pulled


async def test_an_unparseable_image_is_invalid_image_name(make_node, ns, plain_registry):
    node = await make_node({plain_registry.host: INSECURE})
    await node.client.create(pod("bad", node, "Lab/App:v1"), namespace=ns)
    w = await waiting(node.client, ns, "bad", "InvalidImageName")
    assert 'Failed to apply default image tag "Lab/App:v1"' in w["message"] and "lowercase" in w["message"]
    await has_event(node.client, ns, "bad", "InspectFailed", "Failed to apply default image tag")


async def test_the_host_root_image_is_never_pulled(make_node, ns, plain_registry):
    node = await make_node({plain_registry.host: INSECURE})
    await node.client.create(pod("host", node, HOST_ROOT_IMAGE,
                                 container={"command": ["sh", "-c", "test -x /usr/bin/python3"]}), namespace=ns)
    p = await phase(node.client, ns, "host", "Succeeded")
    assert p["spec"]["containers"][0]["imagePullPolicy"] == "Always"  # no tag: latest
    await has_event(node.client, ns, "host", "Pulled",
                    f'Container image "{HOST_ROOT_IMAGE}" already present on machine')
    assert "Pulling" not in [r for _, r, _ in await events(node.client, ns, "host")]


# -- credentials ----------------------------------------------------------------------------

async def test_a_private_image_runs_only_with_the_right_pull_secret(make_node, ns, auth_registry):
    node = await make_node({auth_registry.host: RegistryHostConfig(ca_file=auth_registry.ca_file)})
    client = node.client
    image = f"{auth_registry.host}/private/app-a:v1"

    created = await client.create(pod("anon", node, image), namespace=ns)
    w = await first_waiting(client, created, "ErrImagePull")
    assert f"401 Unauthorized from {auth_registry.host}" in w["message"]
    await has_event(client, ns, "anon", "Failed", f'Failed to pull image "{image}": ')
    assert any("401 Unauthorized" in m for _, r, m in await events(client, ns, "anon") if r == "Failed")

    await client.create(dockerconfigjson("wrong", auth_registry.host, USER, "not-the-password"), namespace=ns)
    created = await client.create(pod("wrong", node, image, imagePullSecrets=[{"name": "wrong"}]), namespace=ns)
    w = await first_waiting(client, created, "ErrImagePull")
    assert f"401 Unauthorized from {auth_registry.host}" in w["message"]

    await client.create(dockerconfigjson("right", auth_registry.host, USER, PASSWORD), namespace=ns)
    await client.create(pod("right", node, image, imagePullSecrets=[{"name": "right"}]), namespace=ns)
    await phase(client, ns, "right", "Succeeded")
    assert (await client.log("right", namespace=ns)).strip() == "this is app a"

    # A missing secret is named in a warning; the pull goes on without it.
    await client.create(pod("missing", node, image, imagePullSecrets=[{"name": "nowhere"}],
                            containers=[{"name": "c", "image": image, "imagePullPolicy": "Always"}]), namespace=ns)
    await has_event(client, ns, "missing", "FailedToRetrieveImagePullSecret", "(nowhere)")


async def test_the_service_accounts_pull_secret_is_used(make_node, ns, auth_registry):
    node = await make_node({auth_registry.host: RegistryHostConfig(ca_file=auth_registry.ca_file)})
    client = node.client
    image = f"{auth_registry.host}/private/app-a:v1"
    legacy = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "legacy"}, "type": "kubernetes.io/dockercfg",
              "data": {".dockercfg": base64.b64encode(json.dumps({auth_registry.host: {
                  "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}).encode()).decode()}}
    await client.create(legacy, namespace=ns)
    await client.create({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": "builder"}, "imagePullSecrets": [{"name": "legacy"}],
                         # No token volume: no controller manager publishes kube-root-ca.crt here.
                         "automountServiceAccountToken": False}, namespace=ns)
    await client.create(pod("by-sa", node, image, serviceAccountName="builder"), namespace=ns)
    p = await phase(client, ns, "by-sa", "Succeeded")
    assert p["spec"]["imagePullSecrets"] == [{"name": "legacy"}]  # copied at admission


# -- failures -------------------------------------------------------------------------------

async def test_registry_down_backs_off_then_runs_once_it_is_back(make_node, ns, oci_images):
    registry = Registry()  # its port is chosen; it is not started yet
    clock = FakeClock(start=1000.0)
    node = await make_node({registry.host: INSECURE}, clock=clock)
    client = node.client
    image = f"{registry.host}/lab/app-a:v1"
    reasons: list[tuple[str, str]] = []

    async def record():
        async for ev in Watch(client, "pods", namespace=ns, field_selector="metadata.name=down"):
            st = ((ev.object.get("status") or {}).get("containerStatuses") or [{}])[0].get("state") or {}
            w = st.get("waiting") or {}
            if w.get("reason") and (not reasons or reasons[-1] != (w["reason"], w.get("message", ""))):
                reasons.append((w["reason"], w.get("message", "")))
    watcher = asyncio.create_task(record())
    try:
        await client.create(pod("down", node, image), namespace=ns)

        async def failed():
            return next((m for r, m in reasons if r == "ErrImagePull"), None)
        message = await until(failed, what="ErrImagePull", report=report(client, ns, "down"))
        assert registry.host in message and "connection refused" in message
        await has_event(client, ns, "down", "Failed", f'Failed to pull image "{image}": ')
        await has_event(client, ns, "down", "Failed", "Error: ErrImagePull")
        worker = next(iter(node.kl.workers.values()))

        async def sync_now():
            """One more sync at the current clock time, and its next timer set."""
            n = worker.syncs
            worker.wake.set()

            async def synced():
                return worker.syncs > n and clock.pending > 0
            await until(synced, what="a sync", report=report(client, ns, "down"))

        # Within the 10 s back-off (the clock has not moved) the pod backs off, with the cause.
        await sync_now()
        w = await waiting(client, ns, "down", "ImagePullBackOff")
        assert w["message"].startswith(f'Back-off pulling image "{image}": ErrImagePull: ')
        assert "connection refused" in w["message"]
        await has_event(client, ns, "down", "BackOff", f'Back-off pulling image "{image}"')
        await has_event(client, ns, "down", "Failed", "Error: ImagePullBackOff")
        seen = [r for r, _ in reasons]
        assert seen.index("ErrImagePull") < seen.index("ImagePullBackOff")

        await asyncio.to_thread(registry.start)
        await asyncio.to_thread(registry.push, oci_images.layout, "app-a", "lab/app-a", "v1")
        await sync_now()
        assert (await cstatus(client, ns, "down"))["state"]["waiting"]["reason"] == "ImagePullBackOff"
        clock.step(10)  # the back-off ends: the pull is tried again, and succeeds
        await phase(client, ns, "down", "Succeeded")
        assert (await client.log("down", namespace=ns)).strip() == "this is app a"
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await asyncio.to_thread(registry.stop)


async def test_a_digest_mismatch_is_caught_and_named(make_node, ns, plain_registry, oci_images):
    proxy = TamperingProxy(plain_registry.url)
    try:
        node = await make_node({proxy.host: INSECURE})
        layer = oci_images.images["app-b"].layers[-1]
        proxy.target, proxy.times = layer, 10  # every try gets bad bytes
        image = f"{proxy.host}/lab/app-b:v1"
        created = await node.client.create(pod("tampered", node, image), namespace=ns)
        w = await first_waiting(node.client, created, "ErrImagePull")
        assert layer in w["message"] and "sha256" in w["message"]
        assert proxy.tampered >= 1
        assert node.service.get(image) is None
        assert not node.service.store.has_blob(layer)  # nothing half-written is kept
    finally:
        proxy.stop()


def _push_malicious(registry: Registry, workdir: str, escape: str) -> None:
    """An image whose only layer has a `../<escape>` entry, pushed as lab/evil:v1."""
    layout = os.path.join(workdir, "layout")
    _run("umoci", "init", "--layout", layout)
    _run("umoci", "new", "--image", f"{layout}:evil")
    tar = os.path.join(workdir, "evil.tar")
    with open(tar, "wb") as f:
        f.write(_tar([("ok", b"fine\n"), (f"../{escape}", b"escaped\n")]))
    _run("umoci", "raw", "add-layer", "--image", f"{layout}:evil", tar)
    _run("umoci", "config", "--image", f"{layout}:evil", "--config.cmd", "/ok")
    registry.push(layout, "evil", "lab/evil", "v1")


async def test_a_malicious_layer_is_rejected_whole(make_node, ns, plain_registry, tmp_path):
    escape = f"escape-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "evil"
    work.mkdir()
    await asyncio.to_thread(_push_malicious, plain_registry, str(work), escape)
    node = await make_node({plain_registry.host: INSECURE})
    image = f"{plain_registry.host}/lab/evil:v1"
    created = await node.client.create(pod("evil", node, image), namespace=ns)
    w = await first_waiting(node.client, created, "ErrImagePull")
    assert f"../{escape}" in w["message"] and "escapes the layer root" in w["message"]
    await has_event(node.client, ns, "evil", "Failed", "escapes the layer root")
    assert node.service.get(image) is None
    snapshots = os.path.join(node.store_dir, "snapshots", "sha256")
    assert [n for n in os.listdir(snapshots)] == []  # no snapshot, no staging left
    for d, _dirs, files in os.walk(tmp_path):
        assert escape not in files, f"{escape} was written into {d}"
    for up in range(1, 6):
        assert not os.path.exists(os.path.join(snapshots, *[".."] * up, escape))


async def test_a_full_disk_is_named_and_nothing_half_written_is_kept(make_node, ns, plain_registry, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    # Room for the store's directories and the config, not for busybox's ~1 MB layer.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        node = await make_node({plain_registry.host: INSECURE}, store_dir=str(small / "store"))
        image = f"{plain_registry.host}/lab/app-a:v1"
        created = await node.client.create(pod("full", node, image), namespace=ns)
        w = await first_waiting(node.client, created, "ErrImagePull")
        assert image in w["message"] and "No space left on device" in w["message"]
        await has_event(node.client, ns, "full", "Failed", "No space left on device")
        assert node.service.get(image) is None
        assert os.listdir(small / "store" / "ingest") == []  # no partial blob kept
        assert os.listdir(small / "store" / "snapshots" / "sha256") == []
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


async def test_a_pod_whose_pull_hangs_holds_up_neither_another_pod_nor_its_deletion(make_node, ns, plain_registry):
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # never accepts: requests to it go unanswered
    host = f"127.0.0.1:{hang.getsockname()[1]}"
    try:
        node = await make_node({plain_registry.host: INSECURE, host: INSECURE})
        client = node.client
        await client.create(pod("stuck", node, f"{host}/lab/app-a:v1"), namespace=ns)
        await has_event(client, ns, "stuck", "Pulling", f'Pulling image "{host}/lab/app-a:v1"')
        await client.create(pod("free", node, f"{plain_registry.host}/lab/app-b:v1"), namespace=ns)
        await phase(client, ns, "free", "Succeeded", timeout=20)  # well before the stuck pull times out
        stuck = await client.get("pods", "stuck", namespace=ns)
        assert stuck["status"]["phase"] == "Pending"  # still pulling, and shown as such
        assert stuck["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}

        # Deleted while its pull hangs: the pod goes; the pull is left to finish on its own.
        await client.delete("pods", "stuck", namespace=ns)

        async def gone():
            return not [p for p in (await client.list("pods", namespace=ns))["items"]
                        if p["metadata"]["name"] == "stuck"]
        await until(gone, what="the stuck pod deleted", report=report(client, ns, "stuck"))
        assert f"{host}/lab/app-a:v1" in node.service._inflight  # its pull had not ended
    finally:
        hang.close()


# -- the node's images and kubectl ----------------------------------------------------------

async def test_node_status_lists_the_images_largest_first(make_node, ns, plain_registry, oci_images):
    node = await make_node({plain_registry.host: INSECURE})
    host = plain_registry.host
    for name, tag in (("a", "app-a"), ("w", "whiteout")):
        await node.client.create(pod(name, node, f"{host}/lab/{tag}:v1"), namespace=ns)
    for name in ("a", "w"):
        await phase(node.client, ns, name, "Succeeded")
    await node.node.update_status()  # what its status loop does every period
    images = (await node.client.get("nodes", node.name))["status"]["images"]
    by_name = {n: im for im in images for n in im["names"]}
    for tag in ("app-a", "whiteout"):
        built = oci_images.images[tag]
        im = by_name[f"{host}/lab/{tag}:v1"]
        assert im["names"] == [f"{host}/lab/{tag}@{built.manifest_digest}", f"{host}/lab/{tag}:v1"]
        assert im["sizeBytes"] == node.service.size(node.service.get(f"{host}/lab/{tag}:v1")) > 0
    sizes = [im["sizeBytes"] for im in images]
    assert sizes == sorted(sizes, reverse=True) and len(images) == 2


@pytest.mark.kubectl
async def test_kubectl_run_pulls_and_logs_show_the_images_output(make_node, api, ns, plain_registry, tmp_path):
    node = await make_node({plain_registry.host: INSECURE})
    kubeconfig = tmp_path / "kubeconfig"
    api.write_kubeconfig(kubeconfig, namespace=ns)

    def kubectl(*args: str) -> str:
        r = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                            *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
        return r.stdout
    image = f"{plain_registry.host}/lab/app-a:v1"
    await asyncio.to_thread(kubectl, "run", "web", f"--image={image}", "--restart=Never")
    await node.client.bind("web", node.name, namespace=ns)  # no scheduler runs here: bind as it would
    await phase(node.client, ns, "web", "Succeeded")
    assert (await asyncio.to_thread(kubectl, "logs", "web")).strip() == "this is app a"
    shown = await asyncio.to_thread(kubectl, "get", "pod", "web", "-o", "yaml")
    assert "imagePullPolicy: IfNotPresent" in shown
    assert f"imageID: {plain_registry.host}/lab/app-a@sha256:" in shown
