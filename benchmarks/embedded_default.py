"""Benchmark: the embedded default end to end, against a bare teacher pass measured in the same run.

    .venv/bin/python benchmarks/embedded_default.py [--output runs/bench-default]

Runs `jobs/distill.py` on a fresh run folder (local Ray, every step), prints each step's
seconds from its marker, the total wall time against the 4-minute target, the headline figures
of the report, and the teacher step's time against a bare single-process loop doing the Ray
step's work: the same TeacherInference (loaded inside the timing), the same batch size and
length-grouping windows, over the same shards, writing the same fp16 parquet outputs (the floor
the Ray step is measured against).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

import _common


def bare_teacher_seconds(run_dir: str, marker, inference: dict) -> tuple[float, int]:
    """The Ray teacher step's work in one plain process: load, read each shard, windows of
    ``group_batches`` batches, forward, write the fp16 outputs as parquet."""
    from xdistil_ray.teacher.step import TeacherInference
    from xdistil_ray.teacher.shards import _to_arrow

    start = time.time()
    torch.set_num_threads(os.cpu_count() or 1)
    infer = TeacherInference(os.path.join(run_dir, "teacher_finetune", "model"), ("logits", "hidden"),
                             device="cpu", batch_size=inference["batch_size"],
                             dtype=inference["dtype"])
    window = inference["batch_size"] * inference["group_batches"]
    out_dir = tempfile.mkdtemp(prefix="bench-bare-teacher-")
    rows = 0
    for shard in marker.corpus.shards:
        table = pq.read_table(os.path.join(run_dir, "data", "corpus", shard.file),
                              columns=["id", "input_ids", "heldout"])
        parts = []
        for i in range(0, table.num_rows, window):
            part = table.slice(i, window)
            batch = {name: part.column(name).to_numpy(zero_copy_only=False)
                     for name in part.column_names}
            out = infer(batch)
            parts.append(_to_arrow(pd.DataFrame({k: list(v) for k, v in out.items()})))
        pq.write_table(pa.concat_tables(parts), os.path.join(out_dir, shard.file))
        rows += table.num_rows
    seconds = time.time() - start
    shutil.rmtree(out_dir)
    return seconds, rows


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
    from xdistil_ray.run import markers
    from xdistil_ray.run.runfolder import RunFolder

    kinds = {"data": markers.DataMarker, "teacher": markers.TeacherMarker,
             "student_init": markers.InitMarker, "student": markers.ModelMarker,
             "eval": markers.EvalMarker}
    for step in steps:
        marker = RunFolder(args.output).marker(step, kinds.get(step, markers.StageMarker))
        seconds = getattr(marker, "seconds", None)
        print(f"  {step:28s} {seconds if seconds is not None else '-':>8} s")
    print(f"total wall {wall_s:.0f} s; target 240 s; ratio {wall_s / 240:.2f}")
    e, sp, sz = report["eval"], report["speed"], report["size"]
    print(f"agreement {e['agreement']:.4f}; dev accuracy student {e['student_accuracy']:.4f} / "
          f"teacher {e['teacher_accuracy']:.4f} (ratio {e['student_accuracy'] / e['teacher_accuracy']:.3f}); "
          f"params {sz['student_params']}/{sz['teacher_params']} ({1 / sz['compression']:.3f}); "
          f"CPU speedup {sp['cpu']['speedup_latency']:.1f}x at batch 1, "
          f"{sp['cpu']['speedup_throughput']:.1f}x at batch {sp['batch_size']}")
    data_marker = _common.data_marker(args.output)
    config = yaml.safe_load(open(os.path.join(args.output, "config.yaml")))
    bare_s, rows = bare_teacher_seconds(args.output, data_marker, config["teacher"]["inference"])
    ray_s = report["teacher_inference"]["seconds"]
    print(f"teacher pass over {rows} sentences: Ray step {ray_s:.0f} s, bare loop {bare_s:.0f} s "
          f"({rows / bare_s:.0f} sentences/s); ratio bare/Ray {bare_s / ray_s:.2f}")


if __name__ == "__main__":
    main()
