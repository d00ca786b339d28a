"""Image garbage collection on the node's content store, as the kubelet's image GC manager
(pkg/kubelet/images/image_gc_manager.go) and containerd's content GC do it.

- `collect(store, high, low)`: when the usage of the filesystem holding the store (statvfs
  of its root: 100 - available*100/capacity, as the kubelet computes it from cAdvisor's
  image fs) is at or over `high` percent, removes images until usage is at or under `low`
  percent: images no container has used first (oldest record first), then by when a
  container last used them, oldest first. It never removes an image a live lease holds
  (a container uses it), nor one whose record is younger than `min_age` (the kubelet's
  --minimum-image-ttl-duration: it may have just been pulled for a container that is
  about to start). `high` 100 turns it off, as the kubelet's flag does. If everything it
  may remove is gone and usage is still over `low`, it logs that (the kubelet's
  FreeDiskSpaceFailed) and returns what it removed.
- `remove(store, name)`: removes one image (refusing one a container uses, with
  `ImageInUse`) and sweeps; the bytes freed. `prune(store)`: removes every image no
  container uses and sweeps (crictl rmi --prune).
- `sweep(store)`: deletes every blob and snapshot that no image record and no live lease
  keeps, stale ingests, and what an earlier sweep left in trash/; the bytes freed. Content
  being written is never taken: the sweep holds the store's `sweeping()` lock (so no
  pull or import is between its first blob and its record) and each blob's or snapshot's
  own lock (skipping any that is held). It holds them only while it renames its victims
  into trash/ and deletes them after, so writers wait milliseconds, not for a deletion.
  If a record's config cannot be read (its chain IDs unknown), no snapshot is swept.
- One collection or removal runs at a time per store (a lock file), so the kubelets
  sharing a store do not remove twice what once would do.

Bytes are disk usage (allocated blocks, each inode counted once), what statvfs sees.

A known window (as in the kubelet): an image is checked for leases and then removed, so a
container leasing it in between starts from an image that is going away; `min_age` covers
the usual case, a container started right after its image's pull.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from kubelet.images import ImageError
from kubelet.images import reference
from kubelet.images.store import ContentStore, ImageRecord, chain_ids

log = logging.getLogger("minik8s.kubelet.images.gc")

IMAGE_GC_PERIOD = 300.0          # the kubelet's ImageGCPeriod: 5 minutes
DEFAULT_HIGH_THRESHOLD = 85      # --image-gc-high-threshold
DEFAULT_LOW_THRESHOLD = 80       # --image-gc-low-threshold
DEFAULT_MIN_AGE = 120.0          # --minimum-image-ttl-duration: 2m


class ImageNotFound(ImageError):
    """No image of that name is on the node."""


class ImageInUse(ImageError):
    """A container uses the image; it is not removed."""


def check_thresholds(high_percent: int, low_percent: int) -> None:
    """ValueError, worded as the kubelet's configuration validation, unless 0 <= low <
    high <= 100."""
    if not 0 <= high_percent <= 100:
        raise ValueError(f"invalid --image-gc-high-threshold {high_percent}: must be in the range [0, 100]")
    if not 0 <= low_percent <= 100:
        raise ValueError(f"invalid --image-gc-low-threshold {low_percent}: must be in the range [0, 100]")
    if low_percent >= high_percent:
        raise ValueError(f"--image-gc-low-threshold ({low_percent}) must be less than "
                         f"--image-gc-high-threshold ({high_percent})")


@dataclass(frozen=True)
class FsUsage:
    capacity: int   # bytes
    available: int  # bytes an unprivileged writer can still use

    @property
    def percent(self) -> int:
        """Used percent as the kubelet computes it (integer, rounding usage up)."""
        return 100 - (self.available * 100 // self.capacity)


def fs_usage(path: str) -> FsUsage:
    st = os.statvfs(path)
    capacity = st.f_blocks * st.f_frsize
    if capacity <= 0:
        raise OSError(f"invalid capacity {capacity} of the filesystem holding {path}")
    return FsUsage(capacity, min(st.f_bavail * st.f_frsize, capacity))


@contextlib.contextmanager
def _gc_lock(store: ContentStore) -> Iterator[None]:
    fd = os.open(os.path.join(store.root, "locks", "gc.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _normalize(name: str) -> str:
    try:
        return reference.normalize(name)
    except ValueError:
        return name  # not a reference: looked up as given (and then not found)


def _disk_usage(path: str, seen: set[tuple[int, int]]) -> int:
    """Allocated bytes under `path` (a file or a tree), each inode once."""
    total = 0
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    stack = [(path, st)]
    while stack:
        p, st = stack.pop()
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            total += st.st_blocks * 512
        if os.path.isdir(p) and not os.path.islink(p):
            try:
                entries = list(os.scandir(p))
            except OSError:
                continue
            for e in entries:
                with contextlib.suppress(OSError):
                    stack.append((e.path, e.stat(follow_symlinks=False)))
    return total


def _config_chain_ids(store: ContentStore, config_digest: str) -> list[str] | None:
    try:
        with open(store.blob_path(config_digest), "rb") as f:
            cfg = json.load(f)
        return chain_ids([str(d) for d in cfg["rootfs"]["diff_ids"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _hex_entries(directory: str) -> list[str]:
    return [e for e in os.listdir(directory) if not e.startswith(".") and len(e) == 64]


def sweep(store: ContentStore) -> int:
    """Deletes the content nothing keeps (see the module docstring); the bytes freed."""
    seen: set[tuple[int, int]] = set()
    trash = os.path.join(store.root, "trash")
    os.makedirs(trash, exist_ok=True)
    # What a killed sweep left: taken out under the lock then, so nothing can want it.
    freed = _empty_trash(trash, seen)
    with store.sweeping():
        keep_blobs: set[str] = set()
        keep_snapshots: set[str] = set()
        configs: set[str] = set()
        for rec in store.list_images():
            keep_blobs.update((rec.manifest_digest, rec.config_digest, *rec.layer_digests))
            configs.add(rec.config_digest)
        for _image, content in store.leases():
            keep_blobs.update(content)
            if len(content) >= 2:
                configs.add(content[1])  # lease content is [manifest, config, *layers]
        snapshots_known = True
        for config in configs:
            ids = _config_chain_ids(store, config)
            if ids is None:
                snapshots_known = False
                log.warning("image GC: config %s cannot be read, so no snapshot is swept", config)
            else:
                keep_snapshots.update(ids)

        victims: list[str] = []
        blobs = os.path.join(store.root, "blobs", "sha256")
        for hexd in _hex_entries(blobs):
            digest = "sha256:" + hexd
            if digest not in keep_blobs:
                _take(store.try_lock(digest), os.path.join(blobs, hexd), trash, victims)
        ingest = os.path.join(store.root, "ingest")
        for hexd in _hex_entries(ingest):  # an ingest whose writer is gone (its lock is free)
            _take(store.try_lock("sha256:" + hexd), os.path.join(ingest, hexd), trash, victims)
        if snapshots_known:
            snaps = os.path.join(store.root, "snapshots", "sha256")
            for hexd in _hex_entries(snaps):
                chain_id = "sha256:" + hexd
                if chain_id not in keep_snapshots:
                    _take(store.try_snapshot_lock(chain_id), os.path.join(snaps, hexd), trash, victims)
    for path in victims:
        freed += _disk_usage(path, seen)
        _delete(path)
    return freed


def _take(lock_fd: int | None, path: str, trash: str, victims: list[str]) -> None:
    """Moves `path` into trash if its lock was free (then releases the lock)."""
    if lock_fd is None:
        return  # being written: not ours to take
    try:
        dest = os.path.join(trash, f"{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return
        victims.append(dest)
    finally:
        os.close(lock_fd)


def _delete(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _empty_trash(trash: str, seen: set[tuple[int, int]]) -> int:
    freed = 0
    for entry in os.listdir(trash):
        path = os.path.join(trash, entry)
        freed += _disk_usage(path, seen)
        _delete(path)
    return freed


def _remove_record(store: ContentStore, name: str, leased: set[str]) -> None:
    if name in leased:
        raise ImageInUse(f'image "{name}" is in use by a container; not removed')
    if not store.remove_image(name):
        raise ImageNotFound(f'image "{name}" is not present on the node')


def remove(store: ContentStore, name: str) -> int:
    """Removes the image `name` (`nginx` means docker.io/library/nginx:latest) and the
    content only it kept; the bytes freed. ImageInUse if a container uses it,
    ImageNotFound if the node does not have it; either way nothing changes."""
    with _gc_lock(store):
        _remove_record(store, _normalize(name), store.leased())
        return sweep(store)


def prune(store: ContentStore) -> list[str]:
    """Removes every image no container uses, then their content; the names removed."""
    with _gc_lock(store):
        leased = store.leased()
        removed = []
        for rec in store.list_images():
            if rec.name not in leased and store.remove_image(rec.name):
                removed.append(rec.name)
        freed = sweep(store)
    if removed:
        log.info("image prune: removed %d image(s), freed %d bytes: %s", len(removed), freed,
                 ", ".join(removed))
    return removed


def eviction_order(store: ContentStore, records: list[ImageRecord]) -> list[ImageRecord]:
    """The kubelet's byLastUsedAndDetected: last used, oldest first (never used first),
    ties broken by when the image was first recorded."""
    return sorted(records, key=lambda r: (store.last_used(r.name) or 0.0, r.created, r.name))


def collect(store: ContentStore, high_percent: int, low_percent: int, *, min_age: float = 0.0,
            now: float | None = None) -> list[str]:
    """One image GC pass (see the module docstring); the names of the images removed."""
    check_thresholds(high_percent, low_percent)
    if high_percent >= 100:
        return []
    with _gc_lock(store):
        usage = fs_usage(store.root)
        if usage.percent < high_percent:
            return []
        # Free until available >= capacity * (100 - low) / 100, the kubelet's amountToFree.
        want_available = usage.capacity * (100 - low_percent) // 100
        log.info("image GC: disk usage of %s is at %d%%, over the high threshold (%d%%): "
                 "trying to free %d bytes", store.root, usage.percent, high_percent,
                 want_available - usage.available)
        now = time.time() if now is None else now
        leased = store.leased()
        removed: list[str] = []
        freed = 0
        for rec in eviction_order(store, store.list_images()):
            if usage.available >= want_available:
                break
            if rec.name in leased or now - rec.created < min_age:
                continue
            if not store.remove_image(rec.name):
                continue  # removed by someone else meanwhile
            n = sweep(store)
            freed += n
            removed.append(rec.name)
            log.info("image GC: removed %s, %d bytes freed", rec.name, n)
            usage = fs_usage(store.root)
        if usage.available < want_available:
            log.warning("image GC: failed to garbage collect the required amount: wanted usage of "
                        "%s at %d%%, it is at %d%% after freeing %d bytes (images in use or younger "
                        "than %.0fs are kept)", store.root, low_percent, usage.percent, freed, min_age)
        return removed


async def run(store: ContentStore, high_percent: int, low_percent: int, *, min_age: float = DEFAULT_MIN_AGE,
              period: float = IMAGE_GC_PERIOD) -> None:
    """The kubelet's image GC loop: `collect` now and every `period` seconds, off the event
    loop's thread; a failed pass is logged and the loop goes on. Runs until cancelled."""
    check_thresholds(high_percent, low_percent)
    if high_percent >= 100:
        log.info("image GC is off (--image-gc-high-threshold=100)")
        return
    while True:
        try:
            removed = await asyncio.to_thread(collect, store, high_percent, low_percent, min_age=min_age)
            if removed:
                log.info("image GC: removed %d image(s): %s", len(removed), ", ".join(removed))
        except Exception as e:  # noqa: BLE001 - the next pass may succeed; the kubelet goes on
            log.error("image GC failed: %s", e)
        await asyncio.sleep(period)


__all__ = ["DEFAULT_HIGH_THRESHOLD", "DEFAULT_LOW_THRESHOLD", "DEFAULT_MIN_AGE", "FsUsage",
           "IMAGE_GC_PERIOD", "ImageInUse", "ImageNotFound", "check_thresholds", "collect",
           "eviction_order", "fs_usage", "prune", "remove", "run", "sweep"]
