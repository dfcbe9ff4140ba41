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


def test_the_checker_finds_a_cycle():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from import_cycles import cycles
    finally:
        sys.path.pop(0)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


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
