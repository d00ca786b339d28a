"""Applying layer tars built here, with tarfile, into snapshot directories: every kind of
entry, whiteouts, compression, and each malicious kind, asserting the host is untouched."""
import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import threading

import pytest

from kubelet.images.layers import OPAQUE_XATTR, LayerError, apply_layer

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="overlay whiteouts, trusted.* xattrs and chown need root")


def entry(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.mtime = kw.pop("mtime", 1_600_000_000)
    for k, v in kw.items():
        setattr(ti, k, v)
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
    return ti, data


def build(*entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def tree(path) -> dict:
    """Everything under `path`: name -> (mode, size, content or link)."""
    out = {}
    for d, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            body = (os.readlink(p) if stat.S_ISLNK(st.st_mode)
                    else open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, body)
    return out


@pytest.fixture
def host(tmp_path):
    """A stand-in for the host outside the layer: a directory with a file the attacks aim at,
    and the directory snapshots are committed in."""
    h = tmp_path / "host"
    h.mkdir()
    (h / "victim").write_bytes(b"original")
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    return tmp_path


def test_regular_layer(host):
    tar = build(
        entry("./", tarfile.DIRTYPE, mode=0o755, mtime=1_500_000_000),
        entry("etc/", tarfile.DIRTYPE, mode=0o755, mtime=1_500_000_001),
        entry("etc/hostname", data=b"box\n", mode=0o640, uid=1234, gid=4321),
        entry("bin/", tarfile.DIRTYPE, mode=0o755),
        entry("bin/busybox", data=b"\x7fELF...", mode=0o4755),
        entry("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox"),
        entry("bin/ls", tarfile.LNKTYPE, linkname="bin/busybox"),
        entry("usr/lib/deep/file", data=b"implied parents"),
        entry("tmp/", tarfile.DIRTYPE, mode=0o1777),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry("etc/attrs", data=b"a", pax_headers={"SCHILY.xattr.user.test": "value"}),
    )
    target = host / "snaps" / "s1"
    got = apply_layer(io.BytesIO(tar), str(target))
    assert got.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert got.size == len(tar)
    t = str(target)
    assert open(f"{t}/etc/hostname", "rb").read() == b"box\n"
    assert stat.S_IMODE(os.lstat(f"{t}/etc/hostname").st_mode) == 0o640
    assert os.lstat(f"{t}/etc/hostname").st_mtime == 1_600_000_000
    assert os.readlink(f"{t}/bin/sh") == "/bin/busybox"
    assert os.lstat(f"{t}/bin/ls").st_ino == os.lstat(f"{t}/bin/busybox").st_ino
    assert stat.S_IMODE(os.lstat(f"{t}/bin/busybox").st_mode) == 0o4755
    assert open(f"{t}/usr/lib/deep/file", "rb").read() == b"implied parents"
    assert stat.S_IMODE(os.lstat(f"{t}/usr/lib").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(f"{t}/tmp").st_mode) == 0o1777
    assert stat.S_ISFIFO(os.lstat(f"{t}/run/fifo").st_mode)
    assert os.getxattr(f"{t}/etc/attrs", "user.test") == b"value"
    # Directory times are the tar's, although children were added after them.
    assert os.lstat(f"{t}/etc").st_mtime == 1_500_000_001
    assert os.lstat(t).st_mtime == 1_500_000_000
    if ROOT:
        st = os.lstat(f"{t}/etc/hostname")
        assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert sorted(os.listdir(host / "snaps")) == ["s1"]   # no staging directory left


def test_gzip_and_path_sources_give_the_same_diff_id(host):
    tar = build(entry("a", data=b"x" * 100_000), entry("b/", tarfile.DIRTYPE))
    gz = host / "layer.tar.gz"
    gz.write_bytes(gzip.compress(tar))
    a = apply_layer(str(gz), str(host / "snaps" / "gz"))
    b = apply_layer(io.BytesIO(tar), str(host / "snaps" / "plain"), expected_diff_id=a.diff_id)
    assert a == b
    assert a.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert tree(host / "snaps" / "gz") == tree(host / "snaps" / "plain")


def test_applies_from_a_pipe(host):
    tar = build(entry("f", data=os.urandom(300_000)))
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(w, gzip.compress(tar)), os.close(w)))
    writer.start()
    with os.fdopen(r, "rb", buffering=0) as f:
        got = apply_layer(f, str(host / "snaps" / "p"))
    writer.join()
    assert got.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()


def test_later_entries_replace_earlier_ones(host):
    tar = build(
        entry("d/", tarfile.DIRTYPE), entry("d/x", data=b"1"),
        entry("d", data=b"now a file"),
        entry("f", data=b"old"), entry("f", data=b"new"),
        entry("l", tarfile.SYMTYPE, linkname="/etc"), entry("l", data=b"file, not through the link"),
    )
    t = host / "snaps" / "s"
    apply_layer(io.BytesIO(tar), str(t))
    assert (t / "d").read_bytes() == b"now a file"
    assert (t / "f").read_bytes() == b"new"
    assert (t / "l").read_bytes() == b"file, not through the link"


@needs_root
def test_whiteouts_become_overlay_whiteouts(host):
    tar = build(
        entry("etc/", tarfile.DIRTYPE, mode=0o755),
        entry("etc/.wh.motd"),
        entry("var/cache/.wh..wh..opq"),
        entry("var/cache/kept", data=b"k"),
        entry("keep", data=b"in this layer"),
        entry(".wh.keep"),               # a whiteout hides lower layers only
        entry(".wh..wh.plnk"),           # AUFS metadata: ignored
    )
    t = host / "snaps" / "w"
    apply_layer(io.BytesIO(tar), str(t))
    st = os.lstat(t / "etc" / "motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not os.path.lexists(t / "etc" / ".wh.motd")
    assert os.getxattr(t / "var" / "cache", OPAQUE_XATTR) == b"y"
    assert (t / "var" / "cache" / "kept").read_bytes() == b"k"
    assert not os.path.lexists(t / "var" / "cache" / ".wh..wh..opq")
    assert (t / "keep").read_bytes() == b"in this layer"
    assert sorted(os.listdir(t)) == ["etc", "keep", "var"]


@needs_root
def test_whiteouts_hide_files_in_a_real_overlay(host):
    lower = host / "snaps" / "l0"
    apply_layer(io.BytesIO(build(entry("a", data=b"a"), entry("d/x", data=b"x"), entry("b", data=b"b"))), str(lower))
    upper_layer = host / "snaps" / "l1"
    apply_layer(io.BytesIO(build(entry(".wh.a"), entry("d/.wh..wh..opq"), entry("d/y", data=b"y"))),
                str(upper_layer))
    merged = host / "merged"
    merged.mkdir()
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper_layer}:{lower}", str(merged)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"overlayfs not mountable here: {r.stderr.strip()}")
    try:
        assert sorted(os.listdir(merged)) == ["b", "d"]
        assert sorted(os.listdir(merged / "d")) == ["y"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@pytest.mark.skipif(ROOT, reason="checks the error given without root")
def test_whiteouts_without_root_are_a_clear_error(host):
    with pytest.raises(LayerError, match="needs root"):
        apply_layer(io.BytesIO(build(entry(".wh.x"))), str(host / "snaps" / "w"))
    assert os.listdir(host / "snaps") == []


def test_zstd(host):
    try:
        import zstandard
    except ImportError:
        with pytest.raises(LayerError, match="zstandard"):
            apply_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 100), str(host / "snaps" / "z"))
        assert os.listdir(host / "snaps") == []
        return
    tar = build(entry("f", data=b"z"))
    got = apply_layer(io.BytesIO(zstandard.ZstdCompressor().compress(tar)), str(host / "snaps" / "z"))
    assert got.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()


@pytest.mark.parametrize("data, message", [
    (b"not a tar at all" * 100, "not a valid tar"),
    (gzip.compress(b"not a tar" * 100), "not a valid tar"),
    (gzip.compress(b"x" * 5000)[:100], "not a valid tar"),   # truncated gzip
    (b"BZh91AY&SY", "bzip2"),
], ids=["plain", "gzip-not-tar", "truncated-gzip", "bzip2"])  # gzip stamps the time: no bytes in ids
def test_not_a_layer(host, data, message):
    with pytest.raises(LayerError, match=message):
        apply_layer(io.BytesIO(data), str(host / "snaps" / "bad"))
    assert os.listdir(host / "snaps") == []


def test_truncated_tar_is_rejected(host):
    tar = build(entry("big", data=b"b" * 100_000))
    with pytest.raises(LayerError):
        apply_layer(io.BytesIO(tar[:20_000]), str(host / "snaps" / "t"))
    assert os.listdir(host / "snaps") == []


def test_a_tar_ending_after_its_last_entrys_data_is_read_as_go_reads_it(host):
    # umoci writes layers so: no padding after the last file, no end-of-archive blocks.
    tar = build(entry("a", data=b"x" * 700), entry("last", data=b"68 bytes" * 8 + b"tail"))
    short = tar[:512 + 1024 + 512 + 68]  # a: header + 2 blocks; last: header + 68 bytes
    applied = apply_layer(io.BytesIO(short), str(host / "snaps" / "s"),
                          expected_diff_id="sha256:" + hashlib.sha256(short).hexdigest())
    assert (host / "snaps" / "s" / "last").read_bytes() == b"68 bytes" * 8 + b"tail"
    assert applied.size == len(short)
    with pytest.raises(LayerError):  # but not one that ends inside an entry's data
        apply_layer(io.BytesIO(short[:-1]), str(host / "snaps" / "t"))
    assert os.listdir(host / "snaps") == ["s"]


def test_diff_id_mismatch_is_rejected(host):
    with pytest.raises(LayerError, match="does not match"):
        apply_layer(io.BytesIO(build(entry("f"))), str(host / "snaps" / "m"), expected_diff_id="sha256:" + "0" * 64)
    assert os.listdir(host / "snaps") == []


def test_existing_target_is_refused(host):
    (host / "snaps" / "there").mkdir()
    with pytest.raises(LayerError, match="already exists"):
        apply_layer(io.BytesIO(build(entry("f"))), str(host / "snaps" / "there"))


def malicious(h: str) -> dict:
    """Each attack kind: (entries, the entry the error must name); `h` is the host dir."""
    return {
        "dotdot": ([entry("ok", data=b"fine"), entry("../../host/victim", data=b"pwned")], "../../host/victim"),
        "dotdot-inside": ([entry("a/../../../host/new", data=b"pwned")], "a/../../../host/new"),
        "absolute": ([entry(f"{h}/new", data=b"pwned")], f"{h}/new"),
        "abs-symlink-then-write": ([entry("esc", tarfile.SYMTYPE, linkname=h),
                                    entry("esc/victim", data=b"pwned")], "esc/victim"),
        "rel-symlink-then-write": ([entry("esc", tarfile.SYMTYPE, linkname="../../host"),
                                    entry("esc/new", data=b"pwned")], "esc/new"),
        "symlink-dir-then-mkdir": ([entry("d/", tarfile.DIRTYPE), entry("d/esc", tarfile.SYMTYPE, linkname=h),
                                    entry("d/esc/sub/", tarfile.DIRTYPE)], "d/esc/sub"),
        "symlink-then-hardlink-through": ([entry("esc", tarfile.SYMTYPE, linkname=h),
                                           entry("x", tarfile.LNKTYPE, linkname="esc/victim")], "x"),
        "hardlink-absolute": ([entry("pw", tarfile.LNKTYPE, linkname=f"{h}/victim")], "pw"),
        "hardlink-dotdot": ([entry("pw", tarfile.LNKTYPE, linkname="../../host/victim")], "pw"),
        "hardlink-not-yet": ([entry("pw", tarfile.LNKTYPE, linkname="later"), entry("later", data=b"l")], "pw"),
        "chardev": ([entry("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1)], "dev/mem"),
        "chardev-0-0": ([entry("fake-whiteout", tarfile.CHRTYPE)], "fake-whiteout"),
        "blockdev": ([entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)], "dev/sda"),
        "overlay-xattr": ([entry("d/", tarfile.DIRTYPE,
                                 pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})], "d/"),
        "whiteout-dotdot": ([entry("a/.wh...", data=b"")], "a/.wh.."),
    }


@pytest.mark.parametrize("kind", sorted(malicious("/x")))
def test_malicious_layer_is_rejected_whole(host, kind):
    entries, named = malicious(str(host / "host"))[kind]
    before = tree(host)
    target = host / "snaps" / "evil"
    with pytest.raises(LayerError) as err:
        apply_layer(io.BytesIO(build(*entries)), str(target))
    assert named.rstrip("/") in str(err.value)
    assert tree(host) == before                        # nothing written outside, nothing kept
    assert (host / "host" / "victim").read_bytes() == b"original"
    assert os.listdir(host / "snaps") == []


def test_a_lone_climbing_symlink_is_stored_not_followed(host):
    t = host / "snaps" / "s"
    apply_layer(io.BytesIO(build(entry("up", tarfile.SYMTYPE, linkname="../../../../host"),
                                 entry("abs", tarfile.SYMTYPE, linkname=str(host / "host" / "victim")))), str(t))
    assert os.readlink(t / "up") == "../../../../host"
    assert (host / "host" / "victim").read_bytes() == b"original"


def test_implied_directories_take_their_attributes_from_the_layers_below(host):
    os.chmod(host / "host", 0o750)   # so that following the lower layer's symlink would show
    base = host / "snaps" / "l0"
    apply_layer(io.BytesIO(build(entry("tmp/", tarfile.DIRTYPE, mode=0o1777, mtime=1_400_000_000, uid=7, gid=8),
                                 entry("opt", tarfile.SYMTYPE, linkname=str(host / "host")))), str(base))
    top = host / "snaps" / "l1"
    apply_layer(io.BytesIO(build(entry("tmp/x", data=b"x"), entry("new/y", data=b"y"),
                                 entry("opt/z", data=b"z"))), str(top), parents=[str(base)])
    st = os.lstat(top / "tmp")
    assert stat.S_IMODE(st.st_mode) == 0o1777
    assert st.st_mtime == 1_400_000_000
    if ROOT:
        assert (st.st_uid, st.st_gid) == (7, 8)
    assert stat.S_IMODE(os.lstat(top / "new").st_mode) == 0o755
    # A symlink in a lower layer is not followed: opt is a plain directory in this layer.
    assert stat.S_IMODE(os.lstat(top / "opt").st_mode) == 0o755
    assert (host / "host" / "victim").read_bytes() == b"original"
