"""Step ``teacher``: the teacher's outputs for every kept sentence, stored fp16 per input shard.

Ray Data reads the pending shards, a pool of :class:`TeacherInference` actors runs the teacher,
and :class:`ShardPartsDatasink` writes each output part atomically under
``teacher/shards/<shard>/``. A shard is committed (its own ``COMPLETE``) once its parts hold
exactly one row per input row; a re-run recomputes only uncommitted shards, after deleting
whatever an earlier attempt left of them.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tempfile
import time

import numpy as np
import torch

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.run import layout
from xdistil_ray.tasks.corpus import object_array
from xdistil_ray.errors import ConfigError
from xdistil_ray.run.markers import DataMarker, ShardMarker, TeacherMarker
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Planned, Step
from xdistil_ray.teacher.shards import (SHARDS, ShardLedger, ShardPartsDatasink,
                                              add_shard_column, commit_shard, committed_shards,
                                              shard_name)


log = logging.getLogger(__name__)

STEP = layout.TEACHER


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that has it (else fp16), fp32 on CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class TeacherInference:
    """Callable class for ``map_batches``: token ids in, teacher outputs (fp16) out.

    Each call gets a window of rows, sorts it by length and runs forward passes of
    ``batch_size`` rows padded to their own longest row (length grouping with dynamic padding).

    Args:
        model_path: local folder or model id of the teacher.
        outputs: which outputs to keep: ``logits`` and/or ``hidden`` (last layer).
        task: ``token`` keeps them for every real token (flattened [T * C] / [T * H] per row);
            other tasks keep the sentence's logits [C] and CLS state [H].
        device: ``cuda``, ``cpu`` or ``auto``.
        torch_threads: CPU threads for the forward pass (0 = torch's default).
        run: with it, ``model_path`` is a committed set of this run folder holding ``model/``
            (a teacher fine-tuned in the run), downloaded to the actor's machine.
        batch_size: rows per forward pass.
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
        top_k: keep only the k largest logits and the rest's log-sum-exp (sentence and pair
            tasks); 0 = all logits.
    """

    def __init__(self, model_path: str, outputs: tuple[str, ...], task: str = "sentence",
                 device: str = "auto", torch_threads: int = 0, run: RunFolder | None = None,
                 batch_size: int = 64, dtype: str = "auto", top_k: int = 0):
        from xdistil_ray.modeling.models import load_model

        if run is not None:
            self._local = tempfile.TemporaryDirectory(prefix="xdistil-teacher-")
            model_path = run.download(model_path, self._local.name, "model")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        # transformers picks PyTorch's scaled-dot-product attention where the model has it.
        self.model = load_model(model_path, task).to(self.device, self.dtype).eval()
        self.outputs = outputs
        self.per_token = task_of(task).per_token
        self.pad_id = self.model.config.pad_token_id or 0
        self.batch_size = batch_size
        self.top_k = top_k if "logits" in outputs else 0
        self.padding = [0, 0]  # [real tokens, padded positions] seen so far

    def __call__(self, batch: dict) -> dict:
        """Batch with ``input_ids`` (arrays of ints, optional ``token_type_ids``) -> the same
        batch plus the requested outputs."""
        rows = list(batch["input_ids"])
        types = list(batch["token_type_ids"]) if "token_type_ids" in batch else None
        order = np.argsort([len(r) for r in rows], kind="stable")
        results: dict[str, list] = {}
        for start in range(0, len(rows), self.batch_size):
            idx = order[start:start + self.batch_size]
            out = self._forward([rows[i] for i in idx],
                                None if types is None else [types[i] for i in idx])
            for name, values in out.items():
                column = results.setdefault(name, [None] * len(rows))
                for j, i in enumerate(idx):
                    column[i] = values[j]
        result = dict(batch)
        for name, values in results.items():
            if self.per_token:
                result[name] = object_array([v.reshape(-1).astype(np.float16) for v in values])
            else:
                result[name] = np.stack(values)
        return result

    @torch.inference_mode()
    def _forward(self, rows: list, types: list | None) -> dict[str, list[np.ndarray]]:
        from xdistil_ray.modeling.batches import pad_batch
        from xdistil_ray.modeling.models import model_inputs, task_logits

        batch = pad_batch({"input_ids": rows, **({"token_type_ids": types} if types else {})},
                          self.pad_id, None)
        self.padding[0] += sum(len(r) for r in rows)
        self.padding[1] += batch["input_ids"].numel()
        batch = {k: v.to(self.device, non_blocking=True)
                 for k, v in model_inputs(self.model, batch).items()}
        out = self.model(**batch, output_hidden_states="hidden" in self.outputs)
        values = {}
        if self.top_k:
            values.update(top_k_logits(out.logits.float(), self.top_k))
        elif "logits" in self.outputs:
            values["logits"] = task_logits(out).to(torch.float16).cpu().numpy()
        if "hidden" in self.outputs:
            hidden = out.hidden_states[-1]
            values["hidden"] = (hidden if self.per_token else hidden[:, 0]).to(
                torch.float16).cpu().numpy()
        per_row = {}
        for name, array in values.items():
            if self.per_token:  # real tokens only
                per_row[name] = [array[i, : len(r)] for i, r in enumerate(rows)]
            else:
                per_row[name] = list(array)
        return per_row


def top_k_logits(logits: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """[N, C] logits -> the k largest (fp16), their indices (int32) and the log-sum-exp of the
    other C - k (fp16): the columns of :data:`xdistil_ray.modeling.outputs.TOPK_COLUMNS`, which
    :func:`xdistil_ray.modeling.outputs.dense_logits` rebuilds a full row from."""
    values, index = logits.topk(k, dim=-1)
    rest = logits.scatter(-1, index, float("-inf")).logsumexp(-1)
    return {"logits_topk": values.to(torch.float16).cpu().numpy(),
            "logits_index": index.to(torch.int32).cpu().numpy(),
            "logits_rest": rest.to(torch.float16).cpu().numpy()}


def actor_pool(num_actors: int, max_actors: int = 0):
    """Ray Data's actor pool: fixed at ``num_actors``, or autoscaling from ``num_actors`` up to
    ``max_actors`` (Ray Data asks for more actors while its queue of windows waits; the cluster
    autoscaler launches nodes for the ones it cannot place)."""
    import ray.data

    if max_actors > num_actors:
        return ray.data.ActorPoolStrategy(min_size=num_actors, max_size=max_actors)
    return ray.data.ActorPoolStrategy(size=num_actors)


def run_step(run: RunFolder, data_marker: DataMarker, *, model_path: str, model_in_run: bool,
             outputs: tuple[str, ...],
             batch_size: int, num_actors: int, num_gpus: float, num_cpus: float,
             fingerprint: dict, task: str = "sentence", resources: dict | None = None,
             group_batches: int = 8, dtype: str = "auto", top_k: int = 0,
             max_actors: int = 0, progress_every_s: float = 10.0) -> TeacherMarker:
    """Runs teacher inference over the uncommitted shards and commits ``teacher/``.

    Each actor call gets ``group_batches`` forward batches' worth of rows, sorted by length
    there (see :class:`TeacherInference`). The actor pool holds ``num_actors`` actors, and
    grows up to ``max_actors`` (when above it) while windows wait for an actor: on an
    autoscaling cluster, the new GPU nodes' actors join the pass."""
    import ray.data

    start = time.time()
    shards = {shard_name(s.file): s for s in data_marker.corpus.shards}
    done = committed_shards(run, list(shards))
    pending = [name for name in shards if name not in done]
    for name in pending:  # leftovers of a crashed attempt are never read
        run.delete(SHARDS, name)
    log.info(f"teacher: {len(pending)} shards to run, {len(done)} committed before")
    if pending:
        files = [run.path(layout.CORPUS, shards[name].file) for name in pending]
        columns = ["id", "input_ids", "heldout", "path"]
        if data_marker.pairs:
            columns.append("token_type_ids")
        if task_of(task).spans:  # what decoding a held-out window's answer reads (eval)
            columns += ["example", "context", "offset_start", "offset_end"]
        ds = ray.data.read_parquet(files, filesystem=run.fs, include_paths=True).select_columns(
            columns)
        window = batch_size * max(1, group_batches)
        # Shard files are read as whole blocks; cut them into windows so every actor gets work.
        ds = (ds.map_batches(add_shard_column, batch_format="numpy", batch_size=None)
              .repartition(target_num_rows_per_block=window))
        ds = ds.map_batches(
            TeacherInference, batch_size=window, batch_format="numpy",
            fn_constructor_kwargs=dict(model_path=model_path, outputs=outputs, task=task,
                                       torch_threads=max(1, int(num_cpus)),
                                       run=run if model_in_run else None,
                                       batch_size=batch_size, dtype=dtype, top_k=top_k),
            compute=actor_pool(num_actors, max_actors),
            num_cpus=num_cpus, num_gpus=num_gpus or None, resources=resources or None)
        ledger = ray.remote(num_cpus=0)(ShardLedger).remote(
            run, {name: shards[name].rows for name in pending}, progress_every_s)
        ds.write_datasink(ShardPartsDatasink(run, task_of(task).per_token, ledger).make())
        committed = set(ray.get(ledger.committed_shards.remote()))
        pending = [n for n in pending if n not in committed]
    failed = [n for n in pending if not commit_shard(run, n, shards[n].rows)]
    if failed:
        raise RuntimeError(f"teacher inference: shards {failed} do not hold one row per input row")
    rows = sum(s.rows for s in shards.values())
    files = {}
    for name in shards:
        for f, size in run.marker(posixpath.join(SHARDS, name), ShardMarker).files.items():
            files[posixpath.join("shards", name, f)] = size
    return run.commit(STEP, TeacherMarker(
        files=files, rows=rows, outputs=list(outputs), top_k=top_k, shards_skipped=len(done),
        shards_run=len(shards) - len(done), seconds=round(time.time() - start, 1),
        fingerprint=fingerprint))


def outputs_needed(cfg) -> tuple[str, ...]:
    """What the step stores: logits for every task with a head (agreement with the teacher is
    measured on them), last-layer states where a stage reads them stored."""
    outputs = ["logits"] if task_of(cfg.task).head else []
    if any(s.targets == "stored" and any(loss.type == "representation" for loss in s.losses)
           for s in cfg.stages):
        outputs.append("hidden")
    return tuple(outputs)


def _pool(inf) -> str:
    """The actor pool's size: ``N``, or ``N-M`` when it autoscales."""
    return f"{inf.num_actors}-{inf.max_actors}" if inf.max_actors > inf.num_actors \
        else str(inf.num_actors)


class TeacherStep(Step):
    """``teacher/``: the teacher's outputs for every kept sentence, per corpus shard."""

    name = folder = STEP
    marker_kind = TeacherMarker
    keys = ("task", "teacher.model", "teacher.finetune", "labeled", "seed", "corpus",
            "teacher.inference.dtype", "teacher.inference.top_k")
    resumable = True

    def not_needed(self, ctx: Context) -> str | None:
        return None if outputs_needed(ctx.cfg) else "(every stage's targets are online)"

    def run(self, ctx: Context, fp: dict) -> TeacherMarker:
        cfg, inf = ctx.cfg, ctx.cfg.teacher.inference
        return run_step(
            ctx.run, ctx.data, model_path=ctx.teacher.path, model_in_run=ctx.teacher.in_run,
            outputs=outputs_needed(cfg), task=cfg.task, batch_size=inf.batch_size,
            num_actors=inf.num_actors, num_gpus=inf.num_gpus_per_actor,
            num_cpus=inf.num_cpus_per_actor, resources=inf.resources,
            group_batches=inf.group_batches, dtype=inf.dtype, top_k=inf.top_k,
            max_actors=inf.max_actors, progress_every_s=cfg.progress_every_s, fingerprint=fp)

    def use(self, ctx: Context, marker: TeacherMarker | None) -> None:
        if marker is not None:
            missing = sorted(set(outputs_needed(ctx.cfg)) - set(marker.outputs))
            if missing:
                raise ConfigError(
                    f"{ctx.run.uri}: the stored teacher outputs lack {', '.join(missing)}, "
                    "which a stage now reads; set that stage's targets: online, or use a new "
                    "output folder")
        ctx.teacher_marker = marker

    def plan(self, ctx: Context) -> list[Planned]:
        why = self.not_needed(ctx)
        if why:
            return [Planned(self.name, self.folder, f"not needed {why}")]
        inf, run, data = ctx.cfg.teacher.inference, ctx.run, ctx.data
        state = self.state(ctx)
        if data is not None and state != "complete":
            names = [shard_name(s.file) for s in data.corpus.shards]
            done = sum(run.is_complete(posixpath.join(SHARDS, s)) for s in names)
            if done:
                state = f"half done ({done} of {len(names)} shards committed; the rest run)"
        each = {"CPU": inf.num_cpus_per_actor,
                **({"GPU": inf.num_gpus_per_actor} if inf.num_gpus_per_actor else {}),
                **inf.resources}
        return [Planned(self.name, self.folder, state, [layout.CORPUS] + ctx.teacher_reads(),
                        f"Ray Data: {_pool(inf)} actor(s) x {json.dumps(each)}, "
                        f"batch {inf.batch_size}",
                        f"stores {', '.join(outputs_needed(ctx.cfg))}")]
