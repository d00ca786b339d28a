"""Nodes: the kubelet registers its Node with a status already filled in, so, unlike
other kinds with a status subresource, a create keeps `.status` (Kubernetes' node
strategy does not reset it)."""
from __future__ import annotations

from apiserver.strategies.generic import Strategy


class NodeStrategy(Strategy):
    status_on_create = True

    def __init__(self) -> None:
        super().__init__(status_subresource=True)
