"""The memory budget of a training run's data path (``data.max_memory_gb``).

Training holds its candidate run (compact arrays, :class:`irdistill.data.trec.CompactRun`), one
epoch of groups (:class:`irdistill.train.data.EpochGroups`) and the token ids of their texts
(memory-mapped: :mod:`irdistill.train.tokens`, shared by the processes of a DDP run). What that
costs grows with the data; ``data.max_memory_gb`` bounds it: the resident memory the process
gained since training began is checked after each stage of the data path (the run read, the
groups counted, the texts tokenised), and a run over the budget stops there with what it holds
and how to hold less, before a model is loaded: a clear error in seconds instead of the
kernel's OOM killer after an hour. Memory-mapped token ids count only as far as they were read.
"""
from __future__ import annotations

import logging

import psutil

from irdistill.errors import IrdistillError

log = logging.getLogger(__name__)

GIB = 2**30


def resident_bytes() -> int:
    """The process's resident memory."""
    return psutil.Process().memory_info().rss


class MemoryBudget:
    """Checks the memory a data path gained since it began against ``limit_gb`` (None: no
    limit; the figures are logged either way)."""

    def __init__(self, limit_gb: float | None):
        self.limit_gb = limit_gb
        self.start = resident_bytes()
        self.stages: dict[str, float] = {}

    def check(self, stage: str) -> float:
        """The GiB gained up to the end of ``stage``; an error when over the budget."""
        held = max(0, resident_bytes() - self.start) / GIB
        self.stages[stage] = round(held, 3)
        log.info("data path after %s: %.2f GiB resident above its start", stage, held)
        if self.limit_gb is not None and held > self.limit_gb:
            raise IrdistillError(
                f"the training data holds {held:.2f} GiB after {stage}, over "
                f"data.max_memory_gb={self.limit_gb:g}",
                hint="hold less: a shallower data.depth (the run), data.max_queries, a run file "
                     "(data.run) instead of BM25 at start, data.mode=triples (streamed); or "
                     "raise data.max_memory_gb (docs/performance.md: what each part costs)")
        return held
