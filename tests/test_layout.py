"""The package's modules import each other without a cycle, counting imports inside functions
(scripts/import_cycles.py): a cycle hidden in a function still ties two modules together."""
import subprocess
import sys

from conftest import REPO


def test_no_import_cycle_between_modules():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "import_cycles.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "0 cycle(s)" in result.stdout, result.stdout


def test_the_checker_finds_a_cycle():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from import_cycles import cycles
    finally:
        sys.path.pop(0)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
