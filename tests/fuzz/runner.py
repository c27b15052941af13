"""Run fuzz targets, each in its own subprocess, and report time, executions and crashes.

``run_target`` starts ``tests.fuzz.worker`` with ``-max_total_time``, a per-input
``-timeout`` and an ``-rss_limit_mb``; libFuzzer's evolving corpus goes to a work folder
(temporary unless given, so a longer run can resume from an earlier one), seeded with the
target's real encoded messages and its saved regression inputs. When a worker ends early (a
hang or a memory blow-up ends libFuzzer; ``stop_on_crash`` ends it on the first crash) the
runner starts it again for the time left, unless ``stop_on_crash``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.harness import CORPUS, regression_inputs

REPO = Path(__file__).resolve().parents[2]
_EXECS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_PULSE = re.compile(r"^#(\d+)\s", re.MULTILINE)
_CRASH = re.compile(r"^FUZZ-CRASH (\S+) (.*)$", re.MULTILINE)


@dataclass
class Report:
    """What one target's run did."""

    target: str
    seconds: float = 0.0
    executions: int = 0
    restarts: int = 0
    #: (saved input, signature) of every crash, hang or memory blow-up found.
    crashes: list[tuple[Path, str]] = field(default_factory=list)
    log: str = ""

    def line(self) -> str:
        found = ", ".join(f"{sig} ({p.name})" for p, sig in self.crashes) or "none"
        return (
            f"{self.target:20} {self.seconds:6.1f} s {self.executions:>10} execs"
            f"  crashes: {len(self.crashes)} [{found}]"
        )


def _seed(work: Path, name: str) -> None:
    """Write the target's seeds into its work corpus (imports the target plainly: cheap)."""
    from tests.fuzz.targets import load

    for data in load(name).seeds():
        path = work / f"seed-{hashlib.sha1(data).hexdigest()}"
        if not path.exists():
            path.write_bytes(data)


def run_target(
    name: str,
    seconds: float,
    *,
    timeout: int = 5,
    rss_limit_mb: int = 1536,
    work: Path | None = None,
    stop_on_crash: bool = False,
    verbose: bool = False,
    runs: int | None = None,
    seed: int | None = None,
) -> Report:
    """Fuzz ``name`` for ``seconds`` in total (see the module docstring). With ``runs`` and
    ``seed`` the run is libFuzzer's ``-runs``/``-seed``: the same inputs each time, so a test
    built on it is deterministic; ``seconds`` is then only a cap."""
    from tests.fuzz.targets import load

    report = Report(name)
    max_len = load(name).max_len
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        corpus = (work / name) if work is not None else Path(tmp)
        corpus.mkdir(parents=True, exist_ok=True)
        _seed(corpus, name)
        saved = CORPUS / name
        saved.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        started = time.monotonic()
        while (left := seconds - (time.monotonic() - started)) >= 1:
            before = {p.name for p in regression_inputs(name)}
            cmd = [
                sys.executable,
                "-m",
                "tests.fuzz.worker",
                name,
                *(["--stop-on-crash"] if stop_on_crash else []),
                f"-max_total_time={max(1, int(left))}",
                *([f"-runs={runs}"] if runs is not None else []),
                *([f"-seed={seed}"] if seed is not None else []),
                f"-timeout={timeout}",
                f"-rss_limit_mb={rss_limit_mb}",
                f"-max_len={max_len}",
                f"-artifact_prefix={saved}/",
                "-print_final_stats=1",
                "-report_slow_units=1000000",
                str(corpus),
                str(saved),
            ]
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    timeout=left + timeout + 180,  # start-up on a loaded machine
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:  # libFuzzer's own timeouts did not fire
                raw = exc.stdout  # bytes here, whatever text= said
                out = raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")
                if verbose:
                    sys.stderr.write(out)
                report.log += out + "\nworker killed: it outlived its time by three minutes\n"
                report.crashes.append((saved, "worker hung (killed by the runner)"))
                break
            out = proc.stdout
            report.log += out
            if verbose:
                sys.stderr.write(out)
            if m := _EXECS.search(out):
                report.executions += int(m.group(1))
            elif pulses := _PULSE.findall(out):
                report.executions += int(pulses[-1])
            found = {Path(p): sig for p, sig in _CRASH.findall(out)}
            for path in sorted(set(regression_inputs(name)) - {saved / b for b in before}):
                kind = path.name.split("-", 1)[0]
                report.crashes.append((path, found.get(path, kind)))
            for path, sig in found.items():  # an input saved before, met again
                if path.name in before and (path, sig) not in report.crashes:
                    report.crashes.append((path, sig))
            if proc.returncode == 0 or stop_on_crash:
                break
            report.restarts += 1
        report.seconds = time.monotonic() - started
    return report
