"""``p2pnode job ...`` and ``p2pnode model get``: training jobs from the command line.

``job create SPEC`` commits a TOML spec (docs/jobs.md) and prints the job id; ``job list``,
``job status JOB`` and ``job cancel JOB`` read or change the committed log; ``job watch JOB``
is a live view (rich) of the job's rounds: the round and phase it is in, its participants,
accuracy and loss per round and the seconds of each phase, until the job ends or Ctrl-C.
``model get JOB [--round R] -o FILE`` writes a committed model as ``.npz``. A JOB may be any
unique prefix of the id. :class:`JobView` and :func:`watch` are also the demo's live view.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pnode.cli.support import CliError, client, print_result
from p2pnode.ipc.client import Client
from p2pnode.ipc.errors import IpcError

__all__ = ["JobView", "add_parsers", "cmd_job", "cmd_model", "watch"]

#: the seconds a create or cancel may take (the daemon waits up to 30 s for the commit).
COMMIT_WAIT = 60.0
PHASES = ("distribution", "training", "collection", "aggregation", "validation")
SHORT = {
    "distribution": "dist",
    "training": "train",
    "collection": "collect",
    "aggregation": "aggr",
    "validation": "valid",
}
#: rounds shown in the live view's table (the last ones).
VIEW_ROUNDS = 12


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``job ...`` and ``model get``."""
    job = sub.add_parser("job", help="training jobs: create, list, status, watch, cancel")
    jsub = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    create = jsub.add_parser(
        "create", parents=[common], help="commit a job from a TOML spec; prints its id"
    )
    create.add_argument("spec", metavar="SPEC", help="the spec file (docs/jobs.md), '-' for stdin")
    create.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the commit"
    )
    jsub.add_parser("list", parents=[common], help="every job the committed log holds")
    st = jsub.add_parser("status", parents=[common], help="a job's state and rounds")
    st.add_argument("job", metavar="JOB", help="the job id (or a unique prefix)")
    w = jsub.add_parser("watch", parents=[common], help="live view of a job until it ends")
    w.add_argument("job", metavar="JOB", help="the job id (or a unique prefix)")
    w.add_argument("--interval", type=float, default=0.5, help="seconds between redraws")
    c = jsub.add_parser("cancel", parents=[common], help="cancel a job")
    c.add_argument("job", metavar="JOB", help="the job id (or a unique prefix)")
    c.add_argument("--reason", default="cancelled by a user", help="why (kept in the log)")

    model = sub.add_parser("model", help="a job's committed models")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    get = msub.add_parser("get", parents=[common], help="write a committed model as .npz")
    get.add_argument("job", metavar="JOB", help="the job id (or a unique prefix)")
    get.add_argument("--round", type=int, help="the round (default: the last committed)")
    get.add_argument("-o", "--output", required=True, help="the .npz file to write")


# -- rendering ---------------------------------------------------------------------------------


def _num(x: Any, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def _phases(h: dict[str, Any]) -> str:
    p = h.get("phases") or {}
    parts = [f"{SHORT[k]} {p[k]:.2f}" for k in PHASES if k in p]
    return "  ".join(parts) or "-"


def status_text(s: dict[str, Any]) -> str:
    """``job status`` for people: a summary, then one line per committed round."""
    lines = [
        f"job          {s['job']} ({s['name']})",
        f"status       {s['status']}" + (f": {s['reason']}" if s.get("reason") else ""),
        f"round        {s['rounds_done']} of {s['rounds']} committed",
        f"accuracy     {_num(s['accuracy'])}   loss {_num(s['loss'])}",
        f"model        {s['model_key'] or '-'}",
        f"participants {len(s.get('tasks') or [])} this round",
    ]
    if s.get("history"):
        lines.append(
            f"{'ROUND':>5} {'ACC':>7} {'LOSS':>7} {'UPD':>4} {'OUT':>4} {'TOTAL':>6}  PHASES"
        )
        for h in s["history"]:
            total = (h.get("phases") or {}).get("total")
            lines.append(
                f"{h['round']:>5} {_num(h['accuracy']):>7} {_num(h['loss']):>7} "
                f"{h['updates']:>4} {len(h['outliers']):>4} {_num(total, '.2f'):>6}  {_phases(h)}"
            )
    return "\n".join(lines)


class JobView:
    """What ``job watch`` draws: the last ``job.status`` row plus the phase the round is in
    (from the ``rounds`` topic, which arrives before the status catches up)."""

    def __init__(self, title: str = "") -> None:
        self.title = title
        self.status: dict[str, Any] | None = None
        self.phase: tuple[int, str, float] | None = None  # round, phase, since (monotonic)
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.phase = (int(event.get("round", 0)), str(event.get("phase", "")), time.monotonic())

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            s, phase = self.status, self.phase
        if s is None:
            return Text("waiting for the job…")
        elapsed = time.monotonic() - self.started
        head = Text.assemble(
            (f"{self.title or s['name']}  ", "bold"),
            f"job {s['job'][:16]}  ",
            (s["status"], "green" if s["status"] in ("running", "completed") else "red"),
            f"  round {s['rounds_done']}/{s['rounds']}  ",
            f"accuracy {_num(s['accuracy'])}  loss {_num(s['loss'])}  {elapsed:.0f} s",
        )
        now = ""
        if phase is not None and s["status"] == "running":
            rnd, name, since = phase
            now = (
                f"round {rnd}: {name} ({time.monotonic() - since:.1f} s), "
                f"{len(s.get('tasks') or [])} participants"
            )
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("round", "accuracy", "loss", "updates", "outliers", *PHASES, "total"):
            table.add_column(SHORT.get(col, col), justify="right")
        for h in (s.get("history") or [])[-VIEW_ROUNDS:]:
            p = h.get("phases") or {}
            table.add_row(
                str(h["round"]),
                _num(h["accuracy"]),
                _num(h["loss"]),
                str(h["updates"]),
                str(len(h["outliers"])),
                *(_num(p.get(k), ".2f") for k in PHASES),
                _num(p.get("total"), ".2f"),
            )
        return Group(head, Text(now, style="cyan"), table)


def _follow_phases(connect: Callable[[], Client], view: JobView, job: str) -> Client | None:
    """Feed ``view`` the ``rounds`` events of ``job`` from a thread; returns the subscription's
    client, whose closing ends the thread (None if the daemon refused the subscription)."""
    try:
        sub = connect()
        events = sub.subscribe("rounds")
    except IpcError:
        return None

    def run() -> None:
        try:
            for e in events:
                if str(e.get("job", "")).startswith(job):
                    view.on_event(e)
        except (OSError, IpcError, ValueError):
            pass  # the connection closed: the watch is over

    threading.Thread(target=run, daemon=True, name="job-watch-events").start()
    return sub


def watch(
    connect: Callable[[], Client],
    job: str,
    *,
    view: JobView | None = None,
    interval: float = 0.5,
    live: bool = True,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Poll ``job.status`` until the job is no longer running (or ``timeout`` seconds), drawing
    ``view`` live on a terminal when ``live``; returns the last status row."""
    from rich.live import Live

    view = view or JobView()
    deadline = None if timeout is None else time.monotonic() + timeout
    sub = _follow_phases(connect, view, job)
    try:
        with connect() as c:
            s = c.call("job.status", {"job": job})
            view.status = s
            with Live(view, refresh_per_second=4) if live else contextlib.nullcontext():
                while s["status"] == "running":
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    time.sleep(interval)
                    s = c.call("job.status", {"job": job})
                    view.status = s
            return s
    finally:
        if sub is not None:
            sub.close()


# -- commands --------------------------------------------------------------------------------


def _read_spec(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}") from None


def cmd_job(args: argparse.Namespace) -> int:
    action = args.job_command
    if action == "create":
        text = _read_spec(args.spec)
        with Client(
            socket_path=args.socket, data_dir=args.data_dir, timeout=args.timeout + COMMIT_WAIT
        ) as c:
            r = c.call("job.create", {"spec": text, "timeout": args.timeout})
        print_result(args, r, r["job"])
        return 0
    if action == "watch":

        def connect() -> Client:
            return client(args)

        tty = sys.stdout.isatty() and not args.json
        s = watch(connect, args.job, interval=args.interval, live=tty)
        if args.json:
            print_result(args, s, "")
        elif not tty:
            print(status_text(s))
        return 0 if s["status"] in ("completed", "running") else 1
    if action == "cancel":
        with Client(socket_path=args.socket, data_dir=args.data_dir, timeout=COMMIT_WAIT) as c:
            r = c.call("job.cancel", {"job": args.job, "reason": args.reason})
        print_result(args, r, f"cancelled {r['job']} (log seq {r['seq']})")
        return 0
    with client(args) as c:
        if action == "list":
            r = c.call("job.list")
            rows = [
                f"{j['job'][:16]}  {j['name']:<12} {j['status']:<10} "
                f"{j['rounds_done']:>3}/{j['rounds']:<3} acc {_num(j['accuracy'])}"
                for j in r["jobs"]
            ]
            print_result(args, r, "\n".join(rows) if rows else "(no jobs)")
        elif action == "status":
            r = c.call("job.status", {"job": args.job})
            print_result(args, r, status_text(r))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"job": args.job, "path": str(Path(args.output).absolute())}
    if args.round is not None:
        params["round"] = args.round
    with client(args) as c:
        r = c.call("model.get", params)
    acc = f", accuracy {r['accuracy']:.4f}" if r.get("accuracy") is not None else ""
    print_result(args, r, f"wrote {r['path']} (round {r['round']}{acc}, model {r['key']})")
    return 0
