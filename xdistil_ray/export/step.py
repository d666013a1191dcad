"""Step ``student``: the final student as a Hugging Face folder (config, safetensors, tokenizer)
that the task's Auto class (``AutoModelForSequenceClassification``,
``AutoModelForTokenClassification``, or ``AutoModel`` for a plain encoder) and
``transformers.pipeline`` load; with ``export.onnx``, its ONNX Runtime copies in ``onnx/``
(fp32 and int8: :mod:`xdistil_ray.export.onnx_model`)."""

from __future__ import annotations

import tempfile

from xdistil_ray.run.runfolder import RunFolder

STEP = "student"
VERSION = 2
"""What the folder holds (2: the ONNX copies); a student exported by an older version is
exported again."""


def run_step(run: RunFolder, final_stage: str, tokenizer_path: str, label_names: list[str],
             fingerprint: dict, task: str = "sentence", rel: str = STEP,
             onnx_opset: int | None = None) -> dict:
    """Copies the last stage's weights with the tokenizer and label names (and, given
    ``onnx_opset``, exports them for ONNX Runtime); commits ``rel`` (``student/``)."""
    from xdistil_ray.modeling import models

    with tempfile.TemporaryDirectory() as tmp:
        model = models.load_model(run.download(final_stage, f"{tmp}/final", "model"), task)
        if label_names and task != "none":
            model.config.id2label = dict(enumerate(label_names))
            model.config.label2id = {name: i for i, name in enumerate(label_names)}
        models.save_pretrained(model, models.load_tokenizer(tokenizer_path), f"{tmp}/student")
        if onnx_opset is not None:
            from xdistil_ray.export import onnx_model

            onnx_model.export(model, f"{tmp}/student/{onnx_model.FOLDER}", task, opset=onnx_opset)
        run.delete(rel)
        files = run.upload(f"{tmp}/student", rel)
    return run.commit(rel, files, params=models.num_params(model), fingerprint=fingerprint)
