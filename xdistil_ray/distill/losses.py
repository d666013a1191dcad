"""Transfer losses: pure functions of tensors, computed in fp32.

Every loss takes an optional boolean ``mask`` over the positions it compares (rows [B] for
sentence tasks, tokens [B, T] for token tasks) and is the mean over the counted positions; a
mask that counts nothing gives 0, not NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xdistil_ray.modeling.outputs import IGNORE_LABEL

_MASKED_SCORE = -1e9  # finite: a fully masked row stays defined (uniform), never NaN


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` [...] over positions where ``mask`` [...] is true; 0 when none is."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def representation_mse(student: torch.Tensor, teacher: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the student's (projected) hidden states and the teacher's.

    Args:
        student: [..., H] student states, already projected to the teacher's width H
            ([B, H] CLS vectors, or [B, T, H] every token).
        teacher: [..., H] teacher states.
        mask: [...] bool, positions to count (None = all).

    Returns:
        Scalar: mean over counted positions of the mean squared error over H.
    """
    per_position = (student.float() - teacher.float()).pow(2).mean(dim=-1)
    return _masked_mean(per_position, mask)


def hidden_states_mse(student: list[torch.Tensor], teacher: list[torch.Tensor],
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Hidden-state transfer (HS) over a layer mapping: mean over the mapped pairs of
    :func:`representation_mse` on every counted token.

    Args:
        student: per mapped pair, [B, T, H] student states projected to the teacher's width.
        teacher: per mapped pair, [B, T, H] teacher states.
        mask: [B, T] bool, real tokens.
    """
    assert len(student) == len(teacher) and student, "one teacher layer per student layer"
    return torch.stack([representation_mse(s, t, mask) for s, t in zip(student, teacher)]).mean()


def logit_mse(student: torch.Tensor, teacher: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE on raw logits, as XtremeDistil does.

    Args:
        student: [..., C] student logits.
        teacher: [..., C] teacher logits.
        mask: [...] bool, positions to count (None = all).

    Returns:
        Scalar: mean over counted positions of the mean squared error over C.
    """
    return representation_mse(student, teacher, mask)


def logit_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
             *, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of temperature-softened distributions, times T^2 (Hinton et al.).

    Args:
        student: [..., C] student logits.
        teacher: [..., C] teacher logits.
        mask: [...] bool, positions to count (None = all).
        temperature: softening temperature T > 0.

    Returns:
        Scalar: mean over counted positions of T^2 * KL.
    """
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    per_position = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * t * t
    return _masked_mean(per_position, mask)


def span_logits(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Extractive QA's start and end logits [B, T, 2] as two distributions over positions
    [B, 2, T], padded positions out of both (:data:`_MASKED_SCORE`). :func:`logit_kl` on two
    of these is the start/end KL of QA distillation, and :func:`label_cross_entropy` with
    [B, 2] gold (start, end) tokens its gold-span loss."""
    spans = logits.float().transpose(1, 2)
    if mask is not None:
        spans = spans.masked_fill(~mask.bool()[:, None, :], _MASKED_SCORE)
    return spans




def label_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on gold labels.

    Args:
        logits: [..., C] student logits.
        labels: [...] int64 class indices; ``IGNORE_LABEL`` positions are not counted.
        mask: [...] bool, positions to count (None = all with a label).

    Returns:
        Scalar: mean over counted positions of -log p(label).
    """
    counted = labels != IGNORE_LABEL
    if mask is not None:
        counted = counted & mask.bool()
    log_p = F.log_softmax(logits.float(), dim=-1)
    safe = labels.clamp(min=0).unsqueeze(-1)
    per_position = -log_p.gather(-1, safe).squeeze(-1)
    return _masked_mean(per_position, counted)


def self_relation(x: torch.Tensor, mask: torch.Tensor | None, num_heads: int) -> torch.Tensor:
    """MiniLMv2 self-attention relation: log softmax(X_h X_h^T / sqrt(d_h)) per relation head.

    Args:
        x: [B, T, H] queries, keys or values of one layer (all attention heads concatenated).
        mask: [B, T] bool, real tokens; padded keys get no probability.
        num_heads: relation heads R; H must be a multiple of R.

    Returns:
        [B, R, T, T] log-probabilities over keys (last dim).
    """
    b, t, h = x.shape
    assert h % num_heads == 0, f"width {h} is not a multiple of {num_heads} relation heads"
    d = h // num_heads
    xh = x.float().view(b, t, num_heads, d).transpose(1, 2)  # [B, R, T, d]
    scores = xh @ xh.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], _MASKED_SCORE)
    return F.log_softmax(scores, dim=-1)


def attention_relation_kl(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...],
                          mask: torch.Tensor | None = None, *, num_heads: int) -> torch.Tensor:
    """MiniLMv2 multi-head self-attention relation transfer (MHA).

    For each of queries, keys and values: the student's and the teacher's relations are
    split into the same ``num_heads`` relation heads (so the models' own head counts and widths
    may differ) and compared by KL(teacher || student) over keys; the three are summed.

    Args:
        student: (Q, K, V) of the student layer, each [B, T, H_s].
        teacher: (Q, K, V) of the teacher layer, each [B, T, H_t].
        mask: [B, T] bool, real tokens (queries counted, keys attended).
        num_heads: relation heads; must divide H_s and H_t.

    Returns:
        Scalar: sum over Q, K, V of the mean over relation heads and counted query tokens of
        KL over keys.
    """
    assert len(student) == len(teacher), "the same relations from both models"
    total = torch.zeros((), dtype=torch.float32, device=student[0].device)
    for s, t in zip(student, teacher):
        log_s = self_relation(s, mask, num_heads)
        log_t = self_relation(t, mask, num_heads)
        per_query = (log_t.exp() * (log_t - log_s)).sum(dim=-1)  # [B, R, T]
        query_mask = None if mask is None else mask.bool()[:, None, :].expand_as(per_query)
        total = total + _masked_mean(per_query, query_mask)
    return total
