"""Pod volumes on the node: emptyDir, hostPath, configMap, secret, projected and downwardAPI.

Each pod volume lives at <pod dir>/volumes/<name>, except hostPath, which is the host's
own path. emptyDir is a directory, or a tmpfs (size = sizeLimit) for medium Memory;
secret and projected volumes are tmpfs too, so secret data and ServiceAccount tokens
never reach the disk. projected and downwardAPI files are computed by the kubelet
(kubelet/projected.py) and handed in as a payload. configMap, secret, projected and
downwardAPI files are written the way Kubernetes' AtomicWriter does, so containers never see
a half-updated set:

    <volume>/..2026_11_27_10_00_00.123/<files>   the current payload
    <volume>/..data -> ..2026_11_27_10_00_00.123  swapped by rename(2), atomically
    <volume>/<key>  -> ..data/<key>                one symlink per top-level name

`teardown` unmounts and deletes every volume of a pod (never a hostPath). Functions are
not safe to call concurrently for the same volume; the runtime serializes per pod.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from typing import Mapping

from kubelet.runtime.linux import kernel
from kubelet.runtime import VolumeError
from machinery.quantity import bytes_value

DEFAULT_MODE = 0o644


def volume_path(pod_dir: str, name: str) -> str:
    return os.path.join(pod_dir, "volumes", name)


def setup(pod_dir: str, volume: Mapping, data: Mapping[str, bytes | str] | None = None, *,
          payload: Mapping[str, tuple[bytes, int]] | None = None) -> str:
    name = volume.get("name") or ""
    if not name or "/" in name or name.startswith("."):
        raise VolumeError(f"invalid volume name {name!r}")
    path = volume_path(pod_dir, name)
    if "emptyDir" in volume:
        spec = volume["emptyDir"] or {}
        if spec.get("medium") == "Memory":
            _tmpfs(path, spec.get("sizeLimit"))
        else:  # sizeLimit on disk is enforced by eviction in Kubernetes; not here
            os.makedirs(path, exist_ok=True)
        return path
    if "hostPath" in volume:
        return _host_path(volume["hostPath"])
    for kind in ("projected", "downwardAPI"):
        if kind in volume:
            if payload is None:
                raise VolumeError(f"volume {name!r}: the {kind} volume's files were not computed")
            if kind == "projected":
                _tmpfs(path, None)
            else:
                os.makedirs(path, exist_ok=True)
            write_atomic(path, dict(payload))
            return path
    for kind, ref_key in (("configMap", "name"), ("secret", "secretName")):
        if kind in volume:
            spec = volume[kind] or {}
            if data is None and not spec.get("optional"):
                raise VolumeError(f'{kind.lower()} "{spec.get(ref_key)}" not found')
            if kind == "secret":
                _tmpfs(path, None)
            else:
                os.makedirs(path, exist_ok=True)
            write_atomic(path, _payload(spec, data or {}, kind))
            return path
    raise VolumeError(f"volume {name!r}: unsupported volume source")


def teardown(pod_dir: str) -> None:
    root = os.path.join(pod_dir, "volumes")
    kernel.unmount_all(root)
    if kernel.mounts_under(root):
        raise VolumeError(f"mounts remain under {root}")
    shutil.rmtree(root, ignore_errors=True)


def _tmpfs(path: str, size_limit) -> None:
    os.makedirs(path, exist_ok=True)
    if os.path.ismount(path):  # a tmpfs has a device of its own: one stat, no mount table
        return
    opts = "mode=0777"  # emptyDir is world-writable, as in Kubernetes
    if size_limit is not None:
        opts += f",size={bytes_value(size_limit)}"
    kernel.mount("tmpfs", path, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, opts)


_HOST_PATH_TYPES = {
    "Directory": stat.S_ISDIR, "DirectoryOrCreate": stat.S_ISDIR,
    "File": stat.S_ISREG, "FileOrCreate": stat.S_ISREG,
    "Socket": stat.S_ISSOCK, "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK,
}
_TYPE_WORDS = {"Directory": "a directory", "File": "a file", "Socket": "a socket",
               "CharDevice": "a character device", "BlockDevice": "a block device"}


def _host_path(spec: Mapping) -> str:
    path, kind = spec.get("path") or "", spec.get("type") or ""
    if not os.path.isabs(path):
        raise VolumeError(f"hostPath {path!r} must be absolute")
    if kind == "DirectoryOrCreate" and not os.path.lexists(path):
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif kind == "FileOrCreate" and not os.path.lexists(path):
        if not os.path.isdir(os.path.dirname(path)):  # as Kubernetes: no parent created
            raise VolumeError(f"hostPath type check failed: parent of {path} does not exist")
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    if kind not in ("", *_HOST_PATH_TYPES):
        raise VolumeError(f"hostPath type {kind!r} is not supported")
    if kind:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise VolumeError(f"hostPath type check failed: {path} does not exist") from None
        if not _HOST_PATH_TYPES[kind](mode):
            word = _TYPE_WORDS[kind.replace("OrCreate", "")]
            raise VolumeError(f"hostPath type check failed: {path} is not {word}")
    return path


def _payload(spec: Mapping, data: Mapping[str, bytes | str], kind: str) -> dict[str, tuple[bytes, int]]:
    """{relative path: (content, mode)} for a configMap or secret volume."""
    default = spec.get("defaultMode", DEFAULT_MODE)
    items = spec.get("items")
    if items is None:
        items = [{"key": k, "path": k} for k in sorted(data)]
    out = {}
    for item in items:
        key, rel = item.get("key", ""), item.get("path", "")
        if key not in data:
            if spec.get("optional"):
                continue
            raise VolumeError(f"{kind} references non-existent key {key!r}")
        if not rel or os.path.isabs(rel) or ".." in rel.split("/") or rel.startswith(".."):
            raise VolumeError(f"{kind} item path {rel!r} must be relative and not contain '..'")
        value = data[key]
        out[rel] = (value.encode() if isinstance(value, str) else bytes(value),
                    item.get("mode", default))
    return out


def read_payload(path: str) -> dict[str, tuple[bytes, int]]:
    current = os.path.join(path, "..data")
    out = {}
    for dirpath, _dirs, files in os.walk(current, followlinks=True):
        for f in files:
            full = os.path.join(dirpath, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, current)] = (fh.read(), stat.S_IMODE(os.stat(full).st_mode))
    return out


def write_atomic(path: str, payload: dict[str, tuple[bytes, int]]) -> bool:
    """Make path's visible files exactly payload; False if they already were."""
    data_link = os.path.join(path, "..data")
    if os.path.islink(data_link) and read_payload(path) == payload:
        return False
    old = os.readlink(data_link) if os.path.islink(data_link) else None
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    new = tempfile.mkdtemp(prefix=stamp, dir=path)
    os.chmod(new, 0o755)
    for rel, (content, mode) in payload.items():
        full = os.path.join(new, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(content)
        os.chmod(full, mode)
    tmp_link = os.path.join(path, "..data_tmp")
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink(os.path.basename(new), tmp_link)
    os.rename(tmp_link, data_link)  # the atomic switch
    top = {rel.split("/")[0] for rel in payload}
    for name in top:
        link = os.path.join(path, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..data", name), link)
    for name in os.listdir(path):
        if not name.startswith("..") and name not in top:
            os.unlink(os.path.join(path, name))
    if old:
        shutil.rmtree(os.path.join(path, old), ignore_errors=True)
    return True


def resolve_subpath(volume: str, sub_path: str) -> str:
    """volume/sub_path on the node, created as a directory if missing, refusing any
    path (or symlink on it) that leads out of the volume."""
    if not sub_path:
        return volume
    if os.path.isabs(sub_path) or ".." in sub_path.split("/"):
        raise VolumeError(f"subPath {sub_path!r} must be relative and not contain '..'")
    full = os.path.join(volume, sub_path)
    if not os.path.lexists(full):
        os.makedirs(full, exist_ok=True)
    real, base = os.path.realpath(full), os.path.realpath(volume)
    if real != base and not real.startswith(base + "/"):
        raise VolumeError(f"subPath {sub_path!r} leads outside the volume")
    return real
