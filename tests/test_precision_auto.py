"""train.precision=auto: bf16 only where the device computes it natively."""
import pytest

from irdistill.config import Config, check_config, config_hash
from irdistill.models import runtime


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_cpu(monkeypatch, native, expected):
    import irdistill.models.runtime as ce

    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ce, "cpu_has_native_bf16", lambda: native)
    assert runtime.training_precision("auto") == expected
    assert runtime.training_precision("fp16") == "fp16"  # an explicit choice is kept
    config = check_config(Config())
    config.train.precision = "auto"
    resolved = runtime.with_training_precision(config)
    assert resolved.train.precision == expected
    assert config.train.precision == "auto"  # the given config is not changed
    assert config_hash(config) != config_hash(resolved)


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_a_splade_index_records_what_auto_precision_became(monkeypatch, native, expected,
                                                           tiny_mlm, beir_folder, tmp_path):
    import irdistill.models.runtime as ce
    from irdistill.data.collection import load_collection
    from irdistill.models.splade import Splade
    from irdistill.retrieval.sparse_index import build_splade_index

    monkeypatch.setattr(ce, "cpu_has_native_bf16", lambda: native)
    model = Splade.from_pretrained(tiny_mlm, device="cpu", precision="auto")
    index = build_splade_index(model, load_collection(beir_folder), tmp_path / "index",
                               show_progress=False)
    assert index.meta["precision"] == expected


from splade_helpers import tiny_mlm  # noqa: E402,F401  (fixture)
