"""From config and committed steps to one training stage's plain inputs: the worker's
:class:`~xdistil_ray.distill.train_loop.StageSpec`, and the files and columns its rows come from."""

from __future__ import annotations

import json
from dataclasses import dataclass

from xdistil_ray.run import layout
from xdistil_ray.config import Config
from xdistil_ray.config.checks import stage_data
from xdistil_ray.distill.objective import LossSpec
from xdistil_ray.modeling.outputs import TOPK_COLUMNS
from xdistil_ray.run.markers import DataMarker, TeacherMarker
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.distill.train_loop import StageSpec, total_steps

CORPUS = layout.CORPUS
LABELED_TRAIN = layout.LABELED_TRAIN
LABELED_DEV = layout.LABELED_DEV


@dataclass(frozen=True)
class Teacher:
    """Where the teacher is: a folder or id, or a committed set of the run (``model/``)."""

    path: str
    in_run: bool


@dataclass(frozen=True)
class Sources:
    """Committed files that stages read."""

    corpus: tuple[str, ...]
    """Tokenized corpus shards (ids, held-out flag)."""
    teacher: tuple[str, ...]
    """Teacher output parts (ids, held-out flag, stored targets); empty without inference."""
    labeled_train: tuple[str, ...]
    pairs: bool
    labeled_dev: tuple[str, ...] = ()
    """Tokenized dev rows: validation of the stages on labeled data."""

    @classmethod
    def of(cls, run: RunFolder, data: DataMarker,
           teacher_marker: TeacherMarker | None) -> "Sources":
        """From the ``data`` marker (the fine-tuning job's has labeled splits only)."""
        labeled, dev = data.split("train"), data.split("dev")
        return cls(
            corpus=tuple(run.path(CORPUS, s.file) for s in data.corpus.shards)
            if data.corpus else (),
            teacher=tuple(run.path("teacher", f) for f in teacher_marker.files)
            if teacher_marker else (),
            labeled_train=tuple(run.path(LABELED_TRAIN, f.file) for f in labeled.files)
            if labeled else (),
            pairs=data.pairs,
            labeled_dev=tuple(run.path(LABELED_DEV, f.file) for f in dev.files)
            if dev else ())

    def heldout_files(self) -> list[str]:
        """Files holding the held-out sentences (with the teacher's logits when stored)."""
        return list(self.teacher or self.corpus)


stage_folder = layout.stage_folder


def stored_columns(specs: list[LossSpec], top_k: int = 0) -> list[str]:
    """Teacher inference columns a stage with stored targets reads (top-k logits: their three
    columns, see :data:`xdistil_ray.modeling.outputs.TOPK_COLUMNS`)."""
    types = {s.type for s in specs}
    columns = []
    if "logits" in types:
        columns += list(TOPK_COLUMNS) if top_k else ["logits"]
    if "representation" in types:
        columns.append("hidden")
    return columns


def label_columns(task: str) -> list[str]:
    """The columns a stage on labeled rows reads."""
    gold = {"token": ["word_ids", "tags"], "qa": ["start_position", "end_position"]}
    return ["input_ids"] + gold.get(task, ["label"])


def rows_of(cfg: Config, k: int, data: DataMarker) -> int:
    """Training rows of stage ``k`` per epoch (all workers together)."""
    if stage_data(cfg.stages[k]) == "labeled":
        return data.split("train").training_rows
    return data.corpus.training_rows - data.corpus.heldout


def min_steps(cfg: Config, k: int) -> int:
    """Stage ``k``'s fewest steps: ``train.min_stage_steps`` on the transfer set, none on
    labeled data."""
    return 0 if stage_data(cfg.stages[k]) == "labeled" else cfg.train.min_stage_steps


def stage_steps(cfg: Config, k: int, data: DataMarker) -> int:
    """Stage ``k``'s optimizer steps: its epochs over its rows, at least :func:`min_steps`."""
    stage = cfg.stages[k]
    steps = total_steps(rows_of(cfg, k, data), stage.epochs, stage.batch_size,
                        cfg.train.num_workers)
    return max(steps, min_steps(cfg, k))


def plan(cfg: Config, k: int, specs: list[LossSpec], sources: Sources, data: DataMarker, *,
         run: RunFolder, init_path: str, teacher: Teacher, shapes) -> tuple:
    """Stage ``k``'s worker spec and rows.

    Returns:
        (StageSpec, files, columns, heldout filter: False for corpus rows, None for labeled).
    """
    stage = cfg.stages[k]
    extra = ["token_type_ids"] if sources.pairs else []
    online = stage.targets == "online" and any(s.type != "labels" for s in specs)
    validation = {}
    if stage_data(stage) == "labeled":
        files, heldout = list(sources.labeled_train), None
        columns = label_columns(cfg.task)
        validation = _validation(cfg, sources, rows_of(cfg, k, data), stage.batch_size, patience=0)
    elif online:
        files, heldout, columns = list(sources.corpus), False, ["input_ids"]
    else:
        files, heldout = list(sources.teacher), False
        columns = ["input_ids"] + stored_columns(specs, cfg.teacher.inference.top_k)
    if heldout is False:
        validation = _heldout_check(cfg, files, columns + extra, data)
    spec = _spec(cfg, name=stage.name, losses=specs, init_path=init_path, init_in_run=True,
                 rows=rows_of(cfg, k, data), epochs=stage.epochs, batch_size=stage.batch_size,
                 min_steps=min_steps(cfg, k),
                 learning_rate=stage.learning_rate, label_names=data.label_names,
                 run=run, teacher_hidden=shapes.teacher_hidden,
                 teacher_layers=shapes.teacher_layers,
                 unfreeze_steps=stage.unfreeze_steps if stage.unfreeze == "gradual" else -1,
                 online_teacher=teacher.path if online else "",
                 online_teacher_in_run=online and teacher.in_run,
                 freeze_word_embeddings=cfg.student.freeze_word_embeddings, **validation)
    return spec, files, columns + extra, heldout


def _validation(cfg, sources: Sources, rows: int, batch_size: int, patience: int) -> dict:
    """A stage on labeled data is scored on the dev set after each epoch (best epoch kept,
    early stop after ``patience`` epochs without a better score); none without a dev set."""
    if not sources.labeled_dev:
        return {}
    return {"validation": tuple(sources.labeled_dev), "patience": patience,
            "steps_per_epoch": total_steps(rows, 1.0, batch_size, cfg.train.num_workers)}


def _heldout_check(cfg, files: list[str], columns: list[str], data: DataMarker) -> dict:
    """A stage on the transfer set checks its loss on the held-out transfer rows
    (``train.early_stop``); none where the corpus holds none out."""
    e = cfg.train.early_stop
    if e.every_steps <= 0 or not data.corpus.heldout:
        return {}
    return {"heldout_check": tuple(files), "check_columns": tuple(columns),
            "check_every": e.every_steps, "check_rows": e.heldout_rows,
            "patience": e.patience, "min_improvement": e.min_improvement}


def finetune_plan(cfg, data: DataMarker, sources: Sources, *, run: RunFolder, name: str,
                  init_path: str, init_in_run: bool, settings, tokenizer_path: str = "") -> tuple:
    """A fine-tuning stage (labels only, a new task head) of the teacher or of an exported
    student, with ``settings`` (a :class:`~xdistil_ray.config.FinetuneConfig`):
    (StageSpec, files, columns)."""
    rows = data.split("train").training_rows
    columns = label_columns(cfg.task)
    spec = _spec(cfg, name=name, losses=[LossSpec("labels")],
                 init_path=init_path, init_in_run=init_in_run, rows=rows,
                 epochs=settings.epochs, batch_size=settings.batch_size,
                 learning_rate=settings.learning_rate, label_names=data.label_names,
                 new_head=True, tokenizer_path=tokenizer_path, run=run,
                 freeze_word_embeddings=settings.freeze_word_embeddings,
                 **_validation(cfg, sources, rows, settings.batch_size, settings.patience))
    return spec, list(sources.labeled_train), columns + (["token_type_ids"] if sources.pairs else [])


def _spec(cfg, *, rows: int, epochs: float, run: RunFolder, min_steps: int = 0,
          **kwargs) -> StageSpec:
    t = cfg.train
    steps = total_steps(rows, epochs, kwargs["batch_size"], t.num_workers)
    return StageSpec(
        run=run, total_steps=max(steps, min_steps),
        zero_stage=t.zero_stage, log_every=t.log_every_steps,
        checkpoint_every=t.checkpoint_every_steps, seed=cfg.seed, task=cfg.task,
        windows=cfg.windows(),
        cache_bytes=t.epoch_cache_mb * 2**20, async_upload=t.async_checkpoint_upload,
        torch_threads=t.torch_threads or max(1, int(t.cpus_per_worker)), **kwargs)


def resolve_stage_losses(stage, shapes) -> list[LossSpec]:
    """A stage's losses checked against the models' ``shapes`` (layer maps, relation heads);
    raises ValueError on one that does not fit."""
    from xdistil_ray.distill import objective

    return objective.resolve_losses(
        stage.losses, num_student=shapes.student_layers, num_teacher=shapes.teacher_layers,
        student_hidden=shapes.student_hidden, teacher_hidden=shapes.teacher_hidden,
        teacher_heads=shapes.teacher_heads)


def training_resources(cfg) -> str:
    """The Ray Train worker group a training step asks for, as ``--dry-run`` prints it."""
    t = cfg.train
    each = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {}),
            **t.resources_per_worker}
    return (f"Ray Train: {t.num_workers} worker(s) x {json.dumps(each)}, DeepSpeed ZeRO-"
            f"{t.zero_stage}, {t.torch_threads or max(1, int(t.cpus_per_worker))} torch threads")
