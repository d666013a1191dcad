"""Embedded data for the sentence-pair and token-classification tasks, from the same review
domain as :mod:`xdistil_ray.embedded_reviews` (nothing downloaded; the same seed, the same files)."""

from __future__ import annotations

import json
import os
import random

from xdistil_ray.embedded_reviews import _BAD, _GOOD, _INTENSIFIERS, _PRODUCTS, review, write_atomic

PAIR_LABELS = ("contradiction", "entailment")
_CLAIMS = {
    True: ["The reviewer is satisfied.", "The reviewer liked it.", "This is a positive review.",
           "The buyer would buy it again.", "The writer is happy with the purchase."],
    False: ["The reviewer is disappointed.", "The reviewer disliked it.",
            "This is a negative review.", "The buyer regrets the purchase.",
            "The writer is unhappy with the purchase."],
}


def _span(words: str, tag: str) -> list[tuple[str, str]]:
    parts = words.split()
    return [(w, ("B-" if i == 0 else "I-") + tag) for i, w in enumerate(parts)]


def _outside(words: str) -> list[tuple[str, str]]:
    return [(w, "O") for w in words.split()]


def tagged_review(rng: random.Random) -> list[tuple[str, str]]:
    """One review as (word, tag) pairs: ASPECT, PRODUCT and OPINION spans, O elsewhere."""
    product = rng.choice(list(_PRODUCTS))
    aspect, other = rng.sample(_PRODUCTS[product], 2)
    positive = rng.random() < 0.5

    def opinion(pos: bool) -> list[tuple[str, str]]:
        return _outside(rng.choice(_INTENSIFIERS)) + _span(rng.choice(_GOOD if pos else _BAD),
                                                           "OPINION")

    form = rng.randrange(3)
    if form == 0:
        return (_outside("the") + _span(aspect, "ASPECT") + _outside("of this")
                + _span(product, "PRODUCT") + _outside("is") + opinion(positive))
    if form == 1:
        return (_outside("I " + rng.choice(["love", "like", "hate", "returned"]) + " this")
                + _span(product, "PRODUCT") + _outside(", the") + _span(aspect, "ASPECT")
                + _outside("is") + opinion(positive))
    return (_outside("the") + _span(other, "ASPECT") + _outside("is") + opinion(not positive)
            + _outside(", but the") + _span(aspect, "ASPECT") + _outside("is") + opinion(positive))


def _pair(rng: random.Random) -> tuple[str, str, str]:
    positive = rng.random() < 0.5
    entails = rng.random() < 0.5
    claim = rng.choice(_CLAIMS[positive == entails])
    return review(rng, positive), claim, PAIR_LABELS[entails]


def write(folder: str, task: str, *, seed: int, num_train: int, num_dev: int,
          num_corpus: int) -> dict[str, str]:
    """Writes the task's ``train.jsonl``, ``dev.jsonl`` and corpus (if absent); returns paths."""
    corpus_name = "corpus.jsonl" if task == "pair" else "corpus.txt"
    paths = {name: os.path.join(folder, f) for name, f in
             (("train", "train.jsonl"), ("dev", "dev.jsonl"), ("corpus", corpus_name))}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < num_train + num_dev + num_corpus:
        if task == "pair":
            text, claim, label = _pair(rng)
            key, row = text + "\t" + claim, {"text": text, "text_pair": claim, "label": label}
        else:
            tagged = tagged_review(rng)
            key = " ".join(w for w, _ in tagged)
            row = {"text": [w for w, _ in tagged], "label": [t for _, t in tagged]}
        if key not in seen:
            seen.add(key)
            rows.append(row)
    train, dev, corpus = (rows[:num_train], rows[num_train:num_train + num_dev],
                          rows[num_train + num_dev:])
    for name, part in (("train", train), ("dev", dev)):
        write_atomic(paths[name], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    if task == "pair":
        lines = [json.dumps({"text": r["text"], "text_pair": r["text_pair"]}) for r in corpus]
    else:
        lines = [" ".join(r["text"]) for r in corpus]
    lines += rng.sample(lines, num_corpus // 100) + [""] * (num_corpus // 500)
    rng.shuffle(lines)
    write_atomic(paths["corpus"], "".join(line + "\n" for line in lines))
    return paths
