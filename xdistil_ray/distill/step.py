"""Steps ``stages/<k>-<name>`` (and ``teacher_finetune``): training stages on Ray Train.

The driver side: build each stage's Ray Dataset from committed files and run one
``TorchTrainer`` for a sequence of consecutive stages; its workers
(:func:`xdistil_ray.distill.train_loop.train_loop_per_worker`, DeepSpeed) train them in order and
commit each stage's consolidated weights and loss history as it ends. One worker group for all
the stages: Ray Train's controller, the workers, their process group and imports start once.

Resuming is Ray Train's: a new ``fit`` (:func:`fit_with_retries`, after a worker failure or a
storage outage) or a re-run of the driver finds the same ``RunConfig(name, storage_path)`` and
starts from its newest checkpoint. Checkpoints are verified before loading (every rank's files present).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xdistil_ray.run import layout
from xdistil_ray.run.markers import StageMarker
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Planned, StepGroup

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the worker loop (torch, DeepSpeed) is imported where a group starts: Ray
    # Data's tasks run _rows_with_heldout from this module and need no model code
    from xdistil_ray.distill.train_loop import StageSpec

RAY_DIR = layout.RAY
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
    max_preemption_failures: int = -1
    """Preempted nodes Ray Train recovers from, apart from ``max_failures``."""

    @classmethod
    def of(cls, cfg) -> "Scaling":
        """From the config's ``train`` section."""
        t = cfg.train
        return cls(t.num_workers, t.use_gpu, t.cpus_per_worker, t.max_failures,
                   dict(t.resources_per_worker), t.max_preemption_failures)


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


def run_stages(run: RunFolder, ray_rel: str, specs: list[StageSpec], datasets: dict,
               scaling: Scaling) -> list[dict]:
    """Trains ``specs`` in order on one Ray Train worker group (its start-up paid once); the
    workers commit each stage (``model/`` + ``losses.json``) as it ends. Ray Train's run lives
    under ``ray_rel``/ray, so that a re-run resumes from its newest checkpoint.

    Args:
        datasets: each stage's Ray Dataset, by ``spec.dataset``.

    Returns:
        the stages' markers.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from xdistil_ray.distill.train_loop import train_loop_per_worker

    def fit():
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"stages": specs},
            scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                         resources_per_worker={"CPU": scaling.cpus_per_worker,
                                                               **scaling.resources}),
            torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
            datasets=datasets,
            run_config=RunConfig(
                name=RAY_DIR, storage_path=run.path(ray_rel), storage_filesystem=run.fs,
                # worker failures are retried by fit_with_retries, which sees each one
                failure_config=FailureConfig(
                    max_failures=0, max_preemption_failures=scaling.max_preemption_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )
        return trainer.fit()

    fit_with_retries(fit, run, ray_rel, scaling.max_failures)
    markers = [run.marker(spec.rel, StageMarker) for spec in specs]
    missing = [spec.rel for spec, m in zip(specs, markers) if m is None]
    if missing:
        raise RuntimeError(f"training ended without committing {', '.join(missing)}")
    return markers


def run_stage(run: RunFolder, rel: str, spec: StageSpec, dataset, scaling: Scaling,
              fingerprint: dict) -> StageMarker:
    """Trains one stage alone (Ray Train's run under ``rel``/ray) and commits ``rel``."""
    spec = dataclasses.replace(spec, rel=rel, dataset="train",
                               marker={**spec.marker, **stage_marker_fields(spec, fingerprint)})
    return run_stages(run, rel, [spec], {"train": dataset}, scaling)[0]


def stage_marker_fields(spec: StageSpec, fingerprint: dict) -> dict:
    """What the driver adds to a stage's commit marker (the workers add steps and losses)."""
    return {"unfreeze": spec.unfreeze_steps >= 0, "targets": _targets(spec),
            "fingerprint": fingerprint}


def clean_checkpoints(run: RunFolder, ray_rel: str, stages: list[str]) -> bool:
    """Deletes the Ray Train checkpoints under ``ray_rel`` (optimizer state included: several
    times the model) once every one of ``stages`` is committed; their ``model/`` and
    ``losses.json`` stay. Returns whether any were there."""
    if not all(run.is_complete(rel) for rel in stages):
        return False
    if not run.list_files(posixpath.join(ray_rel, RAY_DIR)):
        return False
    run.delete(ray_rel, RAY_DIR)
    return True


def fit_with_retries(fit, run: RunFolder, rel: str, retries: int, wait_s: float = 600):
    """``fit()``, again from the newest checkpoint after a failure (a new worker group; Ray
    Train's run resumes as on a re-run):

    - a worker failure (a process or node lost, an error in a step): up to ``retries`` times;
      Ray Train's own ``FailureConfig.max_failures`` is 0 so that each one
      comes here, where one that a restart would meet again (``errors.WillFailAgain``: the
      model cannot be built from its files and settings) stops the run at once with its message
      (Ray Train 2.60's failure policy retries every worker error alike);
    - a storage error that outlasted the requests' own retries (Ray Train's controller stops on
      one): up to ``retries`` times, each once storage answers again (waiting up to ``wait_s``).

    Node preemptions stay Ray Train's (``max_preemption_failures``, counted apart).
    """
    from ray.train import TrainingFailedError

    from xdistil_ray.run import storage
    from xdistil_ray.errors import ConfigError
    from xdistil_ray.errors import will_fail_again_message

    failures = outages = 0
    while True:
        try:
            return fit()
        except TrainingFailedError as e:
            again = will_fail_again_message(e)
            if again is not None:
                raise ConfigError(f"{rel}: {again} (not retried: a restart would fail the same "
                                  "way)") from None
            if storage.is_storage_error(e):
                if outages == retries:
                    raise
                outages += 1
                log.info(f"{rel}: storage failed under training "
                         f"({storage.first_line(e)}); waiting on storage, then resuming from the "
                         "newest checkpoint")
                waited = storage.wait_until_reachable(run.uri, run.options, wait_s)
                log.info(f"{rel}: storage answers again after {waited:.0f} s: resuming")
                continue
            if failures == retries:
                raise
            failures += 1
            log.info(f"{rel}: a training worker failed ({_first_line(e)}); restarting "
                     f"from the newest checkpoint (failure {failures} of at most {retries})")


def _first_line(e: BaseException) -> str:
    """The first line that names the worker's error in a failed run's message."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line and not line.startswith("Training failed")]
    return (named[-1] if named else lines[0] if lines else type(e).__name__)[:200]


def _targets(spec: StageSpec) -> str:
    """Where the stage's teacher targets came from: ``online``, ``stored`` or ``none``."""
    if spec.online_teacher:
        return "online"
    return "none" if all(s.type == "labels" for s in spec.losses) else "stored"


STAGES_RAY = layout.STAGES
"""Ray Train's run of the distillation stages (one worker group for all of them) is under
``stages/ray``."""


def stage_keys(k: int) -> tuple[str, ...]:
    """The config fields stage ``k`` (from 0) depends on: its own and every earlier stage's."""
    return (("student",) + tuple(f"stages.{i}" for i in range(k + 1))
            + ("task", "teacher.model", "teacher.finetune", "labeled", "seed",
               "train.min_stage_steps", "train.early_stop", "corpus.with_labeled"))


class StagesStep(StepGroup):
    """``stages/<k>-<name>``: the distillation stages in order, each from the previous one's
    weights; the committed ones are skipped, the rest trained on one Ray Train worker group."""

    name = folder = STAGES_RAY
    marker_kind = StageMarker

    def parts(self, ctx: Context) -> list[tuple[str, dict]]:
        from xdistil_ray.distill.stage_plan import stage_folder

        return [(stage_folder(k, s.name, ctx.prefix), ctx.fingerprint(*stage_keys(k)))
                for k, s in enumerate(ctx.cfg.stages)]

    def check_resumable(self, ctx: Context) -> None:
        from xdistil_ray.distill.checkpoint import refuse_unresumable

        t = ctx.cfg.train
        pending = [rel for rel, _ in self.parts(ctx) if not ctx.run.is_complete(rel)]
        refuse_unresumable(ctx.run, self.where(ctx), pending, t.num_workers, t.zero_stage)

    def run_pending(self, ctx: Context, pending: list[tuple[int, str, dict]]) -> list:
        from xdistil_ray.distill import stage_plan

        cfg, run, sources = ctx.cfg, ctx.run, ctx.sources
        parts = self.parts(ctx)
        specs, datasets = [], {}
        for k, rel, fp in pending:
            init = parts[k - 1][0] if k else posixpath.join(ctx.prefix, layout.STUDENT_INIT)
            losses = stage_plan.resolve_stage_losses(cfg.stages[k], ctx.inputs.shapes)
            spec, files, columns, heldout = stage_plan.plan(
                cfg, k, losses, sources, ctx.data, run=run, init_path=init, teacher=ctx.teacher,
                shapes=ctx.inputs.shapes)
            specs.append(dataclasses.replace(
                spec, rel=rel, dataset=f"stage{k + 1}", progress_every_s=cfg.progress_every_s,
                marker=stage_marker_fields(spec, fp), vocab=ctx.init_marker.vocab))
            datasets[f"stage{k + 1}"] = stage_dataset(run, files, columns, heldout)
        return run_stages(run, self.where(ctx), specs, datasets, Scaling.of(cfg))

    def use(self, ctx: Context, markers: list[StageMarker]) -> None:
        ctx.stage_markers = markers

    def plan(self, ctx: Context) -> list[Planned]:
        from xdistil_ray.config.checks import stage_data
        from xdistil_ray.distill import stage_plan
        from xdistil_ray.distill.checkpoint import newest_progress

        cfg, run, data = ctx.cfg, ctx.run, ctx.data
        out, previous = [], posixpath.join(ctx.prefix, layout.STUDENT_INIT, layout.MODEL)
        for k, (stage, (rel, _)) in enumerate(zip(cfg.stages, self.parts(ctx))):
            state = ctx.runner.state(rel)
            if state.startswith("half"):
                progress = newest_progress(run, posixpath.join(self.where(ctx), RAY_DIR), rel)
                if progress is not None:
                    state = f"half done (resumes from the checkpoint at step {progress['step']})"
            data_kind = stage_data(stage)
            if data_kind == "labeled":
                src = [stage_plan.LABELED_TRAIN]
            elif stage.targets == "online":
                src = [stage_plan.CORPUS, f"teacher (online, in every worker): "
                                          f"{ctx.teacher_reads()[0]}"]
            else:
                src = ["teacher (stored outputs)"]
            total = ""
            if data is not None:
                total = f", {stage_plan.stage_steps(cfg, k, data)} steps"
                if data_kind != "labeled" and cfg.train.early_stop.every_steps > 0:
                    total = (f", at most{total[1:]} (held-out loss checked every "
                             f"{cfg.train.early_stop.every_steps})")
            out.append(Planned(
                f"stage {k + 1}: {stage.name}", rel, state, [previous] + src,
                stage_plan.training_resources(cfg),
                f"{' + '.join(loss.type for loss in stage.losses)}; {stage.epochs:g} epoch(s) "
                f"at batch {stage.batch_size}{total}"
                + ("; gradual unfreezing" if stage.unfreeze == "gradual" else "")))
            previous = f"{rel}/{layout.MODEL}"
        return out
