"""Re-rank a run with a cross-encoder: pairs of many queries scored together, longest first.

Each query and each document is tokenised once per run. Queries are processed in blocks of
about ``block_pairs`` pairs; inside a block, pairs of all its queries are sorted by length into
batches with dynamic padding, so little compute goes to padding. With a ``checkpoint`` file,
each finished block is appended to it, and a restarted call skips the queries already
there: an interrupted re-ranking loses at most one block. Block boundaries depend only on the
run, so a resumed call computes exactly what an uninterrupted one would (bitwise, with the same
batch size and threads). A record cut by a kill is dropped on resume; the file's first record
names the model and candidates the scores belong to, checked on resume.

Memory stays bounded on large runs: token ids are kept as compact arrays, and a document's are
dropped after the last block that needs it. ``shard=(i, n)`` scores only every n-th block
(starting with block i), for n processes or GPUs; merged with
:func:`irdistill.rerank.sharding.merge_runs`, the shards give exactly the single-process
run, since every block is batched as it would be in one process.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from tqdm.auto import tqdm

from irdistill.data.collection import Collection, missing_docs_error
from irdistill.data.trec import Run, ranked, write_run
from irdistill.distributed import is_distributed, is_main, rank, wait_for_everyone, world_size
from irdistill.errors import IrdistillError
from irdistill.io import append_jsonl, read_checkpoint, start_checkpoint
from irdistill.models import cls_only
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.runtime import DEFAULT_MAX_TOKENS
from irdistill.provenance import candidates_digest, model_fingerprint
from irdistill.rerank.sharding import last_uses, merge_runs, shard_blocks

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


def shard_query_ids(run: Run, shard: tuple[int, int], block_pairs: int = 8192) -> list[str]:
    """The queries that :func:`rerank_run` with ``shard`` scores of ``run`` (whose candidate
    lists are as given): the queries of every n-th block, starting with block i."""
    qids = sorted(run)
    blocks = shard_blocks(_blocks(qids, {q: len(run[q]) for q in qids}, block_pairs), shard)
    return [q for block in blocks for q in block]


def _forget(d_tokens: dict, block: list[str], candidates: dict[str, list[str]],
            last_use: dict[str, int], number: int) -> None:
    """Drop the token ids of the block's documents that no later block needs."""
    for q in block:
        for d in candidates[q]:
            if last_use[d] <= number:
                d_tokens.pop(d, None)




def check_candidates(collection: Collection, run: Run, depth: int) -> dict[str, list[str]]:
    """Each query's top-``depth`` document ids, after checking (before any model is loaded)
    that the run is not empty and its queries and documents belong to ``collection`` (documents
    where the store can tell cheaply: local files; ir_datasets stores fail when fetched)."""
    if depth < 1:
        raise IrdistillError(f"depth={depth} must be at least 1")
    candidates = {q: [d for d, _ in ranked(docs, depth)] for q, docs in run.items()}
    if not candidates:
        raise IrdistillError("the run to re-rank is empty")
    collection.query_texts(sorted(candidates))
    missing = collection.docs.missing([d for q in sorted(candidates) for d in candidates[q]])
    if missing:
        raise missing_docs_error(missing, collection.name)
    return candidates


class NonFiniteScores(IrdistillError):
    """The model scored a pair NaN or infinite (e.g. an fp16 overflow)."""


def rerank_run(model: CrossEncoder, collection: Collection, run: Run, depth: int = 100,
               batch_size: int = 64, max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
               show_progress: bool = True,
               checkpoint: str | Path | None = None, block_pairs: int = 8192,
               identity: dict | None = None, shard: tuple[int, int] | None = None) -> Run:
    """Scores of ``model`` for each query's top-``depth`` documents of ``run``.

    With ``checkpoint``, finished blocks are appended to that file and a later call with the same
    file skips them. ``identity`` (what the scores depend on: see :func:`scoring_identity`) is
    written as its first record and checked on resume. A checkpoint this call created is
    removed again if the input turns out to be wrong (e.g. documents absent from the
    collection), so bad input leaves nothing behind. With ``shard``, only the queries of that
    shard are scored (see :func:`irdistill.rerank.sharding.shard_blocks`).
    """
    candidates = check_candidates(collection, run, depth)
    qids = sorted(candidates)
    blocks = _blocks(qids, {q: len(candidates[q]) for q in qids}, block_pairs)
    if shard is not None:
        blocks = shard_blocks(blocks, shard)
        qids = [q for block in blocks for q in block]
    queries = collection.query_texts(qids)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    created = checkpoint is not None and not checkpoint.exists()
    done = read_checkpoint(checkpoint, identity, "re-ranking") if checkpoint is not None else {}
    done = {q: done[q] for q in qids if q in done}
    if done:
        log.info("resuming: %d of %d queries already scored in %s", len(done), len(qids),
                 checkpoint)
    try:
        _score_blocks(model, collection, candidates, blocks, queries, done, batch_size,
                      max_tokens, show_progress, checkpoint, identity)
    except NonFiniteScores:
        raise  # the model's fault, not the input's: the finished blocks stay for the rerun
    except IrdistillError:
        if created and checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        raise
    return {q: done[q] for q in qids}


def _score_blocks(model, collection, candidates, blocks, queries, done, batch_size, max_tokens,
                  show_progress, checkpoint, identity) -> None:
    qids = [q for block in blocks for q in block]
    total = sum(len(candidates[q]) for q in qids)
    bar = tqdm(total=total, initial=sum(len(candidates[q]) for q in qids if q in done),
               desc="re-ranking", unit="pair", disable=not show_progress)
    if checkpoint is not None:
        start_checkpoint(checkpoint, identity)
    d_tokens: dict = {}  # doc id -> token ids, until the last block that needs them
    last_use = last_uses(blocks, candidates)
    empty_docs: set[str] = set()
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
            empty_docs.update(d for d in chunk if not texts[d].strip())
            d_tokens.update(zip(chunk, model.encoder.encode_docs([texts[d] for d in chunk],
                                                                 compact=True)))
        keys = [(q, d) for q in block for d in candidates[q]]
        scores = model.score_ids([(q_tokens[q], d_tokens[d]) for q, d in keys],
                                 batch_size=batch_size, max_tokens=max_tokens)
        bad = [key for key, s in zip(keys, scores) if not math.isfinite(s)]
        if bad:
            raise NonFiniteScores(
                f"the model gave {len(bad)} non-finite score(s), e.g. for query '{bad[0][0]}' "
                f"and document '{bad[0][1]}'",
                hint="fp16 overflows easily: use --precision bf16 or fp32; finished queries are "
                     "kept")
        scored: Run = {q: {} for q in block}
        for (q, d), s in zip(keys, scores):
            scored[q][d] = s
        done.update(scored)
        if checkpoint is not None:
            append_jsonl(checkpoint, scored)
        bar.update(len(keys))
        _forget(d_tokens, block, candidates, last_use, number)
    bar.close()
    if empty_docs:
        log.warning("%d candidate document(s) have empty text (e.g. '%s'); they were scored as "
                    "empty documents", len(empty_docs), sorted(empty_docs)[0])


def scoring_identity(model_source: str, model: CrossEncoder, collection: Collection, run: Run,
                     depth: int) -> dict:
    """What re-ranking scores depend on, to tell whether a partial file belongs to a call:
    the model (its files' content), its lengths, precision and backend (torch, compile, onnx:
    each rounds differently), the collection, the candidates."""
    identity = {"model": model_fingerprint(model_source),
                "max_query_length": model.max_query_length,
                "max_doc_length": model.max_doc_length,
                "precision": model.precision or "fp32",
                "backend": getattr(model, "backend", "torch"), "collection": collection.name,
                "candidates": candidates_digest({q: [d for d, _ in ranked(docs, depth)]
                                                 for q, docs in run.items()})}
    if getattr(model, "truncation", "segments") != "segments":  # files from before it existed
        identity["truncation"] = model.truncation
    if cls_only.enabled(getattr(model, "model", None)):  # it rounds differently, as backends do
        identity["last_layer"] = "cls-only"
    return identity


def rerank_to_file(model, collection, candidates: Run, output, *, depth: int = 100,
                   batch_size: int = 64, max_tokens: int | str | None = "auto",
                   shard: tuple[int, int] | None = None, show_progress: bool = True,
                   tag: str = "irdistill", block_pairs: int = 8192,
                   identity: dict | None = None) -> Run:
    """Re-rank ``candidates`` and write the TREC run ``output``; what the CLI does.

    Finished queries are kept in a partial file beside ``output`` while it works, so the same
    call resumes after an interruption. With ``shard``, only that shard is scored and written
    (merge the shards' runs with :func:`merge_runs`). Under ``torchrun`` without ``shard``, each
    process scores shard ``(rank, world size)`` into its own partial file, and the first process
    merges them into ``output`` once all are done. Returns the queries this process scored.
    """
    output = Path(output)
    launched = shard is None and is_distributed()
    if launched:
        shard = (rank(), world_size())

    def partial(i: int | None) -> Path:
        label = "" if i is None else f".shard-{i}-of-{shard[1]}"
        return output.with_name(f"{output.name}{label}.partial.jsonl")

    mine = partial(shard[0] if shard is not None else None)
    if shard is not None and shard[1] > 1:
        log.info("scoring shard %d of %d", shard[0], shard[1])
    scored = rerank_run(model, collection, candidates, depth=depth, batch_size=batch_size,
                        max_tokens=max_tokens, show_progress=show_progress and is_main(),
                        checkpoint=mine, shard=shard, block_pairs=block_pairs,
                        identity=identity)
    if not launched:  # a shard's run keeps exact scores, for the merge
        write_run(output, scored, tag=tag, digits=9 if shard is not None else 6)
        mine.unlink(missing_ok=True)
        return scored
    wait_for_everyone()  # every shard's partial file is complete
    if is_main():
        files = [partial(i) for i in range(shard[1])]
        merged = merge_runs((read_checkpoint(f) for f in files), expected=candidates)
        write_run(output, merged, tag=tag)
        for f in files:
            f.unlink(missing_ok=True)
    wait_for_everyone()
    return scored
