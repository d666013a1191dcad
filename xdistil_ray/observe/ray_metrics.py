"""The run's progress as Ray metrics: rows per pass and teacher shards committed, exported by
every node's metrics agent to Prometheus (and so to the dashboard's Metrics view and Grafana;
cluster/README.md says how to turn them on). Names as Prometheus shows them (Ray prefixes
``ray_``): ``ray_xdistil_rows_total{step=...}``, ``ray_xdistil_rows_per_second{step=...}``,
``ray_xdistil_shards_committed_total{step="teacher"}``.

Recorded from the progress and shard-ledger actors (steps' rows) where Ray is initialized; a
plain process (a unit test) records nothing.
"""

from __future__ import annotations

_METRICS: dict = {}


def _metric(kind: str, name: str, description: str):
    if name not in _METRICS:
        from ray.util import metrics

        _METRICS[name] = getattr(metrics, kind)(name, description=description,
                                                tag_keys=("step",))
    return _METRICS[name]


def _ray_up() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def rows(step: str, count: int, per_second: float) -> None:
    """``count`` more rows done by ``step`` (``data: corpus``, ``teacher``...), now at
    ``per_second``."""
    if not _ray_up():
        return
    tags = {"step": step}
    _metric("Counter", "xdistil_rows", "Rows done by a step's pass").inc(count, tags=tags)
    _metric("Gauge", "xdistil_rows_per_second",
            "A step's rows per second since its pass began").set(per_second, tags=tags)


def shard_committed(step: str = "teacher") -> None:
    if _ray_up():
        _metric("Counter", "xdistil_shards_committed",
                "Shards a step committed").inc(1, tags={"step": step})
