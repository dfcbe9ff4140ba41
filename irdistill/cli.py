"""The ``irdistill`` command: a thin shell over the library.

Each command parses its arguments, makes one library call and prints the result. A user
error (:class:`irdistill.IrdistillError`) prints one ``error:`` line and exits with status 2;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import functools
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from irdistill.errors import IrdistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, distil and compare neural re-rankers and sparse retrievers.")
STATE = {"debug": False}
log = logging.getLogger("irdistill")


@app.callback()
def _global(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]
            = False,
            verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")]
            = False) -> None:
    from irdistill.utils import setup_logging

    STATE["debug"] = debug
    setup_logging(verbose)


def command(fn):
    """Register a command whose IrdistillError becomes one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IrdistillError as exc:
            if STATE["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return app.command()(wrapper)


def _print_table(rows: dict[str, dict[str, float]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    measures = list(dict.fromkeys(m for r in rows.values() for m in r))
    table = Table(title=title)
    table.add_column("system")
    for m in measures:
        table.add_column(m, justify="right")
    for name, values in rows.items():
        table.add_row(name, *(f"{values[m]:.4f}" if m in values else "-" for m in measures))
    Console().print(table)


@command
def retrieve(
    collection: Annotated[str, typer.Argument(help="ir_datasets id, BEIR folder or plain folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="TREC run to write.")],
    k: Annotated[int, typer.Option(help="Documents per query.")] = 100,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    k1: Annotated[float, typer.Option(help="BM25 k1.")] = 1.5,
    b: Annotated[float, typer.Option(help="BM25 b.")] = 0.75,
    stemmer: Annotated[Optional[str], typer.Option(help="Stemmer language, e.g. english.")]
    = None,
) -> None:
    """BM25 first stage (bm25s): write the top-k of every query as a TREC run."""
    from irdistill.data.collection import load_collection
    from irdistill.retrieval.bm25 import BM25Settings, write_bm25_run

    coll = load_collection(collection, split)
    run = write_bm25_run(output, coll, k, BM25Settings(k1=k1, b=b, stemmer=stemmer))
    typer.echo(f"wrote {sum(len(d) for d in run.values())} results for {len(run)} queries "
               f"to {output}")


@command
def train(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("runs/train"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key, e.g. --set train.lr=1e-5 (repeatable).")] = None,
) -> None:
    """Train a cross-encoder; an interrupted run resumes from its last checkpoint."""
    from irdistill.config import load_config
    from irdistill.train.engine import train as train_model

    cfg = load_config(config, set_)
    model_dir = train_model(cfg, output)
    typer.echo(f"model saved to {model_dir}")


@command
def rerank(
    model: Annotated[str, typer.Argument(help="Model folder, hub name, or 'minilm'.")],
    collection: Annotated[str, typer.Argument(help="ir_datasets id, BEIR folder or plain folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Re-ranked TREC run to write.")],
    run: Annotated[Optional[Path], typer.Option(help="Candidate run (default: BM25 top-depth).")]
    = None,
    depth: Annotated[int, typer.Option(help="Documents per query to re-rank.")] = 100,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    batch_size: Annotated[int, typer.Option(help="Pairs per batch.")] = 64,
    precision: Annotated[Optional[str], typer.Option(help="fp32, bf16 or fp16.")] = None,
    max_doc_length: Annotated[Optional[int], typer.Option(help="Document tokens kept.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ... (default: best).")]
    = None,
) -> None:
    """Re-rank the top of a run with a cross-encoder and write the new run."""
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run, write_run
    from irdistill.evaluation.rerank import rerank_run
    from irdistill.models.cross_encoder import CrossEncoder

    ce = CrossEncoder.from_pretrained(model, max_doc_length=max_doc_length, device=device,
                                      precision=precision)
    candidates = read_run(run, depth=depth) if run is not None else None
    coll = load_collection(collection, split)
    if candidates is None:
        from irdistill.retrieval.bm25 import bm25_run

        candidates = bm25_run(coll, depth)
    out = rerank_run(ce, coll, candidates, depth=depth, batch_size=batch_size)
    write_run(output, out, tag="irdistill")
    typer.echo(f"wrote re-ranked run of {len(out)} queries to {output}")


@command
def evaluate(
    run: Annotated[Path, typer.Argument(help="TREC run file.")],
    qrels: Annotated[str, typer.Option(help="Qrels file, or an ir_datasets id / collection folder.")],
    measures: Annotated[Optional[list[str]], typer.Option(
        "--measures", "-m", help="ir_measures names, e.g. -m nDCG@10 -m RR@10 (or one "
                                 "space-separated string).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write aggregate and "
                                                      "per-query values here.")] = None,
) -> None:
    """Evaluate a run with ir_measures."""
    from irdistill.data.collection import load_qrels
    from irdistill.data.trec import read_run
    from irdistill.evaluation.metrics import DEFAULT_MEASURES, evaluate as evaluate_run
    from irdistill.io import write_json

    names = [m for item in (measures or DEFAULT_MEASURES) for m in item.split()]
    result = evaluate_run(read_run(run), load_qrels(qrels), names)
    if json_path is not None:
        write_json(json_path, result.to_json())
    _print_table({run.name: result.aggregate})
    if result.missing:
        typer.echo(f"{len(result.missing)} judged queries are missing from the run (scored 0)")
    if result.unjudged:
        typer.echo(f"{len(result.unjudged)} run queries have no judgements (not evaluated)")


@command
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("demo-output"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a key of the demo's training config (repeatable).")] = None,
) -> None:
    """Offline demo: train a MiniLM re-ranker on SciFact and compare it with BM25."""
    from irdistill.demo import run_demo

    results = run_demo(output, overrides=set_)
    _print_table(results, title="BEIR SciFact test")
    typer.echo(f"results written to {output / 'results.json'}")


# -- SPLADE sparse retrievers and their domain adaptation -------------------------------------
splade_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="SPLADE sparse retrievers: train, index a corpus, search it.")
app.add_typer(splade_app, name="splade")


def _splade_command(fn):
    """Register a ``splade`` sub-command with the same error handling as :func:`command`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IrdistillError as exc:
            if STATE["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return splade_app.command(fn.__name__.removeprefix("splade_"))(wrapper)


@_splade_command
def splade_train(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("runs/splade"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key, e.g. --set lambda_d=1e-3 (repeatable).")] = None,
) -> None:
    """Train a SPLADE model (ranking loss + FLOPS regularisation); resumes when interrupted."""
    from irdistill.train.splade import load_splade_config, train_splade

    model_dir = train_splade(load_splade_config(config, set_), output)
    typer.echo(f"model saved to {model_dir}")


@_splade_command
def splade_index(
    model: Annotated[str, typer.Argument(help="SPLADE model folder (or any masked LM).")],
    collection: Annotated[str, typer.Argument(help="ir_datasets id, BEIR folder or plain folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index folder to create.")],
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    batch_size: Annotated[int, typer.Option(help="Documents per encoding batch.")] = 32,
    chunk_docs: Annotated[int, typer.Option(help="Documents per on-disk chunk of postings "
                                                 "(bounds memory).")] = 16384,
    max_doc_length: Annotated[Optional[int], typer.Option(help="Document tokens kept.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 or bf16.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index.")] = False,
) -> None:
    """Encode a corpus with a SPLADE model into an exact inverted index on disk."""
    from irdistill.data.collection import load_collection
    from irdistill.models.splade import Splade
    from irdistill.retrieval.sparse_index import build_splade_index

    coll = load_collection(collection, split)
    splade = Splade.from_pretrained(model, max_doc_length=max_doc_length, precision=precision)
    index = build_splade_index(splade, coll, output, batch_size=batch_size,
                               chunk_docs=chunk_docs, overwrite=overwrite, model_name=model)
    stats = index.stats()
    typer.echo(f"indexed {stats.docs} documents: {stats.postings} postings "
               f"({stats.postings_per_doc:.1f} per document, {stats.terms} terms), "
               f"{stats.bytes / 2**20:.1f} MB in {output}")


@_splade_command
def splade_search(
    model: Annotated[str, typer.Argument(help="The SPLADE model that built the index.")],
    index: Annotated[Path, typer.Argument(help="Index folder.")],
    collection: Annotated[str, typer.Argument(help="Collection whose queries are searched.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="TREC run to write.")],
    k: Annotated[int, typer.Option(help="Documents per query.")] = 100,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    batch_size: Annotated[int, typer.Option(help="Queries per encoding batch.")] = 64,
    precision: Annotated[Optional[str], typer.Option(help="fp32 or bf16.")] = None,
) -> None:
    """Search a SPLADE index with a collection's queries (exact top-k) and write a TREC run."""
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import write_run
    from irdistill.models.splade import Splade
    from irdistill.retrieval.sparse_index import SparseIndex
    from irdistill.retrieval.sparse_index import splade_search as search

    sparse_index = SparseIndex.load(index)
    coll = load_collection(collection, split)
    splade = Splade.from_pretrained(model, precision=precision)
    run, timing = search(splade, sparse_index, coll.queries, k=k, batch_size=batch_size)
    write_run(output, run, tag="splade")
    typer.echo(f"wrote {sum(len(d) for d in run.values())} results for {len(run)} queries to "
               f"{output} ({timing.search_qps:.0f} queries/s searching, "
               f"{timing.total_qps:.1f} queries/s with query encoding)")


@command
def adapt(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("runs/adapt"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key, e.g. --set layers=2 --set target=cranfield "
                      "(repeatable).")] = None,
) -> None:
    """Adapt SPLADE to an unlabelled target corpus (MLM of the lower layers, recombination)."""
    from irdistill.adapt.recipe import AdaptConfig, adapt as run_adapt
    from irdistill.config import load_config

    report = run_adapt(load_config(config, set_, cls=AdaptConfig), output)
    if report["results"]:
        _print_table({name: r["measures"] for name, r in report["results"].items()},
                     title=f"SPLADE on the target, domain layers k={report['layers']}")
    typer.echo(f"adapted model: {report['models']['adapted']}")


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
