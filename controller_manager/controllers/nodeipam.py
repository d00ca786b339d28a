"""Node IPAM: every node gets its own pod CIDR out of the cluster CIDR (Kubernetes'
pkg/controller/nodeipam, the RangeAllocator).

What it guarantees
- With `allocate_node_cidrs` (the default here; Kubernetes' flag of that name is off
  by default, and so is the manager's), a node without `spec.podCIDR` is given the
  next free block of `node_cidr_mask_size` bits (default /24) from `cluster_cidr`
  (default, also when empty, 10.244.0.0/16), in `spec.podCIDR` and `spec.podCIDRs`.
  Without it the controller does nothing. No two nodes are ever given the same block: a
  block is taken in memory, synchronously, before the patch is sent, and given back
  only if the node is gone or the patch failed.
- Nodes that already have a pod CIDR keep it; before the first allocation every such
  CIDR in the cache is marked taken (so a restarted controller never hands out a
  block in use). A CIDR outside the cluster CIDR is left alone and not tracked.
- A deleted node's block is released. A node whose patch is not yet in the cache is
  given the same block again if it is looked at again, never a second one.
- When the cluster CIDR is exhausted the node gets a Warning event
  (CIDRNotAvailable) and is retried with backoff.

Candidates are taken round-robin after the last one given (as cidrset does), so a
released block is not reused at once.

Concurrency: one asyncio loop; taking a block has no await inside, so workers cannot
interleave between choosing a block and taking it.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from client.events import WARNING
from controller_manager.controller import Controller
from machinery import errors

log = logging.getLogger("minik8s.controller.nodeipam")

DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"


class CIDRSet:
    """The blocks of one size within a cluster CIDR, each free or taken by a node name."""

    def __init__(self, cluster_cidr: str, mask_size: int):
        self.net = ipaddress.ip_network(cluster_cidr, strict=True)
        if not self.net.prefixlen <= mask_size <= self.net.max_prefixlen:
            raise ValueError(f"node CIDR mask size {mask_size} does not fit cluster CIDR {cluster_cidr}")
        self.mask = mask_size
        self.size = 1 << (mask_size - self.net.prefixlen)
        self._step = 1 << (self.net.max_prefixlen - mask_size)
        self._base = int(self.net.network_address)
        self.owner: dict[int, str] = {}   # block index -> node name
        self._next = 0

    def cidr(self, index: int) -> str:
        addr = ipaddress.ip_address(self._base + index * self._step)
        return f"{addr}/{self.mask}"

    def indices(self, cidr: str) -> range | None:
        """The blocks `cidr` covers, or None when it is not inside the cluster CIDR."""
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if net.version != self.net.version or not net.subnet_of(self.net):
            return None
        first = (int(net.network_address) - self._base) // self._step
        count = max(1, 1 << max(0, self.mask - net.prefixlen))
        return range(first, first + count)

    def allocate(self, node: str) -> int | None:
        for i in range(self.size):
            index = (self._next + i) % self.size
            if index not in self.owner:
                self.owner[index] = node
                self._next = (index + 1) % self.size
                return index
        return None

    def occupy(self, node: str, blocks: range) -> bool:
        if any(self.owner.get(i, node) != node for i in blocks):
            return False
        for i in blocks:
            self.owner[i] = node
        return True

    def release(self, node: str, blocks: range) -> None:
        for i in blocks:
            if self.owner.get(i) == node:
                del self.owner[i]


@dataclass(frozen=True, kw_only=True)
class NodeIPAMOptions:
    allocate_node_cidrs: bool = True
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR  # "" also means the default
    node_cidr_mask_size: int = 24


class NodeIPAMController(Controller):
    name = "nodeipam"
    Options = NodeIPAMOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: NodeIPAMOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        options = options or NodeIPAMOptions()
        self.enabled = options.allocate_node_cidrs
        self.cidrs = CIDRSet(options.cluster_cidr or DEFAULT_CLUSTER_CIDR, options.node_cidr_mask_size)
        if self.enabled:
            self.nodes = self.watch(factory.informer("nodes"))
        else:
            log.info("%s: off (allocate_node_cidrs is false): nodes keep whatever podCIDR they have",
                     self.name)
        self._by_node: dict[str, tuple[str, range]] = {}  # node -> (cidr, blocks) we track
        self._initialized = False

    def _event(self, node: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(node, type_, reason, message)

    def _occupy(self, name: str, cidr: str) -> bool:
        blocks = self.cidrs.indices(cidr)
        if blocks is None:
            return False
        prior = self._by_node.get(name)
        if prior is not None and prior[0] == cidr:
            return True
        if not self.cidrs.occupy(name, blocks):
            log.warning("%s: node %s has pod CIDR %s, which overlaps another node's", self.name,
                        name, cidr)
            return False
        if prior is not None:
            self.cidrs.release(name, prior[1])
        self._by_node[name] = (cidr, blocks)
        return True

    def _release(self, name: str) -> None:
        prior = self._by_node.pop(name, None)
        if prior is not None:
            log.info("%s: node %s is gone; releasing %s", self.name, name, prior[0])
            self.cidrs.release(name, prior[1])

    async def reconcile(self, key) -> None:
        if not self.enabled:
            return
        if not self._initialized:
            # Whatever is in use already is taken before anything is handed out.
            for node in self.nodes.store.list():
                cidr = (node.get("spec") or {}).get("podCIDR")
                if cidr:
                    self._occupy(node["metadata"]["name"], cidr)
            self._initialized = True
        node = self.nodes.store.get(key)
        if node is None:
            self._release(key)
            return
        cidr = (node.get("spec") or {}).get("podCIDR")
        if cidr:
            self._occupy(key, cidr)
            return
        prior = self._by_node.get(key)
        fresh = prior is None
        if fresh:
            index = self.cidrs.allocate(key)
            if index is None:
                self._event(node, WARNING, "CIDRNotAvailable",
                            f"Node {key} status is now: CIDRNotAvailable")
                raise RuntimeError(f"no pod CIDR left in {self.cidrs.net} for node {key}")
            prior = self._by_node[key] = (self.cidrs.cidr(index), range(index, index + 1))
        cidr = prior[0]
        log.info("%s: assigning pod CIDR %s to node %s", self.name, cidr, key)
        try:
            # The cached resourceVersion as a precondition: if the node changed meanwhile
            # (someone else may have set a CIDR), look again rather than overwrite.
            await self.client.patch("nodes", key, {
                "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        except errors.NotFound:
            self._release(key)
            return
        except errors.Conflict:
            raise  # keep the block: the next look either uses it or finds another CIDR set
        except Exception:
            if fresh:
                self._release(key)
            self._event(node, WARNING, "CIDRAssignmentFailed",
                        f"Node {key} status is now: CIDRAssignmentFailed")
            raise
