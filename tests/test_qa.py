"""Extractive QA's pure parts (xdistil_ray/tasks/qa.py) against hand-computed cases: SQuAD rows and
their rejects, windows and answer tokens (answers across windows, unanswerable questions),
span decoding across windows, SQuAD's metric with the v2 no-answer threshold."""

import math

import pytest

from xdistil_ray.tasks import qa

CONTEXT = ("The river Seine flows through Paris. It reaches the sea at Le Havre. "
           "Its length is seven hundred seventy seven kilometres.")


@pytest.fixture(scope="module")
def tokenizer(teacher_path):
    from xdistil_ray.modeling.models import load_tokenizer

    return load_tokenizer(teacher_path)


def test_squad_json_rows_and_impossible_questions():
    doc = {"version": "v2.0", "data": [{"title": "Seine", "paragraphs": [{
        "context": CONTEXT,
        "qas": [{"id": "q1", "question": "Where does it flow?",
                 "answers": [{"text": "Paris", "answer_start": 30}]},
                {"id": "q2", "question": "Who built it?", "answers": [], "is_impossible": True,
                 "plausible_answers": [{"text": "The river", "answer_start": 0}]}]}]}]}
    rows = list(qa.squad_rows(doc))
    assert [r["id"] for r in rows] == ["q1", "q2"]
    assert rows[0]["answers"] == {"text": ["Paris"], "answer_start": [30]}
    assert rows[1]["answers"] == {"text": [], "answer_start": []}
    assert CONTEXT[30:35] == "Paris"
    with pytest.raises(qa.NotSquad, match="'data'"):
        list(qa.squad_rows({"rows": []}))
    with pytest.raises(qa.NotSquad, match="paragraphs"):
        list(qa.squad_rows({"data": [{"title": "x"}]}))


@pytest.mark.parametrize("row,reason", [
    ({"context": CONTEXT, "answers": {"text": [], "answer_start": []}}, qa.MISSING_QUESTION),
    ({"question": "  ", "context": CONTEXT}, qa.MISSING_QUESTION),
    ({"question": "Where?", "context": None}, qa.MISSING_CONTEXT),
    ({"question": "Where?", "context": CONTEXT}, qa.MISSING_ANSWERS),
    ({"question": "Where?", "context": CONTEXT, "answers": ["Paris"]}, qa.BAD_ANSWERS),
    ({"question": "Where?", "context": CONTEXT,
      "answers": {"text": ["Paris"], "answer_start": []}}, qa.BAD_ANSWERS),
    ({"question": "Where?", "context": CONTEXT,
      "answers": {"text": ["Paris"], "answer_start": [-1]}}, qa.BAD_ANSWERS),
    ({"question": "Where?", "context": CONTEXT,
      "answers": {"text": ["Paris"], "answer_start": ["30"]}}, qa.BAD_ANSWERS),
    ({"question": "Where?", "context": CONTEXT,
      "answers": {"text": ["Paris"], "answer_start": [31]}}, qa.ANSWER_MISMATCH),
])
def test_bad_rows_are_dropped_with_their_reason(row, reason):
    assert qa.clean_row(row, labeled=True) == (None, reason)


def test_clean_rows_keep_offsets_and_unlabeled_rows_need_no_answers():
    row = {"question": "  Where does it flow?", "context": CONTEXT,
           "answers": {"text": ["Paris", "Paris"], "answer_start": (30, 30)}}
    clean, reason = qa.clean_row(row, labeled=True)
    assert reason == "" and clean["question"] == "Where does it flow?"
    assert clean["answers"] == {"text": ["Paris", "Paris"], "answer_start": [30, 30]}
    assert qa.clean_row({"question": "q", "context": "c"}, labeled=False) == (
        {"question": "q", "context": "c"}, "")


def _window_text(windows, w, context, start, end):
    return context[windows["offset_start"][w][start]:windows["offset_end"][w][end]]


def test_windows_cover_the_context_and_place_answers_across_windows(tokenizer):
    settings = qa.WindowSettings(max_length=24, doc_stride=6)
    start = CONTEXT.index("Le Havre")
    answers = [{"text": ["Le Havre"], "answer_start": [start]},
               {"text": [], "answer_start": []}]
    questions = ["Where does it reach the sea?", "Who built it?"]
    windows = qa.encode_windows(tokenizer, questions, [CONTEXT, CONTEXT], answers, settings)
    rows = windows["row"]
    first = [w for w, r in enumerate(rows) if r == 0]
    assert len(first) >= 3 and rows == sorted(rows)
    # every context character range is inside some window; neighbours share tokens
    spans = [(min(s for s in windows["offset_start"][w] if s >= 0),
              max(windows["offset_end"][w])) for w in first]
    assert spans[0][0] == 0 and spans[-1][1] == len(CONTEXT)
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    holding = [w for w in first if windows["start_position"][w] != 0]
    assert holding, "no window holds the answer"
    for w in first:
        s, e = windows["start_position"][w], windows["end_position"][w]
        lo, hi = spans[first.index(w)]
        if lo <= start and start + len("Le Havre") <= hi:
            assert _window_text(windows, w, CONTEXT, s, e) == "Le Havre"
        else:  # the window misses (some of) the answer: CLS
            assert (s, e) == (0, 0)
    for w, r in enumerate(rows):
        assert len(windows["input_ids"][w]) <= 24
        if r == 1:  # unanswerable: CLS in every window
            assert (windows["start_position"][w], windows["end_position"][w]) == (0, 0)
        question_tokens = [i for i, s in enumerate(windows["offset_start"][w]) if s < 0]
        assert question_tokens[0] == 0 and windows["input_ids"][w][0] == tokenizer.cls_token_id


def test_an_answer_cut_by_a_window_edge_is_cls_there(tokenizer):
    starts = [qa.NO_OFFSET, 0, 4, 10, qa.NO_OFFSET]
    ends = [qa.NO_OFFSET, 3, 9, 14, qa.NO_OFFSET]
    answers = {"text": ["abcde fghi"], "answer_start": [4]}  # characters 4-14
    assert qa.answer_tokens(answers, starts, ends, 0) == (2, 3)
    assert qa.answer_tokens({"text": ["xy"], "answer_start": [13]}, starts, ends, 0) == (0, 0)
    assert qa.answer_tokens({"text": ["a"], "answer_start": [0]}, starts, ends, 0) == (1, 1)


def test_a_question_that_leaves_no_room_or_a_context_past_max_windows_does_not_fit(tokenizer):
    settings = qa.WindowSettings(max_length=24, doc_stride=6, max_windows=3)
    assert qa.window_problem(tokenizer, "Where does it reach the sea?", "It does.", settings) == ""
    assert (qa.window_problem(tokenizer, " ".join(["why"] * 16), "It does.", settings)
            == qa.QUESTION_TOO_LONG)  # 16 + 3 > 24 - 6
    # "how long?" (3 tokens) + 3 special: 18 context tokens in the first window, 12 more in
    # each next one (stride 6): 3 windows hold 42 tokens, "sea" is one token
    question = "how long?"
    for words, reason in ((42, ""), (43, qa.CONTEXT_TOO_LONG)):
        context = " ".join(["sea"] * words)
        assert qa.window_problem(tokenizer, question, context, settings) == reason, words
        if not reason:
            windows = qa.encode_windows(tokenizer, [question], [context], None, settings)
            assert len(windows["row"]) == 3


def _window(start_logits, end_logits, offsets):
    return {"start_logits": start_logits, "end_logits": end_logits, "cls": 0,
            "offset_start": [o[0] for o in offsets], "offset_end": [o[1] for o in offsets]}


def test_best_answer_across_windows_and_its_no_answer_margin():
    context = "aa bb cc dd ee"
    outside = (qa.NO_OFFSET, qa.NO_OFFSET)
    w1 = _window([1.0, 0.0, 2.0, 0.5], [1.5, 0.0, 0.2, 1.0], [outside, outside, (0, 2), (3, 5)])
    w2 = _window([0.5, 3.0, 0.1, 0.0], [0.0, 0.0, 0.3, 2.5], [outside, (6, 8), (9, 11), (12, 14)])
    # w1 best: start 2 (2.0) + end 3 (1.0) = 3.0 "aa bb"; w2: start 1 (3.0) + end 3 (2.5) = 5.5
    answer = qa.best_answer([w1, w2], context, qa.WindowSettings())
    assert answer.text == "cc dd ee" and answer.score == pytest.approx(5.5)
    assert answer.null_score == pytest.approx(0.5)  # min(1.0 + 1.5, 0.5 + 0.0)
    assert answer.null_margin == pytest.approx(-5.0)
    short = qa.best_answer([w1, w2], context, qa.WindowSettings(max_answer_length=2))
    assert short.text == "cc dd" and short.score == pytest.approx(3.0 + 0.3)
    none = qa.best_answer([_window([1.0, 0.0], [1.0, 0.0], [outside, outside])], "x",
                          qa.WindowSettings())
    assert none.text == "" and none.score == -math.inf


def test_squad_normalization_exact_match_and_f1():
    assert qa.normalize_answer("The  Cat, sat!") == "cat sat"
    assert qa.exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    # [cat, sat] vs [cat, sat, down]: precision 1, recall 2/3
    assert qa.f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert qa.f1_score("", "") == 1.0 and qa.f1_score("cat", "") == 0.0
    assert qa.f1_score("dog", "cat") == 0.0


def test_v1_scores_take_the_best_gold_and_always_answer():
    answers = {"a": qa.Answer("Paris", 5.0, 9.0), "b": qa.Answer("big red ball", 1.0, 0.0)}
    golds = {"a": ["Paris", "in Paris"], "b": ["red ball", "a ball"]}
    out = qa.squad_scores(answers, golds)
    assert out == {"exact": pytest.approx(0.5), "f1": pytest.approx((1 + 0.8) / 2), "total": 2}


def test_v2_threshold_maximizes_f1_and_splits_has_and_no_answer():
    answers = {"q1": qa.Answer("paris", 4.0, 2.0),    # margin -2, right
               "q2": qa.Answer("london", 1.0, 2.0),   # margin 1, unanswerable
               "q3": qa.Answer("milan", 1.0, 4.0),    # margin 3, wrong
               "q4": qa.Answer("", -math.inf, 0.0)}   # no valid span: never answered
    golds = {"q1": ["Paris"], "q2": [], "q3": ["Rome"], "q4": []}
    out = qa.squad_scores(answers, golds)
    # all "no answer": q2 + q4 = 2; answer q1 (-2): 3 (best); q2 (1): 2; q3 (3): 2
    assert out["threshold"] == pytest.approx(-2.0)
    assert out["exact"] == pytest.approx(3 / 4) and out["f1"] == pytest.approx(3 / 4)
    assert (out["has_ans_total"], out["no_ans_total"]) == (2, 2)
    assert out["has_ans_exact"] == pytest.approx(0.5) and out["no_ans_exact"] == 1.0
    # a threshold that answers nothing when every span is worse than abstaining
    out = qa.squad_scores({"q1": qa.Answer("x", 0.0, 1.0), "q2": qa.Answer("y", 0.0, 1.0)},
                          {"q1": ["Paris"], "q2": []})
    assert out["threshold"] == -math.inf and out["f1"] == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta", "electra", "deberta-v3", "distilbert",
                                  "modernbert"])
def test_qa_students_of_every_family_learn_the_teachers_spans(kind):
    """A QA teacher of each family gives a QA student of its family (initialized from it);
    start/end logits [B, T, 2]; the span KL to the teacher's and the span cross-entropy to gold
    spans each fall over ten steps."""
    import torch
    from test_families import STUDENT, batch, tiny_teacher

    from xdistil_ray.distill import losses
    from xdistil_ray.modeling import models

    teacher = tiny_teacher(kind, "qa")
    assert type(teacher).__name__.endswith("ForQuestionAnswering")
    student = models.build_student(teacher, **STUDENT, init="teacher", seed=0, task="qa")
    assert type(student) is type(teacher)
    b = batch()
    mask = b["attention_mask"].bool()
    with torch.no_grad():
        target = models.forward_outputs(teacher, b)["logits"]
    assert target.shape == (6, 12, 2)
    gold = torch.tensor([[3, 5], [0, 0], [1, 1], [0, 0], [2, 7], [0, 0]])  # (start, end)
    span_losses = {
        "kl": lambda logits: losses.logit_kl(losses.span_logits(logits, mask),
                                             losses.span_logits(target, mask), temperature=2.0),
        "ce": lambda logits: losses.label_cross_entropy(losses.span_logits(logits, mask), gold)}
    for name, loss_of in span_losses.items():  # each alone, from a random student
        student = models.build_student(teacher, **STUDENT, init="random", seed=0, task="qa")
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
        history = []
        for _ in range(10):
            loss = loss_of(models.forward_outputs(student, b)["logits"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
        assert history[-1] < history[0], (kind, name, history)


def test_span_losses_ignore_padding_and_match_hand_values():
    import torch

    from xdistil_ray.distill import losses

    mask = torch.tensor([[True, True, True, True, False, False]])
    flat = torch.zeros(1, 6, 2)
    # uniform over the 4 real tokens: -log(1/4) for start and end alike
    ce = losses.label_cross_entropy(losses.span_logits(flat, mask), torch.tensor([[1, 3]]))
    assert float(ce) == pytest.approx(math.log(4))
    other = flat.clone()
    other[0, 4:] = 50.0  # padding: no part in either loss
    assert float(losses.logit_kl(losses.span_logits(other, mask),
                                 losses.span_logits(flat, mask))) == pytest.approx(0.0, abs=1e-6)
    peaked = flat.clone()
    peaked[0, 2, 0] = math.log(3.0)  # start: p = (1, 1, 3, 1) / 6 against uniform
    kl = losses.logit_kl(losses.span_logits(flat, mask), losses.span_logits(peaked, mask))
    p = torch.tensor([1, 1, 3, 1]) / 6.0
    expected = float((p * (p / 0.25).log()).sum()) / 2  # mean over start and end (end: 0)
    assert float(kl) == pytest.approx(expected, rel=1e-5)


def test_qa_batches_and_the_stage_objective():
    """Windows padded into a batch (gold start/end as labels [B, 2], stored start/end logits
    [B, T, 2]); the objective's span KL is 0 against itself and its gold-span loss is the
    positions' cross-entropy, padding excluded."""
    import numpy as np
    import torch

    from xdistil_ray.distill import objective
    from xdistil_ray.modeling.batches import pad_batch
    from xdistil_ray.config import LossConfig

    logits = [np.arange(8, dtype=np.float32), np.zeros(6, dtype=np.float32)]  # 4 and 3 tokens
    b = pad_batch({"input_ids": [np.array([101, 5, 6, 102]), np.array([101, 7, 102])],
                   "logits": logits, "start_position": [1, 0], "end_position": [2, 0]},
                  0, None, per_token=True)
    assert b["labels"].tolist() == [[1, 2], [0, 0]]
    assert b["teacher_logits"].shape == (2, 4, 2)
    assert b["teacher_logits"][0, 3].tolist() == [6.0, 7.0]
    specs = objective.resolve_losses([LossConfig(type="logits", function="kl"),
                                      LossConfig(type="labels")], num_student=2, num_teacher=2,
                                     student_hidden=8, teacher_hidden=8, teacher_heads=2)
    targets = objective.stored_targets(b, 2)
    _, parts = objective.compute(specs, {"logits": b["teacher_logits"]}, targets, b, None,
                                 per_token=True, spans=True)
    assert float(parts["0:logits"]) == pytest.approx(0.0, abs=1e-6)
    # row 0: start logits 0, 2, 4, 6 (gold 1), end 1, 3, 5, 7 (gold 2); row 1: uniform over 3
    row0 = (torch.logsumexp(torch.tensor([0., 2, 4, 6]), 0) - 2
            + torch.logsumexp(torch.tensor([1., 3, 5, 7]), 0) - 5)
    expected = (float(row0) + 2 * math.log(3)) / 4
    assert float(parts["1:labels"]) == pytest.approx(expected, rel=1e-5)


def test_labeled_squad_files_become_windows_with_exact_row_accounting(tmp_path, teacher_path):
    """An official SQuAD 2.0 .json file as labeled.train: answered and unanswerable questions
    kept as their windows, bad rows dropped by reason, input rows = kept + dropped."""
    import json

    import pyarrow.parquet as pq

    from xdistil_ray.data.readers import resolve_source
    from xdistil_ray.run.runfolder import RunFolder
    from xdistil_ray.data import step as prepare

    start = CONTEXT.index("Le Havre")
    qas = [{"id": "a", "question": "Where does it reach the sea?",
            "answers": [{"text": "Le Havre", "answer_start": start}]},
           {"id": "b", "question": "Who built it?", "answers": [], "is_impossible": True},
           {"id": "c", "question": "How long is it?",
            "answers": [{"text": "seven hundred", "answer_start": 3}]},  # points elsewhere
           {"id": "d", "question": " ".join(["why"] * 30), "answers": []},
           {"id": "e", "question": "", "answers": []}]
    long = {"context": " ".join(["sea"] * 100),  # 4 windows hold 76 of its 100 tokens
            "qas": [{"id": "f", "question": "Who built it?", "answers": []}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [
        {"title": "Seine", "paragraphs": [{"context": CONTEXT, "qas": qas}, long]}]}, indent=2))
    settings = prepare.TextSettings(teacher_path, 0, 0, 0.2,
                                    qa.WindowSettings(32, 8, max_windows=4))
    run = RunFolder(str(tmp_path / "run"))
    out = prepare.prepare_labeled(run, {"train": resolve_source(str(path), "labeled.train")},
                                  settings, text_column="", label_column="",
                                  qa_columns=("question", "context", "answers"))
    stats = out["splits"]["train"]
    assert stats["input_rows"] == 6 and stats["kept"] == 2
    assert stats["dropped"] == {qa.ANSWER_MISMATCH: 1, qa.QUESTION_TOO_LONG: 1,
                                qa.MISSING_QUESTION: 1, qa.CONTEXT_TOO_LONG: 1}
    assert stats["windows"] > 2 and out["label_names"] == []
    table = pq.read_table(run.path("data/labeled/train", "train.parquet")).to_pylist()
    assert len(table) == stats["windows"]
    assert sorted(w["window"] for w in table if w["window"] == 0) == [0, 0]
    held = [w for w in table if w["start_position"] != 0]
    assert held and all(w["answers"] == ["Le Havre"] for w in held)
    for w in held:
        text = w["context"][w["offset_start"][w["start_position"]]:
                            w["offset_end"][w["end_position"]]]
        assert text == "Le Havre"
    assert all(w["end_position"] == 0 for w in table if w["answers"] == [])
    assert len({w["id"] for w in table}) == len(table) and len({w["example"] for w in table}) == 2


def test_embedded_qa_data_is_squad_shaped_and_deterministic(tmp_path):
    import json

    from xdistil_ray.data.embedded_data import write_embedded_data

    paths = write_embedded_data(str(tmp_path / "a"), seed=1, num_train=300, num_dev=60,
                                num_corpus=400, task="qa")
    again = write_embedded_data(str(tmp_path / "b"), seed=1, num_train=300, num_dev=60,
                                num_corpus=400, task="qa")
    assert open(paths["train"]).read() == open(again["train"]).read()
    train = [json.loads(line) for line in open(paths["train"])]
    assert len(train) == 300
    for row in train:
        clean, reason = qa.clean_row(row, labeled=True)
        assert reason == "", row
    unanswerable = sum(not r["answers"]["text"] for r in train) / len(train)
    assert 0.25 < unanswerable < 0.42  # a third, as generated
    corpus = [line for line in open(paths["corpus"])]
    assert len(corpus) == 100 + 1 + 0  # a quarter of num_corpus, 1% repeated, 0.2% empty
    assert all("answers" not in json.loads(line) for line in corpus if line.strip())


def test_the_answerer_decodes_a_saved_qa_model_over_windows(tmp_path, teacher_path):
    """transformers 5 has no question-answering pipeline; Answerer is the run's decoding for a
    saved QA folder: a span of the context, or no answer by the threshold."""
    from test_families import tiny_teacher

    from xdistil_ray.export.answer import Answerer
    from xdistil_ray.modeling.models import load_tokenizer

    folder = str(tmp_path / "qa")
    tiny_teacher("bert", "qa").save_pretrained(folder)
    load_tokenizer(teacher_path).save_pretrained(folder)
    windows = qa.WindowSettings(max_length=24, doc_stride=6)
    span = Answerer(folder, threshold=math.inf, windows=windows)(
        question="Where does it reach the sea?", context=CONTEXT)
    assert span["answer"] and CONTEXT[span["start"]:span["end"]] == span["answer"]
    assert not span["no_answer"]
    none = Answerer(folder, threshold=-math.inf, windows=windows)(
        question="Where does it reach the sea?", context=CONTEXT)
    assert none == {**none, "answer": "", "start": -1, "end": -1, "no_answer": True}
    with pytest.raises(ValueError, match="max_length"):
        Answerer(folder, windows=windows)(question=" ".join(["why"] * 30), context=CONTEXT)


def test_a_qa_students_model_card_shows_the_answerer_with_the_runs_threshold(tmp_path,
                                                                              teacher_path):
    """The QA card's snippet (transformers 5 has no question-answering pipeline) runs as
    written against a saved QA folder, with the threshold and windows of the run."""
    import re

    from test_families import tiny_teacher

    from xdistil_ray.report import model_card
    from xdistil_ray.config import load_config
    from xdistil_ray.modeling.models import load_tokenizer

    folder = str(tmp_path / "qa")
    tiny_teacher("bert", "qa").save_pretrained(folder)
    load_tokenizer(teacher_path).save_pretrained(folder)
    cfg = load_config(None, ["task=qa", "qa.max_length=48", "qa.doc_stride=16"])
    lines = model_card._usage("qa", -1.25, cfg.qa)
    text = "\n".join(lines)
    assert 'pipeline("question-answering"' not in text
    assert "threshold=-1.25" in text and "max_length=48, doc_stride=16" in text
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    printed = []
    exec(code.replace("path/to/this/folder", folder), {"print": printed.append})
    assert set(printed[0]) >= {"answer", "start", "end", "no_answer"}
    assert "threshold=math.inf" in "\n".join(model_card._usage("qa", math.inf, cfg.qa))


def _official_v2_best_f1(preds: dict, golds: dict, na_probs: dict) -> float:
    """SQuAD 2.0's official evaluation script (evaluate-v2.0.py), its logic as published:
    per-question F1 of the predicted text against every gold (``[""]`` for unanswerable), then
    ``find_best_thresh`` over the no-answer probabilities."""
    import collections as c
    import re
    import string

    def normalize(s):
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    def compute_f1(gold, pred):
        g, p = normalize(gold).split() if gold else [], normalize(pred).split() if pred else []
        same = sum((c.Counter(g) & c.Counter(p)).values())
        if not g or not p:
            return int(g == p)
        if same == 0:
            return 0
        precision, recall = same / len(p), same / len(g)
        return 2 * precision * recall / (precision + recall)

    scores = {q: max(compute_f1(a, preds[q]) for a in (golds[q] or [""])) for q in golds}
    has = {q: bool(golds[q]) for q in golds}
    cur = best = sum(1 for q in has if not has[q])
    for q in sorted(na_probs, key=lambda k: na_probs[k]):
        cur += scores[q] if has[q] else (-1 if preds[q] else 0)
        best = max(best, cur)
    return best / len(scores)


def test_squad_v2_best_f1_matches_the_official_scripts_logic():
    import random

    rng = random.Random(0)
    texts = ["the battery", "a great screen", "battery life", "awful", "Screen!", ""]
    for trial in range(20):
        golds, answers = {}, {}
        for i in range(30):
            gold = rng.sample(texts[:-1], rng.randint(1, 2)) if rng.random() < 0.6 else []
            golds[f"q{i}"] = gold
            score, null = rng.uniform(-5, 5), rng.uniform(-5, 5)
            answers[f"q{i}"] = qa.Answer(rng.choice(texts[:-1]), score, null)
        ours = qa.squad_scores(answers, golds)
        official = _official_v2_best_f1({q: a.text for q, a in answers.items()}, golds,
                                        {q: a.null_margin for q, a in answers.items()})
        assert ours["f1"] == pytest.approx(official), trial
