"""Verbs that change one field or a few on live objects: `edit`, `patch`, `label`,
`annotate`, `scale`.

Each sends a patch rather than the whole object, so a concurrent status update by a
controller does not make the change fail; `scale --current-replicas` and
`--resource-version` are the exceptions, where the caller asks for a precondition.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterator

from kubectl_lite.common import CLIError, Parser, qualified, split_type_name


def _targets(s: Any, args: Any, resource_args: list[str]) -> Iterator[tuple[Any, dict]]:
    """(resource, live object) for TYPE NAME..., TYPE/NAME..., -f FILE, or TYPE with -l/--all."""
    from kubectl_lite.session import ALL
    if getattr(args, "filename", None):
        from kubectl_lite.manifests import read_documents
        for d in read_documents(args.filename, recursive=getattr(args, "recursive", False)):
            r = s.for_object(d.obj, d.source)
            name = (d.obj.get("metadata") or {}).get("name", "")
            yield r, s.client.get(r, name, namespace=s.namespace_of(r, d.obj) or None)
        return
    pairs = split_type_name(resource_args)
    if not pairs:
        raise CLIError("you must specify the type of resource and a name, "
                       "or -f FILE")
    for kind, names in pairs:
        r = s.resource(kind)
        if names:
            for n in names:
                yield r, s.client.get(r, n)
        elif getattr(args, "all", False) or getattr(args, "selector", None):
            ns = ALL if getattr(args, "all_namespaces", False) else None
            got = s.client.list(r, namespace=ns, label_selector=getattr(args, "selector", None))
            if not got.get("items"):
                print("No resources found", file=sys.stderr)
            for item in got.get("items", []):
                yield r, item
        else:
            raise CLIError(f"resource(s) were provided, but no name was specified for {kind}")


def _ns(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("namespace") or None


def _params(args: Any, manager: str) -> dict:
    params = {"fieldManager": getattr(args, "field_manager", None) or manager}
    if getattr(args, "dry_run", "none") == "server":
        params["dryRun"] = "All"
    return params


def _dry_flag(p: Parser) -> None:
    p.add_argument("--dry-run", nargs="?", const="client", default="none",
                   choices=("none", "client", "server"))


def _suffix(args: Any) -> str:
    return {"client": " (dry run)", "server": " (server dry run)"}.get(getattr(args, "dry_run", ""), "")


def _send_patch(s: Any, r: Any, obj: dict, patch: Any, patch_type: str, params: dict,
                subresource: str | None = None) -> dict:
    from client.rest import PATCH_TYPES
    path = r.path(namespace=_ns(obj) or "", name=obj["metadata"]["name"], subresource=subresource)
    return s.client.request("PATCH", path, body=patch, content_type=PATCH_TYPES[patch_type],
                            params=params)


# -- label / annotate --------------------------------------------------------------------

def _add_meta_flags(p: Parser, what: str) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE NAME KEY=VAL... KEY-...")
    p.add_bool("--overwrite", help=f"Allow replacing existing {what}")
    p.add_argument("-l", "--selector", default=None)
    p.add_bool("--all", help="Every object of the type in the namespace")
    p.add_bool("--all-namespaces", "-A")
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_bool("--recursive", "-R")
    p.add_argument("--resource-version", default=None,
                   help="Only change the object if it is still at this resourceVersion")
    p.add_argument("-o", "--output", default="")
    _dry_flag(p)


def add_label(p: Parser) -> None:
    _add_meta_flags(p, "labels")


def add_annotate(p: Parser) -> None:
    _add_meta_flags(p, "annotations")


def run_label(args: Any, s: Any) -> int:
    return _set_meta(args, s, "labels")


def run_annotate(args: Any, s: Any) -> int:
    return _set_meta(args, s, "annotations")


def _split_changes(args: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """Resources first, then changes: `key=value` sets, `key-` removes (a resource name
    never ends with '-')."""
    resources: list[str] = []
    sets: dict[str, str] = {}
    removes: list[str] = []
    for a in args:
        if "=" in a:
            k, _, v = a.partition("=")
            sets[k] = v
        elif a.endswith("-"):
            removes.append(a[:-1])
        elif sets or removes:
            raise CLIError(f"all resources must be specified before label changes: {a}")
        else:
            resources.append(a)
    return resources, sets, removes


def _set_meta(args: Any, s: Any, field: str) -> int:
    from machinery.labels import validate_label_key, validate_label_value
    resources, sets, removes = _split_changes(args.args)
    word = "label" if field == "labels" else "annotation"
    if not sets and not removes:
        raise CLIError(f"at least one {word} update is required")
    for k, v in sets.items():
        problem = validate_label_key(k) if field == "labels" else (
            validate_label_key(k) if k else "name part must be non-empty")
        if problem:
            raise CLIError(f'invalid {word} key "{k}": {problem}')
        if field == "labels":
            problem = validate_label_value(v)
            if problem:
                raise CLIError(f'invalid label value: "{k}={v}": {problem}')
    if set(sets) & set(removes):
        raise CLIError(f"can not both modify and remove the same {word}(s)")
    for r, obj in _targets(s, args, resources):
        current = dict((obj.get("metadata") or {}).get(field) or {})
        if not args.overwrite:
            clashes = [k for k, v in sets.items() if k in current and current[k] != v]
            if clashes:
                if field == "labels":
                    k = clashes[0]
                    raise CLIError(f"'{k}' already has a value ({current[k]}), and --overwrite is false")
                listed = ", ".join(f"'{k}' already has a value ({current[k]})" for k in clashes)
                raise CLIError(f"--overwrite is false but found the following declared "
                               f"annotation(s): {listed}")
        change: dict[str, Any] = {}
        for k in removes:
            if k in current:
                change[k] = None
            else:
                print(f'{word} "{k}" not found.')
        for k, v in sets.items():
            if current.get(k) != v:
                change[k] = v
        name = f"{qualified(r)}/{obj['metadata']['name']}"
        if not change:
            print(f"{name} not {word}ed" if field == "labels" else f"{name} annotated")
            continue
        patch: dict[str, Any] = {"metadata": {field: change}}
        if args.resource_version:
            patch["metadata"]["resourceVersion"] = args.resource_version
        if args.dry_run != "client":
            manager = "kubectl-label" if field == "labels" else "kubectl-annotate"
            _send_patch(s, r, obj, patch, "merge", _params(args, manager))
        if args.output == "name":
            print(name)
            continue
        removed_only = all(v is None for v in change.values())
        verb = ("unlabeled" if removed_only else "labeled") if field == "labels" else "annotated"
        print(f"{name} {verb}{_suffix(args)}")
    return 0


# -- patch -------------------------------------------------------------------------------

def add_patch(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE NAME | TYPE/NAME")
    p.add_argument("-p", "--patch", default=None, help="The patch (JSON or YAML)")
    p.add_argument("--patch-file", default=None, help="A file holding the patch")
    p.add_argument("--type", default="strategic", choices=("strategic", "merge", "json"))
    p.add_argument("--subresource", default=None, choices=("status", "scale"))
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_bool("--recursive", "-R")
    p.add_argument("-o", "--output", default="")
    p.add_argument("--field-manager", default=None)
    _dry_flag(p)


def _parse_patch(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    from machinery import yamlutil
    try:
        value = yamlutil.load(text)
    except yaml.YAMLError as exc:
        raise CLIError(f"unable to parse \"{text}\": {' '.join(str(exc).split())}") from None
    if not isinstance(value, (dict, list)):
        raise CLIError(f'unable to parse "{text}": the patch must be a JSON or YAML object')
    return value


def run_patch(args: Any, s: Any) -> int:
    if args.patch_file:
        try:
            with open(args.patch_file) as f:
                text = f.read()
        except OSError as exc:
            raise CLIError(f'cannot read "{args.patch_file}": {exc.strerror}') from None
    elif args.patch is not None:
        text = args.patch
    else:
        raise CLIError("must specify --patch or --patch-file containing the contents of the patch")
    patch = _parse_patch(text)
    if args.type == "json" and not isinstance(patch, list):
        raise CLIError("a JSON patch (--type json) must be a list of operations")
    if args.type != "json" and not isinstance(patch, dict):
        raise CLIError(f"a {args.type} merge patch must be an object")
    for r, obj in _targets(s, args, args.args):
        name = f"{qualified(r)}/{obj['metadata']['name']}"
        if args.dry_run == "client":
            # patched here, as kubectl patches locally: only kinds with patch strategies
            from machinery.patch import supports_strategic_merge
            if args.type == "strategic" and not supports_strategic_merge(r.kind, r.group):
                raise CLIError(f"strategic merge patch is not supported for {r.api_version}, "
                               f"Kind={r.kind} locally, try --type merge")
            print(f"{name} patched{_suffix(args)}")
            continue
        if args.subresource:
            before = s.client.request("GET", r.path(namespace=_ns(obj) or "", name=obj["metadata"]["name"],
                                                    subresource=args.subresource))
        else:
            before = obj
        from machinery.errors import UnsupportedMediaType
        try:
            after = _send_patch(s, r, obj, patch, args.type, _params(args, "kubectl-patch"),
                                subresource=args.subresource)
        except UnsupportedMediaType as err:
            if args.type != "strategic":
                raise
            # The server has no strategic merge for the kind (a custom resource): kubectl's words.
            raise CLIError(f"application/strategic-merge-patch+json is not supported by "
                           f"{r.api_version}, Kind={r.kind}: {err.message}") from None
        if args.output:
            _print_obj(args.output, r, after)
            continue
        same = before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion") \
            and args.dry_run == "none"
        print(f"{name} patched{' (no change)' if same else ''}{_suffix(args)}")
    return 0


def _print_obj(fmt: str, r: Any, obj: dict) -> None:
    from kubectl_lite.printers import to_json, to_yaml
    if fmt == "name":
        print(f"{qualified(r)}/{obj['metadata']['name']}")
    elif fmt == "yaml":
        sys.stdout.write(to_yaml(obj))
    elif fmt == "json":
        sys.stdout.write(to_json(obj))
    else:
        raise CLIError(f'unsupported output format "{fmt}": use name, yaml or json')


# -- scale -------------------------------------------------------------------------------

def add_scale(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE NAME | TYPE/NAME")
    p.add_argument("--replicas", type=int, default=None, help="The new number of replicas")
    p.add_argument("--current-replicas", type=int, default=-1,
                   help="Only scale if the current number of replicas is this")
    p.add_argument("--resource-version", default=None,
                   help="Only scale if the object is still at this resourceVersion")
    p.add_argument("-l", "--selector", default=None)
    p.add_bool("--all")
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_bool("--recursive", "-R")
    p.add_argument("-o", "--output", default="")
    _dry_flag(p)


def run_scale(args: Any, s: Any) -> int:
    if args.replicas is None:
        raise CLIError('required flag(s) "replicas" not set')
    if args.replicas < 0:
        raise CLIError("The --replicas=COUNT flag is required, and COUNT must be greater than or "
                       "equal to 0")
    for r, obj in _targets(s, args, args.args):
        if "scale" not in r.subresources:
            raise CLIError(f"cannot scale {r.plural}: it has no scale subresource")
        name = f"{qualified(r)}/{obj['metadata']['name']}"
        path = r.path(namespace=_ns(obj) or "", name=obj["metadata"]["name"], subresource="scale")
        params = _params(args, "kubectl-scale")
        if args.current_replicas >= 0 or args.resource_version:
            scale = s.client.request("GET", path)
            have = (scale.get("spec") or {}).get("replicas", 0)
            if args.current_replicas >= 0 and have != args.current_replicas:
                raise CLIError(f"Expected replicas to be {args.current_replicas}, was {have}")
            rv = scale["metadata"].get("resourceVersion")
            if args.resource_version and rv != args.resource_version:
                raise CLIError(f"Expected resource version to be {args.resource_version}, was {rv}")
            if args.dry_run != "client":
                scale["spec"] = {**(scale.get("spec") or {}), "replicas": args.replicas}
                s.client.request("PUT", path, body=scale, params=params)
        elif args.dry_run != "client":
            s.client.request("PATCH", path, body={"spec": {"replicas": args.replicas}},
                             content_type="application/merge-patch+json", params=params)
        print(name if args.output == "name" else f"{name} scaled{_suffix(args)}")
    return 0


# -- edit --------------------------------------------------------------------------------

EDIT_HEADER = """\
# Please edit the object below. Lines beginning with a '#' will be ignored,
# and an empty file will abort the edit. If an error occurs while saving this file will be
# reopened with the relevant failures.
#
"""


def add_edit(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE NAME | TYPE/NAME")
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_bool("--recursive", "-R")
    p.add_argument("-o", "--output", default="yaml", choices=("yaml", "json"),
                   help="The format to edit in")
    p.add_argument("--validate", default="strict")
    p.add_argument("--field-manager", default=None)


def editor_command() -> list[str]:
    import shlex
    for var in ("KUBE_EDITOR", "EDITOR"):
        if os.environ.get(var):
            return shlex.split(os.environ[var])
    return ["vi"]


def run_edit(args: Any, s: Any) -> int:
    import subprocess
    import tempfile
    from kubectl_lite.printers import to_json, to_yaml
    status = 0
    for r, obj in _targets(s, args, args.args):
        name = f"{qualified(r)}/{obj['metadata']['name']}"
        text = to_yaml(obj) if args.output == "yaml" else to_json(obj)
        fd, path = tempfile.mkstemp(prefix="kubectl-lite-edit-", suffix="." + args.output)
        with os.fdopen(fd, "w") as f:
            f.write(EDIT_HEADER + text)
        cmd = editor_command()
        try:
            rc = subprocess.call([*cmd, path])
        except OSError as exc:
            raise CLIError(f'there was a problem with the editor "{" ".join(cmd)}": '
                           f"{exc.strerror}") from None
        if rc != 0:
            raise CLIError(f'there was a problem with the editor "{" ".join(cmd)}" '
                           f"(exit status {rc}); your edits are in {path}")
        with open(path) as f:
            edited_text = "".join(line for line in f if not line.lstrip().startswith("#"))
        if not edited_text.strip():
            os.unlink(path)
            print("Edit cancelled, no changes made.")
            continue
        from kubectl_lite.manifests import parse_text, Validator
        try:
            docs = parse_text(edited_text, path)
        except CLIError as err:
            raise CLIError(f"{err.message}\nA copy of your changes has been stored to \"{path}\"") from None
        if len(docs) != 1:
            raise CLIError(f'the edited file must hold exactly one object; your edits are in "{path}"')
        edited = docs[0].obj
        if edited == obj:
            os.unlink(path)
            print("Edit cancelled, no changes made.")
            continue
        for key in ("apiVersion", "kind"):
            if edited.get(key) != obj.get(key):
                raise CLIError(f'At least one of apiVersion, kind and name was changed; your '
                               f'edits are in "{path}"')
        if (edited.get("metadata") or {}).get("name") != obj["metadata"]["name"]:
            raise CLIError(f'At least one of apiVersion, kind and name was changed; your edits '
                           f'are in "{path}"')
        if str(args.validate).lower() not in ("false", "ignore"):
            problems = Validator().problems(edited)
            if problems:
                raise CLIError(f"{name} is invalid: {problems[0]}" +
                               "".join(f"\n* {p}" for p in problems[1:]) +
                               f'\nA copy of your changes has been stored to "{path}"')
        from kubectl_lite.apply import three_way_patch
        patch, ptype = three_way_patch(obj, edited, obj, r)
        if not patch:
            os.unlink(path)
            print("Edit cancelled, no changes made.")
            continue
        from machinery.errors import APIError
        try:
            _send_patch(s, r, obj, patch, ptype, _params(args, "kubectl-edit"))
        except APIError as err:
            from kubectl_lite.cli import api_error_message
            print(api_error_message(err), file=sys.stderr)
            print(f'error: A copy of your changes has been stored to "{path}"', file=sys.stderr)
            status = 1
            continue
        os.unlink(path)
        print(f"{name} edited")
    return status
