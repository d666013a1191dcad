"""Extractive question answering (SQuAD v1.1 / v2.0): rows, windows, answers and scores.

The task's pure parts, as Hugging Face's question-answering examples and the official SQuAD
evaluation script define them:

- rows: ``question``, ``context`` and, labeled, ``answers`` (``{"text": [...],
  "answer_start": [...]}``, the SQuAD / ``datasets`` layout; an empty list is an unanswerable
  SQuAD 2.0 question), from flat records or the official nested ``data/paragraphs/qas`` JSON;
  a bad row is dropped with a reason, never raised;
- windows: a long context split into overlapping windows (question first, ``max_length``
  tokens, ``doc_stride`` tokens shared by neighbours), each with its context's character
  offsets and, labeled, the answer's start/end token (CLS where the window does not hold it);
- answers: the best span of a question across its windows (start + end logit, at most
  ``max_answer_length`` tokens) and its no-answer score (CLS start + end, lowest over windows);
- scores: exact match and F1 against every gold answer after SQuAD's normalization; for v2, the
  no-answer threshold that maximizes F1 on the scored set, and HasAns / NoAns splits.
"""

from __future__ import annotations

import collections
import json
import math
import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from xdistil_ray.config import WindowSettings
from xdistil_ray.tasks import corpus

MISSING_QUESTION = "missing_question"
MISSING_CONTEXT = "missing_context"
MISSING_ANSWERS = "missing_answers"
BAD_ANSWERS = "bad_answers"
ANSWER_MISMATCH = "answer_mismatch"
"""An ``answer_start`` that does not point at the answer's text in the context."""
QUESTION_TOO_LONG = "question_too_long"
"""A question that leaves no room for its context (more than ``doc_stride`` tokens) in a
window of ``max_length`` tokens."""
CONTEXT_TOO_LONG = "context_too_long"
"""A context that takes more than ``max_windows`` windows."""
DEV_QUESTION = "dev_question"
"""A transfer question that is one of the dev set's (held out of the labeled training set when
no dev set is given): never trained on."""
NO_OFFSET = -1
"""Offset of a window token outside the context (question, special tokens)."""




class NotSquad(ValueError):
    """A JSON document that is not in SQuAD's nested layout."""


def squad_rows(doc: dict) -> Iterator[dict]:
    """Flat rows (``id``, ``question``, ``context``, ``answers``) of an official SQuAD JSON
    document (``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``); a question marked
    ``is_impossible`` has no answers. Raises NotSquad when the layout is not SQuAD's."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise NotSquad("not a SQuAD file: no top-level 'data' list of articles")
    for article in doc["data"]:
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise NotSquad("not a SQuAD file: an article without a 'paragraphs' list")
        for paragraph in paragraphs:
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise NotSquad("not a SQuAD file: a paragraph without a 'qas' list")
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                yield {"id": qa.get("id"), "question": qa.get("question"),
                       "context": paragraph.get("context"),
                       "answers": {"text": [a.get("text") for a in answers],
                                   "answer_start": [a.get("answer_start") for a in answers]}
                       if isinstance(answers, list) and all(isinstance(a, dict) for a in answers)
                       else answers}


def clean_row(row: dict, *, labeled: bool, question_column: str = "question",
              context_column: str = "context", answers_column: str = "answers"
              ) -> tuple[dict | None, str]:
    """(clean row, "") or (None, drop reason). The question loses its leading whitespace (as
    Hugging Face's examples do: it only wastes window room); the context is kept as given, so
    that ``answer_start`` offsets keep pointing into it."""
    question, context = row.get(question_column), row.get(context_column)
    if not isinstance(question, str) or not question.strip():
        return None, MISSING_QUESTION
    if not isinstance(context, str) or not context.strip():
        return None, MISSING_CONTEXT
    out = {"question": question.lstrip(), "context": context}
    if not labeled:
        return out, ""
    answers = row.get(answers_column)
    if answers is None:
        return None, MISSING_ANSWERS
    parsed = _answers(answers)
    if parsed is None:
        return None, BAD_ANSWERS
    texts, starts = parsed
    if any(context[s:s + len(t)] != t for t, s in zip(texts, starts)):
        return None, ANSWER_MISMATCH
    out["answers"] = {"text": texts, "answer_start": starts}
    return out, ""


def clean_rows(raw: list, *, source: str, labeled: bool, fits: Callable[[str, str], str],
               question_column: str = "question", context_column: str = "context",
               answers_column: str = "answers") -> dict[str, np.ndarray]:
    """Cleans a batch of QA rows: raw JSON Lines (``source`` ``jsonl``) or dict rows
    (``records``). ``fits``: (question, context) -> why they do not fit the windows, "" when
    they do (:func:`window_problem` with the tokenizer).

    Returns:
        Columns ``question``, ``context``, with ``labeled`` ``answers`` (dicts), ``text`` (the
        question and context joined, for dedup keys), ``reason`` ("" for kept rows; a reason
        of :mod:`xdistil_ray.tasks.corpus` or of this module).
    """
    out: dict[str, list] = {"question": [], "context": [], "text": [], "reason": []}
    if labeled:
        out["answers"] = []
    for item in raw:
        row, reason = _clean_qa_item(item, source, labeled, fits, question_column,
                                     context_column, answers_column)
        row = row or {}
        out["question"].append(row.get("question"))
        out["context"].append(row.get("context"))
        out["text"].append(row["question"] + corpus.PAIR_SEPARATOR + row["context"]
                           if row else None)
        out["reason"].append(reason)
        if labeled:
            out["answers"].append(row.get("answers"))
    return {k: corpus.object_array(v) for k, v in out.items()}


def _clean_qa_item(item: Any, source: str, labeled: bool, fits, question_column,
                   context_column, answers_column) -> tuple[dict | None, str]:
    if source == "jsonl":
        line, reason = corpus.decode_line(bytes(item))
        if reason:
            return None, reason
        if not line.strip():
            return None, corpus.EMPTY if line == "" else corpus.WHITESPACE_ONLY
        try:
            item = json.loads(line)
        except ValueError:
            return None, corpus.BAD_JSON
    if not isinstance(item, dict):
        return None, corpus.BAD_JSON
    for column in (question_column, context_column):
        if isinstance(item.get(column), str) and "\x00" in item[column]:
            return None, corpus.NUL_BYTE
    row, reason = clean_row(item, labeled=labeled, question_column=question_column,
                            context_column=context_column, answers_column=answers_column)
    if reason:
        return None, reason
    reason = fits(row["question"], row["context"])
    return (None, reason) if reason else (row, "")


def _answers(answers) -> tuple[list[str], list[int]] | None:
    if not isinstance(answers, dict):
        return None
    texts, starts = answers.get("text"), answers.get("answer_start")
    if texts is None or starts is None:
        return None
    texts, starts = list(texts), list(starts)  # lists, tuples or numpy arrays (parquet)
    if len(texts) != len(starts):
        return None
    if not all(isinstance(t, str) and t for t in texts):
        return None
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
               for s in starts):
        return None
    return texts, [int(s) for s in starts]


def window_problem(tokenizer, question: str, context: str, settings: WindowSettings) -> str:
    """Why a question and its context do not fit the windows ("" when they do):
    :data:`QUESTION_TOO_LONG` when a window of ``max_length`` tokens cannot hold the question,
    the special tokens and more than ``doc_stride`` context tokens (the tokenizer's windowing
    needs that); :data:`CONTEXT_TOO_LONG` when the context takes more than ``max_windows``
    windows, each ``room - doc_stride`` tokens on from the last."""
    room = (settings.max_length - len(tokenizer(question, add_special_tokens=False)["input_ids"])
            - tokenizer.num_special_tokens_to_add(pair=True))
    if room <= settings.doc_stride:
        return QUESTION_TOO_LONG
    step = room - settings.doc_stride
    most = room + (settings.max_windows - 1) * step  # context tokens max_windows windows hold
    if 4 * len(context) + 1 <= most:  # no tokenizer makes more than 4 tokens of a character
        return ""                     # (byte-level BPE: one per UTF-8 byte)
    tokens = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    return CONTEXT_TOO_LONG if tokens > most else ""


def encode_windows(tokenizer, questions: list[str], contexts: list[str],
                   answers: list[dict] | None, settings: WindowSettings) -> dict[str, list]:
    """The windows of clean rows that fit them (:func:`window_problem`).

    Returns columns, one entry per window: ``row`` (index into the inputs), ``input_ids``,
    ``token_type_ids`` (when the tokenizer has them), ``offset_start`` / ``offset_end`` (each
    token's character span in the context; :data:`NO_OFFSET` outside it), and with
    ``answers`` ``start_position`` / ``end_position`` (token indices of the first gold answer;
    the CLS index when the question has no answer or the window does not hold all of it).
    """
    if not questions:
        return {}
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=settings.max_length,
                    stride=settings.doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    out: dict[str, list] = collections.defaultdict(list)
    for w, row in enumerate(enc["overflow_to_sample_mapping"]):
        ids = enc["input_ids"][w]
        sequence = enc.sequence_ids(w)
        starts = [o[0] if s == 1 else NO_OFFSET for o, s in zip(enc["offset_mapping"][w], sequence)]
        ends = [o[1] if s == 1 else NO_OFFSET for o, s in zip(enc["offset_mapping"][w], sequence)]
        out["row"].append(row)
        out["input_ids"].append(ids)
        if "token_type_ids" in enc:
            out["token_type_ids"].append(enc["token_type_ids"][w])
        out["offset_start"].append(starts)
        out["offset_end"].append(ends)
        if answers is not None:
            start, end = answer_tokens(answers[row], starts, ends, cls_index(tokenizer, ids))
            out["start_position"].append(start)
            out["end_position"].append(end)
    return dict(out)


def cls_index(tokenizer, ids: list[int]) -> int:
    cls = tokenizer.cls_token_id
    return ids.index(cls) if cls is not None and cls in ids else 0


def answer_tokens(answers: dict, starts: list[int], ends: list[int], cls: int) -> tuple[int, int]:
    """Start and end token of the first gold answer in a window (``starts`` / ``ends``: the
    tokens' context offsets); (cls, cls) without an answer or when the window cuts it."""
    if not answers["text"]:
        return cls, cls
    first = answers["answer_start"][0]
    last = first + len(answers["text"][0])
    inside = [i for i, s in enumerate(starts) if s != NO_OFFSET]
    if not inside or starts[inside[0]] > first or ends[inside[-1]] < last:
        return cls, cls
    start = max(i for i in inside if starts[i] <= first)
    end = min(i for i in inside if ends[i] >= last)
    return start, end


@dataclass(frozen=True)
class Answer:
    text: str
    score: float
    """Start + end logit of the best span; -inf when no window has a valid span."""
    null_score: float
    """Start + end logit at CLS, the lowest over the question's windows."""
    start: int = -1
    """The span's first character in the context (-1: no span)."""
    end: int = -1
    """One past its last character."""

    @property
    def null_margin(self) -> float:
        """How much more the model believes in no answer than in its best span (SQuAD v2's
        decision: no answer when this exceeds the threshold)."""
        return self.null_score - self.score


def best_answer(windows: Iterable[dict], context: str, settings: WindowSettings) -> Answer:
    """The best span of one question over its windows: each window a dict of
    ``start_logits``, ``end_logits`` (real tokens only), ``offset_start``, ``offset_end`` and
    ``cls`` (its CLS index)."""
    best_text, best_score, null, span = "", -math.inf, math.inf, (-1, -1)
    for w in windows:
        start_logits = np.asarray(w["start_logits"], dtype=np.float64)
        end_logits = np.asarray(w["end_logits"], dtype=np.float64)
        starts, ends = w["offset_start"], w["offset_end"]
        null = min(null, start_logits[w["cls"]] + end_logits[w["cls"]])
        top_starts = np.argsort(start_logits)[::-1][:settings.n_best]
        top_ends = np.argsort(end_logits)[::-1][:settings.n_best]
        for s in top_starts:
            if starts[s] == NO_OFFSET:
                continue
            for e in top_ends:
                if ends[e] == NO_OFFSET or e < s or e - s + 1 > settings.max_answer_length:
                    continue
                score = start_logits[s] + end_logits[e]
                if score > best_score:
                    best_score, span = score, (int(starts[s]), int(ends[e]))
                    best_text = context[span[0]:span[1]]
    return Answer(best_text, float(best_score), float(null), *span)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCTUATION = set(string.punctuation)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of two answers (an empty side: 1 when both are empty, else 0)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _best_of(metric, prediction: str, golds: list[str]) -> float:
    return max(metric(prediction, g) for g in (golds or [""]))


def squad_scores(answers: dict, golds: dict[str, list[str]]) -> dict:
    """Exact match and F1 (0-1) of ``answers`` (question id -> :class:`Answer`) against
    ``golds`` (question id -> gold answer texts; empty: unanswerable).

    With unanswerable questions (SQuAD 2.0) a question is answered "no answer" when its
    :attr:`Answer.null_margin` exceeds a threshold, chosen on these questions to maximize F1
    (the official script's ``best_f1`` threshold; exact match is reported at the same one), and
    the scores are split into HasAns / NoAns. Without any (v1.1) every question is answered
    with its best span.
    """
    ids = list(golds)
    has = {q: bool(golds[q]) for q in ids}
    span_em = {q: _best_of(exact_match, answers[q].text, golds[q]) for q in ids}
    span_f1 = {q: _best_of(f1_score, answers[q].text, golds[q]) for q in ids}
    v2 = not all(has.values())
    threshold = _best_threshold(ids, answers, has, span_f1) if v2 else math.inf

    def answered(q):
        return answers[q].null_margin <= threshold and answers[q].text != ""

    em = {q: (span_em[q] if answered(q) else float(not has[q])) for q in ids}
    f1 = {q: (span_f1[q] if answered(q) else float(not has[q])) for q in ids}
    out = {"exact": _mean(em, ids), "f1": _mean(f1, ids), "total": len(ids)}
    if v2:
        with_answer = [q for q in ids if has[q]]
        without = [q for q in ids if not has[q]]
        out.update(threshold=threshold, has_ans_total=len(with_answer),
                   no_ans_total=len(without),
                   has_ans_exact=_mean(em, with_answer), has_ans_f1=_mean(f1, with_answer),
                   no_ans_exact=_mean(em, without), no_ans_f1=_mean(f1, without))
    return out


def _mean(values: dict, ids: list) -> float | None:
    return sum(values[q] for q in ids) / len(ids) if ids else None


def _best_threshold(ids, answers, has, span_f1) -> float:
    """The no-answer threshold with the highest total F1: start from every question answered
    "no answer" (scores 1 for each unanswerable one), then answer them in order of growing
    null margin, keeping the margin where the running total peaked (-inf: answer none)."""
    total = best = float(sum(not has[q] for q in ids))
    threshold = -math.inf
    for q in sorted(ids, key=lambda q: answers[q].null_margin):
        if answers[q].text == "":
            continue  # no valid span: stays "no answer" at any threshold
        total += span_f1[q] if has[q] else -1.0
        if total > best:
            best, threshold = total, answers[q].null_margin
    return threshold
