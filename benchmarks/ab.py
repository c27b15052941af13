"""Run benchmarks on two revisions of the code, alternately, in one run on one machine.

A restructuring must not make anything slower, and this 2-core VM drifts by 20% within
minutes, so "before" and "after" are measured back to back, in turns (A B A B ...), each
revision from its own git worktree with ``PYTHONPATH`` pointing at it (the daemons the
benchmarks start inherit it). Each run's output is kept whole under ``--out``; the figures
are read from there side by side.

    python benchmarks/ab.py --base 91de3e6 dht pbft          # base against the work tree
    python benchmarks/ab.py --base 91de3e6 --rounds 2 dht -- --nodes 8
    python benchmarks/ab.py --base 91de3e6 heartbeat -- --sizes 8 --sim 1000 --machine 1000

Arguments after ``--`` go to every benchmark named. Each revision runs its own copy of the
benchmark script, so a script that changed with the code still measures its own tree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worktree(rev: str, parent: Path) -> Path:
    path = parent / f"base-{rev[:12]}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev],
        check=True,
        capture_output=True,
    )
    return path


def run_one(tree: Path, name: str, extra: list[str], out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.monotonic()
    with out.open("w") as f:
        proc = subprocess.run(
            [sys.executable, str(tree / "benchmarks" / f"{name}.py"), *extra],
            cwd=tree,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            check=False,
        )
    took = time.monotonic() - started
    print(f"  {out.name}: exit {proc.returncode}, {took:.0f} s", flush=True)
    return took


def main() -> int:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the revision to compare against (git rev)")
    ap.add_argument("--rounds", type=int, default=1, help="A/B pairs per benchmark")
    ap.add_argument("--out", type=Path, default=None, help="where outputs go (default: a tmp dir)")
    ap.add_argument("benchmarks", nargs="+", help="names in benchmarks/: dht blobs pbft heartbeat")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="p2pnode-ab-"))
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="p2pnode-ab-trees-"))
    base = worktree(args.base, scratch)
    try:
        for name in args.benchmarks:
            for r in range(args.rounds):
                # Swap the order each round: a drifting machine favours neither side.
                pair = [("base", base), ("head", ROOT)]
                if r % 2:
                    pair.reverse()
                for label, tree in pair:
                    run_one(tree, name, extra, out / f"{name}.{r}.{label}.txt")
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
            check=False,
            capture_output=True,
        )
    print(f"outputs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
