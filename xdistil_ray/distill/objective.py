"""A training stage's objective: its losses resolved against the two models, the student-side
projections they need, the teacher's targets (stored or online) and the weighted sum.

Plain data crosses to the workers (:class:`LossSpec`); the tensors stay here and in
:mod:`xdistil_ray.distill.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xdistil_ray.distill import losses
from xdistil_ray.distill import schedule
from xdistil_ray.modeling.families import FAMILIES

@dataclass(frozen=True)
class LossSpec:
    """One loss of a stage, resolved: layer numbers are those of the two actual models."""

    type: str
    weight: float = 1.0
    function: str = "mse"
    temperature: float = 1.0
    pairs: tuple[tuple[int, int], ...] = ()
    """``representation``/``hidden_states``: (student, teacher) hidden-state indices (0 =
    embeddings)."""
    relation_heads: int = 0
    student_block: int = -1
    """``attention_relations``: 0-based student block."""
    teacher_block: int = -1
    """``attention_relations``: 0-based teacher block."""


def resolve_losses(configs: list, *, num_student: int, num_teacher: int, student_hidden: int,
                   teacher_hidden: int, teacher_heads: int) -> list[LossSpec]:
    """Turns a stage's loss configs (:class:`xdistil_ray.config.LossConfig`) into specs.

    Raises:
        ValueError: a layer either model lacks, or relation heads that do not divide both widths.
    """
    specs = []
    for c in configs:
        pairs, heads, s_block, t_block = (), 0, -1, -1
        if c.type in ("representation", "hidden_states"):
            pairs = tuple(schedule.layer_pairs(c.layer_map, num_student=num_student,
                                               num_teacher=num_teacher, last_k=c.last_k,
                                               layers=c.layers))
        if c.type == "attention_relations":
            heads = c.relation_heads or teacher_heads
            for who, width in (("student", student_hidden), ("teacher", teacher_hidden)):
                if width % heads:
                    raise ValueError(f"relation_heads {heads} does not divide the {who}'s width "
                                     f"{width}")
            s_block = schedule.block_index(c.student_layer, num_student, "student")
            t_block = schedule.block_index(c.teacher_layer, num_teacher, "teacher")
        specs.append(LossSpec(c.type, c.weight, c.function, c.temperature, pairs, heads,
                              s_block, t_block))
    return specs


def projection_name(index: int, student_layer: int, teacher_layer: int) -> str:
    return f"loss{index}_s{student_layer}_t{teacher_layer}"


def projections(specs: list[LossSpec], teacher_hidden: int) -> dict[str, int]:
    """Student-side projections to the teacher's width: one per matched layer pair."""
    return {projection_name(i, s, t): teacher_hidden for i, spec in enumerate(specs)
            for s, t in spec.pairs}


def uses_head(specs: list[LossSpec]) -> bool:
    """Whether any loss reads the task head's logits (else the head stays frozen)."""
    return any(s.type in ("logits", "labels") for s in specs)


_QKV = tuple(name for family in FAMILIES for name in family.qkv_names)


def reached(param_name: str, specs: list[LossSpec]) -> bool:
    """Whether any loss of the stage sends a gradient to the parameter.

    A parameter no loss reaches is kept out of the optimizer: it would otherwise still be moved
    by weight decay (and, under ZeRO, by zero-filled gradients). Logits and labels reach the
    whole model; hidden states reach the blocks up to the matched student layer (and the
    projections); attention relations reach the blocks below their block and its Q/K/V.
    """
    if param_name.startswith("projections."):
        return True
    group = schedule.group_of(param_name)
    if group == schedule.HEAD:
        return uses_head(specs)
    if uses_head(specs) or group == schedule.EMBEDDINGS:
        return True
    block = int(group[len("block"):])
    for spec in specs:
        if spec.pairs and block < max(s for s, _ in spec.pairs):
            return True
        if spec.type == "attention_relations" and (
                block < spec.student_block or
                block == spec.student_block and any(q in param_name for q in _QKV)):
            return True
    return False


def needs_hidden_states(specs: list[LossSpec]) -> bool:
    return any(s.pairs for s in specs)


def qkv_block(specs: list[LossSpec], side: str) -> int | None:
    """The block whose Q/K/V the attention relations need, on ``side`` (student/teacher)."""
    blocks = {getattr(s, f"{side}_block") for s in specs if s.type == "attention_relations"}
    assert len(blocks) <= 1, "one attention-relation loss per stage"
    return blocks.pop() if blocks else None


class OnlineTeacher:
    """A frozen teacher inside a training worker: targets per batch (bf16 on GPU).

    Args:
        model: the teacher model (any task head, or a plain encoder).
        specs: the stage's losses, which decide what is computed.
        device: where the batches live.
    """

    def __init__(self, model: torch.nn.Module, specs: list[LossSpec], device: torch.device):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.specs = specs

    @torch.no_grad()  # not inference_mode: its tensors enter the student's autograd graph
    def __call__(self, batch: dict) -> dict:
        from xdistil_ray.modeling.models import forward_outputs

        out = forward_outputs(self.model, batch, hidden_states=needs_hidden_states(self.specs),
                              qkv_block=qkv_block(self.specs, "teacher"))
        return {k: (tuple(t.float() for t in v) if isinstance(v, tuple) else v.float())
                if v is not None else None for k, v in out.items()}


def stored_targets(batch: dict, num_teacher: int) -> dict:
    """Targets from stored teacher outputs, shaped like :class:`OnlineTeacher`'s: the stored
    last-layer states sit at the teacher's top layer index ``num_teacher``."""
    hidden = None
    if "teacher_hidden" in batch:
        hidden = [None] * num_teacher + [batch["teacher_hidden"]]
    return {"logits": batch.get("teacher_logits"), "hidden_states": hidden, "qkv": None}


def compute(specs: list[LossSpec], student: dict, teacher: dict | None, batch: dict,
            projections_: torch.nn.ModuleDict, *, per_token: bool,
            spans: bool = False) -> tuple[torch.Tensor, dict]:
    """The stage's weighted loss and its parts.

    Args:
        student: :func:`xdistil_ray.modeling.models.forward_outputs` of the student.
        teacher: the same of the teacher (online), or :func:`stored_targets`; None for a stage
            with labels only.
        batch: the padded batch (``attention_mask``, ``labels``, stored targets).
        per_token: token task: logits are [B, T, C] and representation covers every token.
        spans: extractive QA (with ``per_token``): logits are start and end [B, T, 2], whose
            KL and gold-label cross-entropy are over positions (:func:`losses.span_logits`);
            ``labels`` [B, 2] are the gold start and end tokens.

    Returns:
        (scalar loss, {loss name: value}).
    """
    mask = batch["attention_mask"].bool()
    row_mask = mask if per_token else None
    total = torch.zeros((), dtype=torch.float32, device=mask.device)
    parts = {}
    for i, spec in enumerate(specs):
        if spec.type == "labels":
            logits = losses.span_logits(student["logits"], mask) if spans else student["logits"]
            value = losses.label_cross_entropy(logits, batch["labels"])
        elif spec.type == "logits":
            if spec.function == "kl" and spans:
                value = losses.logit_kl(losses.span_logits(student["logits"], mask),
                                        losses.span_logits(teacher["logits"], mask),
                                        temperature=spec.temperature)
            elif spec.function == "kl":
                value = losses.logit_kl(student["logits"], teacher["logits"], row_mask,
                                        temperature=spec.temperature)
            else:
                value = losses.logit_mse(student["logits"], teacher["logits"], row_mask)
        elif spec.type == "attention_relations":
            value = losses.attention_relation_kl(student["qkv"], teacher["qkv"], mask,
                                                 num_heads=spec.relation_heads)
        else:
            s_states, t_states = [], []
            for s, t in spec.pairs:
                s_states.append(projections_[projection_name(i, s, t)](student["hidden_states"][s]))
                t_states.append(teacher["hidden_states"][t])
            if spec.type == "representation" and not per_token:  # the CLS vector
                value = torch.stack([losses.representation_mse(
                    ss[:, 0], ts if ts.dim() == 2 else ts[:, 0]) for ss, ts in
                    zip(s_states, t_states)]).mean()
            else:
                value = losses.hidden_states_mse(s_states, t_states, mask)
        parts[f"{i}:{spec.type}"] = value.detach()
        total = total + spec.weight * value
    return total, parts
