"""Listwise losses: a distribution over each query's list."""
from __future__ import annotations

import torch

from irdistill.losses.base import check_inputs, masked_fill_scores, reduce_terms, register


@register("infonce")
def infonce(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
            temperature: float = 1.0) -> torch.Tensor:
    """Contrastive InfoNCE with hard negatives (van den Oord et al. 2018, arXiv 1807.03748;
    used for re-rankers as "localized contrastive estimation", Gao et al. 2021, arXiv 2101.08751).

    Slot 0 is the positive; one term per query:
    ``-log softmax(s / temperature)[0]`` over the query's real slots. ``targets`` is unused.
    """
    mask = check_inputs(scores, targets, mask)
    logits = masked_fill_scores(scores / temperature, mask)
    log_probs = torch.log_softmax(logits, dim=1)
    terms = -log_probs[:, :1]
    return reduce_terms(terms, mask[:, :1])
