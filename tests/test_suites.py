"""Evaluation suites: the registry's ids are real, user suites load and are checked, passages
are cut and aggregated as documented, and evaluations are written once and reused."""
import json

import pytest

from irdistill.errors import IrdistillError
from irdistill.evaluation.passages import (PassageSettings, aggregate_passages, passage_collection,
                                           split_passages)
from irdistill.evaluation.suites import (BEIR_13, LOTTE, SUITES, DatasetSpec, check_suite,
                                         evaluate_on_dataset, first_stage_run, get_suite,
                                         load_dataset, load_suites, suite_from_dict)


def test_builtin_suites_list_the_studies_datasets():
    assert set(SUITES) >= {"msmarco-dev", "trec-dl", "beir-13", "lotte", "robust04", "scifact",
                           "cranfield"}
    assert len(SUITES["beir-13"].datasets) == 13 == len(BEIR_13)
    assert [d.id for d in SUITES["lotte"].datasets] == [f"lotte/{d}/test/search" for d in LOTTE]
    assert SUITES["lotte"].measures == ["nDCG@10", "Success@5"]
    assert [d.id for d in SUITES["trec-dl"].datasets] == [
        "msmarco-passage/trec-dl-2019/judged", "msmarco-passage/trec-dl-2020/judged"]
    assert "AP(rel=2)" in SUITES["trec-dl"].measures  # graded DL qrels: rel >= 2 for AP/RR
    assert SUITES["msmarco-dev"].measures == ["RR@10"]
    robust = SUITES["robust04"]
    assert robust.datasets[0].id == "disks45/nocr/trec-robust-2004"
    assert robust.passages is not None and robust.passages.aggregate == ["maxp", "firstp"]
    assert SUITES["scifact"].datasets[0].id == "beir/scifact/test"


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_id_is_a_registered_ir_datasets_id_with_qrels(name):
    import ir_datasets

    suite = check_suite(SUITES[name])  # validates ids, measures, first stage, passages
    for spec in suite.datasets:
        assert spec.id in ir_datasets.registry._registered, spec.id
        dataset = ir_datasets.load(spec.id)  # metadata only: nothing is downloaded
        assert dataset.has_docs() and dataset.has_queries() and dataset.has_qrels(), spec.id


def test_unknown_ids_and_names_get_a_suggestion(tmp_path):
    with pytest.raises(IrdistillError, match="unknown dataset id 'beir/arguanna'.*beir/arguana"):
        suite_from_dict("mine", {"datasets": ["beir/arguanna"], "measures": ["nDCG@10"]})
    with pytest.raises(IrdistillError, match="unknown suite 'beir13'.*did you mean 'beir-13'"):
        get_suite("beir13")
    with pytest.raises(IrdistillError, match="unknown measure"):
        suite_from_dict("mine", {"datasets": ["cranfield"], "measures": ["nDCG@ten"]})
    with pytest.raises(IrdistillError, match="unknown config key 'suite.mine.dept'"):
        suite_from_dict("mine", {"datasets": ["cranfield"], "measures": ["AP"], "dept": 5})
    with pytest.raises(IrdistillError, match="gives no run file"):
        suite_from_dict("mine", {"datasets": ["cranfield"], "measures": ["AP"],
                                 "first_stage": "run"})
    with pytest.raises(IrdistillError, match="stride 80 exceeds the length 50"):
        suite_from_dict("mine", {"datasets": ["cranfield"], "measures": ["AP"],
                                 "passages": {"length": 50, "stride": 80}})


def test_user_suites_from_yaml(tmp_path, beir_folder):
    path = tmp_path / "suites.yaml"
    path.write_text(f"""
suites:
  mine:
    description: a local folder and an ir_datasets id
    depth: 3
    measures: nDCG@10 RR@10
    datasets:
      - {{id: {beir_folder}, split: test, name: mini}}
      - cranfield
""")
    suites = load_suites(path)
    mine = suites["mine"]
    assert mine.depth == 3 and mine.measures == ["nDCG@10", "RR@10"]
    assert [d.label for d in mine.datasets] == ["mini", "cranfield"]
    assert get_suite("mine", suites) is mine
    bad = tmp_path / "bad.yaml"
    bad.write_text("mine:\n  datasets: [cranfield]\n")
    with pytest.raises(IrdistillError, match="names no measures") as info:
        load_suites(bad)
    assert str(bad) in str(info.value)


def test_split_passages_windows():
    words = " ".join(f"w{i}" for i in range(10))
    assert split_passages(words, 4, 2) == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7",
                                           "w6 w7 w8 w9"]
    eleven = words + " w10"
    assert split_passages(eleven, 4, 2)[-1] == "w8 w9 w10"  # the last window reaches the end
    assert split_passages(eleven, 4, 4) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9 w10"]
    assert split_passages("a  b\n c", 10, 5) == ["a b c"]
    assert split_passages("", 10, 5) == [""]


def test_aggregate_passages_maxp_and_firstp():
    scores = {"q": {"d1%p0": 0.1, "d1%p1": 0.9, "d1%p2": 0.3, "d2%p0": 0.5, "a%pb%p0": 0.2}}
    assert aggregate_passages(scores, "maxp") == {"q": {"d1": 0.9, "d2": 0.5, "a%pb": 0.2}}
    assert aggregate_passages(scores, "firstp") == {"q": {"d1": 0.1, "d2": 0.5, "a%pb": 0.2}}
    with pytest.raises(IrdistillError, match="unknown passage aggregation"):
        aggregate_passages(scores, "sump")


def test_passage_collection_cuts_every_candidate(beir_folder):
    coll = load_dataset(DatasetSpec(str(beir_folder), split="test"))
    run = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    passages, prun = passage_collection(coll, run, depth=2, settings=PassageSettings(3, 2))
    # d1 "Cells The cell is the basic unit of life." (9 words): windows at 0, 2, 4, 6;
    # d2 "Dogs Dogs are loyal animals that bark." (7 words): at 0, 2, 4; d3 is below depth 2
    assert sorted(prun["q1"]) == ["d1%p0", "d1%p1", "d1%p2", "d1%p3", "d2%p0", "d2%p1",
                                  "d2%p2"]
    assert passages.docs.get("d1%p0") == "Cells The cell"
    assert passages.query_texts(["q1"]) == {"q1": "what is the unit of life"}


def _suite(beir_folder, **kw):
    return suite_from_dict("mini", {"datasets": [{"id": str(beir_folder), "split": "test",
                                                  "name": "mini"}],
                                    "measures": ["nDCG@10"], "depth": 3, **kw})


def test_evaluate_on_dataset_writes_once_and_reuses(tmp_path, beir_folder, tiny_bert):
    from irdistill.models.cross_encoder import CrossEncoder

    suite = _suite(beir_folder)
    spec = suite.datasets[0]
    coll = load_dataset(spec)
    bm25 = first_stage_run(suite, spec, coll)
    assert set(bm25) == {"q1", "q2"}  # judged queries only
    loads = []

    def model():
        loads.append(1)
        return CrossEncoder.from_pretrained(tiny_bert, device="cpu")

    kwargs = dict(system="tiny", collection=lambda: coll, candidates=lambda: bm25,
                  show_progress=False)
    first = evaluate_on_dataset(tmp_path / "tiny", suite, spec, model=model, **kwargs)
    assert len(loads) == 1 and set(first) == {""}
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved["measures"] == ["nDCG@10"] and saved["dataset"] == "mini"
    assert (tmp_path / "tiny.trec").exists()
    again = evaluate_on_dataset(tmp_path / "tiny", suite, spec, model=model, **kwargs)
    assert len(loads) == 1  # nothing recomputed
    assert again[""].aggregate == first[""].aggregate
    # other measures: recomputed from the saved run, without loading the model
    suite_rr = suite.with_overrides(measures=["RR@10", "nDCG@10"])
    other = evaluate_on_dataset(tmp_path / "tiny", suite_rr, spec, model=model, **kwargs)
    assert len(loads) == 1 and set(other[""].aggregate) == {"RR@10", "nDCG@10"}
    assert other[""].aggregate["nDCG@10"] == pytest.approx(first[""].aggregate["nDCG@10"])


def test_evaluate_by_passages_gives_maxp_and_firstp(tmp_path, beir_folder, tiny_bert):
    from irdistill.data.trec import read_run
    from irdistill.models.cross_encoder import CrossEncoder

    suite = _suite(beir_folder, passages={"length": 3, "stride": 2})
    spec = suite.datasets[0]
    coll = load_dataset(spec)
    bm25 = first_stage_run(suite, spec, coll)
    out = evaluate_on_dataset(tmp_path / "tiny", suite, spec, system="tiny",
                              collection=lambda: coll, candidates=lambda: bm25,
                              model=lambda: CrossEncoder.from_pretrained(tiny_bert, device="cpu"),
                              show_progress=False)
    assert set(out) == {"maxp", "firstp"}
    maxp = read_run(tmp_path / "tiny.maxp.trec")
    firstp = read_run(tmp_path / "tiny.firstp.trec")
    for q in maxp:
        assert set(maxp[q]) == set(firstp[q]) == set(bm25[q])
        for d in maxp[q]:
            assert maxp[q][d] >= firstp[q][d] - 1e-4  # the best passage beats the first


def test_cli_lists_and_checks_suites(tmp_path):
    from typer.testing import CliRunner

    from irdistill.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["experiment", "suites"])
    assert result.exit_code == 0, result.output
    assert "beir-13:" in result.output and "writing (lotte/writing/test/search)" in result.output
    assert "AP(rel=2)" in result.output and "MaxP and FirstP" in result.output
    bad = tmp_path / "suites.yaml"
    bad.write_text("mine: {datasets: [beir/trec-covd], measures: [nDCG@10]}\n")
    result = runner.invoke(app, ["experiment", "suites", str(bad)])
    assert result.exit_code == 2
    assert "unknown dataset id 'beir/trec-covd'" in result.output and str(bad) in result.output
