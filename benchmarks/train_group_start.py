"""Benchmark: how long a Ray Train worker group takes to reach its workers on this machine, with
Ray Train's defaults against the project's local settings (``pipeline.LOCAL_RAY_ENV``: no
preemption-watcher actor), and Ray Train's deprecated V1 for reference.

    .venv/bin/python benchmarks/train_group_start.py [--workers 2] [--groups 2]

Each variant runs in its own fresh process with its own local Ray (2 CPUs): ``--groups``
``TorchTrainer.fit()`` calls one after the other, two workers of 0.5 CPU on gloo, whose training
function only records when it started. Prints the seconds from ``fit()`` to the workers'
function and to ``fit()``'s return, and each variant's ratio to the defaults.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import _common

VARIANTS = {
    "defaults": {},
    "project (local)": {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"},
    "Ray Train V1": {"RAY_TRAIN_V2_ENABLED": "0"},
}


def groups(env: dict, workers: int, count: int) -> dict:
    os.environ.update(env)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1",
             log_to_driver=False)
    stamp = tempfile.mktemp(suffix=".start")
    storage = tempfile.mkdtemp(prefix="group-start-")

    def loop(config):
        with open(config["stamp"], "w") as f:
            f.write(str(time.time()))

    to_workers, to_return = [], []
    for k in range(count):
        start = time.time()
        TorchTrainer(loop, train_loop_config={"stamp": stamp},
                     scaling_config=ScalingConfig(num_workers=workers,
                                                  resources_per_worker={"CPU": 0.5}),
                     torch_config=TorchConfig(backend="gloo"),
                     run_config=RunConfig(name=f"group{k}", storage_path=storage)).fit()
        to_return.append(time.time() - start)
        to_workers.append(float(open(stamp).read()) - start)
    ray.shutdown()
    return {"to_workers": to_workers, "to_return": to_return}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--groups", type=int, default=2)
    args = parser.parse_args()
    print(_common.machine())
    results = {}
    for name, env in VARIANTS.items():
        r = _common.run_phase(__file__, "groups",
                              {"env": env, "workers": args.workers, "count": args.groups})
        results[name] = r
        print(f"{name}: to the workers {', '.join(f'{s:.1f}' for s in r['to_workers'])} s; "
              f"fit() {', '.join(f'{s:.1f}' for s in r['to_return'])} s")
    base = statistics.mean(results["defaults"]["to_workers"])
    for name, r in results.items():
        print(f"{name}: mean to the workers {statistics.mean(r['to_workers']):.1f} s, "
              f"ratio to defaults {statistics.mean(r['to_workers']) / base:.2f}")


if __name__ == "__main__":
    if not _common.phase_main({"groups": groups}):
        main()
