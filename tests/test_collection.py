import pytest

from irdistill.data.collection import load_collection, load_qrels
from irdistill.errors import IrdistillError


def test_ir_datasets_scifact(scifact_available):
    test = load_collection("beir/scifact/test")
    assert len(test.queries) == 300
    assert sum(len(d) for d in test.qrels.values()) == 339
    assert len(test.docs) == 5183
    assert test.docs_name == "beir/scifact"
    text = test.docs.get("4983")
    assert text.startswith("Microstructural development of human newborn cerebral white matter")


def test_ir_datasets_graded_cranfield(scifact_available):
    cran = load_collection("cranfield")
    grades = {rel for docs in cran.qrels.values() for rel in docs.values()}
    assert len(grades) > 2  # graded relevance is kept
    assert len(cran.docs) == 1400


def test_unknown_dataset_id_suggests(scifact_available):
    with pytest.raises(IrdistillError) as info:
        load_collection("beir/scifactt/test")
    assert "unknown dataset id 'beir/scifactt/test'" in str(info.value)
    assert "did you mean 'beir/scifact/test'" in str(info.value)


def test_beir_folder(beir_folder):
    test = load_collection(beir_folder)  # test split by default
    assert set(test.queries) == {"q1", "q2"}
    assert test.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert test.docs.get("d1") == "Cells The cell is the basic unit of life."
    assert dict(test.docs)["d4"] == "Cats Cats purr and chase mice."
    train = load_collection(beir_folder, split="train")
    assert train.qrels == {"q2": {"d2": 1}} and train.docs_name == test.docs_name
    with pytest.raises(IrdistillError, match="no qrels for split 'dev'"):
        load_collection(beir_folder, split="dev")
    with pytest.raises(IrdistillError, match="not in the collection"):
        test.docs.get_many(["d1", "zzz"])
    assert load_qrels(beir_folder / "qrels" / "test.tsv") == test.qrels


def test_plain_folder(tmp_path):
    (tmp_path / "docs.tsv").write_text("a\tfirst doc\nb\tsecond doc\n")
    (tmp_path / "queries.tsv").write_text("1\tfirst\n")
    (tmp_path / "qrels.txt").write_text("1 0 a 1\n")
    coll = load_collection(tmp_path)
    assert coll.docs.get_many(["b", "a"]) == {"b": "second doc", "a": "first doc"}
    assert coll.queries == {"1": "first"} and coll.qrels == {"1": {"a": 1}}


def test_bad_plain_folder(tmp_path):
    with pytest.raises(IrdistillError, match="neither a BEIR folder"):
        load_collection(tmp_path)
    (tmp_path / "docs.tsv").write_text("a\tfirst\nb no tab here\n")
    with pytest.raises(IrdistillError, match=r"docs.tsv, line 2: expected 2 tab-separated"):
        load_collection(tmp_path)
