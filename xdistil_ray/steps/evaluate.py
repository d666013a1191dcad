"""Step ``eval``: fidelity to the teacher, dev accuracy, size and speed. Runs as a Ray task."""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from xdistil_ray.runfolder import RunFolder
from xdistil_ray.train_loop import pad_batch

STEP = "eval"


def _read_rows(run: RunFolder, paths: list[str], columns: list[str], limit: int,
               heldout_only: bool) -> dict[str, list]:
    """Up to ``limit`` rows of ``columns`` from committed parquet files, streamed file by file."""
    out: dict[str, list] = {c: [] for c in columns}
    for path in paths:
        with run.fs.open_input_file(path) as f:
            table = pq.read_table(f, columns=columns + (["heldout"] if heldout_only else []))
        if heldout_only:
            table = table.filter(table.column("heldout"))
        for c in columns:
            out[c].extend(table.column(c).to_pylist())
        if len(out[columns[0]]) >= limit:
            break
    return {c: v[:limit] for c, v in out.items()}


@torch.inference_mode()
def predict(model, input_ids: list, batch_size: int = 128) -> np.ndarray:
    """Logits [N, C] for token id rows."""
    pad_id = model.config.pad_token_id or 0
    out = []
    for start in range(0, len(input_ids), batch_size):
        batch = pad_batch({"input_ids": input_ids[start:start + batch_size]}, pad_id, None)
        out.append(model(**batch).logits.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))


@torch.inference_mode()
def batch_latency_s(model, input_ids: list, repeats: int) -> float:
    """Median seconds of one forward pass over ``input_ids`` as a single padded batch."""
    batch = pad_batch({"input_ids": input_ids}, model.config.pad_token_id or 0, None)
    model(**batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate(run: RunFolder, *, teacher_path: str, teacher_in_run: bool, heldout_paths: list[str],
             dev_paths: list[str], label_names: list[str], max_heldout_rows: int,
             speed_batch_size: int, speed_repeats: int, torch_threads: int) -> dict:
    from xdistil_ray import models

    torch.set_num_threads(torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        if teacher_in_run:
            teacher_path = run.download(teacher_path, f"{tmp}/teacher", "model")
        teacher = models.load_classifier(teacher_path).eval()
        student = models.load_classifier(run.download("student", f"{tmp}/student")).eval()
    heldout = _read_rows(run, heldout_paths, ["input_ids", "logits"], max_heldout_rows, True)
    student_pred = predict(student, heldout["input_ids"]).argmax(-1)
    teacher_pred = np.asarray(heldout["logits"], dtype=np.float32).argmax(-1)
    metrics = {"eval": {"heldout_rows": len(student_pred),
                        "agreement": float((student_pred == teacher_pred).mean())}}
    speed_rows = heldout["input_ids"][:speed_batch_size]
    if dev_paths:
        dev = _read_rows(run, dev_paths, ["input_ids", "label"], 10**9, False)
        gold = np.array([label_names.index(str(v)) for v in dev["label"]])
        metrics["eval"].update(
            dev_rows=len(gold),
            teacher_accuracy=float((predict(teacher, dev["input_ids"]).argmax(-1) == gold).mean()),
            student_accuracy=float((predict(student, dev["input_ids"]).argmax(-1) == gold).mean()))
        speed_rows = dev["input_ids"][:speed_batch_size]
    teacher_s = batch_latency_s(teacher, speed_rows, speed_repeats)
    student_s = batch_latency_s(student, speed_rows, speed_repeats)
    metrics["speed"] = {"batch_size": len(speed_rows), "torch_threads": torch_threads,
                        "teacher_batch_s": teacher_s, "student_batch_s": student_s,
                        "speedup": teacher_s / student_s}
    metrics["size"] = {"teacher_params": models.num_params(teacher),
                       "student_params": models.num_params(student)}
    metrics["size"]["compression"] = metrics["size"]["teacher_params"] / metrics["size"]["student_params"]
    return metrics


def run_step(run: RunFolder, *, num_cpus: float, fingerprint: dict, **kwargs) -> dict:
    """Runs :func:`evaluate` as a Ray task and commits ``eval/metrics.json``."""
    import ray

    threads = max(1, int(num_cpus))
    task = ray.remote(num_cpus=num_cpus)(evaluate)
    metrics = ray.get(task.remote(run, torch_threads=threads, **kwargs))
    run.write_json(f"{STEP}/metrics.json", metrics)
    return run.commit(STEP, fingerprint=fingerprint, **metrics)
