"""minik8s scheduler: a two-phase (filter, then score) scheduler in kube-scheduler's shape.

Modules:
- `framework`  extension points, `Status`, `CycleState`, `ClusterEvent`, `Framework` (one profile)
- `plugins/`   one module per plugin, and the registry config names resolve through
- `config`     KubeSchedulerConfiguration (v1) -> `{schedulerName: Framework}`
- `cache`      the columnar node cache with assume / confirm / forget
- `queue`      active / backoff / unschedulable queues, moved by cluster events
- `algorithm`  one scheduling cycle (sampled filtering, scoring, assume, reserve) and
               the binding cycle
- `types`      `PodInfo` / `NodeInfo`: pods and nodes parsed once for the hot path
- `testing`    builders and plugin runners for tests
- `scheduler`  the running scheduler: informers -> cache and queue, the scheduling loop,
               binding tasks, FailedScheduling / Scheduled events, PodScheduled conditions
- `main`       `minik8s scheduler`: flags, config, leader election, signals

The scheduler imports `client` and `machinery` only; it never talks to etcd.
"""
