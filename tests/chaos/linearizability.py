"""A linearizability checker for a Kubernetes object store, in porcupine's manner.

No well-kept Python port of porcupine (anishathalye/porcupine, the checker etcd's
robustness tests use) exists on PyPI, so this is a small one: Wing & Gong's search with
Lowe's memoization, over the model of one object kept by name.

The history is a list of `Op`s, each with the client's call time, its return time
(`math.inf` when the outcome is unknown: a timeout, a dropped connection, a 5xx), an
input (`Create(value)`, `Update(expected_rv, value)`, `Delete(expected_rv)`, `Get()`)
and an output (`Ok(rv, value)`, `Failed(reason)` with reason "exists", "conflict" or
"notfound", `Absent()` for a Get of nothing, or `Unknown()`).

What `check` guarantees:
- It answers True exactly when there is a total order of the operations that respects
  real time (an operation that returned before another was called comes first) and in
  which the model, started from "absent" (or `initial`), gives every known output.
- An operation of unknown outcome may have taken effect at any moment after its call,
  or never (porcupine's treatment of a return time of infinity): the search may place
  it anywhere after its call, and need not place it at all. An operation with a known
  output and a return time of infinity (see `resolve`) must be placed, anywhere after
  its call.
- `resolve` narrows unknown outcomes with the store's own history, as etcd's robustness
  tests patch theirs with watch events: a write whose value the store recorded did take
  effect (at that revision), one whose value it never recorded did not. Without that,
  a few dozen timeouts on one key make the search exponential.
- The history is partitioned per key (P-compositionality: a history is linearizable
  exactly when each object's sub-history is), so each search is over one object's
  operations only. Each search is bounded by `max_states`; a search that exceeds it
  raises `CheckerGaveUp` rather than answering either way.

The model: the state is None (absent) or (resourceVersion, value). Create fails with
"exists" unless absent; Update and Delete fail with "notfound" when absent and
"conflict" when the expected resourceVersion differs; a success reports the new
resourceVersion. A write of unknown outcome that took effect leaves a state whose
resourceVersion nobody saw: it matches any precondition until an operation reports it.

Pure and synchronous; no I/O.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

UNSEEN = "?"  # the resourceVersion of a state made by a write of unknown outcome


@dataclass(frozen=True)
class Create:
    value: Any


@dataclass(frozen=True)
class Update:
    expected_rv: str
    value: Any


@dataclass(frozen=True)
class Delete:
    expected_rv: str | None = None


@dataclass(frozen=True)
class Get:
    pass


@dataclass(frozen=True)
class Ok:
    rv: str | None = None
    value: Any = None


@dataclass(frozen=True)
class Failed:
    reason: str  # "exists" | "conflict" | "notfound"


@dataclass(frozen=True)
class Absent:
    pass


@dataclass(frozen=True)
class Unknown:
    pass


Input = Union[Create, Update, Delete, Get]
Output = Union[Ok, Failed, Absent, Unknown]
State = Union[None, tuple[str, Any]]


@dataclass
class Op:
    key: str
    call: float
    ret: float
    input: Input
    output: Output
    client: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def unknown(self) -> bool:
        return isinstance(self.output, Unknown)


class CheckerGaveUp(Exception):
    pass


@dataclass
class Result:
    ok: bool
    key: str | None = None          # the first key whose history is not linearizable
    longest: list[Op] = field(default_factory=list)  # the longest prefix order found for it
    states: int = 0

    def __bool__(self) -> bool:
        return self.ok


def _rv_matches(have: str, want: str | None) -> bool:
    return want is None or have == UNSEEN or have == want


def step(state: State, inp: Input, out: Output) -> list[State]:
    """The states the model may be in after `inp` answered `out` in `state`; empty when
    that answer is impossible there."""
    unknown = isinstance(out, Unknown)
    if isinstance(inp, Get):
        if isinstance(out, Absent):
            return [None] if state is None else []
        if isinstance(out, Ok) and state is not None and state[1] == out.value and \
                _rv_matches(state[0], out.rv):
            return [(out.rv or state[0], state[1])]
        return []
    if isinstance(inp, Create):
        if isinstance(out, Ok) or unknown:
            return [(UNSEEN if unknown else (out.rv or UNSEEN), inp.value)] if state is None else []
        if isinstance(out, Failed) and out.reason == "exists":
            return [state] if state is not None else []
        return []
    if isinstance(inp, (Update, Delete)):
        if isinstance(out, Failed):
            if out.reason == "notfound":
                return [None] if state is None else []
            if out.reason == "conflict":
                # An unseen resourceVersion may differ from the expected one, or not.
                ok = state is not None and (state[0] == UNSEEN or state[0] != inp.expected_rv)
                return [state] if ok else []
            return []
        if state is None or not _rv_matches(state[0], inp.expected_rv):
            return []
        if isinstance(inp, Delete):
            return [None]
        return [(UNSEEN if unknown or not getattr(out, "rv", None) else out.rv, inp.value)]
    raise TypeError(f"unknown operation {inp!r}")


def check_key(ops: list[Op], *, initial: State = None, max_states: int = 2_000_000) -> Result:
    """Whether one object's history is linearizable (see the module docstring)."""
    key = ops[0].key if ops else None
    ops = sorted(ops, key=lambda o: o.call)
    known = [i for i, o in enumerate(ops) if not o.unknown]
    all_known = 0
    for i in known:
        all_known |= 1 << i
    # Depth-first search over (set of placed operations, model state). An operation may
    # be placed next when it was called before every unplaced known operation returned.
    seen: set[tuple[int, State]] = set()
    # An order is kept as a chain (last index, depth, rest) so pushes share their prefix.
    Chain = Union[None, tuple[int, int, Any]]
    stack: list[tuple[int, State, Chain]] = [(0, initial, None)]
    best: Chain = None
    while stack:
        done, state, order = stack.pop()
        if done & all_known == all_known:
            return Result(True, key, states=len(seen))
        if (done, state) in seen:
            continue
        seen.add((done, state))
        if len(seen) > max_states:
            raise CheckerGaveUp(f"key {key}: more than {max_states} states")
        if order is not None and (best is None or order[1] > best[1]):
            best = order
        horizon = min(ops[i].ret for i in known if not done >> i & 1)
        for i, op in enumerate(ops):
            if op.call > horizon:
                break
            if done >> i & 1:
                continue
            for nxt in step(state, op.input, op.output):
                stack.append((done | 1 << i, nxt, (i, 1 + (order[1] if order else 0), order)))
    longest = []
    while best is not None:
        longest.append(ops[best[0]])
        best = best[2]
    return Result(False, key, longest=longest[::-1], states=len(seen))


@dataclass
class Applied:
    """What the store's own history says happened to one key: the revision each written
    value was stored at, and the resourceVersions of the states that were deleted."""
    puts: dict[Any, str] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)


def resolve(history: Iterable[Op], applied: dict[str, Applied]) -> list[Op]:
    """The history with each unknown-outcome write either given the outcome the store
    recorded (it took effect: a known output, still returning at infinity) or dropped
    (it never did). Values written must be unique for this to hold. An unknown delete
    is credited with a recorded deletion of its expected resourceVersion that no
    acknowledged delete accounts for."""
    history = list(history)
    claimed = {(o.key, o.input.expected_rv) for o in history
               if isinstance(o.input, Delete) and isinstance(o.output, Ok)}
    out = []
    for o in history:
        if not o.unknown or isinstance(o.input, Get):
            out.append(o)
            continue
        done = applied.get(o.key, Applied())
        if isinstance(o.input, Delete):
            mark = (o.key, o.input.expected_rv)
            if o.input.expected_rv is None:
                out.append(o)
            elif o.input.expected_rv in done.deletes and mark not in claimed:
                claimed.add(mark)
                out.append(Op(o.key, o.call, math.inf, o.input, Ok(), o.client, o.meta))
        elif o.input.value in done.puts:
            out.append(Op(o.key, o.call, math.inf, o.input, Ok(done.puts[o.input.value], o.input.value),
                          o.client, o.meta))
    return out


def check(history: Iterable[Op], *, max_states: int = 2_000_000) -> Result:
    """Whether the whole history is linearizable: each key's sub-history is."""
    per_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        per_key[op.key].append(op)
    states = 0
    for key in sorted(per_key):
        r = check_key(per_key[key], max_states=max_states)
        states += r.states
        if not r.ok:
            return r
    return Result(True, states=states)


def describe(result: Result) -> str:
    """A short account of a failed check: the longest order the search could build."""
    if result.ok:
        return "linearizable"
    lines = [f"key {result.key}: not linearizable; the longest valid order found:"]
    lines += [f"  [{o.call:.3f}, {o.ret:.3f}] client {o.client}: {o.input} -> {o.output}"
              for o in result.longest]
    return "\n".join(lines)
