"""Import cycles between irdistill's modules, counting imports inside functions too (they hide a
cycle from Python's import machinery but still tie the two modules together); imports of a
higher layer (:data:`LAYERS`, docs/architecture.md); and the imports inside functions that do
not say why they are there.

    python scripts/import_cycles.py            # prints the graph's size, its cycles, the
                                               # imports of a higher layer and the unexplained
                                               # imports inside functions; exit status 1 if
                                               # there is any of them

An import inside a function is explained by a comment on its line, on the line above it, or above
the run of imports it belongs to (e.g. "optional dependency", "takes seconds to import"). The CLI
(``irdistill/cli.py``) is exempt: its commands import what they run, so that ``irdistill --help``
starts at once.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "irdistill"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """``(module-level, inside-function)`` irdistill modules that ``name`` imports."""
    top: set[str] = set()
    inner: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def target(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
        return [base] + [f"{base}.{alias.name}" for alias in node.names]

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for dotted in target(child):
                    while dotted and dotted not in known:
                        dotted = dotted.rpartition(".")[0]
                    if dotted and dotted != name:
                        (inner if nested else top).add(dotted)
            visit(child, nested)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return top, inner


#: the package's layers, lowest first: a module imports nothing of a higher layer, unless the
#: pair is in ALLOWED_UPWARD with the reason
LAYERS = (
    ("errors", "config", "io", "utils", "distributed"),
    ("data",),
    ("models", "losses"),
    ("provenance",),
    ("retrieval",),
    ("rerank",),
    ("evaluation",),
    ("teachers",),
    ("train",),
    ("adapt",),
    ("experiments",),
    ("demo", "pyterrier", "cli", "__main__"),
)
#: (importer, imported prefix): why the lower module may reach up
ALLOWED_UPWARD = {
    ("irdistill.config", "irdistill.data"): "checks a config against the data modes",
    ("irdistill.config", "irdistill.evaluation"): "checks a config's measures",
    ("irdistill.config", "irdistill.losses"): "checks a config's loss",
    ("irdistill.config", "irdistill.models"): "checks a config's attention kernel",
    ("irdistill.adapt.reranker", "irdistill.demo"): "an entry point: the demo's recipe",
    ("irdistill.rerank.quality", "irdistill.evaluation"): "the int8 check measures nDCG@10 "
                                                          "(evaluation.metrics, on data only)",
    ("irdistill.adapt.reranker", "irdistill.experiments"): "an entry point: writes its tables",
}


def layer_of(name: str) -> int:
    part = name.split(".")[1] if "." in name else ""
    for index, members in enumerate(LAYERS):
        if part in members:
            return index
    return -1  # the package itself


def upward_imports(edges: dict[str, tuple[set[str], set[str]]]) -> list[str]:
    """``importer -> imported`` pairs that go to a higher layer and are not allowed."""
    out = []
    for name, (top, inner) in sorted(edges.items()):
        for other in sorted(top | inner):
            if layer_of(other) > layer_of(name) >= 0 and not any(
                    name == a and other.startswith(b) for a, b in ALLOWED_UPWARD):
                out.append(f"{name} -> {other}")
    return out


EXEMPT = ("cli.py",)


def unexplained_imports(path: Path) -> list[int]:
    """Line numbers of the imports inside functions of ``path`` that no comment explains."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[int] = []

    def explained(node) -> bool:
        if any("#" in line for line in lines[node.lineno - 1:node.end_lineno]):
            return True
        above = node.lineno - 2
        while above >= 0 and (lines[above].strip().startswith(("import ", "from "))
                              or not lines[above].strip()):
            above -= 1  # the run of imports this one belongs to (blank lines between groups)
        return above >= 0 and lines[above].strip().startswith("#")

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)) \
                    and not explained(child):
                found.append(child.lineno)
            visit(child, nested)

    visit(ast.parse("\n".join(lines)), False)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            strong(node)
    return found


def main() -> int:
    known = modules()
    edges = {name: imports(name, path, known) for name, path in known.items()}
    graph = {name: top | inner for name, (top, inner) in edges.items()}
    found = cycles(graph)
    print(f"{len(known)} modules, {sum(len(t) for t, _ in edges.values())} module-level and "
          f"{sum(len(i) for _, i in edges.values())} inside-function imports between them; "
          f"{len(found)} cycle(s)")
    for component in found:
        print("  " + " <-> ".join(component))
    upward = upward_imports(edges)
    print(f"{len(upward)} import(s) of a higher layer (see LAYERS)")
    for pair in upward:
        print("  " + pair)
    unexplained = [f"{path.relative_to(PACKAGE.parent)}:{line}"
                   for path in sorted(known.values()) if path.name not in EXEMPT
                   for line in unexplained_imports(path)]
    print(f"{len(unexplained)} import(s) inside functions without a comment saying why "
          "(the CLI aside)")
    for place in unexplained:
        print("  " + place)
    return 1 if found or upward or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
