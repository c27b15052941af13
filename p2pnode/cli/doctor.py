"""``p2pnode doctor``: check a node and say what is wrong in plain words.

Two halves. :func:`gather` collects the facts: from the daemon over IPC (``status``,
``members``, ``consensus.status`` and ``doctor.check``, which dials the bootstrap peers and the
committee and asks reachable peers for their clocks) and from this machine (the data dir's
mode and free space, read even when no daemon answers). :func:`diagnose` turns facts into
checks, each ``ok``, ``warn`` or ``fail`` with a sentence for the operator; it does no I/O, so
each verdict is unit-tested on hand-made facts.

Exit status: 1 when a check fails (``--strict``: or warns), else 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from p2pnode import __version__
from p2pnode.ipc.client import Client
from p2pnode.ipc.errors import IpcError

__all__ = ["Check", "Facts", "add_parsers", "cmd_doctor", "diagnose", "gather"]

#: Free space below which the data dir fails the check: a round's blobs no longer fit.
MIN_FREE_BYTES = 256 << 20
#: Below this it only warns.
LOW_FREE_BYTES = 2 << 30
#: Clock offset against a peer that warns, and that fails (rounds' deadlines are seconds).
SKEW_WARN = 0.5
SKEW_FAIL = 2.0
PROBE_TIMEOUT = 5.0
CLOCK_SAMPLE = 8


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Facts:
    """What :func:`diagnose` judges; None where it could not be learned."""

    data_dir: str
    daemon_error: str | None = None
    status: dict[str, Any] | None = None
    members: list[dict[str, Any]] | None = None
    consensus: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None
    disk: dict[str, Any] | None = None


def _local_disk(data_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"path": str(data_dir), "exists": data_dir.is_dir()}
    if not out["exists"]:
        return out
    st = data_dir.stat()
    out.update(
        mode=oct(stat.S_IMODE(st.st_mode)),
        owner_uid=st.st_uid,
        my_uid=os.geteuid(),
        writable=os.access(data_dir, os.W_OK),
        free_bytes=shutil.disk_usage(data_dir).free,
    )
    return out


def gather(args: argparse.Namespace, timeout: float = PROBE_TIMEOUT) -> Facts:
    from p2pnode.config import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir, os.environ) if args.socket is None else None
    facts = Facts(data_dir=str(data_dir) if data_dir else "")
    try:
        # doctor.check dials for up to ``timeout`` and then asks clocks for as long again
        c = Client(socket_path=args.socket, data_dir=args.data_dir, timeout=timeout * 3 + 10)
    except IpcError as exc:
        facts.daemon_error = str(exc)
        if data_dir is not None:
            facts.disk = _local_disk(data_dir)
        return facts
    with c:
        facts.status = c.call("status")
        facts.data_dir = facts.status["data_dir"]
        facts.members = c.call("members")["members"]
        if facts.status.get("committee"):
            facts.consensus = c.call("consensus.status")
        me = facts.status["peer_id"]
        committee = [v for v in (facts.consensus or {}).get("committee", []) if v != me]
        alive = [
            m["peer_id"]
            for m in facts.members
            if not m["self"] and m["state"] == "alive" and m["peer_id"] not in committee
        ]
        facts.probe = c.call(
            "doctor.check",
            {
                "addrs": facts.status.get("bootstrap", []),
                "peers": committee + alive[: max(0, CLOCK_SAMPLE - len(committee))],
                "timeout": timeout,
            },
        )
        # The dials just made may have failed handshakes of their own: count them too.
        facts.status["handshake_failures"] = c.call("status")["handshake_failures"]
    facts.disk = _local_disk(Path(facts.data_dir))
    return facts


def diagnose(f: Facts) -> list[Check]:
    checks: list[Check] = []
    if f.status is None:
        checks.append(
            Check(
                "daemon",
                "fail",
                f"no daemon answers: {f.daemon_error}. Start it with `p2pnode daemon`.",
            )
        )
    else:
        checks.append(_daemon(f.status))
        checks.append(_listen(f.status))
        checks.append(_bootstrap(f.status, f.probe or {}))
        checks.append(_psk(f.status, f.probe or {}))
        checks.append(_clock(f.probe or {}))
        if f.consensus is not None:
            checks.append(_committee(f.status, f.consensus, f.probe or {}))
        checks.append(_versions(f.members or []))
    checks.append(_disk(f.data_dir, f.disk))
    return checks


def _daemon(st: dict[str, Any]) -> Check:
    stopped = [s for s in st["services"] if s.get("state") == "stopped"]
    if stopped:
        names = ", ".join(f"{s['name']} ({s.get('error')})" for s in stopped)
        return Check("services", "fail", f"a service stopped: {names}. Restart the daemon.")
    if st["connected_peers"] == 0:
        return Check(
            "services",
            "fail",
            "the daemon runs but is connected to no peer: it is alone (see bootstrap below).",
            {"uptime": st["uptime"]},
        )
    return Check(
        "services",
        "ok",
        f"daemon {st['version']} up {st['uptime']:.0f} s, {st['connected_peers']} peers connected",
    )


def _listen(st: dict[str, Any]) -> Check:
    addrs = st.get("listen_addrs") or []
    reach = st.get("reachability") or "unknown"
    detail = {"listen_addrs": addrs, "reachability": reach, "addrs": st.get("addrs")}
    if not addrs:
        return Check("listen", "fail", "the daemon listens on no address", detail)
    where = ", ".join(addrs)
    if reach == "public":
        return Check("listen", "ok", f"listening on {where}; peers reach it directly", detail)
    if reach == "relayed":
        return Check(
            "listen",
            "warn",
            f"listening on {where}, but peers cannot dial it: it is reachable only through a "
            "relay (slower; open or forward the port for direct connections, docs/networking.md)",
            detail,
        )
    if reach == "private":
        return Check(
            "listen",
            "fail",
            f"listening on {where}, but peers cannot dial it and no relay serves it: it is "
            "unreachable (forward the port, set `announce`, or enable relays)",
            detail,
        )
    return Check(
        "listen",
        "warn",
        f"listening on {where}; whether peers can reach it is not known yet (it asks peers to "
        "dial it back once connected)",
        detail,
    )


def _bootstrap(st: dict[str, Any], probe: dict[str, Any]) -> Check:
    rows = probe.get("addrs", [])
    if not st.get("bootstrap"):
        return Check("bootstrap", "ok", "no bootstrap peers configured (this node is a seed)")
    dead = [r for r in rows if not r.get("reachable")]
    if not dead:
        return Check("bootstrap", "ok", f"all {len(rows)} bootstrap peers answer", {"peers": rows})
    lines = "; ".join(f"{r['addr']}: {r.get('error', 'no answer')}" for r in dead)
    return Check(
        "bootstrap",
        "fail" if len(dead) == len(rows) else "warn",
        f"{len(dead)} of {len(rows)} bootstrap peers do not answer: {lines}",
        {"peers": rows},
    )


def _psk(st: dict[str, Any], probe: dict[str, Any]) -> Check:
    hs = st.get("handshake_failures") or {}
    private = st.get("private_network")
    what = "a private network key (psk_file)" if private else "no private network key"
    errors = " ".join(r.get("error", "") for r in probe.get("addrs", []) + probe.get("peers", []))
    mismatch = "private network" in errors or "psk" in errors.lower()
    if hs.get("count") and (mismatch or st["connected_peers"] == 0):
        return Check(
            "psk",
            "fail",
            f"{hs['count']} connection handshakes failed (last: {hs.get('last')}). This node uses "
            f"{what}; the peers it dials seem to use {'another' if private else 'one'}: every "
            "node of a swarm needs the same swarm.key (or none).",
            hs,
        )
    if hs.get("count"):
        return Check(
            "psk",
            "warn",
            f"{hs['count']} handshakes failed (last: {hs.get('last')}): some peer uses another "
            f"private network key; this node uses {what} and talks to its other peers",
            hs,
        )
    return Check("psk", "ok", f"no failed handshakes; this node uses {what}", hs)


def _clock(probe: dict[str, Any]) -> Check:
    by_peer = {}  # a bootstrap peer may be on the committee too: count it once
    for r in probe.get("addrs", []) + probe.get("peers", []):
        if "clock_offset" in r:
            by_peer[r.get("peer_id", r.get("addr"))] = r
    rows = list(by_peer.values())
    if not rows:
        return Check("clock", "warn", "no peer answered a clock question: skew unknown")
    worst = max(rows, key=lambda r: abs(r["clock_offset"]))
    off = worst["clock_offset"]
    detail = {"peers": len(rows), "worst": worst}
    who = worst.get("peer_id", worst.get("addr"))
    if abs(off) >= SKEW_FAIL:
        return Check(
            "clock",
            "fail",
            f"clock skew of {off:+.2f} s against {who}: round deadlines and timestamps go wrong; "
            "run NTP (chrony or systemd-timesyncd) on every machine",
            detail,
        )
    if abs(off) >= SKEW_WARN:
        return Check("clock", "warn", f"clock skew of {off:+.2f} s against {who}", detail)
    return Check(
        "clock", "ok", f"clocks agree within {abs(off):.3f} s with {len(rows)} peers", detail
    )


def _committee(st: dict[str, Any], cons: dict[str, Any], probe: dict[str, Any]) -> Check:
    members = cons.get("committee", [])
    n = len(members)
    f = cons.get("f", (n - 1) // 3)
    quorum = n - f if n else 0
    by_peer = {r["peer_id"]: r for r in probe.get("peers", [])}
    reachable = [v for v in members if v == st["peer_id"] or by_peer.get(v, {}).get("reachable")]
    down = [v for v in members if v not in reachable]
    detail = {"committee": members, "reachable": reachable, "quorum": quorum}
    if cons.get("error"):
        return Check("committee", "fail", f"consensus stopped: {cons['error']}", detail)
    if len(reachable) < quorum:
        return Check(
            "committee",
            "fail",
            f"only {len(reachable)} of {n} validators are reachable and {quorum} are needed to "
            f"commit: no round can commit (unreachable: {', '.join(down)})",
            detail,
        )
    if down:
        return Check(
            "committee",
            "warn",
            f"{len(reachable)} of {n} validators reachable ({quorum} needed): one more failure "
            f"stops commits (unreachable: {', '.join(down)})"
            if len(reachable) == quorum
            else f"{len(down)} validators unreachable: {', '.join(down)}",
            detail,
        )
    return Check("committee", "ok", f"all {n} validators reachable (quorum {quorum})", detail)


def _versions(members: list[dict[str, Any]]) -> Check:
    mine = next((m["version"] for m in members if m["self"]), __version__)
    others: dict[str, list[str]] = {}
    for m in members:
        if not m["self"] and m["state"] != "dead" and m["version"] != mine:
            others.setdefault(m["version"], []).append(m["peer_id"])
    if not others:
        return Check("versions", "ok", f"every live member runs {mine}")
    text = "; ".join(f"{len(p)} run {v}" for v, p in sorted(others.items()))
    return Check(
        "versions",
        "warn",
        f"version skew: this node runs {mine}, {text}; upgrade them together (docs/deploy.md)",
        {"versions": others},
    )


def _disk(data_dir: str, disk: dict[str, Any] | None) -> Check:
    if disk is None or not disk.get("exists"):
        return Check("data_dir", "fail", f"data dir {data_dir or '?'} does not exist")
    problems = []
    if int(disk["mode"], 8) & 0o077:
        problems.append(
            f"mode {disk['mode']} lets other users in (it holds the identity key): chmod 700"
        )
    if not disk["writable"]:
        problems.append("not writable by this user")
    free = disk["free_bytes"]
    if free < MIN_FREE_BYTES:
        problems.append(
            f"only {free / 2**20:.1f} MiB free: blobs and the log cannot be written "
            "(free space or move the data dir)"
        )
    if problems:
        return Check("data_dir", "fail", f"data dir {data_dir}: " + "; ".join(problems), disk)
    if free < LOW_FREE_BYTES:
        return Check(
            "data_dir", "warn", f"data dir {data_dir}: {free / 2**30:.2f} GiB free, low", disk
        )
    return Check(
        "data_dir", "ok", f"data dir {data_dir}: private, {free / 2**30:.1f} GiB free", disk
    )


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    checks = diagnose(gather(args, timeout=args.timeout))
    bad = [c for c in checks if c.status == "fail" or (args.strict and c.status == "warn")]
    if args.json:
        print(json.dumps({"ok": not bad, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{_MARK[c.status]}  {c.name:<10} {c.message}")
        fails = sum(c.status == "fail" for c in checks)
        warns = sum(c.status == "warn" for c in checks)
        print("\nhealthy" if not fails and not warns else f"\n{fails} failed, {warns} warnings")
    return 1 if bad else 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    d = sub.add_parser(
        "doctor",
        parents=[common],
        help="check this node and say what is wrong",
        description="Check the node: listen addresses and reachability, bootstrap peers, the "
        "private network key, clock skew against peers, the consensus committee, version skew "
        "in the swarm, the data dir's permissions and free space. Exit status 1 when a check "
        "fails (with --strict, also when one warns).",
    )
    d.add_argument("--strict", action="store_true", help="warnings fail too")
    d.add_argument(
        "--timeout",
        type=float,
        default=PROBE_TIMEOUT,
        help=f"seconds for each dial and clock question (default {PROBE_TIMEOUT:g})",
    )
