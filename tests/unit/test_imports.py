"""The package's imports follow its architecture: declared directions only, no circle.

docs/architecture.md draws the tree: the handler's path (answer/) and the
reader's (reader/) side by side, never importing each other; below them what
both use (store/, config/, and addresses, audit and wakeup at the top of the
package); administration (admin/) above everything. Every import counts here,
wherever it is written: at the top of a module, inside a function (a lazy import
is still a dependency, only a cheaper one), or under TYPE_CHECKING (a type that
lives above its users is a circle waiting for the first run-time use).
"""

from __future__ import annotations

import ast
from pathlib import Path

from support import REPO

PACKAGE = REPO / "pbs_activated"

SHARED = {"addresses", "audit", "wakeup"}
"""The modules at the top of the package: below both paths, used by both."""

ALLOWED = {
    "entry": {"admin"},
    "admin": {"answer", "reader", "store", "config", "shared"},
    "answer": {"store", "config", "shared"},
    "reader": {"store", "config", "shared"},
    "store": {"config"},
    "shared": {"config"},
    "config": set(),
}
"""Which room may import which (besides itself and `pbs_activated` for __version__)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module of the package `path` imports, anywhere in its text."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from package import module` names a module
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imports(path, known) - {name} for name, path in modules().items()}


def room(module: str) -> str:
    """The part of the architecture a module belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] == "__main__":
        return "entry"
    if parts[1] in SHARED:
        return "shared"
    return parts[1]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_checks_see_a_circle_and_lazy_and_type_checking_imports() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    edges = graph()
    assert "pbs_activated.config.check" in edges["pbs_activated.config.load"]  # lazy
    assert "pbs_activated.config" in edges["pbs_activated.config.storeurl"]  # typing


def test_every_module_has_a_room() -> None:
    rooms = {room(module) for module in modules()}
    assert rooms == {*ALLOWED, "package"}


def test_no_import_circle_in_the_package() -> None:
    assert circles(graph()) == []


def test_imports_go_only_where_the_architecture_allows() -> None:
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if room(target) not in {room(source), "package", *ALLOWED.get(room(source), ())}
    )
    assert wrong == []


def test_the_two_paths_never_import_each_other() -> None:
    assert "reader" not in ALLOWED["answer"] and "answer" not in ALLOWED["reader"]
