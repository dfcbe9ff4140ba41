"""Inverse-cloze pseudo-queries from an unlabelled corpus: seeded, the sentence taken out of
its document, only documents read, and a collection every command loads."""
import pytest
from typer.testing import CliRunner

from irdistill.adapt.pseudo import ClozeSettings, inverse_cloze, sentences
from irdistill.cli import app
from irdistill.data.collection import Collection, load_collection
from irdistill.errors import IrdistillError

DOCS = {
    "d1": "Wings lift the aircraft at speed. Drag grows with the square of the velocity. Short.",
    "d2": "A single sentence document about turbulent boundary layers only.",
    "d3": "Heat flux rises near the stagnation point. The shock stands off the blunt nose. "
          "Ablation cools the surface of a re-entry body.",
    "d4": "Panels flutter when the dynamic pressure is high. Damping delays the onset of flutter.",
}


def write_corpus(folder):
    folder.mkdir()
    (folder / "docs.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in DOCS.items()))
    return folder


def test_the_same_seed_gives_the_same_queries_and_the_sentence_leaves_its_document(tmp_path):
    docs = load_collection(write_corpus(tmp_path / "c")).docs
    settings = ClozeSettings(queries=10, seed=3, min_words=4, keep_fraction=0.0)
    queries, positives, texts = inverse_cloze(docs, settings, show_progress=False)
    assert (queries, positives, texts) == inverse_cloze(docs, settings, show_progress=False)
    assert set(positives.values()) == {"d1", "d3", "d4"}  # d2 has one sentence: never used
    for qid, doc in positives.items():
        assert queries[qid] in sentences(DOCS[doc]) and 4 <= len(queries[qid].split()) <= 40
        assert queries[qid] not in texts[doc]  # taken out of its positive
        assert sorted(sentences(texts[doc]) + [queries[qid]]) == sorted(sentences(DOCS[doc]))
    assert texts["d2"] == DOCS["d2"]
    kept = inverse_cloze(docs, ClozeSettings(queries=10, seed=3, min_words=4, keep_fraction=1.0),
                         show_progress=False)
    assert kept[0] == queries and kept[2] == DOCS  # the same choices; every sentence stays
    others = [inverse_cloze(docs, ClozeSettings(queries=2, seed=s, min_words=4),
                            show_progress=False)[0] for s in range(6)]
    assert len({tuple(sorted(q.values())) for q in others}) > 1  # the seed matters
    with pytest.raises(IrdistillError, match="no document has a sentence"):
        inverse_cloze(docs, ClozeSettings(min_words=30, max_words=40), show_progress=False)


class Untouchable(dict):
    def __getattribute__(self, name):
        raise AssertionError("the target's queries or judgements were read")


def test_the_command_reads_only_documents_and_writes_a_loadable_collection(tmp_path,
                                                                           monkeypatch):
    corpus = write_corpus(tmp_path / "c")
    real = load_collection(corpus)
    import irdistill.data.collection as collection_module

    monkeypatch.setattr(collection_module, "load_collection", lambda spec, split=None: Collection(
        "target", real.docs, queries=Untouchable(), qrels=Untouchable()))
    out = tmp_path / "pq"
    runner = CliRunner()
    result = runner.invoke(app, ["pseudo-queries", str(corpus), "-o", str(out), "--queries", "2",
                                 "--min-words", "4", "--keep-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 pseudo-queries over 4 documents" in result.output
    monkeypatch.undo()
    pseudo = load_collection(out)
    assert len(pseudo.queries) == 2 and set(pseudo.qrels) == set(pseudo.queries)
    for qid, judged in pseudo.qrels.items():
        (doc,) = judged
        assert pseudo.queries[qid] in DOCS[doc]
        assert pseudo.queries[qid] not in pseudo.docs.get_many([doc])[doc]
    again = runner.invoke(app, ["pseudo-queries", str(corpus), "-o", str(out)])
    assert again.exit_code == 2 and "already holds a pseudo-query collection" in again.output
