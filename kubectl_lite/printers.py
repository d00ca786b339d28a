"""Output as kubectl prints it: aligned columns (Go's text/tabwriter, ported), YAML and
JSON documents, `kind/name`, custom columns, human durations.

Column layout is tabwriter's: a line's cells end with a tab, the text after the last tab
is not aligned; a column's width is that of its widest cell plus padding (and at least
`minwidth`) over each run of consecutive lines that have the column. `get` uses
minwidth 6 and padding 3, `describe` 0 and 2, exactly kubectl's settings.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, Iterable, TextIO

from machinery import times
from machinery.duration import human_duration


def tabwrite(lines: Iterable[str], *, minwidth: int = 6, padding: int = 3) -> list[str]:
    rows = [line.replace("\r", "").split("\t") for line in lines]
    out: list[str] = []

    def write(line0: int, line1: int, widths: list[int]) -> None:
        for cells in rows[line0:line1]:
            parts = []
            for j, cell in enumerate(cells):
                parts.append(cell.ljust(widths[j]) if j < len(widths) else cell)
            out.append("".join(parts))

    def fmt(line0: int, line1: int, widths: list[int]) -> None:
        col = len(widths)
        this = line0
        while this < line1:
            if col >= len(rows[this]) - 1:
                this += 1
                continue
            write(line0, this, widths)
            line0 = this
            width = minwidth
            while this < line1 and col < len(rows[this]) - 1:
                width = max(width, len(rows[this][col]) + padding)
                this += 1
            fmt(line0, this, widths + [width])
            line0 = this
        write(line0, line1, widths)

    fmt(0, len(rows), [])
    return out


def cell_text(value: Any) -> str:
    """A Table cell as kubectl prints it (first line only, Go's formatting of scalars)."""
    if isinstance(value, str):
        for i, ch in enumerate(value):
            if ch in "\f\n\r":
                return value[:i].replace("\t", " ") + "..."
        return value.replace("\t", " ")
    return go_format(value)


def go_format(value: Any) -> str:
    """Go's `%v` of a JSON value (what custom-columns and cells print for non-strings)."""
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    return str(value)


def print_lines(lines: Iterable[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write("".join(line + "\n" for line in lines))


# -- documents ---------------------------------------------------------------------------

def go_json_escape(text: str) -> str:
    """Go's encoding/json writes <, > and & as \\u escapes; in JSON text they can only
    be inside strings, so replacing them everywhere is safe."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def to_json(obj: Any) -> str:
    return go_json_escape(json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=False)) + "\n"


def to_yaml(obj: Any) -> str:
    import yaml
    # Go's YAML folds long plain strings at 80 columns, as the emitter does by default.
    return yaml.dump(obj, Dumper=_dumper(), default_flow_style=False, sort_keys=True,
                     allow_unicode=True)


_DUMPER: Any = None


def _dumper():
    """A YAML dumper that writes strings as Go's YAML does (what kubectl prints): multi-line
    ones as `|` blocks, ones that would read back as another type ("1", "true", a date)
    double-quoted, the rest plain where the emitter allows it."""
    global _DUMPER
    if _DUMPER is None:
        import yaml
        base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

        class Dumper(base):  # type: ignore[misc, valid-type]
            pass

        str_tag = "tag:yaml.org,2002:str"

        def text(dumper, data: str):
            if "\n" in data:
                style = "|"
            elif dumper.resolve(yaml.ScalarNode, data, (True, False)) != str_tag:
                style = '"'
            else:
                style = None
            return dumper.represent_scalar(str_tag, data, style=style)
        Dumper.add_representer(str, text)
        _DUMPER = Dumper
    return _DUMPER


def strip_managed_fields(obj: Any) -> Any:
    """What kubectl prints by default (--show-managed-fields=false)."""
    if isinstance(obj, dict):
        if obj.get("kind") == "List" or isinstance(obj.get("items"), list):
            for item in obj.get("items") or []:
                strip_managed_fields(item)
        md = obj.get("metadata")
        if isinstance(md, dict):
            md.pop("managedFields", None)
    return obj


def as_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


# -- times -------------------------------------------------------------------------------

def parse_time(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    try:
        return dt.datetime.fromtimestamp(times.parse(ts), dt.timezone.utc)
    except ValueError:
        return None


def age(ts: str | None, now: dt.datetime | None = None) -> str:
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    now = now or dt.datetime.now(dt.timezone.utc)
    return human_duration((now - t).total_seconds())


def rfc1123(ts: str | None) -> str:
    """`Mon, 01 Jan 2024 00:00:00 +0000`, as describe prints timestamps."""
    t = parse_time(ts)
    return t.strftime("%a, %d %b %Y %H:%M:%S %z") if t else "<unset>"


def format_labels(labels: dict | None, sep: str = ",") -> str:
    if not labels:
        return "<none>"
    return sep.join(f"{k}={v}" for k, v in sorted(labels.items()))
