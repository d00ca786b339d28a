"""A table of name -> constructor: the one way the scheduler registers its plugins and
the controller manager its controllers (kube-scheduler's runtime.Registry, and
kube-controller-manager's table of controller descriptors).

Guarantees:
- A name is registered once: registering it again is a ValueError, never a silent
  replacement of the first constructor.
- Iteration is in registration order, so a table written in a meaningful order (the
  controllers' start order, the default plugins') reads back in that order.
- Looking up an unknown name raises `UnknownName` (a KeyError) whose message names
  what is known, the same wording for plugins and controllers.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, TypeVar

F = TypeVar("F")


class UnknownName(KeyError):
    def __str__(self) -> str:  # KeyError's str() would quote the whole message
        return str(self.args[0])


class Registry(Mapping[str, F]):
    """`Registry("plugin", [(NAME, constructor), ...])`; a read-only Mapping once built,
    plus `register` for adding entries one by one."""

    def __init__(self, what: str, entries: Iterable[tuple[str, F]] = ()):
        self.what = what
        self._entries: dict[str, F] = {}
        for name, constructor in entries:
            self.register(name, constructor)

    def register(self, name: str, constructor: F) -> F:
        if not name:
            raise ValueError(f"a {self.what} needs a name")
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = constructor
        return constructor

    def __getitem__(self, name: str) -> F:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f'"{name}" is not in the list of known {self.what}s: '
                              f'{", ".join(self._entries)}') from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"
