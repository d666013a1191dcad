"""Step ``student``: the final student as a Hugging Face folder (config, safetensors, tokenizer)
that the task's Auto class (``AutoModelForSequenceClassification``,
``AutoModelForTokenClassification``, or ``AutoModel`` for a plain encoder) and
``transformers.pipeline`` load; with ``export.onnx``, its ONNX Runtime copies in ``onnx/``
(fp32 and int8: :mod:`xdistil_ray.export.onnx_model`)."""

from __future__ import annotations

import posixpath
import tempfile

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.run import layout
from xdistil_ray.run.markers import ModelMarker
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Planned, Step


STEP = layout.STUDENT
VERSION = 2
"""What the folder holds (2: the ONNX copies); a student exported by an older version is
exported again."""


def run_step(run: RunFolder, final_stage: str, tokenizer_path: str, label_names: list[str],
             fingerprint: dict, task: str = "sentence", rel: str = STEP,
             onnx_opset: int | None = None, tokenizer_rel: str = "") -> ModelMarker:
    """Copies the last stage's weights with the tokenizer (the teacher's at ``tokenizer_path``,
    or the trimmed one the run holds at ``tokenizer_rel``) and label names (and, given
    ``onnx_opset``, exports them for ONNX Runtime); commits ``rel`` (``student/``)."""
    from xdistil_ray.modeling import models

    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer_rel:
            tokenizer_path = run.download(tokenizer_rel, f"{tmp}/tokenizer", "model")
        model = models.load_model(run.download(final_stage, f"{tmp}/final", "model"), task)
        if label_names and task_of(task).head:
            model.config.id2label = dict(enumerate(label_names))
            model.config.label2id = {name: i for i, name in enumerate(label_names)}
        models.save_pretrained(model, models.load_tokenizer(tokenizer_path), f"{tmp}/student")
        if onnx_opset is not None:
            from xdistil_ray.export import onnx_model

            onnx_model.export(model, f"{tmp}/student/{onnx_model.FOLDER}", task, opset=onnx_opset)
        run.delete(rel)
        files = run.upload(f"{tmp}/student", rel)
    return run.commit(rel, ModelMarker(files=files, params=models.num_params(model),
                                       fingerprint=fingerprint))


class ExportStep(Step):
    """``student/``: the last stage's student as a Hugging Face folder (and ONNX copies)."""

    name = folder = STEP
    marker_kind = ModelMarker
    derived = True

    def fingerprint(self, ctx: Context) -> dict:
        """The last stage's fields, the export settings and this code's version."""
        from xdistil_ray.distill.step import stage_keys

        return {**ctx.fingerprint(*stage_keys(len(ctx.cfg.stages) - 1)),
                **ctx.fingerprint("export"), "export.version": VERSION}

    def run(self, ctx: Context, fp: dict) -> ModelMarker:
        cfg = ctx.cfg
        return run_step(ctx.run, _final_stage(ctx), ctx.inputs.teacher_path, ctx.label_names,
                        fp, task=cfg.task, rel=self.where(ctx),
                        onnx_opset=cfg.export.opset if cfg.export.onnx else None,
                        tokenizer_rel=_trimmed_tokenizer(ctx))

    def plan(self, ctx: Context) -> list[Planned]:
        return [Planned(self.name, self.where(ctx), self.state(ctx), [_final_stage(ctx) + "/model"],
                        "driver", "the Hugging Face folder")]


def _trimmed_tokenizer(ctx: Context) -> str:
    """``student_init/`` where it holds a trimmed vocabulary's tokenizer, else ""."""
    if ctx.init_marker is None or not ctx.init_marker.vocab:
        return ""
    return posixpath.join(ctx.prefix, layout.STUDENT_INIT)


def _final_stage(ctx: Context) -> str:
    from xdistil_ray.distill.stage_plan import stage_folder

    return stage_folder(len(ctx.cfg.stages) - 1, ctx.cfg.stages[-1].name, ctx.prefix)
