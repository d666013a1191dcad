"""The pipeline: the steps in order, skipping what is complete, refusing unsafe config changes.

Steps talk to each other only through the run folder; this module reads one step's marker and
hands the next step plain arguments.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from xdistil_ray import config as config_mod
from xdistil_ray.observe import console
from xdistil_ray.run import identity
from xdistil_ray.distill import stage_plan
from xdistil_ray.config import EMBEDDED
from xdistil_ray.config import Config
from xdistil_ray.config import ConfigError
from xdistil_ray.config.checks import stage_data
from xdistil_ray.run.identity import CONTENT
from xdistil_ray.data.readers import CorpusSource, resolve_source
from xdistil_ray.run.runfolder import MARKER, STARTED, RunFolder

log = logging.getLogger(__name__)

TEACHER_FINETUNE = "teacher_finetune"


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
    wants_labels = cfg.task != "none" or EMBEDDED not in (cfg.labeled.train, cfg.labeled.dev)
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
    if cfg.task == "qa" and corpus and corpus.fmt == "txt":
        raise ConfigError("corpus.path: a QA corpus needs .jsonl/.json/.parquet rows with a "
                          "question and a context (qa.question_column, qa.context_column)")
    if cfg.task == "pair" and ((corpus and corpus.fmt == "txt") or not cfg.corpus.text_pair_column):
        raise ConfigError("corpus.text_pair_column: a pair task's corpus needs .jsonl/.parquet "
                          "rows with both sentences (corpus.text_column, corpus.text_pair_column)")
    for field, s in ((f"labeled.{k}", v) for k, v in labeled.items()):
        if s is not None and s.fmt == "txt" and cfg.task != "none":
            raise ConfigError(f"{field}: {s.path!r} is plain text, which holds no labels; give "
                              f".jsonl, .parquet, .tsv or .csv rows with labeled.label_column "
                              f"({cfg.labeled.label_column!r})")
    for field, s in (("corpus.path", corpus), *((f"labeled.{k}", v) for k, v in labeled.items())):
        if cfg.task in ("token", "qa") and s is not None and s.fmt in ("tsv", "csv"):
            raise ConfigError(f"{field}: .{s.fmt} holds flat columns; a {cfg.task} task's rows "
                              "(word and tag lists, or questions with answers) need .jsonl, "
                              ".parquet or a `datasets` input")
    if cfg.task != "none" and not labeled:
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
        return write_embedded_data(folder.local_path("inputs"), seed=cfg.seed, task=cfg.task)
    with tempfile.TemporaryDirectory() as tmp:
        local = write_embedded_data(tmp, seed=cfg.seed, task=cfg.task)
        remote = {}
        for name, path in local.items():
            rel = "inputs/" + os.path.relpath(path, tmp).replace(os.sep, "/")
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


def resolve_stage_losses(stage, shapes: Shapes) -> list:
    from xdistil_ray.distill import objective

    return objective.resolve_losses(
        stage.losses, num_student=shapes.student_layers, num_teacher=shapes.teacher_layers,
        student_hidden=shapes.student_hidden, teacher_hidden=shapes.teacher_hidden,
        teacher_heads=shapes.teacher_heads)


_EMBEDDED_FILE = {"corpus.path": "corpus", "labeled.train": "train", "labeled.dev": "dev"}


# ---------------------------------------------------------------------- fingerprints

def fingerprint(cfg: Config, *sections: str, inputs: dict | None = None) -> dict:
    """The config fields a step's output depends on, flattened (``corpus.max_length``: 64),
    with the identities of the inputs they name (``inputs``: :func:`identity.of_inputs`'s
    ``corpus.path.content`` and the like). Every step depends on ``qa`` in a QA run (the
    windows), on none of it in another."""
    if getattr(cfg, "task", "") == "qa" and "task" in sections:
        sections += ("qa",)
    data = {**config_mod.flatten(config_mod.to_dict(cfg)), **(inputs or {})}
    return {k: v for k, v in data.items() if any(k == s or k.startswith(s + ".") for s in sections)}


_DATA_KEYS = ("seed", "task", "corpus.path", "corpus.text_column", "corpus.text_pair_column",
              "corpus.hf_split", "corpus.max_length", "corpus.max_chars", "corpus.rows_per_shard",
              "corpus.heldout_fraction", "corpus.with_labeled", "labeled", "teacher.model")
_TEACHER_KEYS = ("task", "teacher.model", "teacher.finetune", "labeled", "seed")
_INFERENCE_KEYS = _TEACHER_KEYS + ("corpus", "teacher.inference.dtype", "teacher.inference.top_k")
_INIT_KEYS = ("student",) + _TEACHER_KEYS


def stage_keys(k: int) -> tuple[str, ...]:
    return (("student",) + tuple(f"stages.{i}" for i in range(k + 1)) + _TEACHER_KEYS
            + ("train.min_stage_steps", "train.early_stop", "corpus.with_labeled"))


def export_fingerprint(cfg: Config, inputs: dict) -> dict:
    """What the exported student (``student/``) derives from: the last stage's fields, the
    export settings and the export code's version (the pipeline and the dry run both ask)."""
    from xdistil_ray.export import step as export

    final = fingerprint(cfg, *stage_keys(len(cfg.stages) - 1), inputs=inputs)
    return {**final, **fingerprint(cfg, "export"), "export.version": export.VERSION}


def eval_fingerprint(cfg: Config, inputs: dict) -> dict:
    """What the evaluation derives from: the exported student's fields, the eval settings and
    the eval code's version."""
    from xdistil_ray.evaluate import step as evaluate

    return {**export_fingerprint(cfg, inputs), **fingerprint(cfg, "eval"),
            "eval.version": evaluate.VERSION}


def changed_fields(old: dict, fp: dict) -> list[str]:
    """The fields of fingerprint ``fp`` that differ from ``old`` (a marker's). A field ``old``
    does not name (added to the config since) counts as its default; an input's identity that
    it lacks (written before identities were recorded) is unknown, not changed; an input at
    another path is named once, as its path."""
    defaults = config_mod.flatten(config_mod.to_dict(config_mod.Config()))
    changed = {k for k in set(old) | set(fp)
               if old.get(k, defaults.get(k)) != fp.get(k)
               and not (k.endswith("." + CONTENT) and k not in old)}
    return sorted(k for k in changed
                  if not (k.endswith("." + CONTENT) and k[:-len(CONTENT) - 1] in changed))


def refuse_changed(run: RunFolder, rel: str, marker: dict, fp: dict, state: str = "complete") -> None:
    """Raises ConfigError naming the fields that changed since ``rel`` was committed (or
    started). A field the marker does not name (added to the config since) counts as its
    default: a run folder of an older version resumes while the new field keeps its default."""
    old = marker.get("fingerprint", {})
    changed = changed_fields(old, fp)
    if changed:
        raise ConfigError(
            f"{run.uri}: step {rel!r} is {state} but these fields changed since: "
            f"{', '.join(_named(k, old, fp) for k in changed)}. Use a new output folder, or "
            "restore the old values.")


def _named(key: str, old: dict, new: dict) -> str:
    """A changed field as the message names it; an input's content with both identities."""
    if key.endswith("." + CONTENT):
        return (f"{key[:-len(CONTENT) - 1]} (same path, other files: {old.get(key)} then, "
                f"{new.get(key)} now)")
    return key


class Steps:
    """Runs steps in order against one run folder, skipping and checking committed ones."""

    def __init__(self, run: RunFolder, inputs: dict | None = None):
        self.run = run
        self.inputs = inputs or {}
        """The inputs' identities (:func:`identity.of_inputs`), part of every fingerprint."""

    def check(self, rel: str, fp: dict) -> dict | None:
        """Refuses a changed config for ``rel`` (complete, or started and resumable); returns
        its marker when complete."""
        marker = self.run.marker(rel)
        if marker is not None:
            refuse_changed(self.run, rel, marker, fp)
            return marker
        started = self.run.read_marker(f"{rel}/{STARTED}")
        if started is not None:
            refuse_changed(self.run, rel, started, fp, "half done (it resumes)")
        return None

    def _through_outages(self, rel: str, fp: dict, run_step: Callable[[dict], dict]) -> dict:
        return _run_through_outages(self.run, rel, fp, run_step)

    def verified(self, rel: str, marker: dict | None) -> dict | None:
        """``marker`` when the files it names are all there with their sizes; else None, after
        a console line per bad file and the marker's removal: the step runs again from its
        inputs (its outputs are a function of them) instead of failing in every reader."""
        if marker is None:
            return None
        problems = self.run.verify(rel, marker)
        if not problems:
            return marker
        for line in problems:
            log.info(f"{rel}: {line}")
        log.info(f"{rel}: its files differ from its {MARKER} marker: running it again")
        self.run.delete(rel, MARKER)
        return None

    def ensure(self, rel: str, fp: dict, run_step: Callable[[dict], dict],
               resumable: bool = False, derived: bool = False, announce: bool = True) -> dict:
        """The marker of step ``rel``: its committed one, or ``run_step(fp)``'s after running.
        A ``resumable`` step keeps (and is checked against) what an earlier attempt did. A
        ``derived`` step (measurements nothing else builds on) runs again when its fields
        changed, instead of refusing. Without ``announce`` the step prints its own start and
        end (training stages: their workers do)."""
        marker = self.verified(rel, self.run.marker(rel) if derived else self.check(rel, fp))
        if marker is not None and derived and changed_fields(marker.get("fingerprint", {}), fp):
            log.info(f"{rel}: settings changed, measuring again")
            marker = None
        if marker is not None:
            log.info(f"{rel}: complete, skipped")
            return marker
        if resumable and self.run.read_marker(f"{rel}/{STARTED}") is None:
            self.run.write_json(f"{rel}/{STARTED}", {"fingerprint": fp})
        started = time.time()
        if announce:
            log.info(f"{rel}: running")
        marker = self._through_outages(rel, fp, run_step)
        if announce:
            log.info(f"{rel}: done in {time.time() - started:.0f}s")
        console.sync_logs()
        return marker


STORAGE_RETRIES = 3
"""Times a step runs again after a storage outage that outlasted the requests' retries."""


def release_failed_pass(timeout_s: float = 10.0) -> int:
    """Ends what a failed Ray Data pass left running, and returns how many actors it killed.

    Steps run one at a time, so after a failed step no pass of this driver should run on:

    1. every Ray Data executor still reachable is shut down with ``force`` (its operators kill
       their actors; a pool left running would start a new actor for each one killed);
    2. once the executors' threads (``StreamingExecutor-*``) have ended (up to ``timeout_s``),
       the reference cycles that hold their operators are collected;
    3. any Ray Data map worker (``_MapWorker``) whose handle this driver still holds is killed.

    Collection alone (2 without 1 and 3) was not enough: in a CI run (2026-12-07, slow hour) a
    failed pass's pool actor was still alive 15 s after it. The teacher's pool holding its CPU
    (or GPU) leaves the next attempt or stage of a small cluster waiting forever for it."""
    import ray
    from ray.actor import ActorHandle
    # Ray Data's executor is internal; its shutdown(force=True) is what a failed pass's own
    # error path would call to kill its actors at once.
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    gc.collect()
    for obj in gc.get_objects():
        if isinstance(obj, StreamingExecutor):
            obj.shutdown(force=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(
            t.name.startswith("StreamingExecutor-") and t.is_alive()
            for t in threading.enumerate()):
        time.sleep(0.2)
    gc.collect()
    if not ray.is_initialized():
        return 0
    killed = set()
    for obj in gc.get_objects():
        if (isinstance(obj, ActorHandle) and obj._ray_actor_id not in killed
                and obj._ray_actor_creation_function_descriptor.class_name == "_MapWorker"):
            try:
                ray.kill(obj, no_restart=True)
            except Exception:  # noqa: BLE001 - an actor that already exited
                continue
            killed.add(obj._ray_actor_id)
    if killed:
        log.debug("killed %d map worker(s) a failed pass left", len(killed))
    return len(killed)


def _run_through_outages(run: RunFolder, rel: str, fp: dict, run_step: Callable[[dict], dict],
                         wait_s: float | None = None) -> dict:
    """``run_step(fp)``; after a storage error (an outage longer than the requests' own
    retries), a console line, a wait until the store answers (up to
    ``storage.OUTAGE_WAIT_S``), and the step again: a resumable step keeps what it committed
    (teacher shards, checkpoints), the others start over. Up to :data:`STORAGE_RETRIES`
    times."""
    from xdistil_ray.run import storage

    for attempt in range(STORAGE_RETRIES + 1):
        try:
            return run_step(fp)
        except Exception as e:  # noqa: BLE001 - only storage errors are retried
            if attempt == STORAGE_RETRIES or not storage.is_storage_error(e):
                raise
            why = storage.first_line(e)
        # The failed attempt's Ray Data operators hold their actors (the teacher's pool, with
        # its CPUs and GPUs) in reference cycles through the error's traceback: collected, the
        # actors exit. Otherwise they outlive the step, and on a small cluster the next
        # attempt or stage waits forever for what they hold (seen: a 0.5-CPU teacher actor
        # left a 2-CPU machine's stage 1 waiting on a 1-CPU read task).
        release_failed_pass()
        log.info(f"{rel}: waiting on storage ({why}); the step resumes once it answers")
        waited = storage.wait_until_reachable(
            run.uri, run.options, storage.OUTAGE_WAIT_S if wait_s is None else wait_s)
        log.info(f"{rel}: storage answers again after {waited:.0f} s: resuming the step")
    raise AssertionError("unreachable")


RAY_ENV = {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "2", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
"""Environment for the job's Ray processes (a value already in the environment wins).

Ray Data 2.60 reads parquet footers on a pool of actors that every ``read_parquet`` pass starts
anew: 32 by default, each a Python process (about 3 s of CPU to start). The run's reads are tens
to thousands of committed files, which two actors of 128 concurrent reads each cover.

Ray Train 2.60's controller polls its workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s
by default), and only then takes a worker's ``ray.train.report`` off its one-slot queue: a
report waits up to an interval for the previous one, and a worker group's end is seen up to an
interval late. At 0.5 s a checkpoint report and a stage group's end each cost at most 0.5 s
(``benchmarks/train_group_start.py``: 1.82 -> 0.46 s per report in a row, 4.2-5.2 -> 1.4-1.5 s
from the last report to ``fit()``'s return). The controller's poll is one small remote call per
worker.

Ray Data's V1 parquet datasource (``RAY_DATA_USE_DATASOURCE_V2=0``) starts no such pool and
reads a few small files in 0.13x the time on warm workers (``benchmarks/parquet_read.py``). It
is not switched on: V2 is Ray 2.60's default and the path its maintainers develop, and once idle
workers are kept (:data:`LOCAL_RAY_ENV`) its footer actors start on warm processes. (An earlier
note here blamed V1 for the fine-tuning test's students not learning, 46.5% against 70.3%. Re-run
on 2026-11-30, the from-scratch student's loss does not move under either reader in those 72
steps, 0.689 -> 0.689 under V1 and 0.692 -> 0.685 under V2, with dev accuracy 50.4% and 70.3%:
the recipe is at the edge of learning and the row order tips it; V1 does not corrupt rows.)"""


LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
                 "RAY_idle_worker_killing_time_threshold_ms": "600000"}
"""Added for a Ray this process starts on its own machine. Ray Train starts an actor per worker
group that watches for node preemption (spot instances); one machine has none to watch, and the
actor's process costs about 4 s of CPU per group (in wall time no gain shows above a 2-core
machine's noise: ``benchmarks/train_group_start.py``).

Ray kills a worker process that has been idle for a second once more workers than CPUs are
alive; the next task or actor then starts a new one, which pays Python's and Ray's start again
and re-imports what the run uses (pandas, pyarrow, tokenizers, torch: 3-10 s of CPU each on a
2-core machine). A run's steps start tasks and actors in bursts, so on one machine idle workers
are kept for 10 minutes (a new actor takes an idle worker when one is there): the data step run
three times in a row on one local Ray took 17.7, 20.0 and 20.8 s with Ray's default and 19.5,
3.7 and 3.9 s with this (``benchmarks/idle_workers.py``)."""


def ray_env_vars(local: bool = False) -> dict[str, str]:
    """The :data:`RAY_ENV` variables (and :data:`LOCAL_RAY_ENV`'s for a ``local`` Ray) the
    environment does not set already."""
    wanted = {**RAY_ENV, **(LOCAL_RAY_ENV if local else {})}
    return {k: v for k, v in wanted.items() if k not in os.environ}


def apply_ray_env(local: bool) -> dict[str, str]:
    """Sets :func:`ray_env_vars` in this process (and so in every process of a Ray it starts).
    Returns the variables it set (a cluster's workers take them from the job's runtime
    environment)."""
    env = ray_env_vars(local)
    os.environ.update(env)
    return env


def init_ray(cfg: Config) -> None:
    """Connects to the cluster (``ray.address``, or the one a ``ray job submit`` runs in), or
    starts a local Ray on loopback; then refuses work the cluster could never place and local
    paths its other machines would not see (:func:`xdistil_ray.pipelines.placement.check`)."""
    import ray

    from xdistil_ray.pipelines import placement

    if not ray.is_initialized():
        _connect(cfg)
    placement.check(cfg, placement.snapshot())


def _connect(cfg: Config) -> None:
    import ray

    address = cfg.ray.address or os.environ.get("RAY_ADDRESS", "")
    env = apply_ray_env(local=not address)
    if address:
        # A cluster's workers take them from the job's runtime environment (merged with a
        # submitted job's own: Ray merges env_vars per variable).
        ray.init(address=address, runtime_env={"env_vars": env} if env else None)
    else:
        # Local Ray stays on loopback; the dashboard too (Ray Train queries its state API).
        ray.init(num_cpus=cfg.ray.num_cpus or None, _node_ip_address="127.0.0.1",
                 dashboard_host="127.0.0.1")
    console.route_worker_output()
    console.quiet_ray_data()


def run(cfg: Config, take_over: bool = False) -> dict:
    """Runs the whole pipeline for ``cfg``, holding the run folder's lease (``take_over``:
    from a driver that is gone); returns the report."""
    from xdistil_ray.run import lease
    from xdistil_ray.run import storage

    started = time.time()
    folder = RunFolder(cfg.output, cfg.storage_options())
    storage.check_access(folder.uri, folder.options)  # seconds, before any compute
    with lease.hold(folder, take_over):
        return _run(cfg, folder, started)


def _run(cfg: Config, folder: RunFolder, started: float) -> dict:
    from xdistil_ray.evaluate import step as evaluate
    from xdistil_ray.export import step as export
    from xdistil_ray.data import step as prepare
    from xdistil_ray.report import step as report
    from xdistil_ray.student import step as student_init
    from xdistil_ray.teacher import step as teacher_inference

    from xdistil_ray.modeling.models import teacher_label_order

    inputs = resolve_inputs(cfg, folder)
    log.info(f"run folder: {folder.uri}")
    steps = Steps(folder, identity.of_inputs(cfg, inputs))
    check_unchanged(steps, cfg)
    folder.write_text("config.yaml", config_mod.dump_yaml(cfg))
    console.attach_run(folder)

    data = steps.ensure(prepare.STEP, fingerprint(cfg, *_DATA_KEYS, inputs=steps.inputs),
                        lambda fp: _prepare(folder, cfg, inputs, fp))
    init_ray(cfg)  # done already where the data step ran its corpus pass
    check_data(cfg, data)
    label_names = teacher_label_order(inputs.teacher_path, data["labeled"]["label_names"],
                                      cfg.task)
    data = {**data, "labeled": {**data["labeled"], "label_names": label_names}}
    teacher = _teacher(steps, cfg, inputs, data, label_names)
    teacher_marker = None
    outputs = teacher_outputs(cfg)
    if outputs:
        inf = cfg.teacher.inference
        teacher_marker = steps.ensure(
            teacher_inference.STEP, fingerprint(cfg, *_INFERENCE_KEYS, inputs=steps.inputs),
            lambda fp: teacher_inference.run_step(
                folder, data, model_path=teacher.path, model_in_run=teacher.in_run, outputs=outputs, task=cfg.task,
                batch_size=inf.batch_size, num_actors=inf.num_actors,
                num_gpus=inf.num_gpus_per_actor, num_cpus=inf.num_cpus_per_actor,
                resources=inf.resources, group_batches=inf.group_batches, dtype=inf.dtype,
                top_k=inf.top_k, max_actors=inf.max_actors,
                progress_every_s=cfg.progress_every_s, fingerprint=fp),
            resumable=True)
        missing = sorted(set(outputs) - set(teacher_marker["outputs"]))
        if missing:
            raise ConfigError(
                f"{folder.uri}: the stored teacher outputs lack {', '.join(missing)}, which a "
                "stage now reads; set that stage's targets: online, or use a new output folder")
    s_cfg = cfg.student
    init_marker = steps.ensure(
        student_init.STEP, fingerprint(cfg, *_INIT_KEYS, inputs=steps.inputs),
        lambda fp: student_init.run_step(
            folder, teacher_path=teacher.path, teacher_in_run=teacher.in_run, task=cfg.task,
            num_layers=s_cfg.num_layers, hidden_size=s_cfg.hidden_size,
            num_heads=s_cfg.num_heads, intermediate_size=s_cfg.intermediate_size,
            init=s_cfg.init, teacher_layers=s_cfg.teacher_layers, pretrained=s_cfg.pretrained,
            architecture=s_cfg.architecture, seed=cfg.seed, fingerprint=fp))
    sources = stage_plan.Sources.of(folder, data, teacher_marker)
    stage_markers = _stages(steps, cfg, data, sources, teacher, inputs.shapes)
    final_stage = stage_plan.stage_folder(len(cfg.stages) - 1, cfg.stages[-1].name)
    steps.ensure(export.STEP, export_fingerprint(cfg, steps.inputs), lambda fp: export.run_step(
        folder, final_stage, inputs.teacher_path, label_names, fp, task=cfg.task,
        onnx_opset=cfg.export.opset if cfg.export.onnx else None), derived=True)
    eval_marker = steps.ensure(
        evaluate.STEP, eval_fingerprint(cfg, steps.inputs),
        lambda fp: _evaluate(folder, cfg, data, teacher, sources, fp), derived=True)
    _clean_checkpoints(folder, cfg)
    trained = [(f"{k + 1}. {s.name}", stage_plan.stage_folder(k, s.name))
               for k, s in enumerate(cfg.stages)]
    if teacher.in_run:
        trained.insert(0, ("teacher fine-tune", TEACHER_FINETUNE))
    result = report.write(folder, cfg, stage_folders=trained, data=data, teacher=teacher_marker,
                          init=init_marker,
                          stages=stage_markers, evaluation=eval_marker,
                          finetune=folder.marker(TEACHER_FINETUNE) if teacher.in_run else None,
                          seconds=round(time.time() - started, 1))
    if cfg.tracking.mlflow_uri:
        from xdistil_ray.report import mlflow_log

        run_id = mlflow_log.log_run(folder, cfg, result, trained)
        log.info(f"MLflow: run {run_id} in experiment {cfg.tracking.mlflow_experiment!r} "
                 f"at {cfg.tracking.mlflow_uri}")
    if cfg.tracking.wandb_project:
        from xdistil_ray.report import wandb_log

        run_id = wandb_log.log_run(folder, cfg, result, trained)
        log.info(f"W&B: run {run_id} in project {cfg.tracking.wandb_project!r}")
    console.show(report.summary(folder, result))
    return result


def _clean_checkpoints(folder: RunFolder, cfg: Config) -> None:
    """Deletes the Ray Train checkpoints of committed stages, once the run has moved on (Ray
    Train's controller may still write into its folder just after ``fit`` returns)."""
    from xdistil_ray.distill.step import clean_checkpoints

    clean_checkpoints(folder, TEACHER_FINETUNE, [TEACHER_FINETUNE])
    clean_checkpoints(folder, STAGES_RAY, [stage_plan.stage_folder(k, s.name)
                                           for k, s in enumerate(cfg.stages)])


def _text_settings(cfg: Config, inputs: Inputs):
    from xdistil_ray.data import step as prepare

    return prepare.TextSettings(inputs.teacher_path, cfg.corpus.max_length,
                                cfg.corpus.max_chars, cfg.corpus.heldout_fraction,
                                cfg.qa.windows() if cfg.task == "qa" else None)


def _qa_columns(cfg: Config) -> tuple[str, ...]:
    q = cfg.qa
    return (q.question_column, q.context_column, q.answers_column) if cfg.task == "qa" else ()


def check_labeled(cfg: Config, inputs: Inputs) -> dict[str, int]:
    """The rows the data step would keep of each labeled split (the dry run's check; embedded
    splits, not generated by a dry run, are left out). Raises ConfigError as the step would."""
    from xdistil_ray.data import step as prepare

    sources = {k: v for k, v in inputs.labeled.items() if v is not None}
    if "train" not in sources:  # none, or only dev: its labels are checked against train's
        return {}
    return prepare.check_labeled(
        sources, _text_settings(cfg, inputs), text_column=cfg.labeled.text_column,
        label_column=cfg.labeled.label_column,
        pair_column=cfg.labeled.text_pair_column if cfg.task == "pair" else "", task=cfg.task,
        qa_columns=_qa_columns(cfg))


def _prepare(folder: RunFolder, cfg: Config, inputs: Inputs, fp: dict) -> dict:
    from xdistil_ray.data import step as prepare

    settings = _text_settings(cfg, inputs)
    qa_columns = _qa_columns(cfg)
    return prepare.run_step(folder, inputs.corpus, inputs.labeled, settings,
                            text_column=cfg.corpus.text_column,
                            label_column=cfg.labeled.label_column,
                            labeled_text_column=cfg.labeled.text_column,
                            rows_per_shard=cfg.corpus.rows_per_shard, fingerprint=fp,
                            pair_column=cfg.corpus.text_pair_column if cfg.task == "pair" else "",
                            labeled_pair_column=cfg.labeled.text_pair_column
                            if cfg.task == "pair" else "", task=cfg.task,
                            dev_fraction=cfg.labeled.dev_fraction,
                            progress_every_s=cfg.progress_every_s, qa_columns=qa_columns,
                            with_labeled=cfg.corpus.with_labeled,
                            start_ray=lambda: init_ray(cfg))


STAGES_RAY = "stages"
"""Ray Train's run of the distillation stages (one worker group for all of them) is under
``stages/ray``."""


def _stages(steps: Steps, cfg: Config, data: dict, sources, teacher, shapes: Shapes) -> list[dict]:
    """Skips the committed stages; trains the rest, in order, on one Ray Train worker group,
    each from the previous one's weights."""
    from xdistil_ray.student import step as student_init
    from xdistil_ray.distill import step as train

    markers, pending, previous = [], [], student_init.STEP
    for k, stage in enumerate(cfg.stages):
        rel = stage_plan.stage_folder(k, stage.name)
        fp = fingerprint(cfg, *stage_keys(k), inputs=steps.inputs)
        marker = steps.check(rel, fp)
        if marker is not None and not pending:
            marker = steps.verified(rel, marker)
        if marker is not None and not pending:
            log.info(f"{rel}: complete, skipped")
            markers.append(marker)
        else:
            pending.append((k, rel, fp, previous))
        previous = rel
    if not pending:
        return markers
    check_resumable(steps.run, cfg, STAGES_RAY, [rel for _, rel, _, _ in pending])
    specs, datasets = [], {}
    for k, rel, fp, init in pending:
        stage_specs = resolve_stage_losses(cfg.stages[k], shapes)
        spec, files, columns, heldout = stage_plan.plan(
            cfg, k, stage_specs, sources, data, run=steps.run, init_path=init, teacher=teacher,
            shapes=shapes)
        specs.append(dataclasses.replace(
            spec, rel=rel, dataset=f"stage{k + 1}", progress_every_s=cfg.progress_every_s,
            marker=train.stage_marker_fields(spec, fp)))
        datasets[f"stage{k + 1}"] = train.stage_dataset(steps.run, files, columns, heldout)
    markers += train.run_stages(steps.run, STAGES_RAY, specs, datasets, stage_plan.scaling(cfg))
    console.sync_logs()
    return markers


def _evaluate(folder: RunFolder, cfg: Config, data: dict, teacher, sources, fp: dict) -> dict:
    from xdistil_ray.evaluate import step as evaluate

    e = cfg.eval
    return evaluate.run_step(
        folder, num_cpus=e.num_cpus, num_gpus=e.num_gpus, fingerprint=fp, task=cfg.task,
        teacher_path=teacher.path, teacher_in_run=teacher.in_run, heldout_paths=sources.heldout_files(),
        dev_paths=list(sources.labeled_dev),
        label_names=data["labeled"]["label_names"], max_heldout_rows=e.max_heldout_rows,
        speed_batch_size=e.speed_batch_size, speed_repeats=e.speed_repeats,
        windows=cfg.qa.windows() if cfg.task == "qa" else None)


def check_data(cfg: Config, data: dict) -> None:
    """Stops with a clear message when the prepared data cannot feed the configured stages."""
    c = data["corpus"]
    train_rows = stage_plan.training_rows(c) - c["heldout"]
    if c["kept"] == 0:
        raise ConfigError(f"corpus.path: no sentence survived cleaning ({c['input_rows']} rows "
                          f"in, dropped {c['dropped']})")
    splits = data["labeled"]["splits"]
    names = data["labeled"]["label_names"]
    if cfg.task not in ("none", "qa") and len(names) < 2:
        raise ConfigError(f"labeled.train: needs at least 2 classes, found {names}")
    top_k = cfg.teacher.inference.top_k
    if top_k and cfg.task != "none" and top_k >= len(names):
        raise ConfigError(f"teacher.inference.top_k: {top_k} is not below the {len(names)} "
                          "labels; 0 stores every logit")
    for k, stage in enumerate(cfg.stages):
        rows = (stage_plan.training_rows(splits["train"]) if stage_data(stage) == "labeled"
                else train_rows)
        if rows < stage.batch_size * cfg.train.num_workers:
            raise ConfigError(
                f"stages.{k}.batch_size: {rows} training rows cannot fill one batch of "
                f"{stage.batch_size} on each of {cfg.train.num_workers} workers")


def check_resumable(run: RunFolder, cfg: Config, ray_rel: str, stage_rels: list[str]) -> None:
    """Refuses, before any work, a half-done stage (of the Ray Train run under ``ray_rel``)
    whose newest checkpoint cannot resume on ``train.num_workers`` at ``train.zero_stage``
    (:func:`checkpoint.world_size_problem`)."""
    from xdistil_ray.distill.checkpoint import newest_progress, world_size_problem

    for rel in stage_rels:
        progress = newest_progress(run, f"{ray_rel}/ray", rel)
        if progress is None:
            continue
        field, why = world_size_problem(progress, cfg.train.num_workers, cfg.train.zero_stage)
        if field:
            raise ConfigError(f"{field}: {rel} is half done; {why}")


def check_unchanged(steps: Steps, cfg: Config) -> None:
    """Refuses an unsafe config change before any work (each committed or started step is
    checked)."""
    checks = [("data", _DATA_KEYS), (TEACHER_FINETUNE, _TEACHER_KEYS),
              ("teacher", _INFERENCE_KEYS), ("student_init", _INIT_KEYS)]
    checks += [(stage_plan.stage_folder(k, s.name), stage_keys(k))
               for k, s in enumerate(cfg.stages)]
    refuse_changes(steps, [(rel, fingerprint(cfg, *keys, inputs=steps.inputs))
                           for rel, keys in checks])


def refuse_changes(steps: Steps, checks: list[tuple[str, dict]]) -> None:
    """One ConfigError naming every step (of ``(folder, fingerprint)``) whose fields changed."""
    problems = []
    for rel, fp in checks:
        try:
            steps.check(rel, fp)
        except ConfigError as e:
            problems.append(str(e).split(": ", 1)[1])
    if problems:
        raise ConfigError(f"{steps.run.uri}: " + "; ".join(problems))


def teacher_outputs(cfg: Config) -> tuple[str, ...]:
    """What teacher inference stores: logits for every task with a head (agreement with the
    teacher is measured on them), last-layer states where a stage reads them stored."""
    outputs = [] if cfg.task == "none" else ["logits"]
    if any(s.targets == "stored" and any(loss.type == "representation" for loss in s.losses)
           for s in cfg.stages):
        outputs.append("hidden")
    return tuple(outputs)


def _teacher(steps: Steps, cfg: Config, inputs: Inputs, data: dict,
             label_names: list[str]) -> stage_plan.Teacher:
    """Fine-tunes the teacher when it has no head for the task (or one of another size)."""
    from xdistil_ray.modeling.models import has_task_head, replaced_head

    num_labels = None if cfg.task == "qa" else len(label_names)
    if cfg.task == "none" or has_task_head(inputs.teacher_path, num_labels, cfg.task):
        return stage_plan.Teacher(inputs.teacher_path, False)
    line = replaced_head(inputs.teacher_path, label_names, cfg.task)
    if line and steps.run.marker(TEACHER_FINETUNE) is None:
        console.show(line)
    steps.ensure(TEACHER_FINETUNE, fingerprint(cfg, *_TEACHER_KEYS, inputs=steps.inputs),
                 lambda fp: _finetune_teacher(steps.run, cfg, inputs, data, fp), resumable=True,
                 announce=False)
    return stage_plan.Teacher(TEACHER_FINETUNE, True)


def _finetune_teacher(folder: RunFolder, cfg: Config, inputs: Inputs, data: dict, fp: dict):
    from xdistil_ray.distill import step as train

    check_resumable(folder, cfg, TEACHER_FINETUNE, [TEACHER_FINETUNE])
    sources = stage_plan.Sources.of(folder, data, None)
    spec, files, columns = stage_plan.finetune_plan(
        cfg, data, sources, run=folder, name=TEACHER_FINETUNE, init_path=inputs.teacher_path,
        init_in_run=False, settings=cfg.teacher.finetune, tokenizer_path=inputs.teacher_path)
    spec = dataclasses.replace(spec, progress_every_s=cfg.progress_every_s)
    dataset = train.stage_dataset(folder, files, columns, None)
    return train.run_stage(folder, TEACHER_FINETUNE, spec, dataset, stage_plan.scaling(cfg), fp)
