"""`minik8s image ls|pull|import|rm|prune` (cluster/images.py) as a user runs it: a real
process on a real store, archives made by skopeo, pulls from a real registry. Bad input
is one line on stderr, exit status 1, and changes nothing."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cluster.state import ClusterConfig
from kubelet.images.store import ContentStore
from tests.images_fixtures import oci_images, plain_registry  # noqa: F401
from tests.test_cluster_cli import ROOT, one_line_error


def image(*args, store: str | None = None, stdin: bytes | None = None, timeout=120):
    cmd = [sys.executable, "-m", "cluster.cli", "image", *args]
    if store is not None:
        cmd += ["--store", store]
    r = subprocess.run(cmd, capture_output=True, input=stdin, timeout=timeout, cwd=ROOT)
    r.stdout, r.stderr = r.stdout.decode(), r.stderr.decode()
    return r


def ok(r) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


@pytest.fixture(scope="module")
def archives(oci_images, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("archives")
    out = {}
    for tag, fmt in (("app-a", "docker-archive"), ("app-b", "oci-archive"), ("base", "docker-archive")):
        path = str(d / f"{tag}.tar")
        r = subprocess.run(["skopeo", "copy", "--quiet", f"oci:{oci_images.layout}:{tag}",
                            f"{fmt}:{path}:lab/{tag}:v1"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out[tag] = path
    return out


@pytest.fixture
def store(tmp_path) -> str:
    return str(tmp_path / "images")


def test_import_then_ls_like_crictl_images(store, archives, oci_images):  # noqa: F811
    out = ok(image("import", archives["app-a"], archives["app-b"], store=store))
    assert out.splitlines()[0].startswith("unpacking docker.io/lab/app-a:v1 (sha256:")
    assert out.splitlines()[0].endswith("...done")
    assert "unpacking docker.io/lab/app-b:v1 (" + oci_images.images["app-b"].manifest_digest in out
    with open(archives["base"], "rb") as f:
        ok(image("import", "-", store=store, stdin=f.read()))
    rows = table(ok(image("ls", store=store)))
    assert rows[0] == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    by_name = {r[0]: r for r in rows[1:]}
    assert sorted(by_name) == ["docker.io/lab/app-a", "docker.io/lab/app-b", "docker.io/lab/base"]
    a = by_name["docker.io/lab/app-a"]
    assert a[1] == "v1"
    assert a[2] == oci_images.images["app-a"].config_digest[7:20]  # 13 characters, as crictl
    assert a[3].endswith("MB")
    ids = ok(image("ls", "-q", store=store)).split()
    assert oci_images.images["app-b"].config_digest in ids


def test_pull_from_an_insecure_registry(store, plain_registry, oci_images):  # noqa: F811
    name = f"{plain_registry.host}/lab/app-b:v1"
    r = image("pull", name, store=store)
    assert plain_registry.host in one_line_error(r)  # plain HTTP is not allowed unless asked for
    out = ok(image("pull", name, "--insecure-registry", plain_registry.host, store=store))
    assert out.strip() == f"Image is up to date for {name} ({oci_images.images['app-b'].config_digest})"
    assert ContentStore(store).get_image(name).manifest_digest == oci_images.images["app-b"].manifest_digest
    err = one_line_error(image("pull", f"{plain_registry.host}/lab/nothing:v1", "--insecure-registry",
                               plain_registry.host, store=store))
    assert "lab/nothing:v1" in err and "404" in err


def test_pull_with_a_registries_yaml(store, plain_registry, oci_images, tmp_path):  # noqa: F811
    name = f"{plain_registry.host}/lab/app-a:v1"
    config = tmp_path / "registries.yaml"
    config.write_text(f'mirrors:\n  "{plain_registry.host}":\n    endpoint: ["http://{plain_registry.host}"]\n')
    ok(image("pull", name, "--registry-config", str(config), store=store))
    assert ContentStore(store).get_image(name).manifest_digest == oci_images.images["app-a"].manifest_digest
    config.write_text("mirrors: [1, 2]\n")
    err = one_line_error(image("pull", name, "--registry-config", str(config), store=store))
    assert str(config) in err and "mirrors" in err


def test_pull_uses_the_local_clusters_registry_config(tmp_path, plain_registry, oci_images):  # noqa: F811
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "registries.yaml"
    config.write_text(f'mirrors:\n  "{plain_registry.host}":\n    endpoint: ["http://{plain_registry.host}"]\n')
    cfg = ClusterConfig(state_dir=str(state))
    cfg.registry_config = str(config)
    cfg.save()
    ok(image("pull", f"{plain_registry.host}/lab/app-b:v1", "--state-dir", str(state)))
    assert ContentStore(str(state / "images")).get_image(f"{plain_registry.host}/lab/app-b:v1") is not None


def test_rm_removes_the_image_and_its_content(store, archives):
    ok(image("import", archives["app-a"], archives["app-b"], store=store))
    s = ContentStore(store)
    a = s.get_image("docker.io/lab/app-a:v1")
    assert ok(image("rm", "lab/app-a:v1", store=store)).strip() == "Deleted: docker.io/lab/app-a:v1"
    assert s.get_image("docker.io/lab/app-a:v1") is None
    assert not s.has_blob(a.layer_digests[-1])  # app-a's own layer went with it
    assert s.get_image("docker.io/lab/app-b:v1") is not None


def test_rm_of_a_missing_or_used_image_changes_nothing(store, archives, tmp_path):
    ok(image("import", archives["app-a"], archives["app-b"], store=store))
    s = ContentStore(store)
    err = one_line_error(image("rm", "lab/app-a:v1", "lab/nothing:v1", store=store))
    assert "lab/nothing:v1" in err and "not present" in err
    assert s.get_image("docker.io/lab/app-a:v1") is not None  # checked before any removal
    holder = tmp_path / "container"
    holder.mkdir()
    s.lease(str(holder), "docker.io/lab/app-b:v1")
    assert "in use" in one_line_error(image("rm", "lab/app-b:v1", store=store))
    assert s.get_image("docker.io/lab/app-b:v1") is not None


def test_prune_keeps_what_containers_use(store, archives, tmp_path):
    ok(image("import", archives["app-a"], archives["app-b"], archives["base"], store=store))
    s = ContentStore(store)
    holder = tmp_path / "container"
    holder.mkdir()
    s.lease(str(holder), "docker.io/lab/app-b:v1")
    out = ok(image("prune", store=store))
    assert sorted(out.split()) == sorted(["Deleted:", "docker.io/lab/app-a:v1", "Deleted:", "docker.io/lab/base:v1"])
    assert [r.name for r in s.list_images()] == ["docker.io/lab/app-b:v1"]
    # The base layer app-b stands on is kept, though base itself is gone.
    from kubelet.images.service import ImageService
    assert os.path.exists(os.path.join(ImageService(s).resolve("lab/app-b:v1").layers[1], "bin", "busybox"))
    assert ok(image("prune", store=store)).strip() == "No images to remove"


def test_the_default_store_is_the_local_clusters(tmp_path, archives):
    state = tmp_path / "state"
    state.mkdir()
    ClusterConfig(state_dir=str(state)).save()
    ok(image("import", archives["base"], "--state-dir", str(state)))
    assert ContentStore(str(state / "images")).get_image("docker.io/lab/base:v1") is not None
    assert "docker.io/lab/base" in ok(image("ls", "--state-dir", str(state)))
    err = one_line_error(image("ls", "--state-dir", str(tmp_path / "nothing")))
    assert "no cluster in" in err


@pytest.mark.parametrize("args, match", [
    (["import"], "needs at least one archive"),
    (["import", "/nonexistent.tar"], "/nonexistent.tar: no such file"),
    (["import", "-", "-"], "stdin"),
    (["import", "{archive}", "--platform", "linux"], "--platform 'linux'"),
    (["import", "{archive}", "--base-name", "Bad/Name"], "must be lowercase"),
    (["import", "{junk}"], "not a tar archive"),
    (["pull"], "pull needs an image name"),
    (["pull", "lab/UPPER:v1"], "must be lowercase"),
    (["pull", "lab/x:v1", "--creds", "nocolon"], "--creds must be USER:PASSWORD"),
    (["rm"], "needs at least one image name"),
    (["rm", "lab/nothing:v1"], "not present"),
    (["rm", "Bad Name"], "invalid reference format"),
])
def test_bad_input_is_one_line_and_changes_nothing(store, archives, tmp_path, args, match):
    ok(image("import", archives["base"], store=store))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"junk" * 1000)
    args = [a.format(archive=archives["app-a"], junk=junk) for a in args]
    err = one_line_error(image(*args, store=store))
    assert match in err, err
    assert [r.name for r in ContentStore(store).list_images()] == ["docker.io/lab/base:v1"]


def test_ls_rm_prune_need_an_existing_store(tmp_path):
    missing = str(tmp_path / "nothing")
    for verb in ("ls", "prune"):
        assert "no image store at" in one_line_error(image(verb, store=missing))
    assert "no image store at" in one_line_error(image("rm", "x", store=missing))
    assert not os.path.exists(missing)
