"""Embedded data for the sentence-pair, token-classification and extractive-QA tasks, from the
same review domain as :mod:`xdistil_ray.data.embedded_reviews` (nothing downloaded; the same seed,
the same files)."""

from __future__ import annotations

import json
import os
import random

from xdistil_ray.data.embedded_reviews import (_BAD, _GOOD, _INTENSIFIERS, _PRODUCTS, review,
                                               write_atomic)

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


CLAIM_CUE = 0.75
"""The share of positive claims that a review entails (and of negative claims that one
contradicts): a claim's own wording hints at its label, as MNLI's hypotheses do (negations go
with contradiction), while only the review settles it."""


def _pair(rng: random.Random) -> tuple[str, str, str]:
    """(review, claim, label): entailment when the claim's polarity is the review's.

    With claims of either polarity equally likely to entail, the label was the XOR of the two
    sentences, with no signal in either alone: fine-tuning the teacher sat at the majority class
    for a random number of epochs (data seed 3, teacher seeds 0 / 1 / 2, 3 epochs at 1e-4:
    100% / 72% / 100%; at 2e-4, seed 1 never left 52.5%), and so did a student distilled from a
    perfect teacher (seed 2: logits MSE 5.43 -> 5.44 over 337 steps, dev accuracy 52.5%). With
    :data:`CLAIM_CUE` the claim alone scores 75%; the review alone still says nothing (its
    polarity is as likely to agree as not)."""
    claim_positive = rng.random() < 0.5
    entails = rng.random() < (CLAIM_CUE if claim_positive else 1 - CLAIM_CUE)
    claim = rng.choice(_CLAIMS[claim_positive])
    return review(rng, claim_positive == entails), claim, PAIR_LABELS[entails]


def _row(rng: random.Random, task: str) -> tuple[str, dict]:
    """(dedup key, labeled row) of one generated example of ``task``."""
    if task == "pair":
        text, claim, label = _pair(rng)
        return text + "\t" + claim, {"text": text, "text_pair": claim, "label": label}
    if task == "qa":
        row = qa_example(rng, answerable=rng.random() < 2 / 3)
        return row["question"] + "\t" + row["context"], row
    tagged = tagged_review(rng)
    return (" ".join(w for w, _ in tagged),
            {"text": [w for w, _ in tagged], "label": [t for _, t in tagged]})


def _corpus_line(row: dict, task: str) -> str:
    """A labeled row as the unlabeled corpus holds it."""
    if task == "pair":
        return json.dumps({"text": row["text"], "text_pair": row["text_pair"]})
    if task == "qa":
        return json.dumps({"question": row["question"], "context": row["context"]})
    return " ".join(row["text"])


def write(folder: str, task: str, *, seed: int, num_train: int, num_dev: int,
          num_corpus: int) -> dict[str, str]:
    """Writes the task's ``train.jsonl``, ``dev.jsonl`` and corpus (if absent); returns paths.
    ``qa``: SQuAD-style rows (question, context, answers; a third unanswerable, as in SQuAD
    2.0), the corpus their questions and contexts."""
    corpus_name = "corpus.jsonl" if task in ("pair", "qa") else "corpus.txt"
    paths = {name: os.path.join(folder, f) for name, f in
             (("train", "train.jsonl"), ("dev", "dev.jsonl"), ("corpus", corpus_name))}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < num_train + num_dev + num_corpus:
        key, row = _row(rng, task)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    train, dev, corpus = (rows[:num_train], rows[num_train:num_train + num_dev],
                          rows[num_train + num_dev:])
    for name, part in (("train", train), ("dev", dev)):
        write_atomic(paths[name], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    lines = [_corpus_line(r, task) for r in corpus]
    lines += rng.sample(lines, num_corpus // 100) + [""] * (num_corpus // 500)
    rng.shuffle(lines)
    write_atomic(paths["corpus"], "".join(line + "\n" for line in lines))
    return paths


_QUESTIONS = ["How is the {aspect} of the {product}?",
              "What is the {aspect} of the {product} like?",
              "What do they say about the {aspect} of the {product}?",
              "How would you describe the {aspect} of the {product}?"]


def qa_example(rng: random.Random, answerable: bool) -> dict:
    """One SQuAD-style row: a context of 3-7 review sentences, each about one aspect of one
    product ("The fan of the laptop is really noisy."), and a question about one (product,
    aspect), answered by that sentence's opinion ("noisy"); unanswerable ones ask about an
    aspect the context does not review (of a product it does, or for another product)."""
    pairs = [(p, a) for p in _PRODUCTS for a in _PRODUCTS[p]]
    chosen = rng.sample(pairs, rng.randint(3, 7))
    context, spans = "", []
    for product, aspect in chosen:
        opinion = rng.choice(_GOOD if rng.random() < 0.5 else _BAD)
        sentence = f"The {aspect} of the {product} is {rng.choice(_INTENSIFIERS)}"
        start = len(context) + len(sentence)
        context += sentence + opinion + ". "
        spans.append((opinion, start))
    context = context.rstrip()
    if answerable:
        k = rng.randrange(len(chosen))
        (product, aspect), (text, start) = chosen[k], spans[k]
        answers = {"text": [text], "answer_start": [start]}
    else:
        product = rng.choice([p for p, _ in chosen  # its other aspects: near misses
                              if any((p, a) not in chosen for a in _PRODUCTS[p])])
        aspect = rng.choice([a for a in _PRODUCTS[product] if (product, a) not in chosen])
        answers = {"text": [], "answer_start": []}
    question = rng.choice(_QUESTIONS).format(aspect=aspect, product=product)
    return {"question": question, "context": context, "answers": answers}

