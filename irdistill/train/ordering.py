"""Length-aware order of training groups: batches of groups of similar length.

A batch is padded to its longest pair, so groups of similar length in one batch waste little
compute on padding. The order is the one Hugging Face's ``LengthGroupedSampler`` makes
(shuffle, cut into mega-batches, sort each by length), made a pure function of the seed and the
lengths, so a resumed run (the Trainer skips the batches already done) sees the same batches:

1. shuffle all groups with ``numpy.random.default_rng(seed)`` (training seeds it with
   ``[train.seed, epoch]``: each epoch is ordered on its own);
2. cut into mega-batches of ``megabatch`` steps, a step being ``batch_size * world_size``
   groups (one batch for every process: under DDP the processes of one step get batches of
   similar length and wait little for each other);
3. sort each mega-batch by length, longest first, cut it into steps, and shuffle the steps
   (so training does not go from long to short groups inside each mega-batch).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def group_length(encoder, query_tokens, doc_tokens, group) -> int:
    """Tokens of the group's longest pair (the width its rows need in a batch)."""
    q = query_tokens[group.query_id]
    return max(encoder.pair_length(q, doc_tokens[d]) for d in group.doc_ids)


def length_grouped_order(lengths: Sequence[int], batch_size: int,
                         seed: int | Sequence[int],
                         world_size: int = 1, megabatch: int = 50) -> list[int]:
    """A permutation of ``range(len(lengths))`` in which consecutive runs of ``batch_size``
    items have similar lengths (see the module's docstring)."""
    n = len(lengths)
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    step = max(1, batch_size * world_size)
    span = step * max(1, megabatch)
    order: list[int] = []
    for start in range(0, n, span):
        chunk = shuffled[start:start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        steps = [chunk[i:i + step] for i in range(0, len(chunk), step)]
        # the last step of the whole order may be short: keep it last
        full = [s for s in steps if len(s) == step]
        rest = [s for s in steps if len(s) != step]
        for i in rng.permutation(len(full)):
            order.extend(full[i].tolist())
        for s in rest:
            order.extend(s.tolist())
    return order
