import json
import math
from pathlib import Path

from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.data.trec import read_run


def zscores(scores):
    values = list(scores.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {d: (v - mean) / std if std > 0 else 0.0 for d, v in scores.items()}


def minmax(scores):
    low, high = min(scores.values()), max(scores.values())
    return {d: (v - low) / (high - low) if high > low else 0.0 for d, v in scores.items()}


def evaluated_run(out, system, dataset):
    """The run file of one system on one dataset, from the grid's manifest."""
    manifest = json.loads((out / "experiment.json").read_text())
    entry = next(e for e in manifest["evaluations"]
                 if e["system"] == system and e["dataset"] == dataset)
    return read_run(out / entry["file"].replace(".json", ".trec")), entry


def test_demo_end_to_end_with_a_tiny_model(tmp_path, tiny_bert, scifact_available):
    """The demo's whole path, fast: the recipe's cross-encoder and bi-encoder swapped for a tiny
    model; checks what each row is made of, not only that it prints."""
    out = tmp_path / "demo"
    command = ["demo", "--output", str(out), "--bi-encoder", tiny_bert, "--minutes", "5",
               "--set", f"model.name={tiny_bert}", "--set", "train.epochs=1",
               "--set", "train.max_steps=2", "--set", "train.batch_size=4",
               "--set", "model.max_doc_length=32", "--set", "train.precision=fp32",
               "--ood", "cranfield", "--untrained"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["scifact", "cranfield"]
    untrained = f"untrained {Path(tiny_bert).name}"
    assert list(results["scifact"]) == ["BM25", "bi-encoder", "hybrid", untrained, "re-ranker",
                                        "re-ranker + BM25"]
    assert list(results["cranfield"]) == list(results["scifact"])
    assert abs(results["scifact"]["BM25"]["nDCG@10"] - 0.662) < 0.003
    for dataset, rows in results.items():
        for name, values in rows.items():
            assert set(values) == {"nDCG@10", "RR@10"}
            assert f"{values['nDCG@10']:.4f}" in result.output
    assert "| BM25 (first stage, baseline) |" in result.output  # with tests against it
    assert (out / "report" / "comparison.md").exists()
    # links a person can type: the model and every row's run
    assert (out / "model" / "config.json").exists()
    for dataset, rows in results.items():
        for name in rows:
            run, _ = evaluated_run(out, name, dataset)
            link = out / "runs" / dataset / f"{name.replace(' + ', '_').replace(' ', '_')}.trec"
            assert read_run(link) == run

    from irdistill.data.collection import load_collection
    from irdistill.retrieval.dense import dense_scores

    test = load_collection("beir/scifact/test")
    bm25, _ = evaluated_run(out, "BM25", "scifact")
    assert all(len(docs) == 20 for docs in bm25.values())  # the re-ranked candidates
    dense, _ = evaluated_run(out, "bi-encoder", "scifact")
    assert max(len(docs) for docs in dense.values()) == 100  # dense top-100
    # the hybrid: the mean of the z-scores of BM25 and the bi-encoder over the BM25 top-100
    hybrid, _ = evaluated_run(out, "hybrid", "scifact")
    qid = sorted(bm25)[0]
    assert len(hybrid[qid]) == 100 and set(bm25[qid]) <= set(hybrid[qid])
    from irdistill.retrieval.bm25 import bm25_run

    top100 = bm25_run(test, k=100, query_ids=[qid])[qid]
    cosine = dense_scores(test, tiny_bert, {qid: list(top100)}, show_progress=False)[qid]
    zb, zc = zscores(top100), zscores(cosine)
    for doc, score in hybrid[qid].items():
        assert abs(score - (zb[doc] + zc[doc])) < 1e-4

    # re-ranker + BM25 is the interpolation of the re-ranker's and BM25's top-20 with the weight
    # chosen on the held-out training queries
    reranker, entry = evaluated_run(out, "re-ranker", "scifact")
    fused, _ = evaluated_run(out, "re-ranker + BM25", "scifact")
    cell = out / "cells" / entry["cell"]
    fusion = json.loads(next(cell.glob("fusion-top20-*.json")).read_text())
    alpha = fusion["alpha"]
    assert 0.0 <= alpha <= 1.0 and fusion["collection"] == "beir/scifact/train"
    assert set(reranker[qid]) == set(bm25[qid])
    a, b = minmax(reranker[qid]), minmax(bm25[qid])
    for doc, score in fused[qid].items():
        assert abs(score - (alpha * a[doc] + (1 - alpha) * b[doc])) < 1e-5

    # the held-out queries (a tenth of the judged training queries, drawn by the seed) are
    # left out of training, and none is a test query
    dev = set(fusion["dev_queries"])
    assert len(dev) == 81 and not dev & set(test.queries)
    provenance = json.loads((cell / "provenance.json").read_text())
    assert provenance["data"]["groups"] == 809 - 81  # one epoch: a group per training query
    steps = [json.loads(line) for line in (cell / "train_log.jsonl").read_text().splitlines()]
    assert max(s["step"] for s in steps if "step" in s) == 2
    assert provenance["config"]["train"]["precision"] == "fp32"

    # out of domain: the same systems on Cranfield, never trained on, fused by the same weight
    cranfield = load_collection("cranfield")
    bm25, _ = evaluated_run(out, "BM25", "cranfield")
    reranker, _ = evaluated_run(out, "re-ranker", "cranfield")
    fused, _ = evaluated_run(out, "re-ranker + BM25", "cranfield")
    assert set(bm25) == {q for q, docs in cranfield.qrels.items() if docs}
    for qid in sorted(bm25)[:5]:
        assert set(reranker[qid]) == set(bm25[qid])
        a, b = minmax(reranker[qid]), minmax(bm25[qid])
        for doc, score in fused[qid].items():
            assert abs(score - (alpha * a[doc] + (1 - alpha) * b[doc])) < 1e-5

    # a rerun reuses everything: nothing is trained, tuned or evaluated again
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "results.json"
                   and "report" not in p.parts)
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text()) == results
    changed = [p for p in files if p.stat().st_mtime_ns != stamps[p]]
    assert not [p for p in changed if p.suffix in (".trec", ".safetensors") or
                p.name.startswith("fusion-")], changed


def test_demo_rejects_a_bad_ood_collection_before_training(tmp_path, scifact_available):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--output", str(out), "--ood", "no/such/set"])
    assert result.exit_code == 2
    assert "no/such/set" in result.output
    assert not out.exists()
