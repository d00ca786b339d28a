"""Service ClusterIP and NodePort allocation, as kube-apiserver's legacy allocators do
(pkg/registry/core/service/ipallocator, portallocator, allocator/storage).

Guarantees:
- Each range's state is one bitmap kept in etcd as a v1 RangeAllocation object
  (`/registry/ranges/serviceips`, `/registry/ranges/servicenodeports`: `range` and
  `data`, the bitmap's big-endian bytes as the Go big.Int gives them) and changed only by
  compare-and-swap on its revision, so two writers (two creates in one server, or two
  servers) never hand out the same value, and a restarted server sees what was taken.
- Within one process, changes to a range are serialized by a lock, so concurrent creates
  do not spend their time losing swaps to each other.
- A requested value out of range or taken is refused with Kubernetes' words
  (`AllocationError`); a value is otherwise picked at random, from the range's upper
  band first (the ServiceIPStaticSubrange split: requested values are expected in the
  lower band, so dynamic ones stay out of their way), then the lower band.
- `repair` brings a range in line with the values the stored Services hold, as the
  repair controllers (ipallocator/controller, portallocator/controller) do: values in
  use but not marked are marked at once; leaked values are freed once three passes in a
  row have found them leaked (the API server runs a pass at start and every 3 minutes),
  so an allocation whose Service is still being written is never freed under it.
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import random
from typing import Any, Awaitable, Callable

import orjson

from apiserver.storage.interface import Store
from machinery import errors

IP_RANGE_KEY = "/registry/ranges/serviceips"
PORT_RANGE_KEY = "/registry/ranges/servicenodeports"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PORT_RANGE = "30000-32767"
_CAS_ATTEMPTS = 1000
# The repair controllers' numRepairsBeforeLeakCleanup and interval.
LEAK_SIGHTINGS = 3
REPAIR_INTERVAL = 180.0


class AllocationError(Exception):
    """A requested value cannot be had; str() is Kubernetes' message."""


class RangeFull(AllocationError):
    pass


def _decode(data: str) -> int:
    raw = base64.b64decode(data) if data else b""
    return int.from_bytes(raw, "big")


def _encode(bits: int) -> str:
    return base64.b64encode(bits.to_bytes((bits.bit_length() + 7) // 8, "big")).decode()


class Bitmap:
    """A range of `size` offsets kept in etcd at `key` (see the module docstring).
    `band` is where the upper band starts: random picks try [band, size) first."""

    def __init__(self, store: Store, key: str, range_name: str, size: int, band: int):
        self.store, self.key, self.range_name = store, key, range_name
        self.size, self.band = size, band
        self._lock = asyncio.Lock()

    async def read(self) -> tuple[int, int]:
        """(the bitmap, its revision; 0 when no range object is stored yet)."""
        kv = await self.store.get(self.key)
        if kv is None:
            return 0, 0
        return _decode(orjson.loads(kv.value).get("data") or ""), kv.mod_revision

    async def _write(self, bits: int, revision: int) -> bool:
        obj = {"kind": "RangeAllocation", "apiVersion": "v1", "metadata": {},
               "range": self.range_name, "data": _encode(bits)}
        value = orjson.dumps(obj)
        if revision == 0:
            ok, _ = await self.store.create(self.key, value)
        else:
            ok, _ = await self.store.update(self.key, value, revision)
        return bool(ok)

    async def change(self, fn: Callable[[int], int], *, dry_run: bool = False) -> None:
        """Swap in fn(current bitmap) (fn may raise AllocationError); retried on a lost swap."""
        async with self._lock:
            for _ in range(_CAS_ATTEMPTS):
                bits, revision = await self.read()
                new = fn(bits)
                if dry_run or new == bits:
                    return
                if await self._write(new, revision):
                    return
                await asyncio.sleep(random.uniform(0, 0.01))  # another server won the swap
        raise AllocationError("cannot update the allocation: too many concurrent writers")

    def pick(self, bits: int) -> int:
        """A free offset at random, the upper band first; RangeFull if there is none."""
        for lo, hi in ((self.band, self.size), (0, self.band)):
            if hi <= lo:
                continue
            start = random.randrange(lo, hi)
            for off in (*range(start, hi), *range(lo, start)):
                if not bits >> off & 1:
                    return off
        raise RangeFull("range is full")


class IPAllocator:
    """ClusterIPs of --service-cluster-ip-range (IPv4; network and broadcast addresses
    are never handed out)."""

    def __init__(self, store: Store, cidr: str = DEFAULT_SERVICE_CIDR):
        try:
            self.net = ipaddress.ip_network(cidr, strict=False)
        except ValueError as e:
            raise ValueError(f"--service-cluster-ip-range: {e}") from None
        if self.net.version != 4 or self.net.prefixlen > 30:
            raise ValueError(f"--service-cluster-ip-range: {cidr} is not an IPv4 range of at "
                             f"least 4 addresses (only single-stack IPv4 is supported)")
        self.cidr = str(self.net)
        size = self.net.num_addresses - 2
        self.base = int(self.net.network_address) + 1
        # calculateRangeOffset: min(max(16, size/16), 256) addresses reserved for static picks.
        band = min(max(16, size // 16), 256) if size >= 16 else 0
        self.bitmap = Bitmap(store, IP_RANGE_KEY, self.cidr, size, band)

    def first(self) -> str:
        """The range's first address: the `kubernetes` Service's."""
        return str(ipaddress.ip_address(self.base))

    def offset(self, ip: str) -> int:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise AllocationError(f"the provided IP ({ip}) is not a valid IP") from None
        off = int(addr) - self.base
        if addr not in self.net or not 0 <= off < self.bitmap.size:
            raise AllocationError(f"the provided IP ({ip}) is not in the valid range. "
                                  f"The range of valid IPs is {self.cidr}")
        return off

    def contains(self, ip: str) -> bool:
        try:
            self.offset(ip)
        except AllocationError:
            return False
        return True

    async def allocate(self, ip: str, *, dry_run: bool = False) -> None:
        off = self.offset(ip)

        def take(bits: int) -> int:
            if bits >> off & 1:
                raise AllocationError("provided IP is already allocated")
            return bits | 1 << off
        await self.bitmap.change(take, dry_run=dry_run)

    async def allocate_next(self, *, dry_run: bool = False) -> str:
        got: list[int] = []

        def take(bits: int) -> int:
            got[:] = [self.bitmap.pick(bits)]
            return bits | 1 << got[0]
        await self.bitmap.change(take, dry_run=dry_run)
        return str(ipaddress.ip_address(self.base + got[0]))

    async def release(self, ip: str) -> None:
        if self.contains(ip):
            off = self.offset(ip)
            await self.bitmap.change(lambda bits: bits & ~(1 << off))

    async def allocated(self) -> set[str]:
        bits, _ = await self.bitmap.read()
        return {str(ipaddress.ip_address(self.base + i)) for i in range(bits.bit_length()) if bits >> i & 1}


class PortAllocator:
    """NodePorts of --service-node-port-range ("30000-32767", both ends included)."""

    def __init__(self, store: Store, port_range: str = DEFAULT_NODE_PORT_RANGE):
        lo, _, hi = port_range.partition("-")
        try:
            self.base, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--service-node-port-range: invalid range {port_range!r}") from None
        if not 0 < self.base <= last <= 65535:
            raise ValueError(f"--service-node-port-range: invalid range {port_range!r}")
        self.range_name = f"{self.base}-{last}"
        size = last - self.base + 1
        # calculateRangeOffset for ports: min(max(16, size/32), 128).
        band = min(max(16, size // 32), 128) if size >= 16 else 0
        self.bitmap = Bitmap(store, PORT_RANGE_KEY, self.range_name, size, band)

    def offset(self, port: int) -> int:
        off = port - self.base
        if not 0 <= off < self.bitmap.size:
            raise AllocationError(f"provided port is not in the valid range. "
                                  f"The range of valid ports is {self.range_name}")
        return off

    async def allocate(self, port: int, *, dry_run: bool = False) -> None:
        off = self.offset(port)

        def take(bits: int) -> int:
            if bits >> off & 1:
                raise AllocationError("provided port is already allocated")
            return bits | 1 << off
        await self.bitmap.change(take, dry_run=dry_run)

    async def allocate_next(self, *, dry_run: bool = False) -> int:
        got: list[int] = []

        def take(bits: int) -> int:
            got[:] = [self.bitmap.pick(bits)]
            return bits | 1 << got[0]
        await self.bitmap.change(take, dry_run=dry_run)
        return self.base + got[0]

    async def release(self, port: int) -> None:
        if 0 <= port - self.base < self.bitmap.size:
            off = port - self.base
            await self.bitmap.change(lambda bits: bits & ~(1 << off))

    async def allocated(self) -> set[int]:
        bits, _ = await self.bitmap.read()
        return {self.base + i for i in range(bits.bit_length()) if bits >> i & 1}


# -- the Service REST's use of the allocators (pkg/registry/core/service/storage/alloc.go) --

Undo = Callable[[], Awaitable[None]]


def needs_cluster_ip(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None"


def needs_node_ports(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    t = spec.get("type", "ClusterIP")
    return t == "NodePort" or (t == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True) is not False)


def has_node_ports(svc: dict) -> bool:
    """A type whose ports may hold node ports (requested ones are kept even where none
    are allocated: a LoadBalancer with allocateLoadBalancerNodePorts false)."""
    return (svc.get("spec") or {}).get("type", "ClusterIP") in ("NodePort", "LoadBalancer")


def needs_health_check(svc: dict) -> bool:
    """apiservice.NeedsHealthCheck: a LoadBalancer with externalTrafficPolicy Local gets
    a healthCheckNodePort from the node port range."""
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _internal(message: str) -> errors.InternalError:
    """errors.NewInternalError's shape."""
    return errors.InternalError(f"Internal error occurred: {message}", causes=[{"message": message}])


def _ports(svc: dict) -> list[dict]:
    return [p for p in (svc.get("spec") or {}).get("ports") or [] if isinstance(p, dict)]


def _node_ports(svc: dict) -> set[int]:
    return {p["nodePort"] for p in _ports(svc) if isinstance(p.get("nodePort"), int) and p["nodePort"]}


def _health_port(svc: dict) -> int:
    port = (svc.get("spec") or {}).get("healthCheckNodePort")
    return port if isinstance(port, int) and needs_health_check(svc) else 0


def _invalid(name: str, field: str, value: Any, detail: str) -> errors.Invalid:
    shown = orjson.dumps(value).decode()
    return errors.invalid("Service", name, [{"reason": "FieldValueInvalid", "field": field,
                                             "message": f"Invalid value: {shown}: {detail}"}])


class ServiceAllocations:
    """What a Service's create, update and delete allocate and release. Each `before_*`
    returns an `undo` that gives back what it took (called when the write is not stored)
    and, for updates, a `commit` that releases what the old object held and the new one
    does not (called once the write is stored), so a failed write leaks nothing and a
    stored one never loses a value another object holds."""

    def __init__(self, ips: IPAllocator, ports: PortAllocator):
        self.ips, self.ports = ips, ports
        # offset -> consecutive repair passes that found it allocated to no Service.
        self._leaks: dict[str, dict[int, int]] = {}

    @staticmethod
    def _families(svc: dict) -> None:
        """Single-stack IPv4 defaults and checks of ipFamilyPolicy and ipFamilies
        (initIPFamilyFields on a cluster with one IPv4 service range)."""
        spec, name = svc["spec"], svc["metadata"].get("name", "")
        if spec.get("type") == "ExternalName":
            spec.pop("ipFamilies", None)
            spec.pop("ipFamilyPolicy", None)
            return
        policy = spec.setdefault("ipFamilyPolicy", "SingleStack")
        if policy == "RequireDualStack":
            raise _invalid(name, "spec.ipFamilyPolicy", policy,
                           "this cluster is not configured for dual-stack services")
        families = spec.get("ipFamilies") or ["IPv4"]
        for i, fam in enumerate(families):
            if fam != "IPv4":
                raise _invalid(name, f"spec.ipFamilies[{i}]", fam, "not configured on this cluster")
        spec["ipFamilies"] = ["IPv4"]

    @staticmethod
    def normalize_cluster_ips(svc: dict) -> None:
        """clusterIP and clusterIPs[0] said once (normalizeClusterIPs on create)."""
        spec, name = svc["spec"], svc["metadata"].get("name", "")
        ip, ips = spec.get("clusterIP") or "", list(spec.get("clusterIPs") or [])
        if spec.get("type") == "ExternalName":
            return
        if not ip and ips:
            spec["clusterIP"] = ips[0]
        elif ip and not ips:
            spec["clusterIPs"] = [ip]
        elif ip and ips and ips[0] != ip:
            raise _invalid(name, "spec.clusterIPs", ips, "first value must match `clusterIP`")

    async def _take_ip(self, svc: dict, dry_run: bool) -> Undo | None:
        spec, name = svc["spec"], svc["metadata"].get("name", "")
        if not needs_cluster_ip(svc):
            if spec.get("clusterIP") == "None":
                spec["clusterIPs"] = ["None"]
            return None
        ip = spec.get("clusterIP") or ""
        if ip:
            try:
                await self.ips.allocate(ip, dry_run=dry_run)
            except AllocationError as e:
                raise _invalid(name, "spec.clusterIPs", spec.get("clusterIPs") or [ip],
                               f"failed to allocate IP {ip}: {e}") from None
        else:
            try:
                ip = await self.ips.allocate_next(dry_run=dry_run)
            except AllocationError as e:
                raise _internal(f"failed to allocate a serviceIP: {e}") from None
            spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
        taken = ip

        async def undo() -> None:
            if not dry_run:
                await self.ips.release(taken)
        return undo

    async def _take_health_port(self, svc: dict, taken: list[int], dry_run: bool) -> None:
        spec = svc["spec"]
        port = spec.get("healthCheckNodePort")
        if isinstance(port, int) and port:
            try:
                await self.ports.allocate(port, dry_run=dry_run)
            except AllocationError as e:
                raise _internal(f"failed to allocate requested HealthCheck NodePort {port}: {e}") from None
        else:
            try:
                port = spec["healthCheckNodePort"] = await self.ports.allocate_next(dry_run=dry_run)
            except AllocationError as e:
                raise _internal(f"failed to allocate a HealthCheck NodePort 0: {e}") from None
        taken.append(port)

    async def _take_ports(self, svc: dict, held: set[int], dry_run: bool, *,
                          health_held: bool = False) -> list[int]:
        """Allocate the node ports `svc` needs beyond `held` (what its stored version has
        already); -> the ports taken. On a refusal, what this call took is given back."""
        name, taken = svc["metadata"].get("name", ""), []
        try:
            if not has_node_ports(svc):
                for i, p in enumerate(_ports(svc)):
                    if p.get("nodePort") and svc["spec"].get("type", "ClusterIP") == "ClusterIP":
                        raise errors.invalid("Service", name, [{
                            "reason": "FieldValueForbidden", "field": f"spec.ports[{i}].nodePort",
                            "message": "Forbidden: may not be used when `type` is 'ClusterIP'"}])
                return taken
            mine = set(held)
            for i, p in enumerate(_ports(svc)):
                port = p.get("nodePort")
                if isinstance(port, int) and port:
                    if port in mine:
                        continue  # held already, or shared by a TCP and a UDP port
                    try:
                        await self.ports.allocate(port, dry_run=dry_run)
                    except AllocationError as e:
                        raise _invalid(name, f"spec.ports[{i}].nodePort", port, str(e)) from None
                elif not needs_node_ports(svc):
                    continue  # allocateLoadBalancerNodePorts: false; requested ones only
                else:
                    try:
                        port = p["nodePort"] = await self.ports.allocate_next(dry_run=dry_run)
                    except AllocationError as e:
                        raise _internal(f"failed to allocate a nodePort: {e}") from None
                mine.add(port)
                taken.append(port)
            if needs_health_check(svc) and not health_held:
                await self._take_health_port(svc, taken, dry_run)
            return taken
        except BaseException:
            if not dry_run:
                for port in taken:
                    await self.ports.release(port)
            raise

    def _undo(self, ip_undo: Undo | None, ports: list[int], dry_run: bool) -> Undo:
        async def undo() -> None:
            if ip_undo is not None:
                await ip_undo()
            if not dry_run:
                for port in ports:
                    await self.ports.release(port)
        return undo

    async def before_create(self, svc: dict, *, dry_run: bool = False) -> Undo:
        self.normalize_cluster_ips(svc)
        self._families(svc)
        ip_undo = await self._take_ip(svc, dry_run)
        try:
            ports = await self._take_ports(svc, set(), dry_run)
        except BaseException:
            if ip_undo is not None:
                await ip_undo()
            raise
        return self._undo(ip_undo, ports, dry_run)

    async def before_update(self, new: dict, old: dict, *, dry_run: bool = False) -> tuple[Undo, Undo]:
        """-> (undo, commit); see the class docstring."""
        self._families(new)
        ip_undo = None
        if needs_cluster_ip(new) and not needs_cluster_ip(old):
            self.normalize_cluster_ips(new)
            ip_undo = await self._take_ip(new, dry_run)
        elif not needs_cluster_ip(new) and new["spec"].get("clusterIP") == "None":
            new["spec"]["clusterIPs"] = ["None"]
        held = _node_ports(old) if has_node_ports(old) else set()
        old_health = _health_port(old)
        try:
            ports = await self._take_ports(new, held, dry_run,
                                           health_held=bool(old_health) and old_health == _health_port(new))
        except BaseException:
            if ip_undo is not None:
                await ip_undo()
            raise
        old_ip = (old.get("spec") or {}).get("clusterIP") if needs_cluster_ip(old) else None
        new_ip = new["spec"].get("clusterIP") if needs_cluster_ip(new) else None
        freed_ports = held - (_node_ports(new) if has_node_ports(new) else set())
        if old_health and old_health != _health_port(new):
            freed_ports.add(old_health)

        async def commit() -> None:
            if dry_run:
                return
            if old_ip and old_ip != new_ip:
                await self.ips.release(old_ip)
            for port in freed_ports:
                await self.ports.release(port)
        return self._undo(ip_undo, ports, dry_run), commit

    async def after_delete(self, svc: dict) -> None:
        if needs_cluster_ip(svc) and (ip := (svc.get("spec") or {}).get("clusterIP")):
            await self.ips.release(ip)
        if has_node_ports(svc):
            for port in _node_ports(svc) | ({_health_port(svc)} - {0}):
                await self.ports.release(port)

    async def repair(self, services: list[dict]) -> list[str]:
        """Bring both ranges in line with `services` (the repair controllers' RunOnce);
        -> one line per drift found. A value a Service holds is marked at once; a marked
        value no Service holds is freed only once it has been seen so on LEAK_SIGHTINGS
        passes in a row, as Kubernetes does: it may be an allocation whose Service is
        being written right now (by this or another server)."""
        notes: list[str] = []
        ip_bits = port_bits = 0
        for svc in services:
            md = svc.get("metadata") or {}
            who = f"{md.get('namespace')}/{md.get('name')}"
            ip = (svc.get("spec") or {}).get("clusterIP")
            if needs_cluster_ip(svc) and ip:
                if not self.ips.contains(ip):
                    notes.append(f"Cluster IP {ip} of service {who} is not within the service CIDR "
                                 f"{self.ips.cidr}; please recreate")
                else:
                    off = self.ips.offset(ip)
                    if ip_bits >> off & 1:
                        notes.append(f"Cluster IP {ip} of service {who} was assigned to multiple "
                                     f"services; please recreate")
                    ip_bits |= 1 << off
            if has_node_ports(svc):
                for port in _node_ports(svc) | ({_health_port(svc)} - {0}):
                    off = port - self.ports.base
                    if 0 <= off < self.ports.bitmap.size:
                        port_bits |= 1 << off
                    else:
                        notes.append(f"Port {port} of service {who} is not within the port range "
                                     f"{self.ports.range_name}; please recreate")
        for bitmap, want, what in ((self.ips.bitmap, ip_bits, "cluster IP"),
                                   (self.ports.bitmap, port_bits, "node port")):
            leaks = self._leaks.setdefault(what, {})
            seen: dict[int, int] = {}

            def fix(have: int, want: int = want, leaks: dict[int, int] = leaks,
                    seen: dict[int, int] = seen) -> int:
                seen.clear()
                keep = 0
                leaked = have & ~want
                for off in range(leaked.bit_length()):
                    if leaked >> off & 1:
                        seen[off] = leaks.get(off, 0) + 1
                        if seen[off] < LEAK_SIGHTINGS:
                            keep |= 1 << off
                return want | keep
            have, _ = await bitmap.read()
            await bitmap.change(fix)
            missing = bin(want & ~have).count("1")
            if missing:
                notes.append(f"marked {missing} {what}(s) in use but not allocated")
            freed = sum(1 for n in seen.values() if n >= LEAK_SIGHTINGS)
            if seen:
                notes.append(f"{len(seen)} {what}(s) allocated to no Service; {freed} freed "
                             f"(after {LEAK_SIGHTINGS} sightings)")
            leaks.clear()
            leaks.update((off, n) for off, n in seen.items() if n < LEAK_SIGHTINGS)
        return notes
