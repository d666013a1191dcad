"""Benchmark: the data step run several times on one local Ray, with Ray's idle-worker killing
as Ray sets it (a worker idle for 1 s is killed once more workers than CPUs are alive) and as
the project's local Ray sets it (``ray_start.LOCAL_RAY_ENV``: kept for 10 minutes).

    .venv/bin/python benchmarks/idle_workers.py [--sentences 640] [--passes 3]

Each setting runs in its own fresh process with its own local Ray (2 CPUs): ``--passes`` data
steps in a row over the same generated sentences (as a run's steps, or a test session's runs,
follow each other), each into a new folder. Prints each pass's seconds, the Ray worker
processes started, the ratio of the later passes' mean (the project's setting over Ray's), and
what the idle workers left cost: their CPU over 20 s with nothing running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import _common

SETTING = "RAY_idle_worker_killing_time_threshold_ms"


def ray_processes() -> set[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if "ray::" in line}


def passes(corpus: str, count: int, keep_idle: bool) -> dict:
    from xdistil_ray.pipelines import ray_start

    if not keep_idle:  # Ray's default (the variable unset before Ray starts)
        ray_start.LOCAL_RAY_ENV = {k: v for k, v in ray_start.LOCAL_RAY_ENV.items() if k != SETTING}
    os.environ.pop(SETTING, None)
    _common.start_ray(2)
    cfg = _common.config(**{"corpus.rows_per_shard": 256})
    from xdistil_ray.modeling.models import resolve_teacher_path

    seconds, seen = [], set()
    for k in range(count):
        start = time.perf_counter()
        marker = _common.prepare(tempfile.mkdtemp(prefix=f"idle-{k}-"), corpus,
                                 resolve_teacher_path("embedded"), cfg)
        seconds.append(time.perf_counter() - start)
        seen |= ray_processes()
    idle, cores = idle_cpu(20.0)
    return {"seconds": seconds, "processes": len(seen), "rows": marker.corpus.kept,
            "idle_workers": idle, "idle_cores": cores}


def idle_cpu(seconds: float) -> tuple[int, float]:
    """(idle Ray workers, the cores they used together) over ``seconds`` of nothing running."""
    def cpu() -> dict[str, float]:
        out = {}
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"ray::IDLE" not in f.read():
                        continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, ValueError):
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    time.sleep(3)  # the last pass's tasks hand their workers back
    before, start = cpu(), time.perf_counter()
    time.sleep(seconds)
    after, elapsed = cpu(), time.perf_counter() - start
    both = before.keys() & after.keys()
    return len(both), sum(after[p] - before[p] for p in both) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=640)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    corpus = _common.write_sentences(
        os.path.join(tempfile.gettempdir(), f"idle-workers-{args.sentences}.txt"), args.sentences)
    print(_common.machine())
    results = {}
    for name, keep in (("ray default", False), ("kept 10 min", True)):
        r = _common.run_phase(__file__, "passes",
                              {"corpus": corpus, "count": args.passes, "keep_idle": keep})
        results[name] = r
        print(f"{name}: passes {', '.join(f'{s:.1f}' for s in r['seconds'])} s; "
              f"{r['processes']} Ray worker processes; {r['rows']} rows kept; then "
              f"{r['idle_workers']} idle workers used {r['idle_cores']:.3f} of a core together")
    later = [statistics.mean(results[n]["seconds"][1:]) for n in ("kept 10 min", "ray default")]
    print(f"kept/default time: first pass "
          f"{results['kept 10 min']['seconds'][0] / results['ray default']['seconds'][0]:.2f}, "
          f"later passes {later[0] / later[1]:.2f}")


if __name__ == "__main__":
    if not _common.phase_main({"passes": passes}):
        main()
