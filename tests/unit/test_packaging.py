"""What ``pip install .`` puts into site-packages: only top-level names that belong to this
project (issue 15, "Packaging"). The repository's folders ``protocols/`` and ``simulations/``
install as ``p2pnode_protocols`` and ``p2pnode_simulations`` (pyproject.toml's package-dir),
since generic names like ``protocols`` would clash with other distributions.

The wheel is built from a copy of the sources in a temporary directory, so the build leaves no
``build/`` or ``*.egg-info`` in the checkout, then installed with ``pip install --target``, and
the installed distribution's metadata is read with ``importlib.metadata``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this venv")

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
# Repository folder -> the import name it installs as.
FOLDERS = {
    "p2pnode": "p2pnode",
    "protocols": "p2pnode_protocols",
    "simulations": "p2pnode_simulations",
}
EXPECTED = set(FOLDERS.values())
SOURCES = ("pyproject.toml", "README.md", "LICENSE", *FOLDERS)


def _pip(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the venv's setuptools builds it, without a download.
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src), cwd=src)
    (built,) = out.glob("p2pnode-*.whl")
    return built


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_the_wheel_has_only_the_projects_top_level_names(wheel: Path) -> None:
    names = _names(wheel)
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    with zipfile.ZipFile(wheel) as z:
        declared = set(z.read(top_level).decode().split())
    assert declared == EXPECTED
    in_record = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert in_record == EXPECTED


def test_the_wheel_holds_every_module_of_the_three_folders(wheel: Path) -> None:
    """The package list in pyproject.toml is explicit (a find directive cannot rename): a new
    subpackage missing from it would be silently left out of the install."""
    names = set(_names(wheel))
    missing = [
        f"{folder}/{path.relative_to(ROOT / folder)}"
        for folder, name in FOLDERS.items()
        for path in sorted((ROOT / folder).rglob("*.py"))
        if f"{name}/{path.relative_to(ROOT / folder).as_posix()}" not in names
    ]
    assert not missing, "add to [tool.setuptools] packages in pyproject.toml: " + ", ".join(missing)
    assert "p2pnode/training/data/digits.npz" in names
    assert "p2pnode/py.typed" in names


def test_an_install_puts_no_generic_names_into_site_packages(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    _pip(
        "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel), cwd=tmp_path
    )
    assert not (site / "protocols").exists()
    assert not (site / "simulations").exists()
    dists = [d for d in importlib.metadata.distributions(path=[str(site)]) if d.name == "p2pnode"]
    assert len(dists) == 1
    dist = dists[0]
    assert set((dist.read_text("top_level.txt") or "").split()) == EXPECTED
    installed = {Path(str(f)).parts[0] for f in dist.files or []}
    packages = {p for p in installed if not p.endswith(".dist-info") and p not in ("..", "bin")}
    assert packages == EXPECTED
    urls = dist.metadata.get_all("Project-URL") or []
    assert any(u.startswith("Repository, https://github.com/p2pnode/p2pnode") for u in urls)
    # The installed names import from the install, not from the checkout.
    probe = (
        "import p2pnode_protocols.pbft, p2pnode_simulations.sim; "
        "print(p2pnode_protocols.pbft.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(site))
