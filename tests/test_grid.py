"""Grids: axes expand into hashed cells; finished cells and evaluations are never recomputed;
interrupted cells resume; the CLI runs a grid and compares it end to end."""
import json
import shutil

import pytest
from typer.testing import CliRunner

from irdistill.config import config_hash
from irdistill.errors import IrdistillError
from irdistill.experiments import kinds as kinds_module
from irdistill.experiments.grid import load_grid, run_grid, train_state

GRID = """
name: toy
base:
  data: {{collection: beir/scifact/train, depth: 20, negatives: 3, max_queries: 8}}
  model: {{name: {model}, max_doc_length: 64}}
  train: {{max_steps: 2, batch_size: 4, logging_steps: 1, save_steps: 1}}
axes:
{axes}
suites: [mini]
suite_definitions:
  mini:
    datasets: [{{id: {folder}, split: test, name: mini}}]
    measures: [nDCG@10, RR@10]
    depth: 3
output: {output}
{extra}
"""
AXES = "  objective: [bce, infonce]\n  seed: [1, 2]"


def write_grid(tmp_path, beir_folder, model, axes=AXES, extra=""):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(model=model, folder=beir_folder, output=tmp_path / "out",
                                axes=axes, extra=extra))
    return path


@pytest.fixture
def fake_training(monkeypatch, tiny_bert):
    """Training replaced by a copy of the tiny model (plus a log); records every call."""
    calls = []

    def fake(config, output_dir, show_progress=True):
        calls.append((config.loss, config.train.seed, output_dir))
        shutil.copytree(tiny_bert, output_dir / "model", dirs_exist_ok=True)
        with open(output_dir / "train_log.jsonl", "w") as handle:
            for step in (1, 2):
                handle.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
        return output_dir / "model"

    monkeypatch.setattr(kinds_module, "train_model", fake)
    return calls


@pytest.fixture
def model_loads(monkeypatch):
    """Counts every model loaded for evaluation."""
    from irdistill.models.cross_encoder import CrossEncoder

    loads = []
    original = CrossEncoder.from_pretrained.__func__

    def counting(cls, name, **kwargs):
        loads.append(name)
        return original(cls, name, **{**kwargs, "device": "cpu"})

    monkeypatch.setattr(CrossEncoder, "from_pretrained", classmethod(counting))
    return loads


def test_axes_expand_into_hashed_cells(tmp_path, beir_folder, tiny_bert):
    axes = """  objective: [bce, infonce]
  seed: [1, 2]
  train.lr: {slow: 1.0e-5, fast: 1.0e-4}
  recipe:
    plain: {}
    top: {data: {sampling: top}, loss_params: {}}"""
    path = write_grid(tmp_path, beir_folder, tiny_bert, axes,
                      extra="exclude:\n  - {objective: bce, recipe: top}")
    grid = load_grid(path)
    cells = grid.cells()
    assert len(cells) == 2 * 2 * 2 * 2 - 4  # bce x top excluded for both seeds and lrs
    assert all(not (c.labels["objective"] == "bce" and c.labels["recipe"] == "top")
               for c in cells)
    cell = next(c for c in cells if c.labels == {"objective": "infonce", "seed": "2",
                                                 "train.lr": "fast", "recipe": "top"})
    assert cell.config.loss == "infonce" and cell.config.train.seed == 2
    assert cell.config.train.lr == 1e-4 and cell.config.data.sampling == "top"
    assert cell.config.data.max_queries == 8  # from the base
    assert cell.system == "infonce / fast / top" and cell.seed == 2
    assert cell.hash == config_hash(cell.config)
    assert len({c.hash for c in cells}) == len(cells)
    assert grid.cell_dir(cell) == tmp_path / "out" / "cells" / cell.hash
    # the same file gives the same hashes; a --set override changes them
    assert [c.hash for c in load_grid(path).cells()] == [c.hash for c in cells]
    changed = load_grid(path, ["train.max_steps=3"]).cells()
    assert {c.hash for c in changed}.isdisjoint({c.hash for c in cells})
    assert all(c.config.train.max_steps == 3 for c in changed)
    # keys of the grid itself are overridden too
    other = load_grid(path, ["evaluation.depth=7", "suites=[mini, cranfield]",
                             "base.train.lr=0.5"])
    assert [s.depth for s in other.suite_settings()] == [7, 7]
    assert other.base["train"]["lr"] == 0.5  # in the base; the train.lr axis still wins
    assert {c.config.train.lr for c in other.cells()} == {1e-5, 1e-4}


@pytest.mark.parametrize("case,axes,extra,words", [
    ("grid key", AXES, "axis: {}", "unknown grid key 'axis' (did you mean 'axes'?)"),
    ("config key", "  train.lrr: [1, 2]", "", "unknown config key 'train.lrr'"),
    ("suite", AXES, "", "unknown suite 'minni'"),
    ("duplicate", "  objective: {a: bce, b: bce}", "", "has the same config as cell"),
    ("same key", "  objective: [bce]\n  loss: [mse]", "",
     "axes 'objective' and 'loss' both set 'loss'"),
    ("exclude", AXES, "exclude: [{objective: bcee}]", "unknown value of axis 'objective'"),
    ("unlabelled", "  recipe: [{loss: bce}]", "", "a partial config needs a label"),
    ("kind", AXES, "kind: cross-encodr", "unknown grid kind 'cross-encodr'"),
])
def test_grid_errors_name_the_file_and_fix(tmp_path, beir_folder, tiny_bert, case, axes, extra,
                                           words):
    path = write_grid(tmp_path, beir_folder, tiny_bert, axes, extra)
    if case == "suite":
        path.write_text(path.read_text().replace("suites: [mini]", "suites: [minni]"))
    with pytest.raises(IrdistillError) as info:
        load_grid(path)
    assert words in str(info.value) and str(path) in str(info.value)


def test_suites_from_a_file_beside_the_grid(tmp_path, beir_folder, tiny_bert):
    path = write_grid(tmp_path, beir_folder, tiny_bert)
    (tmp_path / "my-suites.yaml").write_text(
        f"other: {{datasets: [{{id: {beir_folder}, split: test}}], measures: [AP], depth: 2}}\n")
    text = path.read_text().replace("suites: [mini]", "suites: [other, cranfield]")
    text = text[:text.index("suite_definitions:")] + "suite_definitions: my-suites.yaml\n" + \
        text[text.index("output:"):]
    path.write_text(text)
    grid = load_grid(path, output=tmp_path / "elsewhere")
    assert [s.name for s in grid.suites] == ["other", "cranfield"]
    assert grid.suites[0].depth == 2 and grid.output == tmp_path / "elsewhere"


def test_dry_run_lists_cells_and_writes_nothing(tmp_path, beir_folder, tiny_bert,
                                                fake_training):
    grid = load_grid(write_grid(tmp_path, beir_folder, tiny_bert))
    status = run_grid(grid, dry_run=True)
    assert not (tmp_path / "out").exists() and fake_training == []
    assert [s.training for s in status.cells] == ["todo"] * 4
    assert status.shared == 2 and status.shared_done == 0  # BM25 and the untrained model
    lines = status.lines()
    assert any("objective=infonce, seed=2" in line and "eval: 0/1" in line for line in lines)


def test_finished_cells_and_evaluations_are_never_recomputed(tmp_path, beir_folder, tiny_bert,
                                                             fake_training, model_loads):
    grid = load_grid(write_grid(tmp_path, beir_folder, tiny_bert))
    status = run_grid(grid, show_progress=False)
    assert len(fake_training) == 4
    assert {(loss, seed) for loss, seed, _ in fake_training} == {
        ("bce", 1), ("bce", 2), ("infonce", 1), ("infonce", 2)}
    assert len(model_loads) == 1 + 4  # the untrained model once, then each cell
    assert all(s.training == "done" and s.evaluations_done == 1 for s in status.cells)
    manifest = json.loads((tmp_path / "out" / "experiment.json").read_text())
    kinds = [e["kind"] for e in manifest["evaluations"]]
    assert kinds.count("first_stage") == 1 and kinds.count("untrained") == 1
    assert kinds.count("trained") == 4

    run_grid(load_grid(write_grid(tmp_path, beir_folder, tiny_bert)), show_progress=False)
    assert len(fake_training) == 4 and len(model_loads) == 5  # nothing at all recomputed

    # a lost result file is rebuilt from the saved run, without the model
    cell = grid.cells()[0]
    (result,) = (grid.cell_dir(cell) / "eval" / "mini").glob("*.json")
    result.unlink()
    run_grid(grid, show_progress=False)
    assert result.exists() and len(model_loads) == 5
    # a lost run is re-ranked again: one model load
    result.unlink()
    result.with_suffix(".trec").unlink()
    run_grid(grid, show_progress=False)
    assert len(model_loads) == 6 and len(fake_training) == 4


def complete_checkpoint(path):
    """A checkpoint folder with every file a resume needs (see irdistill.train.resume)."""
    from irdistill.train.resume import REQUIRED, STATE_FILE, step_of

    path.mkdir(parents=True, exist_ok=True)
    for names in REQUIRED:
        (path / names[0]).write_bytes(b"")
    (path / STATE_FILE).write_text(json.dumps({"global_step": step_of(path)}))


def test_interrupted_cell_resumes_and_only_it(tmp_path, beir_folder, tiny_bert, fake_training,
                                              model_loads):
    grid = load_grid(write_grid(tmp_path, beir_folder, tiny_bert))
    run_grid(grid, show_progress=False)
    cell = grid.cells()[2]
    folder = grid.cell_dir(cell)
    (folder / "done.json").unlink()  # as if training had been interrupted after step 3
    shutil.rmtree(folder / "model")
    complete_checkpoint(folder / "checkpoints" / "checkpoint-3")
    (folder / "checkpoints" / "checkpoint-20").mkdir()  # cut while it was written
    assert train_state(folder) == "step 3"  # where the run resumes: the newest complete one
    complete_checkpoint(folder / "checkpoints" / "checkpoint-20")
    assert train_state(folder) == "step 20"
    assert run_grid(grid, dry_run=True).cells[2].training == "step 20"
    run_grid(grid, show_progress=False)
    assert len(fake_training) == 5 and fake_training[-1][2] == folder
    assert train_state(folder) == "done"


def test_state_and_loss_curve_of_a_two_stage_cell(tmp_path):
    from irdistill.experiments.plots import read_cell_log

    folder = tmp_path / "cell"
    (folder / "stage-1" / "model").mkdir(parents=True)
    (folder / "stage-1" / "model" / "config.json").write_text("{}")
    (folder / "stage-1" / "train_log.jsonl").write_text(
        '{"step": 5, "loss": 2.0}\n{"step": 10, "loss": 1.0}\n')
    assert train_state(folder) == "stage 1 done"
    complete_checkpoint(folder / "stage-1" / "checkpoints" / "checkpoint-10")
    assert train_state(folder) == "stage 1 done"  # a finished stage keeps its last checkpoint
    complete_checkpoint(folder / "stage-2" / "checkpoints" / "checkpoint-4")
    (folder / "stage-2" / "train_log.jsonl").write_text('{"step": 4, "loss": 0.5}\n{"cut')
    assert train_state(folder) == "stage 2 step 4"
    assert read_cell_log(folder) == [(5, 2.0), (10, 1.0), (14, 0.5)]  # a cut line is skipped


def test_unknown_loss_fails_before_any_work(tmp_path, beir_folder, tiny_bert, fake_training):
    path = write_grid(tmp_path, beir_folder, tiny_bert, "  objective: [bce, hingee]")
    with pytest.raises(IrdistillError, match="cell objective=hingee: unknown loss 'hingee'"):
        run_grid(load_grid(path), show_progress=False)
    assert fake_training == [] and not (tmp_path / "out" / "cells").exists()


SYSTEMS = """baselines:
  dense-tiny: {{type: dense, model: {model}, depth: 5}}
  hybrid: {{type: hybrid, model: {model}, depth: 4}}
evaluation: {{fusion: true, untrained: false}}
"""


def test_baselines_and_fused_rows(tmp_path, beir_folder, tiny_bert, fake_training,
                                  scifact_available):
    """Baselines are evaluated once per dataset; each cell also gives a row fused with the
    first stage, by a weight tuned on its own held-out training queries."""
    from irdistill.data.trec import read_run
    from irdistill.experiments.report import load_grid_results

    path = write_grid(tmp_path, beir_folder, tiny_bert, "  objective: [bce, infonce]",
                      SYSTEMS.format(model=tiny_bert))
    path.write_text(path.read_text().replace("max_queries: 8}", "max_queries: 8, "
                                                                "dev_fraction: 0.25}"))
    grid = load_grid(path)
    status = run_grid(grid, dry_run=True)
    assert status.shared == 3  # BM25 and the two baselines; no untrained row
    assert [s.evaluations for s in status.cells] == [2, 2]  # the re-ranker and its fusion
    run_grid(grid, show_progress=False)
    rs = load_grid_results(grid.output)
    assert rs.systems() == ["BM25", "dense-tiny", "hybrid", "bce", "bce + BM25", "infonce",
                            "infonce + BM25"]
    out = grid.output
    manifest = json.loads((out / "experiment.json").read_text())
    files = {e["system"]: out / e["file"].replace(".json", ".trec")
             for e in manifest["evaluations"]}
    bm25, hybrid = read_run(files["BM25"]), read_run(files["hybrid"])
    from irdistill.data.collection import load_collection
    from irdistill.retrieval.bm25 import bm25_run

    collection = load_collection(str(beir_folder), "test")
    deeper = bm25_run(collection, k=4, query_ids=sorted(bm25))
    assert set(hybrid) == set(bm25) == {"q1", "q2"}  # the judged queries
    for qid in bm25:  # the suite's depth re-ranked; the hybrid's own depth fused
        assert len(bm25[qid]) <= 3 and set(hybrid[qid]) == set(deeper[qid]) >= set(bm25[qid])
    dense = read_run(files["dense-tiny"])  # the whole collection ranked (5 > its 4 documents)
    assert set(dense) == {"q1", "q2"} and all(len(d) == 4 for d in dense.values())
    for cell in manifest["cells"]:
        fusion = json.loads(next((out / cell["folder"]).glob("fusion-top3-*.json")).read_text())
        assert len(fusion["dev_queries"]) == 2  # a quarter of the 8 training queries
        assert fusion["collection"] == "beir/scifact/train"
        reranked, fused = read_run(files[cell["system"]]), \
            read_run(files[cell["system"] + " + BM25"])
        alpha = fusion["alpha"]
        for qid, docs in fused.items():
            a = {d: (s - min(reranked[qid].values())) /
                 ((max(reranked[qid].values()) - min(reranked[qid].values())) or 1)
                 for d, s in reranked[qid].items()}
            b = {d: (s - min(bm25[qid].values())) /
                 ((max(bm25[qid].values()) - min(bm25[qid].values())) or 1)
                 for d, s in bm25[qid].items()}
            for doc, score in docs.items():
                assert abs(score - (alpha * a[doc] + (1 - alpha) * b[doc])) < 1e-5
    # a fused row belongs to its cell (so `compare` pairs its seeds as the re-ranker's)
    kinds = {e["system"]: (e["kind"], e["cell"]) for e in manifest["evaluations"]}
    assert kinds["bce + BM25"] == ("fused", kinds["bce"][1]) and kinds["bce"][1] is not None
    assert kinds["hybrid"] == ("baseline", None)


@pytest.mark.parametrize("extra,words", [
    ("evaluation: {fusion: true}", "the cell names none"),
    ("baselines: {dense: {type: sparse, model: m}}", "baseline 'dense': unknown baseline type "
                                                     "'sparse'"),
    ("baselines: {BM25: {type: dense, model: m}}", "has the name of the first stage"),
    ("baselines: {d: {type: dense, model: m, depth: 0}}", "depth 0 must be"),
    ("baselines: [dense]", "'baselines' must map system names"),
])
def test_bad_baselines_and_fusion_fail_before_any_work(tmp_path, beir_folder, tiny_bert,
                                                      fake_training, extra, words):
    path = write_grid(tmp_path, beir_folder, tiny_bert, AXES, extra)
    with pytest.raises(IrdistillError) as info:
        run_grid(load_grid(path), dry_run=True)
    assert words in str(info.value)
    assert fake_training == [] and not (tmp_path / "out").exists()


def test_fusion_refuses_to_tune_on_a_suite_dataset(tmp_path, beir_folder, tiny_bert,
                                                   fake_training):
    path = write_grid(tmp_path, beir_folder, tiny_bert, AXES, "evaluation: {fusion: true}")
    grid = load_grid(path, [f"data.dev_collection={beir_folder}", "data.dev_split=test"])
    with pytest.raises(IrdistillError, match="tuned on the queries it is then measured on"):
        run_grid(grid, dry_run=True)
    other = load_grid(path, [f"data.dev_collection={beir_folder}", "data.dev_split=train"])
    run_grid(other, dry_run=True)  # another split of it is fine


def test_cli_experiment_run_and_compare_end_to_end(tmp_path, beir_folder, tiny_bert,
                                                   scifact_available):
    """Real training of the tiny model (2 steps) on SciFact train, evaluation on a small
    folder, then the comparison tables and plots."""
    from irdistill.cli import app

    runner = CliRunner()
    path = write_grid(tmp_path, beir_folder, tiny_bert, "  objective: [bce, infonce]\n"
                                                         "  seed: [1, 2]")
    result = runner.invoke(app, ["experiment", "run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("train: todo") == 4
    result = runner.invoke(app, ["experiment", "run", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.count("train: done") == 4
    out = tmp_path / "out"
    for cell in json.loads((out / "experiment.json").read_text())["cells"]:
        assert (out / cell["folder"] / "model" / "config.json").exists()
        assert (out / cell["folder"] / "train_log.jsonl").exists()
    result = runner.invoke(app, ["compare", str(out), "--baseline", "bce", "-m", "nDCG@10",
                                 "--correction", "bonferroni"])
    assert result.exit_code == 0, result.output
    assert "| BM25 (first stage) | 1 |" in result.output
    assert "| untrained tiny-bert0 | 1 |" in result.output
    assert "| bce (baseline) | 2 |" in result.output and "| infonce | 2 |" in result.output
    report = out / "report"
    for name in ("comparison.md", "comparison.csv", "comparison.tex", "per_query.csv",
                 "plots/spread-nDCG_10.png", "plots/spread-nDCG_10.pdf",
                 "plots/winloss-nDCG_10.png", "plots/training-loss.png",
                 "plots/training-loss.pdf"):
        assert (report / name).stat().st_size > 0, name
    # a second run does nothing new
    result = runner.invoke(app, ["experiment", "run", str(path), "--dry-run"])
    assert result.output.count("train: done") == 4 and "done: 2/2" in result.output
    bad = runner.invoke(app, ["compare", str(out), "--baseline", "BM2", "--no-plots"])
    assert bad.exit_code == 2 and "did you mean 'BM25'" in bad.output
    case = runner.invoke(app, ["compare", str(out), "--baseline", "bm25", "--no-plots"])
    assert case.exit_code == 0 and "| BM25 (first stage, baseline) |" in case.output


def test_kd_vs_contrastive_table_pairs_each_student_with_its_size(tmp_path, monkeypatch):
    """scripts/kd_vs_contrastive_table.py: each KD student against the contrastive student of
    its own size, per-query values averaged over seeds, Holm over the comparisons; checked by
    recomputing the deltas from the grid's evaluation files."""
    import importlib.util

    import numpy as np
    from conftest import REPO
    from tiny_models import build_tiny_model

    from irdistill.evaluation.significance import holm
    from irdistill.experiments.report import load_grid_results

    def fake(config, output_dir, show_progress=True):  # a different spread model per cell
        seed = 100 * (config.loss == "bce") + 10 * config.model.num_hidden_layers + \
            config.train.seed
        build_tiny_model("bert", output_dir / "model", seed=seed, initializer_range=0.2)
        (output_dir / "train_log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
        return output_dir / "model"

    monkeypatch.setattr(kinds_module, "train_model", fake)
    from toy_collection import write_toy_collection

    toy = write_toy_collection(tmp_path / "toy")  # 8 queries x 10 candidates: rankings differ
    path = tmp_path / "grid.yaml"
    path.write_text(f"""
name: kd-toy
base:
  data: {{collection: {toy['folder']}, run: {toy['run']}, negatives: 3}}
  model: {{name: {build_tiny_model('bert', tmp_path / 'base', initializer_range=0.2)}}}
axes:
  objective: {{contrastive: {{loss: infonce}}, kd: {{loss: bce}}}}
  model.num_hidden_layers: [1, 2]
  seed: [1, 2]
suites: [toy]
suite_definitions:
  toy: {{datasets: [{{id: {toy['folder']}, name: toy, run: {toy['run']}}}],
        measures: [nDCG@10], depth: 10, first_stage: run}}
output: {tmp_path / 'out'}
""")
    run_grid(load_grid(path), show_progress=False)
    spec = importlib.util.spec_from_file_location(
        "kd_table", REPO / "scripts" / "kd_vs_contrastive_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.table(tmp_path / "out")
    rows = {(r["objective"], r["layers"]): r for r in result["rows"]}
    assert set(rows) == {(o, size) for o in ("contrastive", "kd") for size in (1, 2)}
    trained = [r for r in load_grid_results(tmp_path / "out").results if r.kind == "trained"]

    def averaged(objective, size):
        runs = [r for r in trained if r.labels["objective"] == objective
                and r.labels["model.num_hidden_layers"] == str(size)]
        assert len(runs) == 2
        return {q: np.mean([r.per_query[q]["nDCG@10"] for r in runs]) for q in runs[0].per_query}

    deltas = []
    for size in (1, 2):
        kd, base = averaged("kd", size), averaged("contrastive", size)
        deltas.append(np.mean([kd[q] - base[q] for q in base]))
        assert rows["kd", size]["delta"] == pytest.approx(deltas[-1])
        assert rows["contrastive", size]["seeds"] == 2 and "delta" not in rows["contrastive", size]
    assert any(abs(d) > 1e-6 for d in deltas)  # the cells really differ
    raw = [rows["kd", size]["p_t"] for size in (1, 2)]
    assert [rows["kd", size]["p_t_holm"] for size in (1, 2)] == pytest.approx(holm(raw),
                                                                             nan_ok=True)
    assert {"untrained L1", "untrained L2"} <= set(result["others"])
    out = tmp_path / "report"
    assert script.main([str(tmp_path / "out"), "--output", str(out)]) == 0
    assert "| 2 | kd |" in (out / "table.md").read_text() and (out / "kd-vs-contrastive.png").exists()
