"""Starting Ray for a job: connecting to the cluster (``ray.address``, or the one a ``ray job
submit`` runs in) or starting a local Ray on loopback, with the environment the project's Ray
processes run with, then refusing work the cluster could never place."""

from __future__ import annotations

import os

from xdistil_ray.config import Config
from xdistil_ray.observe import console


RAY_ENV = {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "2", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
"""Environment for the job's Ray processes (a value already in the environment wins).

Ray Data 2.60 reads parquet footers on a pool of actors that every ``read_parquet`` pass starts
anew: 32 by default, each a Python process (about 3 s of CPU to start). The run's reads are tens
to thousands of committed files, which two actors of 128 concurrent reads each cover.

Ray Train 2.60's controller polls its workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s
by default), and only then takes a worker's ``ray.train.report`` off its one-slot queue: a
report waits up to an interval for the previous one, and a worker group's end is seen up to an
interval late. At 0.5 s a checkpoint report and a stage group's end each cost at most 0.5 s
(``benchmarks/train_group_start.py``: 1.82 -> 0.46 s per report in a row, 4.2-5.2 -> 1.4-1.5 s
from the last report to ``fit()``'s return). The controller's poll is one small remote call per
worker.

Ray Data's V1 parquet datasource (``RAY_DATA_USE_DATASOURCE_V2=0``) starts no such pool and
reads a few small files in 0.13x the time on warm workers (``benchmarks/parquet_read.py``). It
is not switched on: V2 is Ray 2.60's default and the path its maintainers develop, and once idle
workers are kept (:data:`LOCAL_RAY_ENV`) its footer actors start on warm processes. (An earlier
note here blamed V1 for the fine-tuning test's students not learning, 46.5% against 70.3%. Re-run
on 2026-11-30, the from-scratch student's loss does not move under either reader in those 72
steps, 0.689 -> 0.689 under V1 and 0.692 -> 0.685 under V2, with dev accuracy 50.4% and 70.3%:
the recipe is at the edge of learning and the row order tips it; V1 does not corrupt rows.)"""


LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
                 "RAY_idle_worker_killing_time_threshold_ms": "600000"}
"""Added for a Ray this process starts on its own machine. Ray Train starts an actor per worker
group that watches for node preemption (spot instances); one machine has none to watch, and the
actor's process costs about 4 s of CPU per group (in wall time no gain shows above a 2-core
machine's noise: ``benchmarks/train_group_start.py``).

Ray kills a worker process that has been idle for a second once more workers than CPUs are
alive; the next task or actor then starts a new one, which pays Python's and Ray's start again
and re-imports what the run uses (pandas, pyarrow, tokenizers, torch: 3-10 s of CPU each on a
2-core machine). A run's steps start tasks and actors in bursts, so on one machine idle workers
are kept for 10 minutes (a new actor takes an idle worker when one is there): the data step run
three times in a row on one local Ray took 17.7, 20.0 and 20.8 s with Ray's default and 19.5,
3.7 and 3.9 s with this (``benchmarks/idle_workers.py``)."""


def ray_env_vars(local: bool = False) -> dict[str, str]:
    """The :data:`RAY_ENV` variables (and :data:`LOCAL_RAY_ENV`'s for a ``local`` Ray) the
    environment does not set already."""
    wanted = {**RAY_ENV, **(LOCAL_RAY_ENV if local else {})}
    return {k: v for k, v in wanted.items() if k not in os.environ}


def apply_ray_env(local: bool) -> dict[str, str]:
    """Sets :func:`ray_env_vars` in this process (and so in every process of a Ray it starts).
    Returns the variables it set (a cluster's workers take them from the job's runtime
    environment)."""
    env = ray_env_vars(local)
    os.environ.update(env)
    return env


def init_ray(cfg: Config) -> None:
    """Connects to the cluster (``ray.address``, or the one a ``ray job submit`` runs in), or
    starts a local Ray on loopback; then refuses work the cluster could never place and local
    paths its other machines would not see (:func:`xdistil_ray.pipelines.placement.check`)."""
    import ray

    from xdistil_ray.pipelines import placement

    if not ray.is_initialized():
        _connect(cfg)
    placement.check(cfg, placement.snapshot())


def _connect(cfg: Config) -> None:
    import ray

    address = cfg.ray.address or os.environ.get("RAY_ADDRESS", "")
    env = apply_ray_env(local=not address)
    if address:
        # A cluster's workers take them from the job's runtime environment (merged with a
        # submitted job's own: Ray merges env_vars per variable).
        ray.init(address=address, runtime_env={"env_vars": env} if env else None)
    else:
        # Local Ray stays on loopback; the dashboard too (Ray Train queries its state API).
        ray.init(num_cpus=cfg.ray.num_cpus or None, _node_ip_address="127.0.0.1",
                 dashboard_host="127.0.0.1")
    console.route_worker_output()
    console.quiet_ray_data()
