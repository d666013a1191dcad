"""Generated product reviews: the vocabulary, one review sentence, and the sentiment task's
files (positive / negative reviews, with negation and contrast so that word-spotting is not
enough, and an unlabeled corpus of the same domain). The same seed gives the same files."""

from __future__ import annotations

import json
import os
import random

LABELS = ("negative", "positive")

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


def _unique_reviews(rng: random.Random, count: int, seen: set[str]) -> list[tuple[str, str]]:
    rows = []
    while len(rows) < count:
        positive = rng.random() < 0.5
        text = review(rng, positive)
        if text not in seen:
            seen.add(text)
            rows.append((text, LABELS[positive]))
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
