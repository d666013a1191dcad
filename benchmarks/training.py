"""Benchmark: a training stage on Ray Train + DeepSpeed against a plain single-process PyTorch
loop with the same student, losses, batch and threads; DeepSpeed ZeRO stages 0-3 side by side.

    .venv/bin/python benchmarks/training.py [--steps 600] [--zero 0 1 2 3] [--workers 1]

The stage is the embedded default's first two objectives at once (representation + logits
transfer from stored teacher outputs) on its student (4 x 128, the teacher's vocabulary),
batch 64, over generated sentences with random stored targets of the teacher's widths (the
speed does not depend on their values). The plain loop holds the whole dataset in memory, pads
each batch in the loop and steps torch's fused AdamW (as the stage's DeepSpeed config) with
the same clipping and schedule. Each
run is a fresh process. Prints optimizer steps per second in steady state (between the first
and the last logged step; start-up, restores and the final checkpoint excluded) and counting
everything (Ray's start, the workers, DeepSpeed's set-up, the final checkpoint), and the ratio
to the plain loop (target 0.95 on one worker), and where the machine's CPU time went during the
Ray side's steady window (training worker, Ray Data / Train actors, Ray's daemons, driver).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import _common

BATCH = 64
LABELS = ["negative", "positive"]
TEACHER_HIDDEN, TEACHER_LAYERS = 384, 6
LOG_EVERY = 20


def _specs():
    from xdistil_ray.config import LossConfig
    from xdistil_ray.distill.objective import resolve_losses

    return resolve_losses([LossConfig(type="representation"), LossConfig(type="logits")],
                          num_student=4, num_teacher=TEACHER_LAYERS, student_hidden=128,
                          teacher_hidden=TEACHER_HIDDEN, teacher_heads=12)


def write_data(folder: str, rows: int, tokenizer: str) -> list[str]:
    """Parquet parts shaped as teacher inference writes them (ids, fp16 targets)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xdistil_ray.modeling.models import load_tokenizer

    if os.path.isdir(folder):
        return sorted(os.path.join(folder, f) for f in os.listdir(folder))
    os.makedirs(folder + ".tmp", exist_ok=True)
    sentences = open(_common.write_sentences(folder + ".txt", rows)).read().splitlines()
    ids = load_tokenizer(tokenizer)(sentences, truncation=True, max_length=64)["input_ids"]
    rng = np.random.default_rng(0)
    per_part = 8192
    for k, start in enumerate(range(0, rows, per_part)):
        n = len(ids[start:start + per_part])
        table = {"id": pa.array(np.arange(start, start + n)),
                 "input_ids": pa.array([np.asarray(r, np.int32) for r in ids[start:start + n]],
                                       pa.list_(pa.int32())),
                 "heldout": pa.array(np.zeros(n, bool))}
        for name, width in (("logits", len(LABELS)), ("hidden", TEACHER_HIDDEN)):
            values = rng.standard_normal((n, width)).astype(np.float16)
            table[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)
        pq.write_table(pa.table(table), os.path.join(folder + ".tmp", f"part-{k:03d}.parquet"))
    os.replace(folder + ".tmp", folder)
    return write_data(folder, rows, tokenizer)


def phase_plain(files: list[str], student: str, steps: int, threads: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from xdistil_ray.distill import objective
    from xdistil_ray.modeling.models import DistillModule, load_model
    from xdistil_ray.modeling.batches import PadCollate

    start = time.time()
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    specs = _specs()
    torch.manual_seed(0)
    module = DistillModule(load_model(student), objective.projections(specs, TEACHER_HIDDEN)).to(device)
    module.train()  # dropout on, as in the stage
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min((i + 1) / warmup, max(0.0, (steps - i) / (steps - warmup))))
    table = pa.concat_tables(pq.read_table(f, columns=["input_ids", "logits", "hidden"]) for f in files)
    rows = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    collate = PadCollate(0, LABELS, False)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda")
    points = []
    for step in range(steps):
        lo = step * BATCH % (len(rows["input_ids"]) - BATCH)
        batch = {k: v.to(device) for k, v in collate({c: v[lo:lo + BATCH] for c, v in rows.items()}).items()}
        with autocast:
            out = module(batch, hidden_states=True, qkv_block=None)
            loss, _ = objective.compute(specs, out, objective.stored_targets(batch, TEACHER_LAYERS),
                                        batch, module.projections, per_token=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % LOG_EVERY == 0:
            loss.item()  # the logging sync the pipeline's loop has too
            points.append((time.time(), step + 1))
    total = time.time() - start
    steady = (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
    return {"steady": steady, "all_in": steps / total, "seconds": total}


class CpuSampler:
    """Where the machine's CPU time goes while the Ray side runs: every process's cumulative
    user + system seconds, sampled every ``every_s``, by kind of process (the training worker,
    Ray's data threads' and control actors, Ray's system daemons, the driver)."""

    KINDS = (("training worker", ("RayTrainWorker",)),
             ("Ray Data / Train actors", ("SplitCoordinator", "TrainController", "ray::")),
             ("Ray system (raylet, GCS, dashboard, ...)", ("raylet", "gcs_server", "dashboard",
                                                         "log_monitor", "monitor.py",
                                                         "runtime_env", "ray/_private")))

    def __init__(self, every_s: float = 1.0):
        import threading

        self.every_s, self.samples = every_s, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _kind(self, proc) -> str:
        if proc.pid == os.getpid():
            return "driver"
        try:
            text = " ".join(proc.cmdline()) or proc.name()
        except Exception:  # noqa: BLE001 - a process that just ended
            return "other"
        for kind, marks in self.KINDS:
            if any(mark in text for mark in marks):
                return kind
        return "other"

    def _run(self) -> None:
        import psutil

        while not self.stop.is_set():
            totals = {}
            for proc in psutil.process_iter():
                try:
                    t = proc.cpu_times()
                except Exception:  # noqa: BLE001
                    continue
                kind = self._kind(proc)
                totals[kind] = totals.get(kind, 0.0) + t.user + t.system
            self.samples.append((time.time(), totals))
            self.stop.wait(self.every_s)

    def shares(self, t0: float, t1: float) -> dict:
        """CPU seconds per second of wall time, by kind, between the samples nearest t0, t1."""
        self.stop.set()
        self.thread.join()
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        wall = max(b[0] - a[0], 1e-9)
        kinds = set(a[1]) | set(b[1])
        return {k: max(0.0, b[1].get(k, 0.0) - a[1].get(k, 0.0)) / wall for k in sorted(kinds)}


def phase_ray(workdir: str, files: list[str], student: str, steps: int, zero: int, workers: int,
              threads: int) -> dict:
    import torch

    from xdistil_ray.run.runfolder import RunFolder
    from xdistil_ray.distill import step as train
    from xdistil_ray.distill.train_loop import StageSpec

    start = time.time()
    _common.start_ray()
    run = RunFolder(os.path.join(workdir, "run"))
    rel = f"zero{zero}-w{workers}"
    run.delete(rel)
    use_gpu = torch.cuda.is_available()
    spec = StageSpec(name=rel, losses=_specs(), init_path=student, init_in_run=False, run=run,
                     total_steps=steps, batch_size=BATCH, learning_rate=1e-3, zero_stage=zero,
                     log_every=LOG_EVERY, checkpoint_every=10 ** 9, seed=0,
                     torch_threads=threads, label_names=LABELS, teacher_hidden=TEACHER_HIDDEN,
                     teacher_layers=TEACHER_LAYERS)
    dataset = train.stage_dataset(run, files, ["input_ids", "logits", "hidden"], False)
    cpus = 1.0 if workers == 1 else max(0.5, (os.cpu_count() or 2) / workers - 0.5)
    sampler = CpuSampler()
    marker = train.run_stage(run, rel, spec, dataset,
                             train.Scaling(workers, use_gpu, cpus, 0, {}), fingerprint={})
    total = time.time() - start
    history = run.read_json(f"{rel}/losses.json")["history"]
    cpu = sampler.shares(history[0][2], history[-1][2]) if len(history) > 1 else {}
    steady = marker.steps_per_second  # None below two logged points (--steps < 40)
    return {"steady": float("nan") if steady is None else steady * workers, "all_in": steps * workers / total,
            "seconds": total, "stage_seconds": marker.seconds,
            "final_loss": marker.final_loss, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--zero", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray Train workers (the plain loop is one process)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the plain loop and of all workers together "
                             "(default: every CPU)")
    parser.add_argument("--workdir", default="runs/bench-training")
    args = parser.parse_args()
    from xdistil_ray.modeling.models import resolve_teacher_path

    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    shutil.rmtree(os.path.join(workdir, "run"), ignore_errors=True)
    script = os.path.abspath(__file__)
    total_threads = args.threads or os.cpu_count() or 2
    threads = max(1, total_threads // args.workers)
    rows = args.steps * BATCH * args.workers
    files = write_data(os.path.join(workdir, f"data-{rows}"), rows, resolve_teacher_path("embedded"))
    student = _common.random_bert(os.path.join(workdir, "student"), layers=4, hidden=128, heads=4,
                                  intermediate=512)
    plain_args = dict(files=files, student=student, steps=args.steps, threads=total_threads)
    before = _common.run_phase(script, "plain", plain_args)
    results = {}
    for zero in args.zero:
        results[zero] = _common.run_phase(script, "ray", dict(
            workdir=workdir, files=files, student=student, steps=args.steps, zero=zero,
            workers=args.workers, threads=threads))
    after = _common.run_phase(script, "plain", plain_args)  # before and after: drift shows
    plain = {k: (before[k] + after[k]) / 2 for k in before}

    print(f"\nmachine: {_common.machine()}")
    print(f"student 4 x 128 (random), representation + logits losses, batch {BATCH}, "
          f"{args.steps} steps; plain loop 1 process x {total_threads} threads (steady "
          f"{before['steady']:.2f} before and {after['steady']:.2f} after the Ray runs); Ray Train "
          f"{args.workers} worker(s) x {threads} threads (steps/s summed over workers' batches)")
    print(f"{'':18s}{'steady steps/s':>16s}{'ratio':>8s}{'all-in steps/s':>16s}{'ratio':>8s}"
          f"{'seconds':>9s}")
    print(f"{'plain loop':18s}{plain['steady']:16.2f}{1:8.3f}{plain['all_in']:16.2f}{1:8.3f}"
          f"{plain['seconds']:9.1f}")
    for zero, r in results.items():
        print(f"{'Ray+DS ZeRO-' + str(zero):18s}{r['steady']:16.2f}{r['steady'] / plain['steady']:8.3f}"
              f"{r['all_in']:16.2f}{r['all_in'] / plain['all_in']:8.3f}{r['seconds']:9.1f}")
    for zero, r in results.items():
        if r.get("cpu"):
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpu"].items(),
                                                               key=lambda kv: -kv[1]))
            print(f"ZeRO-{zero} steady window, CPU cores busy by process kind "
                  f"(of {os.cpu_count()}): {parts}")
    best = max(results, key=lambda z: results[z]["steady"])
    print(f"fastest: ZeRO-{best}; target: steady ratio >= 0.95 on one worker")


if __name__ == "__main__":
    if not _common.phase_main({"plain": phase_plain, "ray": phase_ray}):
        main()
