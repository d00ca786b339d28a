"""The scheduling framework: extension points, Status, CycleState, and one profile's runner.

Each extension point is one small `typing.Protocol` below, as kube-scheduler's
framework/interface.go has one interface per point. A plugin is any object with a
`NAME` that implements some of them; the framework finds which by `isinstance` against
these runtime-checkable protocols, once, when a profile is built:

    PreFilterPlugin     pre_filter(state, pod) -> Status | None      # Skip: its filter is not run
    FilterPlugin        filter(state, pod, node: NodeInfo) -> Status | None
    FilterNodes         filter_nodes(state, pod, nodes: list[int]) -> list[int]   # fast path
    PostFilterPlugin    post_filter(state, pod, statuses: dict[str, Status]) -> Status | None
    PreScorePlugin      pre_score(state, pod, nodes: list[int]) -> Status | None  # Skip: no score
    ScorePlugin         score(state, pod, node: NodeInfo) -> int
    ScoreNodes          score_nodes(state, pod, nodes: list[int]) -> list[int]    # fast path
    ScoreExtensions     normalize_score(state, pod, scores: list[int]) -> None    # in place, 0..100
    ReservePlugin       reserve(state, pod, node_name) -> Status | None; unreserve(...) -> None
    BindPlugin          async bind(state, pod, node_name) -> Status | None        # Skip: next binder
    EnqueueExtensions   EVENTS: tuple[ClusterEvent, ...]   # events that may make a rejected pod fit

Queue sort is not a plugin point here: the queue implements PrioritySort, the only
queueSort plugin a configuration may name.

`None` is success, as a nil *Status is in Go. Expected rejections are `Unschedulable`
(another node, or preemption, may help) or `UnschedulableAndUnresolvable`; `Error` is for
the unexpected and aborts the cycle.

The `*_nodes` fast paths take and return node indexes into the cycle's snapshot (the
columnar cache) and must agree with the per-node method: the tests check both forms on
the same tables. `filter_nodes` returns the passing subset in the order given. A plugin
without a fast path is run node by node.

Filter and Score read only `state.snapshot`; they never call the API. Only Bind writes.
Everything here is synchronous except Bind, and one cycle never yields to the event loop.
"""
from __future__ import annotations

import enum
from itertools import repeat
from operator import add, mul
from typing import TYPE_CHECKING, Any, Awaitable, Iterable, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from scheduler.cache import Cache
    from scheduler.types import NodeInfo, PodInfo

MAX_NODE_SCORE = 100
MIN_NODE_SCORE = 0


class Code(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    WAIT = 4
    SKIP = 5


class Status:
    """A plugin's verdict: a code, human reasons, and the plugin that gave it."""

    __slots__ = ("code", "reasons", "plugin")

    def __init__(self, code: Code, *reasons: str, plugin: str = ""):
        self.code, self.reasons, self.plugin = code, tuple(reasons), plugin

    @classmethod
    def unschedulable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE, *reasons)

    @classmethod
    def unresolvable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, *reasons)

    @classmethod
    def error(cls, *reasons: str) -> Status:
        return cls(Code.ERROR, *reasons)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def is_success(self) -> bool:
        return self.code == Code.SUCCESS

    def is_rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    def with_plugin(self, plugin: str) -> Status:
        return Status(self.code, *self.reasons, plugin=plugin)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Status) and self.code == other.code
                and self.reasons == other.reasons)

    def __hash__(self) -> int:
        return hash((self.code, self.reasons))

    def __repr__(self) -> str:
        by = f", plugin={self.plugin!r}" if self.plugin else ""
        return f"Status({self.code.name}, {', '.join(map(repr, self.reasons))}{by})"


SKIP = Status(Code.SKIP)


class CycleState:
    """Scratch data for one pod's scheduling cycle, keyed by plugin name, plus the
    snapshot the cycle reads and the plugins PreFilter/PreScore asked to skip."""

    __slots__ = ("snapshot", "_data", "skip_filter", "skip_score")

    def __init__(self, snapshot: Cache):
        self.snapshot = snapshot
        self._data: dict[str, Any] = {}
        self.skip_filter: set[str] = set()
        self.skip_score: set[str] = set()

    def write(self, key: str, value: Any) -> None:
        self._data[key] = value

    def read(self, key: str) -> Any:
        """The value a plugin wrote; KeyError if it never did (e.g. PreFilter was skipped)."""
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)


class ActionType(enum.IntFlag):
    ADD = 1
    DELETE = 2
    UPDATE_NODE_ALLOCATABLE = 4
    UPDATE_NODE_LABEL = 8
    UPDATE_NODE_TAINT = 16
    UPDATE_NODE_CONDITION = 32
    UPDATE_POD = 64
    UPDATE = 4 | 8 | 16 | 32 | 64
    ALL = 127


NODE, ASSIGNED_POD, WILDCARD = "Node", "AssignedPod", "*"


class ClusterEvent(NamedTuple):
    resource: str
    action: ActionType

    def matches(self, incoming: ClusterEvent) -> bool:
        """framework.MatchClusterEvents: self (registered) covers the incoming event."""
        return ((self.resource == WILDCARD or self.resource == incoming.resource)
                and bool(self.action & incoming.action))


NODE_UPDATE_KINDS = {"Allocatable": ActionType.UPDATE_NODE_ALLOCATABLE,
                     "Label": ActionType.UPDATE_NODE_LABEL,
                     "Taint": ActionType.UPDATE_NODE_TAINT,
                     "Condition": ActionType.UPDATE_NODE_CONDITION}


def node_update_event(kinds: Iterable[str]) -> ClusterEvent | None:
    """The event for `Cache.update_node`'s change kinds; None when nothing relevant changed."""
    action = ActionType(0)
    for k in kinds:
        action |= NODE_UPDATE_KINDS[k]
    return ClusterEvent(NODE, action) if action else None


def default_normalize_score(scores: list[int], *, reverse: bool,
                            max_priority: int = MAX_NODE_SCORE) -> None:
    """helper.DefaultNormalizeScore: scale to 0..max by the highest score, optionally reversed."""
    top = max(scores, default=0)
    if top <= 0:
        if reverse:
            scores[:] = [max_priority] * len(scores)
        return
    if reverse:
        scores[:] = [max_priority - max_priority * s // top for s in scores]
    else:
        scores[:] = [max_priority * s // top for s in scores]



# --- extension points (framework/interface.go) -----------------------------------------

@runtime_checkable
class Plugin(Protocol):
    """framework.Plugin: every plugin has a name, unique within a profile."""
    NAME: str


@runtime_checkable
class PreFilterPlugin(Plugin, Protocol):
    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None: ...


@runtime_checkable
class FilterPlugin(Plugin, Protocol):
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None: ...


@runtime_checkable
class FilterNodes(Plugin, Protocol):
    """A FilterPlugin's optional columnar form: the passing subset of `nodes`, in order."""
    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]: ...


@runtime_checkable
class PostFilterPlugin(Plugin, Protocol):
    def post_filter(self, state: CycleState, pod: PodInfo,
                    statuses: dict[str, Status]) -> Status | None: ...


@runtime_checkable
class PreScorePlugin(Plugin, Protocol):
    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> Status | None: ...


@runtime_checkable
class ScorePlugin(Plugin, Protocol):
    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int: ...


@runtime_checkable
class ScoreNodes(Plugin, Protocol):
    """A ScorePlugin's optional columnar form: one score per node of `nodes`."""
    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]: ...


@runtime_checkable
class ScoreExtensions(Plugin, Protocol):
    """NormalizeScore: bring a ScorePlugin's scores into 0..100, in place."""
    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None: ...


@runtime_checkable
class ReservePlugin(Plugin, Protocol):
    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None: ...

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None: ...


@runtime_checkable
class BindPlugin(Plugin, Protocol):
    def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Awaitable[Status | None]: ...


@runtime_checkable
class EnqueueExtensions(Plugin, Protocol):
    """The cluster events that may make a pod this plugin rejected schedulable. A plugin
    without them is asked again on every event."""
    EVENTS: tuple[ClusterEvent, ...]


# Framework keyword -> the protocol a plugin at that point implements.
EXTENSION_POINTS: dict[str, type] = {
    "pre_filter": PreFilterPlugin, "filter": FilterPlugin, "post_filter": PostFilterPlugin,
    "pre_score": PreScorePlugin, "score": ScorePlugin, "reserve": ReservePlugin,
    "bind": BindPlugin,
}


def plugin_args(args: Any, *fields: str) -> dict:
    """pluginConfig args read strictly, as kube-scheduler decodes a plugin's Args type: a
    field the type does not have is an error, so a typo never falls back to a default in
    silence. `apiVersion` and `kind` (the Args' own TypeMeta) may be present."""
    if not isinstance(args, dict):
        raise ValueError(f"expected a mapping, got {args!r}")
    for key in args:
        if key not in fields and key not in ("apiVersion", "kind"):
            raise ValueError(f'strict decoding error: unknown field "{key}"')
    return args


class FrameworkError(Exception):
    """A plugin reported Error (or misbehaved): the cycle is aborted, the pod retried."""

    def __init__(self, status: Status):
        super().__init__(f"{status.plugin}: {status.message}" if status.plugin else status.message)
        self.status = status


class Framework:
    """One profile: its plugins, in order, at each extension point, with score weights.

    Each plugin given at a point must implement that point's protocol (TypeError if
    not); the optional fast paths and extensions are looked up here, once."""

    def __init__(self, scheduler_name: str = "default-scheduler", *,
                 pre_filter: Iterable[PreFilterPlugin] = (), filter: Iterable[FilterPlugin] = (),
                 post_filter: Iterable[PostFilterPlugin] = (), pre_score: Iterable[PreScorePlugin] = (),
                 score: Iterable[tuple[ScorePlugin, int]] = (), reserve: Iterable[ReservePlugin] = (),
                 bind: Iterable[BindPlugin] = (), percentage_of_nodes_to_score: int | None = None):
        self.scheduler_name = scheduler_name
        self.pre_filter_plugins = list(pre_filter)
        self.filter_plugins = list(filter)
        self.post_filter_plugins = list(post_filter)
        self.pre_score_plugins = list(pre_score)
        self.score_plugins = list(score)
        self.reserve_plugins = list(reserve)
        self.bind_plugins = list(bind)
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        for point, given in (("pre_filter", self.pre_filter_plugins), ("filter", self.filter_plugins),
                             ("post_filter", self.post_filter_plugins),
                             ("pre_score", self.pre_score_plugins),
                             ("score", [p for p, _ in self.score_plugins]),
                             ("reserve", self.reserve_plugins), ("bind", self.bind_plugins)):
            for p in given:
                if not isinstance(p, EXTENSION_POINTS[point]):
                    raise TypeError(f"plugin {getattr(p, 'NAME', p)!r} does not implement "
                                    f"{EXTENSION_POINTS[point].__name__}")
        self.plugins: dict[str, Any] = {
            p.NAME: p for p in [*self.pre_filter_plugins, *self.filter_plugins,
                                *self.post_filter_plugins, *self.pre_score_plugins,
                                *(p for p, _ in self.score_plugins),
                                *self.reserve_plugins, *self.bind_plugins]}
        # The optional forms, resolved once: a cycle must not pay for isinstance.
        self._filters = [(p, p.filter_nodes if isinstance(p, FilterNodes) else None)
                         for p in self.filter_plugins]
        self._scores = [(p, weight, p.score_nodes if isinstance(p, ScoreNodes) else None,
                         p.normalize_score if isinstance(p, ScoreExtensions) else None)
                        for p, weight in self.score_plugins]
        self._events = {name: p.EVENTS if isinstance(p, EnqueueExtensions) else None
                        for name, p in self.plugins.items()}

    @classmethod
    def from_plugins(cls, plugins: Iterable[Plugin], *, weights: dict[str, int] | None = None,
                     scheduler_name: str = "default-scheduler",
                     percentage_of_nodes_to_score: int | None = None) -> Framework:
        """Every plugin at every extension point it implements (config's multiPoint)."""
        plugins = list(plugins)
        weights = weights or {}
        return cls(scheduler_name,
                   pre_filter=[p for p in plugins if isinstance(p, PreFilterPlugin)],
                   filter=[p for p in plugins if isinstance(p, FilterPlugin)],
                   post_filter=[p for p in plugins if isinstance(p, PostFilterPlugin)],
                   pre_score=[p for p in plugins if isinstance(p, PreScorePlugin)],
                   score=[(p, weights.get(p.NAME, 1)) for p in plugins if isinstance(p, ScorePlugin)],
                   reserve=[p for p in plugins if isinstance(p, ReservePlugin)],
                   bind=[p for p in plugins if isinstance(p, BindPlugin)],
                   percentage_of_nodes_to_score=percentage_of_nodes_to_score)

    # --- filter --------------------------------------------------------------------------

    def run_pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        for p in self.pre_filter_plugins:
            s = p.pre_filter(state, pod)
            if s is None or s.code == Code.SUCCESS:
                continue
            if s.code == Code.SKIP:
                state.skip_filter.add(p.NAME)
                continue
            return s.with_plugin(p.NAME)
        return None

    def run_filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        """All filters on one node, stopping at the first that does not pass."""
        for p in self.filter_plugins:
            if p.NAME in state.skip_filter:
                continue
            s = p.filter(state, pod, node)
            if s is not None and s.code != Code.SUCCESS:
                return s.with_plugin(p.NAME)
        return None

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        """The subset of `nodes` (indexes, in order) that passes every filter."""
        infos = state.snapshot.nodes
        for p, fast in self._filters:
            if not nodes:
                break
            if p.NAME in state.skip_filter:
                continue
            if fast is not None:
                nodes = fast(state, pod, nodes)
                continue
            kept = []
            for j in nodes:
                s = p.filter(state, pod, infos[j])
                if s is None or s.code == Code.SUCCESS:
                    kept.append(j)
                elif s.code == Code.ERROR:
                    raise FrameworkError(s.with_plugin(p.NAME))
            nodes = kept
        return nodes

    def diagnose(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> dict[int, Status]:
        """Why each of `nodes` is rejected: the status of the first filter that rejects it
        (as run_filter gives), asking each plugin only about the nodes it drops."""
        infos = state.snapshot.nodes
        out: dict[int, Status] = {}
        for p, fast in self._filters:
            if not nodes:
                break
            if p.NAME in state.skip_filter:
                continue
            kept = fast(state, pod, nodes) if fast is not None else nodes
            keep = set(kept)
            remaining = []
            for j in nodes:
                if fast is not None and j in keep:
                    remaining.append(j)
                    continue
                s = p.filter(state, pod, infos[j])
                if s is None or s.code == Code.SUCCESS:
                    remaining.append(j)
                else:
                    out[j] = s.with_plugin(p.NAME)
            nodes = remaining
        return out

    def run_post_filter(self, state: CycleState, pod: PodInfo,
                        statuses: dict[str, Status]) -> Status | None:
        """PostFilter (preemption would live here): the first plugin that helps wins."""
        last = None
        for p in self.post_filter_plugins:
            s = p.post_filter(state, pod, statuses)
            if s is None or s.code == Code.SUCCESS:
                return None
            last = s.with_plugin(p.NAME)
        return last

    # --- score ---------------------------------------------------------------------------

    def run_pre_score(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> None:
        for p in self.pre_score_plugins:
            s = p.pre_score(state, pod, nodes)
            if s is None or s.code == Code.SUCCESS:
                continue
            if s.code == Code.SKIP:
                state.skip_score.add(p.NAME)
                continue
            raise FrameworkError(s.with_plugin(p.NAME))

    def run_score(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        """Weighted sum of each score plugin's normalized 0..100 score, per node."""
        totals = [0] * len(nodes)
        infos = state.snapshot.nodes
        for p, weight, fast, normalize in self._scores:
            if p.NAME in state.skip_score:
                continue
            scores = (fast(state, pod, nodes) if fast is not None
                      else [p.score(state, pod, infos[j]) for j in nodes])
            if normalize is not None:
                normalize(state, pod, scores)
            if scores and (min(scores) < MIN_NODE_SCORE or max(scores) > MAX_NODE_SCORE):
                raise FrameworkError(Status.error(
                    f"plugin {p.NAME!r} returns an invalid score, it should be in the range "
                    f"of [{MIN_NODE_SCORE}, {MAX_NODE_SCORE}] after normalizing").with_plugin(p.NAME))
            if weight != 1:
                scores = list(map(mul, scores, repeat(weight, len(scores))))
            totals = list(map(add, totals, scores))
        return totals

    # --- reserve and bind ------------------------------------------------------------------

    def run_reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for p in self.reserve_plugins:
            s = p.reserve(state, pod, node_name)
            if s is not None and s.code != Code.SUCCESS:
                self.run_unreserve(state, pod, node_name)
                return s.with_plugin(p.NAME)
        return None

    def run_unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for p in reversed(self.reserve_plugins):
            p.unreserve(state, pod, node_name)

    async def run_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for p in self.bind_plugins:
            s = await p.bind(state, pod, node_name)
            if s is not None and s.code == Code.SKIP:
                continue
            return None if s is None or s.code == Code.SUCCESS else s.with_plugin(p.NAME)
        return Status.error(f"no bind plugin bound pod {pod.key}")

    # --- queueing hints ----------------------------------------------------------------------

    def may_help(self, plugin_names: Iterable[str], event: ClusterEvent) -> bool:
        """Whether `event` may make a pod rejected by these plugins schedulable. A pod with
        no recorded plugin (e.g. it failed with an error) is always worth a retry."""
        names = list(plugin_names)
        if not names:
            return True
        for name in names:
            events = self._events.get(name)
            if events is None or any(e.matches(event) for e in events):
                return True
        return False
