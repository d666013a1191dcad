"""The embedded default's data, generated from a seed: nothing can be downloaded at run time,
so the default run makes its own labeled sets and transfer corpus, for every task shape
(:mod:`xdistil_ray.data.embedded_reviews`: sentiment; :mod:`xdistil_ray.data.embedded_tasks`: pairs and
tags). The same seed gives the same files."""

from __future__ import annotations

import os

from xdistil_ray.data import embedded_reviews
from xdistil_ray.data import embedded_tasks


def write_embedded_data(folder: str, *, seed: int = 0, num_train: int = 2000, num_dev: int = 500,
                        num_corpus: int = 20_800, task: str = "sentence") -> dict[str, str]:
    """Writes ``train.jsonl``, ``dev.jsonl`` and the corpus into ``folder/<task>`` (if absent).

    ``sentence``/``none``: review sentiment, corpus.txt. ``pair``: (review, claim) pairs labeled
    entailment / contradiction, corpus.jsonl with ``text`` and ``text_pair``. ``token``: review
    words tagged (``text`` holds the word list, ``label`` the tags: B-/I- ASPECT, PRODUCT,
    OPINION, and O), corpus.txt. ``qa``: SQuAD 2.0-style questions about reviews (a third
    unanswerable), corpus.jsonl of questions with their contexts, a quarter of ``num_corpus``
    (a context is several sentences). The corpus is disjoint from the labeled sets and, like
    real crawled text, carries a few empty lines and repeated rows for the cleaning step.

    Returns:
        {"train": path, "dev": path, "corpus": path}.
    """
    if task in ("pair", "token", "qa"):
        return embedded_tasks.write(os.path.join(folder, task), task, seed=seed,
                                    num_train=num_train, num_dev=num_dev,
                                    num_corpus=num_corpus // 4 if task == "qa" else num_corpus)
    return embedded_reviews.write_sentiment(folder, seed=seed, num_train=num_train,
                                            num_dev=num_dev, num_corpus=num_corpus)
