"""Layer check of the package: the import graph holds its layers, has no cycles and no hidden imports.

``python scripts/layer_check.py [PACKAGE_DIR ...]`` parses every module of the packages (default: ``mo_align/``, and
``bench/`` when it is a package; a package's name is its directory's name) with :mod:`ast`, builds the import graph
(``scripts/import_graph.py``; imports inside functions included), prints one line per violation and exits 1 if there
is any; ``make lint`` runs it. The violations:

* ``layer``: a core module (:data:`CORE`, and every module it imports, directly or not) imports the experiment layer
  (:data:`EXPERIMENT`), or the rewards reach the weightings (:data:`RULES`); the line names the chain from the core.
* ``cycle``: modules that import each other, directly or through others; ``package cycle``: the same between packages
  (a package = a directory; a module at the top of the package counts on its own). Importing ``a.b.c`` runs
  ``a/b/__init__.py`` too, so that edge counts unless ``a.b`` is a parent of the importing module (already running).
  Imports under ``if TYPE_CHECKING:`` never run and make no edge.
* ``private``: a name (or a module) with one leading underscore imported from another package.
* ``nested``: an import inside a function or a class without a comment saying why, on its lines or on the comment
  lines just above it (or above the first import of its group): the word ``optional`` (an optional extra: deepspeed,
  vllm, torchjd, ...) or ``lazy`` (a deliberate lazy import, saying what it waits for).
* ``file name``: one file name (``mo_summary.json``, ``mo_state.pt``, ...) spelled as a string in more than one
  module; one module owns the constant and the others import it (docstrings and f-string text are not counted).

:data:`ALLOWED` exempts, by kind and module, the violations of modules that a parallel change rewrites.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from import_graph import Import, Nested, collect, cycles, graph_of, is_package, package_of


PACKAGE = "mo_align"
CORE = tuple(
    f"{PACKAGE}.{m}"
    for m in ("trainer", "weightings", "rewards", "advantages", "covariance", "configs", "runs.summary")
)
EXPERIMENT = (*(f"{PACKAGE}.{m}" for m in ("lab", "sweep", "soup", "runs.report", "hub")), "bench")
# (the modules a rule is about, with every module they import; what they must not import; why)
RULES = (
    (CORE, EXPERIMENT, "the core must not import the experiment layer"),
    ((f"{PACKAGE}.rewards",), (f"{PACKAGE}.weightings",), "the rewards must not import the weightings"),
)
FILE_NAME = re.compile(
    r"^\.?[\w-][\w.-]*\.(json|jsonl|pt|pth|bin|ya?ml|md|csv|png|txt|safetensors|log|html|lock|pid|npz|npy|pkl|toml)$"
)
# (kind, module): that module's violations of that kind are printed as exempt, not counted: for a module that a
# parallel change rewrites, until it is merged (none now).
ALLOWED: tuple[tuple[str, str], ...] = ()


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer_violations(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    """Edges from a module a rule is about (its seeds and what they import) into the modules it must not reach."""
    graph, out = graph_of(imports), []
    for seeds, forbidden, why in RULES:
        reached = {m: [m] for m in modules if _in(m, seeds)}
        todo = list(reached)
        while todo:
            module = todo.pop(0)
            for target in sorted(graph[module]):
                if target not in reached and not _in(target, forbidden):
                    reached[target] = [*reached[module], target]
                    todo.append(target)
        for imp in imports:
            if imp.source in reached and _in(imp.target, forbidden):
                via = " -> ".join(reached[imp.source])
                out.append(f"layer: {imp.source} -> {imp.target} (line {imp.line}): {why} (via {via})")
    return sorted(set(out))


def unit(module: str, modules: dict[str, Path]) -> str:
    """The package of a module in the package graph: its directory; a module at the top of a package is its own."""
    return module if is_package(module, modules) or module.count(".") == 1 else module.rpartition(".")[0]


def cycle_violations(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    """Import cycles between modules, then between packages (with the module edges that make each package edge)."""
    runtime = [imp for imp in imports if not imp.typing_only and not imp.external]
    graph = graph_of(runtime)
    line = {(imp.source, imp.target): imp.line for imp in reversed(runtime)}
    out = [
        "cycle: " + " -> ".join(f"{a} (line {line[a, b]})" for a, b in pairwise(cycle)) + f" -> {cycle[0]}"
        for cycle in cycles(graph)
    ]
    package_graph: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], str] = {}
    for imp in runtime:
        a, b = unit(imp.source, modules), unit(imp.target, modules)
        if a != b:
            package_graph[a].add(b)
            if len(imp.target) > len(why.get((a, b), " -> ").partition(" -> ")[2]):  # the most telling edge
                why[a, b] = f"{imp.source} -> {imp.target}"
    for cycle in cycles(package_graph):
        edges = "; ".join(why[pair] for pair in pairwise(cycle))
        out.append(f"package cycle: {' -> '.join(cycle)} ({edges})")
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_violations(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    """Private names (one leading underscore: a name, or a module on the path) imported from another package."""
    out = []
    for imp in imports:
        if imp.external:
            continue
        hidden = [n for n in imp.names if _private(n)] + [p for p in imp.target.split(".") if _private(p)]
        if hidden and package_of(imp.source, modules) != package_of(imp.target, modules):
            out.append(f"private: {imp.source} imports {', '.join(hidden)} from {imp.target} (line {imp.line})")
    return sorted(set(out))


def nested_violations(nested: list[Nested]) -> list[str]:
    out = {
        f"nested: {n.module} line {n.line} imports {n.target} inside a function or class with no comment saying why"
        " (an optional extra / a lazy import)"
        for n in nested
        if not n.justified
    }
    return sorted(out, key=lambda line: (line.split()[1], int(line.split()[3])))


class _Strings(ast.NodeVisitor):
    """File-name string literals of one module (docstrings and the text of f-strings left out)."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_Expr(self, node: ast.Expr) -> None:
        if not isinstance(node.value, ast.Constant):
            self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and FILE_NAME.match(node.value):
            self.found.add(node.value)


def file_name_violations(modules: dict[str, Path]) -> list[str]:
    """File names spelled in more than one module."""
    spelled: dict[str, list[str]] = defaultdict(list)
    for name, path in modules.items():
        strings = _Strings()
        strings.visit(ast.parse(path.read_text(), filename=str(path)))
        for value in strings.found:
            spelled[value].append(name)
    return [
        f"file name: {value!r} spelled in {len(owners)} modules: {', '.join(sorted(owners))}"
        " (one module owns the constant, the others import it)"
        for value, owners in sorted(spelled.items())
        if len(owners) > 1
    ]


def _allowed(line: str) -> bool:
    return any(line.startswith(f"{kind}: {module} ") for kind, module in ALLOWED)


def violations(roots: list[Path]) -> tuple[list[str], list[str]]:
    """(violations, exempt ones) of the packages at ``roots``."""
    modules, imports, nested = collect(roots)
    found = [
        *layer_violations(modules, imports),
        *cycle_violations(modules, imports),
        *private_violations(modules, imports),
        *nested_violations(nested),
        *file_name_violations(modules),
    ]
    return [v for v in found if not _allowed(v)], [v for v in found if _allowed(v)]


def default_roots() -> list[Path]:
    """``mo_align/`` and, when it is a package, ``bench/``."""
    repo = Path(__file__).resolve().parents[1]
    return [repo / PACKAGE] + ([repo / "bench"] if (repo / "bench" / "__init__.py").is_file() else [])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    roots = [Path(a).resolve() for a in args] or default_roots()
    found, exempt = violations(roots)
    for line in found:
        sys.stdout.write(line + "\n")
    for line in exempt:
        sys.stdout.write(f"exempt ({line})\n")
    names = ", ".join(str(r) for r in roots)
    sys.stdout.write(f"layer check of {names}: {len(found)} violation(s), {len(exempt)} exempt\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
