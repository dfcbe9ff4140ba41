"""Dense first stage: a sentence-transformers bi-encoder, document embeddings cached on disk.

A bi-encoder is any sentence-transformers model (a folder or a hub name; ``minilm`` is the
bundled all-MiniLM-L6-v2), loaded with ``sentence_transformers.SentenceTransformer`` and used as
it is: its own pooling and normalisation modules, and its own prompts
(``config_sentence_transformers.json``: the ``query`` prompt for queries, the first of
``document`` / ``passage`` / ``corpus`` that is not empty for documents, as ``encode_query``
/ ``encode_document`` choose them, but for the empty ``document`` prompt that
sentence-transformers adds to every model). The score of a (query, document) pair is the dot product of
their embeddings: the cosine similarity when the model ends in a ``Normalize`` module (the
bundled MiniLM does), the raw inner product otherwise.

Document embeddings are computed once per (model, document set, settings) and kept under
``$IRDISTILL_CACHE/dense/<key>/`` (beside the BM25 indexes)::

    settings.json        what the key covers (written first; a folder whose record disagrees
                         with what is asked is refused, never mixed)
    embeddings.npy       [documents, dim] float32 (or float16), read memory-mapped
    doc_ids.json         the documents' ids, in the rows' order
    done                 the build finished

The key covers the model's files by content (:func:`irdistill.provenance.model_fingerprint`
plus its sentence-transformers configuration), the collection's document set (as BM25 keys
it: train and test splits of one corpus share it), the document length, the document prompt,
the compute precision and the stored dtype. A build streams the documents in chunks
(``embeddings.partial.npy`` and ``progress.jsonl`` while it runs): an interrupted build resumes
from its finished chunks.

Search is exact: a chunked matrix product of the query embeddings with the memory-mapped
embeddings and a running top-k (torch), so the corpus never has to fit in memory at once; or
FAISS (``search="faiss"``: a flat inner-product index, exact as well, held in memory; needs
``faiss-cpu``, the ``[faiss]`` extra).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from irdistill.config import TRAINING_PRECISIONS  # of the encoder: fp32, autocast bf16/fp16, auto
from irdistill.data.collection import Collection, missing_docs_error
from irdistill.data.trec import Run, write_run
from irdistill.errors import IrdistillError, unknown_name
from irdistill.io import append_jsonl, file_lock, read_jsonl_checkpoint, write_json
from irdistill.models.cross_encoder import _load_error
from irdistill.models.paths import resolve_model_path
from irdistill.models.runtime import autocast_context, check_device, resolve_precision
from irdistill.provenance import model_fingerprint, sha256_file, write_run_provenance
from irdistill.utils import cache_dir, default_device, stable_hash

log = logging.getLogger(__name__)

SEARCHES = ("exact", "faiss")
DTYPES = ("float32", "float16")
#: files of a sentence-transformers folder that change its embeddings beyond what
#: :func:`irdistill.provenance.model_fingerprint` hashes (modules, prompts, lengths)
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
DOC_PROMPT_NAMES = ("document", "passage", "corpus")
CACHE_VERSION = 1


@dataclass(frozen=True)
class DenseSettings:
    """Settings of dense encoding. ``max_length``, ``precision`` and ``dtype`` key the
    embeddings cache; ``batch_size``, ``chunk_docs`` and ``device`` do not change a score."""

    max_length: int | None = None  # tokens kept of a text; None: the model's max_seq_length
    precision: str = "auto"        # fp32 | bf16 | fp16 | auto (bf16 where native)
    dtype: str = "float32"         # stored embeddings: float32 | float16
    batch_size: int = 32           # texts per forward pass (sorted by length first)
    chunk_docs: int = 4096         # documents per resumable chunk of a build
    device: str | None = None      # cpu, cuda, ... (default: the best there is)

    def check(self) -> None:
        for name, value in (("max length", self.max_length), ("batch size", self.batch_size),
                            ("chunk size", self.chunk_docs)):
            if value is not None and value < 1:
                raise IrdistillError(f"{name} {value} must be at least 1")
        if self.precision not in TRAINING_PRECISIONS:
            raise unknown_name("precision", str(self.precision), TRAINING_PRECISIONS)
        if self.dtype not in DTYPES:
            raise unknown_name("embedding dtype", str(self.dtype), DTYPES)

        check_device(self.device)


def effective_precision(device: str | None, precision: str | None) -> str:
    """What the encoder computes in: ``auto`` resolved for the device, and fp16 autocast on a
    CPU (which autocast does not do) read as fp32. This, not the request, keys the cache."""

    device = torch.device(device or default_device())
    resolved = resolve_precision(device, precision or "fp32")
    if resolved is None or (device.type == "cpu" and resolved == "fp16"):
        return "fp32"
    return resolved


def bi_encoder_fingerprint(name_or_path: str) -> str:
    """Content hash of a bi-encoder: :func:`irdistill.provenance.model_fingerprint` (config,
    tokenizer, weights, modules' subfolders) plus its sentence-transformers files (modules,
    prompts, lengths); ``hub:<name>`` for a hub model that is not a local folder."""
    base = model_fingerprint(name_or_path)
    folder = Path(resolve_model_path(name_or_path))
    if base.startswith("hub:") or not folder.is_dir():
        return base
    digest = hashlib.sha256(base.encode())
    for name in ST_FILES:
        if (folder / name).is_file():
            digest.update(name.encode())
            digest.update(sha256_file(folder / name).encode())
    return digest.hexdigest()[:16]


class BiEncoder:
    """A sentence-transformers model with the settings dense retrieval uses.

    ``encode_queries`` / ``encode_documents`` return float32 arrays ``[texts, dim]``, each with
    the model's own prompt for its side, computed under ``precision`` (autocast).
    """

    def __init__(self, model, name: str, path: str, *, max_length: int | None = None,
                 precision: str = "auto", device: str | None = None):
        self.model = model
        self.name = name
        self.path = path
        self.device = torch.device(device or str(model.device))
        self.model.to(self.device)
        limit = _position_limit(model)
        if max_length is not None:
            if limit is not None and max_length > limit:
                raise IrdistillError(f"max length {max_length} exceeds the {limit} positions of "
                                     f"model '{name}'", hint=f"give at most {limit}")
            model.max_seq_length = max_length
        if model.max_seq_length is None:
            model.max_seq_length = limit or 512
        self.precision = effective_precision(str(self.device), precision)
        self.fingerprint = bi_encoder_fingerprint(path)
        modules = [type(m).__name__ for m in model]
        self.normalises = "Normalize" in modules
        self.similarity = "cosine" if self.normalises else "dot"
        declared = getattr(model, "similarity_fn_name", None)
        if declared and declared not in (self.similarity, "dot"):
            log.warning("model %s declares %s similarity, but its embeddings are %snormalised: "
                        "dense scores are their dot products", name, declared,
                        "" if self.normalises else "not ")

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, max_length: int | None = None,
                        precision: str = "auto", device: str | None = None) -> BiEncoder:
        """Load a sentence-transformers folder, a hub name, or the bundled MiniLM (``minilm``)."""
        path = resolve_model_path(name_or_path)
        # sentence-transformers takes seconds to import: only when a bi-encoder is loaded
        import transformers
        from sentence_transformers import SentenceTransformer

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its weight-loading bars and notices
        try:
            model = SentenceTransformer(path, device=device or default_device())
        except IrdistillError:
            raise
        except Exception as exc:  # OSError offline, ValueError / safetensors errors on bad files
            raise _load_error(name_or_path, exc, "files") from None
        finally:
            transformers.logging.set_verbosity(verbosity)
        return cls(model, name_or_path, path, max_length=max_length, precision=precision,
                   device=device)

    # -- prompts: as sentence-transformers' encode_query / encode_document pick them, except
    # that an empty prompt does not hide a later one: sentence-transformers (6.3) adds
    # ``"document": ""`` to every model's prompts, so its encode_document would drop the
    # ``passage`` prompt of an e5-style model ({"query": "query: ", "passage": "passage: "})
    def _prompt(self, names: Sequence[str]) -> str:
        prompts = self.model.prompts or {}
        for name in names:
            if prompts.get(name):
                return prompts[name]
        if any(name in prompts for name in names):  # defined, and empty: no prompt
            return ""
        default = getattr(self.model, "default_prompt_name", None)
        return (prompts.get(default) or "") if default else ""

    @property
    def query_prompt(self) -> str:
        return self._prompt(("query",))

    @property
    def document_prompt(self) -> str:
        return self._prompt(DOC_PROMPT_NAMES)

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(getter())

    def _encode(self, texts: Sequence[str], prompt: str, batch_size: int) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        precision = None if self.precision == "fp32" else self.precision
        with torch.inference_mode(), autocast_context(self.device, precision):
            out = self.model.encode(list(texts), prompt=prompt, batch_size=batch_size,
                                    convert_to_tensor=True, show_progress_bar=False)
        return out.float().cpu().numpy()

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.query_prompt, batch_size)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.document_prompt, batch_size)

    def describe(self) -> dict[str, Any]:
        """What the provenance records of this encoder."""
        return {"name": self.name, "fingerprint": self.fingerprint, "similarity": self.similarity,
                "max_length": self.max_length, "precision": self.precision,
                "query_prompt": self.query_prompt, "document_prompt": self.document_prompt}


def _position_limit(model) -> int | None:
    try:
        config = model[0].auto_model.config
    except (AttributeError, IndexError, TypeError):
        return None
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def load_bi_encoder(model: str | BiEncoder, settings: DenseSettings = DenseSettings()) -> BiEncoder:
    """``model`` as a :class:`BiEncoder` (a name is loaded with the settings' length, precision
    and device; a loaded one is used as it is)."""
    if isinstance(model, BiEncoder):
        return model
    return BiEncoder.from_pretrained(model, max_length=settings.max_length,
                                     precision=settings.precision, device=settings.device)


# -- the embeddings cache ------------------------------------------------------------------------
def cache_identity(encoder: BiEncoder, collection: Collection,
                   settings: DenseSettings) -> dict[str, Any]:
    """Everything the cached document embeddings depend on (the folder's name is its hash)."""
    return {"version": CACHE_VERSION, "model": encoder.fingerprint, "model_name": encoder.name,
            "documents": collection.docs_name, "max_length": encoder.max_length,
            "document_prompt": encoder.document_prompt, "precision": encoder.precision,
            "dtype": settings.dtype}


def cache_key(identity: Mapping[str, Any]) -> str:
    # the model's name is recorded for people, not keyed: the same files under another name
    # (a folder and its alias 'minilm') share a cache
    return stable_hash({k: v for k, v in identity.items() if k != "model_name"})


def _refuse(folder: Path, problem: str, file: str = "settings.json") -> IrdistillError:
    return IrdistillError(f"the dense embeddings cache {problem}", path=folder / file,
                          hint=f"delete the folder {folder} and it will be built again")


def _ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]


def _chunks(docs: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for item in docs:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class DenseIndex:
    """The cached document embeddings of one collection (memory-mapped) and their ids."""

    def __init__(self, folder: Path, doc_ids: list[str], embeddings: np.ndarray,
                 identity: dict[str, Any]):
        self.folder = folder
        self.doc_ids = doc_ids
        self.embeddings = embeddings
        self.identity = identity
        self._row: dict[str, int] | None = None

    @property
    def row(self) -> dict[str, int]:
        """Document id -> row of ``embeddings``."""
        if self._row is None:
            self._row = {d: i for i, d in enumerate(self.doc_ids)}
        return self._row

    @classmethod
    def folder_for(cls, encoder: BiEncoder, collection: Collection,
                   settings: DenseSettings = DenseSettings(), cache: Path | None = None) -> Path:
        identity = cache_identity(encoder, collection, settings)
        return Path(cache or cache_dir() / "dense") / cache_key(identity)

    @classmethod
    def build(cls, collection: Collection, encoder: BiEncoder,
              settings: DenseSettings = DenseSettings(), cache: Path | None = None,
              show_progress: bool = True) -> DenseIndex:
        """Load the cached embeddings of ``collection`` or compute them (resuming an
        interrupted build) in one streaming pass over the documents, and cache them."""
        settings.check()
        identity = cache_identity(encoder, collection, settings)
        folder = Path(cache or cache_dir() / "dense") / cache_key(identity)
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / ".lock"):  # one process builds it, the others then read it
            cls._check_identity(folder, identity)
            if (folder / "done").exists():
                log.info("loading dense embeddings from %s", folder)
                return cls._load(folder, identity, collection)
            cls._build(folder, collection, encoder, settings, show_progress)
            return cls._load(folder, identity, collection)

    @staticmethod
    def _check_identity(folder: Path, identity: dict[str, Any]) -> None:
        """Write the folder's record of its key, or refuse a folder whose record disagrees."""
        record = folder / "settings.json"
        if not record.exists():
            others = [p.name for p in folder.iterdir() if p.name != ".lock"]
            if others:
                raise _refuse(folder, f"folder holds files ({', '.join(sorted(others)[:3])}) "
                                      "but no record of its settings")
            write_json(record, {**identity, "key": folder.name})
            return
        try:
            written = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise _refuse(folder, "record of its settings is unreadable") from None
        if not isinstance(written, dict):
            raise _refuse(folder, "record of its settings is unreadable")
        key = written.pop("key", None)
        written.pop("model_name", None)
        wanted = {k: v for k, v in identity.items() if k != "model_name"}
        differ = sorted(k for k in set(written) | set(wanted) if written.get(k) != wanted.get(k))
        if differ or key != folder.name:
            what = ", ".join(f"{k} {written.get(k)!r} instead of {wanted.get(k)!r}"
                             for k in differ) or f"key {key!r} instead of {folder.name!r}"
            raise _refuse(folder, f"folder was made with other settings than its key says "
                                  f"({what}): it is not used, not mixed")

    @classmethod
    def _load(cls, folder: Path, identity: dict[str, Any], collection: Collection) -> DenseIndex:
        try:
            doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
            embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise _refuse(folder, f"is incomplete or damaged ({exc})", "embeddings.npy") from None
        if (not isinstance(doc_ids, list) or embeddings.ndim != 2
                or embeddings.shape[0] != len(doc_ids)
                or embeddings.dtype != np.dtype(identity["dtype"])):
            raise _refuse(folder, f"does not match its ids ({embeddings.shape} {embeddings.dtype} "
                                  f"embeddings for {len(doc_ids)} ids)", "embeddings.npy")
        if len(doc_ids) != len(collection.docs):
            raise _refuse(folder, f"holds {len(doc_ids)} documents, but collection "
                                  f"'{collection.name}' has {len(collection.docs)}: its documents "
                                  "changed since", "doc_ids.json")
        return cls(folder, doc_ids, embeddings, identity)

    @staticmethod
    def _build(folder: Path, collection: Collection, encoder: BiEncoder,
               settings: DenseSettings, show_progress: bool) -> None:

        total = len(collection.docs)
        if total == 0:
            raise IrdistillError(f"collection '{collection.name}' has no documents to encode")
        dim = encoder.dim
        dtype = np.dtype(settings.dtype)
        partial = folder / "embeddings.partial.npy"
        progress = folder / "progress.jsonl"
        plan_file = folder / "build.json"
        plan = {"documents": total, "dim": dim, "chunk_docs": settings.chunk_docs}
        finished: dict[int, str] = {}
        if partial.exists() and plan_file.exists():
            plan = json.loads(plan_file.read_text(encoding="utf-8"))
            if plan.get("documents") != total or plan.get("dim") != dim:
                raise _refuse(folder, f"interrupted build was for {plan.get('documents')} "
                                      f"documents of {plan.get('dim')} dimensions, not {total} "
                                      f"of {dim}", "build.json")
            try:
                matrix = np.load(partial, mmap_mode="r+")
            except (OSError, ValueError):
                raise _refuse(folder, "interrupted build is damaged",
                              "embeddings.partial.npy") from None
            if matrix.shape != (total, dim) or matrix.dtype != dtype:
                raise _refuse(folder, "interrupted build is damaged", "embeddings.partial.npy")
            finished = {r["chunk"]: r["ids"] for r in read_jsonl_checkpoint(progress)}
            log.info("resuming the dense embeddings of %s: %d of %d chunks done", collection.name,
                     len(finished), -(-total // plan["chunk_docs"]))
        else:
            progress.unlink(missing_ok=True)
            write_json(plan_file, plan)
            matrix = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype,
                                               shape=(total, dim))
            log.info("encoding %d documents of %s with %s (%s, %d tokens) into %s", total,
                     collection.name, encoder.name, encoder.precision, encoder.max_length, folder)
        size = int(plan["chunk_docs"])
        doc_ids: list[str] = []
        bar = tqdm(total=total, desc="encoding documents", unit="doc", disable=not show_progress)
        try:
            for number, chunk in enumerate(_chunks(collection.docs, size)):
                start = number * size
                ids = [d for d, _ in chunk]
                doc_ids.extend(ids)
                if start + len(ids) > total:
                    raise IrdistillError(f"collection '{collection.name}' yields more documents "
                                         f"than the {total} it counts")
                if number in finished:
                    if finished[number] != _ids_digest(ids):
                        raise _refuse(folder, f"interrupted build's chunk {number} holds other "
                                              "documents: the collection changed since",
                                      "progress.jsonl")
                    bar.update(len(ids))
                    continue
                texts = [t for _, t in chunk]
                # longest first in batches of similar length, as sentence-transformers sorts
                order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
                vectors = np.empty((len(texts), dim), dtype=np.float32)
                for b in range(0, len(order), settings.batch_size):
                    rows = order[b:b + settings.batch_size]
                    vectors[rows] = encoder.encode_documents([texts[i] for i in rows],
                                                             settings.batch_size)
                    bar.update(len(rows))
                matrix[start:start + len(ids)] = vectors.astype(dtype)
                matrix.flush()
                append_jsonl(progress, {"chunk": number, "ids": _ids_digest(ids)})
        finally:
            bar.close()
        if len(doc_ids) != total:
            raise IrdistillError(f"collection '{collection.name}' yielded {len(doc_ids)} "
                                 f"documents, but counts {total}")
        del matrix
        write_json(folder / "doc_ids.json", doc_ids)
        os.replace(partial, folder / "embeddings.npy")
        for leftover in (progress, plan_file):
            leftover.unlink(missing_ok=True)
        (folder / "done").touch()

    # -- search -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, search: str = "exact",
               block_elements: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, rows) of each query embedding by dot product, best first (ties:
        the lower row first)."""
        check_search(search)
        k = min(k, len(self.doc_ids))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if search == "faiss":
            scores, rows = _faiss_search(self.embeddings, queries, k)
        else:
            scores, rows = exact_search(self.embeddings, queries, k, block_elements)
        return _order(scores, rows)

    def vectors(self, doc_ids: Sequence[str]) -> np.ndarray:
        """The embeddings of the given documents, as float32 rows in their order."""
        return np.asarray(self.embeddings[[self.row[d] for d in doc_ids]], dtype=np.float32)


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int,
                 block_elements: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` dot products of ``queries`` against the rows of ``embeddings`` (memory-mapped
    is fine): blocks of documents that hold at most ``block_elements`` values and give at most
    as many scores (at least 1024 documents), a running top-k per query."""
    n, dim = embeddings.shape
    q_block = max(1, min(len(queries), 4096))
    d_block = max(1024, min(block_elements // q_block, block_elements // max(1, dim)))
    out_scores = np.empty((len(queries), k), dtype=np.float32)
    out_rows = np.empty((len(queries), k), dtype=np.int64)
    for qs in range(0, len(queries), q_block):
        q = torch.from_numpy(queries[qs:qs + q_block])
        best_s = torch.empty((len(q), 0))
        best_i = torch.empty((len(q), 0), dtype=torch.int64)
        for ds in range(0, n, d_block):
            block = torch.from_numpy(np.array(embeddings[ds:ds + d_block], dtype=np.float32))
            scores = q @ block.T
            top = min(k, scores.shape[1])
            s, i = torch.topk(scores, top, dim=1)
            best_s = torch.cat([best_s, s], dim=1)
            best_i = torch.cat([best_i, i + ds], dim=1)
            if best_s.shape[1] > k:
                s, pick = torch.topk(best_s, k, dim=1)
                best_s, best_i = s, torch.gather(best_i, 1, pick)
        out_scores[qs:qs + len(q)] = best_s.numpy()
        out_rows[qs:qs + len(q)] = best_i.numpy()
    return out_scores, out_rows


def check_search(search: str) -> None:
    """An unknown search, or FAISS asked for but not installed, fails before any work."""
    if search not in SEARCHES:
        raise unknown_name("search", search, SEARCHES)
    if search == "faiss":
        _faiss()


def _faiss():
    try:
        import faiss  # optional dependency: irdistill[faiss]
    except ImportError:
        raise IrdistillError("search 'faiss' needs FAISS, which is not installed",
                             hint="pip install 'irdistill[faiss]' (faiss-cpu), or use the exact "
                                  "search") from None
    return faiss


def _faiss_search(embeddings: np.ndarray, queries: np.ndarray,
                  k: int, add_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    index = faiss.IndexFlatIP(embeddings.shape[1])
    for start in range(0, embeddings.shape[0], add_rows):
        index.add(np.ascontiguousarray(embeddings[start:start + add_rows], dtype=np.float32))
    scores, rows = index.search(queries, k)
    return scores.astype(np.float32), rows.astype(np.int64)


def _order(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's results by score, best first, ties by row: the same order whatever the
    search."""
    for q in range(len(scores)):
        order = np.lexsort((rows[q], -scores[q]))
        scores[q], rows[q] = scores[q][order], rows[q][order]
    return scores, rows


# -- runs ----------------------------------------------------------------------------------------
def dense_index(collection: Collection, model: str | BiEncoder = "minilm",
                settings: DenseSettings = DenseSettings(), cache: Path | None = None,
                show_progress: bool = True) -> tuple[BiEncoder, DenseIndex]:
    """The encoder and the cached document embeddings of ``collection`` (built if missing)."""
    settings.check()
    encoder = load_bi_encoder(model, settings)
    return encoder, DenseIndex.build(collection, encoder, settings, cache, show_progress)


def dense_run(collection: Collection, model: str | BiEncoder = "minilm", k: int = 100,
              query_ids=None, *, settings: DenseSettings = DenseSettings(), search: str = "exact",
              cache: Path | None = None, show_progress: bool = True) -> Run:
    """Dense top-``k`` for the collection's queries (or the given subset): the dot product of
    the query's and each document's embedding (cosine for a normalising model)."""
    if k < 1:
        raise IrdistillError(f"k {k} must be at least 1")
    check_search(search)
    queries = collection.queries if query_ids is None else collection.query_texts(query_ids)
    encoder, index = dense_index(collection, model, settings, cache, show_progress)
    qids = list(queries)
    if not qids:
        return {}
    vectors = encoder.encode_queries([queries[q] for q in qids], settings.batch_size)
    scores, rows = index.search(vectors, k, search)
    return {qid: {index.doc_ids[r]: float(s) for s, r in zip(scores[i], rows[i])}
            for i, qid in enumerate(qids)}


def dense_scores(collection: Collection, model: str | BiEncoder,
                 candidates: Mapping[str, Iterable[str]], *,
                 settings: DenseSettings = DenseSettings(), cache: Path | None = None,
                 corpus_cache: bool = True, show_progress: bool = True) -> Run:
    """The bi-encoder's score (dot product of the embeddings) of each (query, document) of a
    candidate run (a run, or query id -> document ids).

    With ``corpus_cache`` the document embeddings come from the collection's cache (built for
    the whole corpus if missing, then shared with :func:`dense_run`); without, only the
    candidates' documents are encoded, and nothing is cached.
    """
    settings.check()
    candidates = {q: list(docs) for q, docs in candidates.items()}
    queries = collection.query_texts(candidates)
    encoder = load_bi_encoder(model, settings)
    wanted = list(dict.fromkeys(d for docs in candidates.values() for d in docs))
    if corpus_cache:
        index = DenseIndex.build(collection, encoder, settings, cache, show_progress)
        missing = [d for d in wanted if d not in index.row]
        if missing:
            raise missing_docs_error(missing, collection.name)
        rows = {d: index.row[d] for d in wanted}
        matrix = index.embeddings
    else:
        texts = collection.docs.get_many(wanted)
        order = sorted(wanted, key=lambda d: -len(texts[d]))
        matrix = np.empty((len(order), encoder.dim), dtype=np.float32)
        for b in range(0, len(order), settings.batch_size):
            batch = order[b:b + settings.batch_size]
            matrix[b:b + len(batch)] = encoder.encode_documents([texts[d] for d in batch],
                                                                settings.batch_size)
        matrix = matrix.astype(settings.dtype).astype(np.float32)  # as the cache would store
        rows = {d: i for i, d in enumerate(order)}
    qids = [q for q in candidates if candidates[q]]
    vectors = encoder.encode_queries([queries[q] for q in qids], settings.batch_size)
    run: Run = {}
    for qid, q in zip(qids, vectors):
        docs = candidates[qid]
        block = np.asarray(matrix[[rows[d] for d in docs]], dtype=np.float32)
        run[qid] = {d: float(s) for d, s in zip(docs, block @ q)}
    return run


def write_dense_run(path, collection: Collection, model: str | BiEncoder = "minilm",
                    k: int = 100, settings: DenseSettings = DenseSettings(),
                    search: str = "exact", source: str | None = None,
                    cache: Path | None = None) -> Run:
    """Dense top-``k`` of every query written as a TREC run (atomically), with its provenance
    beside it (``<stem>.provenance.json``: model and its fingerprint, similarity, prompts,
    settings, the embeddings cache, versions, the run's hash)."""
    settings.check()
    encoder = load_bi_encoder(model, settings)
    run = dense_run(collection, encoder, k, settings=settings, search=search, cache=cache)
    folder = DenseIndex.folder_for(encoder, collection, settings, cache)
    write_run(path, run, tag="dense")
    config = {"k": k, "search": search, **asdict(settings), **encoder.describe()}
    config["precision"] = encoder.precision
    write_run_provenance(path, kind="dense", config=config,
                         model={"name": encoder.name, "fingerprint": encoder.fingerprint,
                                "similarity": encoder.similarity},
                         data={"collection": collection.name,
                               "source": source or collection.name,
                               "documents": collection.docs_name, "queries": len(run)},
                         embeddings=str(folder), device=str(encoder.device))
    return run
