"""Token stores (irdistill.train.tokens): memory-mapped token ids that give exactly what
``tokenise_groups``'s dicts give, built once (atomically, chunk by chunk) and reused."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TOPICS, build_tokenizer

from irdistill.data.collection import Collection
from irdistill.data.groups import Group
from irdistill.errors import IrdistillError
from irdistill.evaluation.passages import MemoryDocStore
from irdistill.models.tokenization import PairEncoder
from irdistill.train.data import GroupCollator, tokenise_groups
from irdistill.train.tokens import (TokenStore, build_token_store, encoder_fingerprint,
                                    shared_token_stores)

REPO = Path(__file__).resolve().parent.parent

#: ids that sort differently as str and as padded bytes if anything is off: prefixes of each
#: other, non-ASCII, a NUL inside, one that is only spaces
DOCS = {f"{topic}-{i}": text for topic, texts in TOPICS.items() for i, text in enumerate(texts)}
DOCS.update({"d1": "A short one.", "d10": "", "d1 ": "Déjà vu, encore une fois.",
             "dög-é": "Hunde bellen Fremde an.", "日本-1": "Tokyo is the capital of Japan.",
             "a\x00b": "An id with a NUL inside.", "   ": "Spaces for an id.",
             "long-" + "x" * 40: " ".join(TOPICS["bees"] * 20)})
QUERIES = {"q-ü": "warum bellen hunde", "q1": "what is the basic unit of life",
           "q10": "", "q-日本": "capital of japan", "q2": "how do bees make honey"}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("bert")


@pytest.fixture(scope="module")
def collection():
    return Collection("toy-tokens", MemoryDocStore(dict(DOCS)), dict(QUERIES))


@pytest.fixture(scope="module")
def groups():
    """Every query against every document (a few groups of a few documents each)."""
    docs, queries = sorted(DOCS), sorted(QUERIES)
    return [Group(q, docs[i::len(queries)], [float(j) for j in range(len(docs[i::len(queries)]))])
            for i, q in enumerate(queries)]


class Counting:
    """A fetch that counts its calls (and the ids it was asked for)."""

    def __init__(self, texts: dict[str, str]):
        self.texts, self.calls, self.ids = texts, 0, 0

    def __call__(self, ids: list[str]) -> dict[str, str]:
        self.calls += 1
        self.ids += len(ids)
        return {i: self.texts[i] for i in ids}


def doc_store(folder, encoder, fetch=None, ids=DOCS, **kwargs) -> TokenStore:
    return build_token_store(folder, ids, fetch or Counting(DOCS),
                             partial(encoder.encode_docs, compact=True),
                             encoder_fingerprint(encoder), **kwargs)


@pytest.mark.parametrize("truncation", ["segments", "pair"])
def test_stores_hold_what_tokenise_groups_gives(tmp_path, tokenizer, collection, groups,
                                                truncation):
    encoder = PairEncoder(tokenizer, 8, 24, truncation=truncation)
    query_tokens, doc_tokens = tokenise_groups(encoder, collection, groups)
    queries, docs = shared_token_stores(encoder, collection, sorted(QUERIES), list(DOCS),
                                        tmp_path / "tokens")
    for store, expected in ((queries, query_tokens), (docs, doc_tokens)):
        assert len(store) == len(expected) and sorted(store) == sorted(expected)
        for key, tokens in expected.items():
            got = store[key]
            assert got.dtype == tokens.dtype == encoder.token_dtype
            assert np.array_equal(got, tokens), key
        keys = list(expected)[::-1]
        for got, key in zip(store.get_many(keys), keys):
            assert got.dtype == expected[key].dtype and np.array_equal(got, expected[key])
        assert store.lengths(keys).tolist() == [len(expected[k]) for k in keys]
    assert len(docs["d10"]) == 0 and len(queries["q10"]) == 0  # empty texts: zero tokens
    assert len(docs["long-" + "x" * 40]) == (24 if truncation == "segments" else 33)
    assert docs.meta["count"] == len(DOCS) and docs.meta["dtype"] == "uint16"
    assert docs.meta["tokens"] == sum(map(len, doc_tokens.values()))


def test_collate_from_stores_equals_collate_from_dicts(tmp_path, tokenizer, collection,
                                                       groups):
    encoder = PairEncoder(tokenizer, 8, 24, max_positions=30)
    query_tokens, doc_tokens = tokenise_groups(encoder, collection, groups)
    queries, docs = shared_token_stores(encoder, collection, sorted(QUERIES), list(DOCS),
                                        tmp_path)
    from_dicts = GroupCollator(encoder, query_tokens, doc_tokens)(groups)
    from_stores = GroupCollator(encoder, queries, docs)(groups)
    assert from_dicts.keys() == from_stores.keys() and "token_type_ids" in from_dicts
    for name, tensor in from_dicts.items():
        assert tensor.dtype == from_stores[name].dtype
        assert torch.equal(tensor, from_stores[name]), name
    pairs = [(queries[g.query_id], docs[d]) for g in groups for d in g.doc_ids]
    assert [encoder.pair_length(q, d) for q, d in pairs] == [
        encoder.pair_length(query_tokens[g.query_id], doc_tokens[d])
        for g in groups for d in g.doc_ids]


def test_lookups_of_ids_not_in_the_store(tmp_path, tokenizer):
    encoder = PairEncoder(tokenizer, 8, 24)
    store = doc_store(tmp_path / "docs", encoder)
    assert len(store) == len(DOCS) and "d1" in store and "日本-1" in store and "a\x00b" in store
    assert list(store) == sorted(DOCS)  # utf-8 byte order is Python's order of str
    for absent in ("d", "d2", "d1\x00", "a", "a\x00", "日本", "x" * 200, "", " "):
        assert absent not in store
        with pytest.raises(KeyError, match="d2" if absent == "d2" else None):
            store[absent]
        with pytest.raises(KeyError):
            store.get_many(["d1", absent])
        assert store.get(absent) is None
    assert 17 not in store and store.get_many([]) == []
    with pytest.raises(KeyError, match="'zz'"):
        store.get_many(["d1", "zz", "d10"])
    empty = doc_store(tmp_path / "empty", encoder, ids=[])
    assert len(empty) == 0 and "d1" not in empty and list(empty) == []
    with pytest.raises(KeyError):
        empty["d1"]
    with pytest.raises(KeyError):
        empty.get_many(["d1"])


def test_an_id_ending_in_nul_is_refused(tmp_path, tokenizer):
    encoder = PairEncoder(tokenizer, 8, 24)
    texts = {"d1": "one", "d2\x00": "two"}
    with pytest.raises(IrdistillError, match="NUL"):
        doc_store(tmp_path / "docs", encoder, Counting(texts), ids=texts)
    assert not (tmp_path / "docs").exists()


def test_reuse_and_rebuild(tmp_path, tokenizer):
    encoder = PairEncoder(tokenizer, 8, 24)
    folder = tmp_path / "docs"
    first = Counting(DOCS)
    built = doc_store(folder, encoder, first, chunk=5)
    assert first.calls == -(-len(DOCS) // 5) and first.ids == len(DOCS)
    expected = {k: built[k].copy() for k in DOCS}

    again = Counting(DOCS)  # the same settings, the ids in another order, with repeats
    reused = doc_store(folder, encoder, again, ids=list(DOCS)[::-1] + ["d1", "d1"])
    assert again.calls == 0 and all(np.array_equal(reused[k], v) for k, v in expected.items())

    longer = PairEncoder(tokenizer, 8, 12)  # another fingerprint: rebuilt
    assert encoder_fingerprint(longer) != encoder_fingerprint(encoder)
    rebuilt = Counting(DOCS)
    store = doc_store(folder, longer, rebuilt)
    assert rebuilt.calls == 1 and max(map(len, store.get_many(list(DOCS)))) == 12
    assert built["d1"].tolist() == expected["d1"].tolist()  # the old maps stay readable

    fewer = Counting(DOCS)  # other ids: rebuilt
    store = doc_store(folder, longer, fewer, ids=["d1", "d10"])
    assert fewer.calls == 1 and len(store) == 2 and "dög-é" not in store
    assert sorted(p.name for p in tmp_path.iterdir()) == [".docs.lock", "docs"]


def test_fingerprint_changes_with_what_the_tokens_depend_on(tokenizer, minilm_path):
    from transformers import AutoTokenizer

    base = encoder_fingerprint(PairEncoder(tokenizer, 8, 24))
    assert json.loads(json.dumps(base)) == base  # JSON as it is
    for other in (PairEncoder(tokenizer, 9, 24), PairEncoder(tokenizer, 8, 25),
                  PairEncoder(tokenizer, 8, 24, truncation="pair"),
                  PairEncoder(build_tokenizer("roberta"), 8, 24)):
        assert encoder_fingerprint(other) != base
    assert encoder_fingerprint(PairEncoder(tokenizer, 8, 24, pad_to_multiple_of=1)) == base
    # a fast tokenizer: its definition, but not the truncation its last call set
    fast = PairEncoder(AutoTokenizer.from_pretrained(minilm_path), 8, 24)
    before = encoder_fingerprint(fast)
    fast.encode_docs(["some text to cut short"] * 2)
    fast.encode_queries(["a query"])
    assert encoder_fingerprint(fast) == before
    assert encoder_fingerprint(PairEncoder(AutoTokenizer.from_pretrained(minilm_path), 8,
                                           24)) == before
    lowered = AutoTokenizer.from_pretrained(minilm_path, do_lower_case=False)
    assert encoder_fingerprint(PairEncoder(lowered, 8, 24)) != before


def test_an_interrupted_build_leaves_no_store(tmp_path, tokenizer):
    encoder = PairEncoder(tokenizer, 8, 24)
    folder = tmp_path / "docs"
    calls = []

    def failing(texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("killed in the second chunk")
        return encoder.encode_docs(texts, compact=True)

    with pytest.raises(RuntimeError, match="second chunk"):
        build_token_store(folder, DOCS, Counting(DOCS), failing, encoder_fingerprint(encoder),
                          chunk=4)
    assert calls == [4, 4] and not folder.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".docs.lock"]  # nothing half-built left
    with pytest.raises(IrdistillError, match="not a token store"):
        TokenStore.open(folder)

    # a build killed outright leaves its temporary folder: the next build removes it
    (tmp_path / ".docs.tmp-killed").mkdir()
    (tmp_path / ".docs.tmp-killed" / "tokens.npy").write_bytes(b"partial")
    store = doc_store(folder, encoder, chunk=4)
    assert len(store) == len(DOCS) and store["日本-1"].tolist() == encoder.encode_docs(
        [DOCS["日本-1"]])[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".docs.lock", "docs"]

    # a failed rebuild keeps the old store, which is still the old settings' store
    with pytest.raises(RuntimeError):
        calls.clear()
        build_token_store(folder, DOCS, Counting(DOCS), failing,
                          encoder_fingerprint(PairEncoder(tokenizer, 8, 10)), chunk=4)
    again = Counting(DOCS)
    assert len(doc_store(folder, encoder, again)) == len(DOCS) and again.calls == 0

    (folder / "offsets.npy").unlink()  # an incomplete store is rebuilt
    repaired = Counting(DOCS)
    assert len(doc_store(folder, encoder, repaired)) == len(DOCS) and repaired.calls == 1


def test_chunking_does_not_change_the_store(tmp_path, tokenizer):
    encoder = PairEncoder(tokenizer, 8, 24)
    small = doc_store(tmp_path / "small", encoder, chunk=3)
    large = doc_store(tmp_path / "large", encoder, chunk=4096)
    for name in ("tokens.npy", "offsets.npy", "ids.npy"):
        assert (small.folder / name).read_bytes() == (large.folder / name).read_bytes(), name
    meta = [json.loads((s.folder / "meta.json").read_text()) for s in (small, large)]
    assert meta[0] == meta[1]
    tokens = np.load(small.folder / "tokens.npy")  # a plain .npy, read without memory maps
    assert tokens.dtype == np.uint16 and len(tokens) == meta[0]["tokens"]


def test_stores_pickle_as_their_folder(tmp_path, tokenizer):
    encoder = PairEncoder(tokenizer, 8, 24)
    store = doc_store(tmp_path / "docs", encoder)
    data = pickle.dumps(store)
    assert len(data) < 500  # data loader workers reopen the files, they do not copy them
    copy = pickle.loads(data)
    assert len(copy) == len(store) and all(np.array_equal(copy[k], store[k]) for k in DOCS)
    assert isinstance(store.tokens, np.ndarray) and not store.tokens.flags.writeable


def test_token_ids_are_checked_to_fit_the_dtype(tmp_path):
    texts = {"a": "1 2", "b": "70000"}

    def encode(batch):  # token ids past uint16, as lists of ints
        return [[int(w) for w in t.split()] for t in batch]

    with pytest.raises(IrdistillError, match="do not fit in uint16"):
        build_token_store(tmp_path / "u16", texts, Counting(texts), encode,
                          {"token_dtype": "uint16"})
    store = build_token_store(tmp_path / "i32", texts, Counting(texts), encode,
                              {"token_dtype": "int32"})
    assert store.dtype == np.int32 and store["b"].tolist() == [70000]
    assert store["a"].tolist() == [1, 2]


SCRIPT = """
import sys
from transformers import AutoTokenizer
from irdistill import distributed
from irdistill.data.collection import Collection
from irdistill.evaluation.passages import MemoryDocStore
from irdistill.models.tokenization import PairEncoder
from irdistill.train.tokens import shared_token_stores

folder, fail = sys.argv[1], sys.argv[3] == "fail"
calls = []
docs = {f"d{i}": f"text number {i} about dogs and cells" for i in range(50)}
store = MemoryDocStore(docs)
def get_many(ids):
    calls.append(len(ids))
    if fail and distributed.is_main():
        raise RuntimeError("the main process fails")
    return {i: docs[i] for i in ids}
store.get_many = get_many
collection = Collection("ddp", store, {"q1": "dogs"})
encoder = PairEncoder(AutoTokenizer.from_pretrained(sys.argv[2]), 8, 16)
queries, stored = shared_token_stores(encoder, collection, ["q1"], sorted(docs), folder)
with open(f"{folder}/rank{distributed.rank()}.txt", "w") as out:
    out.write(f"{len(calls)} {sum(len(stored[d]) for d in docs)}\\n")
"""


def test_under_torchrun_only_the_main_process_tokenises(tmp_path, minilm_path):
    """Two processes: rank 0 builds, rank 1 opens the complete store without fetching a text;
    where rank 0 fails, the run ends (rank 1 is not left waiting at the barrier)."""
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def launch(mode: str) -> subprocess.CompletedProcess:
        (tmp_path / mode).mkdir()
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
             "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", str(script),
             str(tmp_path / mode), minilm_path, mode],
            env=env, capture_output=True, text=True, timeout=120)

    out = launch("ok")
    assert out.returncode == 0, out.stderr[-3000:]
    counts = [(tmp_path / "ok" / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert counts[0][0] == "1" and counts[1][0] == "0"  # one chunk on rank 0, none on rank 1
    assert counts[0][1] == counts[1][1] and int(counts[0][1]) > 50

    out = launch("fail")
    assert out.returncode != 0 and "the main process fails" in out.stderr
    assert not (tmp_path / "fail" / "rank0.txt").exists()
