"""A Docker engine, a base image and the project's image for the deployment tests.

:func:`docker_engine` uses the engine that answers, or starts ``dockerd`` (as root) and stops
that one by its pid afterwards; it gives the reason to skip when no engine can start.
:func:`ensure_base_image` pulls ``python:3.11-slim`` or, where Docker Hub cannot be reached,
builds the stand-in with ``deploy/standin-base.sh`` (debootstrap). Both images are kept
afterwards: the next run on the machine builds from Docker's layer cache in seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim"
#: the tag the tests build: one fixed name, so that a rerun reuses its layers.
TEST_IMAGE = "p2pnode-test:latest"


class NoEngine(Exception):
    """No Docker engine answers or can be started here; the message says why."""


def run(
    argv: list[str], *, timeout: float, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` to its end, within ``timeout``; a non-zero exit raises with its stderr."""
    r = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stderr}{r.stdout}")
    return r


def _answers() -> bool:
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


@contextmanager
def docker_engine(log_dir: Path) -> Iterator[None]:
    """A Docker engine for the block: the running one, or a ``dockerd`` started (and stopped)
    here. Raises :class:`NoEngine` when there is none and none can start."""
    if shutil.which("docker") is None:
        raise NoEngine("no docker command (apt-get install docker.io)")
    if _answers():
        yield
        return
    if shutil.which("dockerd") is None:
        raise NoEngine("no Docker engine answers and there is no dockerd to start")
    if os.geteuid() != 0:
        raise NoEngine("no Docker engine answers, and starting dockerd needs root")
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "dockerd.log", "wb") as log:
        proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (log_dir / "dockerd.log").read_text(errors="replace")[-2000:]
                raise NoEngine(f"dockerd did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        yield
    finally:
        # Only the engine started here, by its pid; it stops its containerd itself.
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _has_image(tag: str) -> bool:
    r = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    return r.returncode == 0


def ensure_base_image() -> None:
    """``python:3.11-slim`` for the Dockerfile: present, pulled, or the stand-in built."""
    if _has_image(BASE_IMAGE):
        return
    pulled = subprocess.run(
        ["docker", "pull", BASE_IMAGE], capture_output=True, timeout=600, check=False
    )
    if pulled.returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        raise NoEngine(
            f"{BASE_IMAGE} cannot be pulled and the stand-in needs debootstrap "
            "(apt-get install debootstrap)"
        )
    run(["bash", str(REPO / "deploy" / "standin-base.sh"), BASE_IMAGE], timeout=900)


def build_image() -> str:
    """The project's Dockerfile, unchanged, built as :data:`TEST_IMAGE` (layers cached)."""
    run(["docker", "build", "-q", "-t", TEST_IMAGE, str(REPO)], timeout=1200)
    return TEST_IMAGE


__all__ = [
    "BASE_IMAGE",
    "REPO",
    "TEST_IMAGE",
    "NoEngine",
    "build_image",
    "docker_engine",
    "ensure_base_image",
    "run",
]
