"""Step ``eval``: fidelity to the teacher, dev accuracy, size and speed. Runs as a Ray task."""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from xdistil_ray.objective import TOPK_COLUMNS, with_dense_logits
from xdistil_ray.runfolder import RunFolder
from xdistil_ray.train_loop import pad_batch

STEP = "eval"


def _read_rows(run: RunFolder, paths: list[str], columns: list[str], limit: int,
              heldout_only: bool) -> dict[str, list]:
    """Up to ``limit`` rows of ``columns`` (those the files have) from committed parquet files,
    streamed file by file."""
    out: dict[str, list] = {}
    for path in paths:
        with run.fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            present = [c for c in columns if c in pf.schema_arrow.names]
            table = pf.read(columns=present + (["heldout"] if heldout_only else []))
        if heldout_only:
            table = table.filter(table.column("heldout"))
        for c in present:
            out.setdefault(c, []).extend(table.column(c).to_pylist())
        if len(out.get(columns[0], [])) >= limit:
            break
    return {c: v[:limit] for c, v in out.items()}


def _batch(rows: dict, start: int, stop: int, pad_id: int) -> dict:
    part = {k: rows[k][start:stop] for k in ("input_ids", "token_type_ids") if k in rows}
    return pad_batch(part, pad_id, None)


@torch.inference_mode()
def predict(model, rows: dict, batch_size: int = 128) -> list[np.ndarray]:
    """Per row: logits [C] (sentence tasks) or [T, C] (token tasks, real tokens), or the
    mean-pooled last hidden state [H] (plain encoder)."""
    pad_id = model.config.pad_token_id or 0
    out: list[np.ndarray] = []
    for start in range(0, len(rows["input_ids"]), batch_size):
        batch = _batch(rows, start, start + batch_size, pad_id)
        result = model(**batch)
        mask = batch["attention_mask"]
        if getattr(result, "logits", None) is None:
            states = result.last_hidden_state.float()
            pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out.extend(pooled.numpy())
        elif result.logits.dim() == 3:
            out.extend(l[: int(n)].float().numpy() for l, n in zip(result.logits, mask.sum(1)))
        else:
            out.extend(result.logits.float().numpy())
    return out


def word_predictions(token_logits: np.ndarray, word_ids: list[int]) -> list[int]:
    """Token-level logits [T, C] -> one prediction per word, from the word's first sub-word."""
    preds, previous = [], -1
    for t, w in enumerate(word_ids):
        if w >= 0 and w != previous:
            preds.append(int(token_logits[t].argmax()))
        previous = w
    return preds


def tag_scores(gold: list[list[int]], pred: list[list[int]], outside: int | None) -> dict:
    """Word accuracy, and micro F1 over words whose gold or predicted tag is not ``outside``."""
    g = np.concatenate([np.asarray(x) for x in gold]) if gold else np.zeros(0)
    p = np.concatenate([np.asarray(x) for x in pred]) if pred else np.zeros(0)
    accuracy = float((g == p).mean()) if len(g) else 0.0
    positive_g = g != outside if outside is not None else np.ones_like(g, dtype=bool)
    positive_p = p != outside if outside is not None else np.ones_like(p, dtype=bool)
    tp = float(((g == p) & positive_g).sum())
    precision = tp / max(1.0, float(positive_p.sum()))
    recall = tp / max(1.0, float(positive_g.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"word_accuracy": accuracy, "f1": f1}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between representations [N, D1] and [N, D2] (width-independent, 1 = same up
    to rotation and scale)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


@torch.inference_mode()
def batch_latency_s(model, rows: dict, repeats: int) -> float:
    """Median seconds of one forward pass over ``rows`` as a single padded batch."""
    batch = _batch(rows, 0, len(rows["input_ids"]), model.config.pad_token_id or 0)
    model(**batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fidelity(task: str, teacher, student, heldout: dict) -> dict:
    """Agreement of the student's predictions with the teacher's stored ones (per token for
    token tasks); for a plain encoder, linear CKA of their sentence representations."""
    student_out = predict(student, heldout)
    if task == "none":
        return {"heldout_rows": len(student_out),
                "representation_cka": linear_cka(np.stack(student_out),
                                                 np.stack(predict(teacher, heldout)))}
    if task == "token":
        num_labels = student.config.num_labels
        agree = [np.asarray(t, dtype=np.float32).reshape(-1, num_labels).argmax(-1) == s.argmax(-1)
                 for t, s in zip(heldout["logits"], student_out)]
        return {"heldout_rows": len(student_out),
                "agreement": float(np.concatenate(agree).mean()) if agree else 0.0}
    teacher_pred = np.asarray(heldout["logits"], dtype=np.float32).argmax(-1)
    return {"heldout_rows": len(student_out),
            "agreement": float((np.stack(student_out).argmax(-1) == teacher_pred).mean())}


def _dev_scores(task: str, model, dev: dict, label_names: list[str]) -> dict:
    out = predict(model, dev)
    if task == "token":
        index = {name: i for i, name in enumerate(label_names)}
        pred = [word_predictions(o, w) for o, w in zip(out, dev["word_ids"])]
        # words cut off by truncation have no prediction and are not scored
        gold = [[index[t] for t in tags][: len(p)] for p, tags in zip(pred, dev["tags"])]
        return tag_scores(gold, pred, index.get("O"))
    gold = np.array([label_names.index(str(v)) for v in dev["label"]])
    return {"accuracy": float((np.stack(out).argmax(-1) == gold).mean())}


def evaluate(run: RunFolder, *, task: str, teacher_path: str, teacher_in_run: bool,
             heldout_paths: list[str], dev_paths: list[str], label_names: list[str],
             max_heldout_rows: int, speed_batch_size: int, speed_repeats: int,
             torch_threads: int) -> dict:
    from xdistil_ray import models

    torch.set_num_threads(torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        if teacher_in_run:
            teacher_path = run.download(teacher_path, f"{tmp}/teacher", "model")
        teacher = models.load_model(teacher_path, task).eval()
        student = models.load_model(run.download("student", f"{tmp}/student"), task).eval()
    heldout = _read_rows(run, heldout_paths,
                         ["input_ids", "token_type_ids", "logits", *TOPK_COLUMNS],
                         max_heldout_rows, True)
    heldout = with_dense_logits(heldout, len(label_names))
    metrics = {"eval": _fidelity(task, teacher, student, heldout)}
    speed_rows = heldout
    if dev_paths:
        dev = _read_rows(run, dev_paths, ["input_ids", "token_type_ids", "label", "word_ids",
                                          "tags"], 10**9, False)
        metrics["eval"]["dev_rows"] = len(dev["input_ids"])
        for who, model in (("teacher", teacher), ("student", student)):
            for name, value in _dev_scores(task, model, dev, label_names).items():
                metrics["eval"][f"{who}_{name}"] = value
        speed_rows = dev
    speed_rows = {k: v[:speed_batch_size] for k, v in speed_rows.items()}
    teacher_s = batch_latency_s(teacher, speed_rows, speed_repeats)
    student_s = batch_latency_s(student, speed_rows, speed_repeats)
    metrics["speed"] = {"batch_size": len(speed_rows["input_ids"]), "torch_threads": torch_threads,
                        "teacher_batch_s": teacher_s, "student_batch_s": student_s,
                        "speedup": teacher_s / student_s}
    sizes = {"teacher_params": models.num_params(teacher),
             "student_params": models.num_params(student)}
    metrics["size"] = {**sizes, "compression": sizes["teacher_params"] / sizes["student_params"]}
    return metrics


def run_step(run: RunFolder, *, num_cpus: float, fingerprint: dict, **kwargs) -> dict:
    """Runs :func:`evaluate` as a Ray task and commits ``eval/metrics.json``."""
    import ray

    threads = max(1, int(num_cpus))
    task = ray.remote(num_cpus=num_cpus)(evaluate)
    metrics = ray.get(task.remote(run, torch_threads=threads, **kwargs))
    run.write_json(f"{STEP}/metrics.json", metrics)
    return run.commit(STEP, fingerprint=fingerprint, **metrics)
