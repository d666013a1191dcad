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


def write_rank_manifest(folder: str, rank: int) -> None:
    """Lists the files this rank wrote into its checkpoint folder (with sizes), written last."""
    files = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
    with open(os.path.join(folder, RANK_MANIFEST.format(rank=rank)), "w") as f:
        json.dump(files, f)


def verify_checkpoint(folder: str) -> dict:
    """The progress of a checkpoint folder whose every rank's files are present and whole.

    Raises:
        RuntimeError: naming what is missing, so that a partial checkpoint is never loaded.
    """
    path = os.path.join(folder, PROGRESS_FILE)
    if not os.path.exists(path):
        raise RuntimeError(f"checkpoint {folder} is partial: no {PROGRESS_FILE}")
    with open(path) as f:
        progress = json.load(f)
    for rank in range(progress["world_size"]):
        manifest = os.path.join(folder, RANK_MANIFEST.format(rank=rank))
        if not os.path.exists(manifest):
            raise RuntimeError(f"checkpoint {folder} is partial: rank {rank} wrote no manifest")
        with open(manifest) as f:
            for name, size in json.load(f).items():
                p = os.path.join(folder, name)
                if not os.path.exists(p) or os.path.getsize(p) != size:
                    raise RuntimeError(f"checkpoint {folder} is partial: {name} of rank {rank} "
                                       "is missing or truncated")
    return progress


def read_progress(checkpoint) -> dict | None:
    """``progress.json`` of a Ray Train checkpoint, read in place (nothing else downloaded);
    None when it has none (a partial checkpoint)."""
    try:
        with checkpoint.filesystem.open_input_stream(
                posixpath.join(checkpoint.path, PROGRESS_FILE)) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        return None


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
        from xdistil_ray.models import load_tokenizer

        load_tokenizer(tokenizer_path).save_pretrained(folder)
