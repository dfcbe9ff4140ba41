"""Re-ranking (and teacher scoring) split over processes or GPUs, merged into one run.

A run is cut into blocks of queries (:func:`irdistill.rerank.scoring.rerank_run`); shard
``i`` of ``n`` scores blocks ``i, i + n, i + 2n, ...``. Each block is tokenised, sorted and
batched exactly as in a single process, so the merged shards are the single-process run, score
for score. Two ways to use it:

* independent processes (a cluster's array job): ``irdistill rerank ... --shard 0/4 -o part0``
  and so on, then ``irdistill merge-runs part0 part1 part2 part3 -o run.trec``;
* one launch: ``torchrun --nproc_per_node 4 -m irdistill rerank ...``: every process scores its
  shard (GPU ``LOCAL_RANK`` if there are GPUs), the first merges them and writes the run.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from irdistill.data.trec import Run
from irdistill.errors import IrdistillError
from irdistill.io import atomic_write, iter_lines

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based shard i of n) -> ``(i, n)``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise IrdistillError(f"shard '{text}' is not of the form I/N",
                             hint="e.g. --shard 0/4 for the first of four shards")
    return check_shard((int(match.group(1)), int(match.group(2))))


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise IrdistillError(f"shard {index}/{count} does not exist",
                             hint=f"shards of {count} are numbered 0 to {max(count - 1, 0)}")
    return index, count


def shard_blocks(blocks: list[list[str]], shard: tuple[int, int]) -> list[list[str]]:
    """The blocks of shard ``(i, n)``: every n-th block, starting with block i."""
    index, count = check_shard(shard)
    if index >= len(blocks):
        log.warning("shard %d of %d has nothing to score: the run makes only %d block(s) of "
                    "queries", index, count, len(blocks))
    return blocks[index::count]


def last_uses(blocks: list[list[str]], candidates: dict[str, list[str]]) -> dict[str, int]:
    """For each document, the number of the last block whose queries have it as a candidate."""
    last: dict[str, int] = {}
    for number, block in enumerate(blocks):
        for q in block:
            for d in candidates[q]:
                last[d] = number
    return last


def merge_runs(parts: Iterable[Run], expected: Iterable[str] | None = None) -> Run:
    """One run from the runs of shards: each query must come from exactly one shard, and with
    ``expected`` (query ids), every expected query from some shard."""
    merged: Run = {}
    for number, part in enumerate(parts):
        for q, docs in part.items():
            if q in merged:
                raise IrdistillError(f"query '{q}' is in two shards (the second is part "
                                     f"{number + 1})",
                                     hint="merge the shards of one split, each once")
            merged[q] = docs
    if expected is not None:
        missing = sorted(set(expected) - merged.keys())
        if missing:
            raise IrdistillError(f"{len(missing)} queries are in no shard, e.g. '{missing[0]}'",
                                 hint="a shard is missing or unfinished: score it, then merge")
    return dict(sorted(merged.items()))


def check_complete_shards(shards: Sequence) -> int:
    """The N of shards ``[i, N]`` (as their provenance records them), each of 0..N-1 given
    once; an error otherwise."""
    pairs = [tuple(s) for s in shards if s is not None and len(s) == 2]
    counts = {n for _, n in pairs}
    if len(pairs) != len(shards) or len(counts) != 1:
        raise IrdistillError("every part must be a shard of one split (made with --shard I/N, "
                             "the same N)", hint="give the outputs of one sharded command")
    count = counts.pop()
    indices = sorted(i for i, _ in pairs)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        raise IrdistillError(f"the shards of {count} are not each there once: "
                             + (f"missing {missing}" if missing else f"given {indices}"),
                             hint="score every shard, then merge them all")
    return count


def join_shard_files(parts: Sequence[str | Path], output: str | Path) -> int:
    """Write the TREC runs of shards (each query in one of them) as one run, their lines kept
    as written and the queries in sorted order, as one process writes them: so the result is
    the one-process file byte for byte (re-reading and re-writing the scores could reorder
    documents whose scores tie once rounded). Returns the number of queries."""
    lines: dict[str, list[str]] = {}
    origin: dict[str, Path] = {}
    for part in map(Path, parts):
        seen: set[str] = set()
        for number, line in iter_lines(part, "shard run"):
            if not line.strip():
                continue
            qid = line.split(maxsplit=1)[0]
            if qid in origin and qid not in seen:
                raise IrdistillError(f"query '{qid}' is in two shards: {origin[qid]} and {part}",
                                     path=part, line=number,
                                     hint="join the shards of one split, each once")
            seen.add(qid)
            origin.setdefault(qid, part)
            lines.setdefault(qid, []).append(line if line.endswith("\n") else line + "\n")
    with atomic_write(output) as handle:
        for qid in sorted(lines):
            handle.writelines(lines[qid])
    return len(lines)
