"""The import graph of a package, from its source (:mod:`ast`, nothing imported): the edges, with in-function
imports and the parents each import runs, and the graph's cycles. Used by ``scripts/layer_check.py``.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


JUSTIFIED = re.compile(r"\b(optional|lazy)\b", re.IGNORECASE)  # a nested import's comment says why


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (of the packages checked, unless external)
    line: int
    names: tuple[str, ...]  # names taken from the target by ``from target import ...``
    typing_only: bool  # under ``if TYPE_CHECKING:``: never run, so no edge of the runtime graph
    external: bool = False  # a module outside the packages checked (kept for the layer rules: ``bench``)


@dataclass(frozen=True)
class Nested:
    module: str
    line: int
    target: str  # what it imports (any module: the package's, the standard library's, a third party's)
    justified: bool


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def package_of(module: str, modules: dict[str, Path]) -> str:
    return module if is_package(module, modules) else module.rpartition(".")[0]


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _comment(line: str) -> str:
    """The comment of a source line ('' if none); a '#' inside a string literal is rare enough to ignore here."""
    return line[line.index("#") :] if "#" in line else ""


def _justified(lines: list[str], first: int, last: int) -> bool:
    """A comment on lines first..last (1-based) or on the comment lines just above ``first`` says why."""
    texts = [_comment(lines[i - 1]) for i in range(first, last + 1)]
    above = first - 1
    while above >= 1 and lines[above - 1].strip().startswith(("#", "try:")):
        texts.append(lines[above - 1])
        above -= 1
    return any(JUSTIFIED.search(text) for text in texts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    """The imports of one module: (target, names, line, nested, justified, typing only) each."""

    def __init__(self, package: str, lines: list[str]) -> None:
        self.package, self.lines = package, lines
        self.found: list[tuple[str, tuple[str, ...], int, bool, bool, bool]] = []
        self.depth = self.typing = 0

    def _scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _scope

    def visit_If(self, node: ast.If) -> None:
        typing = _is_type_checking(node.test)
        self.typing += typing
        self._group(node.body)
        for child in node.body:
            self.visit(child)
        self.typing -= typing
        self._group(node.orelse)
        for child in node.orelse:
            self.visit(child)

    def generic_visit(self, node: ast.AST) -> None:
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                self._group(block)
        super().generic_visit(node)

    def _group(self, block: list[ast.AST]) -> None:
        """Record the imports of a block; consecutive imports share the comment above the first one."""
        first = None
        for stmt in block:
            if not isinstance(stmt, ast.Import | ast.ImportFrom):
                first = None
                continue
            first = stmt.lineno if first is None else first
            justified = _justified(self.lines, first, stmt.end_lineno)
            for target, names in self._targets(stmt):
                self.found.append((target, names, stmt.lineno, self.depth > 0, justified, self.typing > 0))

    def _targets(self, stmt: ast.Import | ast.ImportFrom) -> list[tuple[str, tuple[str, ...]]]:
        if isinstance(stmt, ast.Import):
            return [(alias.name, ()) for alias in stmt.names]
        base = stmt.module or ""
        if stmt.level:
            parts = self.package.split(".")
            parts = parts[: len(parts) - stmt.level + 1]
            base = ".".join([*parts, base] if base else parts)
        return [(base, tuple(alias.name for alias in stmt.names))]


def _resolve(target: str, names: tuple[str, ...], modules: dict[str, Path]) -> list[tuple[str, tuple[str, ...], bool]]:
    """The modules of the packages one import statement runs, with the names taken from each and whether it is
    named (``import a.b`` and ``from a.b import name`` name ``a.b``; ``from a import b`` names the submodule only)."""
    if target not in modules:
        return []
    taken = tuple(n for n in names if f"{target}.{n}" not in modules)
    out = [(target, taken, bool(taken) or not names)]
    out += [(f"{target}.{n}", (), True) for n in names if f"{target}.{n}" in modules]
    return out


def _edges(name: str, found: tuple, modules: dict[str, Path]) -> list[Import]:
    """The imports one statement makes: every module of the packages it runs, parents included, or the external
    module it names."""
    target, names, line, _, _, typing = found
    resolved = _resolve(target, names, modules)
    if not resolved:
        return [Import(name, target, line, names, typing, external=True)]
    out = []
    for module, taken, named in resolved:
        # a module's parents run first, except those already running (the importer's own parents); a package named
        # in the import is a dependency even then (its names are read)
        hits = [p for p in _ancestors(module) if p not in _ancestors(name)]
        hits += [module] if named or module not in _ancestors(name) else []
        out += [Import(name, hit, line, taken if hit == module else (), typing) for hit in hits if hit != name]
    return out


def collect(roots: list[Path]) -> tuple[dict[str, Path], list[Import], list[Nested]]:
    """The packages' modules, every import they make (one per module it runs) and the nested imports."""
    modules = {name: path for root in roots for name, path in module_names(root).items()}
    imports, nested = [], []
    for name, path in modules.items():
        text = path.read_text()
        collector = _Collector(package_of(name, modules), text.splitlines())
        collector.visit(ast.parse(text, filename=str(path)))
        for found in collector.found:
            if found[3]:
                nested.append(Nested(name, found[2], found[0], found[4]))
            imports += _edges(name, found, modules)
    return modules, imports, nested


def graph_of(imports: list[Import]) -> dict[str, set[str]]:
    """The runtime import graph between the packages' modules."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        if not imp.typing_only and not imp.external:
            graph[imp.source].add(imp.target)
    return graph


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def enter(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        work.append((node, iter(sorted(graph.get(node, ())))))

    for start in sorted(graph):
        if start in index:
            continue
        work: list = []
        enter(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = [stack.pop()]
                    while component[-1] != node:
                        component.append(stack.pop())
                    on_stack.difference_update(component)
                    if len(component) > 1:
                        out.append(sorted(component))
            elif child not in index:
                enter(child)
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(out)


def _shortest_cycle(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest cycle through ``start`` inside its component (breadth first), ``start`` at both ends."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for child in sorted(graph.get(node, ())):
            if child == start:
                return [*paths[node], start]
            if child in members and child not in paths:
                paths[child] = [*paths[node], child]
                todo.append(child)
    raise AssertionError(f"{start} is on no cycle of its component")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """For every node on a cycle, a shortest cycle through it (each cycle once, from its least node)."""
    out = []
    for component in _components(graph):
        for start in component:
            cycle = _shortest_cycle(graph, set(component), start)[:-1]
            first = cycle.index(min(cycle))
            cycle = [*cycle[first:], *cycle[:first], cycle[first]]
            if cycle not in out:
                out.append(cycle)
    return out
