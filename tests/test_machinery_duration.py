"""machinery.duration and machinery.flags: Go durations and booleans read (flags, configs,
kubectl-lite timeouts), ages printed."""
import argparse

import pytest

from machinery import flags
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


def test_flag_values_read_as_kubernetes_binaries_read_them():
    assert [flags.duration(v) for v in ("15s", "1m30s", "250ms", "2")] == [15, 90, 0.25, 2]
    assert [flags.boolean(v) for v in ("true", "False", "1", "0", "t", "no")] == \
        [True, False, True, False, True, False]
    for bad, call in (("-2s", flags.duration), ("1x", flags.duration), ("maybe", flags.boolean)):
        with pytest.raises(argparse.ArgumentTypeError):
            call(bad)
