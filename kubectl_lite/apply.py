"""`apply`, `create`, `replace` and `delete`: the verbs that take manifests.

apply (client side) is kubectl's three-way merge: the manifest (modified), the live
object (current) and the manifest applied last time (original, kept in the
`kubectl.kubernetes.io/last-applied-configuration` annotation). The patch sets what the
manifest changes, deletes what the manifest dropped since last time, and leaves alone
what others set (a `scale`d replica count the manifest does not mention survives).
Kinds with Kubernetes patch strategies get a strategic merge patch, others a JSON merge
patch. A 409 Conflict re-reads the live object and recomputes, a few times.

All-or-nothing before sending: every document is read, validated and resolved to a
kind and namespace first; one invalid document means nothing is sent. Namespaces are
applied first, then everything else in file order.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from typing import Any

from kubectl_lite.common import CLIError, Parser, plural_qualified, qualified, split_type_name, warn

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# kubectl's default prune allowlist, as far as minik8s serves those kinds.
PRUNE_KINDS = ("configmaps", "endpoints", "namespaces", "pods", "secrets", "services",
               "deployments", "replicasets")


def _file_flags(p: Parser, required: bool = True) -> None:
    p.add_argument("-f", "--filename", action="append", default=[], required=required,
                   help="File, directory or - (stdin) with the manifests")
    p.add_bool("--recursive", "-R", help="Read directories given with -f recursively")


def _dry_run_flag(p: Parser) -> None:
    p.add_argument("--dry-run", nargs="?", const="client", default="none",
                   choices=("none", "client", "server"),
                   help="client: only print what would be sent; server: let the server "
                        "check it without persisting")


def _validate_flag(p: Parser) -> None:
    p.add_argument("--validate", default="strict",
                   help="strict|true (validate against the schemas, the default) or "
                        "false|ignore (send as is)")


def _validation_on(args: Any) -> bool:
    v = str(args.validate).lower()
    if v not in ("strict", "true", "warn", "false", "ignore"):
        raise CLIError(f'invalid --validate value "{args.validate}": use strict, true or false')
    return v in ("strict", "true", "warn")


def _suffix(dry_run: str) -> str:
    return {"client": " (dry run)", "server": " (server dry run)"}.get(dry_run, "")


def _out_flag(p: Parser) -> None:
    p.add_argument("-o", "--output", default="", help="name|yaml|json: print the results so")


def _print_result(args: Any, r: Any, obj: dict, verb: str) -> None:
    fmt = getattr(args, "output", "")
    if fmt == "name":
        print(f"{qualified(r)}/{obj['metadata']['name']}")
    elif fmt in ("yaml", "json"):
        from kubectl_lite.printers import to_json, to_yaml
        sys.stdout.write(to_yaml(obj) if fmt == "yaml" else to_json(obj))
    elif fmt:
        raise CLIError(f'unsupported output format "{fmt}": use name, yaml or json')
    else:
        print(f"{qualified(r)}/{obj['metadata']['name']} {verb}{_suffix(args.dry_run)}")


class Planned:
    """A document resolved to its kind and namespace, ready to send."""

    def __init__(self, doc: Any, r: Any, namespace: str):
        self.doc, self.r, self.namespace = doc, r, namespace
        self.obj = copy.deepcopy(doc.obj)
        md = self.obj.setdefault("metadata", {})
        if r.namespaced:
            md["namespace"] = namespace
        self.name = md.get("name", "")

    def path(self, *, name: bool = True) -> str:
        return self.r.path(namespace=self.namespace, name=self.name if name else None)


def plan(args: Any, s: Any, verb: str, *, need_name: bool = True) -> list[Planned]:
    from kubectl_lite.manifests import check, read_documents
    docs = read_documents(args.filename, recursive=args.recursive)
    check(docs, verb=verb, enabled=_validation_on(args) if hasattr(args, "validate") else True,
          need_name=need_name)
    planned = []
    for d in docs:
        r = s.for_object(d.obj, d.source)
        planned.append(Planned(d, r, s.namespace_of(r, d.obj)))
    # Namespaces first, so the objects of a namespace created by this apply find it.
    planned.sort(key=lambda p: p.r.kind != "Namespace" or p.r.group != "")
    return planned


def _report(err: Any, action: str, source: str) -> None:
    from kubectl_lite.cli import api_error_message
    print(api_error_message(err, prefix=f'error when {action} "{source}": '), file=sys.stderr)


# -- apply -------------------------------------------------------------------------------

def add_apply(p: Parser) -> None:
    _file_flags(p)
    _dry_run_flag(p)
    _validate_flag(p)
    _out_flag(p)
    p.add_bool("--server-side", help="Apply on the server (server-side apply, field ownership)")
    p.add_bool("--force-conflicts", help="With --server-side: take fields other managers own")
    p.add_argument("--field-manager", default=None, help="Name of the manager writing the fields")
    p.add_bool("--prune", help="Delete applied objects (matching -l) that the manifests no longer have")
    p.add_argument("-l", "--selector", default=None, help="Label selector for --prune")
    p.add_bool("--all", help="With --prune: consider every applied object, not only -l ones")


def run_apply(args: Any, s: Any) -> int:
    if args.prune and not (args.selector or args.all):
        raise CLIError("all resources selected for prune without explicitly passing --all. To "
                       "prune all resources, pass the --all flag. If you did not mean to prune "
                       "all resources, specify a label selector")
    if args.selector:
        from kubectl_lite.get import check_selectors
        check_selectors(args)
    planned = plan(args, s, "apply")
    failures = 0
    applied: set[tuple[str, str, str, str]] = set()
    namespaces: set[str] = set()
    from machinery.errors import APIError
    for p in planned:
        try:
            if args.server_side:
                obj, verb = server_side_apply(s, p, args), "serverside-applied"
            else:
                obj, verb = client_side_apply(s, p, args)
        except Failed as f:
            _report(f.err, f.action, p.doc.source)
            failures += 1
            continue
        except APIError as err:
            _report(err, "applying", p.doc.source)
            failures += 1
            continue
        applied.add((p.r.group, p.r.kind, p.namespace, obj["metadata"]["name"]))
        if p.r.namespaced:
            namespaces.add(p.namespace)
        _print_result(args, p.r, obj, verb)
    if args.prune and not failures:
        prune(s, args, applied, namespaces)
    return 1 if failures else 0


def modified_configuration(obj: dict) -> tuple[dict, str]:
    """The manifest with the last-applied annotation set, and that annotation's text
    (kubectl's GetModifiedConfiguration: the manifest without the annotation itself,
    as compact JSON with sorted keys and Go's HTML escaping, plus a newline)."""
    modified = copy.deepcopy(obj)
    md = modified.setdefault("metadata", {})
    annotations = dict(md.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    md["annotations"] = annotations
    from kubectl_lite.printers import go_json_escape
    text = go_json_escape(json.dumps(modified, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False)) + "\n"
    annotations[LAST_APPLIED] = text
    return modified, text


class Failed(Exception):
    """An API error and what was being done when it happened (for the message)."""

    def __init__(self, action: str, err: Exception):
        super().__init__(action)
        self.action, self.err = action, err


def client_side_apply(s: Any, p: Planned, args: Any, attempts: int = 5) -> tuple[dict, str]:
    from machinery.errors import APIError, Conflict, NotFound
    client = s.client
    modified, _ = modified_configuration(p.obj)
    manager = args.field_manager or "kubectl-client-side-apply"
    dry = {"dryRun": "All"} if args.dry_run == "server" else {}
    for attempt in range(attempts):
        try:
            current = client.request("GET", p.path())
        except NotFound:
            if args.dry_run == "client":
                return modified, "created"
            try:
                created = client.request("POST", p.path(name=False), body=modified, params={
                    "fieldManager": manager, "fieldValidation": "Strict", **dry})
            except APIError as err:
                raise Failed("creating", err) from None
            return created, "created"
        except APIError as err:
            raise Failed("retrieving current configuration of", err) from None
        original_text = ((current.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
        if original_text is None and attempt == 0:
            warn(f"resource {plural_qualified(p.r)}/{p.name} is missing the {LAST_APPLIED} "
                 "annotation which is required by kubectl-lite apply. kubectl-lite apply should "
                 "only be used on resources created declaratively by either kubectl-lite create "
                 "--save-config or kubectl-lite apply. The missing annotation will be patched "
                 "automatically.")
        try:
            original = json.loads(original_text) if original_text else None
        except ValueError:
            original = None
        patch, patch_type = three_way_patch(original, modified, current, p.r)
        if not patch:
            return current, "unchanged"
        if args.dry_run == "client":
            return current, "configured"
        try:
            from client.rest import PATCH_TYPES
            obj = client.request("PATCH", p.path(), body=patch,
                                 content_type=PATCH_TYPES[patch_type],
                                 params={"fieldManager": manager, "fieldValidation": "Strict", **dry})
        except Conflict as err:
            if attempt == attempts - 1:
                raise Failed("applying patch", err) from None
            time.sleep(0.05 * 2 ** attempt)
            continue
        except APIError as err:
            raise Failed("applying patch", err) from None
        return obj, "configured"
    raise AssertionError("unreachable")


def three_way_patch(original: dict | None, modified: dict, current: dict, r: Any) -> tuple[dict, str]:
    from machinery.patch import supports_strategic_merge, three_way_strategic_patch
    if supports_strategic_merge(r.kind, r.group):
        return three_way_strategic_patch(original, modified, current, r.kind, r.group), "strategic"
    changes = _merge_diff(current, modified, deletions=False)
    removals = _merge_diff(original or {}, modified, changes=False)
    return _merge(removals, changes), "merge"


def _merge_diff(a: dict, b: dict, *, changes: bool = True, deletions: bool = True) -> dict:
    """A JSON merge patch from a to b (only its changes, or only its deletions)."""
    out: dict = {}
    for k, bv in b.items():
        av = a.get(k, _MISSING)
        if isinstance(av, dict) and isinstance(bv, dict):
            sub = _merge_diff(av, bv, changes=changes, deletions=deletions)
            if sub:
                out[k] = sub
        elif changes and av != bv:
            out[k] = copy.deepcopy(bv)
    if deletions:
        out.update({k: None for k in a if k not in b})
    return out


_MISSING = object()


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def server_side_apply(s: Any, p: Planned, args: Any) -> dict:
    if args.dry_run == "client":
        raise CLIError("--dry-run=client cannot be used with --server-side")
    params = {"fieldManager": args.field_manager or "kubectl", "fieldValidation": "Strict",
              "force": "true" if args.force_conflicts else "false"}
    if args.dry_run == "server":
        params["dryRun"] = "All"
    return s.client.request("PATCH", p.path(), body=p.obj,
                            content_type="application/apply-patch+yaml", params=params)


def prune(s: Any, args: Any, applied: set, namespaces: set[str]) -> None:
    client = s.client
    for plural in PRUNE_KINDS:
        r = s.resource(plural)
        scopes = sorted(namespaces) if r.namespaced else [""]
        for ns in scopes:
            items = client.list(r, namespace=ns, label_selector=args.selector).get("items", [])
            for obj in items:
                md = obj["metadata"]
                if LAST_APPLIED not in (md.get("annotations") or {}):
                    continue  # never applied: not ours to prune
                if (r.group, r.kind, md.get("namespace", "") if r.namespaced else "",
                        md["name"]) in applied:
                    continue
                if args.dry_run != "client":
                    client.delete(r, md["name"], namespace=ns or None,
                                  propagation_policy="Background",
                                  dry_run=args.dry_run == "server")
                print(f"{qualified(r)}/{md['name']} pruned{_suffix(args.dry_run)}")


# -- create / replace --------------------------------------------------------------------

def add_create(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="namespace NAME",
                   help="(optional) `namespace NAME` creates a namespace")
    _file_flags(p, required=False)
    _dry_run_flag(p)
    _validate_flag(p)
    _out_flag(p)
    p.add_bool("--save-config", help="Record the manifest for later `apply`")
    p.add_argument("--field-manager", default="kubectl-create")


def run_create(args: Any, s: Any) -> int:
    from machinery.errors import APIError
    if args.args:
        if args.args[0] not in ("namespace", "ns") or len(args.args) != 2 or args.filename:
            raise CLIError("create takes -f FILE, or `namespace NAME`")
        from kubectl_lite.manifests import Document
        args.filename = []
        docs = [Document({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": args.args[1]}}, "<command line>", 1)]
        planned = [Planned(d, s.resource("namespaces"), "") for d in docs]
    elif not args.filename:
        raise CLIError("must specify one of -f and -k")
    else:
        planned = plan(args, s, "create", need_name=False)
    failures = 0
    for p in planned:
        obj = p.obj
        if args.save_config:
            obj, _ = modified_configuration(obj)
        if args.dry_run == "client":
            _print_result(args, p.r, obj if obj["metadata"].get("name") else
                          {**obj, "metadata": {**obj["metadata"], "name": obj["metadata"].get(
                              "generateName", "") + "<generated>"}}, "created")
            continue
        params = {"fieldManager": args.field_manager, "fieldValidation": "Strict"}
        if args.dry_run == "server":
            params["dryRun"] = "All"
        try:
            created = s.client.request("POST", p.path(name=False), body=obj, params=params)
        except APIError as err:
            _report(err, "creating", p.doc.source)
            failures += 1
            continue
        _print_result(args, p.r, created, "created")
    return 1 if failures else 0


def add_replace(p: Parser) -> None:
    _file_flags(p)
    _dry_run_flag(p)
    _validate_flag(p)
    _out_flag(p)
    p.add_bool("--force", help="Delete and re-create the objects")
    p.add_bool("--save-config", help="Record the manifest for later `apply`")
    p.add_argument("--grace-period", type=int, default=-1)
    p.add_argument("--timeout", default="60s", help="With --force: how long to wait for deletion")
    p.add_argument("--field-manager", default="kubectl-replace")


def run_replace(args: Any, s: Any) -> int:
    from machinery.errors import APIError, NotFound
    planned = plan(args, s, "replace")
    failures = 0
    params: dict[str, str] = {"fieldManager": args.field_manager, "fieldValidation": "Strict"}
    if args.dry_run == "server":
        params["dryRun"] = "All"
    for p in planned:
        obj = p.obj
        if args.save_config:
            obj, _ = modified_configuration(obj)
        if args.dry_run == "client":
            _print_result(args, p.r, obj, "replaced")
            continue
        try:
            if args.force:
                try:
                    gone = s.client.delete(p.r, p.name, namespace=p.namespace or None,
                                           grace_period_seconds=_grace(args))
                    print(f'{qualified(p.r)} "{p.name}" deleted')
                    wait_deleted(s, [(p.r, p.namespace, p.name, _uid(gone))], _seconds(args.timeout))
                except NotFound:
                    pass
                obj.get("metadata", {}).pop("resourceVersion", None)
                result = s.client.request("POST", p.path(name=False), body=obj, params=params)
            else:
                result = s.client.request("PUT", p.path(), body=obj, params=params)
        except APIError as err:
            _report(err, "replacing", p.doc.source)
            failures += 1
            continue
        _print_result(args, p.r, result, "replaced")
    return 1 if failures else 0


# -- delete ------------------------------------------------------------------------------

def add_delete(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE [NAME...] | TYPE/NAME...")
    _file_flags(p, required=False)
    from kubectl_lite.get import add_selector_flags
    add_selector_flags(p)
    p.add_bool("--all", help="Delete every object of the type in the namespace")
    p.add_bool("--all-namespaces", "-A", help="With --all or -l: in every namespace")
    p.add_argument("--grace-period", type=int, default=-1,
                   help="Seconds the object has to terminate (-1: its own default)")
    p.add_bool("--now", help="Same as --grace-period=1")
    p.add_bool("--force", help="With --grace-period=0: remove at once, without waiting")
    p.add_argument("--cascade", default="background",
                   help="background (default), foreground or orphan: what happens to dependents")
    p.add_bool("--wait", default=True, help="Wait until the objects are gone")
    p.add_argument("--timeout", default="0s", help="How long to wait (0: 60s plus the grace period)")
    p.add_bool("--ignore-not-found", help="Do not report objects that do not exist")
    _dry_run_flag(p)
    p.add_argument("-o", "--output", default="", help="name: print kind/name only")


_CASCADE = {"background": "Background", "true": "Background", "foreground": "Foreground",
            "orphan": "Orphan", "false": "Orphan"}


def _grace(args: Any) -> int | None:
    g = args.grace_period
    if getattr(args, "now", False):
        g = 1
    elif args.force and g < 0:
        g = 0
    return None if g < 0 else g


def _seconds(value: str) -> float:
    from kubectl_lite.session import _timeout
    if value in ("0", "0s", ""):
        return 0.0
    return _timeout(value)


def _uid(obj: Any) -> str:
    return ((obj or {}).get("metadata") or {}).get("uid", "") if isinstance(obj, dict) else ""


def run_delete(args: Any, s: Any) -> int:
    from kubectl_lite.cli import api_error_message
    from kubectl_lite.session import ALL
    from machinery.errors import APIError, NotFound
    policy = _CASCADE.get(str(args.cascade).lower())
    if policy is None:
        raise CLIError(f'invalid --cascade value "{args.cascade}": use background, foreground '
                       "or orphan")
    if args.selector or args.field_selector:
        from kubectl_lite.get import check_selectors
        check_selectors(args)
    grace = _grace(args)
    if grace == 0 and not args.force:
        grace = 1  # kubectl: --grace-period=0 without --force means 1 second
    if args.force and grace == 0:
        warn("Immediate deletion does not wait for confirmation that the running resource has "
             "been terminated. The resource may continue to run on the cluster indefinitely.")
    targets: list[tuple[Any, str, str]] = []  # (resource, namespace, name)
    if args.filename:
        if args.args:
            raise CLIError("give either -f or resources by argument, not both")
        from kubectl_lite.manifests import read_documents
        for d in read_documents(args.filename, recursive=args.recursive):
            r = s.for_object(d.obj, d.source)
            targets.append((r, s.namespace_of(r, d.obj), (d.obj.get("metadata") or {}).get("name", "")))
    elif not args.args:
        raise CLIError("You must provide one or more resources by argument or filename.")
    else:
        for kind, names in split_type_name(args.args):
            r = s.resource(kind)
            ns = s.namespace if r.namespaced else ""
            if names:
                if args.all or args.selector:
                    raise CLIError("name cannot be provided when a selector or --all is specified")
                targets += [(r, ns, n) for n in names]
            elif args.all or args.selector or args.field_selector:
                listed = s.client.list(r, namespace=ALL if args.all_namespaces else ns,
                                       label_selector=args.selector,
                                       field_selector=args.field_selector).get("items", [])
                targets += [(r, o["metadata"].get("namespace", ""), o["metadata"]["name"])
                            for o in listed]
            else:
                raise CLIError("resource(s) were provided, but no name was specified")
        if not targets:
            print("No resources found", file=sys.stderr)
            return 0
    failures = 0
    waiting: list[tuple[Any, str, str, str]] = []
    for r, ns, name in targets:
        try:
            obj = s.client.delete(r, name, namespace=ns or None, grace_period_seconds=grace,
                                  propagation_policy=policy, dry_run=args.dry_run == "server")
        except NotFound as err:
            if not args.ignore_not_found:
                print(api_error_message(err), file=sys.stderr)
                failures += 1
            continue
        except APIError as err:
            print(api_error_message(err), file=sys.stderr)
            failures += 1
            continue
        if args.output == "name":
            print(f"{qualified(r)}/{name}")
        else:
            word = "force deleted" if args.force and grace == 0 else "deleted"
            print(f'{qualified(r)} "{name}" {word}{_suffix(args.dry_run)}')
        if args.dry_run == "none":
            waiting.append((r, ns, name, _uid(obj)))
    sys.stdout.flush()
    if args.wait and waiting:
        timeout = _seconds(args.timeout) or 60.0 + max(grace or 0, 30)
        failures += wait_deleted(s, waiting, timeout)
    return 1 if failures else 0


def wait_deleted(s: Any, objs: list[tuple[Any, str, str, str]], timeout: float) -> int:
    """Poll until each object is gone (or replaced by a new incarnation: another uid).
    Returns how many were still there at the deadline (each reported)."""
    from machinery.errors import NotFound
    deadline = time.monotonic() + timeout
    pending = list(objs)
    delay = 0.02
    while pending:
        still = []
        for r, ns, name, uid in pending:
            try:
                obj = s.client.get(r, name, namespace=ns or None)
            except NotFound:
                continue
            if uid and obj["metadata"].get("uid") != uid:
                continue
            still.append((r, ns, name, uid))
        pending = still
        if not pending:
            break
        if time.monotonic() > deadline:
            for r, _, name, _ in pending:
                print(f"error: timed out waiting for the condition on {plural_qualified(r)}/{name}",
                      file=sys.stderr)
            return len(pending)
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    return 0
