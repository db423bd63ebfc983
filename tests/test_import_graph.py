"""The layout guard: lvsmon/ has no import cycle, and the arrows that run up are few and named.

The graph is read from the source with `ast`, not by importing it, so every import counts: at the
top of a module, inside a function (lazy), under `if TYPE_CHECKING:`, and
`importlib.import_module("literal")`. A node is a file; `from lvsmon.pkg import name` points at
`lvsmon/pkg/name.py` when that file exists, else at the package face (`lvsmon/pkg/__init__.py`).
A face re-exports its package's modules, so a module that imports its own package's face closes a
loop: inside a package, import the module that holds the name.

Layers run from the floor up; an arrow from a lower layer to a higher one must be listed in
PERMITTED_UPWARD with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lvsmon"

# Floor first. A module belongs to the first prefix that matches it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("lvsmon", "lvsmon.atomicfile", "lvsmon.text"),  # the package marker and leaf helpers
    ("lvsmon.ipvs", "lvsmon.checks", "lvsmon.routes"),  # kernel tables, checks: know nothing above
    ("lvsmon.config",),
    ("lvsmon.engine",),
    ("lvsmon.alerts",),
    ("lvsmon.api",),
    ("lvsmon.daemon",),
    ("lvsmon.cli", "lvsmon.__main__"),
)

# (importer, imported): why the arrow runs up.
PERMITTED_UPWARD: dict[tuple[str, str], str] = {
    ("lvsmon.config.alerting", "lvsmon.alerts.render"): (
        "check-config and reload must fail on a template directory Jinja2 cannot read; the"
        " import is lazy so that a config without alert templates never loads Jinja2"
    ),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(target: str, modules: set[str]) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(tree: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every lvsmon module this module's source can import, wherever the import stands."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            targets = [t if t in modules else base for t in targets]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            if target == "lvsmon" or target.startswith("lvsmon."):
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    found.add(resolved)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        name = module_name(f, root)
        tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
        graph[name] = imports_of(tree, name, f.name == "__init__.py", modules)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def a_cycle_through(component: Iterable[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete loop inside a component, for a readable failure."""
    members = set(component)
    start = min(members)
    path = [start]
    seen = {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        back = [n for n in nxt if n in seen]
        if back:
            return [*path[path.index(back[0]) :], back[0]]
        path.append(nxt[0])
        seen.add(nxt[0])


def layer_of(module: str) -> int:
    best = -1
    best_len = -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)}


def test_no_import_cycles() -> None:
    graph = import_graph()
    loops = [" -> ".join(a_cycle_through(c, graph)) for c in cycles(graph)]
    assert not loops, "import cycles in lvsmon/:\n  " + "\n  ".join(loops)


def test_upward_imports_are_listed() -> None:
    graph = import_graph()
    found = upward(graph)
    unlisted = sorted(found - PERMITTED_UPWARD.keys())
    lines = "\n  ".join(f"{a} -> {b}" for a, b in unlisted)
    assert not unlisted, f"imports from a lower layer up, not in PERMITTED_UPWARD:\n  {lines}"
    stale = sorted(PERMITTED_UPWARD.keys() - found)
    assert not stale, f"PERMITTED_UPWARD lists arrows that no longer exist: {stale}"


def test_every_module_has_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "lvsmon"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.parametrize(
    "b_text",
    [
        "from lvsmon.pkg.a import X\n",  # at the top
        "def f():\n    from lvsmon.pkg import a\n",  # lazy, and through the package
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import X\n",  # relative
        "import importlib\nm = importlib.import_module('lvsmon.pkg.a')\n",
    ],
)
def test_the_guard_sees_every_kind_of_import(tmp_path: Path, b_text: str) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "pkg/__init__.py": "from lvsmon.pkg.a import X\n",
            "pkg/a.py": "from lvsmon.pkg.b import Y\nX = 1\n",
            "pkg/b.py": b_text + "Y = 2\n",
        },
    )
    graph = import_graph(root)
    assert cycles(graph) == [["lvsmon.pkg.a", "lvsmon.pkg.b"]]
    assert a_cycle_through(cycles(graph)[0], graph) == [
        "lvsmon.pkg.a",
        "lvsmon.pkg.b",
        "lvsmon.pkg.a",
    ]


def test_a_face_importing_its_own_modules_is_no_cycle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "pkg/__init__.py": "from lvsmon.pkg.a import X\n",
            "pkg/a.py": "X = 1\n",
            "other.py": "from lvsmon.pkg import X\n",
        },
    )
    graph = import_graph(root)
    assert cycles(graph) == []
    assert graph["lvsmon.other"] == {"lvsmon.pkg"}
