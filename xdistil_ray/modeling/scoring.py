"""A model run over rows and its predictions scored: the dev scores that the eval step reports
and that validation during training checks, and the rows they read from a run folder.

Pure of Ray; one forward pass per batch, on the model's device.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.modeling.batches import pad_batch
from xdistil_ray.modeling.models import model_inputs, task_logits
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.tasks import metrics
from xdistil_ray.tasks import qa

DEV_COLUMNS = ["input_ids", "token_type_ids", "label", "word_ids", "tags", "example", "context",
               "offset_start", "offset_end", "answers"]
"""What dev scores read of a dev set (those its task has)."""


def read_rows(run: RunFolder, paths: list[str], columns: list[str], limit: int,
              heldout_only: bool) -> dict[str, list]:
    """Up to ``limit`` rows of ``columns`` (those the files have) from committed parquet files,
    streamed file by file."""
    out: dict[str, list] = {}
    for path in paths:
        with run.fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            present = [c for c in columns if c in pf.schema_arrow.names]
            table = pf.read(columns=present + (["heldout"] if heldout_only else []))
        if heldout_only:
            table = table.filter(table.column("heldout"))
        for c in present:
            out.setdefault(c, []).extend(table.column(c).to_pylist())
        if len(out.get(columns[0], [])) >= limit:
            break
    return {c: v[:limit] for c, v in out.items()}


def padded_batch(rows: dict, start: int, stop: int, pad_id: int, device="cpu") -> dict:
    """Rows ``start:stop`` of ``rows`` padded into model inputs on ``device``."""
    part = {k: rows[k][start:stop] for k in ("input_ids", "token_type_ids") if k in rows}
    return {k: v.to(device) for k, v in pad_batch(part, pad_id, None).items()}


def pooling(task: str) -> str:
    """The sentence representation compared with the teacher's (:attr:`Task.pooling`)."""
    return task_of(task).pooling


@torch.inference_mode()
def run_model(model, rows: dict, pool: str, batch_size: int = 128):
    """One pass over ``rows``: per-row predictions (logits [C], or [T, C] over real tokens for
    token tasks; None for a plain encoder) and the last layer's sentence representations
    [N, H], on the model's device (a training worker's GPU, in bf16, scores its dev set)."""
    pad_id = model.config.pad_token_id or 0
    device = next(model.parameters()).device
    preds: list[np.ndarray] | None = []
    reps = []
    for start in range(0, len(rows["input_ids"]), batch_size):
        batch = padded_batch(rows, start, start + batch_size, pad_id, device)
        result = model(**model_inputs(model, batch), output_hidden_states=True)
        mask = batch["attention_mask"]
        states = result.hidden_states[-1].float()
        if pool == "cls":
            reps.append(states[:, 0].cpu().numpy())
        else:
            reps.append(((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
                        .cpu().numpy())
        logits = task_logits(result)
        if logits is None:
            preds = None
        elif logits.dim() == 3:
            preds.extend(l[: int(n)].float().cpu().numpy() for l, n in zip(logits, mask.sum(1)))
        else:
            preds.extend(logits.float().cpu().numpy())
    width = model.config.hidden_size
    return preds, (np.concatenate(reps) if reps else np.zeros((0, width), np.float32))


def word_predictions(token_logits: np.ndarray, word_ids: list[int]) -> list[int]:
    """Token-level logits [T, C] -> one prediction per word, from the word's first sub-word."""
    preds, previous = [], -1
    for t, w in enumerate(word_ids):
        if w >= 0 and w != previous:
            preds.append(int(token_logits[t].argmax()))
        previous = w
    return preds


def qa_answers(preds: list[np.ndarray], rows: dict, windows: qa.WindowSettings) -> dict:
    """Each question's (``example``'s) best answer over its windows' [T, 2] start/end logits
    (CLS first in every window, as every supported family's tokenizer puts it)."""
    by_example: dict = {}
    for i, example in enumerate(rows["example"]):
        by_example.setdefault(example, []).append(i)
    return {example: qa.best_answer(
        [{"start_logits": preds[i][:, 0], "end_logits": preds[i][:, 1], "cls": 0,
          "offset_start": rows["offset_start"][i], "offset_end": rows["offset_end"][i]}
         for i in idx], rows["context"][idx[0]], windows)
        for example, idx in by_example.items()}


def dev_scores(task: str, model, dev: dict, label_names: list[str],
               windows: qa.WindowSettings | None = None) -> dict:
    """Accuracy and macro-F1 (sentence, pair), word accuracy and entity-level F1 (token), or
    SQuAD's exact match and F1 (qa; with unanswerable questions, HasAns / NoAns too)."""
    preds, _ = run_model(model, dev, pooling(task))
    return scores_of(task, preds, dev, label_names, windows)


def scores_of(task: str, preds: list[np.ndarray], dev: dict, label_names: list[str],
              windows: qa.WindowSettings | None = None) -> dict:
    """:func:`dev_scores` from per-row predictions (:func:`run_model`'s, or ONNX Runtime's)."""
    shape = task_of(task)
    if shape.spans:
        answers = qa_answers(preds, dev, windows)
        golds = {}
        for example, gold in zip(dev["example"], dev["answers"]):
            golds.setdefault(example, list(gold))
        return qa.squad_scores(answers, golds)
    if shape.per_word:
        pred = [[label_names[i] for i in word_predictions(o, w)]
                for o, w in zip(preds, dev["word_ids"])]
        # words cut off by truncation have no prediction and are not scored
        gold = [list(tags)[: len(p)] for p, tags in zip(pred, dev["tags"])]
        return metrics.entity_scores(gold, pred)
    gold = np.array([label_names.index(str(v)) for v in dev["label"]])
    return metrics.classification_scores(gold, np.stack(preds).argmax(-1), len(label_names))
