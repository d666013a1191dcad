"""Benchmark: what a Ray Train worker group costs besides its steps on this machine, with Ray
Train's defaults against the project's settings for a local Ray (``ray_start.RAY_ENV`` and
``LOCAL_RAY_ENV``: no preemption-watcher actor, the controller polling every 0.5 s), and Ray
Train's deprecated V1 for reference.

    .venv/bin/python benchmarks/train_group_start.py [--workers 2] [--groups 2] [--reports 10]

Each variant runs in its own fresh process with its own local Ray (2 CPUs): ``--groups``
``TorchTrainer.fit()`` calls one after the other, two workers of 0.5 CPU on gloo, whose training
function records when it started, then calls ``ray.train.report`` ``--reports`` times in a row
(as a fast loop reporting every few steps would). Prints the seconds from ``fit()`` to the
workers' function, per report, from the last report to ``fit()``'s return, and each variant's
ratios to the defaults.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import _common

def _variants() -> dict:
    from xdistil_ray.pipelines.ray_start import LOCAL_RAY_ENV, RAY_ENV

    return {"defaults": {}, "project (local)": {**RAY_ENV, **LOCAL_RAY_ENV},
            "Ray Train V1": {"RAY_TRAIN_V2_ENABLED": "0"}}


def groups(env: dict, workers: int, count: int, reports: int) -> dict:
    os.environ.update(env)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1",
             log_to_driver=False)
    stamp = tempfile.mktemp(suffix=".start")
    storage = tempfile.mkdtemp(prefix="group-start-")

    def loop(config):
        import ray.train

        started = time.time()
        for i in range(config["reports"]):
            ray.train.report({"i": i})
        if ray.train.get_context().get_world_rank() == 0:
            with open(config["stamp"], "w") as f:
                f.write(f"{started} {time.time()}")

    to_workers, per_report, tail, to_return = [], [], [], []
    for k in range(count):
        start = time.time()
        TorchTrainer(loop, train_loop_config={"stamp": stamp, "reports": reports},
                     scaling_config=ScalingConfig(num_workers=workers,
                                                  resources_per_worker={"CPU": 0.5}),
                     torch_config=TorchConfig(backend="gloo"),
                     run_config=RunConfig(name=f"group{k}", storage_path=storage)).fit()
        end = time.time()
        started, reported = map(float, open(stamp).read().split())
        to_workers.append(started - start)
        per_report.append((reported - started) / max(1, reports))
        tail.append(end - reported)
        to_return.append(end - start)
    ray.shutdown()
    return {"to_workers": to_workers, "per_report": per_report, "tail": tail,
            "to_return": to_return}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--reports", type=int, default=10)
    args = parser.parse_args()
    print(_common.machine())
    results = {}
    for name, env in _variants().items():
        r = _common.run_phase(__file__, "groups", {"env": env, "workers": args.workers,
                                                   "count": args.groups,
                                                   "reports": args.reports})
        results[name] = r

        def seconds(key, r=r):
            return ", ".join(f"{s:.2f}" for s in r[key])

        print(f"{name}: to the workers {seconds('to_workers')} s; per report "
              f"{seconds('per_report')} s; last report to fit()'s return {seconds('tail')} s; "
              f"fit() {seconds('to_return')} s")
    base = {k: statistics.mean(results["defaults"][k]) for k in ("to_workers", "per_report",
                                                                  "tail")}
    for name, r in results.items():
        ratios = ", ".join(f"{k} {statistics.mean(r[k]) / base[k]:.2f}" for k in base)
        print(f"{name}: ratios to the defaults: {ratios}")


if __name__ == "__main__":
    if not _common.phase_main({"groups": groups}):
        main()
