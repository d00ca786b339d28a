"""`get`: list or fetch objects and print them as kubectl does.

Human-readable output comes from the server's Tables (the columns `kubectl` prints);
the client adds what kubectl adds: NAMESPACE with -A, `kind/name` when several kinds
are shown, -L label columns, LABELS, and the priority-1 columns for `-o wide`. Every
other format (yaml, json, name, jsonpath, custom-columns) prints the objects themselves.
`-w` prints the list, then one line per change from a watch that starts at the list's
resourceVersion, so no change between the two is missed.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any

from kubectl_lite.common import CLIError, Parser, qualified, split_type_name
from kubectl_lite.printers import (as_list, cell_text, format_labels, go_format, print_lines,
                                   tabwrite, to_json, to_yaml)

FORMATS = ("custom-columns", "custom-columns-file", "json", "jsonpath", "jsonpath-as-json",
           "jsonpath-file", "name", "wide", "yaml")
ALL_CATEGORY = ("pods", "replicationcontrollers", "services", "daemonsets", "deployments", "replicasets",
                "cronjobs", "jobs")


def add_get(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE[,TYPE] [NAME...] | TYPE/NAME...")
    add_output_flag(p)
    add_selector_flags(p)
    p.add_bool("--all-namespaces", "-A", help="List the objects across all namespaces")
    p.add_bool("--show-labels", help="Show all labels as the last column")
    p.add_argument("-L", "--label-columns", action="append", default=[],
                   help="Show these labels as columns (repeatable, or comma separated)")
    p.add_argument("--sort-by", default=None, help="Sort by this JSONPath expression")
    p.add_bool("--watch", "-w", help="After listing, watch for changes")
    p.add_bool("--watch-only", help="Watch for changes without listing first")
    p.add_bool("--no-headers", help="Do not print headers")
    p.add_bool("--ignore-not-found", help="Do not report objects that do not exist")
    p.add_bool("--show-managed-fields", help="Keep metadata.managedFields in yaml/json output")
    p.add_argument("-f", "--filename", action="append", default=[],
                   help="Get the objects named in these manifests")
    p.add_bool("--recursive", "-R", help="Read directories given with -f recursively")
    p.add_argument("--chunk-size", default=None, help="(accepted for compatibility; ignored)")


def add_output_flag(p: Parser) -> None:
    p.add_argument("-o", "--output", default="",
                   help="wide|yaml|json|name|jsonpath=...|custom-columns=...")


def add_selector_flags(p: Parser) -> None:
    p.add_argument("-l", "--selector", default=None,
                   help="Label selector (=, ==, !=, in, notin, key, !key)")
    p.add_argument("--field-selector", default=None,
                   help="Field selector (e.g. metadata.name=x,status.phase!=Running)")


def check_selectors(args: Any) -> None:
    """Parse selectors here, so a typo is a one-line error before any request."""
    from machinery import fields, labels
    from machinery.errors import BadRequest
    try:
        if args.selector:
            labels.parse(args.selector)
    except BadRequest as err:
        raise CLIError(f'invalid label selector "{args.selector}": {err.message}') from None
    try:
        if getattr(args, "field_selector", None):
            fields.parse(args.field_selector)
    except BadRequest as err:
        raise CLIError(f'invalid field selector "{args.field_selector}": {err.message}') from None


@dataclass
class Output:
    """A parsed -o value."""
    kind: str  # "table" | "wide" | "yaml" | "json" | "name" | "jsonpath" | "jsonpath-as-json" | "custom-columns"
    arg: str = ""
    template: Any = None
    columns: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def human(self) -> bool:
        return self.kind in ("table", "wide")


def parse_output(value: str) -> Output:
    if not value:
        return Output("table")
    kind, _, arg = value.partition("=")
    if kind not in FORMATS:
        raise CLIError(f'unable to match a printer suitable for the output format "{value}", '
                       f"allowed formats are: {','.join(FORMATS)}")
    if kind.endswith("-file"):
        try:
            with open(arg) as f:
                arg = f.read()
        except OSError as exc:
            raise CLIError(f"cannot read {arg}: {exc.strerror}") from None
        kind = kind[:-5]
    out = Output(kind, arg)
    if kind in ("jsonpath", "jsonpath-as-json"):
        from kubectl_lite.jsonpath import Template
        if not arg:
            raise CLIError("template format specified but no template given")
        out.template = Template(arg)
    elif kind == "custom-columns":
        from kubectl_lite.jsonpath import Template, relaxed
        if not arg.strip():
            raise CLIError("custom-columns format specified but no custom columns given")
        for spec in (s for s in arg.replace("\n", ",").split(",") if s.strip()):
            header, sep, expr = spec.strip().partition(":")
            if not sep:
                raise CLIError(f'unexpected custom-columns spec: {spec}, expected <header>:<json-path-expr>')
            out.columns.append((header, Template(relaxed(expr))))
    return out


@dataclass
class Block:
    """One kind's rows, as the server's Table gave them (or objects, for other formats)."""
    resource: Any
    columns: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)
    resource_version: str = ""


def run_get(args: Any, s: Any) -> int:
    check_selectors(args)
    out = parse_output(args.output)
    from kubectl_lite.session import ALL, TABLE
    targets = resolve_targets(args, s)
    if not targets:
        raise CLIError('You must specify the type of resource to get. Use "kubectl-lite '
                       'api-resources" for a complete list of supported resources.')
    watching = args.watch or args.watch_only
    if watching and any(len(names) > 1 for _, names in targets):
        raise CLIError("watch is only supported on individual resources and resource "
                       "collections, but several names were given")
    namespace = ALL if args.all_namespaces else None
    errors: list[str] = []
    blocks: list[Block] = []
    client = s.client
    from kubectl_lite.cli import api_error_message
    from machinery.errors import NotFound
    for r, names in targets:
        b = Block(r)
        ns = namespace if namespace is not None else s.namespace
        if args.watch_only:
            # Where to start watching: now (a watch without one would replay everything).
            got = client.list(r, namespace=ns, label_selector=args.selector,
                              field_selector=args.field_selector, limit=1)
            b.resource_version = got["metadata"].get("resourceVersion", "")
            blocks.append(b)
            continue
        with s.accepting(TABLE) if out.human else contextlib.nullcontext():
            if names:
                for name in names:
                    try:
                        got = client.get(r, name, namespace=s.namespace)
                    except NotFound as err:
                        if not args.ignore_not_found:
                            errors.append(api_error_message(err))
                        continue
                    add_answer(b, got, out.human)
            else:
                got = client.list(r, namespace=ns, label_selector=args.selector,
                                  field_selector=args.field_selector)
                add_answer(b, got, out.human)
        blocks.append(b)
    if args.sort_by:
        sort_blocks(blocks, args.sort_by, s, targets, namespace, args, out.human)
    single = len(targets) == 1 and len(targets[0][1]) == 1 and not args.filename
    printed = 0 if args.watch_only else print_blocks(blocks, out, args, single,
                                                     show_kind=watching and len(blocks) > 1)
    for e in errors:
        print(e, file=sys.stderr)
    if not printed and not errors and not args.watch_only and not any(n for _, n in targets):
        if args.all_namespaces or not any(r.namespaced for r, _ in targets):
            print("No resources found", file=sys.stderr)
        else:
            print(f"No resources found in {s.namespace} namespace.", file=sys.stderr)
    if watching:
        watch(s, blocks, targets, out, args, namespace)
    return 1 if errors else 0


def resolve_targets(args: Any, s: Any) -> list[tuple[Any, list[str]]]:
    targets: list[tuple[Any, list[str]]] = []
    for kind, names in split_type_name(args.args):
        first = ALL_CATEGORY if kind == "all" else ()
        targets += [(r, names) for r in s.resources_for(kind, first=first)]
    if getattr(args, "filename", None):
        from kubectl_lite.manifests import read_documents
        for doc in read_documents(args.filename, recursive=args.recursive):
            r = s.for_object(doc.obj, doc.source)
            name = (doc.obj.get("metadata") or {}).get("name", "")
            targets.append((r, [name]))
    return targets


def add_answer(b: Block, got: dict, human: bool) -> None:
    if human and got.get("kind") != "Table":
        got = _as_table(got)  # a server without Tables: NAME and AGE, as kubectl falls back to
    if human:
        if not b.columns:
            b.columns = got.get("columnDefinitions") or []
        b.rows.extend(got.get("rows") or [])
    elif got.get("kind", "").endswith("List") and "items" in got:
        for item in got["items"]:
            item.setdefault("apiVersion", b.resource.api_version)
            item.setdefault("kind", b.resource.kind)
        b.objects.extend(got["items"])
    else:
        b.objects.append(got)
    b.resource_version = (got.get("metadata") or {}).get("resourceVersion", b.resource_version)


def _as_table(got: dict) -> dict:
    from kubectl_lite.printers import age
    items = got["items"] if isinstance(got.get("items"), list) else [got]
    return {"kind": "Table", "metadata": got.get("metadata") or {},
            "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", "priority": 0},
                                  {"name": "Age", "type": "string", "format": "", "priority": 0}],
            "rows": [{"cells": [(i.get("metadata") or {}).get("name", ""),
                                age((i.get("metadata") or {}).get("creationTimestamp"))],
                      "object": {"metadata": i.get("metadata") or {}}} for i in items]}


# -- printing ----------------------------------------------------------------------------

def print_blocks(blocks: list[Block], out: Output, args: Any, single: bool, *,
                 show_kind: bool = False) -> int:
    if out.human:
        kinds = {b.resource for b in blocks if b.rows}
        show_kind = show_kind or len(kinds) > 1 or args.args[:1] == ["all"]
        printed = 0
        for b in blocks:
            if not b.rows:
                continue
            lines = TableLayout(b, out.kind == "wide", args, show_kind).lines(
                header=not args.no_headers)
            if printed:
                print()
            print_lines(tabwrite(lines))
            printed += len(b.rows)
        return printed
    objects = [o for b in blocks for o in b.objects]
    if out.kind == "name":
        by_obj = [(b.resource, o) for b in blocks for o in b.objects]
        print_lines(f"{qualified(r)}/{o['metadata']['name']}" for r, o in by_obj)
        return len(by_obj)
    if single and len(objects) == 1:
        data: Any = objects[0]
    elif single and not objects:
        return 0
    else:
        data = as_list(objects)
    print_objects(data, out, list_items=objects, managed_fields=args.show_managed_fields)
    return len(objects) or 1


def print_objects(data: Any, out: Output, *, list_items: list[dict],
                  managed_fields: bool = False) -> None:
    if out.kind in ("yaml", "json") and not managed_fields:
        from kubectl_lite.printers import strip_managed_fields
        strip_managed_fields(data)
    if out.kind == "yaml":
        sys.stdout.write(to_yaml(data))
    elif out.kind == "json":
        sys.stdout.write(to_json(data))
    elif out.kind == "jsonpath":
        sys.stdout.write(out.template.render(data))
    elif out.kind == "jsonpath-as-json":
        import json
        values = out.template.values(data)
        sys.stdout.write(json.dumps(values, indent=4, sort_keys=True) + "\n")
    elif out.kind == "custom-columns":
        items = list_items if data.get("kind") == "List" else [data]
        print_lines(tabwrite(custom_column_lines(items, out)))


def custom_column_lines(items: list[dict], out: Output, header: bool = True) -> list[str]:
    lines = ["\t".join(h for h, _ in out.columns)] if header else []
    for obj in items:
        cells = []
        for _, tpl in out.columns:
            values = tpl.values(obj)
            cells.append(",".join(go_format(v) if not isinstance(v, str) else v for v in values)
                         if values else "<none>")
        lines.append("\t".join(cells))
    return lines


class TableLayout:
    """Which columns a Table prints and how each row's cells read."""

    def __init__(self, b: Block, wide: bool, args: Any, show_kind: bool):
        self.b = b
        self.index = [i for i, c in enumerate(b.columns) if wide or not c.get("priority")]
        self.name_col = next((k for k, i in enumerate(self.index)
                              if b.columns[i].get("format") == "name"), None)
        self.namespaced = args.all_namespaces and b.resource.namespaced
        self.label_columns = [k for spec in args.label_columns for k in spec.split(",") if k]
        self.show_labels = args.show_labels
        self.prefix = f"{qualified(b.resource)}/" if show_kind else ""

    def header(self) -> list[str]:
        h = [self.b.columns[i]["name"].upper() for i in self.index]
        if self.namespaced:
            h.insert(0, "NAMESPACE")
        h += [k.rsplit("/", 1)[-1].upper() for k in self.label_columns]
        if self.show_labels:
            h.append("LABELS")
        return h

    def cells(self, row: dict) -> list[str]:
        raw = row.get("cells") or []
        cells = [cell_text(raw[i]) if i < len(raw) else "" for i in self.index]
        md = ((row.get("object") or {}).get("metadata")) or {}
        if self.name_col is not None and self.prefix:
            cells[self.name_col] = self.prefix + cells[self.name_col]
        if self.namespaced:
            cells.insert(0, md.get("namespace", ""))
        labels = md.get("labels") or {}
        cells += [labels.get(k, "") for k in self.label_columns]
        if self.show_labels:
            cells.append(format_labels(labels))
        return cells

    def lines(self, *, header: bool = True) -> list[str]:
        out = ["\t".join(self.header())] if header else []
        out += ["\t".join(self.cells(row)) for row in self.b.rows]
        return out


# -- sorting -----------------------------------------------------------------------------

def sort_key(value: Any) -> tuple:
    if value is None:
        return (0, 0, "")
    if isinstance(value, bool):
        return (1, int(value), "")
    if isinstance(value, (int, float)):
        return (2, value, "")
    if isinstance(value, str):
        from machinery import quantity
        try:
            return (2, float(quantity.parse_quantity(value)), "")
        except Exception:  # noqa: BLE001 - not a quantity: compare as text
            return (3, 0, value)
    return (4, 0, str(value))


def sort_blocks(blocks: list[Block], expr: str, s: Any, targets: list, namespace: Any,
                args: Any, human: bool) -> None:
    from kubectl_lite.jsonpath import Template, relaxed
    tpl = Template(relaxed(expr))

    def key(obj: dict) -> tuple:
        values = tpl.values(obj)
        return sort_key(values[0] if values else None)
    for b, (r, names) in zip(blocks, targets):
        if not human:
            b.objects.sort(key=key)
            continue
        # Table rows carry only metadata: fetch the objects to sort by any field.
        if names:
            objs = [s.client.get(r, n, namespace=s.namespace) for n in names]
        else:
            objs = s.client.list(r, namespace=namespace if namespace is not None else s.namespace,
                                 label_selector=args.selector,
                                 field_selector=args.field_selector).get("items", [])
        order = {((o["metadata"].get("namespace") or ""), o["metadata"]["name"]): key(o)
                 for o in objs}
        smallest = (0, 0, "")

        def row_key(row: dict, order: dict = order, smallest: tuple = smallest) -> tuple:
            md = (row.get("object") or {}).get("metadata") or {}
            return order.get((md.get("namespace") or "", md.get("name", "")), smallest)
        b.rows.sort(key=row_key)


# -- watching ----------------------------------------------------------------------------

class WatchPrinter:
    """Prints one kind's watch events: table rows aligned with what was printed before
    (widths only grow), or the objects in the chosen format."""

    def __init__(self, b: Block, out: Output, args: Any, show_kind: bool):
        self.b, self.out, self.args, self.show_kind = b, out, args, show_kind
        self.widths: list[int] = []
        if out.human and b.rows:
            lines = TableLayout(b, out.kind == "wide", args, show_kind).lines(header=not args.no_headers)
            cols = list(zip(*(ln.split("\t") for ln in lines)))
            self.widths = [max(6, max(len(c) + 3 for c in col)) for col in cols]
        self.printed_header = bool(b.rows) or args.no_headers

    def event(self, ev: Any) -> None:
        if ev.type not in ("ADDED", "MODIFIED", "DELETED"):
            return
        obj, b = ev.object, self.b
        if not self.out.human:
            print_watched(obj, b.resource, self.out)
            return
        if obj.get("kind") != "Table":
            obj = _as_table(obj)
        if not b.columns:
            b.columns = obj.get("columnDefinitions") or []
        rb = Block(b.resource, columns=b.columns, rows=obj.get("rows") or [])
        layout = TableLayout(rb, self.out.kind == "wide", self.args, self.show_kind)
        lines = [] if self.printed_header else [layout.header()]
        self.printed_header = True
        lines += [layout.cells(row) for row in rb.rows]
        for cells in lines:
            while len(self.widths) < len(cells):
                self.widths.append(6)
            for k, c in enumerate(cells[:-1]):
                self.widths[k] = max(self.widths[k], len(c) + 3)
        for cells in lines:
            text = "".join(c.ljust(self.widths[k]) for k, c in enumerate(cells[:-1])) + cells[-1]
            sys.stdout.write(text + "\n")
        sys.stdout.flush()


def watch(s: Any, blocks: list[Block], targets: list, out: Output, args: Any,
          namespace: Any) -> None:
    """Watch every listed kind at once (kubectl allows one; more is an extension), each
    from its own list's resourceVersion, printing events as they arrive."""
    import asyncio

    from client.watch import Watch
    from kubectl_lite.session import TABLE
    ns = namespace if namespace is not None else s.namespace
    show_kind = len(blocks) > 1

    async def pump(b: Block, names: list[str]) -> None:
        field_selector = args.field_selector
        if names:
            field_selector = ",".join(x for x in (f"metadata.name={names[0]}", field_selector) if x)
        printer = WatchPrinter(b, out, args, show_kind)
        async for ev in Watch(s.client.aio, b.resource, namespace=ns, label_selector=args.selector,
                              field_selector=field_selector, resource_version=b.resource_version):
            printer.event(ev)

    async def everything() -> None:
        await asyncio.gather(*(pump(b, names) for b, (_, names) in zip(blocks, targets)))
    with s.accepting(TABLE) if out.human else contextlib.nullcontext():
        s.client.run(everything())


def print_watched(obj: dict, r: Any, out: Output) -> None:
    obj.setdefault("apiVersion", r.api_version)
    obj.setdefault("kind", r.kind)
    if out.kind == "name":
        sys.stdout.write(f"{qualified(r)}/{obj['metadata']['name']}\n")
    elif out.kind == "yaml":
        from kubectl_lite.printers import strip_managed_fields
        sys.stdout.write("---\n" + to_yaml(strip_managed_fields(obj)))
    else:
        print_objects(obj, out, list_items=[obj])
        if out.kind == "jsonpath":
            sys.stdout.write("\n")
    sys.stdout.flush()
