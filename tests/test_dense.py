"""Dense retrieval (bi-encoders, the embeddings cache, exact and FAISS search) and any scorer as
a teacher (BM25 + bi-encoder hybrids in ``teach ensemble``), on a toy corpus with the bundled
MiniLM bi-encoder."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.data.collection import load_collection
from irdistill.data.trec import read_run
from irdistill.errors import IrdistillError
from irdistill.retrieval import dense
from irdistill.retrieval.bm25 import bm25_run, bm25_scores
from irdistill.retrieval.dense import BiEncoder, DenseIndex, DenseSettings, dense_run, dense_scores
from irdistill.teachers.ensemble import Teacher

runner = CliRunner()
FP32 = DenseSettings(precision="fp32")
DOCS = {
    "cell": "The cell is the basic unit of life.",
    "mito": "Mitochondria are the powerhouse of the cell.",
    "dog": "Dogs are loyal animals that bark at strangers.",
    "cat": "Cats purr and chase mice.",
    "star": "Stars are balls of hot plasma held together by gravity.",
    "sun": "The sun is the star at the centre of the solar system.",
    "rain": "Rain falls when water vapour condenses in clouds.",
}
QUERIES = {"q-life": "what is the unit of life", "q-bark": "which animals bark",
           "q-star": "what are stars made of"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def toy(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "docs.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in DOCS.items()))
    (folder / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    return folder


@pytest.fixture(scope="module")
def encoder():
    """The bundled MiniLM bi-encoder in fp32, loaded once."""
    return BiEncoder.from_pretrained("minilm", precision="fp32")


@pytest.fixture
def count_encoded(monkeypatch):
    """Counts the documents that BiEncoder.encode_documents encodes."""
    counter = {"docs": 0}
    original = BiEncoder.encode_documents

    def counting(self, texts, batch_size=32):
        counter["docs"] += len(texts)
        return original(self, texts, batch_size)

    monkeypatch.setattr(BiEncoder, "encode_documents", counting)
    return counter


def brute_force_cosine(minilm_path):
    """Cosine similarities computed apart from irdistill: sentence-transformers' own encode,
    normalised here, and a numpy product."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path, device="cpu")
    d = model.encode(list(DOCS.values()), convert_to_numpy=True)
    q = model.encode(list(QUERIES.values()), convert_to_numpy=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q @ d.T


def test_dense_run_equals_brute_force_cosine(toy, tmp_path, encoder, minilm_path):
    assert encoder.normalises and encoder.similarity == "cosine"
    assert (encoder.query_prompt, encoder.document_prompt) == ("", "")  # MiniLM has none
    coll = load_collection(toy)
    expected = brute_force_cosine(minilm_path)
    doc_ids = list(DOCS)
    run = dense_run(coll, encoder, k=len(DOCS), settings=FP32, cache=tmp_path / "cache")
    for qi, qid in enumerate(QUERIES):
        order = [doc_ids[i] for i in np.argsort(-expected[qi], kind="stable")]
        assert list(run[qid]) == order
        assert [run[qid][d] for d in order] == pytest.approx(sorted(expected[qi])[::-1],
                                                             abs=1e-5)
    top2 = dense_run(coll, encoder, k=2, settings=FP32, cache=tmp_path / "cache")
    assert {q: list(d) for q, d in top2.items()} == {q: list(d)[:2] for q, d in run.items()}
    assert list(top2["q-bark"])[0] == "dog" and list(top2["q-life"])[0] == "cell"
    # the scores of given candidates are the same dot products, cached embeddings or not
    candidates = {"q-life": ["rain", "cell"], "q-star": ["sun"]}
    for corpus_cache in (True, False):
        scores = dense_scores(coll, encoder, candidates, settings=FP32,
                              cache=tmp_path / "cache", corpus_cache=corpus_cache)
        assert list(scores["q-life"]) == ["rain", "cell"]
        for qid, docs in candidates.items():
            for d in docs:
                assert scores[qid][d] == pytest.approx(run[qid][d], abs=1e-5)


def test_the_models_own_prompts_are_used(tmp_path, tiny_bert, toy):
    """A model saved with a query and a passage prompt: queries and documents get their own
    (sentence-transformers adds an empty 'document' prompt, which does not hide 'passage');
    the prompts key the cache (another folder than the same weights without prompts)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_bert, device="cpu",
                                prompts={"query": "query: ", "passage": "passage: "})
    folder = tmp_path / "prompted"
    model.save(str(folder))
    encoder = BiEncoder.from_pretrained(str(folder), precision="fp32")
    assert (encoder.query_prompt, encoder.document_prompt) == ("query: ", "passage: ")
    texts = list(DOCS.values())[:3]
    assert model.prompts["document"] == ""
    assert np.allclose(encoder.encode_documents(texts), model.encode(texts, prompt="passage: "),
                       atol=1e-6)
    assert np.allclose(encoder.encode_queries(texts), model.encode_query(texts), atol=1e-6)
    assert not np.allclose(encoder.encode_queries(texts), encoder.encode_documents(texts))
    plain = BiEncoder.from_pretrained(tiny_bert, precision="fp32")
    assert plain.fingerprint != encoder.fingerprint
    coll = load_collection(toy)
    assert (DenseIndex.folder_for(plain, coll, FP32, tmp_path)
            != DenseIndex.folder_for(encoder, coll, FP32, tmp_path))


def test_faiss_search_equals_exact(toy, tmp_path, encoder):
    pytest.importorskip("faiss")
    coll = load_collection(toy)
    exact = dense_run(coll, encoder, k=4, settings=FP32, cache=tmp_path)
    flat = dense_run(coll, encoder, k=4, settings=FP32, cache=tmp_path, search="faiss")
    assert {q: list(d) for q, d in flat.items()} == {q: list(d) for q, d in exact.items()}
    for qid in exact:
        assert list(flat[qid].values()) == pytest.approx(list(exact[qid].values()), abs=1e-5)


def test_exact_search_in_blocks_keeps_the_top_k():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((3000, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    scores, rows = dense.exact_search(docs, queries, 7, block_elements=1)  # 1024-row blocks
    full = queries @ docs.T
    assert (rows == np.argsort(-full, axis=1)[:, :7]).all()
    assert np.allclose(scores, np.take_along_axis(full, rows, 1), atol=1e-5)


def test_cache_reused_and_keyed_by_settings(toy, tmp_path, encoder, tiny_bert, count_encoded):
    coll = load_collection(toy)
    cache = tmp_path / "cache"
    first = dense_run(coll, encoder, k=3, settings=FP32, cache=cache)
    assert count_encoded["docs"] == len(DOCS)
    [folder] = list(cache.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "doc_ids.json", "done",
                                                        "embeddings.npy", "settings.json"]
    index = DenseIndex.build(coll, encoder, FP32, cache)
    assert isinstance(index.embeddings, np.memmap) and index.embeddings.dtype == np.float32
    assert index.doc_ids == list(DOCS)
    assert dense_run(coll, encoder, k=3, settings=FP32, cache=cache) == first
    assert count_encoded["docs"] == len(DOCS)  # the second call encoded nothing
    # another length, dtype or model: another folder, never the first one's embeddings
    short = BiEncoder.from_pretrained("minilm", max_length=8, precision="fp32")
    dense_run(coll, short, k=3, settings=FP32, cache=cache)
    half = DenseSettings(precision="fp32", dtype="float16")
    dense_run(coll, encoder, k=3, settings=half, cache=cache)
    assert DenseIndex.build(coll, encoder, half, cache).embeddings.dtype == np.float16
    other = BiEncoder.from_pretrained(tiny_bert, precision="fp32")  # mean pooling, no Normalize
    assert not other.normalises and other.similarity == "dot"
    dense_run(coll, other, k=3, settings=FP32, cache=cache)
    assert count_encoded["docs"] == 4 * len(DOCS)
    assert len(list(cache.iterdir())) == 4
    records = [json.loads((f / "settings.json").read_text()) for f in cache.iterdir()]
    assert sorted(r["max_length"] for r in records) == [8, 256, 256, 256]
    # the train and test splits of one corpus (one document set) share a folder
    assert DenseIndex.folder_for(encoder, coll, FP32, cache) == folder


def test_tampered_or_damaged_cache_is_refused(toy, tmp_path, encoder):
    coll = load_collection(toy)
    cache = tmp_path / "cache"
    dense_run(coll, encoder, k=3, settings=FP32, cache=cache)
    [folder] = list(cache.iterdir())
    record = json.loads((folder / "settings.json").read_text())
    (folder / "settings.json").write_text(json.dumps({**record, "max_length": 128}))
    with pytest.raises(IrdistillError, match=r"max_length 128 instead of 256.*delete the folder"):
        dense_run(coll, encoder, k=3, settings=FP32, cache=cache)
    (folder / "settings.json").write_text(json.dumps(record))
    np.save(folder / "embeddings.npy", np.zeros((2, 384), dtype=np.float32))
    with pytest.raises(IrdistillError, match="does not match its ids"):
        dense_run(coll, encoder, k=3, settings=FP32, cache=cache)
    (folder / "settings.json").unlink()
    with pytest.raises(IrdistillError, match="no record of its settings"):
        dense_run(coll, encoder, k=3, settings=FP32, cache=cache)


def test_interrupted_build_resumes_from_finished_chunks(toy, tmp_path, encoder, monkeypatch):
    coll = load_collection(toy)
    settings = DenseSettings(precision="fp32", chunk_docs=2, batch_size=2)
    calls = []
    original = BiEncoder.encode_documents

    def dies_on_third_batch(self, texts, batch_size=32):
        calls.append(list(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, texts, batch_size)

    monkeypatch.setattr(BiEncoder, "encode_documents", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        DenseIndex.build(coll, encoder, settings, tmp_path / "cache")
    [folder] = list((tmp_path / "cache").iterdir())
    assert not (folder / "done").exists() and (folder / "embeddings.partial.npy").exists()
    assert len((folder / "progress.jsonl").read_text().splitlines()) == 2  # two whole chunks
    calls.clear()
    # resumed with another chunk size asked: the interrupted build's chunks are kept
    resumed = DenseIndex.build(coll, encoder, DenseSettings(precision="fp32", chunk_docs=3),
                               tmp_path / "cache")
    assert sum(len(c) for c in calls) == len(DOCS) - 4  # only the unfinished chunks
    assert (folder / "done").exists() and not (folder / "progress.jsonl").exists()
    monkeypatch.setattr(BiEncoder, "encode_documents", original)
    fresh = DenseIndex.build(coll, encoder, settings, tmp_path / "fresh")
    assert resumed.doc_ids == fresh.doc_ids
    assert np.array_equal(np.asarray(resumed.embeddings), np.asarray(fresh.embeddings))


def test_bm25_scores_of_candidates_match_the_bm25_run(toy):
    coll = load_collection(toy)
    run = bm25_run(coll, k=len(DOCS))
    candidates = {q: list(DOCS) for q in QUERIES}
    scores = bm25_scores(coll, candidates)
    for qid in QUERIES:
        for d in DOCS:
            assert scores[qid][d] == pytest.approx(run.get(qid, {}).get(d, 0.0))


def test_teacher_specs():
    assert Teacher.parse("bm25") == Teacher("bm25", "bm25", "bm25")
    assert Teacher.parse("bi:minilm") == Teacher("bi-minilm", "minilm", "bi-encoder")
    assert Teacher.parse("emb=dense:runs/bi/model") == Teacher("emb", "runs/bi/model",
                                                               "bi-encoder")
    assert Teacher.parse("ce:minilm") == Teacher("minilm", "minilm")
    assert Teacher.parse("minilm-ce=minilm").kind == "cross-encoder"
    with pytest.raises(IrdistillError, match="names no model"):
        Teacher.parse("bi:")


def test_hybrid_teacher_is_the_zscore_mean(toy, tmp_path, encoder, minilm_path):
    coll = load_collection(toy)
    candidates = {"q-life": ["cell", "mito", "rain", "dog"], "q-star": ["star", "sun", "cat"]}
    run_file = tmp_path / "candidates.trec"
    run_file.write_text("".join(f"{q} Q0 {d} {r + 1} {10 - r} first\n"
                                for q, docs in candidates.items() for r, d in enumerate(docs)))
    out = tmp_path / "hybrid"
    args = ("teach", "ensemble", toy, "--run", run_file, "--depth", 10, "--teacher", "bm25",
            "--teacher", "bi:minilm", "--normalise", "zscore", "--precision", "fp32",
            "--output", out)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "teacher bm25: scored" in result.output and "teacher bi-minilm: scored" in result.output
    hybrid = read_run(out / "ensemble.trec")
    # by hand: BM25 from the run of all documents, cosines from sentence-transformers, z-scores
    bm25 = bm25_run(coll, k=len(DOCS))
    cos = brute_force_cosine(minilm_path)
    doc_row = {d: i for i, d in enumerate(DOCS)}
    query_row = {q: i for i, q in enumerate(QUERIES)}

    def z(values):
        values = np.asarray(values, dtype=np.float64)
        return (values - values.mean()) / values.std()

    for qid, docs in candidates.items():
        b = z([bm25.get(qid, {}).get(d, 0.0) for d in docs])
        c = z([cos[query_row[qid], doc_row[d]] for d in docs])
        expected = (b + c) / 2
        assert [hybrid[qid][d] for d in docs] == pytest.approx(list(expected), abs=1e-4)
    provenance = json.loads((out / "ensemble.provenance.json").read_text())
    assert [t["kind"] for t in provenance["teachers"]] == ["bm25", "bi-encoder"]
    assert provenance["normalisation"] == "zscore"
    # another ensemble of the same teachers on the same candidates scores nothing
    reused = invoke(*args[:-2], "--name", "hybrid2", "--output", out)
    assert reused.exit_code == 0, reused.output
    assert "teacher bm25: reused" in reused.output
    assert "teacher bi-minilm: reused" in reused.output
    assert read_run(out / "hybrid2.trec") == hybrid


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_cli_dense_retrieve_writes_run_and_provenance(toy, tmp_path):
    out = tmp_path / "dense.trec"
    result = invoke("retrieve", toy, "--model", "minilm", "--k", 2, "--precision", "fp32",
                    "--output", out)
    assert result.exit_code == 0, result.output
    run = read_run(out)
    assert len(run) == len(QUERIES) and all(len(d) == 2 for d in run.values())
    assert max(run["q-bark"], key=run["q-bark"].get) == "dog"
    record = json.loads((tmp_path / "dense.provenance.json").read_text())
    assert record["kind"] == "dense" and record["model"]["similarity"] == "cosine"
    assert record["config"]["max_length"] == 256 and record["config"]["precision"] == "fp32"
    assert (json.loads((tmp_path / "dense.provenance.json").read_text())["run"]["sha256"])


@pytest.mark.parametrize("args, words", [
    (["--model", "no-such-model"], "cannot load model 'no-such-model'"),
    (["--model", "./missing-folder"], "not found"),
    (["--model", "minilm", "--search", "annoy"], "unknown search 'annoy'"),
    (["--model", "minilm", "--k1", "1.2"], "--k1 is a BM25 option"),
    (["--max-length", "64"], "--max-length is a dense retrieval option"),
    (["--model", "minilm", "--embedding-dtype", "int8"], "unknown embedding dtype"),
])
def test_cli_dense_errors_are_one_line_and_write_nothing(toy, tmp_path, args, words):
    out = tmp_path / "out" / "run.trec"
    line = one_error_line(invoke("retrieve", toy, "--output", out, *args))
    assert words in line
    assert not (tmp_path / "out").exists()


def test_faiss_missing_is_a_clear_error(toy, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(IrdistillError, match=r"needs FAISS.*irdistill\[faiss\]"):
        dense.check_search("faiss")
