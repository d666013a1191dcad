"""A training stage's checkpoint files, as the workers write and check them.

A checkpoint folder (one per report, merged by Ray Train from every rank's files) holds each
rank's DeepSpeed shard and its file list (``files-rank<r>.json``, written last by that rank);
rank 0 adds ``progress.json`` (stage, step, loss history, world size), the full module (to
resume on another number of workers) and, at the end of a stage, ``model/``: the consolidated
Hugging Face folder.
"""

from __future__ import annotations

import json
import os
import posixpath

import torch

DEEPSPEED_TAG = "ds"
MODEL_DIR = "model"
LOSSES_FILE = "losses.json"
PROGRESS_FILE = "progress.json"
MODULE_FILE = "module.pt"
RANK_MANIFEST = "files-rank{rank}.json"


def _deepspeed_globals() -> list:
    """The classes (besides tensors and containers) that DeepSpeed 0.19 pickles into a ZeRO
    1-3 checkpoint: its loss scaler, the ZeRO stage enum, the fragment addresses. Found by
    loading each stage's files with ``weights_only=True`` (tests/test_unfreezing.py)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str, map_location="cpu"):
    """``torch.load`` that unpickles tensors, containers and :func:`_deepspeed_globals` only
    (``weights_only=True``): a checkpoint file that someone with write access to the bucket
    replaced cannot run code on the workers."""
    with torch.serialization.safe_globals(_deepspeed_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def use_safe_loading(engine) -> None:
    """Makes a DeepSpeed engine read checkpoints through :func:`safe_load` (DeepSpeed's own
    engine calls ``torch.load(weights_only=False)``)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return safe_load(path, map_location if map_location is not None else "cpu")

    engine.checkpoint_engine = SafeCheckpointEngine()


def write_rank_manifest(folder: str, rank: int) -> int:
    """Lists the files this rank wrote into its checkpoint folder (with sizes), written last;
    returns their bytes."""
    files = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
    with open(os.path.join(folder, RANK_MANIFEST.format(rank=rank)), "w") as f:
        json.dump(files, f)
    return sum(files.values())


def checkpoint_problem(fs, path: str) -> str | None:
    """What makes the checkpoint folder ``path`` (on pyarrow filesystem ``fs``) unusable: no
    ``progress.json``, a rank without its manifest, a file missing or of another size than its
    rank's manifest says; None when it is whole. One listing and a few small reads."""
    import pyarrow.fs as pafs

    def read_json(name: str):
        with fs.open_input_stream(posixpath.join(path, name)) as f:
            return json.loads(f.read())

    try:
        found = {info.path[len(path.rstrip("/")) + 1:]: info.size
                 for info in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                 if info.type == pafs.FileType.File}
        if PROGRESS_FILE not in found:
            return f"no {PROGRESS_FILE}"
        progress = read_json(PROGRESS_FILE)
        for rank in range(int(progress["world_size"])):
            manifest = RANK_MANIFEST.format(rank=rank)
            if manifest not in found:
                return f"rank {rank} wrote no manifest"
            for name, size in read_json(manifest).items():
                if found.get(name) != size:
                    return f"{name} of rank {rank} is missing or truncated"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
    return None


def verify_checkpoint(folder: str) -> dict:
    """The progress of a local checkpoint folder whose every rank's files are present and
    whole.

    Raises:
        RuntimeError: naming what is missing, so that a partial checkpoint is never loaded.
    """
    import pyarrow.fs as pafs

    problem = checkpoint_problem(pafs.LocalFileSystem(), os.path.abspath(folder))
    if problem:
        raise RuntimeError(f"checkpoint {folder} is partial: {problem}")
    with open(os.path.join(folder, PROGRESS_FILE)) as f:
        return json.load(f)


def usable_checkpoint(checkpoint, say=print):
    """The checkpoint to resume from: ``checkpoint`` (Ray Train's newest) when it is whole,
    else the newest older one beside it that is (Ray Train keeps two), else None (the stage
    starts again from its initial weights). A console line names what was skipped and why."""
    if checkpoint is None:
        return None
    import ray.train

    fs, newest = checkpoint.filesystem, checkpoint.path.rstrip("/")
    problem = checkpoint_problem(fs, newest)
    if problem is None:
        return checkpoint
    say(f"[xdistil] checkpoint {posixpath.basename(newest)} cannot be used ({problem}): "
        "trying the one before it")
    import pyarrow.fs as pafs

    parent = posixpath.dirname(newest)
    siblings = sorted((info.path for info in fs.get_file_info(pafs.FileSelector(parent))
                       if info.type == pafs.FileType.Directory
                       and posixpath.basename(info.path).startswith("checkpoint_")
                       and info.path.rstrip("/") < newest), reverse=True)
    for path in siblings:
        problem = checkpoint_problem(fs, path)
        if problem is None:
            say(f"[xdistil] resuming from the older checkpoint {posixpath.basename(path)}")
            return ray.train.Checkpoint(path, filesystem=fs)
        say(f"[xdistil] checkpoint {posixpath.basename(path)} cannot be used either ({problem})")
    say("[xdistil] no whole checkpoint left: the stage starts again from its initial weights")
    return None


def read_progress(checkpoint) -> dict | None:
    """``progress.json`` of a Ray Train checkpoint, read in place (nothing else downloaded);
    None when it has none (a partial checkpoint)."""
    try:
        with checkpoint.filesystem.open_input_stream(
                posixpath.join(checkpoint.path, PROGRESS_FILE)) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        return None


def newest_progress(run, ray_dir: str, stage_rel: str) -> dict | None:
    """The progress (``step``, ``world_size``, ``zero_stage``, ...) of the newest whole Ray Train
    checkpoint under ``ray_dir`` of the run folder that belongs to stage ``stage_rel`` (every
    rank's file list present, as the workers check before loading one); None when there is
    none. The stages of a run share one Ray Train run, so a checkpoint names its stage."""
    files = run.list_files(ray_dir)
    found = []
    for name in files:
        if posixpath.basename(name) == PROGRESS_FILE:
            ckpt = posixpath.dirname(name)
            progress = run.read_json(posixpath.join(ray_dir, name))
            if progress.get("stage") == stage_rel and all(
                    posixpath.join(ckpt, RANK_MANIFEST.format(rank=r)) in files
                    for r in range(progress.get("world_size", 1))):
                found.append(progress)
    return max(found, key=lambda p: p["step"], default=None)


def world_size_problem(progress: dict, num_workers: int, zero_stage: int) -> tuple[str, str]:
    """(the field to set back, why) when a checkpoint of ``progress`` cannot resume on
    ``num_workers`` workers at ``zero_stage``; ("", "") when it can. At ZeRO-0 every rank holds
    the whole optimizer state and DeepSpeed writes it once: any number of workers loads it. At
    ZeRO 1-3 the optimizer state is split across the ranks that wrote it; a fresh optimizer in
    the middle of a stage would change the run, so another number is refused."""
    saved_world, saved_zero = progress.get("world_size", 1), progress.get("zero_stage")
    if saved_zero is not None and saved_zero != zero_stage:
        return "train.zero_stage", (
            f"its checkpoint at step {progress['step']} was written at ZeRO-{saved_zero}; "
            f"resume it with train.zero_stage={saved_zero}")
    if saved_world == num_workers or zero_stage == 0:
        return "", ""
    return "train.num_workers", (
        f"its checkpoint at step {progress['step']} holds the ZeRO-{zero_stage} optimizer "
        f"state split across {saved_world} workers, which does not reshape to {num_workers}; "
        f"resume it with train.num_workers={saved_world} (ZeRO-0 checkpoints resume on any "
        "number of workers)")


def loads_deepspeed_state(progress: dict, num_workers: int, zero_stage: int) -> bool:
    """Whether a worker group of ``num_workers`` at ``zero_stage`` loads the checkpoint's own
    DeepSpeed state (weights, optimizer, schedule): on the number of workers that wrote it, or
    on any at ZeRO-0. Otherwise (a checkpoint of older code, which does not record its ZeRO
    stage) it starts from the full module saved beside it, with a fresh optimizer."""
    return progress["world_size"] == num_workers or zero_stage == 0 == progress.get(
        "zero_stage", -1)


def save_student(trainer, folder: str, tokenizer_path: str = "") -> None:
    """Writes the stage's student as a Hugging Face folder (config + ``model.safetensors``).

    Under ZeRO-3 the weights are gathered first, so every rank takes part; each writes its own
    copy, the next stage's starting point on that rank. (Not ``save_pretrained``: with a
    process group up, transformers writes only on rank 0.)
    """
    import deepspeed
    from safetensors.torch import save_file

    student = trainer.engine.module.student
    params = list(student.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None,
                                           enabled=trainer.spec.zero_stage == 3):
        state = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
                 for k, v in student.state_dict().items()}
    os.makedirs(folder, exist_ok=True)
    student.config.save_pretrained(folder)
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_path:
        from xdistil_ray.modeling.models import load_tokenizer

        load_tokenizer(tokenizer_path).save_pretrained(folder)


def refuse_unresumable(run, ray_rel: str, stage_rels: list[str], num_workers: int,
                       zero_stage: int) -> None:
    """Raises ConfigError, before any work, for a half-done stage (of the Ray Train run under
    ``ray_rel``) whose newest checkpoint cannot resume on ``num_workers`` at ``zero_stage``
    (:func:`world_size_problem`)."""
    from xdistil_ray.errors import ConfigError

    for rel in stage_rels:
        progress = newest_progress(run, f"{ray_rel}/ray", rel)
        if progress is None:
            continue
        field, why = world_size_problem(progress, num_workers, zero_stage)
        if field:
            raise ConfigError(f"{field}: {rel} is half done; {why}")
