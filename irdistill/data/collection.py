"""Collections: documents with random access by id, queries, and graded qrels.

Three sources, one interface (:class:`Collection`):

* an ir_datasets id (``beir/scifact/test``, ``cranfield``, ``msmarco-passage/dev/small``): documents
  stay in ir_datasets' own on-disk store and are fetched by id when needed;
* a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``);
* a folder of plain files: ``docs.tsv`` or ``docs.jsonl``, ``queries.tsv``, ``qrels.txt`` (TREC).

Local document files are indexed by byte offset in one streaming pass, so a large corpus is
never held in memory as Python strings.

Checks of local files (each error names the file and line): ids are unique and free of
whitespace (TREC runs are whitespace-separated), every line has its columns or JSON fields, and
the text is UTF-8. Empty texts are handled by what they mean:

* an empty **document** is common in real corpora (a title-only record, a failed crawl): it is
  kept, and a warning counts them (``DocStore.empty``); it is scored as an empty text;
* an empty **query** has nothing to rank for: in a local file it is an error naming the line;
  in an ir_datasets dataset (which the user cannot edit) it is a warning with the count;
* a file with no document or no query at all is an error.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ir_datasets

from irdistill.data.trec import Qrels, read_qrels
from irdistill.errors import IrdistillError, suggest
from irdistill.io import check_input_file, file_lock, iter_lines

log = logging.getLogger(__name__)


class DocStore:
    """Random access to document texts by id, and a streaming pass over all of them."""

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        raise NotImplementedError

    def missing(self, doc_ids: Iterable[str]) -> list[str]:
        """The ids not in the store, where that is cheap to know without reading texts (local
        files); stores that cannot tell cheaply return [] and fail in ``get_many`` instead."""
        return []

    def get(self, doc_id: str) -> str:
        return self.get_many([doc_id])[doc_id]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


def missing_docs_error(missing: list[str], source: str) -> IrdistillError:
    shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    return IrdistillError(f"{len(missing)} document id(s) not in the collection {source}: {shown}",
                          hint="the run or training file does not belong to this collection")


_missing_docs = missing_docs_error


def _check_id(kind: str, value: str, path: Path, number: int) -> str:
    if not value:
        raise IrdistillError(f"empty {kind} id", path=path, line=number)
    if any(c.isspace() for c in value):
        raise IrdistillError(f"{kind} id {value!r} contains whitespace", path=path, line=number,
                             hint="TREC runs and qrels separate columns by whitespace; ids must "
                                  "not contain any")
    return value


class IrdsDocStore(DocStore):
    """Documents in ir_datasets' own store (lz4 pickles on disk), fetched by id."""

    def __init__(self, dataset, dataset_id: str):
        self._dataset = dataset
        self._id = dataset_id
        self._store = None
        self._built = False  # ir_datasets builds its store on the first fetch

    @property
    def store(self):
        if self._store is None:
            try:
                self._store = self._dataset.docs_store()
            except OSError as exc:
                raise unavailable_dataset(self._id, exc) from None
        return self._store

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(doc_ids))
        try:
            if self._built:
                found = self.store.get_many(wanted)
            else:  # the first fetch may build the store: one process at a time (workers of a
                # grid, torchrun), since two building it at once leave it corrupt
                with file_lock(ir_datasets.util.home_path() / ".irdistill-locks" /
                               (re.sub(r"[^A-Za-z0-9._-]+", "_", self._id) + ".lock")):
                    found = self.store.get_many(wanted)
                self._built = True
        except OSError as exc:
            raise unavailable_dataset(self._id, exc) from None
        missing = [d for d in wanted if d not in found]
        if missing:
            raise _missing_docs(missing, f"'{self._id}'")
        return {d: found[d].default_text() for d in wanted}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        try:
            for doc in self._dataset.docs_iter():
                yield doc.doc_id, doc.default_text()
        except OSError as exc:
            raise unavailable_dataset(self._id, exc) from None

    def __len__(self) -> int:
        return self._dataset.docs_count()


class OffsetDocStore(DocStore):
    """A local TSV (``id<TAB>text``) or JSONL (``_id``/``title``/``text``) file, read by offset."""

    def __init__(self, path: Path):
        self.path = check_input_file(path, "document file")
        self.jsonl = self.path.suffix == ".jsonl"
        self.offsets: dict[str, int] = {}
        self.empty: list[str] = []  # ids of documents with empty text
        offset = 0
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    doc_id, text = self._parse(raw, number)
                    _check_id("document", doc_id, self.path, number)
                    if doc_id in self.offsets:
                        raise IrdistillError(f"document id '{doc_id}' appears twice",
                                             path=self.path, line=number,
                                             hint="document ids must be unique")
                    if not text.strip():
                        self.empty.append(doc_id)
                    self.offsets[doc_id] = offset
                offset += len(raw)
        if not self.offsets:
            raise IrdistillError("document file holds no documents", path=self.path)
        if self.empty:
            log.warning("%s: %d of %d documents have empty text (e.g. '%s'); they are kept and "
                        "scored as empty texts", self.path, len(self.empty), len(self.offsets),
                        self.empty[0])

    def _parse(self, raw: bytes, number: int) -> tuple[str, str]:
        if raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark (the first line only)
            raw = raw[3:]
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise IrdistillError(f"invalid UTF-8 ({exc.reason})", path=self.path, line=number,
                                 hint="re-encode the file as UTF-8") from None
        if self.jsonl:
            try:
                obj = json.loads(line)
                doc_id = str(obj["_id"] if "_id" in obj else obj["doc_id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise IrdistillError("expected a JSON object with '_id' (or 'doc_id') and 'text'",
                                     path=self.path, line=number) from None
            if not isinstance(obj, dict):
                raise TypeError
            title, text = obj.get("title") or "", obj.get("text") or ""
            if not isinstance(title, str) or not isinstance(text, str):
                raise IrdistillError("'title' and 'text' must be strings", path=self.path,
                                     line=number)
            return doc_id, f"{title} {text}".strip() if title else text
        parts = line.split("\t", 1)
        if len(parts) != 2:
            raise IrdistillError("expected 2 tab-separated columns 'doc_id<TAB>text'",
                                 path=self.path, line=number)
        return parts[0], parts[1]

    def missing(self, doc_ids: Iterable[str]) -> list[str]:
        return [d for d in dict.fromkeys(doc_ids) if d not in self.offsets]

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(doc_ids))
        missing = [d for d in wanted if d not in self.offsets]
        if missing:
            raise _missing_docs(missing, f"file {self.path}")
        out = {}
        with open(self.path, "rb") as handle:
            for doc_id in wanted:
                handle.seek(self.offsets[doc_id])
                out[doc_id] = self._parse(handle.readline(), 0)[1]
        return out

    def __iter__(self) -> Iterator[tuple[str, str]]:
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield self._parse(raw, number)

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass
class Collection:
    """A retrieval test or training collection.

    ``name`` identifies the collection; ``docs_name`` its document set, which keys caches
    (BM25 indexes), so the train and test splits of one corpus share them.
    """

    name: str
    docs: DocStore
    queries: dict[str, str]
    qrels: Qrels = field(default_factory=dict)
    docs_id: str | None = None  # names the document set, shared by splits of one corpus

    @property
    def docs_name(self) -> str:
        return self.docs_id or self.name

    def require_qrels(self) -> Qrels:
        if not self.qrels:
            raise IrdistillError(f"collection '{self.name}' has no relevance judgements",
                                 hint="give qrels (a qrels file or a dataset id with qrels)")
        return self.qrels

    def query_texts(self, query_ids: Iterable[str]) -> dict[str, str]:
        out = {}
        for qid in query_ids:
            if qid not in self.queries:
                raise IrdistillError(f"query '{qid}' is not in collection '{self.name}'",
                                     hint="the run does not belong to this collection's queries")
            out[qid] = self.queries[qid]
        return out


def _add_query(queries: dict[str, str], qid: str, text, path: Path, number: int) -> None:
    _check_id("query", qid, path, number)
    if not isinstance(text, str):
        raise IrdistillError("the query text must be a string", path=path, line=number)
    if qid in queries:
        raise IrdistillError(f"query id '{qid}' appears twice", path=path, line=number,
                             hint="query ids must be unique")
    if not text.strip():
        raise IrdistillError(f"query '{qid}' has empty text", path=path, line=number,
                             hint="give the query's text or remove the line")
    queries[qid] = text


def _no_queries(queries: dict[str, str], path: Path) -> dict[str, str]:
    if not queries:
        raise IrdistillError("queries file holds no queries", path=path)
    return queries


def _read_queries_tsv(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, line in iter_lines(path, "queries file"):
        if not line.strip():
            continue
        parts = line.split("\t", 1)
        if len(parts) != 2:
            raise IrdistillError("expected 2 tab-separated columns 'query_id<TAB>text'",
                                 path=path, line=number)
        _add_query(queries, parts[0], parts[1], path, number)
    return _no_queries(queries, path)


def _read_queries_jsonl(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, line in iter_lines(path, "queries file"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            qid, text = str(obj["_id"] if "_id" in obj else obj["query_id"]), obj["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise IrdistillError("expected a JSON object with '_id' and 'text'", path=path,
                                 line=number) from None
        _add_query(queries, qid, text, path, number)
    return _no_queries(queries, path)


def _read_beir_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    for number, line in iter_lines(path, "qrels file"):
        parts = line.split("\t")
        if number == 1 and parts[0] in ("query-id", "query_id", "qid"):
            continue
        if not line.strip():
            continue
        if len(parts) != 3:
            raise IrdistillError("expected 3 tab-separated columns 'query-id corpus-id score'",
                                 path=path, line=number)
        try:
            rel = int(parts[2])
        except ValueError:
            raise IrdistillError(f"relevance '{parts[2]}' is not an integer", path=path,
                                 line=number) from None
        docs = qrels.setdefault(parts[0], {})
        if docs.get(parts[1], rel) != rel:
            raise IrdistillError(f"document '{parts[1]}' is judged twice for query "
                                 f"'{parts[0]}' with different labels", path=path, line=number)
        docs[parts[1]] = rel
    if not qrels:
        raise IrdistillError("qrels file has no judgements", path=path)
    return qrels


def unavailable_dataset(dataset_id: str, exc: BaseException) -> IrdistillError:
    """The error for an ir_datasets dataset whose files are not here and cannot be fetched."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return IrdistillError(f"dataset '{dataset_id}' is not available offline ({first[:200]})",
                          hint="download it where there is network (ir_datasets downloads on "
                               "first use) and set IR_DATASETS_HOME, or give a local folder")


def _load_irds(dataset_id: str) -> Collection:
    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise _unknown_dataset(dataset_id) from None
    if not dataset.has_docs():
        raise IrdistillError(f"dataset '{dataset_id}' has no documents",
                             hint="use an ir_datasets id that provides docs")
    queries = {}
    qrels: Qrels = {}
    try:
        if dataset.has_queries():
            queries = {q.query_id: q.default_text() for q in dataset.queries_iter()}
        if dataset.has_qrels():
            for qrel in dataset.qrels_iter():
                qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
    except OSError as exc:  # requests' ConnectionError is an OSError
        raise unavailable_dataset(dataset_id, exc) from None
    empty = sorted(q for q, text in queries.items() if not text.strip())
    if empty:
        log.warning("dataset '%s': %d of %d queries have empty text (e.g. '%s')", dataset_id,
                    len(empty), len(queries), empty[0])
    return Collection(dataset_id, IrdsDocStore(dataset, dataset_id), queries, qrels,
                      docs_id=ir_datasets.docs_parent_id(dataset_id))


def _folder_name(folder: Path, split: str | None) -> str:
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    return f"{folder.name}-{digest}" + (f"/{split}" if split else "")


def _load_beir_folder(folder: Path, split: str | None) -> Collection:
    qrels_dir = folder / "qrels"
    splits = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if split is None and splits:
        split = "test" if "test" in splits else splits[0]
    qrels: Qrels = {}
    if split is not None:
        if split not in splits:
            raise IrdistillError(f"BEIR folder has no qrels for split '{split}'", path=folder,
                                 hint=f"available splits: {', '.join(splits) or 'none'}")
        qrels = _read_beir_qrels(qrels_dir / f"{split}.tsv")
    queries = _read_queries_jsonl(folder / "queries.jsonl")
    if qrels:  # a BEIR split is the judged subset of the queries
        queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return Collection(_folder_name(folder, split), OffsetDocStore(folder / "corpus.jsonl"),
                      queries, qrels, docs_id=_folder_name(folder, None))


def _load_plain_folder(folder: Path) -> Collection:
    docs = next((folder / n for n in ("docs.tsv", "docs.jsonl") if (folder / n).exists()), None)
    if docs is None:
        raise IrdistillError("folder is neither a BEIR folder (corpus.jsonl) nor a plain "
                             "collection (docs.tsv or docs.jsonl)", path=folder)
    queries_path = next((folder / n for n in ("queries.tsv", "queries.jsonl")
                         if (folder / n).exists()), None)
    queries = {}
    if queries_path is not None:
        queries = (_read_queries_jsonl if queries_path.suffix == ".jsonl"
                   else _read_queries_tsv)(queries_path)
    qrels = read_qrels(folder / "qrels.txt") if (folder / "qrels.txt").exists() else {}
    return Collection(_folder_name(folder, None), OffsetDocStore(docs), queries, qrels)


def check_collection_spec(spec: str | os.PathLike, split: str | None = None) -> None:
    """Without loading anything: ``spec`` is a folder, or a registered ir_datasets id (else an
    error with the closest id)."""
    path = Path(spec)
    if path.is_dir():
        return
    if path.exists():
        raise IrdistillError("expected a collection folder or an ir_datasets id, found a file",
                             path=path, hint="give the folder that holds the collection's files")
    if str(spec).startswith((".", "/", "~")):
        raise IrdistillError("collection folder not found", path=path, hint="check the path")

    if str(spec) not in ir_datasets.registry:
        raise _unknown_dataset(str(spec))
    if split is not None:
        raise IrdistillError("a split applies to BEIR folders; an ir_datasets id names its split "
                             f"itself (e.g. '{spec}/test')")


def _unknown_dataset(dataset_id: str) -> IrdistillError:
    return IrdistillError(
        f"unknown dataset id '{dataset_id}'",
        hint=suggest(dataset_id, ir_datasets.registry._registered.keys())
        + " (or give a local BEIR folder or a folder with docs.tsv/queries.tsv/qrels.txt)")


def load_collection(spec: str | os.PathLike, split: str | None = None) -> Collection:
    """Load a collection from an ir_datasets id, a BEIR folder or a folder of plain files."""
    path = Path(spec)
    if path.is_dir():
        if (path / "corpus.jsonl").exists():
            return _load_beir_folder(path, split)
        return _load_plain_folder(path)
    if path.exists():
        raise IrdistillError("expected a collection folder or an ir_datasets id, found a file",
                             path=path, hint="give the folder that holds the collection's files")
    if str(spec).startswith((".", "/", "~")):
        raise IrdistillError("collection folder not found", path=path, hint="check the path")
    if split is not None:
        raise IrdistillError("--split applies to BEIR folders; an ir_datasets id names its split "
                             f"itself (e.g. '{spec}/test')")
    return _load_irds(str(spec))


def load_qrels(spec: str | os.PathLike) -> Qrels:
    """Qrels from a TREC qrels file, a BEIR qrels TSV, or a collection (dataset id or folder)."""
    path = Path(spec)
    if path.is_file() or (path.exists() and not path.is_dir()):
        if path.name.endswith((".tsv", ".tsv.gz")):
            return _read_beir_qrels(path)
        return read_qrels(path)
    collection = load_collection(spec)
    return collection.require_qrels()
