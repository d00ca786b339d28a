"""nftables through `nft -j -f -`: nft's JSON interface (libnftables-json(5)), Debian's
`nftables` package.

Guarantees
- Rules are built as nft's JSON expressions by the small builders here (`match`,
  `vmap`, `dnat`, ...), never as rule text, so nothing a Service says can be parsed as
  nft syntax (a name only ever lands in a string field).
- `Nft.run(commands)` sends one batch, which nft applies as one kernel transaction: all
  of it or nothing. A failure raises `NftError` with nft's message, and the table is as
  it was.
- Every command names `family`/`table` explicitly: nothing here can touch another table.

`nft` is run as a subprocess per batch; the list commands read JSON back.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import subprocess
from typing import Any

Expr = dict[str, Any]
Rule = list[Expr]


class NftError(Exception):
    """nft refused a batch (or could not be run); the message is nft's."""


# -- expressions ----------------------------------------------------------------------

def payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def fib(flag: str) -> Expr:
    """The address type of `flag` (saddr/daddr) as the routing table sees it."""
    return {"fib": {"result": "type", "flags": [flag]}}


def prefix(cidr: str) -> Expr:
    net = ipaddress.ip_network(cidr, strict=False)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def concat(*parts: Any) -> Expr:
    return {"concat": list(parts)}


def match(left: Any, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def jump(chain: str) -> Expr:
    return {"jump": {"target": chain}}


def goto(chain: str) -> Expr:
    return {"goto": {"target": chain}}


def vmap(key: Any, data: Any) -> Expr:
    """`key vmap data`: data is "@name" of a map, or a list of (value, verdict) pairs."""
    if not isinstance(data, str):
        data = {"set": [[k, v] for k, v in data]}
    return {"vmap": {"key": key, "data": data}}


def numgen_random(mod: int) -> Expr:
    return {"numgen": {"mode": "random", "mod": mod, "offset": 0}}


def dnat(addr: str, port: int) -> Expr:
    return {"dnat": {"addr": addr, "port": port}}


def update_set(set_name: str, elem: Any) -> Expr:
    return {"set": {"op": "update", "elem": elem, "set": f"@{set_name}"}}


def mark_or(mark: int) -> Expr:
    return {"mangle": {"key": meta("mark"), "value": {"|": [meta("mark"), mark]}}}


def mark_xor(mark: int) -> Expr:
    return {"mangle": {"key": meta("mark"), "value": {"^": [meta("mark"), mark]}}}


def mark_and(mark: int) -> Expr:
    return {"&": [meta("mark"), mark]}


def ct_state(*states: str) -> Expr:
    return match({"ct": {"key": "state"}}, list(states) if len(states) > 1 else states[0], "in")


MASQUERADE_FULLY_RANDOM: Expr = {"masquerade": {"flags": "fully-random"}}
RETURN: Expr = {"return": None}
DROP: Expr = {"drop": None}
REJECT_TCP_RESET: Expr = {"reject": {"type": "tcp reset"}}
REJECT_PORT_UNREACHABLE: Expr = {"reject": {"type": "icmp", "expr": "port-unreachable"}}


# -- commands -------------------------------------------------------------------------

class Table:
    """Command builders for one table; every command carries its family and name."""

    def __init__(self, family: str, name: str):
        self.family, self.name = family, name

    def _obj(self, **kw: Any) -> dict[str, Any]:
        return {"family": self.family, "table": self.name, **kw}

    def table(self, verb: str = "add") -> dict[str, Any]:
        return {verb: {"table": {"family": self.family, "name": self.name}}}

    def chain(self, verb: str, name: str, *, hook: str | None = None, type: str = "filter",
              prio: int = 0) -> dict[str, Any]:
        c = self._obj(name=name)
        if hook is not None and verb == "add":
            c.update(type=type, hook=hook, prio=prio, policy="accept")
        return {verb: {"chain": c}}

    def rule(self, chain: str, expr: Rule, *, comment: str | None = None) -> dict[str, Any]:
        r = self._obj(chain=chain, expr=expr)
        if comment:
            r["comment"] = comment
        return {"add": {"rule": r}}

    def map(self, verb: str, name: str, key_type: list[str] | None = None) -> dict[str, Any]:
        m = self._obj(name=name)
        if verb == "add":
            m.update(type=key_type if key_type and len(key_type) > 1 else (key_type or [""])[0],
                     map="verdict")
        return {verb: {"map": m}}

    def set(self, verb: str, name: str, key_type: str = "ipv4_addr", *,
            timeout: int | None = None) -> dict[str, Any]:
        """A set; with `timeout`, one the data path may `update` (nft 1.0.6's JSON parser
        takes no "dynamic" flag: the kernel adds it when a rule updates the set)."""
        s = self._obj(name=name)
        if verb == "add":
            s["type"] = key_type
            if timeout is not None:
                s.update(flags=["timeout"], timeout=timeout)
        return {verb: {"set": s}}

    def elements(self, verb: str, name: str, elems: list[Any]) -> dict[str, Any]:
        return {verb: {"element": self._obj(name=name, elem=elems)}}


# -- running ----------------------------------------------------------------------------

class Nft:
    """Runs batches with the `nft` binary (`/usr/sbin/nft` on Debian)."""

    def __init__(self, binary: str | None = None):
        self.binary = binary or shutil.which("nft") or "/usr/sbin/nft"

    async def _nft(self, *args: str, stdin: bytes | None = None) -> bytes:
        # `-f -` makes nft open /dev/stdin, which fails on the socket asyncio (uvloop)
        # would give it: the batch goes in a memfd, which can be opened again.
        fd = None
        if stdin is not None:
            fd = os.memfd_create("nft-batch", os.MFD_CLOEXEC)
            os.write(fd, stdin)
            os.lseek(fd, 0, os.SEEK_SET)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *args, stdin=fd if fd is not None else subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise NftError(f"cannot run {self.binary}: {e.strerror or e}") from None
        finally:
            if fd is not None:
                os.close(fd)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip() or f"nft exited with {proc.returncode}"
            raise NftError(text)
        return out

    async def run(self, commands: list[dict[str, Any]]) -> None:
        if not commands:
            return
        body = json.dumps({"nftables": commands}, separators=(",", ":")).encode()
        await self._nft("-j", "-f", "-", stdin=body)

    async def list(self, what: str, family: str, table: str | None = None) -> list[dict[str, Any]]:
        """`nft -j list <what> <family> [table]`: the objects nft prints (metainfo dropped).
        A missing table is an empty list."""
        args = ["-j", "list", what, family] + ([table] if table else [])
        try:
            out = await self._nft(*args)
        except NftError as e:
            if "No such file or directory" in str(e):
                return []
            raise
        return [o for o in json.loads(out or b'{"nftables": []}')["nftables"] if "metainfo" not in o]
