"""The distillation pipeline: its steps in order, run against one run folder.

Each step is one object (:mod:`xdistil_ray.run.steps`), defined beside its work: ``data``
(:mod:`xdistil_ray.data.step`), ``teacher_finetune`` (:mod:`xdistil_ray.teacher.finetune`),
``teacher`` (:mod:`xdistil_ray.teacher.step`), ``student_init``
(:mod:`xdistil_ray.student.step`), the training stages (:mod:`xdistil_ray.distill.step`),
``student`` (:mod:`xdistil_ray.export.step`), ``eval`` (:mod:`xdistil_ray.evaluate.step`) and the
report (:mod:`xdistil_ray.report.step`). :func:`steps` is their one list: the run, the
``--dry-run`` (:mod:`xdistil_ray.pipelines.dry_run`) and the check for changed settings iterate
it. Steps talk to each other only through the run folder and what the :class:`DistillContext`
hands on from one step's marker to the next.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time

from xdistil_ray import config as config_mod
from xdistil_ray.config import EMBEDDED
from xdistil_ray.config import Config
from xdistil_ray.observe import console
from xdistil_ray.pipelines.ray_start import init_ray
from xdistil_ray.run import identity
from xdistil_ray.run import layout
from xdistil_ray.errors import ConfigError
from xdistil_ray.run.markers import (DataMarker, EvalMarker, InitMarker, ModelMarker,
                                     StageMarker, TeacherMarker)
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Runner, Step
from xdistil_ray.tasks.shapes import task_of

log = logging.getLogger(__name__)


def steps(cfg: Config | None = None) -> list[Step]:
    """The pipeline's steps, in the order they run: with ``cfg.candidates``, a sweep's
    (:mod:`xdistil_ray.pipelines.sweep`): the student's steps once per candidate, then the
    chosen one copied as ``student/``."""
    from xdistil_ray.data.step import DataStep
    from xdistil_ray.report.step import ReportStep
    from xdistil_ray.teacher.finetune import TeacherFinetuneStep
    from xdistil_ray.teacher.step import TeacherStep

    from xdistil_ray.pipelines.sweep import CandidatesStep, ChosenStep, student_steps

    teacher = [DataStep(), TeacherFinetuneStep(), TeacherStep()]
    if cfg is not None and cfg.candidates:
        return teacher + [CandidatesStep(), ChosenStep(), ReportStep()]
    return teacher + student_steps() + [ReportStep()]


class DistillContext(Context):
    """What the pipeline's steps hand on: the resolved inputs, then each step's marker."""

    def __init__(self, cfg: Config, run: RunFolder, inputs, dry: bool = False):
        flat = config_mod.flatten(config_mod.to_dict(cfg))
        defaults = config_mod.flatten(config_mod.to_dict(Config()))
        runner = Runner(run, identity.of_inputs(cfg, inputs), defaults,
                        after_step=console.sync_logs)
        super().__init__(cfg, run, runner, flat, dry)
        self.inputs = inputs
        """:class:`xdistil_ray.pipelines.inputs.Inputs`."""
        self.started = time.time()
        self.data: DataMarker | None = None
        """The data step's marker, its label names in the teacher's head order."""
        self.teacher = None
        """Where the teacher is (:class:`xdistil_ray.distill.stage_plan.Teacher`)."""
        self.teacher_finetune: StageMarker | None = None
        self.teacher_marker: TeacherMarker | None = None
        self.init_marker: InitMarker | None = None
        self.stage_markers: list[StageMarker] = []
        self.eval_marker: EvalMarker | None = None
        self.candidates: dict[str, DistillContext] = {}
        """A sweep's candidates, each its own context (its config, its folder, its markers)."""
        self.choice: ModelMarker | None = None
        """A sweep's ``student/`` marker: which candidate was chosen, and why."""
        self.report: dict | None = None

    def candidate_contexts(self) -> dict[str, "DistillContext"]:
        """A context per candidate of a sweep, from what this one holds now: the candidate's
        config (:func:`~xdistil_ray.config.candidate_config`), its folder, its model shapes
        checked against the teacher (a candidate that cannot be built from it is refused here,
        before any work), no markers of its own yet."""
        from xdistil_ray.pipelines.inputs import check_models

        out = {}
        for cand in self.cfg.candidates:
            c = copy.copy(self)
            c.cfg = config_mod.candidate_config(self.cfg, cand)
            c.flat = config_mod.flatten(config_mod.to_dict(c.cfg))
            c.prefix = layout.candidate_folder(cand.name)
            try:
                shapes = check_models(c.cfg, self.inputs.teacher_path)
            except ConfigError as e:
                raise ConfigError(f"candidates: {cand.name!r}: {e}") from None
            c.inputs = dataclasses.replace(self.inputs, shapes=shapes)
            c.init_marker, c.stage_markers, c.eval_marker = None, [], None
            c.candidates, c.choice = {}, None
            out[cand.name] = c
        return out

    def chosen(self) -> "DistillContext":
        """The context whose student the run exports: the chosen candidate's in a sweep."""
        if self.choice is not None and self.choice.candidate in self.candidates:
            return self.candidates[self.choice.candidate]
        return self

    def fingerprint(self, *sections: str) -> dict:
        """Every step that depends on the task depends on ``qa`` in a QA run (the windows)."""
        if task_of(self.cfg.task).spans and "task" in sections:
            sections += ("qa",)
        return super().fingerprint(*sections)

    @property
    def label_names(self) -> list[str] | None:
        return None if self.data is None else self.data.label_names

    @property
    def sources(self):
        """The committed files the stages and eval read."""
        from xdistil_ray.distill.stage_plan import Sources

        return Sources.of(self.run, self.data, self.teacher_marker)

    def set_data(self, marker: DataMarker | None) -> None:
        """Takes the data step's marker: checks it can feed the stages, and orders its labels
        as the teacher's head does."""
        from xdistil_ray.modeling.models import teacher_label_order
        from xdistil_ray.pipelines.inputs import check_data

        if marker is None:
            return
        check_data(self.cfg, marker)
        names = teacher_label_order(self.inputs.teacher_path, marker.label_names, self.cfg.task)
        self.data = dataclasses.replace(
            marker, labeled=dataclasses.replace(marker.labeled, label_names=names))

    def teacher_reads(self) -> list[str]:
        """Where the teacher comes from, as ``--dry-run`` names it: the run's fine-tuned one,
        or ``teacher.model``."""
        if self.teacher is not None and self.teacher.in_run:
            return [f"{layout.TEACHER_FINETUNE}/{layout.MODEL}"]
        model = self.cfg.teacher.model
        return [f"teacher.model: {model}"
                + (f" ({self.inputs.teacher_path})" if model == EMBEDDED else "")]

    def start_ray(self) -> None:
        if not self.dry:
            init_ray(self.cfg)


def context(cfg: Config, run: RunFolder, dry: bool = False) -> DistillContext:
    """The run's context, its inputs resolved and checked (a dry run generates nothing)."""
    from xdistil_ray.pipelines.inputs import resolve_inputs

    return DistillContext(cfg, run, resolve_inputs(cfg, run, generate=not dry), dry)


def run(cfg: Config, take_over: bool = False) -> dict:
    """Runs the whole pipeline for ``cfg``, holding the run folder's lease (``take_over``:
    from a driver that is gone); returns the report."""
    from xdistil_ray.run import lease
    from xdistil_ray.run import storage

    started = time.time()
    folder = RunFolder(cfg.output, cfg.storage_options())
    storage.check_access(folder.uri, folder.options)  # seconds, before any compute
    with lease.hold(folder, take_over):
        ctx = context(cfg, folder)
        ctx.started = started
        log.info(f"run folder: {folder.uri}")
        pipeline = steps(cfg)
        ctx.runner.refuse_changes(pipeline, ctx)
        folder.write_text(layout.CONFIG, config_mod.dump_yaml(cfg))
        console.attach_run(folder)
        ctx.runner.run_all(pipeline, ctx)
        return ctx.report
