"""Benchmark: the teacher inference step (Ray Data, actor pool) against a plain single-process
PyTorch loop over the same sentences, with the same model, batch size, length grouping and
total threads, both writing the same fp16 outputs.

    .venv/bin/python benchmarks/teacher_inference.py [--sentences 40000] [--gpu]

CPU (default): the embedded teacher (all-MiniLM-L6-v2 with a 2-label head), the pipeline's
default inference settings (2 actors x 1 thread; batch 128, 8-batch length windows) against a
2-thread plain loop. Prints, beside the machine: sentences/s in steady state (between 10% and
90% of the rows done, from the output parts' write times) and counting everything (Ray's start,
the model loads, reading and writing), with the ratios against the targets 0.95 and 0.8.

``--gpu``: a BERT-base-sized teacher (12 x 768, random weights) in bf16, one actor per GPU,
and its model FLOP utilization: the FLOPs of the real (unpadded) tokens per second against
the GPU's bf16 matrix-multiply throughput measured in the same run (target 50%).

Each side runs in its own fresh process; the corpus is prepared once beforehand.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import time

import _common


# ------------------------------------------------------------------ phases (fresh processes)

def phase_prepare(workdir: str, sentences: int, teacher: str, max_length: int) -> dict:
    _common.start_ray()
    corpus = _common.write_sentences(os.path.join(workdir, "corpus.txt"), sentences)
    cfg = _common.config(**{"corpus.max_length": max_length})
    marker = _common.prepare(os.path.join(workdir, "run"), corpus, teacher, cfg)
    return {"kept": marker.corpus.kept}


def phase_ray(workdir: str, teacher: str, overrides: dict) -> dict:
    start = time.time()
    _common.start_ray()
    ray_started = time.time() - start
    cfg = _common.config(**overrides)
    run_dir = os.path.join(workdir, "run")
    shutil.rmtree(os.path.join(run_dir, "teacher"), ignore_errors=True)
    result = _common.teacher_pass(run_dir, _common.data_marker(run_dir), teacher, cfg)
    total = time.time() - start
    import pyarrow.parquet as pq

    parts = [(os.path.getmtime(p), pq.ParquetFile(p).metadata.num_rows)
             for p in glob.glob(os.path.join(run_dir, "teacher", "shards", "*", "part-*.parquet"))]
    parts.sort()
    points, done = [], 0
    for t, n in parts:
        done += n
        points.append((t, done))
    return {"rows": result.rows, "total_s": total, "ray_start_s": ray_started,
            "steady": _common.steady_rate(points)}


def phase_plain(workdir: str, teacher: str, batch_size: int, group_batches: int,
                threads: int, device: str, part: int = 0, parts: int = 1) -> dict:
    """The baseline: read shard, sort each window by length, forward, fp16, write; one process
    (of ``parts``, taking every ``parts``-th shard from ``part``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForSequenceClassification

    start = time.time()
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(teacher).to(device, dtype).eval()
    out_dir = os.path.join(workdir, f"plain-{part}-of-{parts}")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    window, points, done = batch_size * group_batches, [], 0
    marker = _common.data_marker(os.path.join(workdir, "run"))
    for shard in marker.corpus.shards[part::parts]:
        table = pq.read_table(os.path.join(workdir, "run", "data", "corpus", shard.file),
                              columns=["id", "input_ids", "heldout"])
        rows = table.column("input_ids").to_numpy(zero_copy_only=False)
        logits, hidden = [None] * len(rows), [None] * len(rows)
        for w in range(0, len(rows), window):
            order = w + np.argsort([len(r) for r in rows[w:w + window]], kind="stable")
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                length = max(len(rows[i]) for i in idx)
                ids = np.zeros((len(idx), length), dtype=np.int64)
                mask = np.zeros((len(idx), length), dtype=np.int64)
                for j, i in enumerate(idx):
                    ids[j, :len(rows[i])] = rows[i]
                    mask[j, :len(rows[i])] = 1
                with torch.inference_mode():
                    out = model(input_ids=torch.from_numpy(ids).to(device),
                                attention_mask=torch.from_numpy(mask).to(device),
                                output_hidden_states=True)
                lg = out.logits.to(torch.float16).cpu().numpy()
                hd = out.hidden_states[-1][:, 0].to(torch.float16).cpu().numpy()
                for j, i in enumerate(idx):
                    logits[i], hidden[i] = lg[j], hd[j]
            done += len(order)
            points.append((time.time(), done))
        columns = {name: table.column(name) for name in ("id", "input_ids", "heldout")}
        for name, values in (("logits", logits), ("hidden", hidden)):
            matrix = np.stack(values)
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)),
                                                              matrix.shape[1])
        pq.write_table(pa.table(columns), os.path.join(out_dir, shard["file"]))
    return {"rows": done, "total_s": time.time() - start, "steady": _common.steady_rate(points),
            "points": points, "start": start}


def plain_processes(script: str, num: int, threads: int, device: str, **args) -> dict:
    """The baseline as ``num`` plain processes side by side (one per actor of the Ray step,
    each on its own GPU where there are several), ``threads`` split among them."""
    import torch

    gpus = torch.cuda.device_count() if device == "cuda" else 0
    results = _common.run_phases(script, "plain", [
        dict(args, threads=max(1, threads // num), part=k, parts=num,
             device=f"cuda:{k % gpus}" if gpus else device) for k in range(num)])
    events = sorted((t, n) for r in results for t, n in _increments(r["points"]))
    points, done = [], 0
    for t, n in events:
        done += n
        points.append((t, done))
    start = min(r["start"] for r in results)
    return {"rows": done, "total_s": max(r["start"] + r["total_s"] for r in results) - start,
            "steady": _common.steady_rate(points)}


def _increments(points: list) -> list[tuple[float, int]]:
    previous, out = 0, []
    for t, done in points:
        out.append((t, done - previous))
        previous = done
    return out


def phase_peak(seconds: float = 5.0) -> dict:
    """The GPU's bf16 matrix-multiply throughput (FLOP/s), measured."""
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    count, start = 0, time.time()
    while time.time() - start < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        count += 10
    return {"flops": 2 * n ** 3 * count / (time.time() - start),
            "gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count()}


# ------------------------------------------------------------------ the parent

def padding_shares(run_dir: str, batch_size: int, group_batches: int) -> tuple:
    """Padded share of the positions run: batches in corpus order vs length-grouped windows."""
    import numpy as np
    import pyarrow.parquet as pq

    plain = grouped = real = 0
    for shard in _common.data_marker(run_dir).corpus.shards:
        path = os.path.join(run_dir, "data", "corpus", shard.file)
        lengths = np.array([len(r) for r in pq.read_table(path, columns=["input_ids"])
                            .column("input_ids").to_pylist()])
        real += lengths.sum()
        for b in range(0, len(lengths), batch_size):
            part = lengths[b:b + batch_size]
            plain += part.max() * len(part)
        window = batch_size * group_batches
        for w in range(0, len(lengths), window):
            part = np.sort(lengths[w:w + window])
            for b in range(0, len(part), batch_size):
                grouped += part[b:b + batch_size].max() * len(part[b:b + batch_size])
    return 1 - real / plain, 1 - real / grouped, real


def model_flops_per_token(teacher: str, mean_length: float) -> float:
    """Forward FLOPs per real token of a BERT encoder: the blocks' matrix multiplies
    (2 x weights) plus attention scores and mixing (4 x length x hidden per block)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(teacher)
    h, i, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    return layers * (2 * (4 * h * h + 2 * h * i) + 4 * mean_length * h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=0,
                        help="corpus size (default 40000 on CPU, 400000 with --gpu)")
    parser.add_argument("--gpu", action="store_true", help="BERT-base-sized teacher on GPUs")
    parser.add_argument("--workdir", default="runs/bench-teacher")
    args = parser.parse_args()
    import torch

    os.makedirs(args.workdir, exist_ok=True)
    workdir = os.path.abspath(args.workdir)
    script = os.path.abspath(__file__)
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device here")
        sentences = args.sentences or 400_000
        teacher = _common.random_bert(os.path.join(workdir, "bert-base"), layers=12, hidden=768,
                                      heads=12, intermediate=3072)
        gpus = torch.cuda.device_count()
        overrides = {"teacher.inference.num_actors": gpus,
                     "teacher.inference.num_gpus_per_actor": 1.0,
                     "teacher.inference.num_cpus_per_actor": 1.0,
                     "teacher.inference.batch_size": 256}
        threads, device = 1, "cuda"
    else:
        sentences = args.sentences or 40_000
        teacher = _common.teacher_with_head(os.path.join(workdir, "teacher"))
        overrides, device = {}, "cpu"
    cfg = _common.config(**overrides)
    inf = cfg.teacher.inference
    if not args.gpu:
        threads = inf.num_actors * max(1, int(inf.num_cpus_per_actor))
    _common.run_phase(script, "prepare", dict(
        workdir=workdir, sentences=sentences, teacher=teacher, max_length=cfg.corpus.max_length))
    plain_args = dict(workdir=workdir, teacher=teacher, batch_size=inf.batch_size,
                      group_batches=inf.group_batches)
    plain = _common.run_phase(script, "plain", dict(plain_args, threads=threads, device=device))
    processes = plain_processes(script, inf.num_actors, threads, device, **plain_args)
    ray_side = _common.run_phase(script, "ray", dict(
        workdir=workdir, teacher=teacher, overrides=overrides))
    unsorted, grouped, real_tokens = padding_shares(os.path.join(workdir, "run"),
                                                    inf.batch_size, inf.group_batches)

    print(f"\nmachine: {_common.machine()}")
    print(f"teacher {teacher}; {ray_side['rows']} sentences, {real_tokens / ray_side['rows']:.1f} "
          f"real tokens each; batch {inf.batch_size}, windows of {inf.group_batches} batches; "
          f"padding {unsorted:.1%} in corpus order, {grouped:.1%} length-grouped")
    n = inf.num_actors
    print(f"Ray step: {n} actors x {max(1, int(inf.num_cpus_per_actor))} threads"
          f"{' x 1 GPU' if args.gpu else ''}; plain loop: 1 process x {threads} threads, and "
          f"{n} plain processes x {max(1, threads // n)} threads (one per actor)")
    ray_rate = ray_side["rows"] / ray_side["total_s"]
    print(f"{'':24s}{'baseline':>14s}{'Ray step':>14s}{'ratio':>8s}{'target':>8s}")
    for name, base in (("plain loop", plain), (f"{n} plain processes", processes)):
        base_rate = base["rows"] / base["total_s"]
        print(f"{'steady sentences/s':24s}{base['steady']:14.0f}{ray_side['steady']:14.0f}"
              f"{ray_side['steady'] / base['steady']:8.3f}{0.95:8.2f}   vs {name}")
        print(f"{'all-in sentences/s':24s}{base_rate:14.0f}{ray_rate:14.0f}"
              f"{ray_rate / base_rate:8.3f}{0.8:8.2f}   vs {name}")
        print(f"{'seconds':24s}{base['total_s']:14.1f}{ray_side['total_s']:14.1f}   "
              f"vs {name} (Ray start {ray_side['ray_start_s']:.1f} s)")
    if args.gpu:
        peak = _common.run_phase(script, "peak", {})
        per_token = model_flops_per_token(teacher, real_tokens / ray_side["rows"])
        tokens_per_s = ray_side["steady"] * real_tokens / ray_side["rows"]
        achieved = tokens_per_s * per_token / peak["gpus"]
        print(f"GPU {peak['gpu']} x {peak['gpus']}: measured bf16 matmul "
              f"{peak['flops'] / 1e12:.0f} TFLOP/s; teacher {achieved / 1e12:.1f} TFLOP/s per GPU on "
              f"real tokens; MFU {achieved / peak['flops']:.1%} (target 50%)")


if __name__ == "__main__":
    if not _common.phase_main({"prepare": phase_prepare, "ray": phase_ray, "plain": phase_plain,
                               "peak": phase_peak}):
        main()
