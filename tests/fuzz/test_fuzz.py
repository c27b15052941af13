"""Every decoder's contract: saved regression inputs replayed, short atheris runs, and a plain
mutation fallback.

(a) ``test_saved_inputs_hold_the_contract``: every file under ``corpus/<target>/`` (and every
    seed) goes through its decoder, which must return or raise its own error. Fast; always on.
(b) ``test_fuzz_briefly`` (marked ``fuzz``; deselect with ``-m "not fuzz"``): each target under
    atheris in its own process for ``P2PNODE_FUZZ_RUNS`` inputs (default 3000) from a fixed
    libFuzzer seed, so the same inputs every run: a test that fails on one machine fails on all.
    ``P2PNODE_FUZZ_SECONDS`` instead fuzzes by time (new inputs each run: exploration, not a
    test to gate CI on). A crash fails the test and names the input it saved. Skipped, with the
    reason, when atheris is not importable.
(c) ``test_mutated_seeds_hold_the_contract``: a plain, deterministic mutator (bit flips, byte
    changes, cuts, splices of the seeds; and for CBOR decoders ``tests.fuzz.mutate``'s edits of
    the decoded value) for a few hundred inputs per target: the coverage-blind fallback, which
    runs with or without atheris.
"""

from __future__ import annotations

import importlib.util
import os
import random

import pytest

from tests.fuzz.harness import CORPUS, check, regression_inputs, save_input
from tests.fuzz.mutate import mutate
from tests.fuzz.targets import NAMES, load

HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None
SECONDS = float(os.environ.get("P2PNODE_FUZZ_SECONDS", "0"))
RUNS = int(os.environ.get("P2PNODE_FUZZ_RUNS", "3000"))
RUNS_CAP_SECONDS = 45  # a loaded machine may not reach RUNS; the test stays bounded
MUTATIONS = 300


def test_every_corpus_folder_names_a_target() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()} if CORPUS.is_dir() else set()
    assert folders <= set(NAMES), f"corpus folders without a target: {folders - set(NAMES)}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
def test_saved_inputs_hold_the_contract(name: str) -> None:
    target = load(name)
    seeds = target.seeds()
    assert seeds, f"{name} has no seeds"
    for data in seeds:
        check(target, data)
    for path in regression_inputs(name):
        try:
            check(target, path.read_bytes())
        except Exception as exc:
            pytest.fail(f"{path.relative_to(CORPUS.parent)}: {type(exc).__name__}: {exc}")


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(at, len(buf) - 1)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            del buf[at : at + rng.randint(1, 16)]
        elif op == 3:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf[at:] = other[cut:]
        else:
            del buf[at:]
    return bytes(buf)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
def test_mutated_seeds_hold_the_contract(name: str) -> None:
    target = load(name)
    pool = target.seeds() + [p.read_bytes() for p in regression_inputs(name)]
    rng = random.Random(name)

    def plain(data: bytes, max_size: int) -> bytes:
        return _mutate(rng, data, pool)[:max_size]

    for i in range(MUTATIONS):
        data = rng.choice(pool)
        if target.cbor_at is None:
            data = plain(data, target.max_len)
        else:
            data = mutate(data, target.max_len, i, at=target.cbor_at, fallback=plain)
        try:
            check(target, data)
        except Exception as exc:
            path = save_input(name, data)  # a regression case from now on
            pytest.fail(f"{name}: {type(exc).__name__}: {exc} (input saved as {path})")


@pytest.mark.fuzz
@pytest.mark.timeout(90)
@pytest.mark.skipif(not HAVE_ATHERIS, reason="atheris is not importable (pip install atheris)")
@pytest.mark.parametrize("name", NAMES)
def test_fuzz_briefly(name: str) -> None:
    from tests.fuzz.runner import run_target

    if SECONDS > 0:
        report = run_target(name, SECONDS, stop_on_crash=True)
    else:
        report = run_target(name, RUNS_CAP_SECONDS, stop_on_crash=True, runs=RUNS, seed=1)
    assert report.executions > 0, f"{name}: the fuzzer ran nothing\n{report.log[-3000:]}"
    assert not report.crashes, "\n".join(
        [f"{name}: inputs that break the contract (saved):"]
        + [f"  {path}: {sig}" for path, sig in report.crashes]
        + [report.log[-3000:]]
    )
