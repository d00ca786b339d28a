"""ImageLocality: favour nodes that already have the pod's images (node.status.images),
weighted by image size and by how widely the image is spread across nodes (so one node
holding a rare image does not attract every pod). Scores 0..100 directly."""
from __future__ import annotations

from scheduler.framework import NODE, ActionType, ClusterEvent, CycleState
from scheduler.types import NodeInfo, PodInfo, normalized_image_name

NAME = "ImageLocality"
MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB


def calculate_priority(sum_scores: int, num_containers: int) -> int:
    max_threshold = MAX_CONTAINER_THRESHOLD * num_containers
    sum_scores = min(max(sum_scores, MIN_THRESHOLD), max_threshold)
    return 100 * (sum_scores - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)


def _images(pod: PodInfo) -> tuple[str, ...]:
    names = pod.cache.get(NAME)
    if names is None:
        names = pod.cache[NAME] = tuple(normalized_image_name(i) for i in pod.images)
    return names


class ImageLocality:
    NAME = NAME
    EVENTS = (ClusterEvent(NODE, ActionType.ADD),)

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        snap = state.snapshot
        total_nodes = len(snap)
        s = 0
        for name in _images(pod):
            size = node.images.get(name)
            if size is not None:
                s += int(size * (snap.image_nodes.get(name, 0) / total_nodes))
        return calculate_priority(s, len(pod.images))

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        snap = state.snapshot
        if not any(name in snap.image_nodes for name in _images(pod)) or not pod.images:
            return [0] * len(nodes)
        infos = snap.nodes
        return [self.score(state, pod, infos[j]) for j in nodes]


def new(args: dict, handle) -> ImageLocality:
    return ImageLocality()
