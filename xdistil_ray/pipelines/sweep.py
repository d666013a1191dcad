"""A sweep: several candidate students from one teacher pass (``candidates`` in the config).

The data, the teacher fine-tune and the teacher pass run once. Then, one candidate after
another, each runs the student's steps (``student_init``, the stages, ``student``, ``eval``)
in ``candidates/<name>/`` with its own markers, so that a finished candidate is skipped on a
re-run and a new one added to a finished sweep is the only one trained. The config's
``select`` rule then picks one (:mod:`xdistil_ray.report.selection`), copied as the run's
``student/``; the report compares them all.

Candidates run one after another, each on the run's ``train`` resources; running them side by
side (Ray Tune trials, each with its own worker group) is not built yet.
"""

from __future__ import annotations

import logging
import tempfile

from xdistil_ray.run import layout
from xdistil_ray.run.markers import ModelMarker
from xdistil_ray.run.steps import Context, Planned, Step

log = logging.getLogger(__name__)


def student_steps() -> list[Step]:
    """One student's steps, in order: a run's, or each candidate's under its folder."""
    from xdistil_ray.distill.step import StagesStep
    from xdistil_ray.evaluate.step import EvalStep
    from xdistil_ray.export.step import ExportStep
    from xdistil_ray.student.step import StudentInitStep

    return [StudentInitStep(), StagesStep(), ExportStep(), EvalStep()]


class CandidatesStep(Step):
    """``candidates/<name>/``: every candidate's student steps, each skipped where committed."""

    name = "candidates"
    folder = layout.CANDIDATES
    committed = False
    announce = False

    def parts(self, ctx: Context) -> list[tuple[str, dict]]:
        """Every candidate's committed folders (checked for changed settings before any work);
        their derived steps run again instead."""
        return [part for c in ctx.candidate_contexts().values()
                for step in student_steps() if not step.derived for part in step.parts(c)]

    def check_resumable(self, ctx: Context) -> None:
        for c in ctx.candidate_contexts().values():
            for step in student_steps():
                step.check_resumable(c)

    def run(self, ctx: Context, fp: dict) -> dict:
        ctx.candidates = ctx.candidate_contexts()
        for k, (name, c) in enumerate(ctx.candidates.items(), 1):
            s = c.cfg.student
            log.info(f"candidate {k} of {len(ctx.candidates)}: {name} (L{s.num_layers}-"
                     f"H{s.hidden_size}, init: {s.init}) in {c.prefix}/")
            ctx.runner.run_all(student_steps(), c)
        return ctx.candidates

    def plan(self, ctx: Context) -> list[Planned]:
        ctx.candidates = ctx.candidate_contexts()
        out = []
        for name, c in ctx.candidates.items():
            for planned in ctx.runner.plan_all(student_steps(), c):
                planned.name = f"{name}: {planned.name}"
                out.append(planned)
        return out


class ChosenStep(Step):
    """``student/``: the candidate ``select`` picks, copied from its ``candidates/<name>/student``
    folder; chosen again when a candidate or the rule changed."""

    name = "student (chosen)"
    folder = layout.STUDENT
    marker_kind = ModelMarker
    derived = True

    def fingerprint(self, ctx: Context) -> dict:
        """The rule, and every candidate's eval fields (so a new or changed one re-chooses)."""
        from xdistil_ray.evaluate.step import EvalStep

        fp = ctx.fingerprint("select")
        for name, c in ctx.candidate_contexts().items():
            fp.update({f"candidates.{name}.{k}": v for k, v in EvalStep().fingerprint(c).items()})
        return fp

    def run(self, ctx: Context, fp: dict) -> ModelMarker:
        from xdistil_ray.report import selection

        rows = [selection.figures(name, c.eval_marker, c.init_marker)
                for name, c in ctx.candidates.items()]
        choice = selection.choose(rows, ctx.cfg.select)
        log.info(f"{self.folder}: {choice.name}: {choice.reason}")
        source = ctx.candidates[choice.name]
        run = ctx.run
        with tempfile.TemporaryDirectory() as tmp:
            from xdistil_ray.export.step import ExportStep

            run.download(ExportStep().where(source), f"{tmp}/student")
            run.delete(self.folder)
            files = run.upload(f"{tmp}/student", self.folder)
        return run.commit(self.folder, ModelMarker(
            files=files, params=source.eval_marker.size["student_params"],
            candidate=choice.name, reason=choice.reason, met=choice.met, fingerprint=fp))

    def use(self, ctx: Context, marker: ModelMarker | None) -> None:
        ctx.choice = marker

    def plan(self, ctx: Context) -> list[Planned]:
        sel = ctx.cfg.select
        return [Planned(self.name, self.folder, self.state(ctx),
                        [f"{layout.CANDIDATES}/*/eval", f"{layout.CANDIDATES}/*/student"],
                        "driver", f"select.rule: {sel.rule}")]
