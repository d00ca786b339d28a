"""Applying one image layer (a tar changeset) into a fresh directory that serves as an
overlayfs lower dir: the snapshot for the layer's chain ID.

Guarantees of `apply_layer(src, target)`:
- The layer is applied into a staging directory beside `target` and renamed to `target`
  only when every entry was applied; on any error the staging directory is removed and
  nothing is left at `target`. So a snapshot is either whole or absent.
- Nothing is written outside the staging directory. The whole layer is rejected with a
  LayerError naming the entry if any entry: has an absolute path or a `..` component; has a
  parent that is a symlink (a write through a symlink, wherever it points); is a hard link
  to a path outside the layer or not yet applied in this layer, or to a directory; is a
  character or block device (the only devices made are overlay whiteouts) or of an unknown
  type; or carries a `trusted.overlay.*` xattr (that would forge overlay metadata).
- Symlinks are stored as given, absolute or climbing: they are never followed while
  applying, and inside a container they resolve against the container's root. (This is why
  tarfile's `data` filter is not used: it rejects absolute symlinks, which every distro
  image has, and strips setuid bits.)
- OCI whiteouts become overlay whiteouts: `.wh.<name>` a 0/0 character device `<name>` (not
  made when `<name>` is also in this layer: a whiteout hides only lower layers), and
  `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory. Both need root; a
  layer with whiteouts applied without root is rejected with a clear error.
- Regular files, directories, symlinks, hard links and FIFOs get their mode (setuid, setgid
  and sticky included), mtime, xattrs (PAX `SCHILY.xattr.*`) and, when root, owner.
  Directory mtimes are set last, so adding children does not change them.
- A tar that ends without the padding of its last entry or the end-of-archive blocks is
  read to its end, as Go's archive/tar (so containerd) reads it; a truncated entry is not.
- Compression is detected by magic bytes: gzip, zstd (only with the `zstandard` package
  installed) or none. The diff ID (sha256 of the uncompressed tar stream, to its end) is
  computed while applying and returned; given `expected_diff_id`, a mismatch rejects the layer.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX_PREFIX = "SCHILY.xattr."
_CHUNK = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"


class LayerError(Exception):
    """The layer cannot be applied; nothing of it was kept."""


@dataclass(frozen=True)
class AppliedLayer:
    diff_id: str   # sha256 of the uncompressed tar
    size: int      # bytes of the uncompressed tar


class _Prefixed:
    """A reader that returns `prefix`, then the rest of `f` (so magic bytes can be read
    from a stream that cannot seek back)."""

    def __init__(self, prefix: bytes, f: IO[bytes]) -> None:
        self._prefix = prefix
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n is None or n < 0:
                out, self._prefix = self._prefix + self._f.read(), b""
                return out
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            if len(out) < n:
                out += self._f.read(n - len(out))
            return out
        return self._f.read(n)


class _Hashing:
    """Hashes and counts every byte read through it: the diff ID."""

    def __init__(self, f: IO[bytes] | _Prefixed) -> None:
        self._f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self.hash.update(b)
        self.size += len(b)
        return b

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _decompressed(f: IO[bytes]) -> IO[bytes] | _Prefixed:
    magic = f.read(6)
    src = _Prefixed(magic, f)
    if magic.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[call-overload,no-any-return]
    if magic.startswith(_ZSTD_MAGIC):
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise LayerError("layer is zstd-compressed, and this node cannot decompress zstd "
                             "(the zstandard Python package is not installed)") from None
        return zstandard.ZstdDecompressor().stream_reader(src)  # type: ignore[no-any-return]
    if magic.startswith(_BZIP2_MAGIC) or magic.startswith(_XZ_MAGIC):
        raise LayerError("layer is bzip2- or xz-compressed: not an OCI layer media type")
    return src


def _clean_name(raw: str, what: str, entry: str) -> str:
    """`raw` as a path relative to the layer root ("" for the root), or LayerError."""
    if raw.startswith("/"):
        raise LayerError(f"layer entry {entry!r}: {what} is an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"layer entry {entry!r}: {what} has a '..' component (escapes the layer root)")
    if "\x00" in raw:
        raise LayerError(f"layer entry {entry!r}: {what} has a NUL byte")
    return "/".join(parts)


class _Applier:
    def __init__(self, root: str, parents: Sequence[str] = ()) -> None:
        self.root = root
        self.parents = list(parents)
        self.is_root = os.geteuid() == 0
        self.applied: set[str] = set()   # names applied from this layer (not implied parents)
        self.dir_times: dict[str, float] = {}
        self.root_given = False   # the tar has an entry for the layer root ("./")

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _parent_dirs(self, rel: str, entry: str) -> str:
        """Makes sure every parent of `rel` is a real directory of this layer, LayerError if
        one is a symlink or a file. A missing one is created as containerd's applier does:
        with the mode, owner and mtime of the same directory in the layers below (else 0755),
        so that in the merged view an implied directory does not change (/tmp stays 1777)."""
        parts = rel.split("/")[:-1]
        cur = self.root
        for i, p in enumerate(parts):
            cur = os.path.join(cur, p)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                implied = "/".join(parts[:i + 1])
                self._mkdir_implied(cur, implied)
                self.applied.add(implied)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise LayerError(f"layer entry {entry!r}: parent {'/'.join(parts[:i + 1])!r} is a symlink "
                                 "(a write through it could escape the layer root)")
            if not stat.S_ISDIR(st.st_mode):
                raise LayerError(f"layer entry {entry!r}: parent {'/'.join(parts[:i + 1])!r} is not a directory")
        return cur

    def _lower_dir(self, rel: str) -> os.stat_result | None:
        """The stat of directory `rel` in the nearest layer below that has it, looking at each
        component with lstat (no symlink in a lower layer is followed), or None."""
        for lower in self.parents:
            cur, st = lower, None
            for p in rel.split("/"):
                cur = os.path.join(cur, p)
                try:
                    st = os.lstat(cur)
                except OSError:
                    st = None
                if st is None or not stat.S_ISDIR(st.st_mode):
                    st = None
                    break
            if st is not None:
                return st
        return None

    def _mkdir_implied(self, path: str, rel: str) -> None:
        lower = self._lower_dir(rel)
        os.mkdir(path, 0o755)
        if lower is None:
            return
        if self.is_root:
            os.lchown(path, lower.st_uid, lower.st_gid)
        os.chmod(path, stat.S_IMODE(lower.st_mode))
        self.dir_times[rel] = lower.st_mtime

    def _clear(self, path: str, keep_dir: bool) -> bool:
        """Removes what is at `path` so an entry can take its place; a directory stays when
        the new entry is a directory too. Returns whether a directory was kept."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(path)  # does not follow symlinks
        else:
            os.unlink(path)
        return False

    def apply(self, tf: tarfile.TarFile, stream: "_Hashing") -> None:
        while True:
            try:
                m = tf.next()
            except tarfile.ReadError:
                # A stream that ends right after an entry's data, without its padding or
                # the end-of-archive blocks, has ended: Go's archive/tar reads it so (and
                # so containerd and Docker), and umoci writes such layers.
                if stream.read(1) == b"":
                    break
                raise
            if m is None:
                break
            self.entry(tf, m)
        # Deepest first, so setting a child's time does not disturb its parent's.
        for rel, mtime in sorted(self.dir_times.items(), key=lambda kv: -kv[0].count("/")):
            os.utime(self._abs(rel), (mtime, mtime), follow_symlinks=False)

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        name = m.name
        rel = _clean_name(name, "path", name)
        base = rel.rsplit("/", 1)[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(rel, base, name)
            return
        if not m.isdir() and rel == "":
            raise LayerError(f"layer entry {name!r}: the layer root must be a directory")
        for key in m.pax_headers:
            if key.startswith(_XATTR_PAX_PREFIX + "trusted.overlay."):
                raise LayerError(f"layer entry {name!r}: sets {key[len(_XATTR_PAX_PREFIX):]}, "
                                 "which would forge overlay metadata")
        if m.ischr() or m.isblk():
            raise LayerError(f"layer entry {name!r}: device nodes are not allowed in a layer")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            raise LayerError(f"layer entry {name!r}: unsupported tar entry type {m.type!r}")
        if rel:
            self._parent_dirs(rel, name)
        path = self._abs(rel)

        if m.isdir():
            if not self._clear(path, keep_dir=True):
                os.mkdir(path, 0o700)
        elif m.islnk():
            target_rel = _clean_name(m.linkname, "hard link target", name)
            if target_rel not in self.applied or target_rel == "":
                raise LayerError(f"layer entry {name!r}: hard link to {m.linkname!r}, "
                                 "which is not (yet) in this layer")
            self._parent_dirs(target_rel, name)
            target = self._abs(target_rel)
            tst = os.lstat(target)
            if stat.S_ISDIR(tst.st_mode) or stat.S_ISCHR(tst.st_mode):
                raise LayerError(f"layer entry {name!r}: hard link to {m.linkname!r}, which is not a file")
            if target == path:
                return
            self._clear(path, keep_dir=False)
            os.link(target, path, follow_symlinks=False)
            self.applied.add(rel)
            return  # a hard link shares its target's inode and metadata
        else:
            self._clear(path, keep_dir=False)
            if m.issym():
                os.symlink(m.linkname, path)
            elif m.isfifo():
                os.mkfifo(path, 0o600)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    src = tf.extractfile(m)
                    assert src is not None
                    shutil.copyfileobj(src, out, _CHUNK)
                    if out.tell() != m.size:
                        raise LayerError(f"layer entry {name!r} is truncated: {out.tell()} of {m.size} bytes")
        self.applied.add(rel)
        self.metadata(path, m, name)
        if m.isdir():
            self.dir_times[rel] = m.mtime
            self.root_given = self.root_given or rel == ""

    def metadata(self, path: str, m: tarfile.TarInfo, entry: str) -> None:
        link = m.issym()
        if self.is_root:
            os.lchown(path, m.uid, m.gid)
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_PAX_PREFIX):
                continue
            attr = key[len(_XATTR_PAX_PREFIX):]
            if link and attr.startswith("user."):
                continue  # Linux keeps no user.* xattrs on symlinks
            try:
                os.setxattr(path, attr, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as e:
                # Without root only user.* xattrs can be set; with root a failure is real.
                if self.is_root or e.errno not in (errno.EPERM, errno.EACCES, errno.ENOTSUP):
                    raise LayerError(f"layer entry {entry!r}: cannot set xattr {attr}: {e.strerror}") from e
        if not link:
            # After chown, which clears setuid/setgid.
            os.chmod(path, stat.S_IMODE(m.mode))
        if not m.isdir():
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def whiteout(self, rel: str, base: str, entry: str) -> None:
        parent_rel = rel.rsplit("/", 1)[0] if "/" in rel else ""
        if base == OPAQUE_WHITEOUT:
            if not self.is_root:
                raise LayerError(f"layer entry {entry!r}: an opaque directory needs root to apply "
                                 f"(the {OPAQUE_XATTR} xattr)")
            self._parent_dirs(rel, entry)
            os.setxattr(self._abs(parent_rel), OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk and the like): not part of the changeset
        hidden = base[len(WHITEOUT_PREFIX):]
        if hidden in ("", ".", ".."):
            raise LayerError(f"layer entry {entry!r}: whiteout of an invalid name")
        if not self.is_root:
            raise LayerError(f"layer entry {entry!r}: a whiteout needs root to apply (an overlay "
                             "whiteout is a 0/0 character device)")
        self._parent_dirs(rel, entry)
        hidden_rel = f"{parent_rel}/{hidden}" if parent_rel else hidden
        if hidden_rel in self.applied:
            return  # the entry in this layer already hides the lower one
        path = self._abs(hidden_rel)
        self._clear(path, keep_dir=False)
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def apply_layer(src: BinaryIO | str, target: str, expected_diff_id: str | None = None,
                parents: Sequence[str] = ()) -> AppliedLayer:
    """Applies the layer tar read from `src` (a path or a readable binary stream) into the
    new directory `target`, whose parent must exist and which must not; see the module
    docstring for what is checked. `parents` are the snapshots of the layers below, nearest
    first (only read, for the attributes of directories the tar implies but does not
    list). Returns the diff ID and uncompressed size."""
    if os.path.lexists(target):
        raise LayerError(f"snapshot directory {target} already exists")
    parent = os.path.dirname(os.path.abspath(target))
    staging = tempfile.mkdtemp(dir=parent, prefix=f".apply-{os.getpid()}-")
    try:
        with contextlib.ExitStack() as stack:
            f: IO[bytes] = stack.enter_context(open(src, "rb")) if isinstance(src, str) else src
            hashing = _Hashing(_decompressed(f))
            try:
                tf = stack.enter_context(tarfile.open(fileobj=hashing, mode="r|"))  # type: ignore[call-overload]
                applier = _Applier(staging, parents)
                applier.apply(tf, hashing)
                hashing.drain()  # the end-of-archive blocks and padding are part of the diff ID
            except (tarfile.TarError, EOFError, gzip.BadGzipFile) as e:
                raise LayerError(f"layer is not a valid tar stream: {e}") from e
            except OSError as e:
                raise LayerError(f"applying layer failed: {e}") from e
        diff_id = "sha256:" + hashing.hash.hexdigest()
        if expected_diff_id is not None and diff_id != expected_diff_id:
            raise LayerError(f"layer diff ID {diff_id} does not match {expected_diff_id}")
        if not applier.root_given:
            os.chmod(staging, 0o755)  # mkdtemp made it 0700
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return AppliedLayer(diff_id=diff_id, size=hashing.size)

