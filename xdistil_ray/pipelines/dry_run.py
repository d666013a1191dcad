"""``--dry-run`` of ``jobs/distill.py`` and ``jobs/finetune.py``: check the config and the
storage, and say what a run would do.

The job's own steps (:func:`xdistil_ray.pipelines.distill.steps`,
:func:`xdistil_ray.pipelines.finetune.steps`), in order, each saying whether it is complete
already (or half done, and how far), what it reads, where it writes, and the Ray resources it
asks for. Nothing is written to the run folder and no step runs; a refused config change is
reported as the run would report it.
"""

from __future__ import annotations

import tempfile

from xdistil_ray.config import Config, FinetuneJob
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Planned, Step


def plan(cfg: Config | FinetuneJob) -> tuple[RunFolder, list[Planned], list[str]]:
    """Checks config, storage, inputs and models (as a run does before any work) and returns
    what each step would do, with the distillation's capacity plan
    (:mod:`xdistil_ray.pipelines.capacity`). Raises ConfigError where the run would stop."""
    from xdistil_ray.run import storage

    run = RunFolder(cfg.output, cfg.storage_options())
    storage.check_access(run.uri, run.options)
    if isinstance(cfg, FinetuneJob):
        from xdistil_ray.pipelines import finetune

        with tempfile.TemporaryDirectory() as tmp:  # an s3:// model is read to check it
            ctx = finetune.context(cfg, run, tmp, dry=True)
            return run, plan_steps(ctx, finetune.steps()), []
    from xdistil_ray.pipelines import capacity, distill

    ctx = distill.context(cfg, run, dry=True)
    steps = plan_steps(ctx, distill.steps(cfg))
    return run, steps, capacity.describe(capacity.plan(cfg, run, ctx.inputs, ctx.data), cfg)


def plan_steps(ctx: Context, steps: list[Step]) -> list[Planned]:
    """The checks a run makes before any work (changed fields, resumability), then each
    step's plan."""
    ctx.runner.refuse_changes(steps, ctx)
    for step in steps:
        step.check_resumable(ctx)
    return ctx.runner.plan_all(steps, ctx)


def describe(run: RunFolder, steps: list[Planned], extra: list[str] = ()) -> str:
    lines = ["[xdistil] dry run: config and storage checked; nothing was run or written",
             f"[xdistil] run folder: {run.uri}", ""]
    for i, step in enumerate(steps, 1):
        lines.append(f"{i:2d}. {step.name}: {step.state.replace('to run', 'TO RUN')}")
        if step.state.startswith("not needed"):
            continue
        if step.detail:
            lines.append(f"      what:      {step.detail}")
        if step.reads:
            lines.append(f"      reads:     {'; '.join(step.reads)}")
        lines.append(f"      writes:    {run.uri_of(step.folder)}")
        if step.resources:
            lines.append(f"      resources: {step.resources}")
    todo = [s.name for s in steps if s.runs]
    lines += list(extra)
    lines += ["", f"[xdistil] {len(todo)} step(s) would run: {', '.join(todo)}"]
    return "\n".join(lines)


def dry_run(cfg: Config | FinetuneJob) -> list[Planned]:
    run, steps, capacity = plan(cfg)
    print(describe(run, steps, capacity), flush=True)
    return steps
