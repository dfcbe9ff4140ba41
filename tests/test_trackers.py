"""train.report_to: every figure irdistill logs (training loss, evaluation during training,
SPLADE's regulariser terms) reaches an experiment tracker, read back here from TensorBoard's
event files and from MLflow's local store; a tracker that does not exist, or whose package is missing, fails before any file
is written; a run's hash does not depend on its trackers (adding one to a resumed run is allowed)."""
import pytest
from splade_helpers import tiny_mlm  # noqa: F401  (fixture)
from test_train_eval import make_config, toy  # noqa: F401  (fixture)

from irdistill.config import config_hash, load_config
from irdistill.errors import IrdistillError

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = [p for p in folder.rglob("events.out.tfevents.*")]
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_receives_the_training_loss_and_the_evaluation(toy, tiny_bert, tmp_path):
    import json

    from irdistill.train import engine

    config = make_config(toy, tiny_bert, "data.dev_fraction=0.25", "train.epochs=2",
                         "train.eval_steps=4", "train.report_to=[tensorboard]")
    out = tmp_path / "run"
    engine.train(config, out, show_progress=False)
    assert (out / "tensorboard").is_dir() and not list((out / "checkpoints").rglob("events.*"))
    got = scalars(out / "tensorboard")
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    assert [s for s, _ in got["train/loss"]] == [s for s, _ in losses]
    assert [v for _, v in got["train/loss"]] == pytest.approx([v for _, v in losses], rel=1e-5)
    evals = [(r["step"], r["eval_nDCG@10"]) for r in logged if "eval_nDCG@10" in r]
    assert [s for s, _ in got["eval/nDCG@10"]] == [s for s, _ in evals] == [4, 6]
    assert [v for _, v in got["eval/nDCG@10"]] == pytest.approx([v for _, v in evals])


def test_splade_regulariser_terms_reach_tensorboard(tmp_path, tiny_mlm, scifact_available):
    from irdistill.train.splade import load_splade_config, train_splade

    config = load_splade_config(overrides=[
        f"model.name={tiny_mlm}", "data.max_queries=8", "train.batch_size=4", "train.max_steps=2",
        "model.max_doc_length=24", "train.logging_steps=1", "train.report_to=[tensorboard]"])
    train_splade(config, tmp_path / "splade", show_progress=False)
    got = scalars(tmp_path / "splade" / "tensorboard")
    for tag in ("train/loss", "train/ranking_loss", "train/reg_q", "train/reg_d"):
        assert [s for s, _ in got[tag]] == [1, 2], tag


def test_a_tracker_that_does_not_exist_or_cannot_load_fails_first(toy, tiny_bert, tmp_path,
                                                                  monkeypatch):
    from irdistill.train import engine

    with pytest.raises(IrdistillError, match="unknown tracker.*'tensorbord'.*tensorboard"):
        engine.train(make_config(toy, tiny_bert, "train.report_to=[tensorbord]"),
                     tmp_path / "a", show_progress=False)
    import transformers.integrations.integration_utils as integrations

    def missing():
        raise RuntimeError("TensorBoardCallback requires tensorboard to be installed.")

    monkeypatch.setattr(integrations.TensorBoardCallback, "__init__", lambda self: missing())
    with pytest.raises(IrdistillError, match="requires tensorboard.*install its package"):
        engine.train(make_config(toy, tiny_bert, "train.report_to=[tensorboard]"),
                     tmp_path / "b", show_progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_trackers_do_not_change_the_config_hash():
    plain = load_config()
    tracked = load_config(overrides=["train.report_to=[tensorboard]"])
    assert config_hash(plain) == config_hash(tracked)
    assert config_hash(plain) != config_hash(load_config(overrides=["train.lr=1e-4"]))


def test_tensorboard_writes_to_its_folder_whatever_the_trainer_version_asks(tmp_path):
    """The callback opens its writer in OUTPUT/tensorboard even when called the way older
    transformers call it (with a log_dir of the Trainer's own)."""
    from irdistill.train.trackers import tracker_callbacks

    (callback,) = tracker_callbacks(["tensorboard"], tmp_path / "run")
    callback._init_summary_writer(None, log_dir=str(tmp_path / "elsewhere"))
    callback.tb_writer.add_scalar("x", 1.0, 1)
    callback.tb_writer.close()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "elsewhere").exists()


def test_mlflow_keeps_a_local_store_beside_the_run_with_the_loss_and_the_evaluation(
        toy, tiny_bert, tmp_path, monkeypatch):
    """Without a tracking URI, MLflow logs into OUTPUT/mlflow.db (artifacts in
    OUTPUT/mlartifacts); a second run in the same process gets its own store, and a URI the
    user sets is kept."""
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed")
    import json
    import os

    from irdistill.train import engine

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID",
                 "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(None)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory

    def logged(out, uri):
        client = mlflow.MlflowClient(tracking_uri=uri)
        (experiment,) = [e for e in client.search_experiments() if e.name == "irdistill"]
        (run,) = client.search_runs([experiment.experiment_id])
        history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                               key)]
                   for key in ("loss", "eval_nDCG_10")}
        return run, history

    for name in ("a", "b"):
        out = tmp_path / name
        engine.train(make_config(toy, tiny_bert, "data.dev_fraction=0.25", "train.epochs=2",
                                 "train.eval_steps=4", "train.report_to=[mlflow]"),
                     out, show_progress=False)
        run, history = logged(out, f"sqlite:///{out / 'mlflow.db'}")
        assert run.info.artifact_uri.startswith((out / "mlartifacts").as_uri())
        rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        evals = [(r["step"], r["eval_nDCG@10"]) for r in rows if "eval_nDCG@10" in r]
        assert [s for s, _ in history["loss"]] == [s for s, _ in losses]
        assert [v for _, v in history["loss"]] == pytest.approx([v for _, v in losses])
        assert [s for s, _ in history["eval_nDCG_10"]] == [s for s, _ in evals] == [4, 6]
        assert [v for _, v in history["eval_nDCG_10"]] == pytest.approx([v for _, v in evals])
        # MLflow is left as it was found: no store, no experiment, nothing in the environment
        assert not mlflow.is_tracking_uri_set()
        assert "MLFLOW_EXPERIMENT_ID" not in os.environ
    assert not {"mlflow.db", "mlruns", "mlartifacts"} & {p.name for p in tmp_path.iterdir()}

    # a store the user chose is kept: in the environment, or in code after a run here
    for name, choose in (("c", lambda uri: monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)),
                         ("d", mlflow.set_tracking_uri)):
        store = f"sqlite:///{tmp_path / f'{name}.db'}"
        choose(store)
        engine.train(make_config(toy, tiny_bert, "train.report_to=[mlflow]"), tmp_path / name,
                     show_progress=False)
        assert not (tmp_path / name / "mlflow.db").exists()
        client = mlflow.MlflowClient(tracking_uri=store)
        assert client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert mlflow.get_tracking_uri() == store  # and still chosen after the run
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
