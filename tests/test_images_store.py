"""The content store on real files: ingest, verification, locking across threads and
processes, image records, chain IDs and snapshot paths."""
import hashlib
import multiprocessing
import os
import threading

import pytest

from kubelet.images.store import ContentStore, DigestMismatch, ImageRecord, chain_ids


def digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def visible(root: str) -> list[str]:
    """Every file under the blob and ingest areas."""
    out = []
    for sub in ("blobs", "ingest"):
        for d, _, files in os.walk(os.path.join(root, sub)):
            out += [os.path.join(d, f) for f in files]
    return out


def test_ingest_commits_and_survives_a_new_store(tmp_path):
    data = b"hello layer" * 1000
    d = digest(data)
    s = ContentStore(str(tmp_path))
    assert not s.has_blob(d)
    with s.ingest(d, size=len(data)) as f:
        f.write(data[:10])
        f.write(data[10:])
    assert s.has_blob(d)
    with open(s.blob_path(d), "rb") as f:
        assert f.read() == data
    assert ContentStore(str(tmp_path)).has_blob(d)   # as after a restart
    assert os.listdir(tmp_path / "ingest") == []


def test_wrong_digest_leaves_nothing(tmp_path):
    s = ContentStore(str(tmp_path))
    d = digest(b"right")
    with pytest.raises(DigestMismatch, match="does not match"):
        with s.ingest(d) as f:
            f.write(b"wrong")
    assert not s.has_blob(d)
    assert visible(str(tmp_path)) == []


def test_wrong_size_leaves_nothing(tmp_path):
    s = ContentStore(str(tmp_path))
    data = b"x" * 100
    with pytest.raises(DigestMismatch, match="wrote 100 bytes, want 101"):
        with s.ingest(digest(data), size=101) as f:
            f.write(data)
    assert visible(str(tmp_path)) == []


def test_a_writer_failing_mid_write_leaves_nothing(tmp_path):
    s = ContentStore(str(tmp_path))
    data = b"y" * 4096
    with pytest.raises(ConnectionError):
        with s.ingest(digest(data)) as f:
            f.write(data[:1000])
            raise ConnectionError("registry went away")
    assert visible(str(tmp_path)) == []
    with s.ingest(digest(data)) as f:   # and a retry works
        f.write(data)
    assert s.has_blob(digest(data))


def test_a_stale_ingest_file_is_never_a_blob(tmp_path):
    s = ContentStore(str(tmp_path))
    data = b"z" * 10
    d = digest(data)
    (tmp_path / "ingest" / d[7:]).write_bytes(data[:5])   # as a SIGKILLed writer leaves it
    assert not s.has_blob(d)
    with s.ingest(d) as f:
        f.write(data)
    assert open(s.blob_path(d), "rb").read() == data


def test_invalid_digest_is_a_clear_error(tmp_path):
    s = ContentStore(str(tmp_path))
    for bad in ("sha256:abc", "md5:" + "a" * 32, "../../etc/passwd", "sha256:" + "A" * 64):
        with pytest.raises(ValueError, match="invalid digest"):
            s.blob_path(bad)


def test_threads_ingesting_one_digest_write_it_once(tmp_path):
    s = ContentStore(str(tmp_path))
    data = os.urandom(1 << 20)
    d = digest(data)
    real_writes = []
    barrier = threading.Barrier(4)
    errors = []

    def pull() -> None:
        try:
            barrier.wait()
            with s.ingest(d, size=len(data)) as f:
                if not s.has_blob(d):
                    real_writes.append(1)
                for i in range(0, len(data), 65536):
                    f.write(data[i:i + 65536])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert real_writes == [1]
    assert open(s.blob_path(d), "rb").read() == data


def _process_ingest(root: str, data: bytes, start, out) -> None:
    s = ContentStore(root)
    d = digest(data)
    start.wait()
    with s.ingest(d, size=len(data)) as f:
        wrote = not s.has_blob(d)
        for i in range(0, len(data), 4096):
            f.write(data[i:i + 4096])
    out.put((wrote, s.has_blob(d), os.stat(s.blob_path(d)).st_ino))


def test_two_processes_ingesting_one_digest_write_it_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    data = os.urandom(2 << 20)
    start = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_ingest, args=(str(tmp_path), data, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(r[0] for r in results) == [False, True]   # one wrote, the other discarded
    assert all(r[1] for r in results)
    assert results[0][2] == results[1][2]                   # both see the same file
    assert open(ContentStore(str(tmp_path)).blob_path(digest(data)), "rb").read() == data


def test_image_records(tmp_path):
    s = ContentStore(str(tmp_path))
    m, c, l1, l2 = (digest(x) for x in (b"m", b"c", b"l1", b"l2"))
    name = "registry.lab:5000/team/web:1.2"
    assert s.get_image(name) is None
    s.put_image(name, m, c, [l1, l2])
    s.put_image("docker.io/library/nginx:latest", m, c, [l1])
    rec = ContentStore(str(tmp_path)).get_image(name)
    assert isinstance(rec, ImageRecord)
    assert (rec.name, rec.manifest_digest, rec.config_digest, rec.layer_digests) == (name, m, c, [l1, l2])
    assert [r.name for r in s.list_images()] == ["docker.io/library/nginx:latest", name]
    s.put_image(name, m, c, [l2])     # a re-pull replaces the record
    assert s.get_image(name).layer_digests == [l2]
    assert s.remove_image(name) is True
    assert s.remove_image(name) is False
    assert [r.name for r in s.list_images()] == ["docker.io/library/nginx:latest"]
    with pytest.raises(ValueError, match="invalid digest"):
        s.put_image(name, "sha256:nope", c, [])
    assert s.get_image(name) is None


def test_chain_ids():
    a, b, c = digest(b"a"), digest(b"b"), digest(b"c")
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([]) == []
    # A layer's chain ID depends on what is below it.
    assert chain_ids([b, c])[1] != abc
    with pytest.raises(ValueError):
        chain_ids(["sha256:short"])


def test_snapshot_paths(tmp_path):
    s = ContentStore(str(tmp_path))
    cid = chain_ids([digest(b"a")])[0]
    assert not s.has_snapshot(cid)
    with s.snapshot_lock(cid):
        os.mkdir(s.snapshot_path(cid))
    assert s.has_snapshot(cid)
    assert s.snapshot_path(cid).startswith(str(tmp_path))


def _write_half_and_hang(root: str, data: bytes, halfway, never) -> None:
    s = ContentStore(root)
    with s.ingest(digest(data)) as f:
        f.write(data[: len(data) // 2])
        f.flush()
        halfway.set()
        never.wait()


def test_a_killed_writer_leaves_no_blob_and_no_lock_held(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    data = os.urandom(1 << 16)
    halfway, never = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_write_half_and_hang, args=(str(tmp_path), data, halfway, never))
    p.start()
    try:
        assert halfway.wait(timeout=60)
    finally:
        p.kill()
        p.join(timeout=60)
    s = ContentStore(str(tmp_path))
    assert not s.has_blob(digest(data))
    with s.ingest(digest(data)) as f:   # the dead writer's lock went with it
        f.write(data)
    assert open(s.blob_path(digest(data)), "rb").read() == data
    assert os.listdir(tmp_path / "ingest") == []


def test_staging_left_by_a_dead_unpack_is_removed_on_open(tmp_path):
    import subprocess
    import sys
    s = ContentStore(str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    snaps = os.path.dirname(s.snapshot_path(chain_ids([digest(b"a")])[0]))
    os.makedirs(os.path.join(snaps, f".apply-{dead.pid}-abc", "usr"))
    os.makedirs(os.path.join(snaps, f".apply-{os.getpid()}-def"))   # a live unpack's
    ContentStore(str(tmp_path))   # as a restarted kubelet opens it
    assert sorted(os.listdir(snaps)) == [f".apply-{os.getpid()}-def"]


def _layer(files: dict) -> bytes:
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_unpack_makes_each_snapshot_once_keyed_by_chain_id(tmp_path):
    import gzip
    s = ContentStore(str(tmp_path))
    base, top = _layer({"tmp/a": b"a"}), _layer({"tmp/b": b"b"})
    blobs = []
    for tar in (base, top):
        gz = gzip.compress(tar)
        with s.ingest(digest(gz)) as f:
            f.write(gz)
        blobs.append(digest(gz))
    diff_ids = [digest(base), digest(top)]
    want = chain_ids(diff_ids)
    got0 = []
    threads = [threading.Thread(target=lambda: got0.append(s.unpack(blobs[0], diff_ids[0]))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got0 == [want[0]] * 3
    assert s.unpack(blobs[1], diff_ids[1], [want[0]]) == want[1]
    assert os.listdir(os.path.join(s.snapshot_path(want[1]), "tmp")) == ["b"]   # a changeset, not a copy
    assert sorted(os.listdir(os.path.dirname(s.snapshot_path(want[0])))) == sorted(c[7:] for c in want)
    with pytest.raises(ValueError, match="not unpacked"):
        s.unpack(blobs[1], diff_ids[1], [digest(b"nope")])


def test_unpack_with_a_wrong_diff_id_keeps_nothing(tmp_path):
    from kubelet.images.layers import LayerError
    s = ContentStore(str(tmp_path))
    tar = _layer({"f": b"f"})
    with s.ingest(digest(tar)) as f:
        f.write(tar)
    with pytest.raises(LayerError, match="does not match"):
        s.unpack(digest(tar), digest(b"other"))
    assert os.listdir(os.path.dirname(s.snapshot_path(digest(tar)))) == []


def test_an_image_is_leased_while_its_holder_exists(tmp_path):
    s = ContentStore(str(tmp_path / "store"))
    holders = [tmp_path / "c1", tmp_path / "c2"]
    for h in holders:
        h.mkdir()
    s.lease(str(holders[0]), "docker.io/library/a:1")
    s.lease(str(holders[1]), "docker.io/library/b:1")
    assert s.leased() == {"docker.io/library/a:1", "docker.io/library/b:1"}
    s.release(str(holders[0]))
    s.release(str(holders[0]))  # releasing twice is fine
    assert s.leased() == {"docker.io/library/b:1"}
    holders[1].rmdir()  # a container removed by a crashed kubelet, its lease left behind
    assert s.leased() == set()
    assert os.listdir(tmp_path / "store" / "leases") == []
