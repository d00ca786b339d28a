"""CRI container log files: the writer's format and rotation, the reader's options."""
import re
import threading

from kubelet.runtime import logs

LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] ")


def clock(start_ns=1_795_000_000_000_000_000, step_ns=1_000_000):
    t = [start_ns]

    def now():
        t[0] += step_ns
        return t[0]
    return now


def test_writes_cri_format_lines(tmp_path):
    path = str(tmp_path / "0.log")
    w = logs.LogWriter(path, clock_ns=lambda: 1_795_000_000_123_456_789)
    w.write(b"stdout", b"hello\nwor")
    w.write(b"stderr", b"oops\n")
    w.write(b"stdout", b"ld\nno newline")
    w.close()
    assert open(path, "rb").read().splitlines() == [
        b"2026-11-18T11:06:40.123456789Z stdout F hello",
        b"2026-11-18T11:06:40.123456789Z stderr F oops",
        b"2026-11-18T11:06:40.123456789Z stdout F world",
        b"2026-11-18T11:06:40.123456789Z stdout F no newline",
    ]


def test_long_lines_are_split_into_partial_entries_and_joined_back(tmp_path):
    path = str(tmp_path / "0.log")
    w = logs.LogWriter(path)
    w.write(b"stdout", b"x" * (logs.MAX_LINE * 2 + 10) + b"\n")
    w.close()
    tags = [line.split(b" ")[2] for line in open(path, "rb").read().splitlines()]
    assert tags == [b"P", b"P", b"F"]
    assert b"".join(logs.read_log(path)) == b"x" * (logs.MAX_LINE * 2 + 10) + b"\n"


def test_rotates_by_size_and_keeps_max_files(tmp_path):
    path = str(tmp_path / "0.log")
    w = logs.LogWriter(path, max_bytes=300, max_files=3, clock_ns=clock())
    for i in range(100):
        w.write(b"stdout", b"line %03d\n" % i)
    w.close()
    assert len(logs.rotated_files(path)) == 2
    for f in [*logs.rotated_files(path), path]:
        assert all(LINE.match(line) for line in open(f, "rb").read().splitlines())
    out = list(logs.read_log(path))
    assert out[-1] == b"line 099\n"
    numbers = [int(line.split()[1]) for line in out]
    assert numbers == list(range(numbers[0], 100))  # oldest kept first, no gap
    assert numbers[0] > 0  # the oldest rotated files were deleted


def test_tail_since_timestamps_and_limit_bytes(tmp_path):
    path = str(tmp_path / "0.log")
    w = logs.LogWriter(path, max_bytes=200, clock_ns=clock(step_ns=1_000_000_000))
    for i in range(10):
        w.write(b"stdout", b"l%d\n" % i)
    w.close()
    assert list(logs.read_log(path, tail=3)) == [b"l7\n", b"l8\n", b"l9\n"]
    assert list(logs.read_log(path, tail=0)) == []
    first_ts = open(logs.rotated_files(path)[0], "rb").readline().split(b" ")[0]
    since = logs.parse_time(first_ts) + 5_000_000_000
    assert list(logs.read_log(path, since_ns=since)) == [b"l5\n", b"l6\n", b"l7\n", b"l8\n", b"l9\n"]
    stamped = list(logs.read_log(path, tail=1, timestamps=True))
    assert LINE.match(stamped[0].replace(b" l9", b" stdout F l9")) and stamped[0].endswith(b" l9\n")
    assert b"".join(logs.read_log(path, limit_bytes=7)) == b"l0\nl1\nl"


def test_follow_streams_new_lines_across_rotation_until_the_container_stops(tmp_path):
    path = str(tmp_path / "0.log")
    w = logs.LogWriter(path, max_bytes=100, max_files=100)
    w.write(b"stdout", b"before\n")
    running = threading.Event()
    running.set()
    got = []
    reader = threading.Thread(target=lambda: got.extend(
        logs.read_log(path, follow=True, running=running.is_set, poll=0.01)))
    reader.start()
    for i in range(20):  # enough to rotate several times while the reader follows
        w.write(b"stdout", b"after %02d\n" % i)
    w.close()
    running.clear()
    reader.join(10)
    assert not reader.is_alive()
    assert got == [b"before\n"] + [b"after %02d\n" % i for i in range(20)]
