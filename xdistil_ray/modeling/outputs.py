"""The teacher's outputs as the run stores them, and the label positions no loss counts.

Teacher inference writes these columns per shard (fp16); training batches, the dev evaluation
and the held-out checks read them back.
"""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = -100
"""Label of positions that take no part in the loss (padding, special tokens, later sub-words)."""


STORED_COLUMNS = {"logits": "teacher_logits", "hidden": "teacher_hidden"}
"""Stored teacher outputs (teacher inference columns) -> batch keys."""
TOPK_COLUMNS = ("logits_topk", "logits_index", "logits_rest")
"""With ``teacher.inference.top_k``: the k largest logits (fp16), their label indices (int32)
and the log-sum-exp of all other logits (fp16), stored instead of ``logits``."""


def dense_logits(values, index, rest, num_labels: int) -> np.ndarray:
    """Top-k logits back to [N, num_labels]: the k stored ones exact, every other label at
    ``rest - log(num_labels - k)``, so that the others share the teacher's remaining probability
    mass evenly (softmax of the result = the teacher's top-k probabilities exactly)."""
    values = np.asarray([np.asarray(v, dtype=np.float32) for v in values]).reshape(len(rest), -1)
    index = np.asarray([np.asarray(i, dtype=np.int64) for i in index]).reshape(len(rest), -1)
    k = values.shape[1]
    fill = np.asarray(rest, dtype=np.float32) - np.float32(np.log(max(1, num_labels - k)))
    out = np.repeat(fill[:, None], num_labels, axis=1)
    np.put_along_axis(out, index, values, axis=1)
    return out


def with_dense_logits(rows: dict, num_labels: int) -> dict:
    """``rows`` (numpy batch or column lists) with stored top-k columns turned into ``logits``."""
    if TOPK_COLUMNS[0] not in rows:
        return rows
    rows = dict(rows)
    parts = [rows.pop(c) for c in TOPK_COLUMNS]
    rows["logits"] = dense_logits(*parts, num_labels)
    return rows
