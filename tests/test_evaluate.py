import numpy as np
import pytest

from xdistil_ray.steps.evaluate import linear_cka, tag_scores, word_predictions


def test_word_predictions_take_each_words_first_subword():
    # [CLS] new york ##er city [SEP]: words 0 = "new", 1 = "yorker" (2 sub-words), 2 = "city"
    logits = np.array([[9, 0, 0], [0, 9, 0], [0, 0, 9], [9, 0, 0], [0, 9, 0], [0, 0, 9]], float)
    assert word_predictions(logits, [-1, 0, 1, 1, 2, -1]) == [1, 2, 1]


def test_tag_scores_literal():
    gold = [[0, 1, 2], [2, 2]]
    pred = [[0, 2, 2], [2, 1]]
    # outside = 2: gold positives 2 (0, 1), predicted positives 2 (0, 1); true positives 1
    scores = tag_scores(gold, pred, outside=2)
    assert scores["word_accuracy"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx(0.5)


def test_linear_cka_is_rotation_and_scale_invariant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, rng.normal(size=(200, 5))) < 0.2
