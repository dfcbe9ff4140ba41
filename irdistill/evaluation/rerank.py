"""Re-rank a run with a cross-encoder: pairs of many queries scored together, longest first.

Each query and each document is tokenised once per run. Queries are processed in blocks of
about ``block_pairs`` pairs; inside a block, pairs of all its queries are sorted by length into
batches with dynamic padding, so little compute goes to padding. With a ``checkpoint`` file,
each finished block is appended to it, and a restarted call skips the queries already
there: an interrupted re-ranking loses at most one block. Block boundaries depend only on the
run, so a resumed call computes exactly what an uninterrupted one would.

Memory stays bounded on large runs: token ids are kept as compact arrays, and a document's are
dropped after the last block that needs it. ``shard=(i, n)`` scores only every n-th block
(starting with block i), for n processes or GPUs; merged with
:func:`irdistill.evaluation.sharding.merge_runs`, the shards give exactly the single-process
run, since every block is batched as it would be in one process.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tqdm.auto import tqdm

from irdistill.data.collection import Collection
from irdistill.data.trec import Run, ranked
from irdistill.errors import IrdistillError
from irdistill.models.cross_encoder import DEFAULT_MAX_TOKENS, CrossEncoder

log = logging.getLogger(__name__)


def _blocks(qids: list[str], sizes: dict[str, int], block_pairs: int) -> list[list[str]]:
    blocks, current, count = [], [], 0
    for q in qids:
        if current and count + sizes[q] > block_pairs:
            blocks.append(current)
            current, count = [], 0
        current.append(q)
        count += sizes[q]
    if current:
        blocks.append(current)
    return blocks


def _forget(d_tokens: dict, block: list[str], candidates: dict[str, list[str]],
            last_use: dict[str, int], number: int) -> None:
    """Drop the token ids of the block's documents that no later block needs."""
    for q in block:
        for d in candidates[q]:
            if last_use[d] <= number:
                d_tokens.pop(d, None)


def _read_checkpoint(path: Path) -> Run:
    done: Run = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # a line cut by a kill while being written: everything before it is good
                log.warning("%s, line %d: incomplete record ignored", path, number)
                break
            done.update(record)
    return done


def rerank_run(model: CrossEncoder, collection: Collection, run: Run, depth: int = 100,
               batch_size: int = 64, max_tokens: int | None = DEFAULT_MAX_TOKENS,
               show_progress: bool = True,
               checkpoint: str | Path | None = None, block_pairs: int = 8192,
               shard: tuple[int, int] | None = None) -> Run:
    """Scores of ``model`` for each query's top-``depth`` documents of ``run`` (with ``shard``,
    of the queries of that shard only; see :func:`irdistill.evaluation.sharding.shard_blocks`).
    """
    from irdistill.evaluation.sharding import last_uses, shard_blocks

    candidates = {q: [d for d, _ in ranked(docs, depth)] for q, docs in run.items()}
    qids = sorted(candidates)
    if not qids:
        raise IrdistillError("the run to re-rank is empty")
    blocks = _blocks(qids, {q: len(candidates[q]) for q in qids}, block_pairs)
    if shard is not None:
        blocks = shard_blocks(blocks, shard)
        qids = [q for block in blocks for q in block]
    queries = collection.query_texts(qids)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    done = _read_checkpoint(checkpoint) if checkpoint is not None else {}
    if done:
        log.info("resuming: %d of %d queries already scored in %s", len(done), len(qids),
                 checkpoint)
    total = sum(len(candidates[q]) for q in qids)
    bar = tqdm(total=total, initial=sum(len(candidates[q]) for q in qids if q in done),
               desc="re-ranking", unit="pair", disable=not show_progress)
    d_tokens: dict = {}  # doc id -> token ids, until the last block that needs them
    last_use = last_uses(blocks, candidates)
    for number, block in enumerate(blocks):
        if all(q in done for q in block):
            _forget(d_tokens, block, candidates, last_use, number)
            continue
        q_tokens = dict(zip(block, model.encoder.encode_queries([queries[q] for q in block],
                                                                compact=True)))
        new_docs = sorted({d for q in block for d in candidates[q]} - d_tokens.keys())
        for start in range(0, len(new_docs), 4096):
            chunk = new_docs[start:start + 4096]
            texts = collection.docs.get_many(chunk)
            d_tokens.update(zip(chunk, model.encoder.encode_docs([texts[d] for d in chunk],
                                                                 compact=True)))
        keys = [(q, d) for q in block for d in candidates[q]]
        scores = model.score_ids([(q_tokens[q], d_tokens[d]) for q, d in keys],
                                 batch_size=batch_size, max_tokens=max_tokens)
        scored: Run = {q: {} for q in block}
        for (q, d), s in zip(keys, scores):
            scored[q][d] = s
        done.update(scored)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            with open(checkpoint, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(scored) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        bar.update(len(keys))
        _forget(d_tokens, block, candidates, last_use, number)
    bar.close()
    return {q: done[q] for q in qids}
