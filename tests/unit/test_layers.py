"""The layering rules (docs: /work/shared/ARCHITECTURE.md, "Layers"), read from the import
statements of every module (with ``ast``, so imports inside functions count too):

- ``protocols/`` imports nothing from ``p2pnode`` or ``simulations``;
- ``simulations/`` imports nothing from ``p2pnode`` but ``p2pnode.training`` (the learning
  library);
- no service package imports the IPC layer ``p2pnode.ipc``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("blobs", "consensus", "membership", "network", "store", "training")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved). ``from a import b``
    counts as ``a.b``, since ``b`` may be a module (if it is not, ``a.b`` is still under ``a``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
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
    assert "protocols.heartbeat.core.MAX_SMALL_MAPS" in found  # from .core import MAX_SMALL_MAPS
    assert "protocols.machine.Effect" in imports(ROOT / "protocols" / "heartbeat" / "events.py")
    assert "simulations.sim.clock.SimClock" in imports(ROOT / "simulations" / "sim" / "__init__.py")
    assert not any(m.startswith(".") for m in found)


def test_protocols_import_neither_the_daemon_nor_the_simulator() -> None:
    bad = _offending(
        _modules("protocols"), lambda m: _under(m, "p2pnode") or _under(m, "simulations")
    )
    assert not bad, "\n".join(bad)


def test_simulations_import_only_the_learning_library_from_the_daemon() -> None:
    bad = _offending(
        _modules("simulations"),
        lambda m: _under(m, "p2pnode") and not _under(m, "p2pnode.training"),
    )
    assert not bad, "\n".join(bad)


@pytest.mark.xfail(strict=False, reason="IPC adapters move in another branch")
def test_no_service_imports_the_ipc_layer() -> None:
    paths = _modules(*(f"p2pnode/{s}" for s in SERVICES))
    bad = _offending(paths, lambda m: _under(m, "p2pnode.ipc"))
    assert not bad, "\n".join(bad)
