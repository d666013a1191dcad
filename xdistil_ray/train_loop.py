"""One Ray Train worker's loop: DeepSpeed engine, stage loss, checkpoints, final weights.

Build the model, restore the newest checkpoint if Ray Train hands one over, then a plain loop
over steps that reports the loss every ``log_every`` steps and a checkpoint every
``checkpoint_every`` steps and at the end. The last checkpoint also holds ``model/``, the
consolidated Hugging Face folder the next stage and export start from.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from xdistil_ray import losses

_TAG = "ds"
MODEL_DIR = "model"
LOSSES_FILE = "losses.json"


@dataclass
class StageSpec:
    """Everything a worker needs for one stage; plain data, sent to every worker."""

    name: str
    loss: str
    """representation | logits | labels"""
    init_path: str
    """Hugging Face folder or model id; with ``init_in_run``, a committed set of the run folder
    holding the folder as ``model/``."""
    init_in_run: bool
    run_uri: str
    total_steps: int
    batch_size: int
    learning_rate: float
    zero_stage: int
    log_every: int
    checkpoint_every: int
    seed: int
    torch_threads: int
    label_names: list[str] = field(default_factory=list)
    new_head: bool = False
    """Give the model a fresh classification head for ``label_names`` (teacher fine-tuning)."""
    teacher_hidden: int = 0
    """Teacher width, for the representation projection."""
    tokenizer_path: str = ""
    """Tokenizer saved beside the final weights."""
    freeze_word_embeddings: bool = False
    """Keep the word embeddings fixed in this stage."""


def total_steps(num_rows: int, epochs: float, batch_size: int, num_workers: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``num_rows`` rows split across workers."""
    return max(1, math.ceil(epochs * num_rows / (batch_size * num_workers)))


def deepspeed_config(spec: StageSpec, use_cuda: bool) -> dict:
    warmup = max(1, spec.total_steps // 10)
    return {
        "train_micro_batch_size_per_gpu": spec.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": {
            "lr": spec.learning_rate, "weight_decay": 0.01, "torch_adam": True}},
        "scheduler": {"type": "WarmupDecayLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": spec.learning_rate,
            "warmup_num_steps": warmup, "total_num_steps": max(spec.total_steps, warmup + 1),
            "warmup_type": "linear"}},
        "zero_optimization": {"stage": spec.zero_stage},
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": bool(use_cuda and torch.cuda.is_bf16_supported())},
        "steps_per_print": 10**9,
    }


def pad_batch(batch: dict, pad_id: int, label_index: dict[str, int] | None) -> dict:
    """Numpy batch of variable-length ``input_ids`` -> padded torch tensors.

    Returns:
        input_ids [B, T] int64, attention_mask [B, T] int64, and where present
        teacher_logits [B, C] / teacher_cls [B, H] float32, labels [B] int64.
    """
    rows = list(batch["input_ids"])
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    for column, key in (("logits", "teacher_logits"), ("cls", "teacher_cls")):
        if column in batch:
            out[key] = torch.from_numpy(_stack(batch[column]).astype(np.float32))
    if label_index is not None and "label" in batch:
        out["labels"] = torch.tensor([label_index[str(v)] for v in batch["label"]])
    return out


def _stack(column) -> np.ndarray:
    return np.stack(list(column)) if column.dtype == object else np.asarray(column)


def stage_loss(spec: StageSpec, module, batch: dict) -> torch.Tensor:
    logits, cls = module(batch["input_ids"], batch["attention_mask"])
    if spec.loss == "representation":
        return losses.representation_mse(cls, batch["teacher_cls"])
    if spec.loss == "logits":
        return losses.logit_mse(logits, batch["teacher_logits"])
    return losses.label_cross_entropy(logits, batch["labels"])


def _build_module(spec: StageSpec, local_init: str):
    from xdistil_ray.models import DistillModule, load_classifier

    torch.manual_seed(spec.seed)
    model = load_classifier(local_init, spec.label_names if spec.new_head else None)
    module = DistillModule(model, spec.teacher_hidden if spec.loss == "representation" else None)
    if spec.freeze_word_embeddings:
        model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    if spec.loss == "representation":  # the head plays no part in this loss
        for p in model.classifier.parameters():
            p.requires_grad_(False)
    return module


def batches_forever(shard, batch_size: int, seed: int):
    """Full batches from a Ray Data shard, epoch after epoch, reshuffled locally each epoch.

    Raises:
        RuntimeError: when a whole epoch holds less than one batch (the loop would never end).
    """
    epoch = 0
    while True:
        empty = True
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy",
                                        drop_last=True, local_shuffle_buffer_size=batch_size * 8,
                                        local_shuffle_seed=seed + epoch):
            empty = False
            yield batch
        if empty:
            raise RuntimeError(f"this worker's data holds less than one batch of {batch_size} "
                               "rows; lower the stage's batch_size or train.num_workers")
        epoch += 1


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config["spec"]`` is a :class:`StageSpec`."""
    spec: StageSpec = config["spec"]
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import ray.train

    from xdistil_ray.runfolder import RunFolder

    torch.set_num_threads(spec.torch_threads)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    workdir = tempfile.mkdtemp(prefix=f"xdistil-{spec.name}-")
    local_init = spec.init_path
    if spec.init_in_run:
        local_init = RunFolder(spec.run_uri).download(
            spec.init_path, os.path.join(workdir, "init"), MODEL_DIR)
    module = _build_module(spec, local_init)
    engine, _, _, _ = deepspeed.initialize(
        model=module, model_parameters=[p for p in module.parameters() if p.requires_grad],
        config=deepspeed_config(spec, torch.cuda.is_available()))
    step, history = _restore(engine, workdir)
    pad_id = module.student.config.pad_token_id or 0
    label_index = {name: i for i, name in enumerate(spec.label_names)}
    batches = batches_forever(ray.train.get_dataset_shard("train"), spec.batch_size, spec.seed)
    window, start, first_step = [], time.time(), step
    engine.train()
    while step < spec.total_steps:
        batch = {k: v.to(engine.device) for k, v in
                 pad_batch(next(batches), pad_id, label_index).items()}
        loss = stage_loss(spec, engine, batch)
        engine.backward(loss)
        engine.step()
        step += 1
        window.append(loss.item())
        if step % spec.log_every == 0 or step == spec.total_steps:
            history.append([step, _mean_across_ranks(window)])
            window = []
            if rank == 0:
                _print_progress(spec, step, history[-1][1], time.time() - start, step - first_step)
        if step % spec.checkpoint_every == 0 or step == spec.total_steps:
            _save_and_report(engine, spec, step, history, workdir, rank)
        elif step % spec.log_every == 0:
            ray.train.report({"step": step, "loss": history[-1][1]})


def _mean_across_ranks(values: list[float]) -> float:
    mean = torch.tensor(sum(values) / max(1, len(values)), dtype=torch.float64)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(mean)
        mean /= torch.distributed.get_world_size()
    return float(mean)


def _print_progress(spec: StageSpec, step: int, loss: float, elapsed_s: float, done: int) -> None:
    left_s = elapsed_s / max(1, done) * (spec.total_steps - step)
    print(f"[{spec.name}] step {step}/{spec.total_steps} loss {loss:.4f} "
          f"elapsed {elapsed_s:.0f}s left ~{left_s:.0f}s", flush=True)


def _restore(engine, workdir: str) -> tuple[int, list]:
    """Loads the newest checkpoint Ray Train hands over; returns (step, loss history)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    # to_directory per rank, not as_directory: see shared/NOTES.md (ray issue 48726).
    local = checkpoint.to_directory(os.path.join(workdir, "restore"))
    _, client = engine.load_checkpoint(local, tag=_TAG)
    print(f"resumed from step {client['step']}", flush=True)
    return int(client["step"]), list(client["history"])


def _save_and_report(engine, spec: StageSpec, step: int, history: list, workdir: str,
                     rank: int) -> None:
    import ray.train
    from ray.train import Checkpoint

    out = tempfile.mkdtemp(dir=workdir, prefix=f"ckpt-{step}-")
    engine.save_checkpoint(out, tag=_TAG, client_state={"step": step, "history": history})
    if step == spec.total_steps:
        _save_final_model(engine, spec, out, rank)
    if rank == 0:
        with open(os.path.join(out, LOSSES_FILE), "w") as f:
            json.dump({"stage": spec.name, "loss": spec.loss, "history": history}, f)
    ray.train.report({"step": step, "loss": history[-1][1] if history else float("nan")},
                     checkpoint=Checkpoint.from_directory(out))


def _save_final_model(engine, spec: StageSpec, out: str, rank: int) -> None:
    """Writes the consolidated Hugging Face folder ``model/`` (gathered under ZeRO-3)."""
    import deepspeed

    student = engine.module.student
    params = list(student.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=spec.zero_stage == 3):
        if rank == 0:
            folder = os.path.join(out, MODEL_DIR)
            state = {k: v.detach().to("cpu", torch.float32).clone()
                     for k, v in student.state_dict().items()}
            student.save_pretrained(folder, state_dict=state, safe_serialization=True)
            if spec.tokenizer_path:
                from xdistil_ray.models import load_tokenizer

                load_tokenizer(spec.tokenizer_path).save_pretrained(folder)
