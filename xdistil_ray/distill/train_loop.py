"""One Ray Train worker's loop: DeepSpeed engine, stage objective, unfreezing, checkpoints.

Build the model, restore the newest checkpoint if Ray Train hands one over, then a plain loop
over steps that averages the loss every ``log_every`` steps (kept in the checkpoints' progress,
printed by rank 0) and reports a checkpoint to Ray Train every ``checkpoint_every`` steps and
at the end. The last checkpoint also holds ``model/``, the
consolidated Hugging Face folder the next stage and export start from.

Gradual unfreezing rebuilds the DeepSpeed engine at each phase boundary with the new set of
trainable parameters (a fresh optimizer, as the paper's Keras code re-compiled its model), so
frozen parameters are outside the optimizer: no gradient, no weight decay, bit-identical.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.distill import objective
from xdistil_ray.distill import schedule
from xdistil_ray.run import storage
from xdistil_ray.observe import console, tensorboard_log
from xdistil_ray.distill.checkpoint import (DEEPSPEED_TAG, LOSSES_FILE, MODEL_DIR, MODULE_FILE,
                                    PROGRESS_FILE, loads_deepspeed_state, read_progress,
                                    save_student,
                                    safe_load, usable_checkpoint, use_safe_loading,
                                    verify_checkpoint,
                                    write_rank_manifest)
from xdistil_ray.modeling.batches import PadCollate, batches_forever
from xdistil_ray.errors import will_fail_again
from xdistil_ray.run.markers import StageMarker
from xdistil_ray.distill.objective import LossSpec
from xdistil_ray.distill import validation as validation_mod
from xdistil_ray.distill.validation import BEST_MODULE_FILE

if TYPE_CHECKING:
    from xdistil_ray.run.runfolder import RunFolder



@dataclass
class StageSpec:
    """Everything a worker needs for one stage; plain data, sent to every worker."""

    name: str
    losses: list[LossSpec]
    init_path: str
    """Hugging Face folder or model id; with ``init_in_run``, a committed set of the run folder
    holding the folder as ``model/``."""
    init_in_run: bool
    run: "RunFolder"
    """The run folder (rebuilt on each worker from its URI and storage options)."""
    total_steps: int
    batch_size: int
    learning_rate: float
    zero_stage: int
    log_every: int
    checkpoint_every: int
    seed: int
    torch_threads: int
    task: str = "sentence"
    async_upload: bool = False
    """Checkpoints other than the stage's last upload in the background."""
    label_names: list[str] = field(default_factory=list)
    new_head: bool = False
    """Give the model a fresh task head for ``label_names`` (teacher fine-tuning)."""
    teacher_hidden: int = 0
    """Teacher width, for the projections of representation and hidden-state losses."""
    teacher_layers: int = 0
    """Teacher blocks (for stored last-layer targets)."""
    online_teacher: str = ""
    """Teacher model for online targets (with ``online_teacher_in_run`` as ``init_path``);
    empty = targets stored in the batches, or none needed."""
    online_teacher_in_run: bool = False
    tokenizer_path: str = ""
    """Tokenizer saved beside the final weights."""
    freeze_word_embeddings: bool = False
    """Keep the word embeddings fixed in this stage."""
    vocab: dict = field(default_factory=dict)
    """A student with a trimmed vocabulary: its init marker's ``vocab`` (the teacher ids it
    kept, :mod:`xdistil_ray.student.vocab`); empty: the teacher's vocabulary."""
    validation: tuple[str, ...] = ()
    """Labeled dev files (full paths in the run folder) scored after each epoch; the best
    epoch's weights end the stage (:mod:`xdistil_ray.distill.validation`). Empty: no validation."""
    steps_per_epoch: int = 0
    patience: int = 0
    """Epochs without a better dev score, or held-out checks without a better held-out loss,
    that stop the stage (or its unfreezing phase) early (0: never)."""
    heldout_check: tuple[str, ...] = ()
    """A stage on the transfer set: the files whose held-out rows it checks its loss on every
    ``check_every`` steps (:class:`xdistil_ray.distill.validation.HeldoutLoss`). Empty: no checks."""
    check_columns: tuple[str, ...] = ()
    check_every: int = 0
    check_rows: int = 0
    """Held-out rows each check reads (at most)."""
    min_improvement: float = 0.0
    """A check is better when its loss is below the best by more than this share of it."""
    unfreeze_steps: int = -1
    """Steps per gradual-unfreezing phase (0 = even split); -1 = no gradual unfreezing."""
    rel: str = ""
    """The stage's folder in the run: rank 0 commits ``model/`` and ``losses.json`` there."""
    dataset: str = "train"
    """Name of the stage's dataset among the Ray Train datasets of its worker group."""
    marker: dict = field(default_factory=dict)
    """More fields of the stage's commit marker (its config fingerprint, targets, ...)."""
    progress_every_s: float = 10.0
    """Seconds between progress lines (0: at every logged step)."""
    cache_bytes: int = 0
    """A worker's first epoch kept in memory up to this size (see :func:`batches_forever`)."""
    windows: object = None
    """Extractive QA: the :class:`xdistil_ray.tasks.qa.WindowSettings` its dev answers are decoded
    with."""

    @property
    def per_token(self) -> bool:
        return task_of(self.task).per_token


def total_steps(num_rows: int, epochs: float, batch_size: int, num_workers: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``num_rows`` rows split across workers."""
    return max(1, math.ceil(epochs * num_rows / (batch_size * num_workers)))


def deepspeed_config(spec: StageSpec, use_cuda: bool) -> dict:
    """DeepSpeed settings. Step i (0-based) runs at the schedule's LR of iteration i + 1 (see
    :meth:`StageTrainer.build`), so that neither the first nor the last step has LR 0."""
    warmup = max(1, spec.total_steps // 10)
    return {
        "train_micro_batch_size_per_gpu": spec.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": {
            # torch's fused AdamW: one kernel over all parameters (CPU and CUDA); on a small
            # student's CPU step the per-tensor loop was 15% of the step.
            "lr": spec.learning_rate, "weight_decay": 0.01, "torch_adam": True, "fused": True}},
        "scheduler": {"type": "WarmupDecayLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": spec.learning_rate,
            "warmup_num_steps": warmup, "total_num_steps": max(spec.total_steps + 1, warmup + 1),
            "warmup_type": "linear"}},
        "zero_optimization": {"stage": spec.zero_stage},
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": bool(use_cuda and torch.cuda.is_bf16_supported())},
        "steps_per_print": 10**9,
    }


def skip_shm_comm_build() -> None:
    """On CPU, DeepSpeed's torch backend JIT-compiles a shared-memory all-reduce op with g++ when
    it starts (60-110 s of both CPUs of a 2-core machine, again whenever its flags or paths
    differ), and probes every op's compiler first (~4 s per process). Only its
    ``inference_all_reduce`` uses the op; training's collectives are the process group's
    (gloo). Marking the op incompatible, in the dict DeepSpeed keeps for the process, skips
    both."""
    if torch.cuda.is_available():
        return
    import deepspeed.ops

    vars(deepspeed.ops).setdefault("__compatible_ops__", {})["deepspeed_shm_comm"] = False


# ---------------------------------------------------------------------- the stage trainer

class StageTrainer:
    """A stage's model, objective and DeepSpeed engine, phase by phase; no Ray in here.

    Args:
        spec: the stage.
        local_init: local folder of the starting weights.
        teacher: the teacher model for online targets, or None.
    """

    def __init__(self, spec: StageSpec, local_init: str, teacher: torch.nn.Module | None = None):
        self.spec = spec
        self.local_init = local_init
        self.module = self._new_module()
        self.num_blocks = self.module.student.config.num_hidden_layers
        self.phase_length = schedule.phase_length(spec.total_steps, self.num_blocks,
                                                  max(0, spec.unfreeze_steps))
        self.never = self._never_trained()
        self.engine = None
        self.phase = -1
        self.teacher = teacher
        self.online = None

    def _new_module(self):
        from xdistil_ray.modeling.models import DistillModule, load_model

        spec = self.spec
        torch.manual_seed(spec.seed)
        from xdistil_ray.modeling.vocab_map import table_of

        model = load_model(self.local_init, spec.task, spec.label_names if spec.new_head else None)
        return DistillModule(model, objective.projections(spec.losses, spec.teacher_hidden),
                             table_of(spec.vocab))

    def _never_trained(self) -> set[str]:
        """Parameters no loss of this stage reaches (e.g. an unused head), or kept fixed."""
        from xdistil_ray.modeling.families import family_of

        student = self.module.student
        words = family_of(student.config).anatomy(student).word_embeddings.weight
        never = set()
        for name, param in self.module.named_parameters():
            if not objective.reached(name, self.spec.losses):
                never.add(name)
            if self.spec.freeze_word_embeddings and param is words:
                never.add(name)
        return never

    @property
    def last_phase(self) -> int:
        return schedule.num_phases(self.num_blocks) - 1

    def phase_for(self, step: int, floor: int = 0) -> int:
        """Unfreezing phase of 0-based optimizer step ``step`` (the last one: all groups): the
        schedule's, or ``floor`` where a plateau started a later phase early."""
        if self.spec.unfreeze_steps < 0:
            return self.last_phase
        return max(floor, schedule.phase_at(step, self.phase_length, self.num_blocks))

    def phase_start(self, phase: int, early: dict[int, int]) -> int:
        """The step ``phase`` started at: early (a plateau) or by the schedule."""
        if self.spec.unfreeze_steps < 0:
            return 0
        return early.get(phase, phase * self.phase_length)

    def build(self, phase: int, step: int, state: dict | None = None) -> None:
        """(Re)builds the engine for ``phase``; keeps the weights trained so far, or starts from
        the full module ``state`` when given."""
        import deepspeed

        if self.engine is not None:
            if state is None:  # a new phase: the weights trained so far
                state = self.full_state()
            self.engine = None
            self.module = self._new_module()
        if state is not None:
            self.module.load_state_dict(state)
        groups = schedule.trainable_groups(phase, self.num_blocks)
        schedule.apply_groups(self.module, groups, self.never)
        params = [p for p in self.module.parameters() if p.requires_grad]
        skip_shm_comm_build()
        self.engine, _, _, _ = deepspeed.initialize(
            model=self.module, model_parameters=params,
            config=deepspeed_config(self.spec, torch.cuda.is_available()))
        if self.spec.zero_stage == 0 and self.engine.dp_world_size == 1:
            # One rank has nothing to average; DeepSpeed would still flatten, all-reduce and
            # copy back every gradient each step (7% of a small student's step on CPU).
            self.engine.enable_backward_allreduce = False
        self.engine.lr_scheduler.step(step + 1)  # continues the schedule across rebuilds
        self.engine.train()
        self.phase = phase
        if self.teacher is not None and self.online is None:
            self.online = objective.OnlineTeacher(self.teacher, self.spec.losses, self.engine.device)

    def full_state(self) -> dict:
        """The module's full weights on CPU (gathered across ranks under ZeRO-3)."""
        import deepspeed

        params = list(self.engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params, enabled=self.spec.zero_stage == 3):
            return {k: v.detach().to("cpu", torch.float32).clone()
                    for k, v in self.engine.module.state_dict().items()}

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Forward pass of the student (and online teacher) and the stage's loss."""
        spec = self.spec
        student = self.engine(batch, hidden_states=objective.needs_hidden_states(spec.losses),
                              qkv_block=objective.qkv_block(spec.losses, "student"))
        if self.online is not None:
            targets = self.online(batch)
        else:
            targets = objective.stored_targets(batch, spec.teacher_layers)
        return objective.compute(spec.losses, student, targets, batch,
                                 self.engine.module.projections, per_token=spec.per_token,
                                 spans=task_of(spec.task).spans)

    def train_step(self, batch: dict) -> torch.Tensor:
        """One optimizer step; returns the loss detached, on the device (no host sync). Each
        loss's own value stays in ``last_parts`` (detached, on the device)."""
        loss, self.last_parts = self.loss(batch)
        self.engine.backward(loss)
        self.engine.step()
        return loss.detach()

    def learning_rate(self) -> float | None:
        lrs = self.engine.get_lr()
        return float(lrs[0]) if lrs else None

    def grad_norm(self) -> float | None:
        """The last step's global gradient norm where DeepSpeed computed one."""
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    @property
    def pad_id(self) -> int:
        """The padding id of the batches (the teacher's ids where the student's are trimmed)."""
        pad = self.module.student.config.pad_token_id or 0
        return self.spec.vocab["teacher_ids"][pad] if self.spec.vocab else pad


# ---------------------------------------------------------------------- Ray Train entry point

def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: ``config["stages"]`` is a list of :class:`StageSpec` that the same
    workers train in order, each from the one before and each committed as it ends (one worker
    group's start-up for the whole run of stages). A committed stage is skipped; the newest
    checkpoint resumes the stage it belongs to."""
    specs: list[StageSpec] = config["stages"]
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    torch.set_num_threads(specs[0].torch_threads)
    workdir = tempfile.mkdtemp(prefix="xdistil-train-")
    try:
        _train_stages(specs, workdir)
    finally:  # a worker's local copies (init weights, teacher, checkpoints) are hundreds of MB
        shutil.rmtree(workdir, ignore_errors=True)


def _train_stages(specs: list[StageSpec], workdir: str) -> None:
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # Every rank reads the markers before any stage runs (no commit can happen in between).
    pending = [s for s in specs if not s.run.is_complete(s.rel)]
    checkpoint = _agreed_checkpoint(ray.train.get_checkpoint(), rank)
    progress = read_progress(checkpoint) if checkpoint is not None else None
    previous = ""  # this rank's copy of the last stage's final student
    for spec in pending:
        resume = checkpoint if progress and progress.get("stage", spec.rel) == spec.rel else None
        stage_dir = tempfile.mkdtemp(dir=workdir, prefix=f"{spec.name}-")
        final = _train_stage(spec, stage_dir, rank, world, previous, resume)
        if previous:
            shutil.rmtree(os.path.dirname(previous), ignore_errors=True)
        previous = final


def _agreed_checkpoint(checkpoint, rank: int):
    """Rank 0's choice of checkpoint (:func:`usable_checkpoint`), the same on every rank."""
    chosen = [None]
    if rank == 0:
        picked = usable_checkpoint(checkpoint, say)
        chosen = [None if picked is None else picked.path]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(chosen, src=0)
    if chosen[0] is None:
        return None
    if checkpoint is not None and chosen[0] == checkpoint.path:
        return checkpoint
    import ray.train

    return ray.train.Checkpoint(chosen[0], filesystem=checkpoint.filesystem)


def _train_stage(spec: StageSpec, stage_dir: str, rank: int, world: int, previous: str,
                 checkpoint) -> str:
    """One stage from ``previous`` (a local folder; empty: its ``init_path``) or from
    ``checkpoint``; commits it (rank 0). Returns this rank's folder of the final student."""
    started = time.time()
    if rank == 0:
        _mark_started(spec)
        say(f"[xdistil] {spec.rel}: running")
    trainer = _stage_trainer(spec, stage_dir, previous)
    loop = _StageLoop(spec, trainer, stage_dir, rank, world)
    loop.restore(checkpoint)
    nodes = _node_ids()
    loop.run()
    final = os.path.join(stage_dir, MODEL_DIR)
    if rank == 0:
        validation = loop.validation
        extra = ({"validation": validation.summary(loop.stopped_early)}
                 if validation.enabled else {})
        extra["nodes"] = nodes
        extra["checkpoint_bytes"] = loop.checkpoint_bytes
        if validation.enabled and validation.at_chance():
            say(f"[xdistil] warning: {spec.name}: {validation.chance_warning()}")
        _commit(spec, final, loop.history, loop.resumed, time.time() - started, loop.step,
                extra)
        say(f"[xdistil] {spec.rel}: done in {time.time() - started:.0f}s")
    return final


def _stage_trainer(spec: StageSpec, stage_dir: str, previous: str) -> StageTrainer:
    """The stage's student (from ``previous``, else its init) and online teacher; an error in
    building them is one a restart meets again (the files and settings it was given)."""
    init = previous or _local(spec, spec.init_path, spec.init_in_run, stage_dir, "init")
    teacher = _online_teacher(spec, stage_dir)
    try:
        return StageTrainer(spec, init, teacher)
    except Exception as e:
        if storage.is_storage_error(e):
            raise
        raise will_fail_again(f"building the model of {spec.name}", e) from e


class _StageLoop:
    """A stage's steps on one rank: restored from a checkpoint or not, then trained until its
    last step or an early stop, logging, validating and checkpointing on the way."""

    def __init__(self, spec: StageSpec, trainer: StageTrainer, stage_dir: str, rank: int,
                 world: int):
        self.spec, self.trainer, self.stage_dir = spec, trainer, stage_dir
        self.rank, self.world = rank, world
        self.step, self.history, self.resumed = 0, [], []
        self.validation = None
        self.stopped_early = False
        self.window, self.parts = [], {}
        self.board = None
        self.checkpoint_bytes: list[int] = []
        """The bytes each rank wrote into the stage's last checkpoint."""

    def restore(self, checkpoint) -> None:
        """Builds the engine at the checkpoint's step (or at 0) with its state."""
        spec, trainer, step = self.spec, self.trainer, 0
        restore_dir, progress = None, {}
        if checkpoint is not None:
            # to_directory per rank, not as_directory: see shared/NOTES.md (ray issue 48726).
            restore_dir = checkpoint.to_directory(os.path.join(self.stage_dir, "restore"))
            progress = verify_checkpoint(restore_dir)
            step, self.history = progress["step"], progress["history"]
            self.resumed = progress.get("resumed_from", []) + [step]
        self.step = step
        self.validation = validation = validation_mod.for_stage(spec, progress.get("validation"))
        # The driver refuses another number of workers at ZeRO 1-3 before any work
        # (checkpoint.world_size_problem).
        loadable = restore_dir is not None and loads_deepspeed_state(progress, self.world,
                                                                     spec.zero_stage)
        state = (safe_load(os.path.join(restore_dir, MODULE_FILE))
                 if restore_dir is not None and not loadable else None)
        trainer.build(trainer.phase_for(max(0, step - 1),
                                        validation.phase_floor(max(0, step - 1))), step, state)
        if loadable:
            use_safe_loading(trainer.engine)
            trainer.engine.load_checkpoint(restore_dir, tag=DEEPSPEED_TAG)
        if restore_dir is not None:
            best = os.path.join(restore_dir, BEST_MODULE_FILE)
            validation.restore(safe_load(best) if os.path.exists(best) else None, trainer, step)
            shutil.rmtree(restore_dir, ignore_errors=True)
            if self.rank == 0:
                say(f"[xdistil] {spec.name}: resumed from step {step} of {spec.total_steps} "
                    f"(checkpoint of {progress['world_size']} workers verified)")

    def run(self) -> None:
        import ray.train

        spec, trainer, validation = self.spec, self.trainer, self.validation
        batches = batches_forever(ray.train.get_dataset_shard(spec.dataset), spec.batch_size,
                                  spec.seed, PadCollate(trainer.pad_id, spec.label_names,
                                                        spec.per_token), trainer.engine.device,
                                  cache_bytes=spec.cache_bytes)
        self.clock = _ProgressClock(spec, self.step)
        preemption = PreemptionNotices()
        if self.rank == 0:
            self.board = tensorboard_log.StageLog(spec.run, spec.rel, self.stage_dir)
        final_saved = False
        self.stopped_early = _verdict(validation, trainer, self.step) == "stop"  # resumed at it
        while self.step < spec.total_steps and not self.stopped_early:
            step = self.step
            if trainer.phase_for(step, validation.phase_floor(step)) != trainer.phase:
                trainer.build(trainer.phase_for(step, validation.phase_floor(step)), step)
                if self.rank == 0:  # the workers' log only: not a line the console needs
                    say(f"({spec.name}) step {step}: unfreezing phase {trainer.phase}")
            self.window.append(trainer.train_step(next(batches)))  # losses stay on the device
            for name, value in trainer.last_parts.items():
                self.parts.setdefault(name, []).append(value)
            self.step = step = step + 1
            if step % spec.log_every == 0 or step == spec.total_steps:
                self._log_window()
            if validation.due(step):
                self._validate()
            end = step == spec.total_steps or self.stopped_early
            notice = (step % spec.log_every == 0 and not end and preemption.notice_due(step))
            if notice and self.rank == 0:
                say(f"[xdistil] {spec.name}: {notice}: checkpoint at step {step}")
            # Only checkpoints go to Ray Train: a report waits until the controller has taken
            # the previous one (it polls every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S), so a report
            # per log interval held a fast stage to one interval per report
            # (ray_start.RAY_ENV).
            if step % spec.checkpoint_every == 0 or end or notice:
                final_saved = end
                if self.board is not None:
                    self.board.sync()  # the curves so far, beside the checkpoint
                self._checkpoint(final=end)
        if not final_saved:  # restored at (or, with fewer workers' longer steps, past) the end
            self._checkpoint(final=True)
        if self.board is not None:
            self.board.close()

    def _checkpoint(self, final: bool) -> None:
        self.checkpoint_bytes = _save_and_report(
            self.trainer, _progress(self.spec, self.step, self.history, self.resumed, self.world,
                                    self.validation),
            self.stage_dir, self.rank, final=final, validation=self.validation)

    def _log_window(self) -> None:
        """The mean losses of the steps since the last logged one, at ``step``."""
        means = _means_across_ranks({"total": self.window, **self.parts})
        self.history.append([self.step, means["total"], round(time.time(), 3)])
        self.window, self.parts = [], {}
        if self.rank == 0:
            self.clock.maybe_print(self.step, self.history)
            # "0:logits" -> "loss/0_logits" (TensorBoard's tags take no colon)
            self.board.scalars(self.step, {**{f"loss/{k.replace(':', '_')}": v
                                              for k, v in means.items()},
                                           "learning_rate": self.trainer.learning_rate(),
                                           "grad_norm": self.trainer.grad_norm()})

    def _validate(self) -> None:
        """A check due at ``step``: its score, and whether the stage stops or advances."""
        spec, trainer, validation, step = self.spec, self.trainer, self.validation, self.step
        score = validation.measure(trainer, step)
        verdict = _verdict(validation, trainer, step)
        self.stopped_early = verdict == "stop"
        if verdict == "advance":
            validation.advance(trainer.phase + 1, step)
        if self.rank == 0:  # every dev score, and a held-out check that changes course
            console = verdict != "go" or validation.tag.startswith("dev/")
            say(f"{'[xdistil] ' if console else '('}{spec.name}{': ' if console else ') '}"
                f"{validation.line(self.stopped_early)}"
                + (f", unfreezing phase {trainer.phase + 1} starts"
                   if verdict == "advance" else ""))
            self.board.scalars(step, {validation.tag: score})
        if self.stopped_early and self.window:  # the steps since the last one end the curve
            self._log_window()


def _verdict(validation, trainer: StageTrainer, step: int) -> str:
    """``stop``, ``advance`` (to the next unfreezing phase) or ``go``, after a check at
    ``step``."""
    return validation.verdict(step, trainer.phase_start(trainer.phase, validation.phase_starts),
                              trainer.phase == trainer.last_phase)


def _node_ids() -> list[str]:
    """Each rank's Ray node id, by rank (a collective: every rank calls it), for the stage's
    marker: where the worker group ran."""
    import ray

    return _by_rank(ray.get_runtime_context().get_node_id())


def _by_rank(value) -> list:
    """``value`` of every rank, by rank (a collective: every rank calls it)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        out = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, value)
        return out
    return [value]


def _mark_started(spec: StageSpec) -> None:
    """The stage's first attempt leaves its fingerprint: a re-run with changed fields would mix
    old and new work, and is refused before any work."""
    if spec.marker.get("fingerprint") is not None and spec.run.started(spec.rel) is None:
        spec.run.start(spec.rel, spec.marker["fingerprint"])


def _progress(spec: StageSpec, step: int, history: list, resumed: list, world: int,
              validation: validation_mod.Validation) -> dict:
    """What a checkpoint records to resume the stage."""
    progress = {"stage": spec.rel, "step": step, "history": history, "resumed_from": resumed,
                "world_size": world, "zero_stage": spec.zero_stage}
    if validation.enabled:
        progress["validation"] = validation.progress()
    return progress


def _commit(spec: StageSpec, final: str, history: list, resumed: list, seconds: float,
            steps: int, extra: dict):
    """Copies the final student and the loss history into the stage folder; commits it."""
    run = spec.run
    files = {posixpath.join(MODEL_DIR, name): size
             for name, size in run.upload(final, posixpath.join(spec.rel, MODEL_DIR)).items()}
    losses = {"stage": spec.name, "losses": [s.type for s in spec.losses], "history": history,
              "resumed_from": resumed}
    data = json.dumps(losses).encode()
    run.write_bytes(posixpath.join(spec.rel, LOSSES_FILE), data)
    files[LOSSES_FILE] = len(data)
    return run.commit(spec.rel, StageMarker(
        files=files, name=spec.name, losses=losses["losses"], steps=steps,
        planned_steps=spec.total_steps, first_loss=history[0][1], final_loss=history[-1][1],
        steps_per_second=steady_steps_per_second(history, resumed), resumed_from=resumed,
        seconds=round(seconds, 1), **extra, **spec.marker))


def _local(spec: StageSpec, path: str, in_run: bool, workdir: str, name: str) -> str:
    """A model folder on this worker: downloaded from the run folder, or as given."""
    if not in_run:
        return path
    return spec.run.download(path, os.path.join(workdir, name), MODEL_DIR)


def _online_teacher(spec: StageSpec, workdir: str):
    if not spec.online_teacher:
        return None
    from xdistil_ray.modeling.models import load_model

    local = _local(spec, spec.online_teacher, spec.online_teacher_in_run, workdir, "teacher")
    return load_model(local, spec.task)


class PreemptionNotices:
    """Ray Train's notice that a node of the worker group is being preempted (a spot instance
    reclaimed; the node drained with reason PREEMPTION), asked at logging intervals. Every
    worker asks at the same steps (the question is a collective). Ray starts no preemption
    watcher on one machine (``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0``: ray_start.LOCAL_RAY_ENV),
    and then nothing is asked."""

    def __init__(self, watched: bool | None = None):
        self.watched = (os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1") != "0"
                        if watched is None else watched)
        self.seen: set = set()

    def notice_due(self, step: int, info=None) -> str:
        """A console line for a notice not acted on yet ('' when there is none): the caller
        checkpoints at once, and Ray Train restarts the group from it when the node goes."""
        if not self.watched:
            return ""
        if info is None:
            import ray.train

            info = ray.train.get_preemption_info()
        if info is None or info.deadline_ms in self.seen:
            return ""
        self.seen.add(info.deadline_ms)
        left = "" if info.deadline_ms is None else \
            f", {max(0.0, info.deadline_ms / 1000 - time.time()):.0f} s left"
        return (f"preemption notice for {len(info.preempted_node_ids)} node(s), ranks "
                f"{info.preempted_ranks}{left}")


def _means_across_ranks(windows: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Mean of each window of losses (the total, each loss's own) over all ranks, in one
    all-reduce: the one host sync per logging interval."""
    names = list(windows)
    means = torch.stack([torch.stack(windows[n]).double().mean() for n in names])
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(means)
        means /= torch.distributed.get_world_size()
    return dict(zip(names, means.tolist()))


def say(line: str) -> None:
    """An ``[xdistil]`` line as a record of the package's logger (:func:`console.show`); any
    other line on the worker's real stdout, which Ray forwards to the driver once (Ray Train's
    print patch would log it twice) and the driver's console keeps in the workers' log."""
    if console.is_project_line(line):
        console.show(line)
    else:
        print(line, file=sys.__stdout__, flush=True)


def steady_rate(history: list, after_step: int) -> float | None:
    """Optimizer steps per second between the first and the last logged point past
    ``after_step`` (history rows: [step, loss, unix time]): start-up and earlier attempts
    excluded. None with fewer than two such points."""
    points = [row for row in history if row[0] > after_step and len(row) > 2]
    if len(points) < 2 or points[-1][2] <= points[0][2]:
        return None
    return (points[-1][0] - points[0][0]) / (points[-1][2] - points[0][2])


def steady_steps_per_second(history: list, resumed_from: list[int]) -> float | None:
    """Steady steps per second of the stage's last attempt (see :func:`steady_rate`), rounded;
    None with fewer than two logged points."""
    rate = steady_rate(history, max(resumed_from, default=0))
    return None if rate is None else round(rate, 3)


class _ProgressClock:
    """Rank 0's progress lines: step, loss, rate and time left at the steady rate of this
    attempt, at most every ``spec.progress_every_s`` seconds (and at the stage's last step)."""

    def __init__(self, spec: StageSpec, first_step: int):
        self.spec, self.first_step = spec, first_step
        self.start = self.printed = time.time()

    def maybe_print(self, step: int, history: list) -> None:
        now = time.time()
        if now - self.printed < self.spec.progress_every_s and step < self.spec.total_steps:
            return
        self.printed = now
        elapsed_s = now - self.start
        rate = (steady_rate(history, self.first_step)
                or max(1, step - self.first_step) / max(elapsed_s, 1e-9))
        left_s = (self.spec.total_steps - step) / rate
        say(f"[xdistil] {self.spec.name}: step {step}/{self.spec.total_steps}, loss "
            f"{history[-1][1]:.4f}, {rate:.2f} steps/s, elapsed {elapsed_s:.0f}s, "
            f"~{left_s:.0f}s left")


def _save_and_report(trainer: StageTrainer, progress: dict, stage_dir: str, rank: int,
                     final: bool, validation: validation_mod.Validation) -> list[int]:
    """Every rank saves its DeepSpeed shard; rank 0 adds the progress, the full module (to
    resume on another number of workers), the best epoch's weights when they are not the
    current ones and, at the end, ``model/``: the best epoch's weights where validation found
    one (each rank also keeps its own copy as the next stage's start); each rank lists its
    files last. Ray merges the ranks' folders into one checkpoint. Returns the bytes each
    rank wrote (by rank)."""
    import ray.train
    from ray.train import Checkpoint, CheckpointUploadMode

    spec, step = trainer.spec, progress["step"]
    best = validation.pending_best(step)
    if final and best is not None:  # back to the best epoch: the stage ends with its weights
        trainer.build(trainer.phase, step, best)
        best = None
    out = tempfile.mkdtemp(dir=stage_dir, prefix=f"ckpt-{step}-")
    trainer.engine.save_checkpoint(out, tag=DEEPSPEED_TAG, client_state={"step": step})
    state = trainer.full_state()  # a collective under ZeRO-3: every rank takes part
    if final:
        final_dir = os.path.join(stage_dir, MODEL_DIR)
        save_student(trainer, final_dir, spec.tokenizer_path if rank == 0 else "")
        if rank == 0:
            shutil.copytree(final_dir, os.path.join(out, MODEL_DIR))
    if rank == 0:
        torch.save(state, os.path.join(out, MODULE_FILE))
        if best is not None:
            torch.save(best, os.path.join(out, BEST_MODULE_FILE))
        with open(os.path.join(out, PROGRESS_FILE), "w") as f:
            json.dump(progress, f)
    written = _by_rank(write_rank_manifest(out, rank))
    history = progress["history"]
    # A checkpoint's folder is its own and never written again: uploaded in the background
    # while training goes on (Ray Train registers it once uploaded). The stage's last one is
    # uploaded before the stage is committed.
    mode = (CheckpointUploadMode.ASYNC if spec.async_upload and not final
            else CheckpointUploadMode.SYNC)
    ray.train.report({"step": step, "loss": history[-1][1] if history else float("nan")},
                     checkpoint=Checkpoint.from_directory(out), checkpoint_upload_mode=mode,
                     delete_local_checkpoint_after_upload=True)
    return written
