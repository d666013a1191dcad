"""Step ``eval``: fidelity to the teacher, dev scores, size and speed. Runs as a Ray task.

Fidelity is measured on held-out transfer sentences (never trained on) against the teacher's
stored predictions: agreement of the argmax, KL divergence, and the similarity of the last
layer's sentence representations (linear CKA, and the cosine after a linear map fitted on half
of them). Speed is measured for teacher and student on the same machine, in the same process:
latency at batch 1 and throughput at ``speed_batch_size``, on CPU always and on the GPU when the
task has one.
"""

from __future__ import annotations

import json
import os
import posixpath
import statistics
import tempfile
import time

import numpy as np
import torch

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.run import layout
from xdistil_ray.tasks import metrics
from xdistil_ray.tasks import qa
from xdistil_ray.modeling.models import model_inputs
from xdistil_ray.modeling.outputs import TOPK_COLUMNS, with_dense_logits
from xdistil_ray.run.markers import EvalMarker
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Planned, Step
from xdistil_ray.modeling.scoring import (DEV_COLUMNS, dev_scores, padded_batch, pooling,
                                          qa_answers, read_rows, run_model, scores_of)


STEP = layout.EVAL
VERSION = 3
"""The figures' version (3: ONNX Runtime's): a run folder evaluated by an older one is
measured again."""
QA_COLUMNS = ["example", "context", "offset_start", "offset_end"]
"""What decoding QA answers reads of a window besides its tokens."""


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
    if task_of(task).spans:
        return _answer_agreement(qa_answers(teacher_preds, heldout, windows),
                                 qa_answers(preds, heldout, windows))
    if preds is None or "logits" not in heldout:
        return {}
    stored = [np.asarray(t, dtype=np.float32) for t in heldout["logits"]]
    return {"agreement": metrics.agreement(stored, preds, num_labels),
            "kl_divergence": metrics.kl_divergence(stored, preds, num_labels)}


def _answer_agreement(teacher: dict, student: dict) -> dict:
    def said(answer):
        return "" if answer.null_margin > 0 or not answer.text else answer.text

    pairs = [(said(student[q]), said(teacher[q])) for q in teacher]
    n = max(1, len(pairs))
    return {"heldout_questions": len(pairs),
            "agreement": sum(qa.exact_match(s, t) for s, t in pairs) / n,
            "agreement_f1": sum(qa.f1_score(s, t) for s, t in pairs) / n}


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
        batch = model_inputs(model, padded_batch(rows, start, stop, pad_id, device))
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
          torch_threads: int, student_rows: dict | None = None) -> dict:
    """Teacher and student speed, and the student's speedups, per device (``cpu`` always,
    ``cuda`` when this process has a GPU); ``student_rows``: the same rows in the student's
    ids (a trimmed vocabulary), default ``rows``."""
    out = {"batch_size": min(batch_size, len(rows["input_ids"]))}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        t = measure_speed(teacher, rows, batch_size=batch_size, repeats=repeats, device=device)
        s = measure_speed(student, student_rows or rows, batch_size=batch_size, repeats=repeats,
                          device=device)
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
             student_rel: str,
             heldout_paths: list[str], dev_paths: list[str], label_names: list[str],
             max_heldout_rows: int, speed_batch_size: int, speed_repeats: int,
             torch_threads: int, windows: qa.WindowSettings | None = None,
             vocab: dict | None = None) -> dict:
    """``vocab``: a student with a trimmed vocabulary (its init marker's): it reads the stored
    rows (the teacher's ids) mapped to its own (:func:`xdistil_ray.student.vocab.mapped_rows`)."""
    from xdistil_ray.modeling import models
    from xdistil_ray.modeling.vocab_map import mapped_rows, table_of

    torch.set_num_threads(torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        if teacher_in_run:
            teacher_path = run.download(teacher_path, f"{tmp}/teacher", "model")
        teacher = models.load_model(teacher_path, task).eval()
        student_dir = run.download(student_rel, f"{tmp}/student")
        student = models.load_model(student_dir, task).eval()
        heldout = read_rows(run, heldout_paths,
                            ["input_ids", "token_type_ids", "logits", *TOPK_COLUMNS, *QA_COLUMNS],
                            max_heldout_rows, True)
        heldout = with_dense_logits(heldout, len(label_names))
        table = table_of(vocab)
        teacher_run = run_model(teacher, heldout, pooling(task))
        result = {"eval": fidelity(task, teacher, student, mapped_rows(heldout, table),
                                   len(label_names), windows, teacher_run=teacher_run)}
        speed_rows, dev, dev_student = heldout, None, None
        if dev_paths:
            dev = read_rows(run, dev_paths, DEV_COLUMNS, 10**9, False)
            result["eval"]["dev_rows"] = len(set(dev["example"])) if task_of(task).spans else \
                len(dev["input_ids"])
            dev_student = mapped_rows(dev, table)
            for who, model, rows in (("teacher", teacher, dev), ("student", student, dev_student)):
                for name, value in dev_scores(task, model, rows, label_names, windows).items():
                    result["eval"][f"{who}_{name}"] = value
            speed_rows = dev
        student_speed_rows = mapped_rows(speed_rows, table)
        result["speed"] = speed(teacher, student, speed_rows, batch_size=speed_batch_size,
                                repeats=speed_repeats, torch_threads=torch_threads,
                                student_rows=student_speed_rows)
        onnx = onnx_figures(student_dir, task, student_speed_rows, batch_size=speed_batch_size,
                            repeats=speed_repeats, threads=torch_threads,
                            pad_id=student.config.pad_token_id or 0)
        if onnx:
            result["speed"]["cpu"]["onnx"] = onnx
            result["eval"].update(_int8_scores(task, student_dir, mapped_rows(heldout, table),
                                               dev_student, teacher_run[0],
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
    return {k: v.numpy() for k, v in padded_batch(rows, start, stop, pad_id).items()}


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
    if not os.path.exists(path) or not task_of(task).head:
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
             fn=evaluate, rel: str = STEP, **kwargs) -> EvalMarker:
    """Runs ``fn`` (:func:`evaluate`, or :func:`evaluate_dev`) as a Ray task (on a GPU when
    ``num_gpus``) and commits ``rel`` (``eval/``) with its ``metrics.json``."""
    import ray

    threads = max(1, int(num_cpus))
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus or None)(fn)
    result = ray.get(task.remote(run, torch_threads=threads, **kwargs))
    run.write_json(posixpath.join(rel, posixpath.basename(layout.METRICS)), result)
    return run.commit(rel, EvalMarker(fingerprint=fingerprint, **result))


class EvalStep(Step):
    """``eval/``: the student against the teacher (fidelity, dev scores, size and speed)."""

    name = folder = STEP
    marker_kind = EvalMarker
    derived = True

    def fingerprint(self, ctx: Context) -> dict:
        """The exported student's fields, the eval settings and this code's version."""
        from xdistil_ray.export.step import ExportStep

        return {**ExportStep().fingerprint(ctx), **ctx.fingerprint("eval"),
                "eval.version": VERSION}

    def run(self, ctx: Context, fp: dict) -> EvalMarker:
        from xdistil_ray.export.step import ExportStep

        cfg, e = ctx.cfg, ctx.cfg.eval
        return run_step(
            ctx.run, num_cpus=e.num_cpus, num_gpus=e.num_gpus, fingerprint=fp, task=cfg.task,
            rel=self.where(ctx), student_rel=ExportStep().where(ctx),
            teacher_path=ctx.teacher.path, teacher_in_run=ctx.teacher.in_run,
            heldout_paths=ctx.sources.heldout_files(), dev_paths=list(ctx.sources.labeled_dev),
            label_names=ctx.label_names, max_heldout_rows=e.max_heldout_rows,
            speed_batch_size=e.speed_batch_size, speed_repeats=e.speed_repeats,
            windows=cfg.windows(), vocab=ctx.init_marker.vocab if ctx.init_marker else {})

    def use(self, ctx: Context, marker: EvalMarker | None) -> None:
        ctx.eval_marker = marker

    def plan(self, ctx: Context) -> list[Planned]:
        e = ctx.cfg.eval
        each = {"CPU": e.num_cpus, **({"GPU": e.num_gpus} if e.num_gpus else {})}
        from xdistil_ray.export.step import ExportStep

        return [Planned(self.name, self.where(ctx), self.state(ctx),
                        [ExportStep().where(ctx), "teacher (held-out rows)", layout.LABELED_DEV],
                        f"one Ray task {json.dumps(each)}")]
