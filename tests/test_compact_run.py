"""CompactRun and ``read_run(compact=True)``: the numpy-backed run training holds instead of a
dict run (about 12 bytes a line instead of 180) must mean exactly the same run: same queries in
the same order, same documents and float scores, same ranked order, and the same errors naming
the same lines as the line-by-line dict reader."""
from __future__ import annotations

import gzip
import math
import random
import sys

import numpy as np
import pytest

from irdistill.data import trec
from irdistill.data.trec import (CompactRun, drop_queries, ranked, read_run, select_queries,
                                 write_run)
from irdistill.errors import IrdistillError

# ids of several byte widths (over 8 bytes: several sort words) and non-ASCII ones, whose
# UTF-8 byte order must give Python's string order for the doc-id tie break
DOCS = ["d1", "d10", "d2", "D9", "doc-ü", "doc-z", "été", "passage_000123456789", "x",
        "passage_000123456788", "Z", "日本", "a-b-c-d-e-f-g-h-i"]
# score texts as runs write them: ties, scientific notation, negatives, signed zero, integers
SCORES = ["1.5", "1.50", "-2", "3e-5", "3E-05", "-1.25e+1", "0", "-0.0", "7", "12.75",
          "2.5e1", "25", "-0.5", "1e300", "-1e-300"]


def random_run(rng: random.Random, n_queries: int = 9) -> dict[str, list[tuple[str, str]]]:
    """Per query, (doc id, score text) lines: random sizes (one to all docs), many ties."""
    run = {}
    for q in range(n_queries):
        docs = rng.sample(DOCS, rng.randint(1, len(DOCS)))
        run[f"q{rng.randint(0, 10**6)}-{q}"] = [(doc, rng.choice(SCORES)) for doc in docs]
    return run


def write_lines(path, run: dict[str, list[tuple[str, str]]], rng: random.Random,
                shuffled: bool, blank_lines: bool = False) -> None:
    """A run file whose queries are interleaved (not contiguous); each query's lines best first
    unless ``shuffled`` (then every line anywhere). Blank lines sprinkled when asked."""
    queues = {qid: (rng.sample(lines, len(lines)) if shuffled else
                    sorted(lines, key=lambda d: (float(d[1]), d[0]), reverse=True))
              for qid, lines in run.items()}
    out = []
    while queues:
        qid = rng.choice(list(queues))
        doc, score = queues[qid].pop(0)
        if not queues[qid]:
            del queues[qid]
        out.append(f"{qid} Q0 {doc} {len(out) + 1} {score} tag\n")
        if blank_lines and rng.random() < 0.1:
            out.append("  \t\n")
    path.write_text("".join(out), encoding="utf-8")


def exact(items) -> list[tuple[str, str]]:
    """(doc, float.hex) pairs: equality of these is exact float equality, sign of zero too."""
    return [(doc, float(score).hex()) for doc, score in items]


def assert_same_run(compact: CompactRun, expected: dict, in_file_order_too: bool) -> None:
    assert isinstance(compact, CompactRun)
    assert list(compact) == list(expected) and len(compact) == len(expected)
    assert compact.n_lines == sum(map(len, expected.values()))
    for qid, docs in expected.items():
        got = compact[qid]
        assert got == docs
        assert exact(got.items()) == exact(ranked(docs))  # stored best first
        if in_file_order_too:
            assert exact(got.items()) == exact(docs.items())
    assert compact.to_dict() == expected


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shuffled", [False, True])
def test_compact_read_equals_dict_read(tmp_path, seed, shuffled):
    rng = random.Random(seed)
    path = tmp_path / "run.txt"
    write_lines(path, random_run(rng), rng, shuffled, blank_lines=seed % 2 == 0)
    longest = max(map(len, read_run(path).values()))
    for depth in [None, 0, 1, 3, longest, longest + 100, -2]:
        expected, compact = read_run(path, depth), read_run(path, depth, compact=True)
        # without depth the dict run keeps file order, with depth it is ranked like the compact
        assert_same_run(compact, expected, in_file_order_too=not shuffled or depth is not None)
        if depth is not None and depth >= 0:
            assert len(compact.doc_ids) <= compact.n_lines  # ids cut by the depth are dropped
        for qid, docs in expected.items():
            for cut in [None, 0, 1, 2, 50, -1]:
                assert exact(compact.ranked(qid, cut)) == exact(ranked(docs, cut))


def test_default_read_run_unchanged(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("q1 Q0 b 1 1 t\nq2 Q0 a 1 5 t\nq1 Q0 a 2 3 t\n")
    run = read_run(path)
    assert type(run) is dict and list(run) == ["q1", "q2"]
    assert list(run["q1"].items()) == [("b", 1.0), ("a", 3.0)]  # file order, as before
    assert list(read_run(path, compact=True)["q1"].items()) == [("a", 3.0), ("b", 1.0)]


def test_gzip_bom_crlf_and_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(trec, "_CHUNK", 4)  # doc ids converted every 4 lines: many chunks
    rng = random.Random(7)
    plain = tmp_path / "run.txt"
    write_lines(plain, random_run(rng, 20), rng, shuffled=True, blank_lines=True)
    packed = tmp_path / "run.gz"
    packed.write_bytes(gzip.compress(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n",
                                                                                   b"\r\n")))
    for path in (plain, packed):
        assert_same_run(read_run(path, compact=True), read_run(plain), in_file_order_too=False)


def test_mapping_behaviour(tmp_path):
    path = tmp_path / "run.txt"
    write_run(path, {"q1": {"a": 1.0, "b": 2.0}, "q2": {"c": 0.5}})
    run = read_run(path, compact=True)
    assert "q1" in run and "zz" not in run and 3 not in run
    with pytest.raises(KeyError):
        run["zz"]
    with pytest.raises(KeyError):
        run.ranked("zz")
    assert run.get("zz") is None and len(run) == 2 and run.n_lines == 3
    got = run["q1"]
    got["a"] = 99.0  # a new dict each time: the run is not changed
    assert run["q1"] == {"b": 2.0, "a": 1.0} and list(run.keys()) == ["q1", "q2"]
    assert dict(run.items()) == {"q1": {"a": 1.0, "b": 2.0}, "q2": {"c": 0.5}}
    assert run == read_run(path)  # Mapping equality against the dict run


def test_from_dict_round_trip():
    rng = random.Random(3)
    run = {qid: {doc: float(score) for doc, score in lines}
           for qid, lines in random_run(rng).items()}
    compact = CompactRun.from_dict(run)
    assert_same_run(compact, run, in_file_order_too=False)
    assert CompactRun.from_dict({}).to_dict() == {}


def test_nul_in_doc_id_is_refused_not_mangled(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("q1 Q0 a\x00 1 1 t\nq1 Q0 a 2 0.5 t\n")
    assert read_run(path) == {"q1": {"a\x00": 1.0, "a": 0.5}}
    with pytest.raises(IrdistillError, match="NUL"):
        read_run(path, compact=True)


def test_doc_id_index_sorts_as_python():
    """The doc-id index (8-byte words, refined only where tied) is ``np.unique`` and sorts as
    Python sorts the ids, for ids sharing long prefixes and of many widths."""
    rng = random.Random(2)
    parts = ["a", "b", "ab", "é", "x" * 8, "x" * 9, "x" * 16, "x" * 16 + "y", "p" * 8 + "q"]
    for _ in range(200):
        ids = ["".join(rng.choices(parts, k=rng.randint(1, 4))) for _ in range(rng.randint(1, 30))]
        encoded = np.array([doc.encode("utf-8") for doc in ids])
        distinct, index = trec._unique_inverse(encoded)
        expected, expected_index = np.unique(encoded, return_inverse=True)
        assert distinct.tolist() == expected.tolist() and index.tolist() == expected_index.tolist()
        assert [doc.decode("utf-8") for doc in distinct.tolist()] == sorted(set(ids))


# -- errors: same message and line as the dict reader ------------------------------------------
ERROR_FILES = {
    "columns": "q1 Q0 a 1 1 t\nq1 Q0 b 2 1\n",
    "not a number": "q1 Q0 a 1 1 t\nq2 Q0 b 1 one t\n",
    "nan": "q1 Q0 a 1 nan t\n",
    "inf": "q1 Q0 a 1 1 t\nq1 Q0 b 1 -inf t\n",
    "duplicate": "q1 Q0 a 1 1 t\nq1 Q0 a 2 0.5 t\n",
    # q1's lines are not contiguous; the first repeat in file order is line 5 (q2's 'x')
    "duplicate apart": ("q1 Q0 y 1 3 t\nq2 Q0 x 1 2 t\nq1 Q0 z 2 1 t\n\nq2 Q0 x 2 1 t\n"
                        "q1 Q0 y 3 0 t\nq1 Q0 z 4 0 t\n"),
    # the repeat whose (query, doc) sorts first is not the first one in the file
    "duplicate order": "qB Q0 z 1 1 t\nqA Q0 a 1 1 t\nqB Q0 z 2 1 t\nqA Q0 a 2 1 t\n",
    "duplicate before bad line": "q1 Q0 a 1 1 t\nq2 Q0 b 1 1 t\nq1 Q0 a 2 1 t\nq1 Q0 b\n",
    "bad line before duplicate": "q1 Q0 a 1 1 t\nq1 Q0 b\nq1 Q0 a 2 1 t\n",
    "duplicate before bad score": "q1 Q0 a 1 1 t\nq1 Q0 a 2 1 t\nq1 Q0 b 3 x t\n",
    "only blank lines": "\n   \n\t\n",
    "empty": "",
}


@pytest.mark.parametrize("name", list(ERROR_FILES))
@pytest.mark.parametrize("chunk", [2, 1 << 16])
def test_errors_match_dict_reader(tmp_path, monkeypatch, name, chunk):
    monkeypatch.setattr(trec, "_CHUNK", chunk)
    path = tmp_path / "run.txt"
    path.write_text(ERROR_FILES[name])
    with pytest.raises(IrdistillError) as expected:
        read_run(path)
    for depth in (None, 1):
        with pytest.raises(IrdistillError) as got:
            read_run(path, depth, compact=True)
        assert str(got.value) == str(expected.value)
        assert got.value.line == expected.value.line


def test_error_lines_named(tmp_path):
    """The expected lines themselves, so that a change to both readers is noticed."""
    path = tmp_path / "run.txt"
    path.write_text(ERROR_FILES["duplicate apart"])
    with pytest.raises(IrdistillError, match=r"line 5: document 'x' appears twice for query 'q2'"):
        read_run(path, compact=True)
    path.write_text(ERROR_FILES["duplicate order"])
    with pytest.raises(IrdistillError, match=r"line 3: document 'z' appears twice for query 'qB'"):
        read_run(path, compact=True)
    path.write_text(ERROR_FILES["only blank lines"])
    with pytest.raises(IrdistillError, match="run file has no ranked documents"):
        read_run(path, compact=True)


def test_damaged_inputs_match_dict_reader(tmp_path):
    cases = {"missing.txt": None,
             "utf8.txt": b"q1 Q0 a 1 1 t\nq1 Q0 \xff 2 1 t\n",
             "dup-then-utf8.txt": b"q1 Q0 a 1 1 t\nq1 Q0 a 2 1 t\nq1 Q0 \xff 2 1 t\n",
             "cut.gz": gzip.compress(b"q1 Q0 a 1 1 t\n" * 50)[:-12]}
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(IrdistillError) as expected:
            read_run(path)
        with pytest.raises(IrdistillError) as got:
            read_run(path, compact=True)
        assert str(got.value) == str(expected.value), name


# -- subsets --------------------------------------------------------------------------------
@pytest.fixture
def runs(tmp_path):
    rng = random.Random(11)
    path = tmp_path / "run.txt"
    write_lines(path, random_run(rng, 8), rng, shuffled=True)
    return read_run(path), read_run(path, compact=True)


def test_select_and_without(runs):
    plain, compact = runs
    qids = list(plain)
    wanted = [qids[5], "missing", qids[1], qids[5], qids[3]]
    picked = compact.select(wanted)
    assert list(picked) == [qids[5], qids[1], qids[3]]
    assert picked.to_dict() == {q: plain[q] for q in wanted if q in plain}
    assert picked.doc_ids is compact.doc_ids  # ids shared, not copied
    middle = compact.select(qids[2:6])  # one increasing range: views of the arrays
    assert np.shares_memory(middle.docs, compact.docs) and middle.to_dict() == {
        q: plain[q] for q in qids[2:6]}
    rest = compact.without([qids[0], "missing", qids[4]])
    assert list(rest) == [q for q in qids if q not in (qids[0], qids[4])]
    assert rest.to_dict() == {q: d for q, d in plain.items() if q not in (qids[0], qids[4])}
    assert rest.select([qids[4], qids[7]]).to_dict() == {qids[7]: plain[qids[7]]}
    for empty in (compact.select([]), compact.without(qids)):
        assert len(empty) == 0 and empty.n_lines == 0 and empty.to_dict() == {}
    assert compact.without([]).to_dict() == compact.to_dict()


def test_select_queries_and_drop_queries_on_both_kinds(runs):
    plain, compact = runs
    qids = list(plain)
    wanted, dropped = [qids[6], "missing", qids[0]], [qids[1], "missing"]
    expected_select = {q: plain[q] for q in wanted if q in plain}
    expected_drop = {q: d for q, d in plain.items() if q not in set(dropped)}
    assert select_queries(plain, wanted) == expected_select
    assert list(select_queries(plain, wanted)) == [qids[6], qids[0]]
    assert select_queries(plain, wanted)[qids[0]] is plain[qids[0]]  # shared, not copied
    assert drop_queries(plain, dropped) == expected_drop
    picked, kept = select_queries(compact, wanted), drop_queries(compact, iter(dropped))
    assert isinstance(picked, CompactRun) and isinstance(kept, CompactRun)
    assert picked.to_dict() == expected_select and list(picked) == list(expected_select)
    assert kept.to_dict() == expected_drop and list(kept) == list(expected_drop)


# -- files and size -----------------------------------------------------------------------------
def test_save_and_load_with_mmap(tmp_path, runs):
    plain, compact = runs
    folder = tmp_path / "store" / "compact"
    compact.save(folder)
    loaded = CompactRun.load(folder)
    assert isinstance(loaded.docs, np.memmap) and not loaded.scores.flags.writeable
    assert list(loaded) == list(compact) and loaded.to_dict() == plain
    assert loaded.docs.dtype == np.int32 and loaded.scores.dtype == np.float64
    assert loaded.offsets.dtype == np.int64 and loaded.doc_ids.dtype.kind == "S"
    for qid in plain:
        assert exact(loaded.ranked(qid)) == exact(ranked(plain[qid]))
    # a subset of a memory-mapped run saved over the folder it was read from
    subset = loaded.select(list(plain)[::2])
    subset.save(folder)
    again = CompactRun.load(folder, mmap=False)
    assert not isinstance(again.docs, np.memmap)
    assert again.to_dict() == {q: plain[q] for q in list(plain)[::2]}
    assert sorted(p.name for p in folder.parent.iterdir()) == ["compact"]  # no temp folders
    compact.select([]).save(tmp_path / "empty")
    assert len(CompactRun.load(tmp_path / "empty")) == 0
    with pytest.raises(IrdistillError, match="not a saved compact run"):
        CompactRun.load(tmp_path / "nowhere")
    (folder / "docs.npy").unlink()
    with pytest.raises(IrdistillError, match="missing or damaged"):
        CompactRun.load(folder)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(IrdistillError, match="is a file"):
        compact.save(tmp_path / "a-file")


def test_nbytes_far_below_dict(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "run.txt"
    with open(path, "w") as handle:
        for q in range(200):
            for rank, doc in enumerate(rng.sample(range(10**6), 50), start=1):
                handle.write(f"{q} Q0 D{doc} {rank} {rng.uniform(-10, 10):.6f} bm25\n")
    plain, compact = read_run(path), read_run(path, compact=True)
    dict_bytes = sys.getsizeof(plain) + sum(
        sys.getsizeof(q) + sys.getsizeof(docs)
        + sum(sys.getsizeof(d) + sys.getsizeof(s) for d, s in docs.items())
        for q, docs in plain.items())
    assert compact.n_lines == 10_000
    assert compact.nbytes < dict_bytes / 5
    assert compact.nbytes / compact.n_lines < 12 + 8 + 10  # arrays + a 7-byte id + queries
    assert not math.isnan(compact.scores.sum())
