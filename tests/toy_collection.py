"""A toy collection in the plain-folder layout (docs.tsv, queries.tsv, qrels.txt) plus a
candidate run: 24 documents on 8 topics, one question per topic, the topic's first document
judged relevant, and a run of 10 candidates per query. Small enough for tests that start
several processes, real enough for every reader and command."""
from __future__ import annotations

from pathlib import Path

from tiny_models import QUESTIONS, TOPICS


def write_toy_collection(folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    topics = list(TOPICS)
    with open(folder / "docs.tsv", "w", encoding="utf-8") as handle:
        for topic, texts in TOPICS.items():
            for i, text in enumerate(texts):
                handle.write(f"{topic}-{i}\t{text}\n")
    with open(folder / "queries.tsv", "w", encoding="utf-8") as handle:
        for topic, question in QUESTIONS.items():
            handle.write(f"q-{topic}\t{question}\n")
    with open(folder / "qrels.txt", "w", encoding="utf-8") as handle:
        for topic in QUESTIONS:
            handle.write(f"q-{topic} 0 {topic}-0 1\n")
    run = folder.parent / f"{folder.name}-run.trec"
    with open(run, "w", encoding="utf-8") as handle:
        for qi, topic in enumerate(QUESTIONS):
            docs = [f"{topic}-{i}" for i in range(3)]
            docs += [f"{topics[(qi + k) % len(topics)]}-{k % 3}" for k in range(1, 8)]
            for rank, doc in enumerate(docs, start=1):
                handle.write(f"q-{topic} Q0 {doc} {rank} {20 - rank} bm25\n")
    return {"folder": folder, "run": run, "docs": folder / "docs.tsv",
            "queries": folder / "queries.tsv", "qrels": folder / "qrels.txt"}


class Untouchable(dict):
    """Queries or qrels that fail on any use: a collection built with them proves that a step
    reads only its documents."""

    def _fail(self, *args, **kwargs):
        raise AssertionError("the target's queries or judgements were read")

    def __getattribute__(self, name):
        object.__getattribute__(self, "_fail")()

    __len__ = __bool__ = __iter__ = __contains__ = __getitem__ = _fail
