"""The deployment tests' Docker engine and image, shared by the module's tests (built once)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .engine import NoEngine, build_image, docker_engine, ensure_base_image


@pytest.fixture(scope="package")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's image built from the repository's Dockerfile, in an engine that answers
    (started here, and stopped after the last test, when none did)."""
    try:
        with docker_engine(tmp_path_factory.mktemp("dockerd")):
            ensure_base_image()
            yield build_image()
    except NoEngine as exc:
        pytest.skip(f"no Docker engine: {exc}")
