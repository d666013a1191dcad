"""Validation of a training stage on labeled dev data: a dev score after each epoch, the best
epoch's weights kept, and an early stop after ``patience`` epochs without a better score.

Used by the teacher fine-tune, by a distillation stage on labeled data (XtremeDistil's
``labels`` stage) and by ``jobs/finetune.py``, when the run has a dev set (``labeled.dev``, or
a share of ``labeled.train``). Every rank measures the same rows (a ZeRO-3 forward is
collective) and takes rank 0's score.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

BEST_MODULE_FILE = "best_module.pt"
"""In a checkpoint, when the best epoch's weights are not the checkpoint's own."""


CHANCE_MARGIN = 0.1
"""A score closer to chance than this share of the way to perfect has not started learning."""


def chance_score(metric: str, labels: list | None) -> float:
    """The score of always answering the most frequent label: its share of ``labels`` for
    accuracy, 0 for the F1 metrics (entity F1, SQuAD F1) and without labels."""
    if metric != "accuracy" or not labels:
        return 0.0
    return max(Counter(labels).values()) / len(labels)


def primary_metric(task: str) -> str:
    """The dev score that picks the best epoch: entity F1 for token tasks, SQuAD F1 for QA,
    else accuracy."""
    return {"token": "entity_f1", "qa": "f1"}.get(task, "accuracy")


class Validation:
    """Per-epoch dev scores of one stage, its best epoch and whether to stop.

    Args:
        spec: the stage (:class:`~xdistil_ray.train_loop.StageSpec`); ``spec.validation`` are
            the dev files, ``spec.steps_per_epoch`` the epoch length, ``spec.patience`` the
            epochs without improvement that stop it (0: never stop early).
        state: what a checkpoint's progress recorded (``scores``, ``best``), to resume.
    """

    def __init__(self, spec, state: dict | None = None):
        self.spec = spec
        self.metric = primary_metric(spec.task)
        state = state or {}
        self.scores: list[list] = [list(s) for s in state.get("scores", [])]
        """[epoch, step, score] per measured epoch."""
        self.best: int = state.get("best", -1)
        """Index in ``scores`` of the best epoch (-1: none yet)."""
        self.best_state: dict | None = None
        """The best epoch's full weights, when they are not the current ones."""
        self._rows = None
        self.chance: float | None = state.get("chance")
        """The dev score of always answering the dev set's most frequent label (accuracy; 0 for
        F1 metrics), once the dev rows are read: patience waits until a score leaves it."""

    @property
    def enabled(self) -> bool:
        return bool(self.spec.validation) and self.spec.steps_per_epoch > 0

    def due(self, step: int) -> bool:
        """Whether ``step`` ends an epoch (or the stage)."""
        return self.enabled and (step % self.spec.steps_per_epoch == 0
                                 or step == self.spec.total_steps)

    def measure(self, trainer, step: int) -> float:
        """Scores the current weights on the dev rows; a better score than every earlier epoch
        makes them the best, and a copy of them is kept (every rank: a collective under
        ZeRO-3) to come back to if later epochs are worse."""
        score = self._score(trainer.engine.module.student)
        epoch = math.ceil(step / self.spec.steps_per_epoch)
        self.scores.append([epoch, step, score])
        if self.best < 0 or score > self.scores[self.best][2]:
            self.best = len(self.scores) - 1
            self.best_state = trainer.full_state()
        return score

    def best_step(self) -> int | None:
        return self.scores[self.best][1] if self.best >= 0 else None

    def restore(self, best_state: dict | None, trainer, step: int) -> None:
        """After a resume at ``step``: the best weights from the checkpoint, or the current
        ones when the best epoch ended at ``step``."""
        if best_state is not None:
            self.best_state = best_state
        elif self.best_step() == step:
            self.best_state = trainer.full_state()

    def pending_best(self, step: int) -> dict | None:
        """The best weights when they differ from the weights at ``step`` (a checkpoint then
        carries them; the stage's end goes back to them)."""
        return self.best_state if self.best_step() not in (None, step) else None

    def should_stop(self) -> bool:
        """After ``patience`` epochs without a better score, or at a perfect one (no later
        epoch can beat it). Epochs at chance do not count: a task that is hard to start (the
        embedded pairs, an XOR of two sentences before their claim's cue) can sit at the
        majority class for an epoch or two before it learns, and patience 1 stopped such a
        teacher at 51.0% (majority 51.5%) where the same recipe reached 92-100% at other
        seeds."""
        if self.spec.patience <= 0 or self.best < 0:
            return False
        best = self.scores[self.best][2]
        if best >= 1.0:
            return True
        return len(self.scores) - 1 - self.best >= self.spec.patience and not self.at_chance()

    def at_chance(self) -> bool:
        """Whether the best score so far is within a tenth of the way from chance (the
        majority label's share; 0 for F1) to a perfect score."""
        if self.best < 0:
            return True
        chance = self.chance if self.chance is not None else 0.0
        return self.scores[self.best][2] < chance + (1.0 - chance) * CHANCE_MARGIN

    def chance_warning(self) -> str:
        """What to tell a user whose stage ended with its dev score at chance."""
        best = self.scores[self.best][2] if self.best >= 0 else 0.0
        return (f"the dev {self.metric} never left chance ({best:.1%}, always answering the "
                f"most frequent label scores {self.chance or 0.0:.1%}): the model has not "
                "learned the task. Give it more epochs or another learning rate "
                "(teacher.finetune.epochs / learning_rate, or the stage's), or check the labels")

    def stop_reason(self) -> str:
        if self.scores[self.best][2] >= 1.0:
            return "a perfect dev score"
        return f"no better score in {self.spec.patience} epoch(s)"

    def best_epoch(self) -> int | None:
        return self.scores[self.best][0] if self.best >= 0 else None

    def progress(self) -> dict:
        """What a checkpoint records to resume."""
        return {"scores": self.scores, "best": self.best, "chance": self.chance}

    def summary(self, stopped_early: bool) -> dict:
        """For the stage's commit marker and the report."""
        return {"metric": self.metric, "scores": self.scores, "kept_epoch": self.best_epoch(),
                "stopped_early": stopped_early}

    @torch.no_grad()
    def _score(self, model) -> float:
        from xdistil_ray.steps.evaluate import DEV_COLUMNS, dev_scores, read_rows

        if self._rows is None:
            self._rows = read_rows(self.spec.run, list(self.spec.validation), DEV_COLUMNS,
                                   10**9, False)
            self.chance = chance_score(self.metric, self._rows.get("label"))
        was_training = model.training
        model.eval()
        try:
            score = float(dev_scores(self.spec.task, model, self._rows,
                                     self.spec.label_names, self.spec.windows)[self.metric])
        finally:
            model.train(was_training)
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            value = torch.tensor([score], dtype=torch.float64)
            torch.distributed.broadcast(value, src=0)
            score = float(value)
        return score
