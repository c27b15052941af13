"""What must hold after (and while) a swarm is hurt: pure checks over what the nodes said.

Each check takes observations already gathered from the daemons over IPC and returns a list of
violations (empty when the property holds), so the checks are tested without a network and a
run reports every violation it saw, not the first one.

- :func:`check_logs`: no two nodes hold different entries at one sequence number, and no node
  holds a gap below its top (a committed entry that was lost).
- :class:`RoundWatch`: per job and node, the rounds seen so far never shrink (a committed round
  is never lost) and each round appears once, in order, with one model key across all nodes
  (never doubled, never forked).
- :func:`check_finished`: every job reached ``completed`` with all its rounds on every node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def check_logs(logs: Mapping[str, Mapping[int, str]], *, gaps: bool = True) -> list[str]:
    """``logs[node][seq] = digest`` for the entries each node holds.

    ``gaps=False`` while faults go on: a node that restarted fills its log from its peers
    over a while, so a gap is only a violation once the swarm has settled."""
    out: list[str] = []
    seen: dict[int, tuple[str, str]] = {}
    for node, entries in sorted(logs.items()):
        if entries and gaps:
            top = max(entries)
            missing = [s for s in range(1, top + 1) if s not in entries]
            if missing:
                out.append(f"{node}: log has gaps below its top {top}: {missing[:10]}")
        for seq, digest in sorted(entries.items()):
            first = seen.setdefault(seq, (node, digest))
            if first[1] != digest:
                out.append(
                    f"seq {seq}: {first[0]} committed {first[1][:16]}, "
                    f"{node} committed {digest[:16]}"
                )
    return out


@dataclass
class RoundWatch:
    """Everything the nodes ever reported about each job's rounds, checked as it comes."""

    keys: dict[tuple[str, int], str] = field(default_factory=dict)  # (job, round) -> model key
    best: dict[tuple[str, str], int] = field(default_factory=dict)  # (job, node) -> rounds seen
    violations: list[str] = field(default_factory=list)

    def observe(self, node: str, job: str, history: Sequence[Mapping[str, Any]]) -> None:
        rounds = [int(h["round"]) for h in history]
        if rounds != list(range(1, len(rounds) + 1)):
            self._add(f"{node} {job}: rounds out of order, doubled or missing: {rounds[:20]}")
        before = self.best.get((job, node), 0)
        if len(rounds) < before:
            self._add(f"{node} {job}: history shrank from {before} to {len(rounds)} rounds")
        self.best[(job, node)] = max(before, len(rounds))
        for h in history:
            key = (job, int(h["round"]))
            first = self.keys.setdefault(key, str(h["model_key"]))
            if first != h["model_key"]:
                self._add(
                    f"{job} round {key[1]}: model {first[:16]} at one node, "
                    f"{str(h['model_key'])[:16]} at {node}"
                )

    def _add(self, text: str) -> None:
        if text not in self.violations:
            self.violations.append(text)

    def committed(self, job: str) -> dict[int, str]:
        """The model key of every round of ``job`` any node reported."""
        return {r: k for (j, r), k in sorted(self.keys.items()) if j == job}


def check_finished(statuses: Mapping[str, Mapping[str, Any]], job: str, rounds: int) -> list[str]:
    """``statuses[node]`` = that node's ``job.status`` of ``job`` (or {} if it never answered)."""
    out = []
    for node, st in sorted(statuses.items()):
        if st.get("status") != "completed" or st.get("rounds_done") != rounds:
            out.append(
                f"{node} {job}: {st.get('status', 'no answer')} after "
                f"{st.get('rounds_done', '?')}/{rounds} rounds"
            )
    return out


__all__ = ["RoundWatch", "check_finished", "check_logs"]
