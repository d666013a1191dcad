"""The run folder's layout: every path in a run folder, named once.

A run folder (local or ``s3://``) after the distillation pipeline::

    config.yaml            the resolved config of the last run
    LEASE                  the driver holding the folder (run/lease.py)
    inputs/                the embedded default's generated data, when used
    data/                  corpus/ (tokenized shards), labeled/{train,dev}/  + COMPLETE
    teacher_finetune/      model/, losses.json (when the teacher had no task head) + COMPLETE
    teacher/               shards/<shard>/ (the teacher's outputs, each shard committed) + COMPLETE
    student_init/          model/ (the student's starting weights) + COMPLETE
    stages/<k>-<name>/     model/, losses.json per stage + COMPLETE; stages/ray/: checkpoints
    student/               the exported Hugging Face folder (onnx/, README.md) + COMPLETE
    eval/                  metrics.json + COMPLETE
    candidates/<name>/     a sweep's candidate (student_init/, stages/, student/, eval/ as
                           above); student/ is then the chosen candidate's copy
    report.json, report.md, loss_curves.png, speed_size.png (a sweep: candidates.png)
    tensorboard/, logs/

The fine-tuning job's (jobs/finetune.py) folder holds ``data/``, ``init/``, ``finetune/``,
``model/``, ``eval/`` and the report.
"""

import posixpath

CONFIG = "config.yaml"
LEASE = "LEASE"
INPUTS = "inputs"
LOGS = "logs"
TENSORBOARD = "tensorboard"

DATA = "data"
CORPUS = "data/corpus"
LABELED = "data/labeled"
LABELED_TRAIN = "data/labeled/train"
LABELED_DEV = "data/labeled/dev"
DATA_STAGING = "data/_staging"
"""Cleaned rows with their reject reasons, between the data step's passes (deleted after)."""

TEACHER_FINETUNE = "teacher_finetune"
TEACHER = "teacher"
TEACHER_SHARDS = "teacher/shards"
STUDENT_INIT = "student_init"
STAGES = "stages"
"""The distillation stages' folders; Ray Train's run of them (one worker group) is under
``stages/ray``."""
RAY = "ray"
"""Ray Train's run (checkpoints, its state) under a training step's folder."""
STUDENT = "student"
EVAL = "eval"
METRICS = "eval/metrics.json"
CANDIDATES = "candidates"

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LOSS_PLOT = "loss_curves.png"
SPEED_PLOT = "speed_size.png"
CANDIDATES_PLOT = "candidates.png"

FINETUNE_INIT = "init"
FINETUNE_STAGE = "finetune"
FINETUNE_MODEL = "model"
"""The fine-tuning job's steps (its ``data/`` and ``eval/`` are named as above)."""

MODEL = "model"
"""A model's Hugging Face folder inside a committed step (``student_init/model``)."""


def stage_folder(k: int, name: str, prefix: str = "") -> str:
    """Stage ``k`` (from 0) named ``name``: ``stages/<k+1>-<name>`` (under a candidate's
    ``prefix``)."""
    return posixpath.join(prefix, STAGES, f"{k + 1}-{name}")


def candidate_folder(name: str) -> str:
    """A sweep's candidate ``name``: ``candidates/<name>``, which holds its own
    ``student_init/``, ``stages/``, ``student/`` and ``eval/``."""
    return posixpath.join(CANDIDATES, name)
