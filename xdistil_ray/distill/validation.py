"""Validation of a training stage: a score measured as it trains, the best weights kept, and
an early stop when the score stops improving.

- :class:`Validation`: on labeled dev data, a dev score after each epoch, stopped after
  ``patience`` epochs without a better one. Used by the teacher fine-tune, by a distillation
  stage on labeled data (XtremeDistil's ``labels`` stage) and by ``jobs/finetune.py``, when
  the run has a dev set (``labeled.dev``, or a share of ``labeled.train``).
- :class:`HeldoutLoss`: a stage on the transfer set, its own loss on held-out transfer rows
  every ``check_every`` steps (``train.early_stop``). With gradual unfreezing, a phase whose
  loss stops improving hands over to the next one early (XtremeDistil fits each unfreezing
  step to an early stop on its validation loss); in the last phase it ends the stage.

Every rank measures the same rows (a ZeRO-3 forward is collective) and takes rank 0's score.
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


def for_stage(spec, state: dict | None = None):
    """The stage's validation: dev scores where it has dev files, its held-out transfer loss
    where it has held-out checks, else a :class:`Validation` that is not enabled."""
    if not spec.validation and getattr(spec, "check_every", 0) > 0 and spec.heldout_check:
        return HeldoutLoss(spec, state)
    return Validation(spec, state)


def broadcast_from_rank0(value: float) -> float:
    """Rank 0's ``value`` on every rank (their decisions must agree)."""
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.broadcast(tensor, src=0)
        value = float(tensor)
    return value


class Validation:
    """Per-epoch dev scores of one stage, its best epoch and whether to stop.

    Args:
        spec: the stage (:class:`~xdistil_ray.distill.train_loop.StageSpec`); ``spec.validation`` are
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
        self.phase_starts: dict[int, int] = {int(p): s for p, s in
                                             state.get("phase_starts", [])}
        """Unfreezing phases that a plateau started early: phase -> its first step (held-out
        checks only: dev scores never start a phase)."""

    @property
    def tag(self) -> str:
        """The score's name on TensorBoard."""
        return f"dev/{self.metric}"

    def phase_floor(self, step: int) -> int:
        """The latest phase a plateau started at or before 0-based step ``step`` (0: none)."""
        return max([p for p, s in self.phase_starts.items() if s <= step], default=0)

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
        self.scores.append([self._index(step), step, score])
        if self.best < 0 or self._better(score, self.scores[self.best][2]):
            self.best = len(self.scores) - 1
            self.best_state = trainer.full_state()
        return score

    def _index(self, step: int) -> int:
        return math.ceil(step / self.spec.steps_per_epoch)

    def _better(self, score: float, best: float) -> bool:
        return score > best

    def verdict(self, step: int, phase_start: int, last_phase: bool) -> str:
        """After a measure at ``step``: ``stop`` (the stage ends here), ``advance`` (its next
        unfreezing phase starts here) or ``go``. Dev scores stop a stage in any phase."""
        return "stop" if self.should_stop() and step < self.spec.total_steps else "go"

    def line(self, stopping: bool) -> str:
        """The console line of the last measure."""
        epoch, _, score = self.scores[-1]
        return (f"epoch {epoch} dev {self.metric} {score:.4f}"
                + (f", stopping: {self.stop_reason()}" if stopping else ""))

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
        from xdistil_ray.modeling.scoring import DEV_COLUMNS, dev_scores, read_rows
        from xdistil_ray.modeling.vocab_map import mapped_rows, table_of

        if self._rows is None:
            rows = read_rows(self.spec.run, list(self.spec.validation), DEV_COLUMNS, 10**9, False)
            self._rows = mapped_rows(rows, table_of(self.spec.vocab))
            self.chance = chance_score(self.metric, self._rows.get("label"))
        was_training = model.training
        model.eval()
        try:
            score = float(dev_scores(self.spec.task, model, self._rows,
                                     self.spec.label_names, self.spec.windows)[self.metric])
        finally:
            model.train(was_training)
        return broadcast_from_rank0(score)


class HeldoutLoss(Validation):
    """The stage's loss on held-out transfer rows every ``spec.check_every`` steps. A check
    makes progress when its loss is below the best so far by more than
    ``spec.min_improvement`` of it; ``spec.patience`` checks without progress, counted from the
    start of the current unfreezing phase, end that phase early, or the stage in its last
    phase. The lowest loss's weights end the stage."""

    tag = "loss/heldout"

    def __init__(self, spec, state: dict | None = None):
        super().__init__(spec, state)
        self.metric = "heldout_loss"
        self.improved: int | None = (state or {}).get("improved")
        """The step of the last check whose loss made progress."""
        self._batches = None

    @property
    def enabled(self) -> bool:
        return self.spec.check_every > 0 and bool(self.spec.heldout_check)

    def due(self, step: int) -> bool:
        return self.enabled and (step % self.spec.check_every == 0
                                 or step == self.spec.total_steps)

    def _index(self, step: int) -> int:
        return len(self.scores) + 1

    def _better(self, score: float, best: float) -> bool:
        return score < best

    def measure(self, trainer, step: int) -> float:
        """Checks the loss; the lowest one's weights are kept, and a loss below the best so far
        by more than ``min_improvement`` of it counts as progress."""
        self._trainer = trainer
        best = self.scores[self.best][2] if self.best >= 0 else None
        score = super().measure(trainer, step)
        if best is None or score < best * (1.0 - self.spec.min_improvement):
            self.improved = step
        return score

    def plateau(self, since: int) -> bool:
        """``patience`` checks after both the last one that made progress and step ``since``
        (the current phase's start)."""
        if self.spec.patience <= 0 or self.improved is None:
            return False
        after = max(self.improved, since)
        return sum(1 for _, step, _ in self.scores if step > after) >= self.spec.patience

    def should_stop(self) -> bool:
        """Not used: :meth:`verdict` decides, knowing the unfreezing phase."""
        return False

    def verdict(self, step: int, phase_start: int, last_phase: bool) -> str:
        if step >= self.spec.total_steps or not self.plateau(phase_start):
            return "go"
        return "stop" if last_phase else "advance"

    def advance(self, phase: int, step: int) -> None:
        """Phase ``phase`` starts at ``step`` (after the next optimizer step's index)."""
        self.phase_starts[phase] = step

    def line(self, stopping: bool) -> str:
        _, step, loss = self.scores[-1]
        return (f"step {step} held-out loss {loss:.4f} (best {self.scores[self.best][2]:.4f} "
                f"at step {self.best_step()})" + (f", stopping: {self.stop_reason()}"
                                                  if stopping else ""))

    def stop_reason(self) -> str:
        return (f"no held-out loss {self.spec.min_improvement:.0%} below the best in "
                f"{self.spec.patience} check(s) since step {self.improved}")

    def at_chance(self) -> bool:
        return False

    def progress(self) -> dict:
        return {**super().progress(), "improved": self.improved,
                "phase_starts": sorted(self.phase_starts.items())}

    def summary(self, stopped_early: bool) -> dict:
        return {"metric": self.metric, "every": self.spec.check_every,
                "scores": self.scores, "kept_step": self.best_step(),
                "stopped_early": stopped_early,
                "phase_starts": sorted(self.phase_starts.items())}

    @torch.no_grad()
    def _score(self, model) -> float:
        from xdistil_ray.modeling.batches import PadCollate
        from xdistil_ray.modeling.scoring import read_rows

        trainer, spec = self._trainer, self.spec
        if self._batches is None:
            rows = read_rows(spec.run, list(spec.heldout_check), list(spec.check_columns),
                             spec.check_rows, True)
            collate = PadCollate(trainer.pad_id, spec.label_names, spec.per_token)
            n = len(rows.get("input_ids", []))
            self._batches = [(min(spec.batch_size, n - i),
                              collate({k: v[i:i + spec.batch_size] for k, v in rows.items()}))
                             for i in range(0, n, spec.batch_size)]
        module = trainer.engine.module
        was_training = module.training
        module.eval()
        total, count = 0.0, 0
        try:
            for size, batch in self._batches:
                batch = {k: v.to(trainer.engine.device) for k, v in batch.items()}
                loss, _ = trainer.loss(batch)
                total, count = total + float(loss) * size, count + size
        finally:
            module.train(was_training)
        return broadcast_from_rank0(total / max(count, 1))
