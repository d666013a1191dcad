"""Transfer losses: pure functions of tensors, computed in fp32, mean-reduced over real rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _row_mean(per_row: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``per_row`` [B] over rows where ``mask`` [B] is true; 0 when none is."""
    if mask is None:
        return per_row.mean()
    mask = mask.to(per_row.dtype)
    return (per_row * mask).sum() / mask.sum().clamp(min=1.0)


def _mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    per_row = (student.float() - teacher.float()).pow(2).mean(dim=-1)
    return _row_mean(per_row, mask)


def representation_mse(student: torch.Tensor, teacher: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the student's (projected) hidden state and the teacher's.

    Args:
        student: [B, H] student states, already projected to the teacher's width H.
        teacher: [B, H] teacher states.
        mask: [B] bool, rows to count (None = all).

    Returns:
        Scalar: mean over counted rows of the mean squared error over H.
    """
    return _mse(student, teacher, mask)


def logit_mse(student: torch.Tensor, teacher: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE on raw logits, as XtremeDistil does.

    Args:
        student: [B, C] student logits.
        teacher: [B, C] teacher logits.
        mask: [B] bool, rows to count (None = all).

    Returns:
        Scalar: mean over counted rows of the mean squared error over C.
    """
    return _mse(student, teacher, mask)


def logit_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
             *, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of temperature-softened distributions, times T^2 (Hinton et al.).

    Args:
        student: [B, C] student logits.
        teacher: [B, C] teacher logits.
        mask: [B] bool, rows to count (None = all).
        temperature: softening temperature T > 0.

    Returns:
        Scalar: mean over counted rows of T^2 * KL.
    """
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    per_row = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * t * t
    return _row_mean(per_row, mask)


def label_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on gold labels.

    Args:
        logits: [B, C] student logits.
        labels: [B] int64 class indices.
        mask: [B] bool, rows to count (None = all).

    Returns:
        Scalar: mean over counted rows of -log p(label).
    """
    per_row = F.cross_entropy(logits.float(), labels, reduction="none")
    return _row_mean(per_row, mask)
