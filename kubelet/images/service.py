"""The image service: gets images onto the node and hands the runtime their roots (the
part of containerd's CRI image service a kubelet talks to).

- `pull(image, credentials)` fetches the manifest, config and missing layer blobs from the
  registry (registry.py) into the node's content store (store.py), applies each layer into
  its snapshot (layers.py), and then records the image under its normalized name. The
  record is written last, so an image the store names is complete: a pull that fails
  leaves verified blobs and finished snapshots (reused by the next try) and no record.
- Pulls of one image at a time share one pull (and its outcome); pulls of different
  images run in parallel, at most `max_parallel` at once.
- `resolve(image)` (the runtime's `ImageStore` seam) reads only the store: it never pulls.
  `HOST_ROOT_IMAGE` resolves to the host's root whatever the store holds.
- `PullError` carries the cause as one line that names the image and the registry
  (`401 Unauthorized from registry.lab:5000`), for the container's waiting message and
  the kubelet's `Failed` event.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Mapping

from kubelet.images import HOST_ROOT, HOST_ROOT_IMAGE, DEFAULT_PATH, Image, ImageError, ImageStore
from kubelet.images import reference
from kubelet.images.layers import LayerError
from kubelet.images.registry import Credentials, RegistryClient, RegistryError, RegistryHostConfig
from kubelet.images.store import ContentStore, ImageRecord, chain_ids


class PullError(ImageError):
    """The image could not be pulled; the message names the image and the cause."""


@dataclass(frozen=True)
class PullResult:
    record: ImageRecord
    image_id: str       # repo@sha256:<manifest digest>
    size: int           # bytes of the image (config and compressed layers)
    fetched: int        # bytes this pull downloaded (0: everything was in the store)
    seconds: float      # wall time the pull took


def _parse(image: str) -> reference.Reference:
    try:
        return reference.parse(image)
    except ValueError as e:
        raise ImageError(f'Failed to apply default image tag "{image}": {e}') from None


class ImageService(ImageStore):
    def __init__(self, store: ContentStore, *, registries: Mapping[str, RegistryHostConfig] | None = None,
                 client: RegistryClient | None = None, max_parallel: int = 5) -> None:
        self.store = store
        self.client = client or RegistryClient(registries)
        self._sem = asyncio.Semaphore(max_parallel)
        self._inflight: dict[str, asyncio.Future[PullResult]] = {}

    # -- what the node has ------------------------------------------------------------

    def get(self, image: str) -> ImageRecord | None:
        """The record of `image` if the node has it (`nginx` finds docker.io/library/nginx:latest)."""
        return self.store.get_image(str(_parse(image)))

    def config(self, record: ImageRecord) -> dict[str, Any]:
        with open(self.store.blob_path(record.config_digest), "rb") as f:
            cfg: dict[str, Any] = json.load(f)
        return cfg

    def image_id(self, record: ImageRecord) -> str:
        return reference.image_id(record.name, record.manifest_digest)

    def size(self, record: ImageRecord) -> int:
        """Bytes of the image's blobs on the node (config and compressed layers)."""
        total = 0
        for d in (record.config_digest, *record.layer_digests):
            try:
                total += os.stat(self.store.blob_path(d)).st_size
            except FileNotFoundError:
                pass
        return total

    def resolve(self, image: str) -> Image:
        if image == HOST_ROOT_IMAGE:
            return HOST_ROOT
        record = self.get(image)
        if record is None:
            raise ImageError(f'image "{image}" is not present on the node')
        try:
            cfg = self.config(record)
            diff_ids = [str(d) for d in cfg["rootfs"]["diff_ids"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ImageError(f'image "{image}": its config {record.config_digest} cannot be read: {e}') from e
        layers = [self.store.snapshot_path(c) for c in chain_ids(diff_ids)]
        missing = [p for p in layers if not os.path.isdir(p)]
        if missing:
            raise ImageError(f'image "{image}": layer {os.path.basename(missing[0])} is not unpacked')
        c = cfg.get("config") or {}
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in c.get("Env") or [])
        env.setdefault("PATH", DEFAULT_PATH)
        return Image(layers=list(reversed(layers)) or [self._empty_dir()],
                     entrypoint=list(c.get("Entrypoint") or []), cmd=list(c.get("Cmd") or []),
                     env=env, working_dir=c.get("WorkingDir") or "/", user=c.get("User") or "",
                     image_id=self.image_id(record))

    def _empty_dir(self) -> str:
        """The lower dir of an image with no layers (overlayfs needs one)."""
        path = os.path.join(self.store.root, "empty")
        os.makedirs(path, exist_ok=True)
        return path

    # -- pulling -----------------------------------------------------------------------

    async def pull(self, image: str, credentials: Sequence[Credentials] = ()) -> PullResult:
        """Pulls `image` (with `credentials` tried first, then the node's, then none);
        raises PullError. Concurrent pulls of one image share one."""
        ref = _parse(image)
        key = str(ref)
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[PullResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            async with self._sem:
                result = await self._pull(ref, credentials)
            fut.set_result(result)
            return result
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # nobody waiting is not an error
            raise
        finally:
            del self._inflight[key]

    async def _pull(self, ref: reference.Reference, credentials: Sequence[Credentials]) -> PullResult:
        started = time.monotonic()
        name = str(ref)
        try:
            # From the first blob to the record, so an image GC sweep never takes this
            # pull's content (the sweep holds the lock only for milliseconds).
            with self.store.writing():
                pulled = await self.client.pull(ref.domain, ref.path, ref.digest or ref.tag or "latest",
                                                self.store, credentials=list(credentials))
                await asyncio.to_thread(self._unpack, pulled.layers, pulled.diff_ids)
                await asyncio.to_thread(self.store.put_image, name, pulled.manifest_digest,
                                        pulled.config_digest, [la.digest for la in pulled.layers])
        except RegistryError as e:
            raise PullError(f'failed to pull and unpack image "{name}": {e}') from e
        except LayerError as e:
            raise PullError(f'failed to unpack image "{name}": {e}') from e
        except OSError as e:  # the store's disk: full, or not writable
            raise PullError(f'failed to store image "{name}": {e}') from e
        record = self.store.get_image(name)
        assert record is not None
        return PullResult(record, self.image_id(record), pulled.size, pulled.fetched_bytes,
                          time.monotonic() - started)

    def _unpack(self, layers: Sequence[Any], diff_ids: Sequence[str]) -> None:
        parents: list[str] = []
        for layer, diff_id in zip(layers, diff_ids):
            parents.append(self.store.unpack(layer.digest, diff_id, parents))

    async def aclose(self) -> None:
        await self.client.aclose()
