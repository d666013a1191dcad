"""The task shapes a run distils for (``task:`` in the config), one :class:`Task` each.

Shared code asks the task (``task_of(cfg.task).per_token``) instead of branching on its name:
what its rows hold, which head the teacher and student carry, how predictions are pooled and
scored. tests/test_tasks.py lists the places that still name a task, and why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    head: str | None
    """The model's task head: ``sequence`` (a label per row), ``token`` (a label per word),
    ``qa`` (answer start and end per token), or None (a plain encoder: task-agnostic)."""
    summary: str
    """What a row is and what the model predicts, in a few words (the model card, the docs)."""
    pairs: bool = False
    """Each row holds two sentences, encoded as one pair (``corpus.text_pair_column``,
    ``labeled.text_pair_column``). Extractive QA packs its question and context as a pair too,
    from its own columns (``qa.*_column``)."""
    label_column: str = ""
    """What the labeled rows' label is: ``label`` (a class per row), ``tags`` (a class per
    word); empty where rows carry no class labels (QA's answers are spans; none has no labels)."""
    metrics: tuple[str, ...] = ()
    """The dev scores the report shows, the first one headline."""
    pipeline_tag: str = "feature-extraction"
    """The Hugging Face pipeline (and hub card tag) the exported student serves."""

    @property
    def labeled(self) -> bool:
        """Whether the run takes labeled data (every task with a head)."""
        return self.head is not None

    @property
    def classes(self) -> bool:
        """Whether rows carry class labels, so the head has one output per label name."""
        return bool(self.label_column)

    @property
    def per_token(self) -> bool:
        """Whether the head scores every token (its logits are per token, masked by the row's
        real tokens)."""
        return self.head in ("token", "qa")

    @property
    def per_word(self) -> bool:
        """Whether a row's labels are one per word (tags), predicted at each word's first
        token and scored as entities."""
        return self.label_column == "tags"

    @property
    def spans(self) -> bool:
        """Whether predictions are answer spans decoded from start and end logits, scored per
        question (exact match, F1) over the windows a context is cut into."""
        return self.head == "qa"

    @property
    def flat_rows(self) -> bool:
        """Whether a labeled row fits one line of .tsv / .csv (word lists and answers do not)."""
        return not self.per_token

    @property
    def pooling(self) -> str:
        """How a row's sentence representation is pooled: the first token's state for a
        sequence head (what it was trained to read), the mean of the real tokens otherwise."""
        return "cls" if self.head == "sequence" else "mean"


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("sentence", "sequence", "one sentence, one label", label_column="label",
         metrics=("accuracy", "macro_f1"), pipeline_tag="text-classification"),
    Task("pair", "sequence", "two sentences, one label (entailment, paraphrase)", pairs=True,
         label_column="label", metrics=("accuracy", "macro_f1"),
         pipeline_tag="text-classification"),
    Task("token", "token", "a label per word (named entities, tags)", label_column="tags",
         metrics=("entity_f1",), pipeline_tag="token-classification"),
    Task("qa", "qa", "the answer's span in a context (extractive QA)",
         metrics=("exact_match", "f1"), pipeline_tag="question-answering"),
    Task("none", None, "task-agnostic: the encoder's representations, no head"),
)}


def task_of(name: str) -> Task:
    """The :class:`Task` named ``name`` (the config has checked it is one)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"task: must be one of {', '.join(TASKS)}, got {name!r}") from None
