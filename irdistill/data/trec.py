"""TREC run and qrels files.

A run is ``{query_id: {doc_id: score}}``; qrels are ``{query_id: {doc_id: relevance}}`` with
graded integer relevance kept as it is. Both match what ir_measures and pytrec_eval take.

Run line:   ``qid Q0 docid rank score tag``  (whitespace separated, 6 columns)
Qrels line: ``qid iteration docid relevance`` (4 columns)

A dict run costs about 180 bytes a line (9-10 GB for MS MARCO's 50M-line training run), so
training can hold a :class:`CompactRun` instead (``read_run(path, compact=True)``): the same
mapping semantics over numpy arrays, about 12 bytes a line plus the distinct id strings, saved
as ``.npy`` files that several processes (DDP ranks) memory-map and share.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import uuid
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from irdistill.errors import IrdistillError
from irdistill.io import atomic_write, check_output_folder, iter_lines

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def ranked(doc_scores: Mapping[str, float], depth: int | None = None) -> list[tuple[str, float]]:
    """Documents of one query best first, ties broken as trec_eval does (doc id, descending)."""
    items = sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return items if depth is None else items[:depth]


def iter_run_lines(path: str | Path) -> Iterator[tuple[int, str, str, str, float]]:
    """(line number, qid, docid, rank text, score) of each line of a TREC run, streaming and
    checked: 6 columns, a finite numeric score, no document twice for a query."""
    seen: dict[str, set[str]] = {}
    for number, line in iter_lines(path, "run file"):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise IrdistillError(
                f"expected 6 columns 'qid Q0 docid rank score tag', found {len(parts)}",
                path=path, line=number, hint="a TREC run has one ranked document per line")
        qid, _, docid, rank_text, score_text, _ = parts
        try:
            score = float(score_text)
        except ValueError:
            raise IrdistillError(f"score '{score_text}' is not a number", path=path, line=number,
                                 hint="the fifth column must be a number") from None
        if not math.isfinite(score):
            raise IrdistillError(f"score '{score_text}' is not finite", path=path, line=number)
        docs = seen.setdefault(qid, set())
        if docid in docs:
            raise IrdistillError(f"document '{docid}' appears twice for query '{qid}'",
                                 path=path, line=number, hint="remove the duplicate line")
        docs.add(docid)
        yield number, qid, docid, rank_text, score


def read_run(path: str | Path, depth: int | None = None,
             compact: bool = False) -> Run | CompactRun:
    """Read a TREC run, checking every line. ``depth`` keeps each query's top documents.

    Returns a dict run, or with ``compact=True`` a :class:`CompactRun` read as a stream (same
    checks and messages; each query's documents best first rather than in file order).
    """
    if compact:
        return _read_compact_run(path, depth)
    run: Run = {}
    for _, qid, docid, _, score in iter_run_lines(path):
        run.setdefault(qid, {})[docid] = score
    if not run:
        raise IrdistillError("run file has no ranked documents", path=path)
    if depth is not None:
        run = {qid: dict(ranked(docs, depth)) for qid, docs in run.items()}
    return run


def write_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str = "irdistill",
              depth: int | None = None, digits: int = 6) -> None:
    """Write a TREC run atomically, each query's documents best first; scores with ``digits``
    significant digits (9 keep a float32 score exactly, e.g. for runs merged later)."""
    with atomic_write(path) as handle:
        for qid in sorted(run):
            for rank, (docid, score) in enumerate(ranked(run[qid], depth), start=1):
                handle.write(f"{qid} Q0 {docid} {rank} {score:.{digits}g} {tag}\n")


def read_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels, keeping graded relevance."""
    qrels: Qrels = {}
    for number, line in iter_lines(path, "qrels file"):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4:
            raise IrdistillError(
                f"expected 4 columns 'qid iteration docid relevance', found {len(parts)}",
                path=path, line=number)
        qid, _, docid, rel_text = parts
        try:
            rel = int(rel_text)
        except ValueError:
            raise IrdistillError(f"relevance '{rel_text}' is not an integer", path=path,
                                 line=number) from None
        docs = qrels.setdefault(qid, {})
        if docid in docs and docs[docid] != rel:
            raise IrdistillError(f"document '{docid}' is judged twice for query '{qid}' "
                                 f"with different labels", path=path, line=number)
        docs[docid] = rel
    if not qrels:
        raise IrdistillError("qrels file has no judgements", path=path)
    return qrels


def write_qrels(path: str | Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    with atomic_write(path) as handle:
        for qid in sorted(qrels):
            for docid, rel in sorted(qrels[qid].items()):
                handle.write(f"{qid} 0 {docid} {rel}\n")


# -- compact runs: numpy arrays instead of a dict per query ---------------------------------
_COMPACT_FORMAT = "irdistill-compact-run"
_COMPACT_VERSION = 1
_COMPACT_ARRAYS = ("offsets", "docs", "scores", "doc_ids")


def _depth_slice(count: int, depth: int | None) -> int:
    """How many of ``count`` ranked items ``items[:depth]`` keeps (Python slice rules, so a
    negative depth drops from the end, as :func:`ranked` does)."""
    return len(range(count)[:depth])


_CHUNK = 1 << 16  # doc ids gathered per numpy conversion while reading


def _bytes_array(texts: list[str]) -> np.ndarray:
    """``texts`` (no newline in any) as a numpy 'S' array of their UTF-8, converted in a few
    vector passes over one joined buffer rather than one Python call per text."""
    if not texts:
        return np.zeros(0, dtype="S1")
    buffer = np.frombuffer(("\n".join(texts) + "\n").encode("utf-8"), dtype=np.uint8)
    ends = np.flatnonzero(buffer == 10)
    starts = np.zeros_like(ends)
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    width = max(int(lengths.max()), 1)
    columns = np.arange(width)
    inside = columns < lengths[:, None]
    out = np.zeros((len(texts), width), dtype=np.uint8)
    out[inside] = buffer[(starts[:, None] + columns)[inside]]
    return out.view(f"S{width}").ravel()


def _check_no_nul(texts: list[str], path: str | Path | None = None) -> None:
    """Refuse doc ids with a NUL character: numpy 'S' strings drop trailing NULs."""
    if "\x00" in "".join(texts):
        raise IrdistillError("a document id contains a NUL character, which a compact run "
                             "cannot hold", path=path, hint="read the run with compact=False")


def _unique_inverse(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct strings sorted, int32 index of each input in them) of an 'S' array.

    Sorted as Python sorts the decoded ids (UTF-8 bytes keep code point order; no NULs), so
    comparing doc indices compares doc ids. Sorts big-endian 8-byte words, not strings (several
    times faster than ``np.unique`` on bytes): the first word that varies, then each next word
    only among the lines still tied on the words before."""
    count, width = len(strings), strings.dtype.itemsize
    if count == 0:
        return strings[:0], np.zeros(0, dtype=np.int32)
    n_words = -(-width // 8)
    padded = np.zeros((count, 8 * n_words), dtype=np.uint8)
    padded[:, :width] = strings.view(np.uint8).reshape(count, width)
    words = padded.view(">u8")
    del padded
    # words equal in every id (a common prefix such as 'msmarco_passage_') decide nothing
    varying = [j for j in range(n_words) if np.any(words[:, j] != words[0, j])]
    order = np.arange(count)
    same = np.ones(count - 1, dtype=bool)  # sorted line i + 1 equals line i on words so far
    for j in varying:
        word = words[:, j].astype(np.uint64)
        if j == varying[0]:
            order = np.argsort(word)
        else:
            group = np.zeros(count, dtype=np.int64)
            np.cumsum(~same, out=group[1:])
            tied = np.zeros(count, dtype=bool)
            tied[:-1] |= same
            tied[1:] |= same
            at = np.flatnonzero(tied)
            order[at] = order[at][np.lexsort((word[order[at]], group[at]))]
        sorted_word = word[order]
        same &= sorted_word[1:] == sorted_word[:-1]
        if not same.any():
            break
    first = np.ones(count, dtype=bool)
    first[1:] = ~same
    inverse = np.empty(count, dtype=np.int32)
    inverse[order] = np.cumsum(first, dtype=np.int64) - 1
    return strings[order[first]], inverse


def _ranked_order(rows: np.ndarray, docs: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    """The permutation that puts lines in query-row order, each query best first with ties by
    doc id descending (as :func:`ranked`; ``docs`` index sorted doc ids), or None when they
    already are. A usual run file, written query by query best first, costs a few vector
    passes and no sort; ties are then reordered only where they are out of order."""
    if len(rows) < 2:
        return None
    order = None
    grouped = bool(np.all(rows[1:] >= rows[:-1]))
    if not grouped or np.any((rows[1:] == rows[:-1]) & (scores[1:] > scores[:-1])):
        order = np.lexsort((-scores, rows))
        rows, docs, scores = rows[order], docs[order], scores[order]
    tied = (rows[1:] == rows[:-1]) & (scores[1:] == scores[:-1])
    at = np.flatnonzero(tied)
    if np.all(docs[at] > docs[at + 1]):
        return order
    segment = np.zeros(len(rows), dtype=np.int64)  # runs of equal (query, score)
    np.cumsum(~tied, out=segment[1:])
    in_tie = np.zeros(len(rows), dtype=bool)
    in_tie[at] = in_tie[at + 1] = True
    lines = np.flatnonzero(in_tie)
    fixed = np.arange(len(rows)) if order is None else order
    fixed[lines] = fixed[lines[np.lexsort((-docs[lines].astype(np.int64), segment[lines]))]]
    return fixed


class CompactRun(Mapping):
    """A TREC run held in numpy arrays: the same ``{qid: {docid: score}}`` mapping as a dict
    run at about 12 bytes a line plus the distinct id strings, instead of about 180.

    Storage: ``query_ids`` (list, order of first appearance in the file, as the dict run
    iterates), ``offsets`` (int64, query ``i``'s lines are ``offsets[i]:offsets[i + 1]``),
    ``docs`` (int32 per line, an index into ``doc_ids``), ``scores`` (float64 per line, exactly
    the floats :func:`read_run` gives) and ``doc_ids`` (numpy 'S' array of the UTF-8 ids, decoded
    on access). Each query's lines are stored best first, in :func:`ranked` order, so
    ``run[qid]`` is a new dict best first and :meth:`ranked` needs no sort.

    The arrays may be memory-mapped (:meth:`load`); nothing here writes to them.
    """

    def __init__(self, query_ids: Iterable[str], offsets: np.ndarray, docs: np.ndarray,
                 scores: np.ndarray, doc_ids: np.ndarray):
        self.query_ids = list(query_ids)
        self.offsets, self.docs, self.scores, self.doc_ids = offsets, docs, scores, doc_ids
        self._row = {qid: row for row, qid in enumerate(self.query_ids)}
        if len(self._row) != len(self.query_ids):
            raise IrdistillError("a compact run lists a query twice")
        if (offsets.ndim != 1 or len(offsets) != len(self.query_ids) + 1 or offsets[0] != 0
                or len(docs) != len(scores) or offsets[-1] != len(docs)):
            raise IrdistillError(f"inconsistent compact run: {len(self.query_ids)} queries, "
                                 f"{len(offsets)} offsets, {len(docs)} docs, "
                                 f"{len(scores)} scores")

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, run: Mapping[str, Mapping[str, float]]) -> CompactRun:
        """A compact copy of a dict run (same query order, each query best first)."""
        names: list[str] = []
        offsets, scores = [0], array("d")
        for doc_scores in run.values():
            for docid, score in ranked(doc_scores):
                names.append(docid)
                scores.append(float(score))
            offsets.append(len(names))
        _check_no_nul(names)
        doc_ids, docs = _unique_inverse(_bytes_array(names))
        return cls(run.keys(), np.array(offsets, dtype=np.int64), docs,
                   np.frombuffer(scores).copy(), doc_ids)

    # -- the mapping --------------------------------------------------------------------------
    def __getitem__(self, qid: str) -> dict[str, float]:
        """A new dict of the query's documents, best first; KeyError for an unknown query."""
        return dict(self.ranked(qid))

    def __contains__(self, qid: object) -> bool:
        return qid in self._row

    def __iter__(self) -> Iterator[str]:
        return iter(self.query_ids)

    def __len__(self) -> int:
        return len(self.query_ids)

    def __repr__(self) -> str:
        return f"CompactRun({len(self)} queries, {self.n_lines} lines, {len(self.doc_ids)} docs)"

    def _decode(self, docs: np.ndarray) -> list[str]:
        return [doc.decode("utf-8") for doc in self.doc_ids[docs].tolist()]

    def ranked(self, qid: str, depth: int | None = None) -> list[tuple[str, float]]:
        """``ranked(run[qid], depth)`` without building the dict: (doc id, score) best first."""
        row = self._row[qid]
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        if depth is not None:
            stop = start + _depth_slice(stop - start, depth)
        return list(zip(self._decode(self.docs[start:stop]), self.scores[start:stop].tolist()))

    @property
    def n_lines(self) -> int:
        """Number of (query, document) lines held."""
        return len(self.docs)

    @property
    def nbytes(self) -> int:
        """Approximate bytes held: the arrays, the query id strings and their row index."""
        arrays = sum(getattr(self, name).nbytes for name in _COMPACT_ARRAYS)
        return (arrays + sum(sys.getsizeof(qid) for qid in self.query_ids)
                + sys.getsizeof(self.query_ids) + sys.getsizeof(self._row))

    def to_dict(self) -> Run:
        """The dict run (each query best first), decoding each doc id once."""
        names = [doc.decode("utf-8") for doc in self.doc_ids.tolist()]
        docs, scores, offsets = self.docs.tolist(), self.scores.tolist(), self.offsets.tolist()
        return {qid: {names[docs[i]]: scores[i] for i in range(offsets[row], offsets[row + 1])}
                for row, qid in enumerate(self.query_ids)}

    # -- subsets ------------------------------------------------------------------------------
    def _take(self, rows: list[int]) -> CompactRun:
        """The run of these rows in this order: views of the arrays when the rows are one
        increasing range (e.g. a split carved off the end), else gathered copies; ``doc_ids``
        is always shared."""
        query_ids = [self.query_ids[row] for row in rows]
        if rows and rows == list(range(rows[0], rows[-1] + 1)):
            start, stop = int(self.offsets[rows[0]]), int(self.offsets[rows[-1] + 1])
            offsets = np.asarray(self.offsets[rows[0]:rows[-1] + 2], dtype=np.int64) - start
            return CompactRun(query_ids, offsets, self.docs[start:stop],
                              self.scores[start:stop], self.doc_ids)
        index = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self.offsets[index], dtype=np.int64)
        counts = np.asarray(self.offsets[index + 1], dtype=np.int64) - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        lines = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        return CompactRun(query_ids, offsets, self.docs[lines], self.scores[lines], self.doc_ids)

    def select(self, query_ids: Iterable[str]) -> CompactRun:
        """The given queries that are in the run, in the order given (first mention)."""
        rows = {self._row[qid]: None for qid in query_ids if qid in self._row}
        return self._take(list(rows))

    def without(self, query_ids: Iterable[str]) -> CompactRun:
        """All queries but the given ones, in run order."""
        drop = {self._row[qid] for qid in query_ids if qid in self._row}
        return self._take([row for row in range(len(self.query_ids)) if row not in drop])

    # -- files --------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the run as ``.npy`` arrays plus ``query_ids.json`` and ``meta.json`` into
        ``folder``, atomically: written into a temporary folder beside it, then renamed (an
        existing folder is replaced only once the new one is complete)."""
        folder = check_output_folder(folder, "compact run folder")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:12]}.tmp"
        tmp.mkdir()
        try:
            for name in _COMPACT_ARRAYS:
                with open(tmp / f"{name}.npy", "wb") as handle:
                    np.save(handle, np.ascontiguousarray(getattr(self, name)))
                    handle.flush()
                    os.fsync(handle.fileno())
            meta = {"format": _COMPACT_FORMAT, "version": _COMPACT_VERSION,
                    "n_queries": len(self), "n_lines": self.n_lines, "n_docs": len(self.doc_ids)}
            for name, obj in (("query_ids.json", self.query_ids), ("meta.json", meta)):
                with open(tmp / name, "w", encoding="utf-8") as handle:
                    json.dump(obj, handle, ensure_ascii=False)
                    handle.flush()
                    os.fsync(handle.fileno())
            if folder.exists():
                old = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:12]}.old"
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> CompactRun:
        """Open a run written by :meth:`save`; with ``mmap`` the arrays are memory-mapped
        read-only, so processes opening the same folder share the pages."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise IrdistillError("not a saved compact run (no readable meta.json)", path=folder,
                                 hint="write it with CompactRun.save") from None
        if (not isinstance(meta, dict) or meta.get("format") != _COMPACT_FORMAT
                or meta.get("version") != _COMPACT_VERSION):
            raise IrdistillError(f"not a compact run of version {_COMPACT_VERSION}", path=folder)
        try:
            query_ids = json.loads((folder / "query_ids.json").read_text(encoding="utf-8"))
            arrays = [np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None,
                              allow_pickle=False) for name in _COMPACT_ARRAYS]
        except (OSError, ValueError) as exc:
            raise IrdistillError(f"a compact run file is missing or damaged ({exc})",
                                 path=folder) from None
        run = cls(query_ids, *arrays)
        if run.n_lines != meta["n_lines"] or len(run.doc_ids) != meta["n_docs"]:
            raise IrdistillError("compact run files do not match its meta.json", path=folder)
        return run


def select_queries(run: Mapping[str, Mapping[str, float]],
                   query_ids: Iterable[str]) -> Mapping[str, Mapping[str, float]]:
    """The given queries that are in the run, in the order given, without materialising a
    compact run (a dict run gives a dict sharing its per-query dicts)."""
    if isinstance(run, CompactRun):
        return run.select(query_ids)
    return {qid: run[qid] for qid in query_ids if qid in run}


def query_ranking(run: Mapping[str, Mapping[str, float]], qid: str,
                  depth: int | None = None) -> list[tuple[str, float]]:
    """Query ``qid``'s documents best first (``ranked``), of a dict run or a compact one (which
    holds them ranked: a slice, no dict built)."""
    if isinstance(run, CompactRun):
        return run.ranked(qid, depth)
    return ranked(run[qid], depth)


def drop_queries(run: Mapping[str, Mapping[str, float]],
                 query_ids: Iterable[str]) -> Mapping[str, Mapping[str, float]]:
    """All queries of the run but the given ones, in run order (compact stays compact)."""
    if isinstance(run, CompactRun):
        return run.without(query_ids)
    drop = set(query_ids)
    return {qid: docs for qid, docs in run.items() if qid not in drop}


def _line_number(path: str | Path, index: int) -> int:
    """The file line number of the ``index``-th (0-based) non-blank line: rescanned only when
    an error must name it, so reading keeps no line number per line."""
    seen = -1
    for number, line in iter_lines(path, "run file"):
        if line.split():
            seen += 1
            if seen == index:
                return number
    raise AssertionError(f"run file has fewer than {index + 1} lines")  # pragma: no cover


def _duplicate_error(path: str | Path, rows: np.ndarray, docs: np.ndarray, n_docs: int,
                     query_ids: list[str], doc_ids: np.ndarray) -> IrdistillError | None:
    """:func:`iter_run_lines`'s error for the first line (in file order) that repeats a
    document of its query, or None; found by sorting (query, doc) keys, not a set per query."""
    if len(rows) < 2:
        return None
    keys = rows.astype(np.int64) * max(n_docs, 1) + docs
    ordered = np.sort(keys)
    if not np.any(ordered[1:] == ordered[:-1]):
        return None
    del ordered
    order = np.argsort(keys, kind="stable")  # equal keys keep file order
    first = int(order[1:][keys[order[1:]] == keys[order[:-1]]].min())
    qid, docid = query_ids[rows[first]], doc_ids[docs[first]].decode("utf-8")
    return IrdistillError(f"document '{docid}' appears twice for query '{qid}'", path=path,
                          line=_line_number(path, first), hint="remove the duplicate line")


def _scan_run(path: str | Path) -> tuple[dict[str, int], array, array, list[np.ndarray]]:
    """Stream a run file into (query row by id, row and score per line, doc ids per line as
    chunks of 'S' arrays): per line only appends, no Python object kept but the one dict entry
    per query. The checks and errors of :func:`iter_run_lines` but the empty run; duplicates
    are checked here only before another error is raised (the caller checks them at the end).
    """
    query_row: dict[str, int] = {}
    rows, scores = array("i"), array("d")
    chunks: list[np.ndarray] = []
    pending: list[str] = []
    add_row, add_score, add_doc = rows.append, scores.append, pending.append
    row_of, isfinite = query_row.setdefault, math.isfinite

    try:
        for number, line in iter_lines(path, "run file"):
            parts = line.split()
            if len(parts) != 6:
                if not parts:
                    continue
                raise IrdistillError(
                    f"expected 6 columns 'qid Q0 docid rank score tag', found {len(parts)}",
                    path=path, line=number, hint="a TREC run has one ranked document per line")
            qid, _, docid, _, score_text, _ = parts
            try:
                score = float(score_text)
            except ValueError:
                raise IrdistillError(f"score '{score_text}' is not a number", path=path,
                                     line=number, hint="the fifth column must be a number"
                                     ) from None
            if not isfinite(score):
                raise IrdistillError(f"score '{score_text}' is not finite", path=path,
                                     line=number)
            add_row(row_of(qid, len(query_row)))
            add_score(score)
            add_doc(docid)
            if len(pending) == _CHUNK:
                _check_no_nul(pending, path)
                chunks.append(_bytes_array(pending))
                pending.clear()
    except IrdistillError as error:
        # a repeated document on an earlier line is what the line-by-line reader meets first
        doc_ids, docs = _unique_inverse(np.concatenate([*chunks, _bytes_array(pending)]))
        rows_so_far = np.frombuffer(rows, dtype=np.int32)
        raise _duplicate_error(path, rows_so_far, docs, len(doc_ids), list(query_row),
                               doc_ids) or error from None
    _check_no_nul(pending, path)
    chunks.append(_bytes_array(pending))
    return query_row, rows, scores, chunks


def _read_compact_run(path: str | Path, depth: int | None) -> CompactRun:
    """``read_run(path, depth, compact=True)``: stream the file into typed arrays, then index
    the doc ids, check duplicates and order each query best first with numpy. Errors are those
    of :func:`iter_run_lines` (and the empty run's), naming the same lines."""
    query_row, row_buffer, score_buffer, chunks = _scan_run(path)
    query_ids = list(query_row)
    del query_row
    strings = np.concatenate(chunks)
    del chunks
    doc_ids, docs = _unique_inverse(strings)
    del strings
    rows = np.frombuffer(row_buffer, dtype=np.int32)
    duplicate = _duplicate_error(path, rows, docs, len(doc_ids), query_ids, doc_ids)
    if duplicate is not None:
        raise duplicate
    if not query_ids:
        raise IrdistillError("run file has no ranked documents", path=path)
    scores = np.frombuffer(score_buffer, dtype=np.float64)
    counts = np.bincount(rows, minlength=len(query_ids)).astype(np.int64)
    order = _ranked_order(rows, docs, scores)
    scores = scores.copy() if order is None else scores[order]
    if order is not None:
        docs = docs[order]
    del rows, order, row_buffer, score_buffer
    offsets = np.zeros(len(query_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if depth is not None:
        keep_counts = (np.array([_depth_slice(int(c), depth) for c in counts], dtype=np.int64)
                       if depth < 0 else np.minimum(counts, depth))
        if np.any(keep_counts != counts):
            position = np.arange(len(docs)) - np.repeat(offsets[:-1], counts)
            keep = position < np.repeat(keep_counts, counts)
            docs, scores = docs[keep], scores[keep]
            np.cumsum(keep_counts, out=offsets[1:])
            used = np.zeros(len(doc_ids), dtype=bool)
            used[docs] = True
            if not used.all():  # drop the ids of documents cut by the depth (order kept)
                docs = (np.cumsum(used, dtype=np.int64) - 1)[docs].astype(np.int32)
                doc_ids = doc_ids[used]
    return CompactRun(query_ids, offsets, docs, scores, doc_ids)
