"""Runs the ``irdistill`` command line in a child process that a test kills with SIGKILL.

``python interrupt_child.py <irdistill arguments>``. One thread, so that an interrupted and an
uninterrupted run compute the same bits. With ``IRDISTILL_TEST_DELAY=<seconds>`` every training
batch and every scored block waits that long first (no computation changes, no random number is
drawn), so the parent can kill the run between a checkpoint and its end. With
``IRDISTILL_TEST_CALLS=<file>`` each scoring call appends a line to that file, so the parent can
count what a resumed run recomputed.
"""
import os
import sys
import time

import torch

torch.set_num_threads(1)
DELAY = float(os.environ.get("IRDISTILL_TEST_DELAY", "0"))
CALLS = os.environ.get("IRDISTILL_TEST_CALLS")

if DELAY or CALLS:
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.train.data import GroupCollator

    collate, score_ids = GroupCollator.__call__, CrossEncoder.score_ids

    def slow_collate(self, groups):
        time.sleep(DELAY)
        return collate(self, groups)

    def counted_score_ids(self, pairs, *args, **kwargs):
        if CALLS:
            with open(CALLS, "a") as handle:
                handle.write(f"{len(pairs)}\n")
        time.sleep(DELAY)
        return score_ids(self, pairs, *args, **kwargs)

    GroupCollator.__call__ = slow_collate
    CrossEncoder.score_ids = counted_score_ids

from irdistill.cli import main  # noqa: E402

sys.argv = ["irdistill", *sys.argv[1:]]
main()
