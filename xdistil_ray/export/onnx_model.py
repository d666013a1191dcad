"""The student for ONNX Runtime: ``student/onnx/model.onnx`` (fp32) and
``student/onnx/model_quantized.onnx`` (int8 weights, dynamic quantization), the names that
Optimum's ``ORTModelFor...`` classes and transformers.js look for.

Exported with PyTorch's ONNX exporter (``dynamo=True``; the TorchScript one is deprecated) at
opset 18, which ONNX Runtime runs on CPU and CUDA, with dynamic batch and sequence axes. Inputs
are ``input_ids``, ``attention_mask`` and, for families with token types, ``token_type_ids``
(int64); outputs are named as Optimum names them: ``logits`` (sentence, pair and token tasks),
``start_logits`` / ``end_logits`` (extractive QA), ``last_hidden_state`` (a plain encoder). An
export whose outputs differ from PyTorch's beyond :data:`EXPORT_TOLERANCE` of their spread is
refused rather than shipped.

The packages (``onnx``, ``onnxscript``, ``onnxruntime``) are the ``onnx`` extra, which
``scripts/setup.sh`` installs; without them ``export.onnx: true`` is refused before any work.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time

import numpy as np
import torch
from torch import nn

from xdistil_ray.config import extras

EXTRA = "onnx"
FOLDER = "onnx"
FP32 = "model.onnx"
INT8 = "model_quantized.onnx"
VARIANTS = {"fp32": FP32, "int8": INT8}
EXPORT_TOLERANCE = 1e-3
"""Largest difference of the exported model's outputs from PyTorch's, as a share of the
outputs' spread, on the export's check batch (measured on tiny BERT: 2e-7 of it)."""


def output_names(task: str) -> list[str]:
    return {"qa": ["start_logits", "end_logits"],
            "none": ["last_hidden_state"]}.get(task, ["logits"])


class _Named(nn.Module):
    """The model with explicit tensor inputs and a tuple of named outputs (what the exporter
    traces)."""

    def __init__(self, model: nn.Module, names: list[str], token_types: bool):
        super().__init__()
        self.model, self.names, self.token_types = model, names, token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.token_types:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs)
        return tuple(out[name] for name in self.names)


def _check_batch(vocab_size: int, token_types: bool, type_vocab_size: int = 2
                 ) -> dict[str, torch.Tensor]:
    """Two rows of different lengths (padding in one), two segments where the model has two
    token types (XLM-R and RoBERTa checkpoints take token_type_ids but have one type)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(6, vocab_size), (2, 12), generator=gen)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        second = 1 if type_vocab_size > 1 else 0
        batch["token_type_ids"] = (second * (torch.arange(12) >= 6)).long().expand(2, 12) \
            .contiguous()
    return batch


def export(model: nn.Module, folder: str, task: str, *, opset: int = 18,
           quantize: bool = True) -> list[str]:
    """Writes ``folder/model.onnx`` (and ``model_quantized.onnx``); returns the file names.
    Raises RuntimeError if the export's outputs differ from PyTorch's."""
    from xdistil_ray.modeling import families

    extras.require(EXTRA)
    model = model.eval().float()
    token_types = families.family_of(model.config).token_types
    names = output_names(task)
    wrapped = _Named(model, names, token_types)
    batch = _check_batch(model.config.vocab_size, token_types,
                         getattr(model.config, "type_vocab_size", 2) or 1)
    inputs = list(batch)
    batch_dim, seq_dim = torch.export.Dim("batch"), torch.export.Dim("sequence")
    os.makedirs(folder, exist_ok=True)
    fp32 = os.path.join(folder, FP32)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporter's progress
        program = torch.onnx.export(
            wrapped, (), kwargs=batch, input_names=inputs, output_names=names,
            dynamic_shapes={k: {0: batch_dim, 1: seq_dim} for k in inputs},
            opset_version=opset, dynamo=True, external_data=False)
        program.save(fp32)
        expected = [t.numpy() for t in wrapped(**batch)]
    _verify(fp32, batch, expected, names)
    files = [FP32]
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(fp32, os.path.join(folder, INT8), weight_type=QuantType.QInt8)
        files.append(INT8)
    return files


def _verify(path: str, batch: dict, expected: list[np.ndarray], names: list[str]) -> None:
    got = Session(path).run({k: v.numpy() for k, v in batch.items()})
    for name, want in zip(names, expected):
        spread = float(np.abs(want - want.mean(0)).max()) or 1.0
        diff = float(np.abs(got[name] - want).max()) / spread
        if not diff <= EXPORT_TOLERANCE:
            raise RuntimeError(f"the ONNX export's {name} differ from PyTorch's by {diff:.2e} "
                               f"of their spread (tolerance {EXPORT_TOLERANCE:g}): not shipped")


class Session:
    """An ONNX Runtime session of an exported student (CPU; CUDA first where this ONNX Runtime
    build has it), fed from int token batches."""

    def __init__(self, path: str, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(path, options, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.path = path

    def run(self, batch: dict) -> dict[str, np.ndarray]:
        """Outputs by name; token types default to zeros (one segment), as in PyTorch."""
        ids = np.asarray(batch["input_ids"])
        feed = {k: np.asarray(batch[k] if k in batch else np.zeros_like(ids), dtype=np.int64)
                for k in self.inputs}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))

    def logits(self, batch: dict) -> np.ndarray | None:
        """The task's logits as :func:`xdistil_ray.modeling.models.task_logits` gives them (QA: start
        and end stacked last); None for a plain encoder."""
        out = self.run(batch)
        if "start_logits" in out:
            return np.stack([out["start_logits"], out["end_logits"]], axis=-1)
        return out.get("logits")


def predictions(session: Session, batches) -> list[np.ndarray] | None:
    """Per-row predictions over ``batches`` (dicts of [B, T] int arrays, with
    ``attention_mask``), as ``modeling.scoring.run_model`` gives them: logits [C], or [T, C] over
    the real tokens for per-token tasks."""
    preds: list[np.ndarray] = []
    for batch in batches:
        logits = session.logits(batch)
        if logits is None:
            return None
        if logits.ndim == 3:
            preds.extend(l[: int(n)] for l, n in zip(logits, np.asarray(batch["attention_mask"])
                                                      .sum(1)))
        else:
            preds.extend(logits)
    return preds


def measure_speed(session: Session, single: list[dict], batched: dict, repeats: int) -> dict:
    """Latency at batch 1 (median over ``single``, one sentence each, ``repeats`` of them) and
    throughput (sentences per second) of ``batched`` (median of ``repeats`` runs)."""
    def timed(batch: dict) -> float:
        t0 = time.perf_counter()
        session.run(batch)
        return time.perf_counter() - t0

    timed(single[0]), timed(batched)  # warm-up
    latency = statistics.median(timed(single[i % len(single)]) for i in range(repeats))
    rows = len(batched["input_ids"])
    return {"latency_ms": 1000 * latency,
            "throughput": rows / statistics.median(timed(batched) for _ in range(repeats)),
            "disk_bytes": os.path.getsize(session.path)}
