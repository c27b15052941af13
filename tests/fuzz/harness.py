"""What every fuzz target shares: the decoder's contract, crash signatures and saving inputs.

A target is a :class:`Target`: a ``decode`` function taking raw bytes and the exception types
its decoder is allowed to raise. The contract: on any input ``decode`` returns or raises one of
``allowed``; anything else (an IndexError, a RecursionError, a MemoryError, ...) is a bug, and
the input that caused it is saved under ``corpus/<target>/`` as a regression case.

This module imports nothing of p2pnode, so the fuzz worker can import a target's decoder
modules for the first time inside ``atheris.instrument_imports`` (see :func:`instrumented`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Where regression inputs live, one folder per target.
CORPUS = Path(__file__).resolve().parent / "corpus"

#: Set by the fuzz worker before it imports a target: only then are the decoder modules
#: instrumented for coverage (in pytest they are imported plainly, and run at full speed).
INSTRUMENT = os.environ.get("P2PNODE_FUZZ_INSTRUMENT") == "1"


@contextlib.contextmanager
def instrumented(*modules: str) -> Iterator[None]:
    """Import the decoder's ``modules`` (and their submodules) inside this block: under the
    fuzz worker they are instrumented for atheris's coverage feedback; elsewhere this does
    nothing.

    ``atheris.instrument_imports`` takes only the top-level package of each name it is given,
    so every other module of those packages is passed as ``exclude``: instrumenting all of
    p2pnode costs seconds of start-up and dilutes the coverage signal with code no input
    reaches."""
    if not INSTRUMENT:
        yield
        return
    import atheris

    def wanted(name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in modules)

    tops = {m.split(".")[0] for m in modules}
    exclude = [n for top in sorted(tops) for n in _modules_of(top) if not wanted(n)]
    with atheris.instrument_imports(include=list(modules), exclude=exclude):
        yield


def _modules_of(package: str) -> list[str]:
    """Every module name of ``package``, read from its folders (nothing is imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return [package]
    names = [package]
    for root in spec.submodule_search_locations:
        for path in Path(root).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((package, *parts)))
    return names


@dataclass(frozen=True)
class Target:
    """One decoder under the fuzzer.

    ``decode`` must be a pure function of its bytes (a replayed input must do what it did
    under the fuzzer). ``seeds`` returns real encoded messages for the fuzzer to start from.
    ``max_len`` bounds the inputs libFuzzer generates.
    """

    name: str
    decode: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    max_len: int = 4096
    #: Where a CBOR item starts in an input, for the structure-aware mutator
    #: (``tests.fuzz.mutate``); None: libFuzzer's byte mutations only.
    cbor_at: int | None = None
    #: What the decoder is and where peers' or clients' bytes reach it (docs/fuzzing.md).
    doc: str = field(default="")


def check(target: Target, data: bytes) -> None:
    """Run one input through the target: return if it holds the contract, else raise what the
    decoder raised (an exception not in ``target.allowed``)."""
    with contextlib.suppress(*target.allowed):
        target.decode(data)


def crash_signature(exc: BaseException) -> str:
    """Exception type and the innermost frame of project code: one line per distinct bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "p2pnode" in f.filename or "/protocols/" in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    at = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    return f"{type(exc).__name__} at {at}"


def save_input(target: str, data: bytes, kind: str = "crash") -> Path:
    """Keep ``data`` as a regression input of ``target``: ``corpus/<target>/<kind>-<sha1>``."""
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{hashlib.sha1(data).hexdigest()}"
    if not path.exists():
        path.write_bytes(data)
    return path


def regression_inputs(target: str) -> list[Path]:
    """Every saved input of ``target`` (crash-, timeout- and oom- files), sorted by name."""
    folder = CORPUS / target
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
