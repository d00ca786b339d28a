"""Table ages read every RFC 3339 form the API carries (machinery.times), not only
whole-second UTC."""
import time

from apiserver import registry, tables
from apiserver.cache import Entry
from machinery import times


def cells(plural: str, obj: dict) -> dict:
    rt = registry.by_plural(plural)
    t = tables.table(rt, [Entry.of("", obj, 0)], "1")
    return {c["name"]: v for c, v in zip(t["columnDefinitions"], t["rows"][0]["cells"])}


def test_ages_read_time_microtime_and_offsets():
    an_hour_ago = time.time() - 3600
    cm = {"metadata": {"name": "a", "creationTimestamp": times.rfc3339(an_hour_ago)}}
    assert cells("configmaps", cm)["Age"] == "60m"
    ev = {"metadata": {"name": "e"}, "eventTime": times.rfc3339_micro(an_hour_ago)}
    assert cells("events", ev)["Last Seen"] == "60m"
    offset = time.strftime("%Y-%m-%dT%H:%M:%S+01:00", time.gmtime(an_hour_ago + 3600))
    assert cells("events", {"metadata": {"name": "e"}, "lastTimestamp": offset})["Last Seen"] == "60m"


def test_unreadable_or_missing_times_are_unknown():
    assert cells("configmaps", {"metadata": {"name": "a", "creationTimestamp": "yesterday"}})["Age"] == "<unknown>"
    assert cells("configmaps", {"metadata": {"name": "a"}})["Age"] == "<unknown>"
