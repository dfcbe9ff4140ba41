"""Pointwise losses: each slot on its own."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from irdistill.losses.base import check_inputs, real_scores, reduce_terms, register


@register("bce")
def bce(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
        ) -> torch.Tensor:
    """Binary cross-entropy on logits (monoBERT, Nogueira & Cho 2019, arXiv 1901.04085).

    Each slot: ``BCEWithLogits(s_i, y_i)`` with ``y_i = 1 if t_i > 0 else 0``; so graded
    labels count as relevant when positive.
    """
    mask = check_inputs(scores, targets, mask)
    labels = (targets > 0).to(scores.dtype)
    terms = F.binary_cross_entropy_with_logits(real_scores(scores, mask), labels, reduction="none")
    return reduce_terms(terms, mask)


@register("mse")
def mse(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
        ) -> torch.Tensor:
    """Mean squared error to the target scores: each slot ``(s_i - t_i)^2``.

    Pointwise distillation of teacher scores (e.g. arXiv 2010.02666, section 3).
    """
    mask = check_inputs(scores, targets, mask)
    t = targets.masked_fill(~mask, 0.0)
    return reduce_terms((real_scores(scores, mask) - t) ** 2, mask)
