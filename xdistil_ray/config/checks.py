"""Checks of a well-typed config whose values make no sense; each names the field and the fix.

Kept apart from :mod:`xdistil_ray.config` (the dataclasses and their loading), which calls
:func:`validate` once a config is built.
"""

from __future__ import annotations

import re

from xdistil_ray.config.extras import require
from xdistil_ray.run import storage
from xdistil_ray.errors import ConfigError

TASKS = ("sentence", "pair", "token", "qa", "none")
LOSSES = ("representation", "hidden_states", "attention_relations", "logits", "labels")
LAYER_MAPS = ("last", "uniform", "explicit")
ONLINE_ONLY = ("hidden_states", "attention_relations")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg) -> None:
    """Checks values of a :class:`~xdistil_ray.config.Config` that are well-typed but make no
    sense; raises ConfigError naming the field."""
    _check(bool(cfg.output), "output: give a run folder, e.g. output=runs/my-run")
    storage.check_uri(cfg.output, "output")
    for field_name, value in (("corpus.path", cfg.corpus.path), ("labeled.train", cfg.labeled.train),
                              ("labeled.dev", cfg.labeled.dev)):
        storage.check_uri(value, field_name)
    _validate_storage(cfg)
    _check_dev_fraction(cfg)
    _check(bool(cfg.corpus.path) or cfg.task == "qa",
           "corpus.path: give the transfer corpus (only a QA task can do without one: its "
           "labeled questions are its transfer set)")
    _check(bool(cfg.teacher.model), "teacher.model: give a model id or folder")
    _check(cfg.corpus.max_length >= 8, "corpus.max_length: must be at least 8 tokens")
    _check(cfg.corpus.max_chars >= cfg.corpus.max_length, "corpus.max_chars: must be >= max_length")
    _check(cfg.corpus.rows_per_shard >= 1, "corpus.rows_per_shard: must be at least 1")
    _check(0 < cfg.corpus.heldout_fraction < 0.5, "corpus.heldout_fraction: must be in (0, 0.5)")
    _check(cfg.progress_every_s >= 0, "progress_every_s: must be >= 0 seconds")
    _validate_inference(cfg)
    _check(cfg.teacher.finetune.epochs > 0, "teacher.finetune.epochs: must be > 0")
    _check(cfg.task in TASKS, f"task: must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    _check_qa(cfg.qa)
    if cfg.task == "pair":
        _check(bool(cfg.labeled.text_pair_column),
               "labeled.text_pair_column: a pair task needs the second sentence's column")
    _validate_student(cfg.student)
    _validate_candidates(cfg)
    _check(len(cfg.stages) >= 1, "stages: give at least one training stage")
    names = [st.name for st in cfg.stages]
    _check(len(set(names)) == len(names), f"stages: stage names must be unique, got {names}")
    for i, st in enumerate(cfg.stages):
        _validate_stage(cfg, st, f"stages.{i}")
    _validate_train(cfg)
    _validate_outputs(cfg)


def _validate_inference(cfg) -> None:
    inf = cfg.teacher.inference
    _check(inf.batch_size >= 1, "teacher.inference.batch_size: must be at least 1")
    _check(inf.num_actors >= 1, "teacher.inference.num_actors: must be at least 1")
    _check(inf.max_actors == 0 or inf.max_actors >= inf.num_actors,
           f"teacher.inference.max_actors: must be 0 (a fixed pool) or at least num_actors "
           f"({inf.num_actors}), got {inf.max_actors}")
    _check(inf.group_batches >= 1, "teacher.inference.group_batches: must be at least 1")
    _check(inf.dtype in ("auto", "float32", "bfloat16", "float16"),
           f"teacher.inference.dtype: {inf.dtype!r} is not one of auto, float32, bfloat16, float16")
    _check(inf.top_k >= 0, "teacher.inference.top_k: must be >= 0 (0 = all logits)")
    _check(not (inf.top_k and cfg.task in ("token", "qa")),
           f"teacher.inference.top_k: {cfg.task} tasks store every real token's logits; set it "
           "to 0")
    _check(inf.num_gpus_per_actor >= 0, "teacher.inference.num_gpus_per_actor: must be >= 0")
    _check(inf.num_cpus_per_actor > 0, "teacher.inference.num_cpus_per_actor: must be > 0")
    for where, resources in (("teacher.inference.resources", inf.resources),
                             ("train.resources_per_worker", cfg.train.resources_per_worker)):
        for name, amount in resources.items():
            _check(name not in ("CPU", "GPU", "memory"),
                   f"{where}.{name}: set CPUs and GPUs with their own fields; this is for custom "
                   "resources")
            _check(amount > 0, f"{where}.{name}: must be > 0")


def _validate_student(s, where: str = "student") -> None:
    _check(s.init in ("teacher", "random", "pretrained"),
           f"{where}.init: must be 'teacher', 'random' or 'pretrained'")
    _check(s.init != "pretrained" or bool(s.pretrained),
           f"{where}.pretrained: give the small model's folder or id for init: pretrained")
    _check(not s.teacher_layers or (s.init == "teacher" and len(s.teacher_layers) == s.num_layers),
           f"{where}.teacher_layers: give one teacher block per student block "
           f"({s.num_layers}), with init: teacher")
    _check(all(i >= 1 for i in s.teacher_layers), f"{where}.teacher_layers: blocks are 1-based")
    _check(s.num_layers >= 1, f"{where}.num_layers: must be at least 1")
    _check(s.num_heads >= 1 and s.hidden_size % s.num_heads == 0,
           f"{where}.hidden_size: must be a multiple of {where}.num_heads")
    _check(s.intermediate_size >= 1, f"{where}.intermediate_size: must be at least 1")
    _check(s.vocab in ("teacher", "data"), f"{where}.vocab: must be 'teacher' or 'data'")


SELECT_RULES = ("best", "smallest", "fastest")
CANDIDATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _validate_candidates(cfg) -> None:
    """A sweep's candidates (unique folder names, students that make sense) and its rule."""
    sel = cfg.select
    _check(sel.rule in SELECT_RULES,
           f"select.rule: must be one of {', '.join(SELECT_RULES)}, got {sel.rule!r}")
    _check(0 < sel.min_retained <= 1.5, "select.min_retained: must be in (0, 1.5]")
    _check(sel.max_latency_ms >= 0, "select.max_latency_ms: must be 0 (no budget) or more")
    if not cfg.candidates:
        default = type(sel)()
        _check(sel == default, "select: picks one of `candidates`, and none is given; list the "
               "candidate students (candidates=[{name: small, student: {hidden_size: 128}}, "
               "...]) or leave select out")
        return
    names = [c.name for c in cfg.candidates]
    for i, c in enumerate(cfg.candidates):
        _check(bool(CANDIDATE_NAME.fullmatch(c.name)),
               f"candidates.{i}.name: a folder name of letters, digits, '-', '_' and '.' "
               f"(starting with a letter or digit), got {c.name!r}")
        _validate_student(c.student, f"candidates.{i}.student")
        _check(c.learning_rate_scale > 0, f"candidates.{i}.learning_rate_scale: must be > 0")
        _check(c.temperature >= 0, f"candidates.{i}.temperature: must be 0 (each loss's own) "
               "or more")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    _check(not duplicates, f"candidates: names must be unique (each is a folder), "
           f"{', '.join(duplicates)} given more than once")


def _validate_outputs(cfg) -> None:
    """The evaluation, the export, the trackers (whose packages must be installed) and the
    plan's assumptions."""
    _check(cfg.plan.gpu_peak_tflops > 0, "plan.gpu_peak_tflops: must be > 0")
    _check(0 < cfg.plan.gpu_mfu <= 1, "plan.gpu_mfu: must be in (0, 1]")
    _check(cfg.eval.max_heldout_rows >= 1, "eval.max_heldout_rows: must be at least 1")
    _check(cfg.eval.speed_batch_size >= 1, "eval.speed_batch_size: must be at least 1")
    _check(cfg.eval.speed_repeats >= 1, "eval.speed_repeats: must be at least 1")
    _check(18 <= cfg.export.opset <= 23, f"export.opset: {cfg.export.opset} is not one that "
           "PyTorch's ONNX exporter writes and ONNX Runtime runs (18 to 23)")
    if cfg.export.onnx:
        require("onnx")
    if cfg.tracking.mlflow_uri:
        require("mlflow")
    if cfg.tracking.wandb_project:
        require("wandb")


def _check_qa(q) -> None:
    _check(q.max_length >= 16, "qa.max_length: must be at least 16 tokens")
    _check(0 <= q.doc_stride < q.max_length // 2,
           f"qa.doc_stride: must be in [0, qa.max_length / 2) = [0, {q.max_length // 2}), the "
           "tokens neighbouring windows share")
    _check(q.max_answer_length >= 1, "qa.max_answer_length: must be at least 1 token")
    _check(q.n_best >= 1, "qa.n_best: must be at least 1")
    _check(q.max_windows >= 1, "qa.max_windows: must be at least 1")
    for name in ("question_column", "context_column", "answers_column"):
        _check(bool(getattr(q, name)), f"qa.{name}: give the column's name")


def _check_dev_fraction(cfg) -> None:
    _check(0 <= cfg.labeled.dev_fraction < 0.5, "labeled.dev_fraction: must be in [0, 0.5)")


def validate_finetune(cfg) -> None:
    """:func:`validate` for a :class:`~xdistil_ray.config.FinetuneJob`."""
    _check(bool(cfg.output), "output: give a run folder, e.g. output=runs/finetune")
    _check(bool(cfg.model), "model: give the exported student to fine-tune, e.g. "
                            "model=runs/agnostic/student")
    for field_name in ("output", "model"):
        storage.check_uri(getattr(cfg, field_name), field_name)
    for split in ("train", "dev"):
        storage.check_uri(getattr(cfg.labeled, split), f"labeled.{split}")
    _check(bool(cfg.labeled.train), "labeled.train: give the labeled training data")
    _validate_storage(cfg)
    _check_dev_fraction(cfg)
    _check(cfg.task in ("sentence", "pair", "token"),
           f"task: must be sentence, pair or token, got {cfg.task!r}")
    _check(cfg.init in ("pretrained", "random"),
           f"init: must be pretrained or random, got {cfg.init!r}")
    _check(cfg.max_length >= 8, "max_length: must be at least 8 tokens")
    if cfg.task == "pair":
        _check(bool(cfg.labeled.text_pair_column),
               "labeled.text_pair_column: a pair task needs the second sentence's column")
    ft = cfg.finetune
    _check(ft.epochs > 0, "finetune.epochs: must be > 0")
    _check(ft.learning_rate > 0, "finetune.learning_rate: must be > 0")
    _check(ft.batch_size >= 1, "finetune.batch_size: must be at least 1")
    _validate_train(cfg)


def _validate_storage(cfg) -> None:
    endpoint = cfg.storage.endpoint
    _check(not endpoint or (endpoint.startswith(("http://", "https://")) and "@" not in endpoint),
           "storage.endpoint: give http(s)://host:port, without credentials")
    _check(cfg.storage.max_attempts >= 1, "storage.max_attempts: must be at least 1")


def _validate_train(cfg) -> None:
    t = cfg.train
    _check(t.num_workers >= 1, "train.num_workers: must be at least 1")
    _check(0 <= t.zero_stage <= 3, "train.zero_stage: must be 0, 1, 2 or 3")
    _check(t.log_every_steps >= 1, "train.log_every_steps: must be at least 1")
    _check(t.checkpoint_every_steps >= 1, "train.checkpoint_every_steps: must be at least 1")
    _check(t.max_failures >= 0, "train.max_failures: must be >= 0")
    _check(t.max_preemption_failures >= -1,
           "train.max_preemption_failures: must be -1 (any number) or >= 0")
    _check(t.epoch_cache_mb >= 0, "train.epoch_cache_mb: must be 0 or more")
    e = t.early_stop
    _check(e.every_steps >= 0, "train.early_stop.every_steps: must be 0 (no checks) or more")
    _check(e.patience >= 1, "train.early_stop.patience: must be at least 1 (every_steps=0 turns "
           "the checks off)")
    _check(0 <= e.min_improvement < 1, "train.early_stop.min_improvement: must be in [0, 1)")
    _check(e.heldout_rows >= 1, "train.early_stop.heldout_rows: must be at least 1")
    _check(cfg.eval.num_cpus > 0, "eval.num_cpus: must be > 0")
    _check(cfg.eval.num_gpus >= 0, "eval.num_gpus: must be 0 or more")


def stage_data(stage) -> str:
    """Where a stage's rows come from: ``corpus`` or ``labeled`` (``auto`` resolved)."""
    if stage.data != "auto":
        return stage.data
    return "labeled" if any(loss.type == "labels" for loss in stage.losses) else "corpus"


def _validate_stage(cfg, st, where: str) -> None:
    _check(st.name.replace("-", "").replace("_", "").isalnum(),
           f"{where}.name: use letters, digits, '-' and '_' only, got {st.name!r}")
    _check(st.epochs > 0, f"{where}.epochs: must be > 0")
    _check(st.learning_rate > 0, f"{where}.learning_rate: must be > 0")
    _check(st.batch_size >= 1, f"{where}.batch_size: must be at least 1")
    _check(st.data in ("auto", "corpus", "labeled"),
           f"{where}.data: must be auto, corpus or labeled, got {st.data!r}")
    _check(st.targets in ("stored", "online"),
           f"{where}.targets: must be stored or online, got {st.targets!r}")
    _check(st.unfreeze in ("none", "gradual"),
           f"{where}.unfreeze: must be none or gradual, got {st.unfreeze!r}")
    _check(st.unfreeze_steps >= 0, f"{where}.unfreeze_steps: must be >= 0")
    _check(len(st.losses) >= 1, f"{where}.losses: give at least one loss")
    data = stage_data(st)
    if data == "labeled":
        _check(bool(cfg.labeled.train), f"{where}: trains on labeled data; give labeled.train")
        _check(cfg.task != "none", f"{where}.data: task none has no labeled data; use corpus")
    for j, loss in enumerate(st.losses):
        _validate_loss(cfg, st, loss, data, f"{where}.losses.{j}")
    _check(sum(loss.type == "attention_relations" for loss in st.losses) <= 1,
           f"{where}.losses: one attention_relations loss per stage (one teacher block to one "
           "student block); use another stage for another pair of blocks")


def _validate_loss(cfg, st, loss, data: str, where: str) -> None:
    _check(loss.type in LOSSES, f"{where}.type: must be one of {', '.join(LOSSES)}, got {loss.type!r}")
    _check(loss.weight > 0, f"{where}.weight: must be > 0")
    _check(loss.function in ("mse", "kl"), f"{where}.function: must be mse or kl")
    _check(loss.temperature > 0, f"{where}.temperature: must be > 0")
    _check(loss.layer_map in LAYER_MAPS, f"{where}.layer_map: must be one of {', '.join(LAYER_MAPS)}")
    _check(loss.last_k >= 1, f"{where}.last_k: must be at least 1")
    _check(loss.layer_map != "explicit" or bool(loss.layers),
           f"{where}.layers: give [student layer, teacher layer] pairs for layer_map: explicit")
    _check(all(len(pair) == 2 for pair in loss.layers),
           f"{where}.layers: each item must be a [student layer, teacher layer] pair")
    _check(loss.relation_heads >= 0, f"{where}.relation_heads: must be >= 0")
    if loss.type in ("logits", "labels"):
        _check(cfg.task != "none", f"{where}.type: task none has no head: {loss.type} cannot "
               "be distilled; use representation, hidden_states or attention_relations")
    if loss.type == "labels":
        _check(data == "labeled", f"{where}: a labels loss needs the stage's data: labeled")
    elif data == "labeled":
        _check(st.targets == "online", f"{where}: teacher targets on labeled data are computed "
               "online; set the stage's targets: online")
    if st.targets == "stored":
        _check(loss.type not in ONLINE_ONLY, f"{where}.type: {loss.type} targets are too large "
               "to store; set the stage's targets: online")
        _check(loss.type != "representation" or (loss.layer_map == "last" and loss.last_k == 1),
               f"{where}.layer_map: stored targets hold the teacher's last layer only; set the "
               "stage's targets: online to match several layers")
