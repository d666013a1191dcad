"""``jobs/distill.py --dry-run``: check the config and the storage, and say what a run would do.

Each step of the pipeline, in order: whether it is complete already (or half done, and how far),
what it reads, where it writes, and the Ray resources it asks for. Nothing is written to the run
folder and no step runs; a refused config change is reported as the run would report it.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

from xdistil_ray.run import identity
from xdistil_ray.pipelines import distill as pipeline
from xdistil_ray.distill import stage_plan
from xdistil_ray.distill.checkpoint import newest_progress
from xdistil_ray.config import EMBEDDED
from xdistil_ray.config import Config
from xdistil_ray.config.checks import stage_data
from xdistil_ray.data.readers import CorpusSource
from xdistil_ray.run.runfolder import STARTED, RunFolder


@dataclass
class PlannedStep:
    name: str
    folder: str
    state: str
    """``complete``, ``half done (...)``, ``to run``, or ``not needed (...)``."""
    reads: list[str] = field(default_factory=list)
    resources: str = ""
    detail: str = ""

    @property
    def runs(self) -> bool:
        return not self.state.startswith(("complete", "not needed"))


def _source(src: CorpusSource | None, value: str) -> str:
    if src is None:
        return f"{value} (generated into inputs/ when the run starts)"
    if src.kind == "files":
        return f"{src.path} ({len(src.files)} {src.fmt} file{'s' if len(src.files) != 1 else ''})"
    return f"{src.path} ({src.kind})"


def _training(cfg: Config) -> str:
    t = cfg.train
    each = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {}),
            **t.resources_per_worker}
    return (f"Ray Train: {t.num_workers} worker(s) x {json.dumps(each)}, DeepSpeed ZeRO-"
            f"{t.zero_stage}, {t.torch_threads or max(1, int(t.cpus_per_worker))} torch threads")


def _state(run: RunFolder, rel: str) -> str:
    marker = run.marker(rel)
    if marker is not None:
        return "complete"
    if run.read_marker(f"{rel}/{STARTED}") is not None:
        return "half done (resumes)"
    return "to run"


def _derived_state(run: RunFolder, rel: str, fp: dict) -> str:
    """A derived step (export, eval) runs again when what it derives from changed."""
    marker = run.marker(rel)
    if marker is None:
        return "to run"
    return ("to run (again: its inputs changed)"
            if pipeline.changed_fields(marker.get("fingerprint", {}), fp) else "complete")


def _pool(inf) -> str:
    """The teacher pool's size: ``N``, or ``N-M`` when it autoscales."""
    if inf.max_actors > inf.num_actors:
        return f"{inf.num_actors}-{inf.max_actors}"
    return str(inf.num_actors)


def _checkpoint_step(run: RunFolder, rel: str) -> int | None:
    """The step of the newest whole Ray Train checkpoint of half-done stage ``rel``, among the
    checkpoints of the stages' worker group (``stages/ray``)."""
    progress = newest_progress(run, posixpath.join(pipeline.STAGES_RAY, "ray"), rel)
    return None if progress is None else progress["step"]


def plan(cfg: Config) -> tuple[RunFolder, list[PlannedStep]]:
    """Checks config, storage, inputs and models (as a run does before any work) and returns the
    steps a run would take. Raises ConfigError where the run would stop."""
    from xdistil_ray.run import storage
    from xdistil_ray.modeling.models import has_task_head

    run = RunFolder(cfg.output, cfg.storage_options())
    storage.check_access(run.uri, run.options)
    inputs = pipeline.resolve_inputs(cfg, run, generate=False)
    steps = pipeline.Steps(run, identity.of_inputs(cfg, inputs))
    pipeline.check_unchanged(steps, cfg)
    pipeline.check_resumable(run, cfg, pipeline.TEACHER_FINETUNE, [pipeline.TEACHER_FINETUNE])
    pipeline.check_resumable(run, cfg, pipeline.STAGES_RAY,
                             [stage_plan.stage_folder(k, s.name) for k, s in enumerate(cfg.stages)
                              if run.marker(stage_plan.stage_folder(k, s.name)) is None])
    data = run.marker("data")
    kept = pipeline.check_labeled(cfg, inputs) if data is None else {}
    out: list[PlannedStep] = []

    reads = ([f"corpus.path: {_source(inputs.corpus, cfg.corpus.path)}"] if cfg.corpus.path
             else [])
    reads += [f"labeled.{split}: {_source(src, getattr(cfg.labeled, split))}"
              for split, src in inputs.labeled.items()]
    detail = ""
    if data is not None:
        c = data["corpus"]
        detail = f"{c['kept']} sentences kept of {c['input_rows']}, {len(c['shards'])} shards"
    elif kept:
        detail = "labeled rows that clean: " + ", ".join(f"{k} {v}" for k, v in kept.items())
    out.append(PlannedStep("data", "data", _state(run, "data"), reads,
                           "Ray Data: CPU tasks (1 CPU each) across the cluster", detail))

    label_names = data["labeled"]["label_names"] if data else None
    teacher_reads = [f"teacher.model: {cfg.teacher.model}"
                     + (f" ({inputs.teacher_path})" if cfg.teacher.model == EMBEDDED else "")]
    if cfg.task == "none":
        finetune = "not needed (task none: a plain encoder)"
    elif cfg.task == "qa" and has_task_head(inputs.teacher_path, None, "qa"):
        finetune = "not needed (the teacher has a question-answering head)"
    elif label_names is not None and has_task_head(inputs.teacher_path, len(label_names), cfg.task):
        finetune = (f"not needed (the teacher has a {cfg.task} head for the {len(label_names)} "
                    "labels)")
    elif label_names is None and has_task_head(inputs.teacher_path, None, cfg.task):
        finetune = ("not needed if the teacher's head matches the training labels (known once "
                    "data is done)")
    else:
        finetune = _state(run, pipeline.TEACHER_FINETUNE)
    teacher_in_run = not finetune.startswith("not needed")
    out.append(PlannedStep("teacher_finetune", pipeline.TEACHER_FINETUNE, finetune,
                           teacher_reads + ["data/labeled/train"], _training(cfg),
                           f"{cfg.teacher.finetune.epochs:g} epoch(s) at batch "
                           f"{cfg.teacher.finetune.batch_size}"))
    teacher_src = [pipeline.TEACHER_FINETUNE + "/model"] if teacher_in_run else teacher_reads

    outputs = pipeline.teacher_outputs(cfg)
    if outputs:
        inf = cfg.teacher.inference
        state, detail = _state(run, "teacher"), f"stores {', '.join(outputs)}"
        if data is not None and state != "complete":
            shards = [posixpath.splitext(s["file"])[0] for s in data["corpus"]["shards"]]
            done = sum(run.is_complete(posixpath.join("teacher/shards", s)) for s in shards)
            if done:
                state = f"half done ({done} of {len(shards)} shards committed; the rest run)"
        each = {"CPU": inf.num_cpus_per_actor, **({"GPU": inf.num_gpus_per_actor}
                                                  if inf.num_gpus_per_actor else {}),
                **inf.resources}
        out.append(PlannedStep("teacher", "teacher", state, ["data/corpus"] + teacher_src,
                               f"Ray Data: {_pool(inf)} actor(s) x {json.dumps(each)}, "
                               f"batch {inf.batch_size}", detail))
    else:
        out.append(PlannedStep("teacher", "teacher", "not needed (every stage's targets are "
                               "online)"))

    s = cfg.student
    out.append(PlannedStep("student_init", "student_init", _state(run, "student_init"),
                           teacher_src, "one Ray task (1 CPU)",
                           f"L{s.num_layers}-H{s.hidden_size}, init: {s.init}"
                           + (f", architecture: {s.architecture}" if s.architecture else "")))
    previous = "student_init/model"
    for k, stage in enumerate(cfg.stages):
        rel = stage_plan.stage_folder(k, stage.name)
        state = _state(run, rel)
        step = _checkpoint_step(run, rel) if state.startswith("half") else None
        if step is not None:
            state = f"half done (resumes from the checkpoint at step {step})"
        data_kind = stage_data(stage)
        if data_kind == "labeled":
            src = ["data/labeled/train"]
        elif stage.targets == "online":
            src = ["data/corpus"] + [f"teacher (online, in every worker): {teacher_src[0]}"]
        else:
            src = ["teacher (stored outputs)"]
        total = ""
        if data is not None:
            total = f", {stage_plan.stage_steps(cfg, k, data)} steps"
            if data_kind != "labeled" and cfg.train.early_stop.every_steps > 0:
                total = (f", at most{total[1:]} (held-out loss checked every "
                         f"{cfg.train.early_stop.every_steps})")
        out.append(PlannedStep(
            f"stage {k + 1}: {stage.name}", rel, state, [previous] + src, _training(cfg),
            f"{' + '.join(l.type for l in stage.losses)}; {stage.epochs:g} epoch(s) at batch "
            f"{stage.batch_size}{total}"
            + ("; gradual unfreezing" if stage.unfreeze == "gradual" else "")))
        previous = rel + "/model"
    export_fp = pipeline.export_fingerprint(cfg, steps.inputs)
    out.append(PlannedStep("student", "student", _derived_state(run, "student", export_fp),
                           [previous], "driver", "the Hugging Face folder"))
    e = cfg.eval
    each = {"CPU": e.num_cpus, **({"GPU": e.num_gpus} if e.num_gpus else {})}
    eval_fp = pipeline.eval_fingerprint(cfg, steps.inputs)
    out.append(PlannedStep("eval", "eval", _derived_state(run, "eval", eval_fp),
                           ["student", "teacher (held-out rows)", "data/labeled/dev"],
                           f"one Ray task {json.dumps(each)}"))
    out.append(PlannedStep("report", "report.md", "to run", ["every step's marker"], "driver",
                           "report.json, report.md, loss_curves.png, speed_size.png"))
    return run, out


def describe(run: RunFolder, steps: list[PlannedStep]) -> str:
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
    lines += ["", f"[xdistil] {len(todo)} step(s) would run: {', '.join(todo)}"]
    return "\n".join(lines)


def dry_run(cfg: Config) -> list[PlannedStep]:
    run, steps = plan(cfg)
    print(describe(run, steps), flush=True)
    return steps
