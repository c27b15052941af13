"""Drive a training job over a swarm while a schedule hurts it, and check what must hold.

The run has three phases:

1. **Faults.** For ``schedule.duration`` seconds the events fire at their offsets while a
   training job runs (when one completes inside the window the next is created, so there is
   always work in flight). Every ``poll`` seconds each reachable node is asked for its jobs'
   histories and the tail of its log: forks and lost rounds are caught as they happen.
2. **Settle.** Every fault has been undone by the schedule's own recoveries (the runner also
   continues, restarts and heals anything left, in case a run was cut short). The last job must
   then finish within ``finish_timeout``.
3. **Check.** Every node's whole log agrees and has no gaps; every job completed with each
   round once, in order, with one model per round; every committed model can be fetched.

The summary (faults applied, primaries hit, jobs and rounds, view changes, time to finish
after the faults, violations) is returned, printed by the command line and written to
``summary.json`` beside ``schedule.json`` and ``events.log`` in the run's directory.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pnode.ipc.errors import IpcError

from .checkers import RoundWatch, check_finished, check_logs
from .clusters import Cluster
from .schedule import PRIMARY, Event, Schedule

LOG_TAIL = 64
IPC_TIMEOUT = 8.0
CREATE_TIMEOUT = 30.0  # a create waits for its commit


def job_spec(rounds: int, deadline: float) -> str:
    """The job every chaos run trains: the default model, ``rounds`` rounds, BSP with a
    deadline so a dead trainer costs one deadline, not the round."""
    return (
        f'name = "chaos"\nrounds = {rounds}\n[participants]\nmax = 8\n'
        f'[sync]\ndeadline = {deadline}\nstragglers = "drop"\n'
    )


@dataclass
class RunResult:
    seed: int
    ok: bool
    violations: list[str]
    summary: dict[str, Any]
    applied: list[str] = field(default_factory=list)


class ChaosRun:
    def __init__(
        self,
        cluster: Cluster,
        schedule: Schedule,
        out: Path,
        *,
        rounds: int = 12,
        deadline: float = 4.0,
        poll: float = 5.0,
        finish_timeout: float = 300.0,
    ) -> None:
        self.c = cluster
        self.s = schedule
        self.out = out
        self.rounds = rounds
        self.deadline = deadline
        self.poll = poll
        self.finish_timeout = finish_timeout
        self.watch = RoundWatch()
        self.digests: dict[int, tuple[str, str]] = {}  # seq -> (first node, digest)
        self.violations: list[str] = []
        self.jobs: list[str] = []
        self.killed: set[int] = set()
        self.stopped: set[int] = set()
        self.resolved: dict[float, int] = {}  # primary events: fired at -> node
        self.primary_of: int | None = None  # node a "primary" fault took down, until it recovers
        self.applied: list[str] = []
        self.partitioned = False
        self.t0 = 0.0
        self._creates = 0
        self._lock = threading.Lock()
        out.mkdir(parents=True, exist_ok=True)
        (out / "schedule.json").write_text(schedule.to_json())
        self._log = (out / "events.log").open("a")

    # ---- helpers -------------------------------------------------------------------------

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.t0:8.1f}s {text}"
        with self._lock:  # the fault thread and the watcher both write
            self._log.write(line + "\n")
            self._log.flush()

    def up(self) -> list[int]:
        return [i for i in range(1, self.c.size + 1) if i not in self.killed | self.stopped]

    def call(
        self, i: int, method: str, params: dict[str, Any] | None = None, timeout: float = 0
    ) -> Any:
        with self.c.client(i, timeout=timeout or IPC_TIMEOUT) as cl:
            return cl.call(method, params or {})

    def try_call(
        self, i: int, method: str, params: dict[str, Any] | None = None, timeout: float = 0
    ) -> Any:
        try:
            return self.call(i, method, params, timeout)
        except (IpcError, OSError, TimeoutError) as exc:
            self.note(f"node-{i} {method}: {type(exc).__name__}: {exc}")
            return None

    def primary(self) -> int:
        """The node that is primary now, as a live validator sees it (first validator if
        none answers)."""
        ids = {self.c.peer_id(i): i for i in range(1, self.c.size + 1)}
        for i in self.s.committee:
            if i in self.up():
                st = self.try_call(i, "consensus.status")
                if st and st.get("primary") in ids:
                    return ids[st["primary"]]
        return self.s.committee[0]

    # ---- faults --------------------------------------------------------------------------

    def fire(self, e: Event) -> None:
        node = e.node
        if node == PRIMARY:
            if e.kind in ("kill", "stop"):
                node = self.primary()
                self.primary_of = node
            else:
                node = self.primary_of
                self.primary_of = None
        assert node is None or isinstance(node, int)
        if e.kind == "kill" and node is not None:
            self.c.kill(node)
            self.killed.add(node)
        elif e.kind == "restart" and node is not None:
            self.c.restart(node)
            self.killed.discard(node)
        elif e.kind == "stop" and node is not None:
            self.c.stop(node)
            self.stopped.add(node)
        elif e.kind == "cont" and node is not None:
            self.c.cont(node)
            self.stopped.discard(node)
        elif e.kind == "partition":
            self.c.partition(e.groups)
            self.partitioned = True
        elif e.kind == "heal":
            self.c.heal()
            self.partitioned = False
        elif e.kind == "links":
            assert e.links is not None
            self.c.set_links(e.links)
        text = e.describe() + (f" (node-{node})" if e.node == PRIMARY else "")
        self.applied.append(f"{e.at:7.1f}s {text}")
        self.note("fault: " + text)

    def undo_all(self) -> None:
        """Recover from anything still in force (a run cut short by an error)."""
        for i in sorted(self.stopped):
            self.c.cont(i)
        self.stopped.clear()
        for i in sorted(self.killed):
            self.c.restart(i)
        self.killed.clear()
        if self.partitioned:
            self.c.heal()
            self.partitioned = False

    # ---- observation ---------------------------------------------------------------------

    def observe(self, i: int) -> None:
        for job in self.jobs:
            st = self.try_call(i, "job.status", {"job": job})
            if st is not None:
                self.watch.observe(f"node-{i}", job, st.get("history") or [])
        top = self.try_call(i, "consensus.status")
        if top is None or not top.get("log_last"):
            return
        last = int(top["log_last"])
        rows = self.try_call(i, "consensus.log", {"from": max(1, last - LOG_TAIL + 1), "to": last})
        for row in (rows or {}).get("entries", []):
            first = self.digests.setdefault(row["seq"], (f"node-{i}", row["digest"]))
            if first[1] != row["digest"]:
                v = f"seq {row['seq']}: {first[0]} and node-{i} committed different entries"
                if v not in self.violations:
                    self.violations.append(v)

    def job_done(self, job: str) -> bool:
        for i in self.up():
            st = self.try_call(i, "job.status", {"job": job})
            if st is not None and st.get("status") != "running":
                return True
        return False

    def create_job(self) -> None:
        """Create a job through one node that is up (the next in turn); a failure is retried
        at the next poll, through the next node."""
        up = self.up()
        if not up:
            return
        self._creates += 1
        i = up[self._creates % len(up)]
        spec = job_spec(self.rounds, self.deadline)
        r = self.try_call(i, "job.create", {"spec": spec}, timeout=CREATE_TIMEOUT)
        if r is not None:
            self.jobs.append(str(r["job"]))
            self.note(f"job {r['job']} created through node-{i}")

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> RunResult:
        self.t0 = time.monotonic()
        events = list(self.s.events)
        # The faults fire on this thread, on time; the watcher (polls, job creation) runs
        # beside it, so a call that waits for a commit the partition prevents delays nothing.
        stop = threading.Event()
        watcher = threading.Thread(target=self.watch_loop, args=(stop,), daemon=True)
        watcher.start()
        try:
            while events:
                now = time.monotonic() - self.t0
                while events and events[0].at <= now:
                    self.fire(events.pop(0))
                if events:
                    time.sleep(max(0.0, min(events[0].at - now, 1.0)))
            time.sleep(max(0.0, self.s.duration - (time.monotonic() - self.t0)))
        finally:
            stop.set()
            watcher.join(timeout=120)
            self.undo_all()
        faults_over = time.monotonic()
        self.note("faults over; waiting for the jobs in flight, then a fresh one")
        in_flight = self.settle(faults_over)
        if in_flight is None:
            self.diagnose("stuck.json")
        self.create_job()
        fresh = self.settle(faults_over)
        if fresh is None and in_flight is not None:
            self.diagnose("stuck.json")
        self.note("checking")
        summary = self.check()
        summary["jobs_in_flight_done_after_faults_s"] = in_flight
        summary["fresh_job_done_after_faults_s"] = fresh
        summary["settle_and_check_s"] = round(time.monotonic() - faults_over, 1)
        if in_flight is None or fresh is None:
            self.violations.append(
                f"jobs not completed within {self.finish_timeout:.0f} s after the faults"
            )
        summary["violations"] = list(self.violations)
        summary["ok"] = not self.violations
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        self._log.close()
        return RunResult(
            self.s.seed, not self.violations, list(self.violations), summary, self.applied
        )

    def watch_loop(self, stop: threading.Event) -> None:
        self.create_job()
        while not stop.wait(self.poll):
            for i in self.up():
                if stop.is_set():
                    return
                self.observe(i)
            if not self.jobs or self.job_done(self.jobs[-1]):
                self.create_job()

    def all_jobs(self) -> list[str]:
        """Our jobs and any other the log holds (a create whose reply timed out may still
        have committed)."""
        jobs = list(self.jobs)
        for i in self.up():
            listed = self.try_call(i, "job.list")
            if listed is not None:
                rows = listed.get("jobs", listed) if isinstance(listed, dict) else listed
                for row in rows:
                    if row["job"] not in jobs:
                        jobs.append(str(row["job"]))
                        self.note(f"job {row['job']} found in the log")
                break
        self.jobs = jobs
        return jobs

    def settle(self, since: float) -> float | None:
        """Seconds from ``since`` until every job completed on every node (None: timeout)."""
        end = time.monotonic() + self.finish_timeout
        while time.monotonic() < end:
            if all(
                (self.try_call(i, "job.status", {"job": j}) or {}).get("status") == "completed"
                for j in self.all_jobs()
                for i in self.up()
            ):
                return round(time.monotonic() - since, 1)
            time.sleep(2.0)
        return None

    def diagnose(self, name: str) -> None:
        """A job did not finish: write what every node's rounds service is doing (its open
        rounds, aggregations in progress, counters, evidence, blob fetches in flight) to
        ``name`` in the run's directory, and have each daemon log its trio task tree (SIGUSR1,
        which changes nothing else) into its own log."""
        self.note(f"a job did not finish: diagnostics in {name}, task trees in the daemon logs")
        out: dict[str, Any] = {}
        for i in self.up():
            rounds = self.try_call(i, "rounds.status")
            out[f"node-{i}"] = {
                "peer_id": self.c.peer_id(i),
                "rounds": rounds,
                "transfers": self.try_call(i, "blob.transfers"),
                "consensus": self.try_call(i, "consensus.status"),
                "jobs": {
                    j: (self.try_call(i, "job.status", {"job": j}) or {}).get("current")
                    for j in self.jobs
                },
            }
            pid = (rounds or {}).get("pid")
            if isinstance(pid, int) and pid > 0:
                try:
                    os.kill(pid, signal.SIGUSR1)
                except OSError as exc:
                    self.note(f"node-{i}: SIGUSR1: {exc}")
        (self.out / name).write_text(json.dumps(out, indent=1, default=str))

    def full_log(self, i: int) -> dict[int, str]:
        out: dict[int, str] = {}
        st = self.try_call(i, "consensus.status") or {}
        last = int(st.get("log_last") or 0)
        first = 1
        while first <= last:
            rows = self.try_call(i, "consensus.log", {"from": first, "to": last})
            if not rows or not rows["entries"]:
                break
            for row in rows["entries"]:
                out[int(row["seq"])] = str(row["digest"])
            first = max(out) + 1
        return out

    def check(self) -> dict[str, Any]:
        nodes = self.up()
        # logs: wait (bounded) for every node to reach the same top, then compare them whole
        tops: dict[int, int] = {}
        end = time.monotonic() + 60
        while time.monotonic() < end:
            tops = {
                i: int((self.try_call(i, "consensus.status") or {}).get("log_last") or 0)
                for i in nodes
            }
            if len(set(tops.values())) == 1:
                break
            time.sleep(2.0)
        logs = {f"node-{i}": self.full_log(i) for i in nodes}
        self.violations += check_logs(logs)
        for i in nodes:
            self.observe(i)
        self.violations += self.watch.violations
        rounds_total = 0
        fetched = 0
        for job in self.jobs:
            statuses = {
                f"node-{i}": self.try_call(i, "job.status", {"job": job}) or {} for i in nodes
            }
            self.violations += check_finished(statuses, job, self.rounds)
            committed = self.watch.committed(job)
            rounds_total += len(committed)
            for n, (r, key) in enumerate(sorted(committed.items())):
                i = nodes[(n + r) % len(nodes)]
                got = self.try_call(i, "blob.fetch", {"key": key, "timeout": 30}, timeout=40)
                if got is None:
                    self.violations.append(
                        f"{job} round {r}: model {key[:16]} not fetchable from node-{i}"
                    )
                else:
                    fetched += 1
        st = self.try_call(self.s.committee[0], "consensus.status") or {}
        return {
            "seed": self.s.seed,
            "duration_s": self.s.duration,
            "nodes": self.c.size,
            "committee": list(self.s.committee),
            "faults": self.s.counts(),
            "applied": self.applied,
            "jobs": len(self.jobs),
            "rounds_committed": rounds_total,
            "models_fetched": fetched,
            "log_entries": max(tops.values(), default=0),
            "final_view": st.get("view"),  # each view change since genesis moved it by one
        }


__all__ = ["ChaosRun", "RunResult", "job_spec"]
