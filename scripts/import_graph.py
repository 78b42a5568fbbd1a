"""The package's import graph, checked against its layers: no circle, no upward import.

``python scripts/import_graph.py`` parses every module under ``fer_func/`` with ``ast`` (no import is run), collects
every ``import`` in it, at module level and inside functions alike (a lazy import inside a function is how a circle
hides: it still ties the two modules together, it just fails later), and prints

- each circle: a set of modules that reach one another (a strongly connected component of more than one module), and
- each upward edge: a module importing one that sits on a higher floor of ``LAYERS``.

It exits 1 if it found either, 0 otherwise (``tests/test_import_graph.py`` runs it). ``--edges`` also prints every
edge, for reading the graph.

What it cannot see: ``importlib.import_module(name)`` with a computed name, and the implicit import of a parent
package's ``__init__`` (``import fer_func.study.run`` runs ``fer_func/study/__init__.py``); no ``__init__`` here
imports upward, and the script keeps it honest by parsing the ``__init__`` files like any other module.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "fer_func"
ROOT = Path(__file__).resolve().parent.parent

# Floors, top first. A module may import its own floor or any floor below it, never one above; peers on a floor may
# import one another as long as that makes no circle. Each entry is a module or a package (a prefix of one).
# The applications (what the CLI dispatches to) are read in order: use, bench and the Ray layer build on searches
# and studies, a search builds on a study (its experiments file, its training loop), and the study code imports
# none of them: a --ray run enters through distributed/ray_run.run, a [search] table is parsed by study/space.py.
LAYERS: list[tuple[str, list[str]]] = [
    ("entry point", ["fer_func.cli", "fer_func.__main__"]),
    ("applications", ["fer_func.use", "fer_func.bench", "fer_func.distributed"]),
    ("searches", ["fer_func.search"]),
    ("studies", ["fer_func.study"]),
    ("population", ["fer_func.population"]),
    ("parts", ["fer_func.optim", "fer_func.models", "fer_func.nn", "fer_func.data"]),
    ("base", ["fer_func.prng", "fer_func.tree", "fer_func.config", "fer_func.runtime", "fer_func.native",
              "fer_func"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its ``__init__``)."""
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` names or lies in (``fer_func.study.run.train`` -> ``fer_func.study.run``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that ``module`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    # `if TYPE_CHECKING:` imports exist for annotations only and never run: no edge of the graph.
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, up level-1 more
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name` imports pkg.name when that is a module, else a name from pkg itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = _resolve(target, known)
                if resolved is not None and resolved != module:
                    found.add(resolved)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def floor(module: str) -> int:
    """The index of ``module``'s floor in ``LAYERS`` (0 is the top), by its longest matching entry."""
    best, best_len = None, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best_len:
                best, best_len = index, len(entry)
    if best is None:
        raise SystemExit(f"import_graph: module {module!r} is on no floor of LAYERS; add it to the table in "
                         f"{Path(__file__).name}")
    return best


def upward_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in edges.items() for b in targets if floor(b) < floor(a))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return sorted(found)


def short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".").replace(".", "/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="also print every import edge")
    args = parser.parse_args(argv)
    edges = graph()
    if args.edges:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{short(a)} -> {short(b)}")
    found_circles = circles(edges)
    found_upward = upward_edges(edges)
    for component in found_circles:
        inside = [f"{short(a)} -> {short(b)}" for a in component for b in sorted(edges[a]) if b in component]
        print(f"circle: {' , '.join(short(m) for m in component)}  ({'; '.join(inside)})")
    for a, b in found_upward:
        print(f"upward: {short(a)} ({LAYERS[floor(a)][0]}) -> {short(b)} ({LAYERS[floor(b)][0]})")
    n_edges = sum(len(t) for t in edges.values())
    print(f"{len(edges)} modules, {n_edges} imports: {len(found_circles)} circles, {len(found_upward)} upward")
    return 1 if found_circles or found_upward else 0


if __name__ == "__main__":
    sys.exit(main())
