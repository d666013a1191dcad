"""Stage schedules: gradual unfreezing phases and layer mappings between student and teacher.

Layer numbering follows Hugging Face's ``hidden_states``: 0 is the embedding output, 1..L the
transformer blocks. Pure: no Ray, no DeepSpeed.
"""

from __future__ import annotations

import math
import re

from torch import nn

from xdistil_ray.modeling.layer_maps import uniform_layers

EMBEDDINGS = "embeddings"
HEAD = "head"
# Blocks: encoder.layer.<i> (BERT-like, DeBERTa), transformer.layer.<i> (DistilBERT),
# layers.<i> (ModernBERT); embeddings with ELECTRA's projection beside them.
_BLOCK = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings(?:_project)?\.")


# ------------------------------------------------------------------ gradual unfreezing

def num_phases(num_blocks: int) -> int:
    """Phases of gradual unfreezing: head only, then one more block per phase from the top,
    then the embeddings."""
    return num_blocks + 2


def phase_length(total_steps: int, num_blocks: int, unfreeze_steps: int) -> int:
    """Steps per phase: ``unfreeze_steps``, or the stage split evenly into the phases."""
    return unfreeze_steps or max(1, math.ceil(total_steps / num_phases(num_blocks)))


def phase_at(step: int, length: int, num_blocks: int) -> int:
    """Phase of the optimizer step with 0-based index ``step``."""
    return min(step // length, num_phases(num_blocks) - 1)


def trainable_groups(phase: int, num_blocks: int) -> set[str]:
    """Parameter groups that train in ``phase``: the head always, then blocks top-down
    (``block<i>``, 0-based), the embeddings last."""
    groups = {HEAD}
    for i in range(num_blocks - 1, max(-1, num_blocks - 1 - phase), -1):
        groups.add(f"block{i}")
    if phase >= num_blocks + 1:
        groups.add(EMBEDDINGS)
    return groups


def all_groups(num_blocks: int) -> set[str]:
    return trainable_groups(num_phases(num_blocks) - 1, num_blocks)


def group_of(param_name: str) -> str:
    """The unfreezing group of a parameter: ``embeddings``, ``block<i>`` or ``head`` (task
    head, pooler, projections: everything outside the encoder's embeddings and blocks)."""
    if _EMBEDDINGS.search(param_name):
        return EMBEDDINGS
    match = _BLOCK.search(param_name)
    if match:
        return f"block{match.group(1)}"
    return HEAD


def apply_groups(module: nn.Module, groups: set[str], never: set[str] = frozenset()) -> list[str]:
    """Sets ``requires_grad`` so that exactly the parameters of ``groups`` train (minus the
    names in ``never``); returns the names of the trainable parameters."""
    trainable = []
    for name, param in module.named_parameters():
        on = group_of(name) in groups and name not in never
        param.requires_grad_(on)
        if on:
            trainable.append(name)
    return trainable


# ------------------------------------------------------------------ layer mappings

def _resolve(layer: int, num_layers: int, who: str) -> int:
    index = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= index <= num_layers:
        raise ValueError(f"{who} layer {layer} does not exist: it has layers 0 (embeddings) "
                         f"to {num_layers}")
    return index


def layer_pairs(layer_map: str, *, num_student: int, num_teacher: int, last_k: int = 1,
                layers: list | tuple = ()) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs of hidden states to match.

    Args:
        layer_map: ``last`` (the top ``last_k`` layers of each, top-down), ``uniform`` (every
            student block to a uniformly spaced teacher block) or ``explicit`` (``layers``).
        num_student, num_teacher: transformer blocks of each model.

    Raises:
        ValueError: a layer that does not exist, or ``last_k`` above either model's depth.
    """
    if layer_map == "last":
        if last_k > min(num_student, num_teacher):
            raise ValueError(f"last_k {last_k} exceeds the blocks of the student "
                             f"({num_student}) or the teacher ({num_teacher})")
        return [(num_student - j, num_teacher - j) for j in range(last_k)]
    if layer_map == "uniform":
        return list(zip(range(1, num_student + 1), uniform_layers(num_teacher, num_student)))
    if layer_map == "explicit":
        return [(_resolve(s, num_student, "student"), _resolve(t, num_teacher, "teacher"))
                for s, t in layers]
    raise ValueError(f"unknown layer_map {layer_map!r}")


def block_index(layer: int, num_layers: int, who: str) -> int:
    """0-based index of a transformer block given 1-based (negative from the top)."""
    index = _resolve(layer, num_layers, who)
    if index == 0:
        raise ValueError(f"{who} layer 0 is the embeddings, not an attention block")
    return index - 1
