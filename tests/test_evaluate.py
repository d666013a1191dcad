import numpy as np
import pytest
import torch

from xdistil_ray.tasks import metrics
from xdistil_ray.evaluate.step import measure_speed, speed
from xdistil_ray.modeling.scoring import dev_scores, run_model, word_predictions


def test_word_predictions_take_each_words_first_subword():
    # [CLS] new york ##er city [SEP]: words 0 = "new", 1 = "yorker" (2 sub-words), 2 = "city"
    logits = np.array([[9, 0, 0], [0, 9, 0], [0, 0, 9], [9, 0, 0], [0, 9, 0], [0, 0, 9]], float)
    assert word_predictions(logits, [-1, 0, 1, 1, 2, -1]) == [1, 2, 1]


def test_entity_spans_read_bio_as_conlleval():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER", "B-ORG"]
    assert metrics.entity_spans(tags) == {("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6),
                                          ("PER", 6, 7), ("ORG", 7, 8)}


@pytest.mark.parametrize("tags, spans", [
    # IOBES: S- a single word, E- the last of several (seqeval's default mode reads them so)
    (["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-ORG", "E-ORG"],
     {("PER", 0, 1), ("LOC", 2, 5), ("LOC", 5, 6), ("ORG", 6, 8)}),
    # BILOU: U- = S-, L- = E-
    (["U-PER", "B-LOC", "L-LOC", "U-LOC", "O", "B-ORG", "I-ORG", "L-ORG"],
     {("PER", 0, 1), ("LOC", 1, 3), ("LOC", 3, 4), ("ORG", 5, 8)}),
    # an entity ends at E- even before an I- of its type; an E- or I- alone starts one
    (["B-PER", "E-PER", "I-PER", "O", "E-LOC", "I-ORG", "E-ORG"],
     {("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5), ("ORG", 5, 7)}),
])
def test_entity_spans_read_iobes_and_bilou_as_seqeval(tags, spans):
    assert metrics.entity_spans(tags) == spans


def test_iobes_entities_are_scored_not_dropped():
    """S- / E- tags were read as O: a single-word entity scored nothing."""
    gold = [["S-PER", "O", "B-LOC", "E-LOC"]]
    s = metrics.entity_scores(gold, [["S-PER", "O", "B-LOC", "O"]])
    assert s["entity_precision"] == s["entity_recall"] == 0.5  # PER right; LOC cut short
    assert metrics.entity_scores(gold, gold)["entity_f1"] == 1.0


def test_classification_scores_match_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for num_labels, n in ((2, 7), (4, 50), (8, 200), (5, 3)):
        gold, pred = rng.integers(0, num_labels, n), rng.integers(0, num_labels, n)
        s = metrics.classification_scores(gold, pred, num_labels)
        assert s["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, pred))
        assert s["macro_f1"] == pytest.approx(
            sklearn_metrics.f1_score(gold, pred, average="macro"))


def test_entity_scores_literal():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    # PER span cut short (wrong), LOC right, ORG missed, a spurious PER
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O"]]
    s = metrics.entity_scores(gold, pred)
    assert s["entity_precision"] == pytest.approx(1 / 3)
    assert s["entity_recall"] == pytest.approx(1 / 3)
    assert s["entity_f1"] == pytest.approx(1 / 3)
    assert s["word_accuracy"] == pytest.approx(3 / 6)


def test_classification_scores_literal():
    gold = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 0, 2])
    s = metrics.classification_scores(gold, pred, 3)
    assert s["accuracy"] == pytest.approx(4 / 6)
    # F1 per label: 0: 2*2/(3+3); 1: 2*1/(2+2); 2: 1
    assert s["macro_f1"] == pytest.approx((4 / 6 + 2 / 4 + 1.0) / 3)


def test_agreement_and_kl_per_sentence_and_per_token():
    t = [np.array([2.0, 0.0]), np.array([0.0, 1.0])]
    assert metrics.agreement(t, [np.array([1.0, 0.0]), np.array([1.0, 0.0])], 2) == 0.5
    assert metrics.kl_divergence(t, t, 2) == pytest.approx(0.0, abs=1e-12)
    p, q = np.array([0.8, 0.2]), np.array([0.5, 0.5])
    kl = float((p * np.log(p / q)).sum())
    assert metrics.kl_divergence([np.log(p)], [np.log(q)], 2) == pytest.approx(kl)
    # token rows: the stored teacher row is flat [T*C], the student's [T, C]
    flat = [np.array([3.0, 0.0, 0.0, 3.0, 3.0, 0.0])]
    assert metrics.agreement(flat, [np.array([[1.0, 0], [1.0, 0], [1.0, 0]])], 2) == \
        pytest.approx(2 / 3)


def test_mapped_cosine_sees_a_linear_relation_across_widths():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(400, 8))
    t = s @ rng.normal(size=(8, 16)) + 0.5
    assert metrics.mapped_cosine(s, t) == pytest.approx(1.0, abs=1e-6)
    noise = rng.normal(size=(400, 16))
    assert metrics.mapped_cosine(s, noise) < 0.3
    assert metrics.mapped_cosine(s[:3], t[:3]) is None


def test_linear_cka_is_rotation_and_scale_invariant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert metrics.linear_cka(x, 3 * x @ q) == pytest.approx(1.0, abs=1e-9)
    assert metrics.linear_cka(x, rng.normal(size=(200, 5))) < 0.2


def _rows(n=12):
    rng = np.random.default_rng(1)
    return {"input_ids": [[101] + list(rng.integers(1000, 2000, size=3 + i % 5)) + [102]
                          for i in range(n)]}


def test_run_model_returns_predictions_and_cls_or_mean_states(tiny_classifier_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    rows = _rows()
    preds, cls = run_model(model, rows, "cls", batch_size=5)
    assert len(preds) == 12 and preds[0].shape == (2,) and cls.shape == (12, 48)
    with torch.no_grad():
        one = model(input_ids=torch.tensor([rows["input_ids"][7]]), output_hidden_states=True)
    np.testing.assert_allclose(preds[7], one.logits[0].numpy(), atol=1e-5)  # padding ignored
    np.testing.assert_allclose(cls[7], one.hidden_states[-1][0, 0].numpy(), atol=1e-5)
    _, mean = run_model(model, rows, "mean", batch_size=5)
    np.testing.assert_allclose(mean[7], one.hidden_states[-1][0].mean(0).numpy(), atol=1e-5)


def test_dev_scores_of_a_model_are_its_own_predictions(tiny_classifier_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    rows = _rows()
    preds, _ = run_model(model, rows, "cls")
    names = ["neg", "pos"]
    rows["label"] = [names[int(p.argmax())] for p in preds]
    assert dev_scores("sentence", model, rows, names)["accuracy"] == 1.0
    rows["label"] = [names[1 - int(p.argmax())] for p in preds]
    assert dev_scores("sentence", model, rows, names)["accuracy"] == 0.0


def test_speed_of_a_smaller_model_is_higher(tiny_classifier_dir):
    from transformers import AutoModelForSequenceClassification, BertConfig

    big = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    small_config = BertConfig.from_pretrained(tiny_classifier_dir, num_hidden_layers=1,
                                              hidden_size=16, num_attention_heads=2,
                                              intermediate_size=32)
    small = AutoModelForSequenceClassification.from_config(small_config).eval()
    rows = _rows(64)
    one = measure_speed(big, rows, batch_size=64, repeats=3, device="cpu")
    assert one["latency_ms"] > 0 and one["throughput"] > 0
    s = speed(big, small, rows, batch_size=64, repeats=5, torch_threads=1)
    assert s["batch_size"] == 64 and "cuda" not in s or torch.cuda.is_available()
    assert s["cpu"]["speedup_throughput"] == pytest.approx(
        s["cpu"]["student_throughput"] / s["cpu"]["teacher_throughput"])
    assert s["cpu"]["speedup_throughput"] > 1.0
