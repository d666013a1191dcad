"""Generated product reviews: the vocabulary, one review sentence, and the sentence task's
files: a four-way rating (:data:`LABELS`) where word-spotting is not enough (negation; mixed
reviews, whose verdict is the clause that a contrast marks as the main one) and labels are
noisy as annotators' are (:data:`LABEL_NOISE` of the rows in every split carry a neighbouring
rating), so that a teacher lands well below 100% and a student's share of it means something;
with an unlabeled corpus of the same domain. The same seed gives the same files."""

from __future__ import annotations

import json
import os
import random

LABELS = ("negative", "mostly negative", "mostly positive", "positive")
"""The sentence task's ratings, in order: a review of one polarity, or a mixed review whose
main clause is negative / positive."""
LABEL_NOISE = 0.08
"""Share of the labeled rows (train and dev alike) whose rating is replaced by a neighbouring
one: what a perfect model can score on dev is about 1 - LABEL_NOISE."""

_PRODUCTS = {
    "phone": ["battery", "screen", "camera", "speaker", "charging port", "case"],
    "laptop": ["keyboard", "screen", "battery", "trackpad", "fan", "hinge"],
    "pair of headphones": ["sound", "noise cancelling", "ear cushions", "bass", "microphone", "cable"],
    "coffee maker": ["carafe", "brew speed", "water tank", "taste", "timer", "filter"],
    "blender": ["motor", "jar", "blades", "lid", "speed settings", "noise level"],
    "backpack": ["zipper", "straps", "pockets", "fabric", "laptop sleeve", "stitching"],
    "jacket": ["zipper", "hood", "lining", "fit", "pockets", "waterproofing"],
    "pair of running shoes": ["sole", "cushioning", "laces", "fit", "grip", "heel support"],
    "camera": ["lens", "autofocus", "viewfinder", "battery", "menu", "image quality"],
    "vacuum cleaner": ["suction", "filter", "hose", "battery", "brush", "dust bin"],
    "desk lamp": ["brightness", "switch", "base", "arm", "color temperature", "cable"],
    "hotel room": ["bed", "shower", "view", "air conditioning", "wifi", "breakfast"],
    "restaurant": ["service", "menu", "dessert", "portions", "staff", "music"],
    "novel": ["plot", "ending", "characters", "dialogue", "pacing", "prose"],
    "tablet": ["screen", "stylus", "speakers", "battery", "case", "charger"],
    "smartwatch": ["strap", "display", "heart rate sensor", "battery", "app", "buttons"],
    "office chair": ["armrests", "cushion", "wheels", "backrest", "height lever", "fabric"],
    "kettle": ["handle", "lid", "spout", "boil time", "base", "switch"],
}
_GOOD = ["great", "excellent", "solid", "reliable", "comfortable", "impressive", "fantastic",
         "sturdy", "smooth", "wonderful", "decent", "superb", "pleasant", "well made"]
_BAD = ["terrible", "awful", "flimsy", "disappointing", "cheap", "useless", "noisy", "broken",
        "poor", "unreliable", "frustrating", "mediocre", "uncomfortable", "badly made"]
_INTENSIFIERS = ["", "", "really ", "very ", "quite ", "extremely ", "surprisingly ", "pretty "]
_OPENERS = ["", "", "", "Honestly, ", "Overall, ", "After two weeks, ", "For the price, ",
            "To be fair, ", "In short, ", "After a month of use, ", "So far, ", "Sadly, ",
            "Happily, ", "Long story short, "]
_LIKE = ["love", "like", "enjoy", "adore", "appreciate"]
_DISLIKE = ["hate", "dislike", "regret buying", "can't stand", "returned"]
_ENDINGS = ["", "", ".", "!", " :)", " :(", "...", " 👍", " 👎"]


def _adj(rng: random.Random, positive: bool) -> str:
    return rng.choice(_INTENSIFIERS) + rng.choice(_GOOD if positive else _BAD)


def review(rng: random.Random, positive: bool) -> str:
    """One review sentence whose overall sentiment is ``positive``."""
    product = rng.choice(list(_PRODUCTS))
    aspect, other = rng.sample(_PRODUCTS[product], 2)
    form = rng.randrange(7)
    if form == 0:
        body = f"the {aspect} of this {product} is {_adj(rng, positive)}"
    elif form == 1:  # negation flips the adjective
        body = f"the {aspect} of this {product} is not {rng.choice(_BAD if positive else _GOOD)}"
    elif form == 2:  # contrast: the clause after "but" decides
        body = (f"the {other} is {_adj(rng, not positive)}, but the {aspect} is "
                f"{_adj(rng, positive)}")
    elif form == 3:
        verb = rng.choice(_LIKE if positive else _DISLIKE)
        body = f"I {verb} this {product}, the {aspect} is {_adj(rng, positive)}"
    elif form == 4:
        would = "would" if positive else "would not"
        body = f"I {would} recommend this {product} to a friend, the {aspect} is {_adj(rng, positive)}"
    elif form == 5:
        body = (f"this {product} {'exceeded' if positive else 'fell short of'} my expectations "
                f"and the {aspect} feels {_adj(rng, positive)}")
    else:
        verdict = rng.choice(["worth every penny", "a keeper", "a great buy"] if positive else
                             ["a waste of money", "a letdown", "not worth it"])
        body = f"the {aspect} is {_adj(rng, positive)} and the {product} is {verdict}"
    opener = rng.choice(_OPENERS)
    text = opener + body if opener else body[0].upper() + body[1:]
    return text + rng.choice(_ENDINGS)


def mixed_review(rng: random.Random, positive: bool) -> str:
    """A review with both polarities whose main clause (the one a contrast marks) is
    ``positive``: "mostly positive" / "mostly negative"."""
    product = rng.choice(list(_PRODUCTS))
    aspect, other = rng.sample(_PRODUCTS[product], 2)
    good, bad = _adj(rng, positive), _adj(rng, not positive)
    form = rng.randrange(5)
    if form == 0:
        body = f"the {other} is {bad}, but the {aspect} is {good}"
    elif form == 1:
        body = f"although the {other} is {bad}, the {aspect} of this {product} is {good}"
    elif form == 2:
        verb = rng.choice(_LIKE if positive else _DISLIKE)
        body = f"I {verb} this {product}, even though the {other} is {bad}"
    elif form == 3:
        body = f"despite the {bad} {other}, the {aspect} is {good}"
    else:
        body = f"the {aspect} is {good}, which matters more to me than the {bad} {other}"
    opener = rng.choice(_OPENERS)
    text = opener + body if opener else body[0].upper() + body[1:]
    return text + rng.choice(_ENDINGS)


def rated_review(rng: random.Random, rating: int) -> str:
    """A review of rating ``rating`` (index into :data:`LABELS`)."""
    if rating in (1, 2):
        return mixed_review(rng, rating == 2)
    while True:  # one polarity: the single-opinion forms of review()
        text = review(rng, rating == 3)
        if ", but the " not in text:
            return text


def _unique_reviews(rng: random.Random, count: int, seen: set[str]) -> list[tuple[str, str]]:
    """``count`` distinct (review, rating) rows; LABEL_NOISE of them with a neighbouring
    rating."""
    rows = []
    while len(rows) < count:
        rating = rng.randrange(len(LABELS))
        text = rated_review(rng, rating)
        if text in seen:
            continue
        seen.add(text)
        if rng.random() < LABEL_NOISE:
            rating += -1 if rating == len(LABELS) - 1 or (rating and rng.random() < 0.5) else 1
        rows.append((text, LABELS[rating]))
    return rows


def write_sentiment(folder: str, *, seed: int, num_train: int, num_dev: int,
                    num_corpus: int) -> dict[str, str]:
    """``train.jsonl`` and ``dev.jsonl`` (text, label) and ``corpus.txt`` in ``folder``."""
    paths = {name: os.path.join(folder, f) for name, f in
             (("train", "train.jsonl"), ("dev", "dev.jsonl"), ("corpus", "corpus.txt"))}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    seen: set[str] = set()
    labeled = _unique_reviews(rng, num_train + num_dev, seen)
    corpus = [text for text, _ in _unique_reviews(rng, num_corpus, seen)]
    corpus += rng.sample(corpus, num_corpus // 100) + [""] * (num_corpus // 500)
    rng.shuffle(corpus)
    for name, rows in (("train", labeled[:num_train]), ("dev", labeled[num_train:])):
        write_atomic(paths[name], "".join(
            json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n" for t, label in rows))
    write_atomic(paths["corpus"], "".join(line + "\n" for line in corpus))
    return paths


def write_atomic(path: str, content: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)
