"""Importing image archives (kubelet/images/archive.py) with no registry at all: `docker
save` archives (written by `skopeo copy ... docker-archive:`, and Docker 25's OCI layout
flavour, built here as Docker writes it) and OCI layout tarballs (umoci's layout, and
`skopeo copy ... oci-archive:`). Imported images resolve to their layers and config; an
archive that lies about a digest, is malformed or leaves an image unnamed is rejected
with one line and leaves no record."""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile

import pytest

from kubelet.images.archive import ArchiveError, import_archive
from kubelet.images.service import ImageService
from kubelet.images.store import ContentStore
from tests.images_fixtures import oci_images  # noqa: F401

AMD64 = ("linux", "amd64")


def skopeo(src: str, dest: str) -> None:
    r = subprocess.run(["skopeo", "copy", "--quiet", src, dest], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def tar_dir(path: str, out: str) -> str:
    """A tarball of the directory `path`'s contents (an OCI layout tarball)."""
    with tarfile.open(out, "w") as t:
        for name in sorted(os.listdir(path)):
            t.add(os.path.join(path, name), arcname=name)
    return out


def members(path: str) -> dict[str, bytes | tarfile.TarInfo]:
    """Regular files by name (their bytes), other members as their TarInfo."""
    out: dict[str, bytes | tarfile.TarInfo] = {}
    with tarfile.open(path) as t:
        for m in t.getmembers():
            f = t.extractfile(m) if m.isreg() else None
            out[m.name] = f.read() if f else m
    return out


def write_tar(out: str, files: dict[str, bytes | tarfile.TarInfo]) -> str:
    with tarfile.open(out, "w") as t:
        for name, v in files.items():
            if isinstance(v, tarfile.TarInfo):
                t.addfile(v)
            else:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(v), 0o644
                t.addfile(info, io.BytesIO(v))
    return out


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def flip(data: bytes, at: int = -600) -> bytes:
    """One byte changed inside the data (not in a tar's zero padding at the end)."""
    i = at % len(data)
    b = bytearray(data)
    b[i] ^= 0xFF
    return bytes(b)


@pytest.fixture
def store(tmp_path) -> ContentStore:
    return ContentStore(str(tmp_path / "store"))


@pytest.fixture(scope="module")
def docker_archive(oci_images, tmp_path_factory) -> str:  # noqa: F811
    path = str(tmp_path_factory.mktemp("archives") / "app-a.tar")
    skopeo(f"oci:{oci_images.layout}:app-a", f"docker-archive:{path}:lab/app-a:v1")
    return path


@pytest.fixture(scope="module")
def layout_tarball(oci_images, tmp_path_factory) -> str:  # noqa: F811
    return tar_dir(oci_images.layout, str(tmp_path_factory.mktemp("archives") / "layout.tar"))


def assert_no_records(store: ContentStore) -> None:
    assert store.list_images() == []


# -- docker save ----------------------------------------------------------------------------

def test_docker_save_archive_imports_and_resolves(store, docker_archive, oci_images):  # noqa: F811
    built = oci_images.images["app-a"]
    [img] = import_archive(store, docker_archive)
    assert img.name == "docker.io/lab/app-a:v1"
    assert img.config_digest == built.config_digest
    # A docker-save layer is uncompressed: its blob digest is its diff ID.
    assert img.layer_digests == built.diff_ids
    with open(store.blob_path(img.manifest_digest), "rb") as f:
        raw = f.read()
    assert sha(raw) == img.manifest_digest  # the Docker schema 2 manifest the import wrote
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert [la["digest"] for la in manifest["layers"]] == built.diff_ids

    svc = ImageService(store)
    resolved = svc.resolve("lab/app-a:v1")
    assert (resolved.entrypoint, resolved.cmd, resolved.working_dir, resolved.user) == \
        (["/bin/sh", "-c"], ["cat /app/a"], "/app", "app")
    assert resolved.env["APP"] == "a"
    assert open(os.path.join(resolved.layers[0], "app", "a")).read() == "this is app a\n"
    assert os.path.exists(os.path.join(resolved.layers[1], "bin", "busybox"))
    assert resolved.image_id == f"docker.io/lab/app-a@{img.manifest_digest}"


def test_a_name_without_a_tag_gets_latest(store, docker_archive, tmp_path):
    files = members(docker_archive)
    entries = json.loads(files["manifest.json"])
    entries[0]["RepoTags"] = ["lab/plain", "registry.lab:5000/team/web"]
    files["manifest.json"] = json.dumps(entries).encode()
    names = [i.name for i in import_archive(store, write_tar(str(tmp_path / "a.tar"), files))]
    assert names == ["docker.io/lab/plain:latest", "registry.lab:5000/team/web:latest"]
    assert ImageService(store).get("lab/plain") is not None


def test_an_image_saved_by_id_needs_a_base_name(store, docker_archive, tmp_path):
    files = members(docker_archive)
    entries = json.loads(files["manifest.json"])
    entries[0]["RepoTags"] = None
    files["manifest.json"] = json.dumps(entries).encode()
    path = write_tar(str(tmp_path / "a.tar"), files)
    with pytest.raises(ArchiveError, match="no RepoTags.*--base-name"):
        import_archive(store, path)
    assert_no_records(store)
    [img] = import_archive(store, path, base_name="lab/byid")
    assert img.name == "docker.io/lab/byid:latest"


def test_docker_25_oci_layout_flavour_is_read_as_its_oci_layout(store, docker_archive, tmp_path):
    """Docker 25+ `docker save`: an OCI layout (uncompressed layers, io.containerd.image.name)
    plus manifest.json pointing into blobs/; the image keeps its OCI manifest digest."""
    legacy = members(docker_archive)
    [entry] = json.loads(legacy["manifest.json"])
    config = legacy[entry["Config"]]
    layer_bytes = []
    for path in entry["Layers"]:
        v = legacy[path]
        layer_bytes.append(v if isinstance(v, bytes) else legacy[os.path.normpath(os.path.join(
            os.path.dirname(path), v.linkname))])
    files: dict[str, bytes | tarfile.TarInfo] = {
        "blobs/sha256/" + sha(config)[7:]: config,
        **{"blobs/sha256/" + sha(b)[7:]: b for b in layer_bytes}}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(b), "size": len(b)}
                   for b in layer_bytes]}).encode()
    files["blobs/sha256/" + sha(manifest)[7:]] = manifest
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
            "size": len(manifest)}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [{**desc, "annotations": {
        "io.containerd.image.name": "docker.io/lab/d25:v1", "org.opencontainers.image.ref.name": "v1"}}]}).encode()
    files["manifest.json"] = json.dumps([{"Config": "blobs/sha256/" + sha(config)[7:], "RepoTags": ["lab/d25:v1"],
                                          "Layers": ["blobs/sha256/" + sha(b)[7:] for b in layer_bytes]}]).encode()
    [img] = import_archive(store, write_tar(str(tmp_path / "d25.tar"), files))
    assert (img.name, img.manifest_digest) == ("docker.io/lab/d25:v1", sha(manifest))
    assert ImageService(store).resolve("lab/d25:v1").cmd == ["cat /app/a"]

    # Saved by ID in that layout: no annotation; manifest.json's RepoTags name it.
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()
    files["manifest.json"] = json.dumps([{"Config": "blobs/sha256/" + sha(config)[7:], "RepoTags": ["lab/d25:v2"],
                                          "Layers": ["blobs/sha256/" + sha(b)[7:] for b in layer_bytes]}]).encode()
    [img] = import_archive(store, write_tar(str(tmp_path / "d25b.tar"), files))
    assert img.name == "docker.io/lab/d25:v2"


# -- OCI layout tarballs ----------------------------------------------------------------------

def test_oci_layout_tarball_imports_every_image_named_by_ref_name_and_base_name(store, layout_tarball,
                                                                                 oci_images):  # noqa: F811
    imported = {i.name: i for i in import_archive(store, layout_tarball, base_name="lab/umoci", platform=AMD64)}
    assert sorted(imported) == [f"docker.io/lab/umoci:{t}" for t in ("app-a", "app-b", "base", "multi", "whiteout")]
    for tag in ("base", "app-a", "app-b", "whiteout"):
        assert imported[f"docker.io/lab/umoci:{tag}"].manifest_digest == oci_images.images[tag].manifest_digest
    # The multi-arch index resolves to the node platform's manifest (app-a on amd64).
    assert imported["docker.io/lab/umoci:multi"].manifest_digest == oci_images.images["app-a"].manifest_digest

    svc = ImageService(store)
    a, b = svc.resolve("lab/umoci:app-a"), svc.resolve("lab/umoci:app-b")
    assert a.layers[1] == b.layers[1]  # the shared base layer: one snapshot
    assert open(os.path.join(b.layers[0], "app", "b")).read() == "this is app b\n"
    w = svc.resolve("lab/umoci:whiteout")
    if os.geteuid() == 0:  # overlay whiteouts are made only as root
        assert stat.S_ISCHR(os.lstat(os.path.join(w.layers[0], "etc", "motd")).st_mode)


def test_oci_index_entry_for_another_platform(store, layout_tarball):
    imported = import_archive(store, layout_tarball, base_name="lab/umoci", platform=("linux", "arm64", "v8"))
    multi = next(i for i in imported if i.name.endswith(":multi"))
    cfg = json.load(open(store.blob_path(multi.config_digest)))
    assert (cfg["architecture"], cfg.get("variant")) == ("arm64", "v8")


def test_no_image_for_the_node_platform_is_rejected_naming_the_ones_there_are(store, layout_tarball):
    with pytest.raises(ArchiveError, match=r"no image for platform linux/s390x.*linux/amd64, linux/arm64/v8"):
        import_archive(store, layout_tarball, base_name="lab/umoci", platform=("linux", "s390x"))
    assert_no_records(store)


def test_ref_names_that_are_only_tags_need_a_base_name(store, layout_tarball):
    with pytest.raises(ArchiveError, match=r"no image name \(its ref name 'base' is only a tag\).*--base-name"):
        import_archive(store, layout_tarball, platform=AMD64)
    assert_no_records(store)


def test_skopeo_oci_archive_named_by_its_ref_name(store, oci_images, tmp_path):  # noqa: F811
    path = str(tmp_path / "app-b.tar")
    skopeo(f"oci:{oci_images.layout}:app-b", f"oci-archive:{path}:registry.lab:5000/team/app-b:v2")
    [img] = import_archive(store, path)
    assert (img.name, img.manifest_digest) == ("registry.lab:5000/team/app-b:v2",
                                               oci_images.images["app-b"].manifest_digest)
    assert ImageService(store).resolve("registry.lab:5000/team/app-b:v2").cmd == ["cat /app/b"]


def test_a_gzip_compressed_archive_imports(store, docker_archive, tmp_path):
    import gzip
    path = str(tmp_path / "app-a.tar.gz")
    with open(docker_archive, "rb") as src, gzip.open(path, "wb") as dst:
        dst.write(src.read())
    with open(path, "rb") as f:
        [img] = import_archive(store, f, label="stdin")
    assert img.name == "docker.io/lab/app-a:v1"


# -- lying and malformed archives --------------------------------------------------------------

def test_a_tampered_docker_save_layer_is_rejected_and_nothing_recorded(store, docker_archive, tmp_path):
    files = members(docker_archive)
    [entry] = json.loads(files["manifest.json"])
    top = entry["Layers"][-1]
    real = files[top] if isinstance(files[top], bytes) else None
    assert real is not None, "skopeo writes the layer file under its own name"
    files[top] = flip(real)
    with pytest.raises(ArchiveError, match=rf"layer {top} does not match its digest") as e:
        import_archive(store, write_tar(str(tmp_path / "bad.tar"), files))
    assert "\n" not in str(e.value)
    assert_no_records(store)
    assert not store.has_blob(sha(real))


def test_a_tampered_oci_layer_blob_is_rejected(store, oci_images, tmp_path):  # noqa: F811
    path = str(tmp_path / "app-b.tar")
    skopeo(f"oci:{oci_images.layout}:app-b", f"oci-archive:{path}:lab/app-b:v1")
    files = members(path)
    layer = "blobs/sha256/" + oci_images.images["app-b"].layers[-1][7:]
    files[layer] = flip(files[layer], at=len(files[layer]) // 2)
    with pytest.raises(ArchiveError, match="does not match its digest"):
        import_archive(store, write_tar(str(tmp_path / "bad.tar"), files))
    assert_no_records(store)


def test_a_tampered_manifest_or_config_is_rejected(store, oci_images, tmp_path):  # noqa: F811
    built = oci_images.images["app-b"]
    path = str(tmp_path / "app-b.tar")
    skopeo(f"oci:{oci_images.layout}:app-b", f"oci-archive:{path}:lab/app-b:v1")
    for digest in (built.manifest_digest, built.config_digest):
        files = members(path)
        name = "blobs/sha256/" + digest[7:]
        files[name] = files[name].replace(b"{", b"{ ", 1)
        with pytest.raises(ArchiveError, match=rf"{name} does not match its digest {digest}"):
            import_archive(store, write_tar(str(tmp_path / "bad.tar"), files))
        assert_no_records(store)


def test_a_config_lying_about_a_diff_id_is_rejected_when_unpacking(store, docker_archive, tmp_path):
    """The layer blob is what its (OCI) name says, but not what the config's diff ID says."""
    files = members(docker_archive)
    [entry] = json.loads(files["manifest.json"])
    cfg = json.loads(files[entry["Config"]])
    cfg["rootfs"]["diff_ids"][-1] = "sha256:" + "0" * 64
    cfg_bytes = json.dumps(cfg).encode()
    del files[entry["Config"]]
    files[sha(cfg_bytes)[7:] + ".json"] = cfg_bytes
    entry["Config"] = sha(cfg_bytes)[7:] + ".json"
    files["manifest.json"] = json.dumps([entry]).encode()
    with pytest.raises(ArchiveError, match="does not match its digest|diff ID"):
        import_archive(store, write_tar(str(tmp_path / "bad.tar"), files))
    assert_no_records(store)


def test_one_bad_image_leaves_no_record_for_the_good_ones(store, docker_archive, tmp_path):
    files = members(docker_archive)
    [entry] = json.loads(files["manifest.json"])
    files["manifest.json"] = json.dumps([entry, {**entry, "RepoTags": ["lab/two:v1"],
                                                 "Layers": entry["Layers"][:-1] + ["missing/layer.tar"]}]).encode()
    with pytest.raises(ArchiveError, match="layer missing/layer.tar of manifest.json entry 1 is missing"):
        import_archive(store, write_tar(str(tmp_path / "bad.tar"), files))
    assert_no_records(store)


def test_a_config_named_by_a_digest_it_does_not_have_is_rejected(store, docker_archive, tmp_path):
    files = members(docker_archive)
    [entry] = json.loads(files["manifest.json"])
    files[entry["Config"]] = files[entry["Config"]].replace(b"{", b"{ ", 1)
    with pytest.raises(ArchiveError, match=rf"config {entry['Config']} does not match its digest"):
        import_archive(store, write_tar(str(tmp_path / "bad.tar"), files))
    assert_no_records(store)


@pytest.mark.parametrize("files, match", [
    ({"hello.txt": b"hi"}, "neither an OCI image layout .* nor a docker save archive"),
    ({"manifest.json": b"{}"}, "manifest.json is not a list of images"),
    ({"manifest.json": b"[{"}, "manifest.json is not valid JSON"),
    ({"manifest.json": b'[{"Config": "c.json", "Layers": []}]'}, "c.json is missing"),
    ({"oci-layout": b'{"imageLayoutVersion": "9.9"}', "index.json": b"{}"}, "unsupported OCI layout version '9.9'"),
    ({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}, "the OCI layout has no index.json"),
    ({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": b'{"manifests": []}'}, "holds no images"),
    ({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
      "index.json": b'{"manifests": [{"digest": "md5:abc", "size": 1}]}'}, "unsupported digest 'md5:abc'"),
    ({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
      "index.json": json.dumps({"manifests": [{"digest": "sha256:" + "a" * 64, "size": 10}]}).encode()},
     "manifest sha256:a{64} is missing"),
])
def test_malformed_archives_are_one_line_errors(store, tmp_path, files, match):
    with pytest.raises(ArchiveError, match=match) as e:
        import_archive(store, write_tar(str(tmp_path / "bad.tar"), files))
    assert "\n" not in str(e.value)
    assert_no_records(store)


def test_not_an_archive_missing_and_truncated(store, docker_archive, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(ArchiveError, match="not a tar archive"):
        import_archive(store, str(junk))
    with pytest.raises(ArchiveError, match="no such file"):
        import_archive(store, str(tmp_path / "nothing.tar"))
    data = open(docker_archive, "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError):
        import_archive(store, str(cut))
    assert_no_records(store)


def test_a_bad_base_name_is_rejected(store, docker_archive):
    for bad, match in (("Lab/X", "must be lowercase"), ("lab/x:v1", "without a tag")):
        with pytest.raises(ArchiveError, match=match):
            import_archive(store, docker_archive, base_name=bad)
    assert_no_records(store)


def test_legacy_layer_paths_and_links_inside_the_archive(store, docker_archive, tmp_path):
    """docker save's legacy layout names layers <v1 id>/layer.tar, a repeated layer being a
    symlink to the first; a link is followed inside the archive only."""
    files = members(docker_archive)
    [entry] = json.loads(files["manifest.json"])
    links = [n for n, v in files.items() if isinstance(v, tarfile.TarInfo) and v.issym()]
    assert links and all(n.endswith("/layer.tar") for n in links)  # skopeo writes them too
    by_target = {os.path.normpath(os.path.join(os.path.dirname(n), files[n].linkname)): n for n in links}
    legacy = dict(entry, Layers=[by_target[p] for p in entry["Layers"]])
    files["manifest.json"] = json.dumps([legacy]).encode()
    [img] = import_archive(store, write_tar(str(tmp_path / "legacy.tar"), files))
    assert img.name == "docker.io/lab/app-a:v1"

    escape = tarfile.TarInfo("evil/layer.tar")
    escape.type, escape.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
    files["evil/layer.tar"] = escape
    files["manifest.json"] = json.dumps([dict(entry, RepoTags=["lab/evil:v1"],
                                              Layers=entry["Layers"][:-1] + ["evil/layer.tar"])]).encode()
    with pytest.raises(ArchiveError, match="layer evil/layer.tar of manifest.json entry 0 is missing"):
        import_archive(store, write_tar(str(tmp_path / "evil.tar"), files))
    assert [r.name for r in store.list_images()] == ["docker.io/lab/app-a:v1"]
