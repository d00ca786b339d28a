"""machinery.duration: Go durations read (flags, configs, kubectl-lite timeouts) and ages printed."""
import pytest

from machinery.duration import human_duration, parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("15s", 15), ("1m30s", 90), ("250ms", 0.25), ("1h", 3600), ("1.5h", 5400), (".5s", 0.5),
    ("2", 2), ("0", 0), ("-2s", -2), ("+3m", 180), ("100us", 1e-4), ("100µs", 1e-4), (" 5s ", 5),
])
def test_go_durations_and_plain_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "1s2", "1 s", "--1s", "nan", "inf", "1d"])
def test_what_is_not_a_duration_names_itself(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_ages_print_as_kubectl_prints_them():
    assert [human_duration(s) for s in (5, 150, 3600 * 5 + 60, 86400 * 3, -5)] == \
        ["5s", "2m30s", "5h1m", "3d", "<invalid>"]
