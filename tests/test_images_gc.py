"""Image GC on a real, small filesystem (a tmpfs mounted for the test as the store's root):
collect frees down to the low threshold, oldest unused first, and keeps what containers
use; sweep takes only unreferenced content and never what is being written; remove and
prune; a removed image can be pulled again."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading

import pytest

from kubelet.images import gc
from kubelet.images.registry import RegistryHostConfig
from kubelet.images.service import ImageService
from kubelet.images.store import ContentStore, chain_ids
from tests.images_fixtures import oci_images, plain_registry  # noqa: F401
from tests.procs import wait_for

MiB = 1024 * 1024


@pytest.fixture
def tmpfs(tmp_path):
    """A 64 MiB tmpfs, unmounted even when the test fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _put_blob(store: ContentStore, data: bytes) -> str:
    d = _digest(data)
    with store.ingest(d, len(data)) as f:
        f.write(data)
    return d


def _layer(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("filler")
        info.size = size
        t.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


def import_image(store: ContentStore, name: str, size: int) -> list[str]:
    """An image of one uncompressed layer of `size` random bytes, written as a pull
    does (blobs, snapshot, then the record); its blob digests."""
    with store.writing():
        layer = _layer(size)
        layer_d = _put_blob(store, layer)  # uncompressed: its digest is its diff_id
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [layer_d]}}).encode()
        config_d = _put_blob(store, config)
        manifest = json.dumps({"schemaVersion": 2, "config": {"digest": config_d, "size": len(config)},
                               "layers": [{"digest": layer_d, "size": len(layer)}]}).encode()
        manifest_d = _put_blob(store, manifest)
        store.unpack(layer_d, layer_d)
        store.put_image(name, manifest_d, config_d, [layer_d])
    return [manifest_d, config_d, layer_d]


def pull(store: ContentStore, registry, *names: str):
    async def main():
        svc = ImageService(store, registries={registry.host: RegistryHostConfig(insecure=True)})
        try:
            return [await svc.pull(f"{registry.host}/{n}") for n in names]
        finally:
            await svc.aclose()
    return asyncio.run(main())


def complete(store: ContentStore, name: str) -> bool:
    """The image's record, every blob and every snapshot are there."""
    rec = store.get_image(name)
    if rec is None:
        return False
    with open(store.blob_path(rec.config_digest)) as f:
        diff_ids = json.load(f)["rootfs"]["diff_ids"]
    return (all(store.has_blob(d) for d in (rec.config_digest, *rec.layer_digests))
            and all(store.has_snapshot(c) for c in chain_ids(diff_ids)))


def test_thresholds_are_checked():
    for high, low, msg in ((101, 80, "high-threshold 101"), (85, -1, "low-threshold -1"),
                           (80, 80, "must be less than"), (70, 80, "must be less than")):
        with pytest.raises(ValueError, match=msg):
            gc.check_thresholds(high, low)
    gc.check_thresholds(85, 80)
    gc.check_thresholds(100, 0)


def test_collect_frees_down_to_low_oldest_unused_first_and_keeps_the_leased_image(
        tmpfs, tmp_path, plain_registry, oci_images):
    store = ContentStore(os.path.join(tmpfs, "images"))
    a, b = f"{plain_registry.host}/lab/app-a:v1", f"{plain_registry.host}/lab/app-b:v1"
    pull(store, plain_registry, "lab/app-a:v1", "lab/app-b:v1")  # share the base layer
    holder = tmp_path / "container-1"
    holder.mkdir()
    store.lease(str(holder), a)

    fillers = []
    while gc.fs_usage(store.root).percent < 86:
        assert len(fillers) < 40, "the tmpfs does not fill"
        name = f"lab.example/filler-{len(fillers)}:v1"
        import_image(store, name, 2 * MiB)
        fillers.append(name)
    # Last used: the newest filler longest ago, so GC's order is not the creation order.
    for i, name in enumerate(fillers):
        store.touch_used(name, when=1_000_000 + 100 * (len(fillers) - i))
    assert gc.collect(store, 90, 80) == []  # under the high threshold: nothing

    removed = gc.collect(store, 85, 80)

    usage = gc.fs_usage(store.root)
    assert usage.available >= usage.capacity * 20 // 100  # at or under 80 %
    # app-b was never used: first; then the fillers by last use, oldest first.
    expected = [b] + list(reversed(fillers))
    assert removed == expected[:len(removed)]
    assert len(removed) >= 2
    assert len(removed) < len(expected), "it stops once usage is under the low threshold"
    for name in removed:
        assert store.get_image(name) is None
    for name in fillers:
        if name not in removed:
            assert complete(store, name)
    assert complete(store, a)  # leased: kept with its blobs and snapshots (the base shared with b)
    base = oci_images.images["base"].layers[0]
    assert store.has_blob(base)
    own_b = oci_images.images["app-b"].layers[1]
    assert not store.has_blob(own_b)

    # The removed image can be pulled again: only its own layer is fetched.
    [again] = pull(store, plain_registry, "lab/app-b:v1")
    assert complete(store, b)
    assert 0 < again.fetched < 64 * 1024


def test_collect_keeps_images_younger_than_min_age(tmpfs):
    store = ContentStore(os.path.join(tmpfs, "images"))
    n = 0
    while gc.fs_usage(store.root).percent < 86:
        import_image(store, f"lab.example/young-{n}:v1", 4 * MiB)
        n += 1
    assert gc.collect(store, 85, 80, min_age=3600) == []
    assert len(store.list_images()) == n


def test_sweep_takes_only_unreferenced_content(tmp_path):
    store = ContentStore(str(tmp_path / "store"))
    kept = import_image(store, "lab.example/kept:v1", 64 * 1024)
    gone = import_image(store, "lab.example/gone:v1", 64 * 1024)
    gone_chain = gone[2]  # one layer: its chain ID is its diff ID, its digest
    # A leased image whose record a re-pull moved: its content stays with the lease.
    moved = import_image(store, "lab.example/moved:v1", 64 * 1024)
    holder = tmp_path / "container"
    holder.mkdir()
    store.lease(str(holder), "lab.example/moved:v1")
    import_image(store, "lab.example/moved:v1", 64 * 1024)  # the tag now names other content
    store.remove_image("lab.example/gone:v1")
    orphan = _put_blob(store, b"an orphan blob")
    # An ingest left by a killed writer (nobody holds its lock) is stale; one being written is not.
    stale = os.path.join(store.root, "ingest", "ab" * 32)
    with open(stale, "wb") as f:
        f.write(b"half")
    data = b"being written"
    with store.ingest(_digest(data), len(data)) as w:
        w.write(data[:5])
        freed = gc.sweep(store)
        w.write(data[5:])
    assert freed > 0
    assert store.has_blob(_digest(data))
    assert all(store.has_blob(d) for d in kept[1:]) and store.has_snapshot(kept[2])
    assert all(store.has_blob(d) for d in moved[1:]) and store.has_snapshot(moved[2])
    assert not any(store.has_blob(d) for d in gone) and not store.has_snapshot(gone_chain)
    assert not store.has_blob(orphan) and not os.path.exists(stale)
    assert os.listdir(os.path.join(store.root, "trash")) == []
    assert gc.sweep(store) > 0 and not store.has_blob(_digest(data))  # no record names it
    # Once the container is gone, the moved tag's old content goes too.
    holder.rmdir()
    gc.sweep(store)
    assert not store.has_blob(moved[2]) and not store.has_snapshot(moved[2])


def _blocked_flock_on(path: str) -> bool:
    """A process waits for an flock on `path` (a `->` line in /proc/locks)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return any("->" in line and "FLOCK" in line and line.split()[-3] == dev for line in f)


def test_sweep_waits_for_a_writer_between_its_first_blob_and_its_record(tmp_path):
    store = ContentStore(str(tmp_path / "store"))
    result: list[int] = []
    with store.writing():
        blob = _put_blob(store, b"a pulled config, its record not yet written")
        t = threading.Thread(target=lambda: result.append(gc.sweep(store)))
        t.start()
        wait_for(lambda: _blocked_flock_on(os.path.join(store.root, "locks", "content.lock")),
                 timeout=10, what="the sweep waiting for the writer")
        layer = _put_blob(store, _layer(1024))
        store.put_image("lab.example/pulled:v1", blob, blob, [layer])
    t.join(10)
    assert result == [0]
    assert store.has_blob(blob) and store.has_blob(layer)


def test_remove_refuses_a_leased_image_and_frees_an_unused_one(tmp_path):
    store = ContentStore(str(tmp_path / "store"))
    used = import_image(store, "lab.example/used:v1", 256 * 1024)
    unused = import_image(store, "lab.example/unused:v1", 256 * 1024)
    holder = tmp_path / "c"
    holder.mkdir()
    store.lease(str(holder), "lab.example/used:v1")
    with pytest.raises(gc.ImageInUse, match='image "lab.example/used:v1" is in use'):
        gc.remove(store, "lab.example/used:v1")
    assert all(store.has_blob(d) for d in used)
    with pytest.raises(gc.ImageNotFound, match='"docker.io/library/nothing:latest" is not present'):
        gc.remove(store, "nothing")
    freed = gc.remove(store, "lab.example/unused:v1")
    assert freed >= 2 * 256 * 1024  # the layer blob and its snapshot
    assert store.get_image("lab.example/unused:v1") is None
    assert not any(store.has_blob(d) for d in unused)
    assert store.get_image("lab.example/used:v1") is not None


def test_prune_removes_every_image_no_container_uses(tmp_path):
    store = ContentStore(str(tmp_path / "store"))
    for n in ("a", "b", "c"):
        import_image(store, f"lab.example/{n}:v1", 1024)
    holder = tmp_path / "c"
    holder.mkdir()
    store.lease(str(holder), "lab.example/b:v1")
    assert gc.prune(store) == ["lab.example/a:v1", "lab.example/c:v1"]
    assert [r.name for r in store.list_images()] == ["lab.example/b:v1"]
    assert complete(store, "lab.example/b:v1")
    assert gc.prune(store) == []


def test_last_use_is_recorded_by_leases(tmp_path):
    store = ContentStore(str(tmp_path / "store"))
    import_image(store, "lab.example/a:v1", 1024)
    assert store.last_used("lab.example/a:v1") is None
    holder = tmp_path / "c"
    holder.mkdir()
    store.touch_used("lab.example/a:v1", when=1000.0)
    store.lease(str(holder), "lab.example/a:v1")
    started = store.last_used("lab.example/a:v1")
    assert started is not None and started > 1000.0
    store.touch_used("lab.example/a:v1", when=1000.0)
    store.release(str(holder))
    ended = store.last_used("lab.example/a:v1")
    assert ended is not None and ended > 1000.0
