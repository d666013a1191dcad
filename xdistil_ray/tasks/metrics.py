"""Evaluation figures, pure numpy: fidelity to the teacher, task scores, representation
similarity. No models, no Ray; :mod:`xdistil_ray.evaluate.step` feeds them."""

from __future__ import annotations

import numpy as np


def _positions(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Rows of logits ([C] per sentence, or [T, C] per token) as one [positions, C] matrix."""
    if not rows:
        return np.zeros((0, width), dtype=np.float64)
    return np.concatenate([np.asarray(r, dtype=np.float64).reshape(-1, width) for r in rows])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def agreement(teacher: list[np.ndarray], student: list[np.ndarray], num_labels: int) -> float:
    """Share of positions (sentences, or real tokens) where the argmaxes agree."""
    t, s = _positions(teacher, num_labels), _positions(student, num_labels)
    return float((t.argmax(-1) == s.argmax(-1)).mean()) if len(t) else 0.0


def kl_divergence(teacher: list[np.ndarray], student: list[np.ndarray], num_labels: int) -> float:
    """Mean KL(teacher || student) of the predicted distributions (temperature 1), in nats."""
    t = _log_softmax(_positions(teacher, num_labels))
    s = _log_softmax(_positions(student, num_labels))
    return float((np.exp(t) * (t - s)).sum(-1).mean()) if len(t) else 0.0


def mapped_cosine(student: np.ndarray, teacher: np.ndarray, ridge: float = 1e-3) -> float | None:
    """Cosine of hidden states of different widths: a linear map (with bias, ridge-regularized)
    from the student's [N, Ds] to the teacher's [N, Dt] is fitted on the even rows, and the mean
    cosine between mapped and true teacher states is measured on the odd rows (held out from the
    fit). None with fewer than 4 rows."""
    if len(student) < 4:
        return None
    s = np.asarray(student, dtype=np.float64)
    t = np.asarray(teacher, dtype=np.float64)
    fit_s, fit_t, test_s, test_t = s[0::2], t[0::2], s[1::2], t[1::2]
    s_mean, t_mean = fit_s.mean(0), fit_t.mean(0)
    a = fit_s - s_mean
    gram = a.T @ a
    gram += np.eye(len(gram)) * ridge * max(np.trace(gram) / len(gram), 1e-12)
    w = np.linalg.solve(gram, a.T @ (fit_t - t_mean))
    mapped = (test_s - s_mean) @ w + t_mean
    norms = np.linalg.norm(mapped, axis=1) * np.linalg.norm(test_t, axis=1)
    return float(((mapped * test_t).sum(1) / np.maximum(norms, 1e-12)).mean())


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between representations [N, D1] and [N, D2] (width-independent, 1 = same up
    to rotation and scale)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def classification_scores(gold: np.ndarray, pred: np.ndarray, num_labels: int) -> dict:
    """Accuracy and macro-F1 (the unweighted mean of each label's F1, over labels present in
    the gold or the predictions)."""
    gold, pred = np.asarray(gold), np.asarray(pred)
    f1s = []
    for label in range(num_labels):
        tp = float(((gold == label) & (pred == label)).sum())
        positives, predicted = float((gold == label).sum()), float((pred == label).sum())
        if positives == 0 and predicted == 0:
            continue
        f1s.append(2 * tp / (positives + predicted))
    return {"accuracy": float((gold == pred).mean()) if len(gold) else 0.0,
            "macro_f1": float(np.mean(f1s)) if f1s else 0.0}


_PREFIX = {"B": "B", "I": "I", "E": "E", "S": "S", "L": "E", "U": "S"}
"""Tag prefixes of IOB1 / IOB2, IOBES and BILOU (L = E: last; U = S: a single word)."""


def _split(tag: str) -> tuple[str, str]:
    """(prefix, type) of a tag; ``O`` and tags of no known scheme are ``("O", "")``."""
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in _PREFIX:
        return _PREFIX[prefix], kind
    return "O", ""


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entities as (type, first word, last word + 1), read as conlleval and seqeval's default
    mode read them, in IOB1 / IOB2, IOBES and BILOU: an entity starts at B-X or S-X, or at an
    I-X / E-X that does not continue an X; it ends after E-X or S-X, and before B-, S-, O or
    another type."""
    spans, start, prev, prev_kind = set(), None, "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = _split(tag)
        ends = start is not None and (prev in ("E", "S") or prefix in ("B", "S", "O")
                                      or kind != prev_kind)
        if ends:
            spans.add((prev_kind, start, i))
            start = None
        if prefix != "O" and (start is None or prefix in ("B", "S")):
            start = i
        prev, prev_kind = prefix, kind
    return spans


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Word accuracy, and entity-level precision, recall and F1 (exact type and span)."""
    words = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        gs, ps = entity_spans(g), entity_spans(p)
        tp, n_gold, n_pred = tp + len(gs & ps), n_gold + len(gs), n_pred + len(ps)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"word_accuracy": correct / words if words else 0.0, "entity_precision": precision,
            "entity_recall": recall, "entity_f1": f1}
