"""The linearizability checker against histories whose verdict is known (pure; < 1 s).

Each bad history is a defect the chaos test exists to catch: a stale read, a lost
acknowledged write, an update accepted on a stale resourceVersion, a read of a value
nobody wrote. Each good one is a history a correct store can produce, some of them only
in one of the orders the overlap allows, or only if an operation of unknown outcome
took effect (or did not).
"""
from __future__ import annotations

import math

import pytest

from tests.chaos.linearizability import (Absent, Applied, CheckerGaveUp, Create, Delete, Failed, Get, Ok, Op,
                                         Unknown, Update, check, check_key, describe, resolve)

INF = math.inf


def op(call, ret, inp, out, key="a", client=0):
    return Op(key=key, call=call, ret=ret, input=inp, output=out, client=client)


GOOD = {
    "sequential create, update, get, delete": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 3, Update("10", "v2"), Ok("11", "v2")),
        op(4, 5, Get(), Ok("11", "v2")),
        op(6, 7, Delete("11"), Ok()),
        op(8, 9, Get(), Absent()),
    ],
    # Overlapping: the read saw v2, so the update must go first although it was called later.
    "a concurrent pair fine in one order": [
        op(0, 10, Get(), Ok("11", "v2")),
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 5, Update("10", "v2"), Ok("11", "v2")),
    ],
    "two creates race: one wins, one finds it exists": [
        op(0, 5, Create("x"), Failed("exists")),
        op(1, 4, Create("y"), Ok("7", "y")),
        op(6, 7, Get(), Ok("7", "y")),
    ],
    "two updates on one resourceVersion: one conflicts": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 6, Update("10", "a"), Ok("11", "a")),
        op(2, 6, Update("10", "b"), Failed("conflict")),
        op(7, 8, Get(), Ok("11", "a")),
    ],
    "a timed-out create that took effect": [
        op(0, INF, Create("v1"), Unknown()),
        op(5, 6, Get(), Ok("10", "v1")),
        op(7, 8, Update("10", "v2"), Ok("12", "v2")),
    ],
    "a timed-out update that did not take effect": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, INF, Update("10", "lost"), Unknown()),
        op(5, 6, Get(), Ok("10", "v1")),
    ],
    "a timed-out delete that took effect after a read": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, INF, Delete("10"), Unknown()),
        op(3, 4, Get(), Ok("10", "v1")),
        op(5, 6, Get(), Absent()),
        op(7, 8, Create("v2"), Ok("13", "v2")),
    ],
    "keys are independent": [
        op(0, 1, Create("x"), Ok("5", "x"), key="a"),
        op(0, 1, Create("x"), Ok("6", "x"), key="b"),
        op(2, 3, Delete("5"), Ok(), key="a"),
        op(4, 5, Get(), Ok("6", "x"), key="b"),
    ],
}

BAD = {
    "a stale read": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 3, Update("10", "v2"), Ok("11", "v2")),
        op(4, 5, Get(), Ok("10", "v1")),
    ],
    "a lost acknowledged write": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 3, Update("10", "v2"), Ok("11", "v2")),
        op(4, 5, Get(), Absent()),
    ],
    "an update that succeeded on a stale resourceVersion": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 3, Update("10", "v2"), Ok("11", "v2")),
        op(4, 5, Update("10", "v3"), Ok("12", "v3")),
    ],
    "two updates on one resourceVersion both succeed": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 6, Update("10", "a"), Ok("11", "a")),
        op(2, 6, Update("10", "b"), Ok("12", "b")),
    ],
    "a create acknowledged over an existing object": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 3, Create("v2"), Ok("11", "v2")),
    ],
    "a conflict on the current resourceVersion": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 3, Update("10", "v2"), Failed("conflict")),
    ],
    "a read of a value nobody wrote": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, 3, Get(), Ok("10", "zzz")),
    ],
    "a timed-out write seen, then unseen": [
        op(0, 1, Create("v1"), Ok("10", "v1")),
        op(2, INF, Update("10", "v2"), Unknown()),
        op(3, 4, Get(), Ok("11", "v2")),
        op(5, 6, Get(), Ok("10", "v1")),
    ],
    "a bad key among good ones": [
        op(0, 1, Create("x"), Ok("5", "x"), key="a"),
        op(0, 1, Create("x"), Ok("6", "x"), key="b"),
        op(2, 3, Get(), Absent(), key="b"),
    ],
}


@pytest.mark.parametrize("name", GOOD)
def test_accepts_linearizable_history(name):
    result = check(GOOD[name])
    assert result.ok, describe(result)


@pytest.mark.parametrize("name", BAD)
def test_refuses_history_that_is_not_linearizable(name):
    result = check(BAD[name])
    assert not result.ok
    assert "not linearizable" in describe(result)


def test_names_the_key_that_fails():
    assert check(BAD["a bad key among good ones"]).key == "b"


def test_stale_read_is_fine_when_it_overlaps_the_write():
    history = [op(0, 1, Create("v1"), Ok("10", "v1")),
               op(2, 5, Update("10", "v2"), Ok("11", "v2")),
               op(3, 4, Get(), Ok("10", "v1"))]
    assert check(history).ok


def test_long_concurrent_history_stays_small():
    # 20 clients, 400 operations on one key, all overlapping their neighbours, with
    # timeouts sprinkled in: the memoized search must not blow up.
    history, rv, value, t = [], 1, None, 0.0
    history.append(op(t, t + 1, Create("v0"), Ok("1", "v0"), client=0))
    value = "v0"
    for n in range(1, 400):
        t += 1
        if n % 7 == 0:
            history.append(op(t, INF, Update("999", f"lost{n}"), Unknown(), client=n % 20))
        elif n % 3 == 0:
            history.append(op(t, t + 3, Get(), Ok(str(rv), value), client=n % 20))
        else:
            history.append(op(t - 0.5, t + 0.5, Update(str(rv), f"v{n}"), Ok(str(rv + 1), f"v{n}"),
                              client=n % 20))
            rv, value = rv + 1, f"v{n}"
    result = check(history)
    assert result.ok, describe(result)


def test_gives_up_past_its_budget():
    history = [op(0, 100, Update("1", f"v{i}"), Failed("notfound"), client=i) for i in range(12)]
    history.append(op(101, 102, Get(), Ok("1", "x")))
    with pytest.raises(CheckerGaveUp):
        check_key(history, max_states=100)


def test_resolve_keeps_writes_the_store_recorded_and_drops_the_rest():
    history = [op(0, 1, Create("v1"), Ok("10", "v1")),
               op(2, INF, Update("10", "v2"), Unknown()),
               op(2, INF, Update("10", "never"), Unknown()),
               op(3, INF, Delete("11"), Unknown())]
    out = resolve(history, {"a": Applied(puts={"v1": "10", "v2": "11"}, deletes={"11"})})
    assert [(o.input, o.output, o.ret) for o in out[1:]] == [
        (Update("10", "v2"), Ok("11", "v2"), INF), (Delete("11"), Ok(), INF)]


def test_a_write_the_store_never_recorded_cannot_be_read():
    # The timed-out update never reached the store, yet a read returns its value: only
    # the store's history tells this apart from the update having taken effect.
    history = [op(0, 1, Create("v1"), Ok("10", "v1")),
               op(2, INF, Update("10", "v2"), Unknown()),
               op(5, 6, Get(), Ok("11", "v2"))]
    assert check(history).ok
    assert not check(resolve(history, {"a": Applied(puts={"v1": "10"})})).ok


def test_a_recorded_write_keeps_its_revision():
    history = [op(0, 1, Create("v1"), Ok("10", "v1")),
               op(2, INF, Update("10", "v2"), Unknown()),
               op(5, 6, Update("15", "v3"), Ok("16", "v3"))]
    assert check(history).ok
    assert not check(resolve(history, {"a": Applied(puts={"v1": "10", "v2": "11"})})).ok
