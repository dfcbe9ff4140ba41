"""Fast inference (issue 5): batches, token budget, precisions, ONNX Runtime backend.

No timings here: speed is measured by benchmarks/speed.py. These tests check what the fast
paths must not change: the inputs the model sees and the scores it gives.
"""
import numpy as np
import pytest
import torch
from tiny_models import FAMILIES, QUESTIONS, TOPICS, build_tiny_model

from irdistill import CrossEncoder
from irdistill.errors import IrdistillError
from irdistill.models.runtime import (DEFAULT_MAX_TOKENS, budget_for, cpu_has_native_bf16,
                                      plan_batches, resolve_precision)


def reference_collate(encoder, pairs):
    """The straightforward Python assembly the vectorised collate replaced."""
    t = encoder.template
    rows, type_rows = [], []
    for q, d in pairs:
        q, d = [int(x) for x in q], [int(x) for x in d]
        rows.append([*t.prefix, *q, *t.middle, *d, *t.suffix])
        type_rows.append([*t.type_prefix, *([t.type_a] * len(q)), *t.type_middle,
                          *([t.type_b] * len(d)), *t.type_suffix])
    width = encoder.padded_width(max(len(r) for r in rows))
    ids = torch.full((len(rows), width), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, tr) in enumerate(zip(rows, type_rows)):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        types[i, :len(tr)] = torch.tensor(tr)
    return ids, mask, types


def pairs_of_texts():
    topics = list(TOPICS)
    return [(QUESTIONS[t], " ".join(TOPICS[t][: 1 + i % 3])) for i, t in enumerate(topics)] + [
        ("bees", "honey"), (" ".join(QUESTIONS.values()), TOPICS["stars"][0])]


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed-families")
    return {f: build_tiny_model(f, root / f) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("compact", [False, True])
def test_collate_matches_the_reference_assembly(families, family, compact):
    ce = CrossEncoder.from_pretrained(families[family], max_query_length=12, max_doc_length=20,
                                      device="cpu")
    texts = pairs_of_texts()
    q = ce.encoder.encode_queries([a for a, _ in texts], compact=compact)
    d = ce.encoder.encode_docs([b for _, b in texts], compact=compact)
    if compact:
        assert all(isinstance(x, np.ndarray) and x.dtype == ce.encoder.token_dtype for x in q + d)
        assert [x.tolist() for x in q] == ce.encoder.encode_queries([a for a, _ in texts])
    batch = ce.encoder.collate(list(zip(q, d)))
    ids, mask, types = reference_collate(ce.encoder, list(zip(q, d)))
    assert torch.equal(batch["input_ids"], ids)
    assert torch.equal(batch["attention_mask"], mask)
    assert batch["input_ids"].shape[1] % 8 == 0
    if ce.encoder.use_token_types:
        assert torch.equal(batch["token_type_ids"], types)
    else:
        assert "token_type_ids" not in batch


def test_plan_batches_keeps_the_cap_and_the_token_budget():
    lengths = [300, 290, 120, 100, 100, 40, 33, 9, 9, 9]
    width = lambda n: (n + 7) // 8 * 8  # noqa: E731
    spans = plan_batches(lengths, batch_size=4, max_tokens=640, width=width)
    assert spans[0] == (0, 2) and spans[-1][1] == len(lengths)
    assert all(a < b for a, b in spans) and all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
    for a, b in spans:
        assert b - a <= 4 and (b - a == 1 or width(lengths[a]) * (b - a) <= 640)
    assert plan_batches(lengths, 4, None) == [(0, 4), (4, 8), (8, 10)]
    assert plan_batches([5000, 10], 64, 640) == [(0, 1), (1, 2)]  # too long: a batch alone
    with pytest.raises(IrdistillError, match="batch_size"):
        plan_batches(lengths, 0, None)
    assert budget_for("cuda", DEFAULT_MAX_TOKENS) >= 64 * 256  # a GPU batch: 64 pairs of 256
    assert budget_for("cpu", DEFAULT_MAX_TOKENS) == 2048  # a CPU batch stays in cache
    assert budget_for("cpu", None) is None and budget_for("cuda", 640) == 640


def test_scores_do_not_depend_on_order_batching_or_budget(tiny_bert):
    ce = CrossEncoder.from_pretrained(tiny_bert, max_doc_length=24, device="cpu")
    texts = pairs_of_texts() * 3
    q = ce.encoder.encode_queries([a for a, _ in texts], compact=True)
    d = ce.encoder.encode_docs([b for _, b in texts], compact=True)
    pairs = list(zip(q, d))
    reference = ce.score_ids(pairs, batch_size=1, max_tokens=None)
    perm = np.random.default_rng(0).permutation(len(pairs))
    shuffled = ce.score_ids([pairs[i] for i in perm], batch_size=7, max_tokens=64)
    assert np.allclose(np.array(shuffled), np.array(reference)[perm], atol=1e-5)
    assert ce.score_ids(pairs, batch_size=64) == pytest.approx(reference, abs=1e-5)
    assert ce.score_ids([]) == []


def test_resolve_precision(monkeypatch):
    import irdistill.models.runtime as module

    assert resolve_precision("cpu", None) is None and resolve_precision("cpu", "fp32") is None
    assert resolve_precision("cpu", "bf16") == "bf16"
    for native, expected in ((True, "bf16"), (False, None)):
        monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: native)
        assert resolve_precision("cpu", "auto") == expected
    with pytest.raises(IrdistillError, match="unknown precision 'bf32'"):
        resolve_precision("cpu", "bf32")


@pytest.mark.parametrize("flags, native", [
    ("fpu sse2 avx2 fma", False), ("avx2 avx512f avx512bw avx512_vnni", False),
    ("avx2 avx512f avx512_bf16", True), ("avx2 amx_tile amx_bf16 amx_int8", True),
    ("avx512_bf16x", False)])
def test_cpu_has_native_bf16_reads_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(cpuinfo) is native
    assert cpu_has_native_bf16(tmp_path / "absent") is False


def test_bf16_scores_are_computed_in_bf16_and_close_to_fp32():
    """MiniLM (real weights, a seeded random head), whose scores spread, unlike a tiny random
    model's: bf16 must run the linear layers in bf16 (autocast or cast weights), change the
    scores a little (bf16 keeps about 3 significant digits) and keep their order."""
    from scipy.stats import spearmanr

    texts = pairs_of_texts()
    scores, dtypes = {}, {}
    for precision in (None, "bf16", "bf16-full"):
        torch.manual_seed(0)  # the same new head each time
        ce = CrossEncoder.from_pretrained("minilm", max_doc_length=64, device="cpu",
                                          precision=precision)
        linear = next(m for m in ce.model.modules() if isinstance(m, torch.nn.Linear))
        seen = []
        handle = linear.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
        scores[precision] = np.array(ce.score(texts))
        handle.remove()
        dtypes[precision] = set(seen)
    assert dtypes == {None: {torch.float32}, "bf16": {torch.bfloat16},
                      "bf16-full": {torch.bfloat16}}
    reference = scores[None]
    spread = reference.max() - reference.min()
    assert spread > 0.01  # scores that differ, so that closeness and order mean something
    for precision in ("bf16", "bf16-full"):
        other = scores[precision]
        assert not np.array_equal(other, reference)  # computed in bf16, not fp32 again
        assert np.abs(other - reference).max() < 0.05 * spread
        assert spearmanr(other, reference).statistic > 0.95


@pytest.fixture(scope="module")
def spread_families(tmp_path_factory):
    """Tiny models whose scores spread (about 0.5 across the test pairs, against 1e-4 with the
    default initialisation), so that comparing two backends' scores can fail."""
    root = tmp_path_factory.mktemp("spread-families")
    return {f: build_tiny_model(f, root / f, initializer_range=0.2)
            for f in ("bert", "roberta", "modernbert")}


@pytest.mark.parametrize("family", ["bert", "roberta", "modernbert"])
def test_onnx_runtime_scores_match_pytorch(spread_families, family, tmp_path):
    pytest.importorskip("onnxruntime")
    ce = CrossEncoder.from_pretrained(spread_families[family], max_doc_length=40, device="cpu")
    texts = pairs_of_texts() * 2
    expected = np.array(ce.score(texts, batch_size=5))
    assert expected.max() - expected.min() > 0.1
    path = ce.use_onnx(tmp_path / "onnx")
    assert path.exists() and path.parent.parent == tmp_path / "onnx"
    got = np.array(ce.score(texts, batch_size=3))
    assert np.abs(got - expected).max() < 1e-4  # < 1e-3 of the spread: order kept too
    stamp = path.stat().st_mtime_ns
    again = CrossEncoder.from_pretrained(spread_families[family], max_doc_length=40,
                                         device="cpu")
    assert again.use_onnx(tmp_path / "onnx") == path and path.stat().st_mtime_ns == stamp
    with pytest.raises(IrdistillError, match="ONNX backend runs in fp32"):
        CrossEncoder.from_pretrained(spread_families[family], device="cpu",
                                     precision="bf16").use_onnx(tmp_path / "onnx")


def test_onnx_runtime_matches_pytorch_with_minilm(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)  # the new head of the bundled sentence-embedding model
    ce = CrossEncoder.from_pretrained("minilm", max_doc_length=128, device="cpu")
    texts = pairs_of_texts()
    expected = np.array(ce.score(texts))
    ce.use_onnx(tmp_path / "onnx")
    got = np.array(ce.score(texts, batch_size=4))
    assert np.abs(got - expected).max() < 1e-4
    assert list(np.argsort(-got)) == list(np.argsort(-expected))


def test_compiled_model_scores_match_eager_over_many_batch_shapes(tiny_bert):
    """torch.compile with dynamic shapes: batches of other sizes and lengths give the eager
    model's scores (the inductor backend is exercised by benchmarks/speed.py; aot_eager here
    traces the same graph without a C++ compiler's minutes)."""
    ce = CrossEncoder.from_pretrained(tiny_bert, max_doc_length=40, device="cpu")
    texts = pairs_of_texts() * 2
    expected = ce.score(texts, batch_size=5)
    from torch._dynamo.utils import counters

    counters.clear()
    ce.use_compile(backend="aot_eager")
    for batch_size in (3, 7, 64):
        assert ce.score(texts, batch_size=batch_size) == pytest.approx(expected, abs=1e-5)
    assert counters["stats"]["unique_graphs"] >= 1  # the scores came through a compiled graph
    for other in (ce.use_compile, ce.use_onnx):
        with pytest.raises(IrdistillError, match="already scores through another backend"):
            other()


def test_int8_onnx_scores_follow_fp32_and_the_rerank_command_reports_the_check(tmp_path):
    """onnx-int8: the weights of the MatMuls quantised (the file shrinks), scores near fp32's on
    a model whose scores spread; `irdistill rerank --backend onnx-int8` compares a sample's
    rankings with fp32 (the same weights) first and writes the figures into the provenance."""
    pytest.importorskip("onnxruntime")
    from tiny_models import build_tiny_model
    from toy_collection import write_toy_collection
    from typer.testing import CliRunner

    from irdistill.cli import app
    from irdistill.provenance import read_run_provenance

    model = build_tiny_model("bert", tmp_path / "m", initializer_range=0.2)
    ce = CrossEncoder.from_pretrained(model, max_doc_length=40, device="cpu")
    texts = pairs_of_texts() * 2
    expected = np.array(ce.score(texts, batch_size=5))
    fp32 = ce.use_onnx(tmp_path / "onnx")
    int8_model = CrossEncoder.from_pretrained(model, max_doc_length=40, device="cpu")
    int8 = int8_model.use_onnx(tmp_path / "onnx", quantize="int8")
    assert int8 != fp32 and int8_model.backend == "onnx-int8"
    import onnx

    quantised = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert "DynamicQuantizeLinear" in quantised or "MatMulInteger" in quantised
    got = np.array(int8_model.score(texts, batch_size=3))
    spread = expected.max() - expected.min()
    assert np.abs(got - expected).max() < 0.1 * spread  # near, not equal
    assert np.abs(got - expected).max() > 1e-6
    with pytest.raises(IrdistillError, match="unknown ONNX quantisation"):
        CrossEncoder.from_pretrained(model, device="cpu").use_onnx(tmp_path / "o", quantize="int4")

    toy = write_toy_collection(tmp_path / "toy")
    out = tmp_path / "int8.trec"
    result = CliRunner().invoke(app, ["rerank", str(model), str(toy["folder"]), "--run",
                                      str(toy["run"]),
                                      "--depth", "10", "--backend", "onnx-int8",
                                      "--check-queries", "3", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "int8 against fp32 on 3 queries: Kendall tau" in result.output
    record = read_run_provenance(out)
    check = record["int8_check"]
    assert record["config"]["backend"] == "onnx-int8" and check["queries"] == 3
    assert 0.5 < check["kendall_tau"] <= 1 and 0 < check["top10_overlap"] <= 1
    assert "nDCG@10" in check and "reference nDCG@10" in check
