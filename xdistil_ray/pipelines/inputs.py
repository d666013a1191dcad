"""The user's inputs, resolved and checked before any cluster work: the corpus and labeled
sources (the embedded default's generated into the run folder), the teacher's folder, and the
two models' shapes checked against every stage's losses; and, once the data step is done,
whether its rows can feed the stages."""

from __future__ import annotations

import os
from dataclasses import dataclass

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.run import layout
from xdistil_ray.config import EMBEDDED
from xdistil_ray.config import Config
from xdistil_ray.config import ConfigError
from xdistil_ray.config.checks import stage_data
from xdistil_ray.data.readers import CorpusSource, resolve_source
from xdistil_ray.run.markers import DataMarker
from xdistil_ray.distill.stage_plan import resolve_stage_losses
from xdistil_ray.run.runfolder import RunFolder


@dataclass(frozen=True)
class Inputs:
    """User inputs resolved before any cluster work."""

    corpus: CorpusSource
    labeled: dict[str, CorpusSource]
    teacher_path: str
    shapes: "Shapes"


@dataclass(frozen=True)
class Shapes:
    """Sizes of the two models that layer mappings and relation heads are checked against."""

    student_layers: int
    student_hidden: int
    teacher_layers: int
    teacher_hidden: int
    teacher_heads: int


def resolve_inputs(cfg: Config, folder: RunFolder, generate: bool = True) -> Inputs:
    """Resolves paths (generating the embedded data if asked); raises ConfigError on a bad one.
    With ``generate`` False (a dry run) nothing is written: embedded inputs resolve to None."""
    from xdistil_ray.modeling.models import resolve_teacher_path

    embedded = {}
    if generate and EMBEDDED in (cfg.corpus.path, cfg.labeled.train, cfg.labeled.dev):
        embedded = embedded_inputs(cfg, folder)
    options = cfg.storage_options()

    splits = {"corpus.path": cfg.corpus.hf_split, "labeled.train": cfg.labeled.train_split,
              "labeled.dev": cfg.labeled.dev_split}

    def source(value: str, field: str) -> CorpusSource | None:
        if value == EMBEDDED and not generate:
            return None
        return resolve_source(embedded[_EMBEDDED_FILE[field]] if value == EMBEDDED else value,
                              field, options, split=splits[field])

    labeled = {}
    # Task-agnostic runs need no labels; the embedded default's labeled sets do not apply.
    task = task_of(cfg.task)
    wants_labels = task.labeled or EMBEDDED not in (cfg.labeled.train, cfg.labeled.dev)
    if cfg.labeled.train and wants_labels:
        labeled["train"] = source(cfg.labeled.train, "labeled.train")
    if cfg.labeled.dev and wants_labels:
        if not cfg.labeled.train:
            raise ConfigError("labeled.dev: give labeled.train too")
        labeled["dev"] = source(cfg.labeled.dev, "labeled.dev")
    teacher = resolve_teacher_path(cfg.teacher.model)
    if "/" in teacher and not os.path.isdir(teacher) and os.path.exists(os.path.dirname(teacher)):
        raise ConfigError(f"teacher.model: folder {teacher!r} does not exist")
    corpus = source(cfg.corpus.path, "corpus.path") if cfg.corpus.path else None
    if task.spans and corpus and corpus.fmt == "txt":
        raise ConfigError("corpus.path: a QA corpus needs .jsonl/.json/.parquet rows with a "
                          "question and a context (qa.question_column, qa.context_column)")
    if task.pairs and ((corpus and corpus.fmt == "txt") or not cfg.corpus.text_pair_column):
        raise ConfigError("corpus.text_pair_column: a pair task's corpus needs .jsonl/.parquet "
                          "rows with both sentences (corpus.text_column, corpus.text_pair_column)")
    for field, s in ((f"labeled.{k}", v) for k, v in labeled.items()):
        if s is not None and s.fmt == "txt" and task.labeled:
            raise ConfigError(f"{field}: {s.path!r} is plain text, which holds no labels; give "
                              f".jsonl, .parquet, .tsv or .csv rows with labeled.label_column "
                              f"({cfg.labeled.label_column!r})")
    for field, s in (("corpus.path", corpus), *((f"labeled.{k}", v) for k, v in labeled.items())):
        if not task.flat_rows and s is not None and s.fmt in ("tsv", "csv"):
            raise ConfigError(f"{field}: .{s.fmt} holds flat columns; a {cfg.task} task's rows "
                              "(word and tag lists, or questions with answers) need .jsonl, "
                              ".parquet or a `datasets` input")
    if task.labeled and not labeled:
        raise ConfigError("labeled.train: the teacher needs a task; give labeled data "
                          "(or task: none for task-agnostic distillation)")
    shapes = check_models(cfg, teacher)
    return Inputs(corpus, labeled, teacher, shapes)


def embedded_inputs(cfg, folder: RunFolder) -> dict[str, str]:
    """The embedded data under ``<run>/inputs`` (generated locally, uploaded to a remote run so
    that every node reads the same files)."""
    import tempfile

    from xdistil_ray.data.embedded_data import write_embedded_data

    if folder.is_local:
        return write_embedded_data(folder.local_path(layout.INPUTS), seed=cfg.seed, task=cfg.task)
    with tempfile.TemporaryDirectory() as tmp:
        local = write_embedded_data(tmp, seed=cfg.seed, task=cfg.task)
        remote = {}
        for name, path in local.items():
            rel = layout.INPUTS + "/" + os.path.relpath(path, tmp).replace(os.sep, "/")
            if not folder.exists(rel):
                with open(path, "rb") as f:
                    folder.write_bytes(rel, f.read())
            remote[name] = folder.uri_of(rel)
        return remote


def check_models(cfg: Config, teacher_path: str) -> Shapes:
    """Checks the student against the teacher and every stage's layer mapping, before any
    cluster work; returns the models' sizes."""
    from transformers import AutoConfig

    from xdistil_ray.modeling import families
    from xdistil_ray.modeling import models

    try:
        t = AutoConfig.from_pretrained(teacher_path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"teacher.model: cannot load {cfg.teacher.model!r}: {e}") from None
    try:
        families.family_of(t)
    except families.UnsupportedFamily as e:
        raise ConfigError(
            f"teacher.model: {cfg.teacher.model!r} is a {t.model_type!r} model; xdistil_ray "
            f"distils encoders of the families it knows the parts of ({e}): give a teacher of "
            "one of them (e.g. fine-tune one on your task with jobs/finetune.py)") from None
    s = cfg.student
    if s.architecture:
        if s.architecture not in families.SUPPORTED:
            raise ConfigError(f"student.architecture: {s.architecture!r} is not one of "
                              f"{', '.join(families.SUPPORTED)}")
        if s.init == "teacher" and s.architecture != t.model_type:
            raise ConfigError(
                f"student.architecture: {s.architecture!r} differs from the teacher's "
                f"{t.model_type!r}; init: teacher builds the teacher's own architecture: use "
                "student.init=random (or pretrained), or leave student.architecture empty")
    if s.vocab == "data":
        from xdistil_ray.student import vocab

        why = vocab.refusal(models.load_tokenizer(teacher_path), t.model_type)
        if why:
            raise ConfigError(why)
    student = Shapes(s.num_layers, s.hidden_size, t.num_hidden_layers, t.hidden_size,
                     t.num_attention_heads)
    if s.init == "pretrained":
        try:
            models.check_vocabulary(teacher_path, s.pretrained)
            p = AutoConfig.from_pretrained(s.pretrained)
        except (OSError, ValueError) as e:
            raise ConfigError(f"student.pretrained: {e}") from None
        if s.architecture and s.architecture != p.model_type:
            raise ConfigError(f"student.architecture: {s.architecture!r}, but student.pretrained "
                              f"is a {p.model_type!r} model")
        student = Shapes(p.num_hidden_layers, p.hidden_size, t.num_hidden_layers,
                         t.hidden_size, t.num_attention_heads)
    if s.init == "teacher" and s.teacher_layers and max(s.teacher_layers) > t.num_hidden_layers:
        raise ConfigError(f"student.teacher_layers: the teacher has {t.num_hidden_layers} blocks, "
                          f"got {s.teacher_layers}")
    for k, stage in enumerate(cfg.stages):
        try:
            resolve_stage_losses(stage, student)
        except ValueError as e:
            raise ConfigError(f"stages.{k}.losses: {e}") from None
    return student


_EMBEDDED_FILE = {"corpus.path": "corpus", "labeled.train": "train", "labeled.dev": "dev"}


def check_data(cfg: Config, data: DataMarker) -> None:
    """Stops with a clear message when the prepared data cannot feed the configured stages."""
    c = data.corpus
    train_rows = c.training_rows - c.heldout
    if c.kept == 0:
        raise ConfigError(f"corpus.path: no sentence survived cleaning ({c.input_rows} rows "
                          f"in, dropped {c.dropped})")
    names = data.label_names
    if task_of(cfg.task).classes and len(names) < 2:
        raise ConfigError(f"labeled.train: needs at least 2 classes, found {names}")
    top_k = cfg.teacher.inference.top_k
    if top_k and task_of(cfg.task).head and top_k >= len(names):
        raise ConfigError(f"teacher.inference.top_k: {top_k} is not below the {len(names)} "
                          "labels; 0 stores every logit")
    for k, stage in enumerate(cfg.stages):
        rows = (data.split("train").training_rows if stage_data(stage) == "labeled"
                else train_rows)
        if rows < stage.batch_size * cfg.train.num_workers:
            raise ConfigError(
                f"stages.{k}.batch_size: {rows} training rows cannot fill one batch of "
                f"{stage.batch_size} on each of {cfg.train.num_workers} workers")


