"""The trust ledger on real daemons: rewards every node agrees on and a fresh node replays,
governance that changes a parameter at the epoch boundary (and a proposal that expires), a
committee change while a job runs, an equivocating validator slashed, admission by stake.

Each test starts its own swarm: a genesis committee of 4 (node-1..4) and trainers. Short
governance periods come from ``trust.params`` (the same on every node, as genesis must be).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2pnode import IpcError, NotFound
from p2pnode.config.edit import set_config_value
from p2pnode.consensus.genesis import genesis_validators

from .harness import LocalSwarm, clean_accuracy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

GOV = ["voting_period=8", "epoch_length=8"]


def _spec(rounds: int, *, min_participants: int = 1, participants: int = 8, extra: str = "") -> str:
    return (
        f'name = "t"\nrounds = {rounds}\n'
        f"[participants]\nmin = {min_participants}\nmax = {participants}\n"
        f"[sync]\ndeadline = 4.0\n{extra}"
    )


def _swarm(tmp_path: Path, n: int, validators: int = 4, **settings: Any) -> LocalSwarm:
    ids = genesis_validators(tmp_path, max(validators, 4))
    return LocalSwarm(
        tmp_path,
        n,
        {"consensus.validators": ids[:validators], "training.result_timeout": 2.0, **settings},
    )


def _call(swarm: LocalSwarm, i: int, method: str, params: dict[str, Any] | None = None) -> Any:
    with swarm.client(i, timeout=60) as c:
        return c.call(method, params or {})


def _until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except NotFound:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _job(swarm: LocalSwarm, i: int, spec: str) -> str:
    return str(_call(swarm, i, "job.create", {"spec": spec})["job"])


def _done(swarm: LocalSwarm, i: int, job: str, rounds: int, timeout: float = 120) -> dict[str, Any]:
    def check() -> Any:
        st = _call(swarm, i, "job.status", {"job": job})
        return st if st["rounds_done"] >= rounds or st["status"] != "running" else None

    return _until(f"node-{i} to finish {job}", check, timeout)  # type: ignore[no-any-return]


def _digests(swarm: LocalSwarm, nodes: list[int], seq: int) -> set[str]:
    """The ledger digests of ``nodes`` once each has folded at least to ``seq``."""
    out = set()
    for i in nodes:
        r = _until(f"node-{i} ledger at {seq}", lambda i=i: _ledger_at(swarm, i, seq), 60)
        out.add(r["digest"])
    return out


def _ledger_at(swarm: LocalSwarm, i: int, seq: int) -> Any:
    r = _call(swarm, i, "ledger.accounts")
    return r if r["seq"] >= seq else None


def test_rewards_agree_everywhere_and_a_fresh_node_replays_them_exactly(tmp_path: Path) -> None:
    swarm = _swarm(tmp_path, 6)
    try:
        swarm.start(list(range(1, 6)))
        swarm.wait_connected(4)
        heard: list[dict[str, Any]] = []
        events = swarm.client(2).subscribe("trust")

        def listen() -> None:
            try:
                for e in events:
                    heard.append(e)
            except (IpcError, OSError):
                pass  # the daemon stopped at the end of the test

        threading.Thread(target=listen, daemon=True).start()
        job = _job(swarm, 1, _spec(3))
        st = _done(swarm, 1, job, 3)
        assert st["status"] == "completed"
        top = _call(swarm, 1, "ledger.accounts")["seq"]
        digests = _digests(swarm, [1, 2, 3, 4, 5], top)
        assert len(digests) == 1, "nodes disagree on the ledger"
        # contributors are paid, with the round named; validators too
        # (a contributor whose update made the model worse, score below zero, earns nothing)
        contributors = {p for h in st["history"] for p in h["contributors"]}
        rewarded = set()
        for peer in contributors:
            acct = _call(swarm, 1, "ledger.account", {"peer": peer, "limit": 100})
            rewards = [e for e in acct["entries"] if e["reason"] == "reward"]
            assert all(e["ref"].startswith(job + "/") for e in rewards)
            rewarded |= {peer} if rewards else set()
            assert acct["earned"] == sum(
                e["balance"] for e in acct["entries"] if e["reason"].endswith("reward")
            )
        assert any(
            e["reason"] == "validator_reward"
            for e in _call(swarm, 1, "ledger.account", {"limit": 100})["entries"]
        )
        # rewards are events of the trust topic as they are committed
        rewards = _until("reward events", lambda: [e for e in heard if e["event"] == "reward"], 30)
        assert rewarded and {e["peer"] for e in rewards} == rewarded
        # a node that was never up folds the whole log from genesis to the same balances
        swarm.start([6], bootstrap=swarm.node(1))
        assert _digests(swarm, [6], top) == digests
        # and a node killed with SIGKILL replays its own log to them again
        swarm.kill(5)
        swarm.start([5], bootstrap=swarm.node(1))
        assert _digests(swarm, [5], top) == digests
    finally:
        swarm.stop()


def _propose(swarm: LocalSwarm, i: int, kind: str, change: dict[str, Any]) -> str:
    r = _call(swarm, i, "gov.propose", {"kind": kind, "change": change, "title": "test"})
    assert r["status"] == "ok", r
    return str(r["proposal"]["id"])


def _vote(swarm: LocalSwarm, voters: list[int], pid: str, yes: bool = True) -> None:
    for i in voters:
        assert _call(swarm, i, "gov.vote", {"proposal": pid, "yes": yes})["status"] == "ok"


def _proposal(swarm: LocalSwarm, i: int, pid: str) -> dict[str, Any]:
    props = _call(swarm, i, "gov.list")["proposals"]
    return next(p for p in props if p["id"] == pid)  # type: ignore[no-any-return]


def test_a_param_change_passes_by_stake_and_applies_at_the_epoch_boundary(tmp_path: Path) -> None:
    swarm = _swarm(tmp_path, 5, **{"trust.params": GOV})
    try:
        swarm.start()
        swarm.wait_connected(4)
        lone = _propose(swarm, 1, "param", {"base_reward": 1})
        _vote(swarm, [1], lone)  # 1000 of 4000 staked tokens: below the quorum of half
        pid = _propose(swarm, 2, "param", {"min_participants": 6})
        _vote(swarm, [1, 2, 3], pid)
        p = _until(
            "the tally",
            lambda: _proposal(swarm, 1, pid)["status"] != "open" and _proposal(swarm, 1, pid),
            60,
        )
        assert p["status"] in ("passed", "enacted"), p
        assert p["activates_at"] % 8 == 0 and p["activates_at"] > p["deadline"]
        enacted = _until(
            "the epoch boundary",
            lambda: _proposal(swarm, 1, pid)["status"] == "enacted" and _proposal(swarm, 1, pid),
            60,
        )
        for i in range(1, 6):
            params = _until(
                f"node-{i} to apply it",
                lambda i=i: _call(swarm, i, "gov.params")["params"]["min_participants"] == 6,
                60,
            )
            assert params
        assert _proposal(swarm, 3, lone)["status"] == "expired"
        assert _call(swarm, 1, "gov.params")["params"]["base_reward"] == 10_000_000
        # in force: 5 nodes are too few for any round of a job that asks for 1
        job = _job(swarm, 1, _spec(2, min_participants=1))
        time.sleep(8)
        st = _call(swarm, 1, "job.status", {"job": job})
        assert st["rounds_done"] == 0 and not st["history"], st
        assert enacted["activates_at"] <= _call(swarm, 1, "ledger.accounts")["seq"]
    finally:
        swarm.stop()


def test_a_committee_change_switches_validators_while_a_job_runs(tmp_path: Path) -> None:
    swarm = _swarm(tmp_path, 8, **{"trust.params": GOV})
    ids = genesis_validators(tmp_path, 8)
    try:
        swarm.start()
        swarm.wait_connected(7)
        job = _job(swarm, 1, _spec(12))
        _done(swarm, 1, job, 2)
        pid = _propose(swarm, 1, "committee", {"validators": ids[4:8]})
        _vote(swarm, [1, 2, 3, 4], pid)

        def switched(i: int) -> Any:
            st = _call(swarm, i, "consensus.status")
            return st if st.get("epoch", 0) >= 1 else None

        for i in range(1, 9):
            st = _until(f"node-{i} in the new epoch", lambda i=i: switched(i), 120)
            assert st["committee"] == ids[4:8], st
        st = _done(swarm, 5, job, 12, timeout=240)
        assert st["status"] == "completed", st
        hist = st["history"]
        assert [h["round"] for h in hist] == list(range(1, 13))
        # every node holds the same history; rounds after the switch were attested by the new
        # committee (the old one no longer votes)
        for i in range(1, 9):
            other = _done(swarm, i, job, 12, timeout=60)["history"]
            assert [h["model_key"] for h in other] == [h["model_key"] for h in hist]
        for i in (1, 2, 3, 4):
            assert _call(swarm, i, "consensus.status")["role"] != "validator"
        top = _call(swarm, 5, "ledger.accounts")["seq"]
        assert len(_digests(swarm, list(range(1, 9)), top)) == 1
    finally:
        swarm.stop()


def test_an_equivocating_validator_is_slashed_with_the_two_messages_as_evidence(
    tmp_path: Path,
) -> None:
    swarm = _swarm(tmp_path, 4)
    set_config_value(swarm.node(1).data_dir, "consensus.fault", ["equivocate"])
    offender = genesis_validators(tmp_path, 4)[0]
    spec = _spec(4, extra='[data]\nshards = "iid"\n')
    try:
        swarm.start()
        swarm.wait_connected(3)
        job = _job(swarm, 2, spec)
        for k in range(5):
            _call(
                swarm,
                2,
                "consensus.submit",
                {"tx": {"type": "kv_put", "key": f"k{k}", "value": "v"}},
            )

        def slashed() -> Any:
            ev = _call(swarm, 3, "evidence.list", {"peer": offender})["evidence"]
            return [e for e in ev if e["kind"] == "equivocation"]

        (record,) = _until("the equivocation to be penalised", slashed, 90)[:1]
        assert record["penalty"] == 100_000_000  # 10% of 1000 tokens of stake
        acct = _call(swarm, 4, "ledger.account", {"peer": offender})
        assert acct["slashed"] >= record["penalty"] and acct["stake"] <= 900_000_000
        assert [e for e in acct["entries"] if e["reason"] == "slash" and e["ref"] == record["id"]]
        # the job runs on through the view changes the liar causes, as well as a clean run
        st = _done(swarm, 3, job, 4, timeout=240)
        assert st["status"] == "completed"
        assert st["accuracy"] >= clean_accuracy(spec, 4, 4) - 0.02
    finally:
        swarm.stop()


def test_admission_by_stake_keeps_unstaked_trainers_out(tmp_path: Path) -> None:
    ids = genesis_validators(tmp_path, 6)
    swarm = _swarm(
        tmp_path,
        6,
        **{"trust.params": GOV, "trust.genesis": [f"{ids[4]}=50"]},
    )
    try:
        swarm.start()
        swarm.wait_connected(5)
        pid = _propose(swarm, 1, "admission", {"min_stake": 10_000_000})
        _vote(swarm, [1, 2, 3], pid)
        _until("the admission policy", lambda: _proposal(swarm, 1, pid)["status"] == "enacted", 90)
        acct = _call(swarm, 1, "ledger.account", {"peer": ids[5]})
        assert "below the minimum" in acct["trainer"]
        job = _job(swarm, 1, _spec(2, min_participants=1))
        st = _done(swarm, 1, job, 2)
        sources = {s for h in st["history"] for s in h["contributors"]}
        assert ids[5] not in sources and ids[4] in sources
    finally:
        swarm.stop()
