"""Token stores: the token ids of every training text in memory-mapped files, shared by processes.

:func:`~irdistill.train.data.tokenise_groups` holds the token ids of every query and document
in Python dicts of small numpy arrays: about 200 bytes of Python objects a text besides its
tokens (the array object, the id's string, the dict's slot), gigabytes for MS MARCO's 8.8M
passages, and under DDP every process holds its own copy. A :class:`TokenStore` keeps them
in four files of one folder, built once by the main process (:func:`build_token_store`,
:func:`shared_token_stores`) and opened read-only by every process with
``np.load(..., mmap_mode="r")``, so the operating system shares their pages between the
processes and a resumed run reuses the files (15 bytes a text besides its tokens for MS MARCO's
7-character ids):

===============  =================================================================
``tokens.npy``   every text's token ids one after the other (the encoder's token dtype)
``offsets.npy``  int64, one more than the texts: text ``i`` is
                 ``tokens[offsets[i]:offsets[i + 1]]``
``ids.npy``      the ids, sorted, utf-8 encoded, as fixed-width bytes (``S<width>``)
``meta.json``    what the store was built with (fingerprint, sha256 of the ids), counts, dtype
===============  =================================================================

A lookup is a binary search of the sorted ids (``np.searchsorted``): no per-id Python object.
A store is built in a temporary sibling folder renamed into place when complete, so a killed
build never leaves a store that looks complete; a store whose fingerprint and ids match the
ones asked for is reused as it is.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from irdistill.distributed import main_process_first
from irdistill.errors import IrdistillError
from irdistill.io import _umask, file_lock

log = logging.getLogger(__name__)

#: the version of the store's layout, in ``meta.json``; another version is rebuilt
FORMAT = 1
FILES = ("tokens.npy", "offsets.npy", "ids.npy", "meta.json")
#: bytes reserved for the ``.npy`` header of ``tokens.npy``, written when its length is known
_HEADER = 128


class TokenStore:
    """Token ids by text id, read from a store folder through memory maps (see the module).

    ``store[id]`` is a numpy array (a read-only view of the mapped tokens) as
    :class:`~irdistill.train.data.GroupCollator` and :class:`~irdistill.models.tokenization.
    PairEncoder` take them; :meth:`get_many` looks up many ids with one binary search. Pickling
    a store pickles its folder only (data loader workers reopen the files, not copy them).
    """

    def __init__(self, folder: Path, tokens: np.ndarray, offsets: np.ndarray, ids: np.ndarray,
                 meta: dict):
        self.folder = folder
        self.meta = meta
        # plain ndarray views of the memory maps: slicing them is cheaper than slicing a memmap
        self.tokens = tokens.view(np.ndarray)
        self.offsets = offsets.view(np.ndarray)
        self.ids = ids.view(np.ndarray)
        self.width = ids.dtype.itemsize

    @classmethod
    def open(cls, folder: str | os.PathLike) -> TokenStore:
        """The store in ``folder``, its files memory-mapped read-only; an
        :class:`~irdistill.errors.IrdistillError` if it is not a complete store."""
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise IrdistillError(f"not a token store: {', '.join(missing)} missing",
                                 path=folder, hint="build it with build_token_store")
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            tokens, offsets, ids = (np.load(folder / name, mmap_mode="r", allow_pickle=False)
                                    for name in FILES[:3])
        except (OSError, ValueError) as exc:
            raise IrdistillError(f"unreadable token store: {exc}", path=folder,
                                 hint="delete the folder to rebuild it") from exc
        n = len(ids)
        problems = [what for what, bad in (
            ("format", meta.get("format") != FORMAT),
            ("count", meta.get("count") != n),
            ("offsets", offsets.shape != (n + 1,) or offsets.dtype != np.int64),
            ("tokens", tokens.ndim != 1 or len(tokens) != int(offsets[-1])),
            ("dtype", str(tokens.dtype) != meta.get("dtype")),
            ("ids", ids.dtype.kind != "S")) if bad]
        if problems:
            raise IrdistillError(f"inconsistent token store ({', '.join(problems)})",
                                 path=folder, hint="delete the folder to rebuild it")
        return cls(folder, tokens, offsets, ids, meta)

    def __reduce__(self):
        return type(self).open, (str(self.folder),)

    def __repr__(self) -> str:
        return f"TokenStore({str(self.folder)!r}, {len(self)} texts, {self.dtype})"

    @property
    def dtype(self) -> np.dtype:
        return self.tokens.dtype

    @property
    def fingerprint(self) -> dict:
        return self.meta.get("fingerprint", {})

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        """The ids, in their sorted (utf-8 byte) order."""
        for start in range(0, len(self.ids), 65536):
            yield from (b.decode("utf-8") for b in self.ids[start:start + 65536].tolist())

    def _position(self, key: str) -> int:
        """Where ``key`` is among the sorted ids, or -1."""
        raw = key.encode("utf-8") if isinstance(key, str) else None
        if raw is None or len(raw) > self.width or raw.endswith(b"\x00"):
            return -1  # not an id of the store: too wide, or not one a store can hold
        at = int(np.searchsorted(self.ids, raw))
        return at if at < len(self.ids) and self.ids[at] == raw else -1

    def __contains__(self, key: object) -> bool:
        return self._position(key) >= 0  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> np.ndarray:
        at = self._position(key)
        if at < 0:
            raise KeyError(key)
        return self.tokens[self.offsets[at]:self.offsets[at + 1]]

    def get(self, key: str, default: Any = None) -> Any:
        at = self._position(key)
        return default if at < 0 else self.tokens[self.offsets[at]:self.offsets[at + 1]]

    def positions(self, keys: Sequence[str]) -> np.ndarray:
        """The positions of ``keys`` among the sorted ids (one binary search for all); a
        KeyError naming the first id that is not in the store."""
        keys = list(keys)
        if not keys:
            return np.zeros(0, dtype=np.int64)
        raw = [k.encode("utf-8") for k in keys]
        for key, b in zip(keys, raw):
            if len(b) > self.width or b.endswith(b"\x00"):
                raise KeyError(key)
        if len(self.ids) == 0:
            raise KeyError(keys[0])
        wanted = np.array(raw, dtype=self.ids.dtype)
        at = np.searchsorted(self.ids, wanted)
        found = self.ids[np.minimum(at, len(self.ids) - 1)] == wanted
        if not found.all():
            raise KeyError(keys[int(np.argmin(found))])
        return at

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray]:
        """The token ids of each of ``keys``, in their order."""
        at = self.positions(keys)
        starts, ends = self.offsets[at].tolist(), self.offsets[at + 1].tolist()
        return [self.tokens[s:e] for s, e in zip(starts, ends)]

    def lengths(self, keys: Sequence[str] | None = None) -> np.ndarray:
        """Tokens of each of ``keys`` (of every text, in id order, without ``keys``), read from
        the offsets alone."""
        if keys is None:
            return np.diff(self.offsets)
        at = self.positions(keys)
        return self.offsets[at + 1] - self.offsets[at]


def encoder_fingerprint(encoder) -> dict:
    """What a :class:`~irdistill.models.tokenization.PairEncoder`'s token ids depend on: its
    tokenizer (name, size, and a digest of its vocabulary and rules), the maximum lengths, the
    truncation, the token dtype and the pair template. A store built with another fingerprint is
    rebuilt."""
    tokenizer = encoder.tokenizer
    t = encoder.template
    return {"tokenizer": str(getattr(tokenizer, "name_or_path", "")),
            "tokenizer_class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "tokenizer_sha256": _tokenizer_digest(tokenizer),
            "max_query_length": encoder.max_query_length,
            "max_doc_length": encoder.max_doc_length,
            "truncation": encoder.truncation,
            "token_dtype": str(encoder.token_dtype),
            "template": [list(t.prefix), list(t.middle), list(t.suffix)]}


def _tokenizer_digest(tokenizer) -> str:
    """sha256 of what tokenises: a fast tokenizer's whole definition (vocabulary, normaliser,
    pre-tokeniser; not the truncation and padding of its last call), else the vocabulary and
    the constructor's settings."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        # the truncation and padding a call last set (transformers sets them on every call)
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True)
    else:
        settings = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items()
                    if isinstance(v, (bool, int, float, str)) and not k.endswith("_file")
                    and k != "name_or_path"}
        text = json.dumps([sorted(tokenizer.get_vocab().items()), settings], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(fingerprint: dict) -> dict:
    """The fingerprint as ``meta.json`` gives it back (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def sorted_ids(ids: Iterable[str]) -> np.ndarray:
    """The distinct ``ids``, sorted, as a fixed-width bytes array of their utf-8 encodings (byte
    order, which for utf-8 is the order of Python's ``sorted``); an
    :class:`~irdistill.errors.IrdistillError` for an id ending in a NUL character, which such
    an array cannot hold (it strips trailing NUL bytes)."""
    raw = []
    for i in ids:
        if not isinstance(i, str):
            raise IrdistillError(f"token store ids are strings, not {type(i).__name__} ({i!r})")
        b = i.encode("utf-8")
        if b.endswith(b"\x00"):
            raise IrdistillError(f"the id {i!r} ends in a NUL character, which a token store "
                                 f"cannot hold", hint="strip the NUL characters from the ids")
        raw.append(b)
    width = max(map(len, raw), default=1) or 1
    keys = np.array(raw, dtype=f"S{width}")
    del raw
    keys.sort()  # (np.unique takes six times as long for 8.8M ids)
    if len(keys) > 1:
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    return keys


def ids_digest(ids: np.ndarray) -> str:
    """sha256 of a sorted ids array (its width and bytes)."""
    digest = hashlib.sha256(ids.dtype.str.encode("ascii"))
    digest.update(np.ascontiguousarray(ids).tobytes())
    return digest.hexdigest()


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    """A version 1.0 ``.npy`` header of exactly :data:`_HEADER` bytes for a 1-d array (the
    format: magic, header length, the dict's repr padded with spaces to a multiple of 64 bytes,
    a newline), so that the data, written first, need not move."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                 "fortran_order": False, "shape": (int(length),)}).encode("latin1")
    head = np.lib.format.magic(1, 0) + struct.pack("<H", _HEADER - 10)
    pad = _HEADER - len(head) - len(text) - 1
    if pad < 0:
        raise AssertionError("the .npy header does not fit")  # not for any 1-d shape
    return head + text + b" " * pad + b"\n"


def _complete(folder: Path, fingerprint: dict, digest: str) -> TokenStore | None:
    """The store in ``folder`` if it is complete and was built with this fingerprint and ids."""
    if not folder.is_dir():
        return None
    try:
        store = TokenStore.open(folder)
    except IrdistillError as exc:
        log.warning("rebuilding the token store %s: %s", folder, exc)
        return None
    if store.meta.get("fingerprint") != fingerprint:
        log.info("rebuilding the token store %s: built with other settings", folder)
        return None
    if store.meta.get("ids_sha256") != digest:
        log.info("rebuilding the token store %s: built for other ids", folder)
        return None
    return store


def _scratch(folder: Path) -> str:
    """The prefix of a store's temporary siblings (builds under way, or old stores)."""
    return f".{folder.name}.tmp-"


def build_token_store(folder: str | os.PathLike, ids: Iterable[str],
                      fetch: Callable[[list[str]], dict[str, str]],
                      encode: Callable[[Sequence[str]], Sequence[Sequence[int]]],
                      fingerprint: dict, chunk: int = 4096, show_progress: bool = False,
                      dtype: np.dtype | str | None = None) -> TokenStore:
    """The token store of ``ids`` in ``folder``: reused when it holds a complete store built
    with ``fingerprint`` (a JSON-able dict of what the tokens depend on, e.g.
    :func:`encoder_fingerprint`) for the same ids, else built.

    ``fetch(ids) -> {id: text}`` and ``encode(texts) -> token ids`` (arrays or lists of ints,
    e.g. ``partial(encoder.encode_docs, compact=True)``) are called on ``chunk`` ids at a time,
    in sorted order; the tokens are appended to the file as they come, so memory stays bounded
    by a chunk (and by the ids and offsets, 8 bytes and the id's width a text). ``dtype``: that
    of the tokens, by default ``fingerprint["token_dtype"]``, else that of the first array
    ``encode`` gives.

    The build goes to a temporary sibling folder renamed to ``folder`` when complete (an old
    store there is replaced), under a lock beside it: one process builds, others that ask for
    the same store wait and reuse it. Temporary folders of killed builds are removed.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise IrdistillError("the token store's path is a file, not a folder", path=folder)
    if chunk < 1:
        raise IrdistillError(f"chunk must be a positive number of ids, not {chunk}")
    fingerprint = _canonical(fingerprint)
    keys = sorted_ids(ids)
    digest = ids_digest(keys)
    store = _complete(folder, fingerprint, digest)
    if store is not None:
        log.info("reusing the token store %s (%d texts)", folder, len(store))
        return store
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        store = _complete(folder, fingerprint, digest)  # built by another process meanwhile
        if store is not None:
            log.info("reusing the token store %s (%d texts)", folder, len(store))
            return store
        for stale in folder.parent.glob(_scratch(folder) + "*"):  # killed builds' leftovers
            log.info("removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if dtype is None:
            dtype = fingerprint.get("token_dtype")
        tmp = Path(tempfile.mkdtemp(prefix=_scratch(folder), dir=folder.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide it from co-workers
            log.info("building the token store %s (%d texts, %d a chunk)", folder, len(keys),
                     chunk)
            meta = _write_store(tmp, keys, fetch, encode, chunk, show_progress,
                                None if dtype is None else np.dtype(dtype), folder.name)
            meta.update(fingerprint=fingerprint, ids_sha256=digest)
            with open(tmp / "meta.json", "w", encoding="utf-8") as handle:
                json.dump(meta, handle, indent=2, sort_keys=True)
                handle.write("\n")
            _swap_into_place(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    store = TokenStore.open(folder)
    log.info("built the token store %s: %d texts, %d tokens (%s)", folder, len(store),
             len(store.tokens), store.dtype)
    return store


def _write_store(tmp: Path, keys: np.ndarray, fetch, encode, chunk: int, show_progress: bool,
                 dtype: np.dtype | None, name: str) -> dict:
    """Write ``tokens.npy``, ``offsets.npy`` and ``ids.npy`` of ``keys`` into ``tmp``; the
    counts for ``meta.json``."""
    n = len(keys)
    np.save(tmp / "ids.npy", keys, allow_pickle=False)
    offsets = np.lib.format.open_memmap(tmp / "offsets.npy", mode="w+", dtype=np.int64,
                                        shape=(n + 1,))
    offsets[0] = total = 0
    with open(tmp / "tokens.npy", "wb") as out, \
            tqdm(total=n, unit="text", desc=f"tokenising {name}",
                 disable=not show_progress) as bar:
        out.write(b"\x00" * _HEADER)  # the header, once the length is known
        for start in range(0, n, chunk):
            chunk_ids = [b.decode("utf-8") for b in keys[start:start + chunk].tolist()]
            texts = fetch(chunk_ids)
            try:
                batch = [texts[i] for i in chunk_ids]
            except KeyError as exc:
                raise IrdistillError(f"no text for the id {exc.args[0]!r}",
                                     hint="the ids do not all belong to the collection") from exc
            encoded = list(encode(batch))
            if len(encoded) != len(chunk_ids):
                raise AssertionError(f"encode gave {len(encoded)} token lists for "
                                     f"{len(chunk_ids)} texts")
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            flat = np.concatenate([np.asarray(e).reshape(-1) for e in encoded])
            if dtype is None:
                dtype = np.asarray(encoded[0]).dtype if encoded else np.dtype(np.int32)
            out.write(_as_dtype(flat, dtype).tobytes())
            offsets[start + 1:start + 1 + len(chunk_ids)] = total + np.cumsum(lengths)
            total += int(lengths.sum())
            bar.update(len(chunk_ids))
        if dtype is None:  # no texts
            dtype = np.dtype(np.int32)
        out.seek(0)
        out.write(_npy_header(dtype, total))
        out.flush()
        os.fsync(out.fileno())
    offsets.flush()
    del offsets
    return {"format": FORMAT, "count": n, "tokens": total, "dtype": str(dtype),
            "id_width": keys.dtype.itemsize}


def _as_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``, checked to fit (token ids of a vocabulary too large for it
    would wrap around silently)."""
    if values.dtype == dtype:
        return values
    if values.size == 0:
        return values.astype(dtype)
    if not np.can_cast(values.dtype, dtype) and (
            int(values.min()) < np.iinfo(dtype).min or int(values.max()) > np.iinfo(dtype).max):
        raise IrdistillError(f"token ids up to {int(values.max())} do not fit in {dtype}",
                             hint="the fingerprint's token_dtype is too small for the vocabulary")
    return values.astype(dtype)


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename the complete store ``tmp`` to ``folder``; an old store there is first moved
    aside (a folder cannot be renamed over a full one) and removed after."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=_scratch(folder) + "old-", dir=folder.parent))
        os.replace(folder, old / folder.name)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # open memory maps of it stay valid


def shared_token_stores(encoder, collection, query_ids: Iterable[str], doc_ids: Iterable[str],
                        folder: str | os.PathLike, show_progress: bool = False
                        ) -> tuple[TokenStore, TokenStore]:
    """The token stores of the queries (``folder/queries``) and documents (``folder/docs``)
    of a training run, for :class:`~irdistill.train.data.GroupCollator`.

    Under DDP the main process builds (or reuses) them first and the others then open them
    (finding them complete, they only check the fingerprint and the ids); the pages of the
    files are shared between the processes of a machine. The fingerprints are the encoder's
    (:func:`encoder_fingerprint`) plus the collection's name, so a change of tokenizer, lengths,
    truncation or collection rebuilds them. Where the main process fails, the launcher
    (torchrun, accelerate) stops the others, waiting at the barrier.
    """
    folder = Path(folder)
    base = encoder_fingerprint(encoder)
    queries_fp = {**base, "texts": "queries", "collection": collection.name}
    docs_fp = {**base, "texts": "docs", "collection": collection.docs_name}
    query_ids, doc_ids = list(query_ids), list(doc_ids)
    build = partial(_build_both, encoder, collection, query_ids, doc_ids, folder, queries_fp,
                    docs_fp, show_progress)
    with main_process_first():
        return build()


def _build_both(encoder, collection, query_ids, doc_ids, folder: Path, queries_fp: dict,
                docs_fp: dict, show_progress: bool) -> tuple[TokenStore, TokenStore]:
    queries = build_token_store(folder / "queries", query_ids, collection.query_texts,
                                partial(encoder.encode_queries, compact=True), queries_fp,
                                show_progress=show_progress, dtype=encoder.token_dtype)
    docs = build_token_store(folder / "docs", doc_ids, collection.docs.get_many,
                             partial(encoder.encode_docs, compact=True), docs_fp,
                             show_progress=show_progress, dtype=encoder.token_dtype)
    return queries, docs
