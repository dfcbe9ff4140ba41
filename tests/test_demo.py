import json
import math

from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.data.trec import ranked, read_run

SYSTEMS = ["bm25", "bi-encoder", "hybrid", "untrained", "reranker", "reranker+bm25"]
OOD_SYSTEMS = ["bm25", "bi-encoder", "hybrid", "reranker", "reranker-on-hybrid", "reranker+bm25"]


def zscores(scores):
    values = list(scores.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {d: (v - mean) / std if std > 0 else 0.0 for d, v in scores.items()}


def minmax(scores):
    low, high = min(scores.values()), max(scores.values())
    return {d: (v - low) / (high - low) if high > low else 0.0 for d, v in scores.items()}


def test_demo_end_to_end_with_a_tiny_model(tmp_path, tiny_bert, scifact_available):
    """The demo's whole path, fast: the recipe's cross-encoder and bi-encoder swapped for a tiny
    model; checks what each row is made of, not only that it prints."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, [
        "demo", "--output", str(out), "--bi-encoder", tiny_bert, "--minutes", "5",
        "--set", f"model.name={tiny_bert}", "--set", "train.epochs=1",
        "--set", "train.max_steps=2", "--set", "train.batch_size=4",
        "--set", "model.max_doc_length=32", "--set", "train.precision=fp32",
        "--ood", "cranfield", "--untrained"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results) == SYSTEMS
    assert abs(results["bm25"]["nDCG@10"] - 0.662) < 0.003
    for name in results:
        assert set(results[name]) == {"nDCG@10", "RR@10"}
        assert f"{results[name]['nDCG@10']:.4f}" in result.output
        assert (out / "runs" / f"{name}.trec").exists()
    runs = {name: read_run(out / "runs" / f"{name}.trec") for name in SYSTEMS}
    bm25 = runs["bm25"]

    # the hybrid: the mean of the z-scores of BM25 and the bi-encoder over the BM25 top-100
    from irdistill.data.collection import load_collection
    from irdistill.retrieval.dense import dense_scores

    test = load_collection("beir/scifact/test")
    qid = sorted(bm25)[0]
    cosine = dense_scores(test, tiny_bert, {qid: list(bm25[qid])}, show_progress=False)[qid]
    zb, zc = zscores(bm25[qid]), zscores(cosine)
    for doc, score in runs["hybrid"][qid].items():
        assert abs(score - (zb[doc] + zc[doc])) < 1e-4

    # reranker+bm25 is the interpolation of the re-ranker's and BM25's top-20 with the weight
    # chosen on held-out training queries
    settings = json.loads((out / "settings.json").read_text())
    alpha = settings["interpolation_alpha"]
    assert 0.0 <= alpha <= 1.0
    top = dict(ranked(bm25[qid], 20))
    a, b = minmax(runs["reranker"][qid]), minmax(top)
    for doc, score in runs["reranker+bm25"][qid].items():
        assert abs(score - (alpha * a[doc] + (1 - alpha) * b[doc])) < 1e-5
    assert set(runs["reranker"][qid]) == set(top)

    # the held-out queries are left out of training and of the training teacher
    dev = set(settings["dev_queries"])
    assert len(dev) == 81  # every 10th of the 809 judged training queries
    assert not dev & set(read_run(out / "runs" / "teacher-train.trec"))
    provenance = json.loads((out / "train" / "provenance.json").read_text())
    assert provenance["data"]["groups"] == 809 - 81  # one epoch: a group per training query
    steps = [json.loads(line) for line in
             (out / "train" / "train_log.jsonl").read_text().splitlines()]
    assert max(s["step"] for s in steps) == 2
    assert settings["precision"] == "fp32"

    # out of domain: the same systems on Cranfield, never trained on
    ood = out / "ood" / "cranfield"
    results = json.loads((ood / "results.json").read_text())
    assert list(results) == OOD_SYSTEMS
    assert "cranfield (out of domain)" in result.output
    runs = {name: read_run(ood / "runs" / f"{name}.trec") for name in OOD_SYSTEMS}
    cranfield = load_collection("cranfield")
    assert set(runs["bm25"]) == set(cranfield.queries)
    for qid in sorted(runs["bm25"])[:5]:
        bm25_top = dict(ranked(runs["bm25"][qid], 20))
        hybrid_top = dict(ranked(runs["hybrid"][qid], 20))
        assert set(runs["reranker"][qid]) == set(bm25_top)
        assert set(runs["reranker-on-hybrid"][qid]) == set(hybrid_top)
        # one model, one score per pair, whichever list it came from
        for doc in set(bm25_top) & set(hybrid_top):
            assert runs["reranker"][qid][doc] == runs["reranker-on-hybrid"][qid][doc]
        # fused with BM25 by the in-domain weight
        a, b = minmax(runs["reranker"][qid]), minmax(bm25_top)
        for doc, score in runs["reranker+bm25"][qid].items():
            assert abs(score - (alpha * a[doc] + (1 - alpha) * b[doc])) < 1e-5


def test_demo_rejects_a_bad_ood_collection_before_training(tmp_path, scifact_available):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--output", str(out), "--ood", "no/such/set"])
    assert result.exit_code == 2
    assert "no/such/set" in result.output
    assert not out.exists()
