"""Bad input, command by command: one clear `error:` line (file and line, or the value; what is
wrong; how to fix it, with the close match for a typo), exit status 2, no traceback, and nothing
written: every case compares the files under its folder before and after the command.

Each row of CASES is (id, a function that prepares the inputs and returns the arguments, the key
words of the message). The inputs are a toy plain-folder collection with its run
(tests/toy_collection.py), a small BEIR folder and a tiny BERT.
"""
import json
import shutil
from pathlib import Path

import pytest
from conftest import DL19
from toy_collection import write_toy_collection
from typer.testing import CliRunner

from irdistill.cli import app

runner = CliRunner()
GOOD_RUN = "q-bees Q0 bees-0 1 2.0 t\n"


class Env:
    def __init__(self, root: Path, beir: Path, model: str):
        self.root = root
        self.beir = beir
        self.model = model
        self.toy = write_toy_collection(root / "toy")
        self.folder = self.toy["folder"]
        self.out = root / "out.trec"  # every output goes to root: any new file is a leftover
        self.out_dir = root / "out"

    def write(self, name: str, content) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def folder_with(self, name: str, **files) -> Path:
        """A copy of the toy collection with some files replaced (None: removed)."""
        folder = self.root / name
        shutil.copytree(self.folder, folder)
        for file, content in files.items():
            file = file.replace("_", ".", 1)
            if content is None:
                (folder / file).unlink()
            elif isinstance(content, bytes):
                (folder / file).write_bytes(content)
            else:
                (folder / file).write_text(content, encoding="utf-8")
        return folder

    def model_without(self, *names: str, truncate: str | None = None) -> Path:
        folder = self.root / "model"
        shutil.copytree(self.model, folder)
        for name in names:
            (folder / name).unlink()
        if truncate:
            data = (folder / truncate).read_bytes()
            (folder / truncate).write_bytes(data[:200])
        return folder

    # -- commands ------------------------------------------------------------------------
    def evaluate(self, run=None, qrels=None, *extra):
        return ["evaluate", run or self.toy["run"], "--qrels", qrels or self.toy["qrels"], *extra]

    def retrieve(self, collection=None, *extra):
        return ["retrieve", collection or self.folder, "--output", self.out, "--k", 5, *extra]

    def rerank(self, model=None, run=None, collection=None, *extra):
        return ["rerank", model or self.model, collection or self.folder, "--run",
                run or self.toy["run"], "--depth", 5, "--output", self.out, "--device", "cpu",
                *extra]

    def train(self, *sets, config=None):
        base = [f"model.name={self.model}", f"data.collection={self.folder}",
                f"data.run={self.toy['run']}", "data.negatives=3", "train.max_steps=1",
                "model.max_doc_length=32"]
        args = ["train", *([config] if config else []), "--output", self.out_dir]
        for item in base + list(sets):
            args += ["--set", item]
        return args

    def grid(self, text: str, *extra):
        return ["experiment", "run", self.write("grid.yaml", text), *extra]

    def grid_text(self, base_extra: str = "", top_extra: str = "", axes: str = "",
                  suites: str = "[toy]", measures: str = "[nDCG@10]"):
        return f"""
name: bad
base:
  data: {{collection: {self.folder}, run: {self.toy['run']}, negatives: 3{base_extra}}}
  model: {{name: {self.model}, max_doc_length: 32}}
  train: {{max_steps: 1, batch_size: 2}}
axes:
  seed: [1, 2]
{axes}
suites: {suites}
suite_definitions:
  toy:
    datasets: [{{id: {self.folder}, name: toy}}]
    measures: {measures}
    depth: 5
output: {self.out_dir}
{top_extra}
"""


def bad_run(e, text):
    return e.evaluate(e.write("bad.trec", text))


def triples(e, *lines):
    """Train on a triple file whose lines are given with spaces for tabs."""
    path = e.write("t.tsv", "".join(line.replace(" ", "\t") + "\n" for line in lines))
    return e.train("data.mode=triples", "loss=margin_mse", f"data.triples={path}")


CASES = [
    # -- runs (evaluate, rerank --run, data.run) ------------------------------------------
    ("run: wrong column count", lambda e: bad_run(e, GOOD_RUN + "q-bees Q0 bees-1 2 1.0\n"),
     ["bad.trec, line 2", "expected 6 columns", "found 5"]),
    ("run: score not a number", lambda e: bad_run(e, GOOD_RUN + "q-bees Q0 bees-1 2 high t\n"),
     ["bad.trec, line 2", "score 'high' is not a number"]),
    ("run: score not finite", lambda e: bad_run(e, GOOD_RUN + "q-bees Q0 bees-1 2 nan t\n"),
     ["line 2", "not finite"]),
    ("run: duplicate pair", lambda e: bad_run(e, GOOD_RUN + "q-bees Q0 bees-0 2 1.0 t\n"),
     ["bad.trec, line 2", "'bees-0' appears twice for query 'q-bees'", "remove the duplicate"]),
    ("run: invalid UTF-8", lambda e: bad_run(e, GOOD_RUN.encode() + b"q-bees Q0 b\xe9 2 1 t\n"),
     ["bad.trec, line 2", "invalid UTF-8", "re-encode"]),
    ("run: empty file", lambda e: bad_run(e, ""), ["bad.trec", "run file is empty"]),
    ("run: blank lines only", lambda e: bad_run(e, "\n\n"), ["no ranked documents"]),
    ("run: a directory", lambda e: e.evaluate(e.root / "toy"),
     ["expected a run file, found a directory"]),
    ("run: not found", lambda e: e.evaluate(e.root / "nope.trec"),
     ["nope.trec", "run file not found"]),
    ("rerank: run documents absent from the corpus",
     lambda e: e.rerank(run=e.write("r.trec", GOOD_RUN + "q-bees Q0 unicorn-9 2 1 t\n")),
     ["1 document id(s) not in the collection", "unicorn-9", "does not belong"]),
    ("rerank: run queries absent from the collection",
     lambda e: e.rerank(run=e.write("r.trec", "q-nope Q0 bees-0 1 1 t\n")),
     ["query 'q-nope' is not in collection"]),
    ("train: run documents absent from the corpus",
     lambda e: e.train(f"data.run={e.write('r.trec', GOOD_RUN + 'q-bees Q0 unicorn-9 2 1 t')}",
                       "data.sampling=all"),
     ["not in the collection", "unicorn-9"]),
    ("train: data.run not found", lambda e: e.train(f"data.run={e.root / 'nope.trec'}"),
     ["nope.trec", "data.run file not found"]),
    # -- qrels ----------------------------------------------------------------------------
    ("qrels: wrong column count", lambda e: e.evaluate(qrels=e.write("q.txt", "q-bees 0 1\n")),
     ["q.txt, line 1", "expected 4 columns"]),
    ("qrels: relevance not an integer",
     lambda e: e.evaluate(qrels=e.write("q.txt", "q-bees 0 bees-0 yes\n")),
     ["q.txt, line 1", "relevance 'yes' is not an integer"]),
    ("qrels: a pair judged twice differently",
     lambda e: e.evaluate(qrels=e.write("q.txt", "q-bees 0 bees-0 1\nq-bees 0 bees-0 0\n")),
     ["q.txt, line 2", "judged twice", "different labels"]),
    ("qrels: no query in common with the run",
     lambda e: e.evaluate(qrels=e.write("q.txt", "other 0 bees-0 1\n")),
     ["no query of the run has relevance judgements"]),
    ("qrels: BEIR tsv not an integer",
     lambda e: e.evaluate(qrels=e.write("q.tsv", "query-id\tcorpus-id\tscore\nq-bees\tb\tx\n")),
     ["q.tsv, line 2", "relevance 'x' is not an integer"]),
    ("qrels: unknown dataset id", lambda e: e.evaluate(None, "beir/scifakt/test"),
     ["unknown dataset id 'beir/scifakt/test'", "did you mean 'beir/scifact/test'"]),
    # -- measures and outputs of evaluate -------------------------------------------------
    ("measure: typo", lambda e: e.evaluate(None, None, "-m", "nDGC@10"),
     ["unknown measure 'nDGC@10'", "did you mean 'nDCG@10'"]),
    ("measure: wrong case", lambda e: e.evaluate(None, None, "-m", "ndcg@10"),
     ["unknown measure 'ndcg@10'", "did you mean 'nDCG@10'"]),
    ("evaluate: --json is a directory",
     lambda e: e.evaluate(None, None, "--json", e.root / "toy"), ["is a directory"]),
    # -- collections: BEIR folders, TSV/JSONL corpora, queries ------------------------------
    ("beir: corpus line not JSON",
     lambda e: ["retrieve", e.beir_copy(corpus='{"_id": "d1", "text": "a"}\n{oops\n'),
                "--output", e.out],
     ["corpus.jsonl, line 2", "expected a JSON object"]),
    ("beir: queries.jsonl missing",
     lambda e: ["retrieve", e.beir_copy(remove="queries.jsonl"), "--output", e.out],
     ["queries.jsonl", "queries file not found"]),
    ("beir: unknown split", lambda e: ["retrieve", e.beir_copy(), "--split", "dev",
                                       "--output", e.out],
     ["no qrels for split 'dev'", "available splits: test, train"]),
    ("beir: document id twice",
     lambda e: ["retrieve", e.beir_copy(corpus='{"_id": "d1", "text": "a"}\n'
                                               '{"_id": "d1", "text": "b"}\n'),
                "--output", e.out], ["corpus.jsonl, line 2", "'d1' appears twice"]),
    ("tsv: wrong column count",
     lambda e: e.retrieve(e.folder_with("c", docs_tsv="d1\tfine\nd2 no tab\n")),
     ["docs.tsv, line 2", "expected 2 tab-separated columns"]),
    ("tsv: invalid UTF-8",
     lambda e: e.retrieve(e.folder_with("c", docs_tsv=b"d1\tfine\nd2\tcaf\xe9\n")),
     ["docs.tsv, line 2", "invalid UTF-8"]),
    ("tsv: document id with a space",
     lambda e: e.retrieve(e.folder_with("c", docs_tsv="d 1\tfine\n")),
     ["docs.tsv, line 1", "contains whitespace"]),
    ("jsonl: text not a string",
     lambda e: e.retrieve(e.folder_with("c", docs_tsv=None,
                                        docs_jsonl='{"_id": "d1", "text": ["a"]}\n')),
     ["docs.jsonl, line 1", "must be strings"]),
    ("queries: empty query text",
     lambda e: e.retrieve(e.folder_with("c", queries_tsv="q1\twhat\nq2\t  \n")),
     ["queries.tsv, line 2", "query 'q2' has empty text"]),
    ("queries: empty file", lambda e: e.retrieve(e.folder_with("c", queries_tsv="")),
     ["queries.tsv", "queries file is empty"]),
    ("queries: id twice", lambda e: e.retrieve(e.folder_with("c", queries_tsv="q1\ta\nq1\tb\n")),
     ["queries.tsv, line 2", "query id 'q1' appears twice"]),
    ("documents: empty file", lambda e: e.retrieve(e.folder_with("c", docs_tsv="")),
     ["docs.tsv", "document file is empty"]),
    ("collection: a file", lambda e: e.retrieve(e.toy["run"]),
     ["expected a collection folder or an ir_datasets id, found a file"]),
    ("collection: folder not found", lambda e: e.retrieve(str(e.root / "nope")),
     ["collection folder not found"]),
    ("collection: neither layout", lambda e: e.retrieve(e.folder_with("c", docs_tsv=None)),
     ["neither a BEIR folder", "docs.tsv"]),
    ("dataset id: typo", lambda e: ["retrieve", "beir/scifakt/test", "--output", e.out],
     ["unknown dataset id 'beir/scifakt/test'", "did you mean 'beir/scifact/test'"]),
    ("retrieve: output is a directory", lambda e: e.retrieve(None) + ["--output", e.root],
     ["output run is a directory"]),
    # -- models --------------------------------------------------------------------------
    ("model: folder not found", lambda e: e.rerank(model=str(e.root / "no-model")),
     ["no-model", "not found"]),
    ("model: folder without weights", lambda e: e.rerank(model=e.model_without(
        "model.safetensors")), ["model folder has no weights", "save"]),
    ("model: folder without tokenizer", lambda e: e.rerank(model=e.model_without(
        "tokenizer.json", "tokenizer_config.json")), ["has no tokenizer", "model/ folder"]),
    ("model: truncated weights", lambda e: e.rerank(model=e.model_without(
        truncate="model.safetensors")), ["cannot load the weights", "truncated"]),
    ("model: name typo", lambda e: e.rerank(model="minlm"),
     ["cannot load model 'minlm'", "did you mean 'minilm'"]),
    ("rerank: precision typo", lambda e: e.rerank(None, None, None, "--precision", "fp33"),
     ["unknown precision 'fp33'", "did you mean 'fp32'"]),
    ("rerank: unknown device", lambda e: e.rerank(None, None, None, "--device", "gpu0"),
     ["unknown device 'gpu0'"]),
    ("rerank: depth 0", lambda e: e.rerank(None, None, None, "--depth", "0"),
     ["depth 0 must be at least 1"]),
    ("train: backbone typo", lambda e: e.train("model.name=minlm"),
     ["did you mean 'minilm'"]),
    ("train: model folder without weights",
     lambda e: e.train(f"model.name={e.model_without('model.safetensors')}"),
     ["model folder has no weights"]),
    # -- configs: keys, values, YAML -------------------------------------------------------
    ("config: key typo", lambda e: e.train("train.bacth_size=4"),
     ["unknown config key 'train.bacth_size'", "did you mean 'batch_size'"]),
    ("config: section typo", lambda e: e.train("trian.lr=1"),
     ["unknown config key 'trian'", "did you mean 'train'"]),
    ("config: wrong type", lambda e: e.train("train.lr=fast"),
     ["config.train.lr: expected float", "'fast'"]),
    ("config: loss typo", lambda e: e.train("loss=infonse"),
     ["unknown loss 'infonse'", "did you mean 'infonce'"]),
    ("config: data mode typo", lambda e: e.train("data.mode=label"),
     ["unknown data mode 'label'", "did you mean 'labels'"]),
    ("config: sampling typo", lambda e: e.train("data.sampling=randon"),
     ["unknown data.sampling 'randon'", "did you mean 'random'"]),
    ("config: precision typo", lambda e: e.train("train.precision=bf61"),
     ["unknown train.precision 'bf61'", "did you mean 'bf16'"]),
    ("config: on_nan typo", lambda e: e.train("train.on_nan=skp"),
     ["unknown train.on_nan 'skp'", "did you mean 'skip'"]),
    ("config: scheduler typo", lambda e: e.train("train.scheduler=cosin"),
     ["unknown train.scheduler 'cosin'", "did you mean 'cosine'"]),
    ("config: loss parameter typo", lambda e: e.train("loss_params.temprature=2"),
     ["loss 'infonce' has no parameter 'temprature'", "did you mean 'temperature'"]),
    ("config: batch size 0", lambda e: e.train("train.batch_size=0"),
     ["train.batch_size=0 must be at least 1"]),
    ("config: negative frozen layers", lambda e: e.train("train.freeze_domain_layers=-1"),
     ["train.freeze_domain_layers=-1 must be at least 0"]),
    ("config: more frozen layers than the model has",
     lambda e: e.train("train.freeze_domain_layers=9"), ["k=9 is out of range", "0 to 2"]),
    ("config: warmup ratio out of range", lambda e: e.train("train.warmup_ratio=1.5"),
     ["train.warmup_ratio=1.5 must be in [0, 1)"]),
    ("config: dataset id typo", lambda e: e.train("data.collection=beir/scifakt/train",
                                                  "data.run=null"),
     ["unknown dataset id 'beir/scifakt/train'", "did you mean 'beir/scifact/train'"]),
    ("yaml: invalid", lambda e: e.train(config=e.write("c.yaml", "train:\n  lr: [1e-5\n")),
     ["c.yaml, line", "invalid YAML"]),
    ("yaml: not a mapping", lambda e: e.train(config=e.write("c.yaml", "- a\n- b\n")),
     ["c.yaml", "must be a YAML mapping"]),
    ("yaml: key typo names the file", lambda e: e.train(config=e.write("c.yaml", "los: bce\n")),
     ["c.yaml", "unknown config key 'los'", "did you mean 'loss'"]),
    ("yaml: a directory", lambda e: e.train(config=e.root / "toy"),
     ["expected a config file, found a directory"]),
    ("yaml: invalid UTF-8", lambda e: e.train(config=e.write("c.yaml", b"loss: caf\xe9\n")),
     ["c.yaml", "not valid UTF-8"]),
    ("override: not key=value", lambda e: e.train("train.lr"),
     ["override 'train.lr' is not of the form key=value"]),
    ("train: output is a file", lambda e: e.train() + ["--output", e.toy["run"]],
     ["output folder is a file"]),
    # -- teacher score files and triples ----------------------------------------------------
    ("teacher run: score not a number", lambda e: e.train(
        "data.mode=teacher_scores", "data.force_positive=false",
        f"data.teacher_run={e.write('t.trec', GOOD_RUN + 'q-bees Q0 bees-1 2 x t')}"),
     ["t.trec, line 2", "score 'x' is not a number"]),
    ("teacher run: missing", lambda e: e.train("data.mode=teacher_scores"),
     ["data.mode=teacher_scores needs data.teacher_run"]),
    ("triples: wrong column count", lambda e: triples(e, "1.0 0.5 q-bees bees-0"),
     ["t.tsv, line 1", "expected 5 tab-separated columns"]),
    ("triples: score not a number",
     lambda e: triples(e, "1.0 0.5 q-bees bees-0 bees-1", "hi 0.5 q-bees bees-0 bees-1"),
     ["t.tsv, line 2", "pos_score 'hi' is not a number"]),
    ("triples: documents absent from the corpus",
     lambda e: triples(e, "1.0 0.5 q-bees bees-0 unicorn-1"),
     ["not in the collection", "unicorn-1"]),
    # -- grids and suites -------------------------------------------------------------------
    ("grid: key typo", lambda e: e.grid(e.grid_text(top_extra="suits: [toy]")),
     ["grid.yaml", "unknown grid key 'suits'", "did you mean 'suites'"]),
    ("grid: suite typo", lambda e: e.grid(e.grid_text(suites="[scifakt]")),
     ["unknown suite 'scifakt'", "did you mean 'scifact'"]),
    ("grid: loss typo in an axis", lambda e: e.grid(e.grid_text(axes="  objective: [infonse]")),
     ["unknown loss 'infonse'", "did you mean 'infonce'"]),
    ("grid: measure typo in a suite", lambda e: e.grid(e.grid_text(measures="[nDGC@10]")),
     ["unknown measure 'nDGC@10'", "did you mean 'nDCG@10'"]),
    ("grid: a cell's run file is missing",
     lambda e: e.grid(e.grid_text(axes=f"  data.run: [{e.root / 'nope.trec'}]")),
     ["cell", "nope.trec", "data.run file not found"]),
    ("suites file: unknown dataset id",
     lambda e: ["experiment", "suites", e.write("s.yaml", "mine:\n  datasets: [beir/scifakt/test]"
                                                          "\n  measures: [nDCG@10]\n")],
     ["s.yaml", "unknown dataset id 'beir/scifakt/test'", "did you mean 'beir/scifact/test'"]),
    ("compare: bad run", lambda e: ["compare", "a=" + str(e.write("bad.trec", "x y\n")),
                                    f"b={e.toy['run']}", "--qrels", e.toy["qrels"],
                                    "--output", e.out_dir],
     ["bad.trec, line 1", "expected 6 columns"]),
    ("demo: wrong type", lambda e: ["demo", "--output", e.out_dir, "--set", "train.lr=fast"],
     ["config.train.lr: expected float"]),
]


def beir_copy(self, remove: str | None = None, corpus: str | None = None) -> Path:
    folder = self.root / "beir-copy"
    shutil.copytree(self.beir, folder)
    if remove:
        (folder / remove).unlink()
    if corpus is not None:
        (folder / "corpus.jsonl").write_text(corpus)
    return folder


Env.beir_copy = beir_copy


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("make, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line_and_leaves_nothing(tmp_path, beir_folder, tiny_bert,
                                                           make, words):
    env = Env(tmp_path / "work", beir_folder, tiny_bert)
    args = [str(a) for a in make(env)]
    before = files_under(tmp_path)
    result = runner.invoke(app, args)
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert files_under(tmp_path) == before, "left behind: " + ", ".join(
        sorted(files_under(tmp_path) - before))


def test_debug_shows_the_traceback(tmp_path, beir_folder, tiny_bert):
    env = Env(tmp_path, beir_folder, tiny_bert)
    result = runner.invoke(app, ["--debug", *map(str, env.train("loss=infonse"))])
    assert result.exit_code == 2 and "Traceback" in result.output
    assert "unknown loss 'infonse'" in result.output


def test_queries_without_qrels_and_missing_queries_are_counted_not_averaged(tmp_path):
    """A run query without judgements is left out (never a 0 in the mean); a judged query
    absent from the run counts 0 unless --skip-missing; both are reported."""
    run = tmp_path / "run.trec"
    run.write_text("a Q0 d1 1 2 t\na Q0 d2 2 1 t\nunjudged Q0 d1 1 1 t\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("a 0 d1 1\nb 0 d1 1\n")
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", str(run), "--qrels", str(qrels), "-m", "RR",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 judged queries are missing from the run (scored 0)" in result.output
    assert "1 run queries have no judgements (not evaluated)" in result.output
    data = json.loads(out.read_text())
    assert data["aggregate"]["RR"] == pytest.approx(0.5)  # a=1, b=0; 'unjudged' not a 0
    assert data["queries"]["without_qrels"] == ["unjudged"]
    assert data["queries"]["missing_from_run"] == ["b"]
    result = runner.invoke(app, ["evaluate", str(run), "--qrels", str(qrels), "-m", "RR",
                                 "--json", str(out), "--skip-missing"])
    assert "left out of the mean" in result.output
    assert json.loads(out.read_text())["aggregate"]["RR"] == pytest.approx(1.0)


def test_judged_queries_without_a_relevant_document_are_counted(tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("a Q0 d1 1 2 t\nc Q0 d1 1 2 t\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("a 0 d1 1\nc 0 d1 0\n")
    result = runner.invoke(app, ["evaluate", str(run), "--qrels", str(qrels), "-m", "RR"])
    assert result.exit_code == 0
    assert "1 judged queries have no relevant document" in result.output


def test_empty_documents_are_kept_and_counted(tmp_path, tiny_bert, caplog):
    """An empty document is common in real corpora: a warning with the count, not an error."""
    toy = write_toy_collection(tmp_path / "toy")
    with open(toy["docs"], "a") as handle:
        handle.write("blank-1\t \nblank-2\t\n")
    with open(toy["run"], "a") as handle:
        handle.write("q-bees Q0 blank-1 11 1 bm25\n")
    out = tmp_path / "out.trec"
    result = runner.invoke(app, ["rerank", tiny_bert, str(toy["folder"]), "--run", str(toy["run"]),
                                 "--depth", "11", "--output", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "blank-1" in out.read_text()
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "2 of 26 documents have empty text" in warnings
    assert "1 candidate document(s) have empty text" in warnings


def test_evaluate_on_dl19_with_a_dataset_folder_typo_names_the_folder(tmp_path):
    result = runner.invoke(app, ["evaluate", str(DL19 / "rankllmdata_BM25_dl19_top100.trec"),
                                 "--qrels", "./no-such-folder"])
    assert result.exit_code == 2 and "collection folder not found" in result.output
