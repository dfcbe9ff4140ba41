"""The package's modules import each other without a cycle, counting imports inside functions
(scripts/import_cycles.py): a cycle hidden in a function still ties two modules together. An
import inside a function (the CLI aside) says why it is there."""
import subprocess
import sys

from conftest import REPO


def test_no_import_cycle_between_modules():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "import_cycles.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "0 cycle(s)" in result.stdout, result.stdout
    assert "0 import(s) inside functions without a comment" in result.stdout, result.stdout
    assert "0 import(s) of a higher layer" in result.stdout, result.stdout


def test_the_checker_finds_a_cycle():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from import_cycles import cycles
    finally:
        sys.path.pop(0)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_finds_an_import_of_a_higher_layer():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from import_cycles import upward_imports
    finally:
        sys.path.pop(0)
    edges = {"irdistill.data.trec": ({"irdistill.errors"}, {"irdistill.train.engine"}),
             "irdistill.train.engine": ({"irdistill.data.trec"}, set()),
             "irdistill.config": (set(), {"irdistill.losses"})}  # an allowed one
    assert upward_imports(edges) == ["irdistill.data.trec -> irdistill.train.engine"]


def test_the_checker_finds_an_unexplained_import(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from import_cycles import unexplained_imports
    finally:
        sys.path.pop(0)
    path = tmp_path / "module.py"
    path.write_text("import os\n\n\ndef f():\n    import json\n    return json\n\n\n"
                    "def g():\n    # optional dependency\n    import faiss\n    import peft\n"
                    "    import yaml  # light, but lazy on purpose\n    return faiss, peft, yaml\n")
    assert unexplained_imports(path) == [5]


def test_the_public_api_resolves_and_import_stays_light():
    """Every name of ``irdistill.API`` is one import away, none shadows a subpackage, and
    ``import irdistill`` loads neither torch nor transformers."""
    import pkgutil

    import irdistill

    submodules = {m.name for m in pkgutil.iter_modules(irdistill.__path__)}
    assert not set(irdistill.API) & submodules
    for name in irdistill.API:
        assert getattr(irdistill, name) is not None, name
    assert irdistill.train_cross_encoder.__module__ == "irdistill.train.engine"
    assert irdistill.run_rerank.__module__ == "irdistill.rerank.job"
    # the package, its configs, the command's start and what handles run files stay light
    for module in ("irdistill", "irdistill.config", "irdistill.cli", "irdistill.utils",
                   "irdistill.provenance", "irdistill.rerank.sharding",
                   "irdistill.evaluation.fusion", "irdistill.teachers.importers"):
        code = (f"import sys, {module}; "
                "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60, cwd=REPO)
        assert result.stdout.strip() == "[]", module + result.stdout + result.stderr
