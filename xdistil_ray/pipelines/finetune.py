"""``jobs/finetune.py``: fine-tune an exported student on a labeled task, on Ray Train.

The XtremeDistilTransformers use: a small task-agnostic student, distilled once, transferred to
new tasks. The steps mirror the distillation pipeline's and share its machinery and run-folder
rules (markers, resume, refused config changes):

    data      the labeled splits cleaned and tokenized with the model's tokenizer
    init      the starting weights in the run folder (the model's, or fresh ones of its shape)
    finetune  one labels-only stage with a new task head (Ray Train + DeepSpeed)
    model     the fine-tuned Hugging Face folder (Auto classes, ``transformers.pipeline``)
    eval      dev scores (accuracy and macro-F1; entity F1 for token tasks)
    report    report.json, report.md, loss_curves.png
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

from xdistil_ray.observe import console
from xdistil_ray.run import identity
from xdistil_ray.pipelines import distill as pipeline
from xdistil_ray.distill import stage_plan
from xdistil_ray.run import storage
from xdistil_ray.config import EMBEDDED
from xdistil_ray.config import ConfigError
from xdistil_ray.config import FinetuneJob
from xdistil_ray.config import dump_yaml
from xdistil_ray.data.readers import resolve_source
from xdistil_ray.run.runfolder import RunFolder

log = logging.getLogger(__name__)

INIT = "init"
STAGE = "finetune"
MODEL = "model"
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


def _labeled_sources(run: RunFolder, cfg: FinetuneJob) -> dict:
    """The labeled splits, resolved (the embedded ones written into the run folder)."""
    embedded = {}
    if EMBEDDED in (cfg.labeled.train, cfg.labeled.dev):
        embedded = pipeline.embedded_inputs(cfg, run)
    sources = {}
    for split in ("train", "dev"):
        value = getattr(cfg.labeled, split)
        if value:
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


def _prepare(run: RunFolder, cfg: FinetuneJob, model_path: str, sources: dict,
             fp: dict) -> dict:
    from xdistil_ray.data import step as prepare

    settings = prepare.TextSettings(model_path, cfg.max_length, max(20_000, cfg.max_length), 0.0)
    pair = cfg.labeled.text_pair_column if cfg.task == "pair" else ""
    start = time.time()
    labeled = prepare.prepare_labeled(run, sources, settings, text_column=cfg.labeled.text_column,
                                      label_column=cfg.labeled.label_column, pair_column=pair,
                                      task=cfg.task, dev_fraction=cfg.labeled.dev_fraction)
    return run.commit("data", labeled=labeled, pairs=bool(pair), task=cfg.task,
                      fingerprint=fp, seconds=round(time.time() - start, 1))


def _check_data(cfg: FinetuneJob, data: dict) -> None:
    names = data["labeled"]["label_names"]
    if len(names) < 2:
        raise ConfigError(f"labeled.train: needs at least 2 classes, found {names}")
    rows = data["labeled"]["splits"]["train"]["kept"]
    if rows < cfg.finetune.batch_size * cfg.train.num_workers:
        raise ConfigError(f"finetune.batch_size: {rows} training rows cannot fill one batch of "
                          f"{cfg.finetune.batch_size} on each of {cfg.train.num_workers} workers")


def _init(run: RunFolder, cfg: FinetuneJob, model_path: str, fp: dict) -> dict:
    """The starting weights as ``init/model`` (the encoder; the head is added by the stage)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from xdistil_ray.modeling import models

    if cfg.init == "random":
        torch.manual_seed(cfg.seed)
        model = AutoModel.from_config(AutoConfig.from_pretrained(model_path))
    else:
        model = AutoModel.from_pretrained(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        models.save_pretrained(model, models.load_tokenizer(model_path), tmp)
        files = run.upload(tmp, f"{INIT}/model")
    return run.commit(INIT, {f"model/{k}": v for k, v in files.items()}, fingerprint=fp,
                      params=models.num_params(model), init=cfg.init)


def run(cfg: FinetuneJob, take_over: bool = False) -> dict:
    """Runs the fine-tuning job, holding the run folder's lease (see :mod:`xdistil_ray.run.lease`);
    returns its report."""
    from xdistil_ray.run import lease

    started = time.time()
    folder = RunFolder(cfg.output, cfg.storage_options())
    storage.check_access(folder.uri, folder.options)
    with lease.hold(folder, take_over):
        return _run(cfg, folder, started)


def _run(cfg: FinetuneJob, folder: RunFolder, started: float) -> dict:
    from xdistil_ray.evaluate import step as evaluate
    from xdistil_ray.export import step as export
    from xdistil_ray.report import step as report
    from xdistil_ray.distill import step as train

    log.info(f"run folder: {folder.uri}")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = local_model(cfg, tmp)
        sources = _labeled_sources(folder, cfg)
        steps = pipeline.Steps(folder, _identities(cfg, model_path, sources))
        data_fp = pipeline.fingerprint(cfg, *_DATA_KEYS, inputs=steps.inputs)
        stage_fp = pipeline.fingerprint(cfg, *_STAGE_KEYS, inputs=steps.inputs)
        pipeline.refuse_changes(steps, [("data", data_fp), (INIT, data_fp), (STAGE, stage_fp)])
        folder.write_text("config.yaml", dump_yaml(cfg))
        console.attach_run(folder)
        pipeline.init_ray(cfg)
        data = steps.ensure("data", data_fp,
                            lambda fp: _prepare(folder, cfg, model_path, sources, fp))
        _check_data(cfg, data)
        label_names = data["labeled"]["label_names"]
        steps.ensure(INIT, data_fp, lambda fp: _init(folder, cfg, model_path, fp))
        sources = stage_plan.Sources.of(folder, data, None)

        def run_stage(fp):
            spec, files, columns = stage_plan.finetune_plan(
                cfg, data, sources, run=folder, name=STAGE, init_path=INIT, init_in_run=True,
                settings=cfg.finetune)
            return train.run_stage(folder, STAGE, spec, train.stage_dataset(folder, files, columns,
                                                                             None),
                                   stage_plan.scaling(cfg), fp)

        stage = steps.ensure(STAGE, stage_fp, run_stage, resumable=True, announce=False)
        steps.ensure(MODEL, stage_fp, lambda fp: export.run_step(
            folder, STAGE, model_path, label_names, fp, task=cfg.task, rel=MODEL))
    dev = data["labeled"]["splits"].get("dev")
    result = None
    if dev:
        e = cfg.eval
        result = steps.ensure(
            evaluate.STEP, {**stage_fp, "eval.version": evaluate.VERSION},
            lambda fp: evaluate.run_step(
                folder, num_cpus=e.num_cpus, num_gpus=e.num_gpus, fingerprint=fp,
                fn=evaluate.evaluate_dev, task=cfg.task, model_rel=MODEL,
                dev_paths=list(sources.labeled_dev),
                label_names=label_names), derived=True)
    train.clean_checkpoints(folder, STAGE, [STAGE])
    out = report.write_finetune(folder, cfg, data=data, stage=stage, evaluation=result,
                                stage_folder=STAGE, seconds=round(time.time() - started, 1),
                                model_rel=MODEL)
    console.show(report.finetune_summary(folder, out, MODEL))
    return out
