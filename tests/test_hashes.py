"""Settings hashes name folders, caches and score files that outlive a version of irdistill: one
helper makes them all (irdistill.utils.stable_hash), and these values, written down when the ad
hoc helpers were folded into it, must not move, or every cache and grid folder made before is
silently rebuilt."""
from irdistill.config import Config, config_hash
from irdistill.evaluation.suites import SUITES, dataset_key
from irdistill.provenance import candidates_digest
from irdistill.retrieval.bm25 import BM25Settings
from irdistill.retrieval.dense import cache_key
from irdistill.teachers.store import settings_hash
from irdistill.utils import stable_hash


def test_settings_hashes_keep_the_names_of_what_was_made_before():
    suite = SUITES["scifact"]
    assert config_hash(Config()) == "dc5ea9244b84"
    assert BM25Settings().key("beir/scifact/test") == "9630b09d2a77c658"
    assert candidates_digest({"q2": ["b", "a"], "q1": ["c"]}) == "d1ec1095bd4a47ce"
    assert cache_key({"model": "m", "model_name": "x", "n": 3}) == "feb3e91825a631bd"
    assert settings_hash(depth=10, teacher="bm25") == "39d5b3e5be"
    assert dataset_key(suite, suite.datasets[0], precision="bf16") == "b31e85d84f"


def test_stable_hash_ignores_key_order_and_tells_values_apart():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert len(stable_hash({"a": 1}, length=10)) == 10
    assert stable_hash({"a": 1}, algorithm="sha1") != stable_hash({"a": 1})
