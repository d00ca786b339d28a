"""apps/v1 ControllerRevision through the API server and the real kubectl (validation,
immutable data, kubectl's columns), and controller_manager/history.py against it:
hashing, creation with collision handling, listing and claiming, truncation."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from client.rest import Client
from controller_manager import history
from machinery.labels import parse as parse_selector

KUBECTL = shutil.which("kubectl")


def revision(name: str, data=None, number: int = 1) -> dict:
    obj = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": name},
           "revision": number}
    if data is not None:
        obj["data"] = data
    return obj


def causes(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


def test_a_revision_needs_data_and_keeps_it(http, ns):
    url = f"/apis/apps/v1/namespaces/{ns}/controllerrevisions"
    assert causes(http.post(url, json=revision("nodata"))) == {"data": "Required value: data is mandatory"}
    assert "revision" in causes(http.post(url, json=revision("neg", {"a": 1}, -1)))
    assert http.get(f"{url}/neg").status_code == 404
    r = http.post(url, json=revision("r1", {"spec": {"template": {"x": 1}}}))
    assert r.status_code == 201, r.text
    obj = r.json()
    changed = {**obj, "data": {"spec": {"template": {"x": 2}}}}
    assert causes(http.put(f"{url}/r1", json=changed))["data"].endswith("field is immutable")
    # The revision number may change (a rollback renumbers the revision it returns to).
    r = http.put(f"{url}/r1", json={**obj, "revision": 7})
    assert r.status_code == 200 and r.json()["revision"] == 7
    assert http.get(f"{url}/r1").json()["data"] == {"spec": {"template": {"x": 1}}}


def test_hash_is_fnv32_of_the_data_through_safe_encode():
    # FNV-1 32 of b"" is the offset basis; SafeEncodeString maps each digit.
    assert history.fnv32(b"") == 0x811C9DC5
    assert history.fnv32(b"a") == 0x050C5D7E  # FNV-1 (not 1a: that would be 0xE40C292C)
    h = history.hash_revision({"b": 1, "a": [1, 2]})
    assert h == history.hash_revision({"a": [1, 2], "b": 1})  # key order does not matter
    assert h != history.hash_revision({"b": 1, "a": [1, 2]}, 1)  # the probe does
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert history.revision_name("x" * 300, h) == "x" * 223 + "-" + h


def test_apply_revision_replaces_the_template():
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
          "spec": {"minReadySeconds": 5, "template": {"metadata": {"labels": {"a": "1", "b": "2"}},
                                                       "spec": {"containers": [{"name": "c", "image": "new"}]}}}}
    rev = {"data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"a": "1"}},
                                          "spec": {"containers": [{"name": "c", "image": "old"}]}}}}}
    out = history.apply_revision(ds, rev)
    assert out["spec"] == {"minReadySeconds": 5, "template": {"metadata": {"labels": {"a": "1"}},
                                                              "spec": {"containers": [{"name": "c", "image": "old"}]}}}
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "new"  # not mutated


async def test_create_list_find_and_truncate(apiserver, ns):
    async with Client(apiserver.connection()) as client:
        parent = await client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
                                     namespace=ns)
        parent["apiVersion"], parent["kind"] = "v1", "ConfigMap"
        made = []
        for i in range(4):
            rev = history.new_revision(parent, {"app": "x"}, {"spec": {"template": {"i": i}}}, i + 1)
            created, count = await history.create_revision(client, parent, rev, None)
            assert count is None
            assert created["metadata"]["name"] == f"owner-{history.hash_revision(rev['data'])}"
            assert created["metadata"]["labels"] == {"app": "x", history.HASH_LABEL: history.hash_revision(rev["data"])}
            made.append(created)
        # Creating an equal revision again returns the stored one.
        again, count = await history.create_revision(client, parent, history.new_revision(
            parent, {"app": "x"}, {"spec": {"template": {"i": 0}}}, 9), None)
        assert again["metadata"]["uid"] == made[0]["metadata"]["uid"] and count is None
        # A different revision whose name is taken collides: the count goes up.
        squatter = history.new_revision(parent, {}, {"other": True}, 1)
        fifth_data = {"spec": {"template": {"i": 5}}}
        squatter["metadata"]["name"] = history.revision_name("owner", history.hash_revision(fifth_data))
        squatter["metadata"].pop("ownerReferences")
        await client.create(squatter, namespace=ns)
        fifth, count = await history.create_revision(client, parent, history.new_revision(
            parent, {"app": "x"}, {"spec": {"template": {"i": 5}}}, 5), None)
        assert count == 1
        assert fifth["metadata"]["name"] == "owner-" + history.hash_revision({"spec": {"template": {"i": 5}}}, 1)

        items = (await client.list("controllerrevisions", namespace=ns))["items"]
        owned = history.owned_revisions(parent, items)
        assert len(owned) == 5  # not the squatter
        assert [r["revision"] for r in history.sort_revisions(owned)] == [1, 2, 3, 4, 5]
        assert history.next_revision(owned) == 6
        equal = history.find_equal_revisions(owned, made[2])
        assert [r["metadata"]["uid"] for r in equal] == [made[2]["metadata"]["uid"]]

        # Claiming adopts the matching orphan.
        orphan = history.new_revision(parent, {"app": "x"}, {"orphan": 1}, 1)
        orphan["metadata"].pop("ownerReferences")
        await client.create(orphan, namespace=ns)
        items = (await client.list("controllerrevisions", namespace=ns))["items"]
        claimed = await history.claim_revisions(client, parent, "configmaps", parse_selector("app=x"), items)
        assert len(claimed) == 6

        live = {made[0]["metadata"]["name"]}
        deleted = await history.truncate_history(client, owned, live, 2)
        # Five owned, one live, limit two: the two oldest that are not live go.
        assert deleted == [made[1]["metadata"]["name"], made[2]["metadata"]["name"]]
        names = {r["metadata"]["name"] for r in (await client.list("controllerrevisions", namespace=ns))["items"]}
        assert made[0]["metadata"]["name"] in names and made[1]["metadata"]["name"] not in names


@pytest.mark.kubectl
def test_kubectl_shows_controller_and_revision(apiserver, http, ns, tmp_path):
    if not KUBECTL:
        pytest.skip("kubectl is not installed")
    config = apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
    url = f"/apis/apps/v1/namespaces/{ns}/controllerrevisions"
    body = revision("web-abc", {"spec": {}}, 3)
    body["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "web",
                                            "uid": "00000000-0000-0000-0000-000000000001", "controller": True}]
    assert http.post(url, json=body).status_code == 201
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    out = subprocess.run([KUBECTL, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"),
                          "get", "controllerrevisions"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert lines[1].split()[:3] == ["web-abc", "daemonset.apps/web", "3"]
