"""Check the import rules of the project's layers: `python -m tests.support.layers [--root DIR]`.

The architecture keeps a pure domain (`domain` imports only `domain`); projections follow
the event log and own the ports they need (`projections` imports `domain` and `projections`,
never `adapters`); adapters implement those ports and depend inward (they may import
anything). Every import counts, also those inside functions, `if TYPE_CHECKING:` blocks and
try/except, and relative imports are resolved. The checker also reports import cycles among
the project's modules (a file is a node; a package's `__init__.py` is the package's node).
It prints one line per finding, then a one-line summary; it exits 1 if it found anything.
"""

import argparse
import ast
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

LAYERS = ("domain", "projections", "adapters")
ALLOWED = {"domain": ("domain",), "projections": ("domain", "projections"), "adapters": LAYERS}

Graph = dict[str, dict[str, int]]  # importer -> imported node -> line of the first such import


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # absolute name of the project module imported, as written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.layers", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root")
    root: Path = parser.parse_args(argv).root
    paths = find_modules(root)
    imports = {module: imports_of(module, root / path, paths) for module, path in paths.items()}
    outward = outward_imports(imports, paths)
    graph = import_graph(imports, paths)
    cycles = [
        describe_cycle(scc, graph, paths)
        for scc in strongly_connected(graph)
        if is_cycle(scc, graph)
    ]
    for line in outward + cycles:
        print(line)
    counts = [(len(paths), "module"), (len(outward), "outward import"), (len(cycles), "cycle")]
    print("layers: " + ", ".join(plural(count, noun) for count, noun in counts))
    return 1 if outward or cycles else 0


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the three layers, by dotted name, with its path relative to root."""
    paths: dict[str, Path] = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            relative = path.relative_to(root)
            if "__pycache__" not in relative.parts:
                paths[module_name(relative)] = relative
    return paths


def module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(module: str, path: Path, paths: dict[str, Path]) -> list[Import]:
    """Every import of a project module anywhere in the file, nested ones included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_base(package, node)
            for alias in node.names if base is not None else []:
                submodule = f"{base}.{alias.name}" if base else alias.name
                target = submodule if submodule in paths or not base else base
                found += [Import(node.lineno, target)] if target else []
    return [item for item in dict.fromkeys(found) if item.target.split(".")[0] in LAYERS]


def from_base(package: str, node: ast.ImportFrom) -> str | None:
    """The absolute module a `from ... import` names; None if it climbs above the root."""
    if node.level == 0:
        return node.module
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def outward_imports(imports: dict[str, list[Import]], paths: dict[str, Path]) -> list[str]:
    findings = []
    for module, found in imports.items():
        layer = module.split(".")[0]
        rule = f"{layer} may import only {' and '.join(ALLOWED[layer])}"
        for item in found:
            if item.target.split(".")[0] not in ALLOWED[layer]:
                where = f"{paths[module].as_posix()}:{item.line}"
                findings.append(f"{where}: {module} imports {item.target} ({rule})")
    return findings


def import_graph(imports: dict[str, list[Import]], paths: dict[str, Path]) -> Graph:
    """Edges to the imported file, or to its nearest existing parent package; none implicit."""
    graph: Graph = {module: {} for module in paths}
    for module, found in imports.items():
        for item in sorted(found, key=lambda item: item.line):
            node = nearest_node(item.target, paths)
            if node is not None:
                graph[module].setdefault(node, item.line)
    return graph


def nearest_node(name: str, paths: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in paths:
            return ".".join(parts[:end])
    return None


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm; each component's members sorted, components in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def is_cycle(component: list[str], graph: Graph) -> bool:
    return len(component) > 1 or component[0] in graph[component[0]]


def describe_cycle(component: list[str], graph: Graph, paths: dict[str, Path]) -> str:
    """The shortest cycle through the component's first file, each step with its import's line;
    then the component's other files (each also on some cycle with these)."""
    walk = shortest_cycle(component[0], component, graph)
    steps = [f"{paths[b].as_posix()} (line {graph[a][b]})" for a, b in pairwise(walk)]
    others = [paths[member].as_posix() for member in component if member not in walk]
    also = f"; also in this cycle: {', '.join(others)}" if others else ""
    return "import cycle: " + " -> ".join([paths[walk[0]].as_posix(), *steps]) + also


def shortest_cycle(start: str, members: list[str], graph: Graph) -> list[str]:
    """Breadth first from start, inside the component, until an edge leads back to start."""
    came_from = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if start in graph[node]:
            path = [start, node]
            while path[-1] != start:
                path.append(came_from[path[-1]])
            return path[::-1]
        for step in sorted(graph[node]):
            if step in members and step not in came_from:
                came_from[step] = node
                queue.append(step)
    raise ValueError(f"{start} is on no import cycle")


if __name__ == "__main__":
    sys.exit(main())
