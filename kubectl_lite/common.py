"""What every verb shares: the user-error type, flag helpers, kubectl's ways of naming
objects. Imports nothing heavy (the `version --client` path loads it)."""
from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn


class CLIError(Exception):
    """A user error: printed as `error: <message>` (one line), exit code 1."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message, self.code = message, code


class Parser(argparse.ArgumentParser):
    """argparse with kubectl's habits: errors are one `error:` line, boolean flags take
    `--flag`, `--flag=true` and `--flag=false`."""

    def __init__(self, *a, **kw):
        kw.setdefault("allow_abbrev", False)
        super().__init__(*a, **kw)
        self.bools: dict[str, str] = {}  # any spelling of a boolean flag -> its long name

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see {self.prog} --help)")

    def add_bool(self, *names: str, default: bool = False, help: str | None = None) -> None:
        long = next(n for n in names if n.startswith("--"))
        dest = long[2:].replace("-", "_")
        self.add_argument(*names, dest=dest, action="store_const", const=True, default=default,
                          help=help)
        self.add_argument(f"--no-{long[2:]}", dest=dest, action="store_const", const=False,
                          help=argparse.SUPPRESS)
        self.bools.update({n: long for n in names})

    def parse(self, argv: list[str]) -> argparse.Namespace:
        out = []
        for a in argv:
            flag, eq, value = a.partition("=")
            if eq and flag in self.bools:
                v = value.lower()
                if v not in ("true", "false", "1", "0", "t", "f"):
                    self.error(f'invalid argument "{value}" for "{flag}" flag: '
                               f'strconv.ParseBool: parsing "{value}": invalid syntax')
                long = self.bools[flag]
                a = long if v in ("true", "1", "t") else "--no-" + long[2:]
            out.append(a)
        return self.parse_intermixed_args(out)


def qualified(resource: Any) -> str:
    """`deployment.apps`, `pod`: how kubectl names a kind in `kind/name`."""
    kind = resource.kind.lower()
    return f"{kind}.{resource.group}" if resource.group else kind


def plural_qualified(resource: Any) -> str:
    """`deployments.apps`, `pods`: how the API names a resource in messages."""
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def warn(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr)


def split_type_name(args: list[str]) -> list[tuple[str, list[str]]]:
    """`KIND[,KIND] [NAME...]` or `KIND/NAME...` -> [(kind, [names])], in order.

    An empty name list means "every object of the kind" (subject to selectors)."""
    if not args:
        return []
    if any("/" in a for a in args):
        if not all("/" in a for a in args):
            raise CLIError("there is no need to specify a resource type as a separate argument "
                           "when passing arguments in resource/name form (e.g. 'kubectl-lite get "
                           "resource/<resource_name>' instead of 'kubectl-lite get resource "
                           "resource/<resource_name>'")
        out: list[tuple[str, list[str]]] = []
        for a in args:
            kind, _, name = a.partition("/")
            if not kind or not name:
                raise CLIError(f"arguments in resource/name form must have a single resource "
                               f"and name: {a!r}")
            if out and out[-1][0] == kind:
                out[-1][1].append(name)
            else:
                out.append((kind, [name]))
        return out
    kinds = [k for k in args[0].split(",") if k]
    return [(k, list(args[1:])) for k in kinds]
