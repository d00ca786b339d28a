"""machinery.times: Kubernetes' Time and MicroTime formats, both ways."""
import pytest

from machinery import times


def test_time_is_whole_seconds_in_utc():
    assert times.rfc3339(0) == "1970-01-01T00:00:00Z"
    assert times.rfc3339(1764902558.999) == "2025-12-05T02:42:38Z"


def test_micro_time_keeps_six_digits():
    assert times.rfc3339_micro(1764902558.25) == "2025-12-05T02:42:38.250000Z"
    assert times.rfc3339_micro(1764902558) == "2025-12-05T02:42:38.000000Z"
    assert times.rfc3339_micro(1764902558.9999996) == "2025-12-05T02:42:39.000000Z"  # rounds, carrying


@pytest.mark.parametrize("text, want", [
    ("2025-12-05T02:42:38Z", 1764902558.0),
    ("2025-12-05T02:42:38.250000Z", 1764902558.25),
    ("2025-12-05T02:42:38.250000123Z", 1764902558.25),   # Go's nanoseconds
    ("2025-12-05T03:42:38+01:00", 1764902558.0),
    ("2025-12-05t02:42:38z", 1764902558.0),
])
def test_parse_reads_every_rfc3339_form(text, want):
    assert times.parse(text) == pytest.approx(want)


@pytest.mark.parametrize("text", ["", "yesterday", "2025-12-05", "2025-12-05T02:42:38", "2025-12-05 02:42:38Z", 42])
def test_parse_rejects_what_is_not_rfc3339(text):
    with pytest.raises(ValueError):
        times.parse(text)


def test_round_trip():
    assert times.parse(times.rfc3339(1764902558)) == 1764902558
    assert times.parse(times.rfc3339_micro(1764902558.123456)) == pytest.approx(1764902558.123456)
