"""The layering rules (docs: /work/shared/ARCHITECTURE.md, "Layers"), read from the import
statements of every module (with ``ast``, so imports inside functions count too):

- ``protocols/`` (installed as ``p2pnode_protocols``) imports nothing from ``p2pnode`` or
  ``p2pnode_simulations``;
- ``simulations/`` (installed as ``p2pnode_simulations``) imports nothing from ``p2pnode`` but
  ``p2pnode.training`` (the learning library), except the testbed's swarm module, which runs
  real daemons and so uses their doors (``p2pnode.swarm`` and the IPC client) and no more;
- no service package imports the IPC layer ``p2pnode.ipc``;
- nothing but the daemon, the CLI and ``swarm`` imports the composition root ``p2pnode.node``;
- no two modules of the project import each other, directly or round a circle, at import time
  (imports inside functions are deliberate late imports and do not count).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The repository's folders ``protocols/`` and ``simulations/`` install under these names
# (pyproject.toml's package-dir), so that site-packages gets no generic top-level names.
IMPORT_NAMES = {"protocols": "p2pnode_protocols", "simulations": "p2pnode_simulations"}
SERVICES = ("blobs", "consensus", "membership", "network", "store", "training")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    parts[0] = IMPORT_NAMES.get(parts[0], parts[0])
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved). ``from a import b``
    counts as ``a.b``, since ``b`` may be a module (if it is not, ``a.b`` is still under ``a``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return _resolved(ast.walk(tree), path)


def _resolved(nodes: Iterable[ast.AST], path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.update(
                module if alias.name == "*" else f"{module}.{alias.name}" for alias in node.names
            )
    return found


def _modules(*dirs: str) -> list[Path]:
    paths = [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]
    assert paths, dirs
    return paths


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _offending(paths: list[Path], bad: Callable[[str], bool]) -> list[str]:
    return [
        f"{p.relative_to(ROOT)} imports {m}" for p in paths for m in sorted(imports(p)) if bad(m)
    ]


def test_the_import_reader_resolves_relative_imports() -> None:
    found = imports(ROOT / "protocols" / "heartbeat" / "machine.py")
    assert "p2pnode_protocols.heartbeat.core.MAX_SMALL_MAPS" in found  # from .core import ...
    events = imports(ROOT / "protocols" / "heartbeat" / "events.py")
    assert "p2pnode_protocols.machine.Effect" in events
    sim = imports(ROOT / "simulations" / "sim" / "__init__.py")
    assert "p2pnode_simulations.sim.clock.SimClock" in sim
    assert not any(m.startswith(".") for m in found)


def test_protocols_import_neither_the_daemon_nor_the_simulator() -> None:
    bad = _offending(
        _modules("protocols"), lambda m: _under(m, "p2pnode") or _under(m, "p2pnode_simulations")
    )
    assert not bad, "\n".join(bad)


def test_simulations_import_only_the_learning_library_from_the_daemon() -> None:
    testbed_swarm = ROOT / "simulations" / "testbed" / "swarm.py"
    paths = [p for p in _modules("simulations") if p != testbed_swarm]
    bad = _offending(paths, lambda m: _under(m, "p2pnode") and not _under(m, "p2pnode.training"))
    # The testbed's swarm starts real daemons: through p2pnode.swarm and the IPC client only.
    doors = ("p2pnode.swarm", "p2pnode.ipc.client")
    bad += _offending(
        [testbed_swarm],
        lambda m: _under(m, "p2pnode") and not any(_under(m, d) for d in doors),
    )
    assert not bad, "\n".join(bad)


def test_no_service_imports_the_ipc_layer() -> None:
    paths = _modules(*(f"p2pnode/{s}" for s in SERVICES))
    bad = _offending(paths, lambda m: _under(m, "p2pnode.ipc"))
    assert not bad, "\n".join(bad)


def test_only_the_doors_import_the_composition_root() -> None:
    doors = {ROOT / "p2pnode" / f"{m}.py" for m in ("daemon", "swarm")}
    doors |= set((ROOT / "p2pnode" / "cli").glob("*.py"))
    paths = [p for p in _modules("p2pnode", "protocols", "simulations") if p not in doors]
    bad = _offending(paths, lambda m: _under(m, "p2pnode.node"))
    assert not bad, "\n".join(bad)


def _top_level_imports(path: Path) -> set[str]:
    """Like :func:`imports`, but only what runs when the module is imported (not inside a
    function or class body)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    keep: list[ast.stmt] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            keep.append(node)
        elif isinstance(node, ast.If | ast.Try):
            todo += [
                *node.body,
                *node.orelse,
                *getattr(node, "handlers", []),
                *getattr(node, "finalbody", []),
            ]
        elif isinstance(node, ast.ExceptHandler):
            todo += node.body
    return _resolved(keep, path)


def test_no_import_circles() -> None:
    paths = _modules("p2pnode", "protocols", "simulations")
    by_name = {_module_name(p): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in by_name.items():
        # An import of a package's name runs its __init__; a package face that only hands
        # names on is still a module that runs, so it stays in the graph.
        targets = set()
        for m in _top_level_imports(path):
            # ``from a import b``: the module a.b if there is one, else the module a.
            module = m if m in by_name else m.rpartition(".")[0]
            if module in by_name and module != name:
                targets.add(module)
        graph[name] = targets
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, circles
