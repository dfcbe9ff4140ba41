"""Inverse-cloze pseudo-queries from an unlabelled corpus: seeded, the sentence taken out of
its document, only documents read, and a collection every command loads."""
import pytest
from toy_collection import Untouchable
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


# -- generated pseudo-queries (doc2query) ---------------------------------------------------------
from test_llm_teacher import tiny_llm  # noqa: E402,F401  (fixture)


@pytest.fixture(scope="module")
def tiny_t5(tiny_llm, tmp_path_factory):
    """A 2-layer, 32-wide random T5 with the tiny LLM's tokenizer: a doc2query-shaped model."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2,
                      num_heads=2, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-t5")
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


class EchoBackend:
    """Answers with the prompt's last words, a blank line or two lines, and records the calls."""

    seq2seq = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = []

    def generate(self, prompts, max_new_tokens, exact=True):
        self.calls.append((len(prompts), max_new_tokens, exact))
        texts = [self.tokenizer.decode(p, skip_special_tokens=True) for p in prompts]
        return ["  \n" if "single" in t else f" {t.split()[-2]} query\nsecond line" for t in texts]


def test_generated_queries_keep_documents_whole_and_follow_the_seed(tmp_path, tiny_llm):
    from transformers import AutoTokenizer

    from irdistill.adapt.pseudo import GenerationSettings, generated_queries

    docs = load_collection(write_corpus(tmp_path / "c")).docs
    backend = EchoBackend(AutoTokenizer.from_pretrained(tiny_llm))
    settings = GenerationSettings(model="echo", queries=3, seed=1, batch_size=2,
                                  max_new_tokens=7)
    queries, positives, texts, empty = generated_queries(docs, backend, settings,
                                                         show_progress=False)
    assert backend.calls == [(2, [7, 7], False), (1, [7], False)]  # up to EOS, in batches
    assert texts == {d: " ".join(t.split()) for d, t in DOCS.items()}  # documents stay whole
    assert len(queries) + empty == 3 and set(positives.values()) <= set(DOCS)
    for qid, doc in positives.items():  # the first line of the answer, cleaned
        assert queries[qid].endswith(" query") and "second" not in queries[qid]
        assert queries[qid].split()[0] == DOCS[doc].split()[-1]  # echoes its own document
    again = generated_queries(docs, EchoBackend(backend.tokenizer), settings, show_progress=False)
    assert again == (queries, positives, texts, empty)
    picks = {tuple(generated_queries(docs, EchoBackend(backend.tokenizer), GenerationSettings(
        model="echo", queries=2, seed=s), show_progress=False)[1].values()) for s in range(6)}
    assert len(picks) > 1  # the seed chooses the documents
    with pytest.raises(IrdistillError, match="no {document}"):
        GenerationSettings(model="m", prompt="Query:").check()


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_the_command_writes_queries_with_a_real_model(tmp_path, tiny_llm, tiny_t5, kind):
    """A random T5 (the document alone as input) and a random causal LM (prompted) write the
    queries through the LLM teacher's transformers backend; their answers are noise, but exactly
    the model's greedy answers, the same on a second run."""
    from irdistill.teachers.llm import TransformersBackend

    model = tiny_t5 if kind == "seq2seq" else tiny_llm
    corpus = write_corpus(tmp_path / "c")
    runner = CliRunner()
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = runner.invoke(app, ["pseudo-queries", str(corpus), "-o", str(out), "--queries",
                                     "3", "--generator", model, "--max-new-tokens", "6",
                                     "--device", "cpu", "--seed", "2"])
        assert result.exit_code == 0, result.output
        outs.append(out)
    assert (outs[0] / "queries.tsv").read_text() == (outs[1] / "queries.tsv").read_text()
    pseudo = load_collection(outs[0])
    assert 1 <= len(pseudo.queries) <= 3
    backend = TransformersBackend.from_pretrained(model, device="cpu")
    assert backend.seq2seq == (kind == "seq2seq")
    qid = sorted(pseudo.queries)[0]
    (doc,) = pseudo.qrels[qid]
    text = " ".join(DOCS[doc].split())
    prompt = text if kind == "seq2seq" else f"Write a short search query that the following " \
        f"document answers.\nDocument: {text}\nQuery:"
    (answer,) = backend.generate([backend.tokenizer(prompt)["input_ids"]], [6], exact=False)
    assert pseudo.queries[qid] == " ".join(answer.strip().splitlines()[0].split())
    assert pseudo.docs.get_many([doc])[doc] == text


def test_a_seq2seq_generator_goes_to_transformers_and_prompts_are_checked(tiny_t5, monkeypatch):
    import irdistill.teachers.llm as llm
    from irdistill.adapt.pseudo import GenerationSettings

    monkeypatch.setattr(llm, "vllm_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr(llm.TransformersBackend, "from_pretrained",
                        classmethod(lambda cls, name, **kwargs: ("transformers", name)))
    assert llm.load_backend(tiny_t5, "auto") == ("transformers", tiny_t5)  # not vLLM
    with pytest.raises(IrdistillError, match="sequence-to-sequence model.*vLLM"):
        llm.load_backend(tiny_t5, "vllm")
    with pytest.raises(IrdistillError, match="a field other than"):
        GenerationSettings(model="m", prompt="{document} {query}").check()
    GenerationSettings(model="m", prompt="{{json}} {document}").check()  # doubled braces are text
