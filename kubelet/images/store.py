"""The node's content store: blobs by digest, unpacked layers (snapshots) by chain ID, and
image records, in one directory shared by every kubelet on the host (containerd's
`content/local` store and overlay snapshotter, in shape).

Layout under `root`:
    blobs/sha256/<hex>        committed blobs (manifests, configs, compressed layers)
    ingest/<hex>              the blob being written; never read as a blob
    locks/<hex>.lock          per-digest (and per-chain-ID) fcntl locks; kept, never removed
    snapshots/sha256/<hex>/   a layer applied as an overlay lower dir, keyed by chain ID
    images/<quoted name>.json one record per image name
    leases/<hex>.json         an image in use by a holder (a container's directory), with the
                              content its record named when the lease was taken
    used/<quoted name>        its mtime: when a container last used the image (image GC)
    trash/                    content a sweep took out, being deleted (see gc.py)

Guarantees:
- Nothing half-written is visible under a digest: a blob is written to an ingest file,
  checked for size and sha256, fsynced and renamed into place; a snapshot is applied into a
  staging directory and renamed into place only once complete (see layers.apply_layer).
- Concurrent ingests of one digest, by threads or by processes, write it once: `ingest`
  holds an exclusive flock on the digest's lock file for the whole block. A caller that gets
  the lock after the blob was committed is given a sink that discards what it writes, so
  callers that want to skip the download check `has_blob` inside the block, or before it.
- `unpack` applies a layer blob into the snapshot for its chain ID once, under a lock per
  chain ID, on top of its parents' snapshots; a snapshot is immutable once committed.
- Every change is a rename, so the store survives a restart (or a killed writer) as it was
  after its last completed change. An ingest file left by a killed writer is truncated by
  the next ingest of that digest; a staging directory left by a killed unpack is removed
  when a store is next opened.
- An image is in use while a lease names it and the lease's holder (a path: a container's
  directory) exists, so the kubelets sharing a store see each other's containers, and a
  lease whose holder a crash removed without releasing it does not keep the image forever.
- Image records are replaced atomically; the last `put_image` for a name wins, as
  containerd's image Update. A record does not require its blobs to be present (content
  is fetched before the record is written by the puller).
- A writer that makes content before the record that names it (a pull, an import) holds
  `writing()` (a shared lock) from its first blob to its record; a content sweep
  (gc.sweep) holds `sweeping()` (the same lock, exclusive), so it never takes content a
  record is about to name. A lease also keeps the content its image's record named when
  it was taken, so a re-pull that moves a tag never frees the layers a container runs on.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, cast

from kubelet.images.layers import apply_layer
from kubelet.images.reference import check_digest


class DigestMismatch(Exception):
    """The bytes written do not have the digest (or size) they were ingested under."""


@dataclass(frozen=True)
class ImageRecord:
    name: str                  # a normalized reference: docker.io/library/nginx:latest
    manifest_digest: str       # the manifest this name resolved to (not the index)
    config_digest: str
    layer_digests: list[str]   # compressed layer blobs, base first
    created: float             # unix time the record was written


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain IDs of a layer stack: chainID(L0) = diffID(L0),
    chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        check_digest(diff_id)
        if not out:
            out.append(diff_id)
        else:
            h = hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()
            out.append("sha256:" + h)
    return out


class _Discard(io.RawIOBase):
    """The sink given when the blob is already committed: writes are accepted and dropped."""

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        return len(memoryview(cast(bytes, b)))


class _HashingWriter(io.RawIOBase):
    """Writes through to the ingest file, hashing and counting as it goes (not seekable, so
    the hash is of exactly the bytes in the file)."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self._f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        view = memoryview(cast(bytes, b))
        self._f.write(view)
        self.hash.update(view)
        self.size += len(view)
        return len(view)

    def fileno(self) -> int:
        return self._f.fileno()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContentStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        for sub in ("blobs/sha256", "ingest", "locks", "snapshots/sha256", "images", "leases", "used",
                    "trash"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self.remove_stale_staging()

    def remove_stale_staging(self) -> list[str]:
        """Removes the staging directories (`.apply-<pid>-*`, see layers.apply_layer) of
        processes that are gone, as a killed unpack leaves them; returns their names. The
        kubelets sharing a store are host processes in one PID namespace, so a live pid
        means a live (or reused, then kept: the safe side) writer."""
        removed = []
        snaps = os.path.join(self.root, "snapshots", "sha256")
        for name in os.listdir(snaps):
            parts = name.split("-", 2)
            if not name.startswith(".apply-") or len(parts) < 3 or not parts[1].isdigit():
                continue
            try:
                os.kill(int(parts[1]), 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            shutil.rmtree(os.path.join(snaps, name), ignore_errors=True)
            removed.append(name)
        return removed

    # --- blobs ---

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.root, "blobs", "sha256", check_digest(digest)[len("sha256:"):])

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    @contextlib.contextmanager
    def _lock(self, digest: str) -> Iterator[None]:
        hexd = check_digest(digest)[len("sha256:"):]
        fd = os.open(os.path.join(self.root, "locks", hexd + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # flock locks belong to the open file description, so two threads of one
            # process exclude each other as two processes do.
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def try_lock(self, digest: str) -> int | None:
        """The digest's lock if no one holds it (an fd: close it to release), else None;
        for a sweep, which skips what is being written rather than waiting for it."""
        hexd = check_digest(digest)[len("sha256:"):]
        fd = os.open(os.path.join(self.root, "locks", hexd + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextlib.contextmanager
    def _content_lock(self, mode: int) -> Iterator[None]:
        fd = os.open(os.path.join(self.root, "locks", "content.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """Held by a writer (a pull, an import) from its first blob to its image record:
        shared among writers, excluded by a sweep (which holds it only while it moves
        content aside, so a writer waits milliseconds at most)."""
        return self._content_lock(fcntl.LOCK_SH)

    def sweeping(self) -> contextlib.AbstractContextManager[None]:
        """Held by a content sweep: no writer is between its first blob and its record."""
        return self._content_lock(fcntl.LOCK_EX)

    @contextlib.contextmanager
    def ingest(self, digest: str, size: int | None = None) -> Iterator[BinaryIO]:
        """A file to write the blob's bytes to; committed on normal exit if its size (when
        given) and sha256 match, else DigestMismatch and nothing is kept. An exception in the
        block removes the ingest. If the blob is already committed when the lock is had, the
        file discards writes (check `has_blob` to skip downloading)."""
        target = self.blob_path(digest)
        if size is not None and size < 0:
            raise ValueError(f"invalid size {size} for {digest}")
        with self._lock(digest):
            if os.path.isfile(target):
                yield cast(BinaryIO, _Discard())
                return
            ingest_path = os.path.join(self.root, "ingest", digest[len("sha256:"):])
            try:
                with open(ingest_path, "wb") as f:
                    w = _HashingWriter(f)
                    yield cast(BinaryIO, w)
                    f.flush()
                    if size is not None and w.size != size:
                        raise DigestMismatch(f"{digest}: wrote {w.size} bytes, want {size}")
                    got = "sha256:" + w.hash.hexdigest()
                    if got != digest:
                        raise DigestMismatch(f"content digest {got} does not match {digest}")
                    os.fsync(f.fileno())
                os.rename(ingest_path, target)
                _fsync_dir(os.path.dirname(target))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ingest_path)
                raise

    # --- snapshots (unpacked layers), keyed by chain ID ---

    def snapshot_path(self, chain_id: str) -> str:
        """Where the snapshot for `chain_id` is (or is committed to: pass this path as the
        target of layers.apply_layer, which stages beside it and renames)."""
        return os.path.join(self.root, "snapshots", "sha256", check_digest(chain_id)[len("sha256:"):])

    def has_snapshot(self, chain_id: str) -> bool:
        return os.path.isdir(self.snapshot_path(chain_id))

    @contextlib.contextmanager
    def snapshot_lock(self, chain_id: str) -> Iterator[None]:
        """Held while a snapshot is made, so concurrent unpacks of one layer apply it once:
        `with store.snapshot_lock(c): if not store.has_snapshot(c): apply_layer(...)`."""
        with self._lock(self._snapshot_lock_key(chain_id)):
            yield

    @staticmethod
    def _snapshot_lock_key(chain_id: str) -> str:
        return "sha256:" + hashlib.sha256(("snapshot " + chain_id).encode()).hexdigest()

    def try_snapshot_lock(self, chain_id: str) -> int | None:
        """As try_lock, for the snapshot of `chain_id`."""
        return self.try_lock(self._snapshot_lock_key(chain_id))

    def unpack(self, blob_digest: str, diff_id: str, parent_chain_ids: Sequence[str] = ()) -> str:
        """Makes the snapshot of the layer in blob `blob_digest` (whose uncompressed digest
        must be `diff_id`) on top of `parent_chain_ids` (the chain IDs of the layers below,
        base first, all unpacked), once however many callers ask at a time; returns its chain
        ID. Raises layers.LayerError (nothing kept) for a layer that cannot be applied."""
        check_digest(diff_id)
        for parent in parent_chain_ids:
            if not self.has_snapshot(parent):
                raise ValueError(f"parent snapshot {parent} is not unpacked")
        if parent_chain_ids:
            chain_id = "sha256:" + hashlib.sha256(f"{parent_chain_ids[-1]} {diff_id}".encode()).hexdigest()
        else:
            chain_id = diff_id
        with self.snapshot_lock(chain_id):
            if not self.has_snapshot(chain_id):
                apply_layer(self.blob_path(blob_digest), self.snapshot_path(chain_id), expected_diff_id=diff_id,
                            parents=[self.snapshot_path(c) for c in reversed(parent_chain_ids)])
        return chain_id

    # --- image records ---

    def _image_file(self, name: str) -> str:
        if not name:
            raise ValueError("image name is empty")
        return os.path.join(self.root, "images", urllib.parse.quote(name, safe="") + ".json")

    def put_image(self, name: str, manifest_digest: str, config_digest: str,
                  layer_digests: list[str]) -> None:
        for d in (manifest_digest, config_digest, *layer_digests):
            check_digest(d)
        record = {"name": name, "manifest_digest": manifest_digest, "config_digest": config_digest,
                  "layer_digests": list(layer_digests), "created": time.time()}
        path = self._image_file(name)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(os.path.dirname(path))

    @staticmethod
    def _read_record(path: str) -> ImageRecord | None:
        try:
            with open(path) as f:
                d = json.load(f)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return ImageRecord(name=d["name"], manifest_digest=d["manifest_digest"],
                           config_digest=d["config_digest"], layer_digests=list(d["layer_digests"]),
                           created=float(d["created"]))

    def get_image(self, name: str) -> ImageRecord | None:
        return self._read_record(self._image_file(name))

    def list_images(self) -> list[ImageRecord]:
        out = []
        images = os.path.join(self.root, "images")
        for entry in sorted(os.listdir(images)):
            if entry.startswith(".") or not entry.endswith(".json"):
                continue  # a record being written
            rec = self._read_record(os.path.join(images, entry))
            if rec is not None:
                out.append(rec)
        return sorted(out, key=lambda r: r.name)

    def remove_image(self, name: str) -> bool:
        """Removes the record (its content stays until a sweep: see gc.py)."""
        try:
            os.unlink(self._image_file(name))
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._used_file(name))
        return True

    # --- when images were last used (image GC's order) ---

    def _used_file(self, name: str) -> str:
        return os.path.join(self.root, "used", urllib.parse.quote(name, safe=""))

    def touch_used(self, name: str, when: float | None = None) -> None:
        """Records that a container uses (or just stopped using) `name` now (or at `when`)."""
        path = self._used_file(name)
        times = None if when is None else (when, when)
        try:
            os.utime(path, times)
        except FileNotFoundError:
            with open(path, "a"):
                pass
            os.utime(path, times)

    def last_used(self, name: str) -> float | None:
        """When a container last used `name` (unix time), None if never."""
        try:
            return os.stat(self._used_file(name)).st_mtime
        except FileNotFoundError:
            return None

    # --- leases: which images containers use ---

    def _lease_file(self, holder: str) -> str:
        return os.path.join(self.root, "leases", hashlib.sha256(os.path.abspath(holder).encode()).hexdigest() + ".json")

    def lease(self, holder: str, image_name: str) -> None:
        """Marks `image_name` (as recorded) in use while the path `holder` exists. The lease
        keeps the content the record names now, whatever later happens to the name."""
        path = self._lease_file(holder)
        lease: dict[str, object] = {"holder": os.path.abspath(holder), "image": image_name}
        record = self.get_image(image_name)
        if record is not None:
            lease["content"] = [record.manifest_digest, record.config_digest, *record.layer_digests]
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(lease, f)
        os.rename(tmp, path)
        self.touch_used(image_name)

    def release(self, holder: str) -> None:
        path = self._lease_file(holder)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            with open(path) as f:
                self.touch_used(str(json.load(f)["image"]))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def leases(self) -> list[tuple[str, list[str]]]:
        """(image name, content digests it keeps) of each live lease; leases of vanished
        holders are removed (their image counted as used until then)."""
        out = []
        leases = os.path.join(self.root, "leases")
        for entry in os.listdir(leases):
            if entry.startswith("."):
                continue
            path = os.path.join(leases, entry)
            try:
                with open(path) as f:
                    d = json.load(f)
                holder, image = str(d["holder"]), str(d["image"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if os.path.exists(holder):
                out.append((image, [str(c) for c in d.get("content") or []]))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    self.touch_used(image)
        return out

    def leased(self) -> set[str]:
        """The image names some live holder uses; leases of vanished holders are removed."""
        return {image for image, _ in self.leases()}
