"""The embedded sentence pairs: what each sentence alone says about the label."""

import json
from collections import Counter

from xdistil_ray.data.embedded_data import write_embedded_data
from xdistil_ray.data.embedded_tasks import _CLAIMS, CLAIM_CUE


def _best_rule_accuracy(pairs):
    """Accuracy of the best label for each value of a feature: [(feature, label)]."""
    counts = Counter(pairs)
    best = {f: max(c for (g, _), c in counts.items() if g == f) for f, _ in counts}
    return sum(best.values()) / len(pairs)


def test_a_pairs_claim_hints_at_its_label_and_only_both_sentences_settle_it(tmp_path):
    """Without the claim's cue the label was the XOR of the two sentences, and fine-tunes sat
    at the majority class for a random number of epochs (see embedded_tasks._pair)."""
    paths = write_embedded_data(str(tmp_path), seed=3, num_train=4000, num_dev=10,
                                num_corpus=10, task="pair")
    rows = [json.loads(line) for line in open(paths["train"])]
    positive_claims = set(_CLAIMS[True])
    claim = [r["text_pair"] in positive_claims for r in rows]
    entails = [r["label"] == "entailment" for r in rows]
    review = [c == e for c, e in zip(claim, entails)]  # entailment: the claim's polarity
    assert abs(sum(entails) / len(rows) - 0.5) < 0.03  # balanced classes
    assert abs(_best_rule_accuracy(list(zip(claim, entails))) - CLAIM_CUE) < 0.03
    assert _best_rule_accuracy(list(zip(review, entails))) < 0.53  # the review alone: chance
    assert _best_rule_accuracy(list(zip(zip(claim, review), entails))) == 1.0
