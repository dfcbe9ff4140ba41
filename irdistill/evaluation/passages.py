"""Long documents scored by their passages: MaxP and FirstP (Dai & Callan 2019, arXiv 1905.09217).

Each candidate document is cut into overlapping windows of ``length`` words, ``stride`` words
apart (150 and 75 by default, as Dai & Callan and PyTerrier's ``pt.text.sliding``); the
cross-encoder scores every (query, passage) pair once, and the document's score is the best
passage's (MaxP) or the first passage's (FirstP). One scoring pass gives both.

Windows are cut on whitespace words rather than model tokens so that passages, and thus
results, do not depend on the backbone's tokenizer; the model then truncates each (query,
passage) pair as it truncates any pair (``model.truncation``: the passage to its
``max_doc_length``, or the pair to its budget). The splitting is a few lines, so it is written here rather than
pulling in PyTerrier (and Java) for ``pt.text.sliding``.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from irdistill.data.collection import Collection, DocStore
from irdistill.data.trec import Run, ranked
from irdistill.errors import IrdistillError, unknown_name
from irdistill.rerank.scoring import rerank_run

AGGREGATIONS = ("maxp", "firstp")
SEPARATOR = "%p"  # passage id = document id + SEPARATOR + passage number


@dataclass
class PassageSettings:
    """How long documents are cut and how passage scores become a document score."""

    length: int = 150  # words per passage
    stride: int = 75  # words between the starts of consecutive passages
    aggregate: list[str] = field(default_factory=lambda: list(AGGREGATIONS))

    def check(self) -> PassageSettings:
        if self.length < 1 or self.stride < 1:
            raise IrdistillError(f"passage length and stride must be positive, got "
                                 f"length={self.length} stride={self.stride}")
        if self.stride > self.length:
            raise IrdistillError(f"passage stride {self.stride} exceeds the length {self.length}"
                                 ": words between passages would never be scored",
                                 hint="use a stride <= the length")
        if not self.aggregate:
            raise IrdistillError("passages: give at least one aggregation",
                                 hint=f"one of {', '.join(AGGREGATIONS)}")
        for name in self.aggregate:
            if name not in AGGREGATIONS:
                raise unknown_name("passage aggregation", name, AGGREGATIONS)
        return self


def split_passages(text: str, length: int = 150, stride: int = 75) -> list[str]:
    """Windows of ``length`` words every ``stride`` words; the last one ends at the text's end.

    A text of at most ``length`` words is one passage; an empty text gives one empty passage.
    """
    words = text.split()
    if len(words) <= length:
        return [" ".join(words)]
    passages = []
    start = 0
    while True:
        passages.append(" ".join(words[start:start + length]))
        if start + length >= len(words):
            return passages
        start += stride


class MemoryDocStore(DocStore):
    """Texts held in memory (the passages of a run's candidate documents)."""

    def __init__(self, texts: dict[str, str]):
        self.texts = texts

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        return {d: self.texts[d] for d in doc_ids}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.texts.items())

    def __len__(self) -> int:
        return len(self.texts)


def passage_collection(collection: Collection, run: Run, depth: int,
                       settings: PassageSettings) -> tuple[Collection, Run]:
    """A collection of the passages of each query's top-``depth`` documents, and the run of
    (query, passage) pairs to score (every passage of every candidate)."""
    candidates = {q: [d for d, _ in ranked(docs, depth)] for q, docs in run.items()}
    doc_ids = sorted({d for ds in candidates.values() for d in ds})
    texts: dict[str, str] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(doc_ids), 4096):
        chunk = doc_ids[start:start + 4096]
        for doc_id, text in collection.docs.get_many(chunk).items():
            parts = split_passages(text, settings.length, settings.stride)
            counts[doc_id] = len(parts)
            for i, part in enumerate(parts):
                texts[f"{doc_id}{SEPARATOR}{i}"] = part
    passage_run: Run = {}
    for q, ds in candidates.items():
        # every passage of the query's candidates is scored; the rank value is irrelevant
        passage_run[q] = {f"{d}{SEPARATOR}{i}": float(-r) for r, d in enumerate(ds)
                          for i in range(counts[d])}
    coll = Collection(f"{collection.name}#passages", MemoryDocStore(texts), collection.queries,
                      collection.qrels)
    return coll, passage_run


def aggregate_passages(passage_scores: Run, how: str) -> Run:
    """Document scores from passage scores: the maximum (``maxp``) or passage 0 (``firstp``)."""
    if how not in AGGREGATIONS:
        raise unknown_name("passage aggregation", how, AGGREGATIONS)
    out: Run = {}
    for q, scores in passage_scores.items():
        docs: dict[str, float] = {}
        for pid, score in scores.items():
            doc_id, _, number = pid.rpartition(SEPARATOR)
            if how == "firstp":
                if number == "0":
                    docs[doc_id] = score
            elif doc_id not in docs or score > docs[doc_id]:
                docs[doc_id] = score
        out[q] = docs
    return out


def rerank_passages(model, collection: Collection, run: Run, depth: int,
                    settings: PassageSettings, batch_size: int = 64,
                    show_progress: bool = True) -> dict[str, Run]:
    """Re-rank the top-``depth`` of ``run`` by passages; ``{aggregation: document run}``."""
    settings.check()
    coll, passage_run = passage_collection(collection, run, depth, settings)
    scores = rerank_run(model, coll, passage_run, depth=len(coll.docs) + 1,
                        batch_size=batch_size, show_progress=show_progress)
    return {how: aggregate_passages(scores, how) for how in settings.aggregate}
