"""``python -m tests.fuzz run <target|all> --seconds N`` (see docs/fuzzing.md), ``list``,
and ``replay [target|all]`` (every saved input through its decoder, without atheris)."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="fuzz targets one after another")
    run.add_argument("target", help="a target name, names joined by commas, or 'all'")
    run.add_argument("--seconds", type=float, default=60.0, help="per target")
    run.add_argument("--timeout", type=int, default=5, help="seconds one input may take")
    run.add_argument("--rss-limit-mb", type=int, default=1536)
    run.add_argument("--work", type=Path, help="keep libFuzzer's corpus here (resumable)")
    run.add_argument("--stop-on-crash", action="store_true")
    run.add_argument("-v", "--verbose", action="store_true", help="print libFuzzer's output")
    sub.add_parser("list", help="name every target")
    rep = sub.add_parser("replay", help="run saved inputs through their decoders")
    rep.add_argument("target", nargs="?", default="all")
    args = parser.parse_args(argv)

    from tests.fuzz.targets import NAMES

    if args.cmd == "list":
        print("\n".join(NAMES))
        return 0
    names = NAMES if args.target == "all" else tuple(args.target.split(","))
    if args.cmd == "replay":
        return _replay(names)
    from tests.fuzz.runner import run_target

    bad = 0
    for name in names:
        report = run_target(
            name,
            args.seconds,
            timeout=args.timeout,
            rss_limit_mb=args.rss_limit_mb,
            work=args.work,
            stop_on_crash=args.stop_on_crash,
            verbose=args.verbose,
        )
        print(report.line(), flush=True)
        bad += bool(report.crashes)
    return 1 if bad else 0


def _replay(names: tuple[str, ...]) -> int:
    from tests.fuzz.harness import check, regression_inputs
    from tests.fuzz.targets import load

    failed = 0
    for name in names:
        target = load(name)
        for path in regression_inputs(name):
            try:
                check(target, path.read_bytes())
            except Exception:
                failed += 1
                print(f"{path}: contract broken", file=sys.stderr)
                traceback.print_exc()
    print(f"replay: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
