"""Step ``eval``: fidelity to the teacher, dev scores, size and speed. Runs as a Ray task.

Fidelity is measured on held-out transfer sentences (never trained on) against the teacher's
stored predictions: agreement of the argmax, KL divergence, and the similarity of the last
layer's sentence representations (linear CKA, and the cosine after a linear map fitted on half
of them). Speed is measured for teacher and student on the same machine, in the same process:
latency at batch 1 and throughput at ``speed_batch_size``, on CPU always and on the GPU when the
task has one.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from xdistil_ray.evaluate import metrics
from xdistil_ray.tasks import qa
from xdistil_ray.modeling.models import model_inputs, task_logits
from xdistil_ray.distill.objective import TOPK_COLUMNS, with_dense_logits
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.data.batches import pad_batch

STEP = "eval"
VERSION = 3
"""The figures' version (3: ONNX Runtime's): a run folder evaluated by an older one is
measured again."""
DEV_COLUMNS = ["input_ids", "token_type_ids", "label", "word_ids", "tags", "example", "context",
               "offset_start", "offset_end", "answers"]
"""What dev scores read of a dev set (those its task has)."""
QA_COLUMNS = ["example", "context", "offset_start", "offset_end"]
"""What decoding QA answers reads of a window besides its tokens."""


def read_rows(run: RunFolder, paths: list[str], columns: list[str], limit: int,
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


def _batch(rows: dict, start: int, stop: int, pad_id: int, device="cpu") -> dict:
    part = {k: rows[k][start:stop] for k in ("input_ids", "token_type_ids") if k in rows}
    return {k: v.to(device) for k, v in pad_batch(part, pad_id, None).items()}


def pooling(task: str) -> str:
    """The sentence representation compared with the teacher's: the CLS state for sentence and
    pair heads (what their classifiers read), the mean over real tokens otherwise."""
    return "cls" if task in ("sentence", "pair") else "mean"


@torch.inference_mode()
def run_model(model, rows: dict, pool: str, batch_size: int = 128):
    """One pass over ``rows``: per-row predictions (logits [C], or [T, C] over real tokens for
    token tasks; None for a plain encoder) and the last layer's sentence representations
    [N, H], on the model's device (a training worker's GPU, in bf16, scores its dev set)."""
    pad_id = model.config.pad_token_id or 0
    device = next(model.parameters()).device
    preds: list[np.ndarray] | None = []
    reps = []
    for start in range(0, len(rows["input_ids"]), batch_size):
        batch = _batch(rows, start, start + batch_size, pad_id, device)
        result = model(**model_inputs(model, batch), output_hidden_states=True)
        mask = batch["attention_mask"]
        states = result.hidden_states[-1].float()
        if pool == "cls":
            reps.append(states[:, 0].cpu().numpy())
        else:
            reps.append(((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
                        .cpu().numpy())
        logits = task_logits(result)
        if logits is None:
            preds = None
        elif logits.dim() == 3:
            preds.extend(l[: int(n)].float().cpu().numpy() for l, n in zip(logits, mask.sum(1)))
        else:
            preds.extend(logits.float().cpu().numpy())
    width = model.config.hidden_size
    return preds, (np.concatenate(reps) if reps else np.zeros((0, width), np.float32))


def word_predictions(token_logits: np.ndarray, word_ids: list[int]) -> list[int]:
    """Token-level logits [T, C] -> one prediction per word, from the word's first sub-word."""
    preds, previous = [], -1
    for t, w in enumerate(word_ids):
        if w >= 0 and w != previous:
            preds.append(int(token_logits[t].argmax()))
        previous = w
    return preds


def fidelity(task: str, teacher, student, heldout: dict, num_labels: int,
             windows: qa.WindowSettings | None = None, teacher_run=None) -> dict:
    """The student against the teacher on held-out transfer sentences: agreement and KL with
    the teacher's stored predictions (per token for token tasks), and representation
    similarity (the teacher's representations recomputed here, or ``teacher_run``:
    :func:`run_model`'s). Extractive QA: agreement of the decoded answers instead (exact match
    and F1 of the student's against the teacher's, "no answer" where either prefers it to its
    best span)."""
    pool = pooling(task)
    student_preds, student_reps = run_model(student, heldout, pool)
    teacher_preds, teacher_reps = teacher_run or run_model(teacher, heldout, pool)
    out = {"heldout_rows": len(student_reps),
           "representation_cka": metrics.linear_cka(student_reps, teacher_reps),
           "hidden_cosine": metrics.mapped_cosine(student_reps, teacher_reps)}
    return {**out, **agreement_with_teacher(task, student_preds, teacher_preds, heldout,
                                            num_labels, windows)}


def agreement_with_teacher(task: str, preds, teacher_preds, heldout: dict, num_labels: int,
                           windows: qa.WindowSettings | None = None) -> dict:
    """Agreement (and KL) of per-row predictions ``preds`` with the teacher's: its stored
    logits, or for extractive QA its answers decoded from ``teacher_preds``."""
    if task == "qa":
        return _answer_agreement(qa_answers(teacher_preds, heldout, windows),
                                 qa_answers(preds, heldout, windows))
    if preds is None or "logits" not in heldout:
        return {}
    stored = [np.asarray(t, dtype=np.float32) for t in heldout["logits"]]
    return {"agreement": metrics.agreement(stored, preds, num_labels),
            "kl_divergence": metrics.kl_divergence(stored, preds, num_labels)}


def qa_answers(preds: list[np.ndarray], rows: dict, windows: qa.WindowSettings) -> dict:
    """Each question's (``example``'s) best answer over its windows' [T, 2] start/end logits
    (CLS first in every window, as every supported family's tokenizer puts it)."""
    by_example: dict = {}
    for i, example in enumerate(rows["example"]):
        by_example.setdefault(example, []).append(i)
    return {example: qa.best_answer(
        [{"start_logits": preds[i][:, 0], "end_logits": preds[i][:, 1], "cls": 0,
          "offset_start": rows["offset_start"][i], "offset_end": rows["offset_end"][i]}
         for i in idx], rows["context"][idx[0]], windows)
        for example, idx in by_example.items()}


def _answer_agreement(teacher: dict, student: dict) -> dict:
    def said(answer):
        return "" if answer.null_margin > 0 or not answer.text else answer.text

    pairs = [(said(student[q]), said(teacher[q])) for q in teacher]
    n = max(1, len(pairs))
    return {"heldout_questions": len(pairs),
            "agreement": sum(qa.exact_match(s, t) for s, t in pairs) / n,
            "agreement_f1": sum(qa.f1_score(s, t) for s, t in pairs) / n}


def dev_scores(task: str, model, dev: dict, label_names: list[str],
               windows: qa.WindowSettings | None = None) -> dict:
    """Accuracy and macro-F1 (sentence, pair), word accuracy and entity-level F1 (token), or
    SQuAD's exact match and F1 (qa; with unanswerable questions, HasAns / NoAns too)."""
    preds, _ = run_model(model, dev, pooling(task))
    return scores_of(task, preds, dev, label_names, windows)


def scores_of(task: str, preds: list[np.ndarray], dev: dict, label_names: list[str],
              windows: qa.WindowSettings | None = None) -> dict:
    """:func:`dev_scores` from per-row predictions (:func:`run_model`'s, or ONNX Runtime's)."""
    if task == "qa":
        answers = qa_answers(preds, dev, windows)
        golds = {}
        for example, gold in zip(dev["example"], dev["answers"]):
            golds.setdefault(example, list(gold))
        return qa.squad_scores(answers, golds)
    if task == "token":
        pred = [[label_names[i] for i in word_predictions(o, w)]
                for o, w in zip(preds, dev["word_ids"])]
        # words cut off by truncation have no prediction and are not scored
        gold = [list(tags)[: len(p)] for p, tags in zip(pred, dev["tags"])]
        return metrics.entity_scores(gold, pred)
    gold = np.array([label_names.index(str(v)) for v in dev["label"]])
    return metrics.classification_scores(gold, np.stack(preds).argmax(-1), len(label_names))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def measure_speed(model, rows: dict, *, batch_size: int, repeats: int, device: str) -> dict:
    """Latency at batch 1 (median over ``repeats`` sentences, each on its own) and throughput
    (sentences per second) at ``batch_size`` (median of ``repeats`` padded batches)."""
    model = model.to(device)
    pad_id = model.config.pad_token_id or 0
    n = len(rows["input_ids"])

    def timed(start: int, stop: int) -> float:
        batch = model_inputs(model, _batch(rows, start, stop, pad_id, device))
        _sync(device)
        t0 = time.perf_counter()
        model(**batch)
        _sync(device)
        return time.perf_counter() - t0

    timed(0, 1), timed(0, min(n, batch_size))  # warm-up
    single = [timed(i % n, i % n + 1) for i in range(repeats)]
    batched = [timed(0, min(n, batch_size)) for _ in range(repeats)]
    model.to("cpu")
    return {"latency_ms": 1000 * statistics.median(single),
            "throughput": min(n, batch_size) / statistics.median(batched)}


def speed(teacher, student, rows: dict, *, batch_size: int, repeats: int,
          torch_threads: int) -> dict:
    """Teacher and student speed, and the student's speedups, per device (``cpu`` always,
    ``cuda`` when this process has a GPU)."""
    out = {"batch_size": min(batch_size, len(rows["input_ids"]))}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        t = measure_speed(teacher, rows, batch_size=batch_size, repeats=repeats, device=device)
        s = measure_speed(student, rows, batch_size=batch_size, repeats=repeats, device=device)
        out[device] = {
            "name": (torch.cuda.get_device_name() if device == "cuda"
                     else f"{torch_threads} CPU thread{'s' if torch_threads != 1 else ''}"),
            "teacher_latency_ms": t["latency_ms"], "student_latency_ms": s["latency_ms"],
            "teacher_throughput": t["throughput"], "student_throughput": s["throughput"],
            "speedup_latency": t["latency_ms"] / s["latency_ms"],
            "speedup_throughput": s["throughput"] / t["throughput"]}
    return out


def disk_bytes(model) -> int:
    """Bytes of the model's weights as ``save_pretrained`` writes them (safetensors)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)
                   if f.endswith(".safetensors"))


def evaluate(run: RunFolder, *, task: str, teacher_path: str, teacher_in_run: bool,
             heldout_paths: list[str], dev_paths: list[str], label_names: list[str],
             max_heldout_rows: int, speed_batch_size: int, speed_repeats: int,
             torch_threads: int, windows: qa.WindowSettings | None = None) -> dict:
    from xdistil_ray.modeling import models

    torch.set_num_threads(torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        if teacher_in_run:
            teacher_path = run.download(teacher_path, f"{tmp}/teacher", "model")
        teacher = models.load_model(teacher_path, task).eval()
        student_dir = run.download("student", f"{tmp}/student")
        student = models.load_model(student_dir, task).eval()
        heldout = read_rows(run, heldout_paths,
                            ["input_ids", "token_type_ids", "logits", *TOPK_COLUMNS, *QA_COLUMNS],
                            max_heldout_rows, True)
        heldout = with_dense_logits(heldout, len(label_names))
        teacher_run = run_model(teacher, heldout, pooling(task))
        result = {"eval": fidelity(task, teacher, student, heldout, len(label_names), windows,
                                   teacher_run=teacher_run)}
        speed_rows, dev = heldout, None
        if dev_paths:
            dev = read_rows(run, dev_paths, DEV_COLUMNS, 10**9, False)
            result["eval"]["dev_rows"] = len(set(dev["example"])) if task == "qa" else \
                len(dev["input_ids"])
            for who, model in (("teacher", teacher), ("student", student)):
                for name, value in dev_scores(task, model, dev, label_names, windows).items():
                    result["eval"][f"{who}_{name}"] = value
            speed_rows = dev
        result["speed"] = speed(teacher, student, speed_rows, batch_size=speed_batch_size,
                                repeats=speed_repeats, torch_threads=torch_threads)
        onnx = onnx_figures(student_dir, task, speed_rows, batch_size=speed_batch_size,
                            repeats=speed_repeats, threads=torch_threads,
                            pad_id=student.config.pad_token_id or 0)
        if onnx:
            result["speed"]["cpu"]["onnx"] = onnx
            result["eval"].update(_int8_scores(task, student_dir, heldout, dev, teacher_run[0],
                                               label_names, windows, torch_threads,
                                               student.config.pad_token_id or 0))
    size = {"teacher_params": models.num_params(teacher),
            "student_params": models.num_params(student),
            "teacher_disk_bytes": disk_bytes(teacher), "student_disk_bytes": disk_bytes(student),
            "teacher_layers": teacher.config.num_hidden_layers,
            "teacher_hidden": teacher.config.hidden_size,
            "student_layers": student.config.num_hidden_layers,
            "student_hidden": student.config.hidden_size}
    result["size"] = {**size, "compression": size["teacher_params"] / size["student_params"]}
    return result


def _numpy_batch(rows: dict, start: int, stop: int, pad_id: int) -> dict:
    return {k: v.numpy() for k, v in _batch(rows, start, stop, pad_id).items()}


def _onnx_path(student_dir: str, variant: str) -> str:
    from xdistil_ray.export import onnx_model

    return os.path.join(student_dir, onnx_model.FOLDER, onnx_model.VARIANTS[variant])


def onnx_figures(student_dir: str, task: str, rows: dict, *, batch_size: int, repeats: int,
                 threads: int, pad_id: int) -> dict:
    """ONNX Runtime's latency, throughput and size on disk for each ONNX copy of the student
    (``fp32``, ``int8``) on this machine's CPU, on the rows PyTorch was timed on; {} without
    an ONNX export."""
    from xdistil_ray.export import onnx_model

    out = {}
    n = len(rows["input_ids"])
    single = [_numpy_batch(rows, i, i + 1, pad_id) for i in range(min(n, repeats))]
    batched = _numpy_batch(rows, 0, min(n, batch_size), pad_id)
    for variant in onnx_model.VARIANTS:
        path = _onnx_path(student_dir, variant)
        if os.path.exists(path):
            session = onnx_model.Session(path, threads)
            out[variant] = onnx_model.measure_speed(session, single, batched, repeats)
    return out


def _int8_scores(task: str, student_dir: str, heldout: dict, dev: dict | None, teacher_preds,
                 label_names: list[str], windows, threads: int, pad_id: int) -> dict:
    """The int8 ONNX student's agreement with the teacher (held-out rows) and dev scores, as
    ``int8_<name>``."""
    from xdistil_ray.export import onnx_model

    path = _onnx_path(student_dir, "int8")
    if not os.path.exists(path) or task == "none":
        return {}
    session = onnx_model.Session(path, threads)

    def preds(rows: dict) -> list:
        n = len(rows["input_ids"])
        return onnx_model.predictions(
            session, (_numpy_batch(rows, i, i + 128, pad_id) for i in range(0, n, 128)))

    out = agreement_with_teacher(task, preds(heldout), teacher_preds, heldout, len(label_names),
                                 windows)
    if dev is not None:
        out |= scores_of(task, preds(dev), dev, label_names, windows)
    return {f"int8_{k}": v for k, v in out.items()}


def evaluate_dev(run: RunFolder, *, task: str, model_rel: str, dev_paths: list[str],
                 label_names: list[str], torch_threads: int) -> dict:
    """Dev scores (and size) of one model of the run, e.g. a fine-tuned student."""
    from xdistil_ray.modeling import models

    torch.set_num_threads(torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = models.load_model(run.download(model_rel, f"{tmp}/model"), task).eval()
    dev = read_rows(run, dev_paths, DEV_COLUMNS, 10**9, False)
    return {"eval": {"dev_rows": len(dev["input_ids"]),
                     **dev_scores(task, model, dev, label_names)},
            "size": {"params": models.num_params(model), "disk_bytes": disk_bytes(model),
                     "num_layers": model.config.num_hidden_layers,
                     "hidden_size": model.config.hidden_size}}


def run_step(run: RunFolder, *, num_cpus: float, num_gpus: float = 0.0, fingerprint: dict,
             fn=evaluate, **kwargs) -> dict:
    """Runs ``fn`` (:func:`evaluate`, or :func:`evaluate_dev`) as a Ray task (on a GPU when
    ``num_gpus``) and commits ``eval/metrics.json``."""
    import ray

    threads = max(1, int(num_cpus))
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus or None)(fn)
    result = ray.get(task.remote(run, torch_threads=threads, **kwargs))
    run.write_json(f"{STEP}/metrics.json", result)
    return run.commit(STEP, fingerprint=fingerprint, **result)
