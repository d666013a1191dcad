"""Step ``stages/<k>-<name>`` (and ``teacher_finetune``): one training stage on Ray Train.

The driver side: build the stage's Ray Dataset from committed files, run a ``TorchTrainer``
whose workers run :func:`xdistil_ray.train_loop.train_loop_per_worker` with DeepSpeed, then copy
the final consolidated weights and the loss history out of the last checkpoint and commit.

Resuming is Ray Train's: ``FailureConfig`` restarts failed workers from the newest checkpoint
within the run, and a re-run of the driver finds the same ``RunConfig(name, storage_path)`` and
starts from it again. Checkpoints are verified before loading (every rank's files present).
"""

from __future__ import annotations

import functools
import posixpath
import time
from dataclasses import dataclass

import pyarrow.fs as pafs

from xdistil_ray.runfolder import RunFolder, relative_to
from xdistil_ray.train_loop import (LOSSES_FILE, MODEL_DIR, StageSpec, steady_rate,
                                    train_loop_per_worker)

RAY_DIR = "ray"
"""Ray Train's run (checkpoints, its state) under the stage folder: the same name and storage
path on a re-run make Ray Train hand the newest checkpoint back to the workers."""


@dataclass(frozen=True)
class Scaling:
    """Ray Train resources for a stage."""

    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    max_failures: int
    resources: dict
    """Custom resources per worker (a node type's marker)."""


def stage_dataset(run: RunFolder, files: list[str], columns: list[str], heldout: bool | None):
    """Ray Dataset over committed parquet ``files``; ``heldout`` filters the split (None: all)."""
    import ray.data

    ds = ray.data.read_parquet(files, filesystem=run.fs).select_columns(
        columns + (["heldout"] if heldout is not None else []))
    if heldout is not None:
        ds = ds.map_batches(functools.partial(_rows_with_heldout, heldout=heldout),
                            batch_format="pyarrow", batch_size=None)
    return ds


def _rows_with_heldout(table, heldout: bool):
    """Ray Data UDF: the rows of one split, in Arrow (no pandas conversion of list columns)."""
    import pyarrow.compute as pc

    return table.filter(pc.equal(table.column("heldout"), heldout)).drop_columns(["heldout"])


def run_stage(run: RunFolder, rel: str, spec: StageSpec, dataset, scaling: Scaling,
              fingerprint: dict) -> dict:
    """Trains one stage and commits ``rel`` (``model/`` + ``losses.json``); returns the marker."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    start = time.time()

    def fit():
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"spec": spec},
            scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                         resources_per_worker={"CPU": scaling.cpus_per_worker,
                                                               **scaling.resources}),
            torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
            datasets={"train": dataset},
            run_config=RunConfig(
                name=RAY_DIR, storage_path=run.path(rel), storage_filesystem=run.fs,
                failure_config=FailureConfig(max_failures=scaling.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )
        return trainer.fit()

    result = fit_through_storage_outages(fit, run, rel, scaling.max_failures)
    checkpoint_path = result.checkpoint.path
    files = {}
    for name in _files_under(run.fs, checkpoint_path, MODEL_DIR) + [LOSSES_FILE]:
        src = posixpath.join(checkpoint_path, name)
        dst = run.path(rel, name)
        run.fs.create_dir(posixpath.dirname(dst), recursive=True)
        run.fs.copy_file(src, dst)
        files[name] = run.fs.get_file_info(dst).size
    losses = run.read_json(posixpath.join(rel, LOSSES_FILE))
    history = losses["history"]
    marker = run.commit(rel, files, name=spec.name, losses=[s.type for s in spec.losses],
                        unfreeze=spec.unfreeze_steps >= 0,
                        targets=_targets(spec), steps=spec.total_steps,
                        first_loss=history[0][1], final_loss=history[-1][1],
                        steps_per_second=steady_steps_per_second(
                            history, losses.get("resumed_from", [])),
                        resumed_from=losses.get("resumed_from", []),
                        seconds=round(time.time() - start, 1), fingerprint=fingerprint)
    return marker


def steady_steps_per_second(history: list, resumed_from: list[int]) -> float | None:
    """Optimizer steps per second between the first and the last logged step of the stage's
    last attempt (history rows: [step, loss, unix time]); start-up and restores excluded.
    None with fewer than two logged points."""
    rate = steady_rate(history, max(resumed_from, default=0))
    return None if rate is None else round(rate, 3)


def clean_checkpoints(run: RunFolder, rel: str) -> bool:
    """Deletes a committed stage's Ray Train checkpoints (optimizer state included: several
    times the model); ``model/`` and ``losses.json`` stay. Returns whether any were there."""
    if not run.is_complete(rel) or not run.list_files(posixpath.join(rel, RAY_DIR)):
        return False
    run.delete(rel, RAY_DIR)
    return True


def fit_through_storage_outages(fit, run: RunFolder, rel: str, retries: int,
                                wait_s: float = 600):
    """``fit()``, again from the newest checkpoint after a storage error that outlasted the
    requests' own retries: Ray Train's controller stops on one (it retries worker failures
    only). Up to ``retries`` times, each once storage answers again (waiting up to ``wait_s``).
    """
    from ray.train import TrainingFailedError

    from xdistil_ray import storage

    for attempt in range(retries + 1):
        try:
            return fit()
        except TrainingFailedError as e:
            if attempt == retries or not _is_storage_error(e):
                raise
            print(f"[xdistil] {rel}: storage failed under training ({_first_line(e)}); "
                  "resuming from the newest checkpoint once it answers", flush=True)
            deadline = time.time() + wait_s
            while True:
                try:
                    storage.check_access(run.uri, run.options)
                    break
                except storage.StorageError:
                    if time.time() > deadline:
                        raise
                    time.sleep(5)


def _is_storage_error(e: BaseException) -> bool:
    text = str(e)
    return "AWS Error" in text or "curlCode" in text


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if "AWS Error" in line] or str(e).splitlines()
    return lines[0][:200] if lines else type(e).__name__


def _targets(spec: StageSpec) -> str:
    """Where the stage's teacher targets came from: ``online``, ``stored`` or ``none``."""
    if spec.online_teacher:
        return "online"
    return "none" if all(s.type == "labels" for s in spec.losses) else "stored"


def _files_under(fs: pafs.FileSystem, root: str, sub: str) -> list[str]:
    base = posixpath.join(root, sub)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return sorted(posixpath.join(sub, relative_to(i.path, base))
                  for i in infos if i.type == pafs.FileType.File)
