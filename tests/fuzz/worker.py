"""One fuzz target under atheris, in its own process: ``python -m tests.fuzz.worker NAME
[--stop-on-crash] [libFuzzer flags and corpus folders]``. The runner (``runner.py``) starts it.

The decoder's modules are imported inside ``atheris.instrument_imports`` (coverage feedback),
then libFuzzer calls :func:`tests.fuzz.harness.check` with each input. An exception outside the
decoder's contract is a crash: its input is saved under ``corpus/<NAME>/crash-<sha1>`` and a
line ``FUZZ-CRASH <path> <signature>`` is printed. Without ``--stop-on-crash`` the run goes on
(the first input of each distinct signature is kept), so one long run reports every bug it
meets; with it the first crash ends the run with exit status 1 (what the tests want). Hangs and
memory blow-ups are libFuzzer's to catch (``-timeout``, ``-rss_limit_mb``): it writes them as
``timeout-<sha1>`` / ``oom-<sha1>`` under the same folder (the runner passes it as
``-artifact_prefix``).
"""

from __future__ import annotations

import os
import sys
import traceback


def main(argv: list[str]) -> None:
    os.environ["P2PNODE_FUZZ_INSTRUMENT"] = "1"
    import atheris

    from tests.fuzz import harness

    harness.INSTRUMENT = True
    from tests.fuzz.targets import load

    name, rest = argv[0], argv[1:]
    stop = "--stop-on-crash" in rest
    rest = [a for a in rest if a != "--stop-on-crash"]
    target = load(name)  # imports the decoder modules under instrumentation
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        try:
            harness.check(target, data)
        except Exception as exc:
            sig = harness.crash_signature(exc)
            if sig in seen and not stop:
                return
            seen.add(sig)
            path = harness.save_input(name, data)
            print(f"FUZZ-CRASH {path} {sig}", file=sys.stderr, flush=True)
            traceback.print_exception(exc, file=sys.stderr)
            if stop:
                sys.stderr.flush()
                os._exit(1)  # libFuzzer would also write its own copy of the input

    if target.cbor_at is None:
        atheris.Setup([sys.argv[0], *rest], one_input)
    else:
        from tests.fuzz.mutate import mutate

        at = target.cbor_at

        def cbor_mutator(data: bytes, max_size: int, seed: int) -> bytes:
            return mutate(data, max_size, seed, at=at, fallback=atheris.Mutate)

        atheris.Setup([sys.argv[0], *rest], one_input, custom_mutator=cbor_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
