"""core/v1 ReplicationControllers: the API (defaults from the template, Kubernetes' 422s,
kubectl's columns and `kubectl scale rc`), and the replicationcontroller controller
(the ReplicaSet controller's reconciler) as a `minik8s controller-manager` process:
replicas kept, scaled, orphans adopted, pods of others left alone."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid

import pytest

from client.rest import Client
from tests.procs import Component, eventually, free_port

KUBECTL = shutil.which("kubectl")


def rc(name: str, replicas: int = 2, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
            "spec": {"replicas": replicas, "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, **spec}}


def causes(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


def test_defaults_from_the_template_and_bad_input(http, ns):
    url = f"/api/v1/namespaces/{ns}/replicationcontrollers"
    r = http.post(url, json=rc("web"))
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["spec"]["selector"] == {"app": "web"}
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert obj["metadata"]["generation"] == 1
    body = rc("nodefault")
    del body["spec"]["replicas"]
    assert http.post(url, json=body).json()["spec"]["replicas"] == 1

    assert causes(http.post(url, json=rc("bad", selector={"app": "other"}))) == {
        "spec.template.metadata.labels": 'Invalid value: {"app":"bad"}: `selector` does not match template `labels`'}
    bad = rc("bad")
    bad["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    assert causes(http.post(url, json=bad)) == {
        "spec.template.spec.restartPolicy": 'Unsupported value: "OnFailure": supported values: "Always"'}
    assert "spec.replicas" in causes(http.post(url, json=rc("bad", replicas=-1)))
    assert http.get(f"{url}/bad").status_code == 404

    scale = http.get(f"{url}/web/scale").json()
    assert scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=web"


@pytest.fixture
def cm(apiserver, tmp_path):
    # The controller manager's own credential, so its RBAC roles are what is tested.
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "cm-kubeconfig", "controller-manager")
    proc = Component("controller-manager", "--kubeconfig", kubeconfig,
                     "--controllers", "replicationcontroller,garbagecollector",
                     "--secure-port", str(free_port()),
                     "--leader-elect-resource-name", f"cm-{uuid.uuid4().hex[:8]}",
                     "--leader-elect-retry-period", "0.2s").start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_replicas_kept_scaled_and_orphans_adopted(apiserver, ns, cm, tmp_path):
    async with Client(apiserver.connection()) as client:
        async def pods(label: str = "app=legacy") -> list[dict]:
            items = (await client.list("pods", namespace=ns, label_selector=label))["items"]
            return [p for p in items if not p["metadata"].get("deletionTimestamp")]

        # An orphan that matches is adopted, and counts.
        orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "legacy"}},
                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        await client.create(orphan, namespace=ns)
        await client.create(rc("legacy", 3), namespace=ns)
        got = await eventually(lambda: _n(pods, 3), what="three pods")
        owners = {p["metadata"]["name"]: p["metadata"]["ownerReferences"][0] for p in got}
        assert "orphan" in owners
        assert all((o["apiVersion"], o["kind"], o["name"], o["controller"]) ==
                   ("v1", "ReplicationController", "legacy", True) for o in owners.values())
        live = await client.get("replicationcontrollers", "legacy", namespace=ns)
        assert await eventually(lambda: _status(client, ns, 3), what="status.replicas 3")

        if KUBECTL:
            config = apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
            env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

            def kubectl(*args: str) -> str:
                r = subprocess.run([KUBECTL, "--kubeconfig", config, "--cache-dir", str(tmp_path / "cache"), *args],
                                   capture_output=True, text=True, env=env, timeout=60)
                assert r.returncode == 0, r.stderr
                return r.stdout
            assert (await asyncio.to_thread(kubectl, "scale", "rc", "legacy", "--replicas=5")).strip() == \
                "replicationcontroller/legacy scaled"
            await eventually(lambda: _n(pods, 5), what="five pods")
            await eventually(lambda: _status(client, ns, 5), what="status.replicas 5")
            out = await asyncio.to_thread(kubectl, "get", "rc")
            assert out.splitlines()[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
            assert out.splitlines()[1].split()[:4] == ["legacy", "5", "5", "0"]
        else:
            live["spec"]["replicas"] = 5
            await client.update(live)
            await eventually(lambda: _n(pods, 5), what="five pods")

        await client.patch("replicationcontrollers", "legacy", namespace=ns, subresource="scale",
                           patch={"spec": {"replicas": 1}})
        await eventually(lambda: _n(pods, 1), what="one pod")
        # A pod that stops matching is released, and replaced.
        (last,) = await pods()
        await client.patch("pods", last["metadata"]["name"], namespace=ns,
                           patch={"metadata": {"labels": {"app": "gone"}}})
        await eventually(lambda: _n(pods, 1), what="a replacement")
        released = await eventually(lambda: _released(client, ns, last["metadata"]["name"]), what="the release")
        assert released

        from tests.test_kubectl_lite import KubectlLite, write_kubeconfig
        kl = KubectlLite(write_kubeconfig(tmp_path / "lite-kubeconfig", apiserver, ns), str(tmp_path), ns)
        out = (await asyncio.to_thread(kl, "describe", "rc", "legacy")).stdout
        assert out.startswith(f"Name:         legacy\nNamespace:    {ns}\nSelector:     app=legacy\n"), out
        assert "Replicas:     1 current / 1 desired\n" in out and "Pod Template:" in out


async def _n(pods, n: int):
    got = await pods()
    return got if len(got) == n else None


async def _status(client: Client, ns: str, n: int):
    obj = await client.get("replicationcontrollers", "legacy", namespace=ns)
    st = obj.get("status") or {}
    return st.get("replicas") == n and st.get("observedGeneration") == obj["metadata"]["generation"]


async def _released(client: Client, ns: str, name: str):
    pod = await client.get("pods", name, namespace=ns)
    return not pod["metadata"].get("ownerReferences")


def test_the_official_python_client_reads_and_scales_them(apiserver, ns):
    from kubernetes import client
    config = client.Configuration(host=apiserver.url)
    config.ssl_ca_cert = apiserver.ca_file
    config.cert_file, config.key_file = f"{apiserver.pki_dir}/admin.crt", f"{apiserver.pki_dir}/admin.key"
    with client.ApiClient(config) as c:
        core, apps = client.CoreV1Api(c), client.AppsV1Api(c)
        core.create_namespaced_replication_controller(ns, rc("py", 1))
        got = core.read_namespaced_replication_controller("py", ns)
        assert got.spec.selector == {"app": "py"} and got.spec.replicas == 1
        scale = core.patch_namespaced_replication_controller_scale("py", ns, {"spec": {"replicas": 4}})
        assert scale.spec.replicas == 4 and scale.status.selector == "app=py"
        ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "py"},
              "spec": {"selector": {"matchLabels": {"app": "py"}}, "template": {
                  "metadata": {"labels": {"app": "py"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
        apps.create_namespaced_daemon_set(ns, ds)
        read = apps.read_namespaced_daemon_set("py", ns)
        assert read.spec.update_strategy.rolling_update.max_unavailable == 1
        apps.create_namespaced_controller_revision(ns, {
            "apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "py-1"},
            "data": {"spec": {"template": {"$patch": "replace"}}}, "revision": 1})
        (rev,) = apps.list_namespaced_controller_revision(ns).items
        assert rev.revision == 1 and rev.data == {"spec": {"template": {"$patch": "replace"}}}


async def test_events_come_from_the_replication_controller(apiserver, ns, cm):
    async with Client(apiserver.connection()) as client:
        await client.create(rc("evented", 1), namespace=ns)

        async def created():
            evs = (await client.list("events", namespace=ns))["items"]
            return [e for e in evs if e["reason"] == "SuccessfulCreate"
                    and e["involvedObject"].get("kind") == "ReplicationController"]
        (ev,) = await eventually(created, what="the SuccessfulCreate event")
        assert ev["source"]["component"] == "replication-controller"
        assert ev["message"].startswith("Created pod: evented-")
