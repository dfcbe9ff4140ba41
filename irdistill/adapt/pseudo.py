"""Pseudo-queries from an unlabelled target corpus, for training a re-ranker on a new domain
without labels: cut from the documents (inverse cloze), or written by a language model
(doc2query, :class:`GenerationSettings`) where one is available.

The inverse cloze task (Lee et al., "Latent Retrieval for Weakly Supervised Open Domain
Question Answering", ACL 2019): a sentence of a document is a query whose positive is the
document it came from. As in that paper the sentence is removed from its document
(``keep_fraction`` of the time it stays, 0.1 there), so that the query is not a verbatim
substring of its positive and a model has to match meaning, not copy text.

The result is a training collection in the plain-folder layout that every command reads:
``docs.tsv`` (the target corpus, each source document without its sentence), ``queries.tsv``
(the pseudo-queries), ``qrels.txt`` (each pseudo-query's source document, relevance 1) and
``provenance.json``. Teachers score it (``irdistill teach ensemble FOLDER -t bm25 -t bi:minilm
--normalisation zscore``) and ``irdistill train`` trains on it, as on any labelled collection.
Only the target's documents are read: never its queries or judgements.

Generation (``irdistill pseudo-queries CORPUS --generator MODEL``) gives each of ``queries``
seeded documents one query written greedily by a Hugging Face sequence-to-sequence model (a
doc2query T5 reads the document alone) or causal LM (prompted with :data:`CAUSAL_PROMPT`),
through the backends of the LLM teacher (:mod:`irdistill.teachers.llm`: transformers, or vLLM on
a GPU); the documents stay whole.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from irdistill.data.collection import DocStore
from irdistill.errors import IrdistillError
from irdistill.io import atomic_write, check_output_folder, write_json
from irdistill.provenance import model_fingerprint, provenance_record
from irdistill.teachers.llm import load_backend, truncate_words

#: a sentence ends at . ! or ? followed by white space (abbreviations split too: a cut query
#: is still a query)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class ClozeSettings:
    queries: int = 1000  # pseudo-queries to make (at most one per document)
    seed: int = 0
    min_words: int = 5  # shortest sentence taken as a query
    max_words: int = 40  # longest one
    keep_fraction: float = 0.1  # how often the sentence stays in its document (Lee et al.: 0.1)

    def check(self) -> None:
        if self.queries < 1:
            raise IrdistillError(f"queries={self.queries} must be at least 1")
        if not 1 <= self.min_words <= self.max_words:
            raise IrdistillError(f"min_words={self.min_words} and max_words={self.max_words}: "
                                 "need 1 <= min_words <= max_words")
        if not 0.0 <= self.keep_fraction <= 1.0:
            raise IrdistillError(f"keep_fraction={self.keep_fraction} must be in [0, 1]")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def clean(text: str) -> str:
    """One line, single spaces: safe in a TSV field."""
    return " ".join(text.split())


def inverse_cloze(docs: DocStore, settings: ClozeSettings = ClozeSettings(),
                  show_progress: bool = True
                  ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(queries, positives, texts)``: pseudo-query id -> sentence, pseudo-query id -> its
    source document, and document id -> text (every document; a source document without its
    sentence unless kept). Deterministic for a seed and a corpus: documents are visited in a
    seeded permutation of their ids, each gives at most one query (a random sentence of
    ``min_words`` to ``max_words`` words that is not its only sentence)."""
    settings.check()
    texts = {doc_id: clean(text) for doc_id, text in tqdm(
        docs, desc="reading documents", unit="doc", disable=not show_progress)}
    if not texts:
        raise IrdistillError("the corpus has no documents")
    rng = np.random.default_rng(settings.seed)
    ids = sorted(texts)
    order = [ids[i] for i in rng.permutation(len(ids))]
    queries: dict[str, str] = {}
    positives: dict[str, str] = {}
    for doc_id in order:
        if len(queries) == settings.queries:
            break
        parts = sentences(texts[doc_id])
        usable = [i for i, s in enumerate(parts)
                  if settings.min_words <= len(s.split()) <= settings.max_words]
        if len(parts) < 2 or not usable:  # the document would be left empty, or no sentence
            continue
        pick = usable[int(rng.integers(len(usable)))]
        qid = f"pq{len(queries)}"
        queries[qid] = parts[pick]
        positives[qid] = doc_id
        if rng.random() >= settings.keep_fraction:
            texts[doc_id] = " ".join(parts[:pick] + parts[pick + 1:])
    if not queries:
        raise IrdistillError(f"no document has a sentence of {settings.min_words}-"
                             f"{settings.max_words} words besides another sentence",
                             hint="lower min_words or raise max_words")
    return queries, positives, texts


#: the prompt of a causal LM (a sequence-to-sequence model such as doc2query's T5 reads the
#: document alone: "{document}")
CAUSAL_PROMPT = ("Write a short search query that the following document answers.\n"
                 "Document: {document}\nQuery:")


@dataclass
class GenerationSettings:
    """doc2query-style pseudo-queries (Nogueira et al., 2019): a language model writes one query
    per document, read greedily up to its end-of-sequence token or the first line break."""

    model: str  # a Hugging Face seq2seq (e.g. a doc2query T5) or causal LM: hub name or folder
    queries: int = 1000  # documents that get a query
    seed: int = 0  # which documents (a seeded permutation, as for the inverse cloze)
    prompt: str | None = None  # with {document}; default: the document (seq2seq), CAUSAL_PROMPT
    max_doc_words: int = 200  # document words in the prompt
    max_new_tokens: int = 32
    batch_size: int = 16
    backend: str = "auto"  # transformers, or vllm where installed (causal LMs)
    precision: str | None = None
    device: str | None = None

    def check(self) -> None:
        if self.queries < 1:
            raise IrdistillError(f"queries={self.queries} must be at least 1")
        for name in ("max_doc_words", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise IrdistillError(f"{name}={getattr(self, name)} must be at least 1")
        if self.prompt is not None:
            if "{document}" not in self.prompt:
                raise IrdistillError("the prompt has no {document} in it",
                                     hint="e.g. --prompt 'Document: {document}\\nQuery:'")
            try:
                self.prompt.format(document="")
            except (KeyError, IndexError, ValueError) as exc:
                raise IrdistillError(f"the prompt has a field other than {{document}}: {exc}",
                                     hint="double other braces: {{ and }}") from None


def generated_queries(docs: DocStore, backend, settings: GenerationSettings,
                      show_progress: bool = True
                      ) -> tuple[dict[str, str], dict[str, str], dict[str, str], int]:
    """``(queries, positives, texts, empty)``: like :func:`inverse_cloze`, with the query written
    by ``backend`` (:func:`irdistill.teachers.llm.load_backend`) from each chosen document, which
    stays as it is; ``empty`` counts the documents whose answer was empty (no query)."""
    settings.check()
    texts = {doc_id: clean(text) for doc_id, text in tqdm(
        docs, desc="reading documents", unit="doc", disable=not show_progress)}
    ids = sorted(d for d, text in texts.items() if text)
    if not ids:
        raise IrdistillError("the corpus has no document text")
    rng = np.random.default_rng(settings.seed)
    chosen = [ids[i] for i in rng.permutation(len(ids))[:settings.queries]]
    seq2seq = getattr(backend, "seq2seq", False)
    prompt = settings.prompt or ("{document}" if seq2seq else CAUSAL_PROMPT)
    tokenizer = backend.tokenizer
    queries: dict[str, str] = {}
    positives: dict[str, str] = {}
    empty = 0
    for start in tqdm(range(0, len(chosen), settings.batch_size), desc="writing queries",
                      unit="batch", disable=not show_progress):
        batch = chosen[start:start + settings.batch_size]
        prompts = [tokenizer(prompt.format(document=truncate_words(texts[d],
                                                                   settings.max_doc_words)),
                             truncation=True)["input_ids"] for d in batch]
        answers = backend.generate(prompts, [settings.max_new_tokens] * len(batch), exact=False)
        for doc_id, answer in zip(batch, answers):
            lines = [line for line in answer.strip().splitlines() if line.strip()]
            query = clean(lines[0]) if lines else ""
            if not query:
                empty += 1
                continue
            qid = f"pq{len(queries)}"
            queries[qid] = query
            positives[qid] = doc_id
    if not queries:
        raise IrdistillError(f"the model '{settings.model}' wrote no query for any of "
                             f"{len(chosen)} documents", hint="check the prompt and the model")
    return queries, positives, texts, empty


def write_pseudo_collection(source: str, docs: DocStore, output: str | Path,
                            settings: ClozeSettings | GenerationSettings = ClozeSettings(),
                            show_progress: bool = True, backend=None) -> dict[str, int]:
    """Write the pseudo-query training collection of ``docs`` to ``output`` (see the module
    docstring): inverse-cloze queries, or with :class:`GenerationSettings` queries written by a
    language model (``backend``, else loaded from the settings). Return counts. A finished
    folder is refused, never mixed."""
    output = Path(output)
    check_output_folder(output)
    if (output / "queries.tsv").exists():
        raise IrdistillError("the folder already holds a pseudo-query collection", path=output,
                             hint="choose a new output folder or delete this one")
    if isinstance(settings, GenerationSettings):
        settings.check()
        backend = backend or load_backend(settings.model, settings.backend,
                                          batch_size=settings.batch_size,
                                          device=settings.device, precision=settings.precision)
        queries, positives, texts, empty = generated_queries(docs, backend, settings,
                                                             show_progress)
        method, counts = "generated", {"empty_answers": empty}
        config = {**asdict(settings), "model_fingerprint": model_fingerprint(settings.model)}
    else:
        queries, positives, texts = inverse_cloze(docs, settings, show_progress)
        # exact against the source texts (a sentence can also stand elsewhere in its document,
        # as Cranfield's titles repeat their first sentence): one read of the positives only
        method, config = "inverse cloze", asdict(settings)
        counts = {"sentences_removed": sum(texts[d] != clean(t) for d, t in
                                           docs.get_many(positives.values()).items())}
    output.mkdir(parents=True, exist_ok=True)
    with atomic_write(output / "docs.tsv") as handle:
        for doc_id, text in texts.items():
            handle.write(f"{doc_id}\t{text}\n")
    with atomic_write(output / "qrels.txt") as handle:
        for qid, doc_id in positives.items():
            handle.write(f"{qid} 0 {doc_id} 1\n")
    counts = {"documents": len(texts), "queries": len(queries), **counts}
    write_json(output / "provenance.json", provenance_record(
        kind="pseudo-queries", method=method, source=source, config=config, counts=counts))
    with atomic_write(output / "queries.tsv") as handle:  # last: the folder is complete
        for qid, text in queries.items():
            handle.write(f"{qid}\t{text}\n")
    return counts
