"""Pod volumes on disk: hostPath type checks, configMap/secret projection and in-place
atomic update, subPath containment. (tmpfs-backed volumes: test_kubelet_runtime.py.)"""
import os
import socket
import stat

import pytest

from kubelet.runtime.linux import volumes
from kubelet.runtime import VolumeError


def host_path(path, kind):
    return {"name": "v", "hostPath": {"path": str(path), "type": kind}}


def config_map(**spec):
    return {"name": "c", "configMap": {"name": "app", **spec}}


def files(path):
    return {name: open(os.path.join(path, name)).read()
            for name in sorted(os.listdir(path)) if not name.startswith("..")}


def test_hostpath_type_checks(tmp_path):
    d, f = tmp_path / "dir", tmp_path / "file"
    d.mkdir()
    f.write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    ok = [("Directory", d), ("File", f), ("Socket", tmp_path / "sock"), ("", tmp_path / "nothing"),
          ("CharDevice", "/dev/null")]
    for kind, path in ok:
        assert volumes.setup(str(tmp_path), host_path(path, kind)) == str(path)
    bad = [("Directory", f, "is not a directory"), ("File", d, "is not a file"),
           ("Directory", tmp_path / "missing", "does not exist"),
           ("Socket", f, "is not a socket"), ("BlockDevice", "/dev/null", "is not a block device"),
           ("FileOrCreate", tmp_path / "no" / "parent", "parent")]
    for kind, path, words in bad:
        with pytest.raises(VolumeError, match=words):
            volumes.setup(str(tmp_path), host_path(path, kind))
    sock.close()


def test_hostpath_or_create_makes_what_is_missing(tmp_path):
    made_dir = tmp_path / "a" / "b"
    volumes.setup(str(tmp_path), host_path(made_dir, "DirectoryOrCreate"))
    assert made_dir.is_dir()
    made_file = tmp_path / "f"
    volumes.setup(str(tmp_path), host_path(made_file, "FileOrCreate"))
    assert made_file.is_file() and stat.S_IMODE(made_file.stat().st_mode) == 0o644


def test_configmap_items_modes_and_atomic_update(tmp_path):
    vol = {"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o440,
                                        "items": [{"key": "a", "path": "conf/a.txt"},
                                                  {"key": "b", "path": "b", "mode": 0o600}]}}
    path = volumes.setup(str(tmp_path), vol, {"a": "one", "b": b"two", "ignored": "x"})
    names = sorted(os.listdir(path))
    assert names[1:] == ["..data", "b", "conf"] and names[0].startswith("..2")
    assert open(os.path.join(path, "conf/a.txt")).read() == "one"
    assert stat.S_IMODE(os.stat(os.path.join(path, "conf/a.txt")).st_mode) == 0o440
    assert stat.S_IMODE(os.stat(os.path.join(path, "b")).st_mode) == 0o600
    before = os.readlink(os.path.join(path, "..data"))

    assert volumes.setup(str(tmp_path), vol, {"a": "one", "b": b"two"}) == path
    assert os.readlink(os.path.join(path, "..data")) == before  # unchanged: no rewrite

    vol["configMap"]["items"] = [{"key": "a", "path": "a"}]
    volumes.setup(str(tmp_path), vol, {"a": "uno", "b": "dos"})
    assert files(path) == {"a": "uno"}  # b and conf/ are gone, a is new
    assert os.readlink(os.path.join(path, "..data")) != before
    assert not os.path.exists(os.path.join(path, before))  # the old payload is deleted
    assert os.path.islink(os.path.join(path, "a"))  # via ..data, switched atomically


def test_configmap_missing_object_or_key(tmp_path):
    with pytest.raises(VolumeError, match='configmap "app" not found'):
        volumes.setup(str(tmp_path), config_map(), None)
    with pytest.raises(VolumeError, match="non-existent key"):
        volumes.setup(str(tmp_path), config_map(items=[{"key": "k", "path": "k"}]), {})
    path = volumes.setup(str(tmp_path), config_map(optional=True), None)
    assert files(path) == {}
    with pytest.raises(VolumeError, match="must be relative"):
        volumes.setup(str(tmp_path), config_map(items=[{"key": "k", "path": "../k"}]), {"k": "v"})


def test_subpath_stays_inside_the_volume(tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    assert volumes.resolve_subpath(str(vol), "a/b") == str(vol / "a" / "b")
    assert (vol / "a" / "b").is_dir()
    os.symlink("/etc", vol / "escape")
    for bad in ("../x", "/etc", "escape"):
        with pytest.raises(VolumeError):
            volumes.resolve_subpath(str(vol), bad)
