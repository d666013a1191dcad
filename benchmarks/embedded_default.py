"""Benchmark: the embedded default end to end, against a bare teacher pass measured in the same run.

    .venv/bin/python benchmarks/embedded_default.py [--output runs/bench-default]

Runs `jobs/distill.py` on a fresh run folder (local Ray, every step), prints each step's
seconds from its marker, the total wall time against the 10-minute target, the headline figures
of the report, and the teacher step's time against a bare single-process loop of the same
TeacherInference over the same shards (the floor the Ray step is measured against).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import torch


def bare_teacher_seconds(run_dir: str, marker: dict, batch_size: int) -> tuple[float, int]:
    from xdistil_ray.steps.teacher_inference import TeacherInference

    torch.set_num_threads(os.cpu_count() or 1)
    infer = TeacherInference(os.path.join(run_dir, "teacher_finetune", "model"), ("logits", "hidden"),
                             device="cpu")
    table = pa.concat_tables(pq.read_table(os.path.join(run_dir, "data", "corpus", s["file"]),
                                           columns=["input_ids"]) for s in marker["corpus"]["shards"])
    rows = table.column("input_ids").to_numpy(zero_copy_only=False)
    start = time.time()
    for i in range(0, len(rows), batch_size):
        infer({"input_ids": rows[i:i + batch_size]})
    return time.time() - start, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="runs/bench-default")
    args = parser.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    start = time.time()
    subprocess.run([sys.executable, "jobs/distill.py", f"output={args.output}"], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall_s = time.time() - start
    report = json.load(open(os.path.join(args.output, "report.json")))
    steps = ["data", "teacher_finetune", "teacher", "student_init"]
    steps += [os.path.join("stages", d) for d in sorted(os.listdir(os.path.join(args.output, "stages")))]
    steps += ["student", "eval"]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    for step in steps:
        path = os.path.join(args.output, step, "COMPLETE")
        seconds = json.load(open(path)).get("seconds") if os.path.exists(path) else None
        print(f"  {step:28s} {seconds if seconds is not None else '-':>8} s")
    print(f"total wall {wall_s:.0f} s; target 600 s; ratio {wall_s / 600:.2f}")
    e, sp, sz = report["eval"], report["speed"], report["size"]
    print(f"agreement {e['agreement']:.4f}; dev accuracy student {e['student_accuracy']:.4f} / "
          f"teacher {e['teacher_accuracy']:.4f} (ratio {e['student_accuracy'] / e['teacher_accuracy']:.3f}); "
          f"params {sz['student_params']}/{sz['teacher_params']} ({1 / sz['compression']:.3f}); "
          f"CPU speedup {sp['cpu']['speedup_latency']:.1f}x at batch 1, "
          f"{sp['cpu']['speedup_throughput']:.1f}x at batch {sp['batch_size']}")
    data_marker = json.load(open(os.path.join(args.output, "data", "COMPLETE")))
    bare_s, rows = bare_teacher_seconds(args.output, data_marker, 128)
    ray_s = report["teacher_inference"]["seconds"]
    print(f"teacher pass over {rows} sentences: Ray step {ray_s:.0f} s, bare loop {bare_s:.0f} s "
          f"({rows / bare_s:.0f} sentences/s); ratio bare/Ray {bare_s / ray_s:.2f}")


if __name__ == "__main__":
    main()
