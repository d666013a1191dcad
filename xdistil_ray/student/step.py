"""Step ``student_init``: the student's starting weights (from the teacher, at random, or a
pretrained small model).

Runs as a Ray task so that the driver never loads the teacher (a BERT-large teacher does not
belong in a small head node's memory).
"""

from __future__ import annotations

import tempfile

from xdistil_ray.run import layout
from xdistil_ray.run.markers import InitMarker
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Planned, Step


STEP = layout.STUDENT_INIT


def build_and_save(run: RunFolder, teacher_path: str, teacher_in_run: bool, *, rel: str, task: str,
                   num_layers: int, hidden_size: int, num_heads: int, intermediate_size: int,
                   init: str, teacher_layers: list[int], pretrained: str, seed: int,
                   architecture: str = "", vocab: str = "teacher", transfer: tuple = (),
                   labeled: tuple = (), dev: tuple = ()) -> dict:
    """Builds the student (see :func:`xdistil_ray.modeling.models.build_student`) and writes its Hugging
    Face folder to the run; with ``vocab: data`` its vocabulary trimmed to the tokens of the
    ``transfer`` and ``labeled`` files (:func:`xdistil_ray.student.vocab.trim`), its tokenizer
    beside it."""
    from xdistil_ray.modeling import families
    from xdistil_ray.modeling import models

    with tempfile.TemporaryDirectory() as tmp:
        local = run.download(teacher_path, f"{tmp}/teacher", "model") if teacher_in_run else teacher_path
        teacher = models.load_model(local, task)
        student = models.build_student(teacher, num_layers=num_layers, hidden_size=hidden_size,
                                       num_heads=num_heads, intermediate_size=intermediate_size,
                                       init=init, seed=seed, task=task,
                                       teacher_layers=teacher_layers, pretrained=pretrained,
                                       architecture=architecture)
        trimmed = {}
        if vocab == "data":
            from xdistil_ray.student import vocab as vocab_mod

            tokenizer, trimmed = vocab_mod.trim(
                run, student, models.load_tokenizer(local), transfer=list(transfer),
                labeled=list(labeled), dev=list(dev), folder=f"{tmp}/student")
        models.save_pretrained(student, None, f"{tmp}/student")
        files = run.upload(f"{tmp}/student", f"{rel}/model")
        files = {f"model/{name}": size for name, size in files.items()}
        return {"files": files, "teacher_params": models.num_params(teacher),
                "student_params": models.num_params(student),
                "teacher_hidden": teacher.config.hidden_size,
                "student_architecture": student.config.model_type,
                "student_shape": families.shape_of(student.config), "vocab": trimmed}


def run_step(run: RunFolder, *, fingerprint: dict, rel: str = STEP, **kwargs) -> InitMarker:
    """Runs :func:`build_and_save` on a Ray worker and commits ``rel`` (``student_init/``)."""
    import ray

    info = ray.get(ray.remote(num_cpus=1)(build_and_save).remote(run, rel=rel, **kwargs))
    return run.commit(rel, InitMarker(fingerprint=fingerprint, **info))


class StudentInitStep(Step):
    """``student_init/``: the student's starting weights, from the teacher the run reads."""

    name = folder = STEP
    marker_kind = InitMarker
    keys = ("student", "task", "teacher.model", "teacher.finetune", "labeled", "seed")

    def fingerprint(self, ctx: Context) -> dict:
        """A vocabulary trimmed to the data depends on the corpus too."""
        if ctx.cfg.student.vocab == "data":
            return ctx.fingerprint(*self.keys, "corpus")
        return super().fingerprint(ctx)

    def run(self, ctx: Context, fp: dict) -> InitMarker:
        cfg, s = ctx.cfg, ctx.cfg.student
        return run_step(
            ctx.run, rel=self.where(ctx), teacher_path=ctx.teacher.path, teacher_in_run=ctx.teacher.in_run,
            task=cfg.task, num_layers=s.num_layers, hidden_size=s.hidden_size,
            num_heads=s.num_heads, intermediate_size=s.intermediate_size, init=s.init,
            teacher_layers=s.teacher_layers, pretrained=s.pretrained,
            architecture=s.architecture, seed=cfg.seed, fingerprint=fp, vocab=s.vocab,
            **(_trim_sources(ctx) if s.vocab == "data" else {}))

    def use(self, ctx: Context, marker: InitMarker | None) -> None:
        ctx.init_marker = marker

    def plan(self, ctx: Context) -> list[Planned]:
        s = ctx.cfg.student
        return [Planned(self.name, self.where(ctx), self.state(ctx), ctx.teacher_reads(),
                        "one Ray task (1 CPU)",
                        f"L{s.num_layers}-H{s.hidden_size}, init: {s.init}"
                        + (f", architecture: {s.architecture}" if s.architecture else "")
                        + (", vocabulary trimmed to the data" if s.vocab == "data" else ""))]


def _trim_sources(ctx: Context) -> dict:
    """The files a trimmed vocabulary is counted (and checked) on."""
    sources = ctx.sources
    return {"transfer": sources.corpus, "labeled": sources.labeled_train,
            "dev": sources.labeled_dev}
