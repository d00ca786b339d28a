"""`minik8s image ls | pull | import | rm | prune`: a node's image store, driven by hand,
for air-gapped labs (as `crictl images`/`crictl pull`/`crictl rmi` and `ctr images import`
do for containerd).

The store is `--store DIR`; by default the local cluster's store, `<state-dir>/images`
(shared by every kubelet of that cluster), when a cluster lives in the state dir, else the
kubelet's default, /var/lib/minik8s/images. The kubelets sharing a store see what these
commands do at once: an imported image is present for the next pod that asks for it.

- `ls` prints IMAGE, TAG, IMAGE ID (the config digest, shortened as crictl does) and SIZE
  (config and layer blobs, in decimal units as crictl prints them).
- `pull NAME` pulls through the image service (kubelet/images/service.py), as a kubelet
  would, with the registry config (kubelet/images/hosts.py) of `--registry-config FILE`,
  else the local cluster's when the store is its; `--insecure-registry HOST` allows plain
  HTTP to HOST, `--creds USER:PASSWORD` authenticates.
- `import FILE...` (`-` reads stdin) takes docker save archives and OCI layout tarballs
  (kubelet/images/archive.py): no registry is involved.
- `rm NAME...` removes images no container uses, and the content only they kept; `prune`
  removes every image no container uses (kubelet/images/gc.py).

Bad input (an unknown image, an image in use, a file that is not an archive, a store that
is not there) is one line on stderr and exit status 1, and changes nothing: `rm` checks
every name before it removes any, `import` checks every file exists before it reads any
(each archive is then imported whole or not at all).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from cluster.state import ClusterConfig, state_dir

DEFAULT_STORE = "/var/lib/minik8s/images"
_TRUNCATED_ID = 13  # crictl's getTruncatedID


class Fail(Exception):
    """A one-line reason the command cannot go on."""


def add_parser(sub) -> None:
    p = sub.add_parser("image", help="list, pull, import and remove images in a node's image store "
                                     "(`minik8s image --help`)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help)
        v.add_argument("--store", metavar="DIR",
                       help="the image store (default: <state-dir>/images when a cluster lives in the "
                            f"state dir, else {DEFAULT_STORE})")
        v.add_argument("--state-dir", help="the local cluster whose store to use (default ~/.minik8s)")
        return v

    v = verb("ls", "list the images in the store (as `crictl images`)")
    v.add_argument("-q", "--quiet", action="store_true", help="only print the image IDs")
    v.add_argument("--no-trunc", action="store_true", help="do not shorten the image IDs")

    v = verb("pull", "pull an image from its registry into the store (as a kubelet would)")
    v.add_argument("name", nargs="?", metavar="NAME[:TAG|@DIGEST]")
    v.add_argument("--registry-config", metavar="FILE",
                   help="a registries.yaml (mirrors, TLS, auth) as the kubelet takes it (default: the "
                        "local cluster's, when the store is its)")
    v.add_argument("--insecure-registry", metavar="HOST[:PORT]", action="append", default=[],
                   help="reach this registry over plain HTTP (repeatable)")
    v.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry")

    v = verb("import", "import docker save archives or OCI layout tarballs (`-`: stdin); no registry needed")
    v.add_argument("files", nargs="*", metavar="FILE")
    v.add_argument("--base-name", metavar="REPO",
                   help="name images the archive names only by a tag REPO:TAG, and unnamed ones REPO:latest")
    v.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the image to take from a multi-platform index (default: this node's)")

    v = verb("rm", "remove images no container uses, and the content only they kept")
    v.add_argument("names", nargs="*", metavar="NAME")

    verb("prune", "remove every image no container uses")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return VERBS[args.verb](args)
    except Fail as e:
        print(f"minik8s: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- the store -------------------------------------------------------------------------------

def _cluster(args: argparse.Namespace) -> ClusterConfig | None:
    """The local cluster whose store is used (None with --store, or with no cluster)."""
    return None if args.store else ClusterConfig.load(state_dir(args.state_dir))


def store_dir(args: argparse.Namespace) -> str:
    if args.store:
        return os.path.abspath(os.path.expanduser(args.store))
    state = state_dir(args.state_dir)
    if _cluster(args) is not None:
        return os.path.join(state, "images")
    if args.state_dir:
        raise Fail(f"no cluster in {state} (`minik8s up --state-dir {args.state_dir}` starts one; "
                   "--store DIR names a store directly)")
    return DEFAULT_STORE


def open_store(args: argparse.Namespace, *, create: bool):
    """The ContentStore; with `create` False, Fail if it is not there (a mistyped --store
    must not make one)."""
    from kubelet.images.store import ContentStore
    root = store_dir(args)
    if not create and not os.path.isdir(os.path.join(root, "images")):
        raise Fail(f"no image store at {root} (nothing was pulled or imported there)")
    try:
        return ContentStore(root)
    except OSError as e:
        raise Fail(f"cannot open the image store at {root}: {e.strerror or e}") from None


# -- ls --------------------------------------------------------------------------------------

def human_size(size: float) -> str:
    """go-units' HumanSizeWithPrecision(size, 3), what crictl prints: decimal units."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def split_name(name: str) -> tuple[str, str]:
    """(repository, tag) of a recorded name; `<none>` for a name with only a digest."""
    from kubelet.images import reference
    try:
        ref = reference.parse(name)
    except ValueError:
        return name, "<none>"
    return ref.name, ref.tag or "<none>"


def cmd_ls(args: argparse.Namespace) -> int:
    from kubelet.images.service import ImageService
    store = open_store(args, create=False)
    svc = ImageService(store)
    records = store.list_images()
    if args.quiet:
        for image_id in dict.fromkeys(r.config_digest for r in records):
            print(image_id)
        return 0
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for r in records:
        repo, tag = split_name(r.name)
        image_id = r.config_digest if args.no_trunc else r.config_digest[len("sha256:"):][:_TRUNCATED_ID]
        rows.append((repo, tag, image_id, human_size(svc.size(r))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


# -- pull ------------------------------------------------------------------------------------

def _registries(args: argparse.Namespace) -> dict:
    """The registry config: --registry-config, else the one the local cluster's kubelets
    were given (`minik8s up --registry-config`), so a pull here is theirs."""
    from kubelet.images import hosts
    path = args.registry_config
    if path is None:
        cluster = _cluster(args)
        path = getattr(cluster, "registry_config", "") or None
    if path is None:
        return {}
    try:
        return dict(hosts.load(path))
    except hosts.RegistryConfigError as e:
        raise Fail(str(e)) from None


def cmd_pull(args: argparse.Namespace) -> int:
    from kubelet.images import ImageError
    from kubelet.images.registry import Credentials, RegistryHostConfig
    from kubelet.images.service import ImageService
    if not args.name:
        raise Fail("pull needs an image name: minik8s image pull NAME[:TAG|@DIGEST]")
    creds: list[Credentials] = []
    if args.creds is not None:
        user, sep, password = args.creds.partition(":")
        if not user or not sep:
            raise Fail("--creds must be USER:PASSWORD")
        creds.append(Credentials(user, password))
    registries = _registries(args)
    for host in args.insecure_registry:
        registries[host] = dataclasses.replace(registries.get(host) or RegistryHostConfig(), insecure=True)
    store = open_store(args, create=True)

    async def pull():
        svc = ImageService(store, registries=registries)
        try:
            return await svc.pull(args.name, credentials=creds)
        finally:
            await svc.aclose()
    try:
        result = asyncio.run(pull())
    except ImageError as e:  # PullError, or a name that does not parse
        raise Fail(str(e)) from None
    print(f"Image is up to date for {result.record.name} ({result.record.config_digest})")
    return 0


# -- import ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _stdin_spooled(root: str) -> Iterator[BinaryIO]:
    """Stdin copied to a file in the store's directory: an archive is read by member name,
    in any order, so it must be seekable; the store's disk, not /tmp, has room for it."""
    with tempfile.TemporaryFile(dir=root, prefix=".import-") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        f.seek(0)
        yield f  # type: ignore[misc]


def _platform(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    parts = tuple(value.split("/"))
    if len(parts) not in (2, 3) or not all(parts):
        raise Fail(f"--platform {value!r}: want OS/ARCH or OS/ARCH/VARIANT (e.g. linux/arm64/v8)")
    return parts


def cmd_import(args: argparse.Namespace) -> int:
    from kubelet.images.archive import ArchiveError, import_archive
    if not args.files:
        raise Fail("import needs at least one archive: minik8s image import FILE... (`-` reads stdin)")
    if args.files.count("-") > 1:
        raise Fail("stdin (`-`) can be read only once")
    for path in args.files:
        if path != "-" and not os.path.isfile(path):
            raise Fail(f"{path}: {'is a directory, not an archive' if os.path.isdir(path) else 'no such file'}")
    platform = _platform(args.platform)
    store = open_store(args, create=True)
    for path in args.files:
        try:
            if path == "-":
                with _stdin_spooled(store.root) as f:
                    imported = import_archive(store, f, label="stdin", base_name=args.base_name, platform=platform)
            else:
                imported = import_archive(store, path, base_name=args.base_name, platform=platform)
        except ArchiveError as e:
            raise Fail(str(e)) from None
        for img in imported:
            # ctr images import's wording
            print(f"unpacking {img.name} ({img.manifest_digest})...done", flush=True)
    return 0


# -- rm / prune ------------------------------------------------------------------------------

def cmd_rm(args: argparse.Namespace) -> int:
    from kubelet.images import ImageError, reference
    if not args.names:
        raise Fail("rm needs at least one image name: minik8s image rm NAME...")
    store = open_store(args, create=False)
    names = []
    for name in args.names:
        try:
            full = reference.normalize(name)
        except ValueError as e:
            raise Fail(str(e)) from None
        if store.get_image(full) is None:
            raise Fail(f'image "{name}" is not present in {store.root}; nothing removed')
        names.append(full)
    leased = store.leased()
    for full, name in zip(names, args.names):
        if full in leased:
            raise Fail(f'image "{name}" is in use by a container; nothing removed')
    from kubelet.images import gc
    for full in dict.fromkeys(names):
        try:
            gc.remove(store, full)
        except ImageError as e:  # it changed since the check: a container took it, or it went
            raise Fail(str(e)) from None
        print(f"Deleted: {full}", flush=True)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    store = open_store(args, create=False)
    from kubelet.images import gc
    removed = gc.prune(store)
    for name in removed:
        print(f"Deleted: {name}")
    if not removed:
        print("No images to remove")
    return 0


VERBS = {"ls": cmd_ls, "pull": cmd_pull, "import": cmd_import, "rm": cmd_rm, "prune": cmd_prune}
