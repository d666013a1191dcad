"""Step ``teacher_finetune``: the teacher gets its task head when it brings none (or one of
another size): a labels-only stage on the labeled training rows, trained with the stages'
machinery (Ray Train + DeepSpeed, checkpoints, held-out checks), committed as
``teacher_finetune/model``. Later steps then read the teacher from the run folder."""

from __future__ import annotations

import dataclasses

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.run import layout
from xdistil_ray.distill import stage_plan
from xdistil_ray.distill.checkpoint import refuse_unresumable
from xdistil_ray.observe import console
from xdistil_ray.run.markers import StageMarker
from xdistil_ray.run.steps import Context, Planned, Step


FOLDER = layout.TEACHER_FINETUNE


class TeacherFinetuneStep(Step):
    name = folder = FOLDER
    marker_kind = StageMarker
    keys = ("task", "teacher.model", "teacher.finetune", "labeled", "seed")
    resumable = True
    announce = False  # its workers print the stage's start and end

    def not_needed(self, ctx: Context) -> str | None:
        from xdistil_ray.modeling.models import has_task_head

        cfg, path, names = ctx.cfg, ctx.inputs.teacher_path, ctx.label_names
        task = task_of(cfg.task)
        if not task.head:
            return "(task none: a plain encoder)"
        if task.spans and has_task_head(path, None, cfg.task):
            return "(the teacher has a question-answering head)"
        if names is not None and has_task_head(path, len(names), cfg.task):
            return f"(the teacher has a {cfg.task} head for the {len(names)} labels)"
        if names is None and has_task_head(path, None, cfg.task):  # a dry run before data
            return "if the teacher's head matches the training labels (known once data is done)"
        return None

    def check_resumable(self, ctx: Context) -> None:
        t = ctx.cfg.train
        refuse_unresumable(ctx.run, FOLDER, [FOLDER], t.num_workers, t.zero_stage)

    def run(self, ctx: Context, fp: dict) -> StageMarker:
        from xdistil_ray.distill import step as train
        from xdistil_ray.modeling.models import replaced_head

        cfg, run, inputs = ctx.cfg, ctx.run, ctx.inputs
        line = replaced_head(inputs.teacher_path, ctx.label_names, cfg.task)
        if line:
            console.show(line)
        self.check_resumable(ctx)
        spec, files, columns = stage_plan.finetune_plan(
            cfg, ctx.data, stage_plan.Sources.of(run, ctx.data, None), run=run, name=FOLDER,
            init_path=inputs.teacher_path, init_in_run=False, settings=cfg.teacher.finetune,
            tokenizer_path=inputs.teacher_path)
        spec = dataclasses.replace(spec, progress_every_s=cfg.progress_every_s)
        dataset = train.stage_dataset(run, files, columns, None)
        return train.run_stage(run, FOLDER, spec, dataset, train.Scaling.of(cfg), fp)

    def use(self, ctx: Context, marker: StageMarker | None) -> None:
        in_run = not self.not_needed(ctx)
        ctx.teacher = (stage_plan.Teacher(FOLDER, True) if in_run
                       else stage_plan.Teacher(ctx.inputs.teacher_path, False))
        ctx.teacher_finetune = marker

    def plan(self, ctx: Context) -> list[Planned]:
        cfg = ctx.cfg
        why = self.not_needed(ctx)
        state = f"not needed {why}" if why else self.state(ctx)
        return [Planned(self.name, self.folder, state,
                        ctx.teacher_reads() + [stage_plan.LABELED_TRAIN],
                        stage_plan.training_resources(cfg),
                        f"{cfg.teacher.finetune.epochs:g} epoch(s) at batch "
                        f"{cfg.teacher.finetune.batch_size}")]
