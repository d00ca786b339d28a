"""Importing images from archives into the node's content store, with no registry at all
(`minik8s image import`, as `ctr images import` and `kind load image-archive` do).

`import_archive(store, path)` reads a tar archive (plain, or gzip-compressed) of one of:
- an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`), as `skopeo copy
  ... oci-archive:` and `umoci` write it, and as Docker 25+ writes `docker save` (which adds
  a `manifest.json` beside the layout). The layout is preferred when both are there, as
  containerd's importer does, so an image keeps the manifest digest its registry gives it.
  An entry of `index.json` that is an index (multi-platform) is resolved to the manifest
  for the node's platform (PlatformNotFound names the platforms it has).
- a `docker save` archive of the legacy layout: `manifest.json` (Config, RepoTags,
  Layers), a config file and one uncompressed tar per layer. Its layers' blob digests are
  their diff IDs (from the config); the importer writes a Docker schema 2 manifest for
  each image, as containerd does, whose digest is then the image's.

Names: an OCI entry is named by its `io.containerd.image.name` annotation, else by its
`org.opencontainers.image.ref.name` when that is a whole reference (it has `/`, `:` or
`@`); a ref name that is only a tag is `<base_name>:<tag>`. A docker-save image is named by
its RepoTags (and, in Docker 25's layout, an unnamed OCI entry by the RepoTags of the
manifest.json entry with its config). An image with no name is `base_name` if one is
given. Names are normalized as the pull path normalizes them (`busybox` is
`docker.io/library/busybox:latest`).

Guarantees:
- Every blob is verified on the way in: JSON documents (index, manifests, configs) against
  the digest and size their descriptor gives, layer blobs by `ContentStore.ingest`, and each
  layer's uncompressed content against its diff ID by `ContentStore.unpack`.
- Everything is checked and unpacked before any image record is written, and the records
  are written last: an archive that is malformed, lies about a digest, holds a layer that
  cannot be applied, or leaves an image unnamed raises ArchiveError (one line, naming the
  archive and the cause) and leaves no record. Verified blobs and finished snapshots it
  made stay (content-addressed: a later import or pull reuses them; GC sweeps them).
- An import holds the store's `writing()` lock from its first blob to its last record, as
  a pull does, so a concurrent GC sweep never takes content the import is about to name.
- Nothing of the archive is extracted to a path: members are read by name, symlinks and
  hard links between members are followed only inside the archive.
- Blocking file I/O; callers on an event loop run it in a thread.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
import re
import shutil
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from kubelet.images import ImageError, reference
from kubelet.images.layers import LayerError
from kubelet.images.registry import (DOCKER_MANIFEST, IMAGE_MANIFESTS, INDEXES, OCI_MANIFEST, Platform,
                                     PlatformNotFound, node_platform, select_platform)
from kubelet.images.store import ContentStore, DigestMismatch

OCI_LAYOUT_VERSION = "1.0.0"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MAX_JSON_BYTES = 20 * 1024 * 1024  # containerd's limit for a document read from an archive
_SHA256_HEX = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_NAMED = re.compile(r"^(?:blobs/sha256/)?([a-f0-9]{64})(?:\.json)?$")
_MAX_LINK_HOPS = 16


class ArchiveError(ImageError):
    """The archive cannot be imported; the message names it and the cause. No record was written."""


@dataclass(frozen=True)
class ImportedImage:
    name: str
    manifest_digest: str
    config_digest: str
    layer_digests: list[str]
    size: int  # bytes of the config and the layer blobs


@dataclass
class _Blob:
    digest: str
    size: int
    member: str                # the archive member holding it
    data: bytes | None = None  # JSON documents are read (and verified) up front


@dataclass
class _Plan:
    """One image of the archive, checked, before anything is written."""
    manifest: _Blob
    config: _Blob
    layers: list[_Blob]
    diff_ids: list[str]
    names: list[str] = field(default_factory=list)
    extra: list[_Blob] = field(default_factory=list)  # an index it was resolved through


class _Archive:
    """The members of a tar archive by clean name; reads follow links inside it only."""

    def __init__(self, tf: tarfile.TarFile, label: str) -> None:
        self.tf = tf
        self.label = label
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in tf.getmembers():
            name = posixpath.normpath(m.name.lstrip("/"))
            if name in (".", "") or name.startswith("../"):
                continue
            self.members[name] = m  # a later entry replaces an earlier one, as extraction would

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        m = self.members.get(name)
        for _ in range(_MAX_LINK_HOPS):
            if m is None or m.isreg():
                return m
            if m.issym():
                name = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            elif m.islnk():
                name = posixpath.normpath(m.linkname.lstrip("/"))
            else:
                return None
            if name.startswith("../") or name == "..":
                return None
            m = self.members.get(name)
        return None

    def has(self, name: str) -> bool:
        return self._resolve(posixpath.normpath(name)) is not None

    def size(self, name: str) -> int:
        m = self._resolve(posixpath.normpath(name))
        if m is None:
            raise ArchiveError(f"{self.label}: {name} is missing")
        return m.size

    def open(self, name: str) -> IO[bytes]:
        m = self._resolve(posixpath.normpath(name))
        if m is None:
            raise ArchiveError(f"{self.label}: {name} is missing")
        f = self.tf.extractfile(m)
        assert f is not None  # a regular file
        return f

    def read(self, name: str, limit: int = MAX_JSON_BYTES) -> bytes:
        if self.size(name) > limit:
            raise ArchiveError(f"{self.label}: {name} is over {limit} bytes")
        with self.open(name) as f:
            return f.read()

    def json(self, name: str, data: bytes | None = None) -> Any:
        try:
            return json.loads(self.read(name) if data is None else data)
        except ValueError as e:
            raise ArchiveError(f"{self.label}: {name} is not valid JSON: {e}") from None

    def blob(self, digest: str, size: int | None, what: str) -> _Blob:
        """A JSON document by digest, read and verified (digest and size)."""
        member = "blobs/sha256/" + digest[len("sha256:"):]
        if not self.has(member):
            raise ArchiveError(f"{self.label}: {what} {digest} is missing ({member})")
        data = self.read(member)
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise ArchiveError(f"{self.label}: {what} {member} does not match its digest {digest} (got {got})")
        if size is not None and len(data) != size:
            raise ArchiveError(f"{self.label}: {what} {digest} is {len(data)} bytes, its descriptor says {size}")
        return _Blob(digest, len(data), member, data)


def _descriptor(d: Any, label: str, what: str) -> tuple[str, int, str]:
    """(digest, size, media type) of an OCI descriptor, checked."""
    if not isinstance(d, dict):
        raise ArchiveError(f"{label}: {what} is not a descriptor object")
    digest, size = d.get("digest"), d.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or not _SHA256_HEX.match(digest[7:]):
        raise ArchiveError(f"{label}: {what} has an unsupported digest {digest!r} (want sha256:<64 hex>)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ArchiveError(f"{label}: {what} {digest} has an invalid size {size!r}")
    return digest, size, str(d.get("mediaType") or "")


def _normalize(name: str, label: str, where: str) -> str:
    try:
        return reference.normalize(name)
    except ValueError as e:
        raise ArchiveError(f"{label}: {where}: {e}") from None


def _config_diff_ids(archive: _Archive, config: _Blob, nlayers: int, what: str) -> list[str]:
    doc = archive.json(config.member, config.data)
    try:
        diff_ids = [str(d) for d in doc["rootfs"]["diff_ids"]]
    except (KeyError, TypeError) as e:
        raise ArchiveError(f"{archive.label}: the config {config.digest} of {what} has no rootfs.diff_ids "
                           f"({e!r})") from None
    for d in diff_ids:
        if not d.startswith("sha256:") or not _SHA256_HEX.match(d[7:]):
            raise ArchiveError(f"{archive.label}: the config of {what} has an unsupported diff ID {d!r}")
    if len(diff_ids) != nlayers:
        raise ArchiveError(f"{archive.label}: {what} has {nlayers} layers but {len(diff_ids)} diff IDs in its config")
    return diff_ids


def _manifest_plan(archive: _Archive, desc: tuple[str, int, str], what: str) -> _Plan:
    manifest = archive.blob(desc[0], desc[1], "manifest")
    doc = archive.json(manifest.member, manifest.data)
    if not isinstance(doc, dict):
        raise ArchiveError(f"{archive.label}: manifest {desc[0]} is not a JSON object")
    media_type = str(doc.get("mediaType") or desc[2] or OCI_MANIFEST)
    if media_type not in IMAGE_MANIFESTS:
        raise ArchiveError(f"{archive.label}: {what}: unsupported manifest type {media_type!r}")
    cfg = _descriptor(doc.get("config"), archive.label, f"the config of manifest {desc[0]}")
    config = archive.blob(cfg[0], cfg[1], "config")
    layer_docs = doc.get("layers")
    if not isinstance(layer_docs, list):
        raise ArchiveError(f"{archive.label}: manifest {desc[0]} has no layers list")
    layers = []
    for i, la in enumerate(layer_docs):
        digest, size, _ = _descriptor(la, archive.label, f"layer {i} of manifest {desc[0]}")
        member = "blobs/sha256/" + digest[7:]
        if not archive.has(member):
            raise ArchiveError(f"{archive.label}: layer {digest} of {what} is missing ({member})")
        if archive.size(member) != size:
            raise ArchiveError(f"{archive.label}: layer {member} is {archive.size(member)} bytes, "
                               f"its manifest says {size}")
        layers.append(_Blob(digest, size, member))
    return _Plan(manifest, config, layers, _config_diff_ids(archive, config, len(layers), what))


def _docker_tags(archive: _Archive) -> dict[str, list[str]]:
    """Config digest -> RepoTags, from a docker-save manifest.json (when there is one)."""
    if not archive.has("manifest.json"):
        return {}
    out: dict[str, list[str]] = {}
    for entry in _docker_entries(archive):
        m = _DIGEST_NAMED.match(posixpath.normpath(entry["Config"]))
        if m:
            out.setdefault("sha256:" + m.group(1), []).extend(entry["RepoTags"])
    return out


def _oci_plans(archive: _Archive, base_name: str | None, platform: Platform) -> list[_Plan]:
    label = archive.label
    layout = archive.json("oci-layout")
    version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    if version != OCI_LAYOUT_VERSION:
        raise ArchiveError(f"{label}: unsupported OCI layout version {version!r} (want {OCI_LAYOUT_VERSION})")
    if not archive.has("index.json"):
        raise ArchiveError(f"{label}: the OCI layout has no index.json")
    index = archive.json("index.json")
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise ArchiveError(f"{label}: index.json has no manifests list")
    docker_tags = _docker_tags(archive)
    plans = []
    for i, entry in enumerate(entries):
        desc = _descriptor(entry, label, f"index.json entry {i}")
        annotations = entry.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ArchiveError(f"{label}: index.json entry {i} has annotations that are not an object")
        what = f"index.json entry {i} ({desc[0]})"
        extra: list[_Blob] = []
        if desc[2] in INDEXES:
            nested = archive.blob(desc[0], desc[1], "index")
            doc = archive.json(nested.member, nested.data)
            if not isinstance(doc, dict):
                raise ArchiveError(f"{label}: index {desc[0]} is not a JSON object")
            try:
                chosen = select_platform(doc, platform, label, f"index {desc[0]}")
            except PlatformNotFound as e:
                raise ArchiveError(str(e)) from None
            extra.append(nested)
            desc = _descriptor(chosen, label, f"the {'/'.join(platform)} entry of index {desc[0]}")
        elif desc[2] and desc[2] not in IMAGE_MANIFESTS:
            raise ArchiveError(f"{label}: {what} has an unsupported media type {desc[2]!r}")
        plan = _manifest_plan(archive, desc, what)
        plan.extra = extra
        names = []
        image_name = annotations.get(ANNOTATION_IMAGE_NAME)
        ref_name = annotations.get(ANNOTATION_REF_NAME)
        if image_name:
            names.append(_normalize(str(image_name), label, f"{what}: {ANNOTATION_IMAGE_NAME}"))
        elif ref_name and any(c in str(ref_name) for c in "/:@"):
            names.append(_normalize(str(ref_name), label, f"{what}: {ANNOTATION_REF_NAME}"))
        elif ref_name and base_name:
            names.append(_normalize(f"{base_name}:{ref_name}", label, f"{what}: {ANNOTATION_REF_NAME}"))
        for tag in docker_tags.get(plan.config.digest, []):
            names.append(_normalize(tag, label, "manifest.json RepoTags"))
        if not names and base_name:
            names.append(_normalize(base_name, label, "the base name"))
        if not names:
            hint = (f"its ref name {ref_name!r} is only a tag" if ref_name
                    else f"no {ANNOTATION_IMAGE_NAME} or {ANNOTATION_REF_NAME} annotation")
            raise ArchiveError(f"{label}: {what} has no image name ({hint}); give a base name "
                               "(--base-name REPO) to name it")
        plan.names = names
        plans.append(plan)
    return plans


def _docker_entries(archive: _Archive) -> list[dict[str, Any]]:
    doc = archive.json("manifest.json")
    if not isinstance(doc, list):
        raise ArchiveError(f"{archive.label}: manifest.json is not a list of images")
    out = []
    for i, e in enumerate(doc):
        if not isinstance(e, dict) or not isinstance(e.get("Config"), str) or not isinstance(e.get("Layers"), list) \
                or not all(isinstance(la, str) for la in e["Layers"]):
            raise ArchiveError(f"{archive.label}: manifest.json entry {i} needs Config (a path) and Layers (paths)")
        tags = e.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ArchiveError(f"{archive.label}: manifest.json entry {i} has RepoTags that are not a list of names")
        out.append({"Config": e["Config"], "Layers": list(e["Layers"]), "RepoTags": list(tags)})
    return out


def _docker_plans(archive: _Archive, base_name: str | None) -> list[_Plan]:
    label = archive.label
    plans = []
    for i, entry in enumerate(_docker_entries(archive)):
        what = f"manifest.json entry {i}"
        config_name = posixpath.normpath(entry["Config"])
        data = archive.read(config_name)
        config_digest = "sha256:" + hashlib.sha256(data).hexdigest()
        named = _DIGEST_NAMED.match(config_name)
        # A config file named by a digest (<hex>.json, blobs/sha256/<hex>) must have it.
        if named and "sha256:" + named.group(1) != config_digest:
            raise ArchiveError(f"{label}: config {config_name} does not match its digest "
                               f"sha256:{named.group(1)} (got {config_digest})")
        config = _Blob(config_digest, len(data), config_name, data)
        diff_ids = _config_diff_ids(archive, config, len(entry["Layers"]), what)
        layers = []
        for path, diff_id in zip(entry["Layers"], diff_ids):
            member = posixpath.normpath(path)
            if not archive.has(member):
                raise ArchiveError(f"{label}: layer {member} of {what} is missing")
            m = _DIGEST_NAMED.match(member)
            if m and "sha256:" + m.group(1) != diff_id:
                raise ArchiveError(f"{label}: layer {member} of {what} is named by a digest that is not its "
                                   f"diff ID {diff_id}: a docker save layer is an uncompressed tar")
            layers.append(_Blob(diff_id, archive.size(member), member))
        # The manifest containerd's importer writes for a docker-save image.
        manifest_doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                        "config": {"mediaType": DOCKER_CONFIG, "digest": config.digest, "size": config.size},
                        "layers": [{"mediaType": DOCKER_LAYER, "digest": la.digest, "size": la.size}
                                   for la in layers]}
        mbytes = json.dumps(manifest_doc, separators=(",", ":")).encode()
        manifest = _Blob("sha256:" + hashlib.sha256(mbytes).hexdigest(), len(mbytes), "", mbytes)
        names = [_normalize(t, label, f"{what}: RepoTags") for t in entry["RepoTags"]]
        if not names and base_name:
            names.append(_normalize(base_name, label, "the base name"))
        if not names:
            raise ArchiveError(f"{label}: {what} has no RepoTags (an image saved by ID); give a base name "
                               "(--base-name REPO) to name it")
        plans.append(_Plan(manifest, config, layers, diff_ids, names))
    return plans


def _ingest_bytes(store: ContentStore, blob: _Blob) -> None:
    assert blob.data is not None
    if not store.has_blob(blob.digest):
        with store.ingest(blob.digest, blob.size) as f:
            f.write(blob.data)


def _ingest_layer(store: ContentStore, archive: _Archive, blob: _Blob) -> None:
    if store.has_blob(blob.digest):
        return  # verified when it was committed; the archive's copy is not needed
    with archive.open(blob.member) as src, store.ingest(blob.digest, blob.size) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _unique_names(plans: Sequence[_Plan], label: str) -> None:
    owner: dict[str, str] = {}
    for p in plans:
        for n in dict.fromkeys(p.names):
            if owner.get(n, p.manifest.digest) != p.manifest.digest:
                raise ArchiveError(f"{label}: two images in the archive are named {n} "
                                   f"({owner[n]} and {p.manifest.digest})")
            owner[n] = p.manifest.digest


def import_archive(store: ContentStore, source: str | BinaryIO, *, label: str | None = None,
                   base_name: str | None = None, platform: Platform | None = None) -> list[ImportedImage]:
    """Imports every image of the archive at `source` (a path, or a seekable binary file)
    into `store`; returns them, one per name. Raises ArchiveError (nothing recorded)."""
    label = label or (source if isinstance(source, str) else "the archive")
    want = platform or node_platform()
    try:
        tf = (tarfile.open(source, "r:*") if isinstance(source, str)
              else tarfile.open(fileobj=source, mode="r:*"))
    except FileNotFoundError:
        raise ArchiveError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ArchiveError(f"{label}: is a directory, not an archive (tar it, or use skopeo's oci-archive:)") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile):
        raise ArchiveError(f"{label}: not a tar archive (plain or gzip-compressed)") from None
    except OSError as e:
        raise ArchiveError(f"{label}: cannot read it: {e.strerror or e}") from None
    try:
        with tf:
            return _import(store, _Archive(tf, label), base_name, want)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ArchiveError(f"{label}: the archive is corrupt or truncated ({' '.join(str(e).split())})") from None
    except OSError as e:  # the store's disk: full, or not writable
        raise ArchiveError(f"{label}: storing the image failed: {e}") from None


def _import(store: ContentStore, archive: _Archive, base_name: str | None,
            platform: Platform) -> list[ImportedImage]:
    label = archive.label
    if base_name is not None:
        try:
            ref = reference.parse(base_name)
        except ValueError as e:
            raise ArchiveError(f"base name {base_name!r}: {e}") from None
        if base_name.rsplit("/", 1)[-1].count(":") or ref.digest:
            raise ArchiveError(f"base name {base_name!r} must be a repository, without a tag or digest")
    if archive.has("oci-layout"):
        plans = _oci_plans(archive, base_name, platform)
    elif archive.has("manifest.json"):
        plans = _docker_plans(archive, base_name)
    else:
        raise ArchiveError(f"{label}: neither an OCI image layout (no oci-layout) nor a docker save "
                           "archive (no manifest.json)")
    if not plans:
        raise ArchiveError(f"{label}: the archive holds no images")
    _unique_names(plans, label)

    # From the first blob to the last record, so an image GC sweep (gc.sweep) never takes
    # content a record is about to name.
    with store.writing():
        for p in plans:
            for blob in (*p.extra, p.manifest, p.config):
                _ingest_bytes(store, blob)
            for la in p.layers:
                try:
                    _ingest_layer(store, archive, la)
                except DigestMismatch as e:
                    raise ArchiveError(f"{label}: layer {la.member} does not match its digest: {e}") from None
        for p in plans:
            parents: list[str] = []
            for la, diff_id in zip(p.layers, p.diff_ids):
                try:
                    parents.append(store.unpack(la.digest, diff_id, parents))
                except LayerError as e:
                    raise ArchiveError(f"{label}: image {p.names[0]}: layer {la.digest} cannot be applied: "
                                       f"{e}") from None

        out = []
        for p in plans:
            layer_digests = [la.digest for la in p.layers]
            size = p.config.size + sum(la.size for la in {la.digest: la for la in p.layers}.values())
            for name in dict.fromkeys(p.names):
                store.put_image(name, p.manifest.digest, p.config.digest, layer_digests)
                out.append(ImportedImage(name, p.manifest.digest, p.config.digest, layer_digests, size))
    return out


__all__ = ["ArchiveError", "ImportedImage", "import_archive"]
