"""``jobs/finetune.py``: fine-tune an exported student on a labeled task, on Ray Train.

The XtremeDistilTransformers use: a small task-agnostic student, distilled once, transferred to
new tasks. Its steps are :class:`~xdistil_ray.run.steps.Step` objects run by the distillation pipeline's
runner (markers, resume, refused config changes, storage outages); the job has no
``--dry-run``, so they plan nothing:

    data      the labeled splits cleaned and tokenized with the model's tokenizer
    init      the starting weights in the run folder (the model's, or fresh ones of its shape)
    finetune  one labels-only stage with a new task head (Ray Train + DeepSpeed)
    model     the fine-tuned Hugging Face folder (Auto classes, ``transformers.pipeline``)
    eval      dev scores (accuracy and macro-F1; entity F1 for token tasks)
    report    report.json, report.md, loss_curves.png
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.run import layout
from xdistil_ray import config as config_mod
from xdistil_ray.config import EMBEDDED
from xdistil_ray.config import ConfigError
from xdistil_ray.config import FinetuneJob
from xdistil_ray.config import dump_yaml
from xdistil_ray.data.readers import describe, resolve_source
from xdistil_ray.distill import stage_plan
from xdistil_ray.observe import console
from xdistil_ray.pipelines.ray_start import init_ray
from xdistil_ray.pipelines.inputs import embedded_inputs
from xdistil_ray.run import identity
from xdistil_ray.run import storage
from xdistil_ray.run import markers
from xdistil_ray.run.markers import DataMarker, EvalMarker, InitMarker, ModelMarker, StageMarker
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Planned, Runner, Step

log = logging.getLogger(__name__)

INIT = layout.FINETUNE_INIT
STAGE = layout.FINETUNE_STAGE
MODEL = layout.FINETUNE_MODEL
_DATA_KEYS = ("seed", "task", "model", "init", "max_length", "labeled")
_STAGE_KEYS = _DATA_KEYS + ("finetune",)


def local_model(cfg: FinetuneJob, tmp: str) -> str:
    """A local folder of ``cfg.model``: as given, or downloaded from a committed ``s3://``
    folder (an exported student). Raises ConfigError when it is not a loadable model."""
    path = cfg.model
    if storage.is_remote(path):
        parent, name = path.rstrip("/").rsplit("/", 1)
        source = RunFolder(parent, cfg.storage_options())
        if not source.is_complete(name):
            raise ConfigError(f"model: {path} is not a committed model folder (no COMPLETE "
                              "marker): give an exported student, e.g. s3://bucket/run/student")
        path = source.download(name, os.path.join(tmp, "model"))
    elif not os.path.isdir(path) and _looks_like_a_path(path):
        raise ConfigError(f"model: folder {path!r} does not exist")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model: cannot load {cfg.model!r}: {e}") from None
    if not hasattr(config, "num_hidden_layers"):
        raise ConfigError(f"model: {cfg.model!r} is not a transformer encoder")
    return path


def _looks_like_a_path(path: str) -> bool:
    """Not a hub id (``name`` or ``namespace/name``)."""
    return (os.path.isabs(path) or path.startswith(".") or path.count("/") > 1
            or ("/" in path and os.path.isdir(os.path.dirname(path))))


def _labeled_sources(run: RunFolder, cfg: FinetuneJob, generate: bool = True) -> dict:
    """The labeled splits, resolved (the embedded ones written into the run folder; with
    ``generate`` False, a dry run, nothing is written and they resolve to None)."""
    embedded = {}
    if generate and EMBEDDED in (cfg.labeled.train, cfg.labeled.dev):
        embedded = embedded_inputs(cfg, run)
    sources = {}
    for split in ("train", "dev"):
        value = getattr(cfg.labeled, split)
        if value == EMBEDDED and not generate:
            sources[split] = None
        elif value:
            sources[split] = resolve_source(embedded[split] if value == EMBEDDED else value,
                                            f"labeled.{split}", cfg.storage_options(),
                                            split=getattr(cfg.labeled, f"{split}_split"))
    return sources


def _identities(cfg: FinetuneJob, model_path: str, sources: dict) -> dict[str, str]:
    """The fingerprint entries of the job's inputs: the model (a replaced student at the same
    path is refused) and the labeled splits."""
    out = {f"model.{identity.CONTENT}": identity.of_model(cfg.model, model_path,
                                                          cfg.storage_options())}
    for split, source in sources.items():
        out[f"labeled.{split}.{identity.CONTENT}"] = identity.of_source(
            source, getattr(cfg.labeled, split))
    return out


class FinetuneContext(Context):
    """What the job's steps hand on."""

    def __init__(self, cfg: FinetuneJob, run: RunFolder, model_path: str, sources: dict,
                 dry: bool = False):
        flat = config_mod.flatten(config_mod.to_dict(cfg))
        defaults = config_mod.flatten(config_mod.to_dict(FinetuneJob()))
        runner = Runner(run, _identities(cfg, model_path, sources), defaults,
                        after_step=console.sync_logs)
        super().__init__(cfg, run, runner, flat, dry)
        self.model_path, self.labeled = model_path, sources
        self.started = time.time()
        self.data: DataMarker | None = None
        self.stage: StageMarker | None = None
        self.evaluation: EvalMarker | None = None
        self.report: dict | None = None

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    @property
    def sources(self):
        return stage_plan.Sources.of(self.run, self.data, None)

    def start_ray(self) -> None:
        if not self.dry:
            init_ray(self.cfg)

    def has_dev(self) -> bool:
        """Whether the job has a dev split (known from the config before the data step)."""
        if self.data is not None:
            return self.data.split("dev") is not None
        return bool(self.cfg.labeled.dev or self.cfg.labeled.dev_fraction)


class LabeledDataStep(Step):
    """``data/``: the labeled splits, cleaned and tokenized with the model's tokenizer."""

    name = folder = layout.DATA
    marker_kind = DataMarker
    keys = _DATA_KEYS

    def run(self, ctx: FinetuneContext, fp: dict) -> DataMarker:
        from xdistil_ray.data import step as prepare

        cfg, run = ctx.cfg, ctx.run
        settings = prepare.TextSettings(ctx.model_path, cfg.max_length,
                                        max(20_000, cfg.max_length), 0.0)
        pair = cfg.labeled.text_pair_column if task_of(cfg.task).pairs else ""
        start = time.time()
        labeled = prepare.prepare_labeled(
            run, ctx.labeled, settings, text_column=cfg.labeled.text_column,
            label_column=cfg.labeled.label_column, pair_column=pair, task=cfg.task,
            dev_fraction=cfg.labeled.dev_fraction)
        return run.commit(self.folder, DataMarker(
            labeled=markers.build(markers.LabeledData, labeled), pairs=bool(pair),
            task=cfg.task, fingerprint=fp, seconds=round(time.time() - start, 1)))

    def use(self, ctx: FinetuneContext, marker: DataMarker | None) -> None:
        if marker is None:  # a dry run before the step
            return
        cfg = ctx.cfg
        names = marker.label_names
        if len(names) < 2:
            raise ConfigError(f"labeled.train: needs at least 2 classes, found {names}")
        rows = marker.split("train").kept
        if rows < cfg.finetune.batch_size * cfg.train.num_workers:
            raise ConfigError(
                f"finetune.batch_size: {rows} training rows cannot fill one batch of "
                f"{cfg.finetune.batch_size} on each of {cfg.train.num_workers} workers")
        ctx.data = marker

    def plan(self, ctx: FinetuneContext) -> list[Planned]:
        cfg, data = ctx.cfg, ctx.run.marker(self.folder, DataMarker)
        reads = [f"labeled.{split}: {describe(src, getattr(cfg.labeled, split))}"
                 for split, src in ctx.labeled.items()]
        detail = ""
        if data is not None:
            detail = ", ".join(f"{split} {info.kept} rows kept of {info.input_rows}"
                               for split, info in data.labeled.splits.items())
        return [Planned(self.name, self.folder, self.state(ctx), reads, "driver",
                        detail + (f"; {len(data.label_names)} labels" if data else ""))]


class InitStep(Step):
    """``init/model``: the starting weights (the model's, or fresh ones of its shape); the
    stage adds the task head."""

    name = folder = INIT
    marker_kind = InitMarker
    keys = _DATA_KEYS

    def run(self, ctx: FinetuneContext, fp: dict) -> InitMarker:
        import torch
        from transformers import AutoConfig, AutoModel

        from xdistil_ray.modeling import models

        cfg, path = ctx.cfg, ctx.model_path
        if cfg.init == "random":
            torch.manual_seed(cfg.seed)
            model = AutoModel.from_config(AutoConfig.from_pretrained(path))
        else:
            model = AutoModel.from_pretrained(path)
        with tempfile.TemporaryDirectory() as tmp:
            models.save_pretrained(model, models.load_tokenizer(path), tmp)
            files = ctx.run.upload(tmp, f"{INIT}/model")
        return ctx.run.commit(INIT, InitMarker(
            files={f"model/{k}": v for k, v in files.items()}, fingerprint=fp,
            params=models.num_params(model), init=cfg.init))

    def plan(self, ctx: FinetuneContext) -> list[Planned]:
        what = ("the model's weights" if ctx.cfg.init == "pretrained"
                else "fresh weights of the model's shape (init: random)")
        return [Planned(self.name, self.folder, self.state(ctx),
                        [f"model: {ctx.cfg.model}"], "driver", what)]


class FinetuneStageStep(Step):
    """``finetune/``: one labels-only stage with a new task head (Ray Train + DeepSpeed)."""

    name = folder = STAGE
    marker_kind = StageMarker
    keys = _STAGE_KEYS
    resumable = True
    announce = False  # its workers print the stage's start and end

    def run(self, ctx: FinetuneContext, fp: dict) -> StageMarker:
        from xdistil_ray.distill import step as train

        cfg, run = ctx.cfg, ctx.run
        spec, files, columns = stage_plan.finetune_plan(
            cfg, ctx.data, ctx.sources, run=run, name=STAGE, init_path=INIT, init_in_run=True,
            settings=cfg.finetune)
        return train.run_stage(run, STAGE, spec, train.stage_dataset(run, files, columns, None),
                               train.Scaling.of(cfg), fp)

    def use(self, ctx: FinetuneContext, marker: StageMarker | None) -> None:
        ctx.stage = marker

    def plan(self, ctx: FinetuneContext) -> list[Planned]:
        f = ctx.cfg.finetune
        return [Planned(self.name, self.folder, self.state(ctx),
                        [f"{INIT}/model", layout.LABELED_TRAIN],
                        stage_plan.training_resources(ctx.cfg),
                        f"labels with a new {ctx.cfg.task} head; {f.epochs:g} epoch(s) at batch "
                        f"{f.batch_size}, learning rate {f.learning_rate:g}")]


class ModelStep(Step):
    """``model/``: the fine-tuned Hugging Face folder."""

    name = folder = MODEL
    marker_kind = ModelMarker
    keys = _STAGE_KEYS

    def run(self, ctx: FinetuneContext, fp: dict) -> ModelMarker:
        from xdistil_ray.export import step as export

        return export.run_step(ctx.run, STAGE, ctx.model_path, ctx.label_names, fp,
                               task=ctx.cfg.task, rel=MODEL)

    def plan(self, ctx: FinetuneContext) -> list[Planned]:
        return [Planned(self.name, self.folder, self.state(ctx), [f"{STAGE}/model"], "driver",
                        "the Hugging Face folder")]


class DevEvalStep(Step):
    """``eval/``: dev scores of the fine-tuned model, when there is a dev split."""

    name = folder = layout.EVAL
    marker_kind = EvalMarker
    derived = True

    def fingerprint(self, ctx: FinetuneContext) -> dict:
        from xdistil_ray.evaluate import step as evaluate

        return {**ctx.fingerprint(*_STAGE_KEYS), "eval.version": evaluate.VERSION}

    def not_needed(self, ctx: FinetuneContext) -> str | None:
        return None if ctx.has_dev() else "(no dev split)"

    def run(self, ctx: FinetuneContext, fp: dict) -> EvalMarker:
        from xdistil_ray.evaluate import step as evaluate

        e = ctx.cfg.eval
        return evaluate.run_step(
            ctx.run, num_cpus=e.num_cpus, num_gpus=e.num_gpus, fingerprint=fp,
            fn=evaluate.evaluate_dev, task=ctx.cfg.task, model_rel=MODEL,
            dev_paths=list(ctx.sources.labeled_dev), label_names=ctx.label_names)

    def use(self, ctx: FinetuneContext, marker: EvalMarker | None) -> None:
        ctx.evaluation = marker

    def plan(self, ctx: FinetuneContext) -> list[Planned]:
        why = self.not_needed(ctx)
        if why:
            return [Planned(self.name, self.folder, f"not needed {why}")]
        e = ctx.cfg.eval
        each = {"CPU": e.num_cpus, **({"GPU": e.num_gpus} if e.num_gpus else {})}
        return [Planned(self.name, self.folder, self.state(ctx), [MODEL, layout.LABELED_DEV],
                        f"one Ray task {json.dumps(each)}", "dev scores of the model")]


class FinetuneReportStep(Step):
    """``report.json``, ``report.md`` and the loss curves, written on every run."""

    name = "report"
    folder = layout.REPORT_MD
    committed = False

    def run(self, ctx: FinetuneContext, fp: dict) -> dict:
        from xdistil_ray.distill import step as train
        from xdistil_ray.report import step as report

        train.clean_checkpoints(ctx.run, STAGE, [STAGE])
        out = report.write_finetune(ctx.run, ctx.cfg, data=ctx.data, stage=ctx.stage,
                                    evaluation=ctx.evaluation, stage_folder=STAGE,
                                    seconds=round(time.time() - ctx.started, 1), model_rel=MODEL)
        console.show(report.finetune_summary(ctx.run, out, MODEL))
        return out

    def use(self, ctx: FinetuneContext, marker: dict | None) -> None:
        ctx.report = marker

    def plan(self, ctx: FinetuneContext) -> list[Planned]:
        from xdistil_ray.report.step import LOSS_PLOT

        return [Planned(self.name, self.folder, "to run", ["every step's marker"], "driver",
                        f"report.json, report.md, {LOSS_PLOT}")]


def steps() -> list[Step]:
    """The job's steps, in the order they run."""
    return [LabeledDataStep(), InitStep(), FinetuneStageStep(), ModelStep(), DevEvalStep(),
            FinetuneReportStep()]


def context(cfg: FinetuneJob, run: RunFolder, tmp: str, dry: bool = False) -> FinetuneContext:
    """The job's context: the model checked (an ``s3://`` one copied into ``tmp``), the
    labeled splits resolved (a dry run writes nothing)."""
    return FinetuneContext(cfg, run, local_model(cfg, tmp),
                           _labeled_sources(run, cfg, generate=not dry), dry)


def run(cfg: FinetuneJob, take_over: bool = False) -> dict:
    """Runs the fine-tuning job, holding the run folder's lease (see :mod:`xdistil_ray.run.lease`);
    returns its report."""
    from xdistil_ray.run import lease

    started = time.time()
    folder = RunFolder(cfg.output, cfg.storage_options())
    storage.check_access(folder.uri, folder.options)
    with lease.hold(folder, take_over):
        log.info(f"run folder: {folder.uri}")
        with tempfile.TemporaryDirectory() as tmp:
            ctx = context(cfg, folder, tmp)
            ctx.started = started
            job = steps()
            ctx.runner.refuse_changes(job, ctx)
            folder.write_text(layout.CONFIG, dump_yaml(cfg))
            console.attach_run(folder)
            ctx.start_ray()
            ctx.runner.run_all(job, ctx)
        return ctx.report
