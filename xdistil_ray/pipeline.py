"""The pipeline: the steps in order, skipping what is complete, refusing unsafe config changes.

Steps talk to each other only through the run folder; this module reads one step's marker and
hands the next step plain arguments.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from dataclasses import dataclass
from typing import Callable

from xdistil_ray import config as config_mod
from xdistil_ray.config import EMBEDDED, Config, ConfigError
from xdistil_ray.readers import CorpusSource, resolve_source
from xdistil_ray.runfolder import RunFolder

log = logging.getLogger(__name__)

TEACHER_FINETUNE = "teacher_finetune"


@dataclass(frozen=True)
class Inputs:
    """User inputs resolved before any cluster work."""

    corpus: CorpusSource
    labeled: dict[str, CorpusSource]
    teacher_path: str


def resolve_inputs(cfg: Config) -> Inputs:
    """Resolves paths (generating the embedded data if asked); raises ConfigError on a bad one."""
    from xdistil_ray.models import resolve_teacher_path

    embedded = {}
    if EMBEDDED in (cfg.corpus.path, cfg.labeled.train, cfg.labeled.dev):
        from xdistil_ray.embedded_data import write_embedded_data

        if "://" in cfg.output:
            raise ConfigError("corpus.path: the embedded data needs a local output folder")
        embedded = write_embedded_data(os.path.join(cfg.output, "inputs"), seed=cfg.seed)

    def source(value: str, field: str) -> CorpusSource:
        return resolve_source(embedded[_EMBEDDED_FILE[field]] if value == EMBEDDED else value, field)

    labeled = {}
    if cfg.labeled.train:
        labeled["train"] = source(cfg.labeled.train, "labeled.train")
    if cfg.labeled.dev:
        if not cfg.labeled.train:
            raise ConfigError("labeled.dev: give labeled.train too")
        labeled["dev"] = source(cfg.labeled.dev, "labeled.dev")
    teacher = resolve_teacher_path(cfg.teacher.model)
    if "/" in teacher and not os.path.isdir(teacher) and os.path.exists(os.path.dirname(teacher)):
        raise ConfigError(f"teacher.model: folder {teacher!r} does not exist")
    return Inputs(source(cfg.corpus.path, "corpus.path"), labeled, teacher)


_EMBEDDED_FILE = {"corpus.path": "corpus", "labeled.train": "train", "labeled.dev": "dev"}


# ---------------------------------------------------------------------- fingerprints

def _flat(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flat(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: obj}


def fingerprint(cfg: Config, *sections: str) -> dict:
    """The config fields a step's output depends on, flattened (``corpus.max_length``: 64)."""
    data = _flat(config_mod.to_dict(cfg))
    return {k: v for k, v in data.items() if any(k == s or k.startswith(s + ".") for s in sections)}


_DATA_KEYS = ("seed", "corpus.path", "corpus.text_column", "corpus.hf_split", "corpus.max_length",
              "corpus.max_chars", "corpus.rows_per_shard", "corpus.heldout_fraction", "labeled",
              "teacher.model")
_TEACHER_KEYS = ("teacher.model", "teacher.finetune", "labeled", "seed")
_INFERENCE_KEYS = _TEACHER_KEYS + ("corpus",)
_INIT_KEYS = ("student",) + _TEACHER_KEYS


def _stage_keys(k: int) -> tuple[str, ...]:
    return ("student",) + tuple(f"stages.{i}" for i in range(k + 1)) + _TEACHER_KEYS


def refuse_changed(run: RunFolder, rel: str, marker: dict, fp: dict) -> None:
    """Raises ConfigError naming the fields that changed since ``rel`` was committed."""
    old = marker.get("fingerprint", {})
    changed = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
    if changed:
        raise ConfigError(
            f"{run.uri}: step {rel!r} is complete but these fields changed since: "
            f"{', '.join(changed)}. Use a new output folder, or restore the old values.")


class Steps:
    """Runs steps in order against one run folder, skipping and checking committed ones."""

    def __init__(self, run: RunFolder):
        self.run = run

    def done(self, rel: str, fp: dict) -> dict | None:
        """The marker of a committed step, after checking its config fingerprint."""
        marker = self.run.marker(rel)
        if marker is None:
            return None
        refuse_changed(self.run, rel, marker, fp)
        print(f"[xdistil] {rel}: complete, skipped", flush=True)
        return marker

    def ensure(self, rel: str, fp: dict, run_step: Callable[[dict], dict]) -> dict:
        """The marker of step ``rel``: its committed one, or ``run_step(fp)``'s after running."""
        marker = self.done(rel, fp)
        if marker is None:
            started = self.start(rel)
            marker = run_step(fp)
            self.finish(rel, started)
        return marker

    def start(self, rel: str) -> float:
        print(f"[xdistil] {rel}: running", flush=True)
        return time.time()

    def finish(self, rel: str, started: float) -> None:
        print(f"[xdistil] {rel}: done in {time.time() - started:.0f}s", flush=True)


def init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.ray.address:
        ray.init(address=cfg.ray.address)
    else:
        # Local Ray stays on loopback; the dashboard too (Ray Train queries its state API).
        ray.init(num_cpus=cfg.ray.num_cpus or None, _node_ip_address="127.0.0.1",
                 dashboard_host="127.0.0.1")


def run(cfg: Config) -> dict:
    """Runs the whole pipeline for ``cfg``; returns the report."""
    from xdistil_ray.steps import (evaluate, export, prepare, report, student_init,
                                   teacher_inference)

    started = time.time()
    inputs = resolve_inputs(cfg)
    folder = RunFolder(cfg.output)
    print(f"[xdistil] run folder: {folder.uri}", flush=True)
    steps = Steps(folder)
    _check_all(steps, cfg)
    folder.write_text("config.yaml", config_mod.dump_yaml(cfg))
    init_ray(cfg)

    data = steps.ensure(prepare.STEP, fingerprint(cfg, *_DATA_KEYS),
                        lambda fp: _prepare(folder, cfg, inputs, fp))
    check_data(cfg, data)
    label_names = data["labeled"]["label_names"]
    teacher_rel, teacher_in_run = _teacher(steps, cfg, inputs, data, label_names)
    teacher_local = folder.local_path(teacher_rel, "model") if teacher_in_run else teacher_rel
    teacher_marker = steps.ensure(
        teacher_inference.STEP, fingerprint(cfg, *_INFERENCE_KEYS),
        lambda fp: teacher_inference.run_step(
            folder, data, model_path=teacher_local, outputs=_teacher_outputs(cfg),
            batch_size=cfg.teacher.inference.batch_size,
            num_actors=cfg.teacher.inference.num_actors,
            num_gpus=cfg.teacher.inference.num_gpus_per_actor,
            num_cpus=cfg.teacher.inference.num_cpus_per_actor, fingerprint=fp))
    init_marker = steps.ensure(
        student_init.STEP, fingerprint(cfg, *_INIT_KEYS),
        lambda fp: student_init.run_step(
            folder, teacher_path=teacher_rel, teacher_in_run=teacher_in_run,
            num_layers=cfg.student.num_layers, hidden_size=cfg.student.hidden_size,
            num_heads=cfg.student.num_heads, intermediate_size=cfg.student.intermediate_size,
            init=cfg.student.init, seed=cfg.seed, fingerprint=fp))
    teacher_files = [folder.path("teacher", f) for f in teacher_marker["files"]]
    stage_markers = _stages(steps, cfg, data, teacher_files, init_marker["teacher_hidden"])
    final_fp = fingerprint(cfg, *_stage_keys(len(cfg.stages) - 1))
    final_stage = stage_folder(len(cfg.stages) - 1, cfg.stages[-1].name)
    steps.ensure(export.STEP, final_fp, lambda fp: export.run_step(
        folder, final_stage, inputs.teacher_path, label_names, fp))
    eval_marker = steps.ensure(
        evaluate.STEP, {**final_fp, **fingerprint(cfg, "eval")},
        lambda fp: _evaluate(folder, cfg, data, teacher_rel, teacher_in_run, teacher_files, fp))
    result = report.write(folder, cfg, data=data, teacher=teacher_marker, init=init_marker,
                          stages=stage_markers, evaluation=eval_marker,
                          finetuned=teacher_in_run, seconds=round(time.time() - started, 1))
    print(report.summary(folder, result), flush=True)
    return result


def _prepare(folder: RunFolder, cfg: Config, inputs: Inputs, fp: dict) -> dict:
    from xdistil_ray.steps import prepare

    settings = prepare.TextSettings(inputs.teacher_path, cfg.corpus.max_length,
                                    cfg.corpus.max_chars, cfg.corpus.heldout_fraction)
    return prepare.run_step(folder, inputs.corpus, inputs.labeled, settings,
                            text_column=cfg.corpus.text_column,
                            label_column=cfg.labeled.label_column,
                            labeled_text_column=cfg.labeled.text_column,
                            hf_split=cfg.corpus.hf_split,
                            rows_per_shard=cfg.corpus.rows_per_shard, fingerprint=fp)


def _stages(steps: Steps, cfg: Config, data: dict, teacher_files: list[str],
            teacher_hidden: int) -> list[dict]:
    """Runs (or skips) each training stage in order, each from the previous one's weights."""
    from xdistil_ray.steps import student_init

    markers, previous = [], student_init.STEP
    for k, stage in enumerate(cfg.stages):
        rel = stage_folder(k, stage.name)
        markers.append(steps.ensure(rel, fingerprint(cfg, *_stage_keys(k)), lambda fp: _run_stage(
            steps.run, cfg, k, rel, previous, data, teacher_files, teacher_hidden, fp)))
        previous = rel
    return markers


def _evaluate(folder: RunFolder, cfg: Config, data: dict, teacher_rel: str,
              teacher_in_run: bool, teacher_files: list[str], fp: dict) -> dict:
    from xdistil_ray.steps import evaluate

    dev = data["labeled"]["splits"].get("dev")
    e = cfg.eval
    return evaluate.run_step(
        folder, num_cpus=e.num_cpus, fingerprint=fp, teacher_path=teacher_rel,
        teacher_in_run=teacher_in_run, heldout_paths=teacher_files,
        dev_paths=[folder.path("data/labeled/dev", f["file"]) for f in dev["files"]] if dev else [],
        label_names=data["labeled"]["label_names"], max_heldout_rows=e.max_heldout_rows,
        speed_batch_size=e.speed_batch_size, speed_repeats=e.speed_repeats)


def check_data(cfg: Config, data: dict) -> None:
    """Stops with a clear message when the prepared data cannot feed the configured stages."""
    c = data["corpus"]
    train_rows = c["kept"] - c["heldout"]
    if c["kept"] == 0:
        raise ConfigError(f"corpus.path: no sentence survived cleaning ({c['input_rows']} rows "
                          f"in, dropped {c['dropped']})")
    splits = data["labeled"]["splits"]
    names = data["labeled"]["label_names"]
    if "train" in splits and len(names) < 2:
        raise ConfigError(f"labeled.train: needs at least 2 classes, found {names}")
    for k, stage in enumerate(cfg.stages):
        rows = splits["train"]["kept"] if stage.loss == "labels" else train_rows
        if rows < stage.batch_size * cfg.train.num_workers:
            raise ConfigError(
                f"stages.{k}.batch_size: {rows} training rows cannot fill one batch of "
                f"{stage.batch_size} on each of {cfg.train.num_workers} workers")


def stage_folder(k: int, name: str) -> str:
    return posixpath.join("stages", f"{k + 1}-{name}")


def _check_all(steps: Steps, cfg: Config) -> None:
    """Refuses an unsafe config change before any work (each committed step is checked)."""
    checks = [("data", _DATA_KEYS), (TEACHER_FINETUNE, _TEACHER_KEYS),
              ("teacher", _INFERENCE_KEYS), ("student_init", _INIT_KEYS)]
    checks += [(stage_folder(k, s.name), _stage_keys(k)) for k, s in enumerate(cfg.stages)]
    for rel, keys in checks:
        marker = steps.run.marker(rel)
        if marker is not None:
            refuse_changed(steps.run, rel, marker, fingerprint(cfg, *keys))


def _teacher_outputs(cfg: Config) -> tuple[str, ...]:
    losses = {s.loss for s in cfg.stages}
    outputs = ["logits"]  # always: agreement with the teacher is measured on them
    if "representation" in losses:
        outputs.append("cls")
    return tuple(outputs)


def _teacher(steps: Steps, cfg: Config, inputs: Inputs, data: dict,
             label_names: list[str]) -> tuple[str, bool]:
    """Fine-tunes the teacher when it has no head for the task; returns (path, in run folder)."""
    from xdistil_ray.models import has_task_head

    if not label_names:
        raise ConfigError("labeled.train: the teacher needs a task; give labeled data")
    if has_task_head(inputs.teacher_path, len(label_names)):
        return inputs.teacher_path, False
    steps.ensure(TEACHER_FINETUNE, fingerprint(cfg, *_TEACHER_KEYS),
                 lambda fp: _finetune_teacher(steps.run, cfg, inputs, data, fp))
    return TEACHER_FINETUNE, True


def _finetune_teacher(folder: RunFolder, cfg: Config, inputs: Inputs, data: dict, fp: dict):
    from xdistil_ray.steps import train

    ft = cfg.teacher.finetune
    info = data["labeled"]["splits"]["train"]
    spec = _spec(cfg, name=TEACHER_FINETUNE, loss="labels", init_path=inputs.teacher_path,
                 init_in_run=False, rows=info["kept"], epochs=ft.epochs,
                 batch_size=ft.batch_size, learning_rate=ft.learning_rate,
                 label_names=data["labeled"]["label_names"], new_head=True,
                 tokenizer_path=inputs.teacher_path, run=folder,
                 freeze_word_embeddings=ft.freeze_word_embeddings)
    files = [folder.path("data/labeled/train", f["file"]) for f in info["files"]]
    dataset = train.stage_dataset(folder, files, ["input_ids", "label"], None)
    return train.run_stage(folder, TEACHER_FINETUNE, spec, dataset, _scaling(cfg), fp)


def _spec(cfg: Config, *, name, loss, init_path, init_in_run, rows, epochs, batch_size,
          learning_rate, label_names, run, new_head=False, teacher_hidden=0, tokenizer_path="",
          freeze_word_embeddings=False):
    from xdistil_ray.train_loop import StageSpec, total_steps

    t = cfg.train
    return StageSpec(
        name=name, loss=loss, init_path=init_path, init_in_run=init_in_run, run_uri=run.uri,
        total_steps=total_steps(rows, epochs, batch_size, t.num_workers), batch_size=batch_size,
        learning_rate=learning_rate, zero_stage=t.zero_stage, log_every=t.log_every_steps,
        checkpoint_every=t.checkpoint_every_steps, seed=cfg.seed,
        torch_threads=t.torch_threads or max(1, int(t.cpus_per_worker)), label_names=label_names,
        new_head=new_head, teacher_hidden=teacher_hidden, tokenizer_path=tokenizer_path,
        freeze_word_embeddings=freeze_word_embeddings)


def _scaling(cfg: Config):
    from xdistil_ray.steps.train import Scaling

    t = cfg.train
    return Scaling(t.num_workers, t.use_gpu, t.cpus_per_worker, t.max_failures)


def _run_stage(folder: RunFolder, cfg: Config, k: int, rel: str, previous: str, data: dict,
               teacher_files: list[str], teacher_hidden: int, fp: dict) -> dict:
    from xdistil_ray.steps import train

    stage = cfg.stages[k]
    if stage.loss == "labels":
        info = data["labeled"]["splits"]["train"]
        files = [folder.path("data/labeled/train", f["file"]) for f in info["files"]]
        rows, columns, heldout = info["kept"], ["input_ids", "label"], None
    else:
        files = teacher_files
        rows = data["corpus"]["kept"] - data["corpus"]["heldout"]
        columns = ["input_ids", "cls" if stage.loss == "representation" else "logits"]
        heldout = False
    spec = _spec(cfg, name=stage.name, loss=stage.loss, init_path=previous, init_in_run=True,
                 rows=rows, epochs=stage.epochs, batch_size=stage.batch_size,
                 learning_rate=stage.learning_rate, label_names=data["labeled"]["label_names"],
                 teacher_hidden=teacher_hidden, run=folder)
    dataset = train.stage_dataset(folder, files, columns, heldout)
    return train.run_stage(folder, rel, spec, dataset, _scaling(cfg), fp)
