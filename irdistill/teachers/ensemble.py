"""Ensembles of teachers: score the top candidates of a run with each, combine the scores.

A teacher is any scorer (``--teacher [NAME=]SPEC`` on the command line):

* a cross-encoder: a model folder, a hub name or ``minilm`` (``ce:MODEL`` says so explicitly);
* a bi-encoder: ``bi:MODEL`` or ``dense:MODEL`` (a sentence-transformers folder, a hub name,
  ``minilm``): the dot product of the query's and the document's embeddings
  (:func:`irdistill.retrieval.dense.dense_scores`, cosine for a normalising model), document
  embeddings from the shared dense cache;
* ``bm25``: BM25 (bm25s, default settings) computed for each candidate from the collection's
  cached index (0 for a candidate without a query term);
* a run file that holds its scores already (an imported or earlier run: the candidate run's own
  first-stage scores, for example).

A hybrid teacher (BM25 + a bi-encoder, z-scores per query, mean) is
``--teacher bm25 --teacher bi:minilm --normalisation zscore``.

Hofstaetter et al. (2020, arXiv 2010.02666) train Margin-MSE students on the mean of the raw
scores of three cross-encoders (BERT-Base, BERT-Large, ALBERT-Large). Teachers trained with
different objectives have different score scales, so the scores can also be normalised per
teacher and per query before the mean:

* ``none``:   the raw score ``s``  (Hofstaetter's ensemble);
* ``zscore``: ``(s - mean_q) / std_q`` over the query's candidates (0 when all are equal);
* ``minmax``: ``(s - min_q) / (max_q - min_q)`` (0 when all are equal).

Each computed teacher's scores (cross-encoder, bi-encoder, BM25) are kept in the teacher store
(:mod:`irdistill.teachers.store`), so another ensemble of the same teachers on the same
candidates scores nothing; interrupted cross-encoder scoring resumes from the checkpoint of
:func:`irdistill.rerank.scoring.rerank_run`, and an interrupted bi-encoder from its finished
chunks of document embeddings.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irdistill.data.collection import Collection
from irdistill.data.trec import Qrels, Run, ranked, read_run, write_run
from irdistill.errors import IrdistillError, unknown_name
from irdistill.io import check_input_file, check_output_file, check_output_folder
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.paths import resolve_model_path
from irdistill.models.runtime import check_device, check_precision
from irdistill.provenance import (candidates_digest, model_fingerprint, read_run_provenance,
                                  write_run_provenance)
from irdistill.rerank.scoring import check_candidates, rerank_run, shard_query_ids
from irdistill.rerank.sharding import check_complete_shards, check_shard, join_shard_files
from irdistill.retrieval.bm25 import BM25Settings, bm25_scores
from irdistill.retrieval.dense import (BiEncoder, DenseIndex, DenseSettings,
                                       bi_encoder_fingerprint, dense_scores, effective_precision)
from irdistill.teachers.store import Candidates, TeacherStore, default_teacher_name, slug

log = logging.getLogger(__name__)

NORMALISATIONS = ("none", "zscore", "minmax")
RUN_SUFFIXES = (".trec", ".run", ".txt", ".tsv")


#: kinds of teachers, and the prefixes that name them in a teacher's spec
TEACHER_KINDS = ("cross-encoder", "bi-encoder", "bm25", "run")
BI_PREFIXES = ("bi:", "dense:")
CE_PREFIX = "ce:"
BM25_KEYWORD = "bm25"


@dataclass(frozen=True)
class Teacher:
    """A teacher: a cross-encoder or a bi-encoder (``source`` is the model: hub name, folder,
    ``minilm``), BM25 (``source`` ``bm25``) or a run file of its scores. ``kind`` None: a run
    file if ``source`` is one, else a cross-encoder."""

    name: str
    source: str
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            path = Path(self.source)
            is_run = path.is_file() and path.suffix in RUN_SUFFIXES
            object.__setattr__(self, "kind", "run" if is_run else "cross-encoder")
        elif self.kind not in TEACHER_KINDS:
            raise unknown_name("teacher kind", self.kind, TEACHER_KINDS)

    @classmethod
    def parse(cls, spec: str) -> Teacher:
        """``NAME=SPEC`` or ``SPEC`` (the name is then derived from it), where ``SPEC`` is a
        cross-encoder (``MODEL`` or ``ce:MODEL``), a bi-encoder (``bi:MODEL``,
        ``dense:MODEL``), ``bm25``, or a run file of scores."""
        name = None
        source = spec
        if "=" in spec and not Path(spec).exists():
            name, source = spec.split("=", 1)
            if not name or not source:
                raise IrdistillError(f"teacher '{spec}' is not of the form NAME=SPEC or SPEC",
                                     hint="e.g. big=runs/ce/model, bi:minilm, bm25")
        prefix = next((p for p in (*BI_PREFIXES, CE_PREFIX) if source.startswith(p)), None)
        if prefix is not None:
            model = source[len(prefix):]
            if not model:
                raise IrdistillError(f"teacher '{spec}' names no model after '{prefix}'",
                                     hint=f"e.g. {prefix}minilm")
            kind = "cross-encoder" if prefix == CE_PREFIX else "bi-encoder"
            default = default_teacher_name(model)
            return cls(slug(name) if name else
                       (f"bi-{default}" if kind == "bi-encoder" else default), model, kind)
        if source.lower() == BM25_KEYWORD:
            return cls(slug(name or BM25_KEYWORD), BM25_KEYWORD, "bm25")
        return cls(slug(name) if name else default_teacher_name(source), source)

    @property
    def is_run(self) -> bool:
        return self.kind == "run"

    @property
    def is_model(self) -> bool:
        return self.kind in ("cross-encoder", "bi-encoder")


def normalise(scores: Mapping[str, float], method: str) -> dict[str, float]:
    """One query's scores normalised as ``method`` says (see the module docstring)."""
    if method not in NORMALISATIONS:
        raise unknown_name("normalisation", method, NORMALISATIONS)
    if method == "none" or not scores:
        return dict(scores)
    values = list(scores.values())
    if method == "zscore":
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return {d: (s - mean) / std if std > 0 else 0.0 for d, s in scores.items()}
    low, high = min(values), max(values)
    return {d: (s - low) / (high - low) if high > low else 0.0 for d, s in scores.items()}


@dataclass
class Combination:
    run: Run
    dropped: int = 0  # (query, document) pairs left out: not scored by every teacher
    queries_dropped: list[str] = field(default_factory=list)


def combine(runs: Mapping[str, Run], normalisation: str = "none") -> Combination:
    """The mean over teachers of each (query, document) score, after per-query normalisation.

    Only pairs that every teacher scored are kept (teachers scored on one candidate set agree on
    all of them); normalisation is computed over those common pairs, so each teacher is
    normalised over exactly the documents that enter the mean.
    """
    if normalisation not in NORMALISATIONS:
        raise unknown_name("normalisation", normalisation, NORMALISATIONS)
    if not runs:
        raise IrdistillError("an ensemble needs at least one teacher")
    names = list(runs)
    queries = set(runs[names[0]])
    for name in names[1:]:
        queries &= set(runs[name])
    all_queries = set().union(*(set(r) for r in runs.values()))
    out: Run = {}
    dropped = 0
    for qid in sorted(queries):
        common = set(runs[names[0]][qid])
        for name in names[1:]:
            common &= set(runs[name][qid])
        dropped += sum(len(runs[name][qid]) for name in names) - len(common) * len(names)
        if not common:
            continue
        total = dict.fromkeys(common, 0.0)
        for name in names:
            normed = normalise({d: runs[name][qid][d] for d in common}, normalisation)
            for d, s in normed.items():
                total[d] += s
        out[qid] = {d: s / len(names) for d, s in total.items()}
    missing = sorted(all_queries - set(out))
    if not out:
        raise IrdistillError("the teachers' runs share no (query, document) pair",
                             hint="score every teacher on the same candidates")
    if dropped or missing:
        log.warning("ensemble: %d (query, document) pairs and %d queries left out, not scored by "
                    "every teacher", dropped, len(missing))
    return Combination(out, dropped, missing)


def candidates_of(run: Run, depth: int | None, qrels: Qrels | None = None,
                  add_positives: bool = False) -> Candidates:
    """Each query's top-``depth`` documents of ``run``, best first; with ``add_positives``, the
    judged relevant documents not among them are appended (as Hofstaetter's teachers score every
    training triple's positive)."""
    if add_positives and not qrels:
        raise IrdistillError("--add-positives needs relevance judgements, and the collection has "
                             "none", hint="leave out --add-positives")
    candidates: Candidates = {}
    for qid in sorted(run):
        docs = [d for d, _ in ranked(run[qid], depth)]
        if add_positives:
            kept = set(docs)
            docs += sorted(d for d, rel in (qrels or {}).get(qid, {}).items()
                           if rel > 0 and d not in kept)
        candidates[qid] = docs
    if not candidates:
        raise IrdistillError("the candidate run is empty")
    return candidates


def as_run(candidates: Candidates) -> Run:
    """A run that lists the candidates in their order (scores n, n-1, ..., 1)."""
    return {q: {d: float(len(docs) - i) for i, d in enumerate(docs)}
            for q, docs in candidates.items()}


@dataclass
class ScoringSettings:
    batch_size: int = 64
    precision: str | None = None
    device: str | None = None
    max_query_length: int | None = None
    max_doc_length: int | None = None
    block_pairs: int = 20_000  # pairs per checkpointed block of queries


def check_settings(settings: ScoringSettings, depth: int) -> None:
    """Bad scoring settings fail with a clear message before any work."""
    for name, value in (("depth", depth), ("batch size", settings.batch_size),
                        ("block pairs", settings.block_pairs),
                        ("max query length", settings.max_query_length),
                        ("max document length", settings.max_doc_length)):
        if value is not None and value < 1:
            raise IrdistillError(f"{name} {value} must be at least 1")
    check_precision(settings.precision)
    check_device(settings.device)



def stored_scores(store: TeacherStore, key: str, name: str):
    """``(scores, path, True)`` of a teacher's run already in the store under ``key``, else None."""
    found = store.find(key)
    if found is None:
        return None
    log.info("teacher %s: scores reused from %s", name, found)
    return read_run(found), found, True

def score_teacher(teacher: Teacher, collection: Collection, candidates: Candidates,
                  store: TeacherStore, settings: ScoringSettings = ScoringSettings(),
                  show_progress: bool = True, shard: tuple[int, int] | None = None
                  ) -> tuple[Run, Path, bool]:
    """The teacher's scores of ``candidates`` (with ``shard``: of that shard's queries only,
    batched exactly as in one process): read from the store when they are there, else computed
    (resuming from the store's checkpoint) and stored. Returns (run, path, reused)."""
    digest = candidates_digest(candidates)
    fingerprint = model_fingerprint(teacher.source)
    key = store.key(teacher.name, model=fingerprint, candidates=digest,
                    max_query_length=settings.max_query_length,
                    max_doc_length=settings.max_doc_length, precision=settings.precision or "fp32",
                    **({"shard": f"{shard[0]}/{shard[1]}"} if shard else {}))
    reused = stored_scores(store, key, teacher.name)
    if reused is not None:
        return reused
    path = store.run_path(key)
    log.info("teacher %s: scoring %d pairs of %d queries", teacher.name,
             sum(len(d) for d in candidates.values()), len(candidates))
    model = CrossEncoder.from_pretrained(teacher.source, max_query_length=settings.max_query_length,
                                         max_doc_length=settings.max_doc_length,
                                         device=settings.device, precision=settings.precision)
    depth = max(len(d) for d in candidates.values())
    checkpoint = store.checkpoint_path(key)
    scores = rerank_run(model, collection, as_run(candidates), depth=depth,
                        batch_size=settings.batch_size, checkpoint=checkpoint,
                        block_pairs=settings.block_pairs, show_progress=show_progress,
                        shard=shard)
    write_run(path, scores, tag=slug(teacher.name))
    write_run_provenance(path, kind="teacher", teacher=teacher.name, model=teacher.source,
                         model_fingerprint=fingerprint, collection=collection.name,
                         candidates=digest, queries=len(scores),
                         pairs=sum(len(d) for d in scores.values()),
                         max_query_length=model.max_query_length,
                         max_doc_length=model.max_doc_length,
                         precision=settings.precision or "fp32")
    checkpoint.unlink(missing_ok=True)
    return scores, path, False


def score_bm25_teacher(teacher: Teacher, collection: Collection, candidates: Candidates,
                       store: TeacherStore) -> tuple[Run, Path, bool]:
    """BM25's scores of ``candidates`` (default settings, the collection's cached index), read
    from the store or computed and stored. Returns (run, path, reused)."""
    settings = asdict(BM25Settings())
    digest = candidates_digest(candidates)
    key = store.key(teacher.name, kind="bm25", documents=collection.docs_name,
                    candidates=digest, **settings)
    reused = stored_scores(store, key, teacher.name)
    if reused is not None:
        return reused
    path = store.run_path(key)
    log.info("teacher %s: BM25 of %d pairs of %d queries", teacher.name,
             sum(len(d) for d in candidates.values()), len(candidates))
    scores = bm25_scores(collection, candidates)
    write_run(path, scores, tag=slug(teacher.name))
    write_run_provenance(path, kind="teacher", teacher=teacher.name, teacher_kind="bm25",
                         model="bm25", collection=collection.name,
                         documents=collection.docs_name, candidates=digest,
                         queries=len(scores), pairs=sum(len(d) for d in scores.values()),
                         config=settings)
    return scores, path, False


def bi_encoder_settings(settings: ScoringSettings):
    """The dense settings a bi-encoder teacher scores with: ``max_doc_length`` as its length
    (queries and documents: a bi-encoder has one), ``precision`` (default ``auto``, as dense
    retrieval, so that both share one cache of document embeddings)."""
    precision = settings.precision or "auto"
    if precision.endswith("-full"):
        raise IrdistillError(f"precision '{precision}' is for cross-encoders only",
                             hint="give bi-encoder teachers fp32, bf16, fp16 or auto")
    return DenseSettings(max_length=settings.max_doc_length, precision=precision,
                         batch_size=settings.batch_size, device=settings.device)


def score_bi_teacher(teacher: Teacher, collection: Collection, candidates: Candidates,
                     store: TeacherStore, settings: ScoringSettings = ScoringSettings(),
                     show_progress: bool = True) -> tuple[Run, Path, bool]:
    """A bi-encoder's scores of ``candidates`` (dot products of the embeddings), read from the
    store or computed from the dense cache of document embeddings (built or resumed if
    needed) and stored. Returns (run, path, reused)."""
    dense = bi_encoder_settings(settings)
    digest = candidates_digest(candidates)
    fingerprint = bi_encoder_fingerprint(teacher.source)
    key = store.key(teacher.name, kind="bi-encoder", model=fingerprint,
                    documents=collection.docs_name, candidates=digest,
                    max_length=dense.max_length,
                    precision=effective_precision(dense.device, dense.precision),
                    dtype=dense.dtype)
    reused = stored_scores(store, key, teacher.name)
    if reused is not None:
        return reused
    path = store.run_path(key)
    log.info("teacher %s: bi-encoder scores of %d pairs of %d queries", teacher.name,
             sum(len(d) for d in candidates.values()), len(candidates))
    encoder = BiEncoder.from_pretrained(teacher.source, max_length=dense.max_length,
                                        precision=dense.precision, device=dense.device)
    scores = dense_scores(collection, encoder, candidates, settings=dense,
                          show_progress=show_progress)
    write_run(path, scores, tag=slug(teacher.name))
    write_run_provenance(path, kind="teacher", teacher=teacher.name, teacher_kind="bi-encoder",
                         model=teacher.source, model_fingerprint=fingerprint,
                         collection=collection.name, candidates=digest, queries=len(scores),
                         pairs=sum(len(d) for d in scores.values()),
                         similarity=encoder.similarity, max_length=encoder.max_length,
                         precision=encoder.precision, query_prompt=encoder.query_prompt,
                         document_prompt=encoder.document_prompt,
                         embeddings=str(DenseIndex.folder_for(encoder, collection, dense)))
    return scores, path, False


def teacher_run_from_file(teacher: Teacher, candidates: Candidates) -> Run:
    """A teacher given as a run file, restricted to the candidates (pairs it lacks are counted
    and left out of the ensemble)."""
    run = read_run(teacher.source)
    out: Run = {}
    lacking = 0
    for qid, docs in candidates.items():
        scores = run.get(qid, {})
        kept = {d: scores[d] for d in docs if d in scores}
        lacking += len(docs) - len(kept)
        if kept:
            out[qid] = kept
    if not out:
        raise IrdistillError("the teacher's run scores none of the candidates", path=teacher.source,
                             hint="a teacher run must come from the same queries and documents")
    if lacking:
        log.warning("teacher %s: %d candidate pairs have no score in %s", teacher.name, lacking,
                    teacher.source)
    return out


@dataclass
class EnsembleResult:
    run: Run
    path: Path
    teacher_runs: dict[str, Path]
    reused: list[str]
    provenance: dict[str, Any]


def build_ensemble(teachers: Sequence[Teacher | str], collection: Collection, run: Run,
                   output: str | Path, *, depth: int = 20, normalisation: str = "none",
                   name: str = "ensemble", add_positives: bool = False,
                   source: str = "run", settings: ScoringSettings = ScoringSettings(),
                   show_progress: bool = True, shard: tuple[int, int] | None = None
                   ) -> EnsembleResult:
    """Score the top-``depth`` candidates of ``run`` with every teacher and write their mean.

    With ``shard`` (i, n), only the queries of shard i of n are scored and the ensemble of
    those queries is written (the same name: give each shard its own ``output``);
    :func:`merge_ensemble_shards` joins the shards' ensembles into the run one process writes,
    byte for byte. Shards follow the blocks of queries of
    :func:`irdistill.rerank.scoring.rerank_run`, so a cross-encoder scores each pair in the
    same batch as in one process.

    Writes ``output/<name>.trec`` (the ensemble's scores, a TREC run that ``data.teacher_run``
    takes as it is) and ``output/<name>.provenance.json``; each computed teacher's run
    (cross-encoder, bi-encoder, BM25) is kept in ``output/teachers/``. ``source`` says where ``run`` came from, for the provenance.
    """
    if normalisation not in NORMALISATIONS:
        raise unknown_name("normalisation", normalisation, NORMALISATIONS)
    teachers = [t if isinstance(t, Teacher) else Teacher.parse(t) for t in teachers]
    if not teachers:
        raise IrdistillError("an ensemble needs at least one teacher", hint="give --teacher")
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise IrdistillError(f"two teachers have the same name: {', '.join(names)}",
                             hint="name them with NAME=MODEL")
    check_settings(settings, depth)
    output = check_output_folder(output)
    check_output_file(output / f"{slug(name)}.trec", "ensemble run")
    for teacher in teachers:
        if teacher.is_model:
            resolve_model_path(teacher.source)  # a missing model fails before any scoring
        if teacher.kind == "bi-encoder":
            bi_encoder_settings(settings).check()
    store = TeacherStore(output)
    candidates = candidates_of(run, depth, collection.qrels, add_positives)
    # a run of another collection (queries or documents it lacks) fails before scoring
    check_candidates(collection, as_run(candidates), max(len(d) for d in candidates.values()))
    every = candidates
    if shard is not None:
        keep = set(shard_query_ids(as_run(candidates), check_shard(shard), settings.block_pairs))
        candidates = {q: docs for q, docs in candidates.items() if q in keep}
    runs: dict[str, Run] = {}
    paths: dict[str, Path] = {}
    reused: list[str] = []
    for teacher in teachers:
        if teacher.is_run:
            runs[teacher.name] = teacher_run_from_file(teacher, candidates)
            paths[teacher.name] = Path(teacher.source)
            reused.append(teacher.name)
            continue
        if teacher.kind == "bm25":
            scored = score_bm25_teacher(teacher, collection, candidates, store)
        elif teacher.kind == "bi-encoder":
            scored = score_bi_teacher(teacher, collection, candidates, store, settings,
                                      show_progress)
        else:  # a shard's queries scored as in one process: blocks cut from every query
            scored = score_teacher(teacher, collection, every, store, settings, show_progress,
                                   shard) if shard is not None else \
                score_teacher(teacher, collection, candidates, store, settings, show_progress)
        runs[teacher.name], paths[teacher.name], was_reused = scored
        if was_reused:
            reused.append(teacher.name)
    combination = combine(runs, normalisation)
    path = output / f"{slug(name)}.trec"
    write_run(path, combination.run, tag=slug(name))
    record = {
        "kind": "ensemble",
        "combination": "mean",
        "normalisation": normalisation,
        "depth": depth,
        "add_positives": add_positives,
        "collection": collection.name,
        "source_run": source,
        "candidates": candidates_digest(candidates),
        "queries": len(combination.run),
        "pairs": sum(len(d) for d in combination.run.values()),
        "pairs_left_out": combination.dropped,
        "shard": list(shard) if shard is not None else None,
        "teachers": [],
    }
    for t in teachers:
        scored = {} if t.is_run else (read_run_provenance(paths[t.name]) or {})
        record["teachers"].append({"name": t.name, "kind": t.kind, "source": t.source,
                                   "run": str(paths[t.name]),
                                   "model_fingerprint": scored.get("model_fingerprint"),
                                   "scored": scored.get("created")})
    write_run_provenance(path, **record)
    return EnsembleResult(combination.run, path, paths, reused, record)


def merge_ensemble_shards(parts: Sequence[str | Path], output: str | Path,
                          name: str = "ensemble") -> Path:
    """Join the ensembles that :func:`build_ensemble` wrote with ``shard`` (one folder per
    shard, ``PART/<name>.trec``) into ``output/<name>.trec``: byte for byte the run of one
    process. Every shard of the split must be there, once."""
    files = [Path(p) / f"{slug(name)}.trec" for p in parts]
    records = [read_run_provenance(f) or {} for f in map(check_input_file, files)]
    shards = [r.get("shard") for r in records]
    check_complete_shards(shards)
    output = check_output_folder(output)
    path = output / f"{slug(name)}.trec"
    queries = join_shard_files(files, path)
    first = records[0]
    write_run_provenance(path, **{k: first.get(k) for k in (
        "kind", "combination", "normalisation", "depth", "add_positives", "collection",
        "source_run")}, queries=queries, shard=None,
        shards=[{"shard": list(s), "run": str(f), "candidates": r.get("candidates"),
                 "teachers": r.get("teachers")} for s, f, r in zip(shards, files, records)])
    return path
