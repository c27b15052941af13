"""Verified work on real daemons: each attack of issue 17 on the rounds, caught.

Each test starts its own small swarm (a committee of 4, sometimes a trainer or two more) with
one kind of cheat switched on through the test-only ``training.*`` settings, runs a short job,
and checks the committed history: the cheat is flagged in the results that commit the rounds
(or its messages are dropped and counted), the honest nodes are never flagged, and the model is
within 2 points of the same job run cleanly in process.

- a trainer that sends an update it did not compute (random noise, or its round-1 update
  replayed): a spot-check re-runs its task and the result flags ``spot_check``;
- a trainer that copies another's revealed update: flagged ``copy`` without commit then reveal,
  and kept out altogether with it (its commitment comes after the commit phase closed);
- a proposer that leaves out an update (censorship): refused, and the next proposer's result
  includes the update and flags ``censorship``;
- a node the trust ledger does not admit (no stake where 1 token is asked), submitting anyway;
  a flood of notices above the rate limit: dropped and counted (not slashed: a validator's own
  clock decides what is too much, so there is no committed evidence).

Every flagged cheat is also penalised by the trust ledger: evidence records that name the flag,
each with its slash in the offender's journal (the trainers start with 100 tokens of stake).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from p2pnode import NotFound
from p2pnode.config.edit import set_config_value
from p2pnode.consensus.genesis import genesis_validators

from .harness import LocalSwarm, clean_accuracy

pytestmark = pytest.mark.slow


def _spec(rounds: int, participants: int, *, deadline: float = 4.0, **tables: str) -> str:
    text = f'name = "vw"\nrounds = {rounds}\n[participants]\nmax = {participants}\n'
    text += f"[sync]\ndeadline = {deadline}\n"
    for name, body in tables.items():
        text += f"[{name}]\n{body}\n"
    return text


def _swarm(
    tmp_path: Path, n: int, per_node: dict[int, dict[str, str]] | None = None, **settings: Any
) -> LocalSwarm:
    """node-1..4 validate (1000 tokens of stake each, the genesis default); the other nodes
    start with 100 tokens of stake, which a penalty takes a share of."""
    ids = genesis_validators(tmp_path, n)
    base = {
        "consensus.validators": ids[:4],
        "training.result_timeout": 2.0,
        "trust.genesis": [f"{p}=100" for p in ids[4:]],
    }
    swarm = LocalSwarm(tmp_path, n, {**base, **settings})
    for i, values in (per_node or {}).items():
        for key, raw in values.items():
            set_config_value(swarm.node(i).data_dir, key, [raw])
    return swarm


def _create(swarm: LocalSwarm, i: int, spec: str) -> str:
    with swarm.client(i, timeout=60) as c:
        return str(c.call("job.create", {"spec": spec})["job"])


def _status(swarm: LocalSwarm, i: int, job: str) -> dict[str, Any]:
    with swarm.client(i) as c:
        return c.call("job.status", {"job": job})  # type: ignore[no-any-return]


def _wait(swarm: LocalSwarm, i: int, job: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = _status(swarm, i, job)
        except NotFound:
            st = {"status": "unknown", "rounds_done": 0}
        if st["status"] not in ("running", "unknown"):
            return st
        assert time.monotonic() < deadline, f"node-{i}: {st['rounds_done']} rounds of {job}"
        time.sleep(0.3)


def _counters(swarm: LocalSwarm, nodes: list[int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for i in nodes:
        with swarm.client(i) as c:
            for k, v in c.call("rounds.status")["counters"].items():
                total[k] = total.get(k, 0) + int(v)
    return total


def _penalties(swarm: LocalSwarm, i: int, peers: set[str]) -> dict[str, set[str]]:
    """peer -> the kinds of evidence node-i's ledger holds against it; each record's penalty
    is in the peer's journal as a slash that names it."""
    out: dict[str, set[str]] = {}
    with swarm.client(i) as c:
        for peer in sorted(peers):
            records = c.call("evidence.list", {"peer": peer})["evidence"]
            acct = c.call("ledger.account", {"peer": peer, "limit": 1000})
            slashes = {
                e["ref"]: -(e["balance"] + e["stake"])
                for e in acct["entries"]
                if e["reason"] == "slash"
            }
            for r in records:
                assert r["penalty"] > 0 and slashes.get(r["id"]) == r["penalty"], (r, slashes)
            out[peer] = {r["kind"] for r in records}
    return out


def _flags(st: dict[str, Any]) -> list[tuple[int, str, str, str]]:
    return [
        (h["round"], f["peer_id"], f["kind"], f["detail"])
        for h in st["history"]
        for f in h["flags"]
    ]


def _peer(swarm: LocalSwarm, i: int) -> str:
    return swarm.node(i).peer_id


@pytest.mark.timeout(300)
def test_trainers_sending_updates_they_did_not_compute_fail_spot_checks(tmp_path: Path) -> None:
    rounds = 8
    swarm = _swarm(
        tmp_path, 6, {5: {"training.attack": "gaussian"}, 6: {"training.attack": "replay"}}
    )
    # The validation screen (on by default for robust rules) is off: the spot-checks are what
    # is tested, and with both cheats already left out the screen's drops of honest updates
    # cost 3 points against the clean run in this 8-round job (0.930 against 0.961 in CI).
    spec = _spec(
        rounds,
        6,
        aggregation='rule = "trimmed_mean"\nf = 1\nscreen = false',
        verify="spot_check = 0.6",
    )
    try:
        swarm.start()
        swarm.wait_connected(5)
        job = _create(swarm, 1, spec)
        st = _wait(swarm, 1, job, timeout=240)
        assert st["status"] == "completed"
        cheats = {_peer(swarm, 5), _peer(swarm, 6)}
        penalised = _penalties(swarm, 2, cheats | {_peer(swarm, 1)})
    finally:
        swarm.stop()
    # every cheat penalised with the committed flags as evidence (the noise is also trimmed as
    # an outlier round after round, which is evidence too); no honest node
    assert not penalised.pop(_peer(swarm, 1))
    assert all("spot_check" in kinds <= {"spot_check", "outliers"} for kinds in penalised.values())
    flags = _flags(st)
    caught = {p for _, p, kind, _ in flags if kind == "spot_check"}
    assert caught == cheats, flags  # both caught, nobody honest flagged
    assert {p for _, p, _, _ in flags} <= cheats
    for r, p, _, _ in flags:  # a flagged update never enters the model
        assert p not in st["history"][r - 1]["contributors"]
    assert st["nodes"][_peer(swarm, 5)]["flagged"] >= 1
    clean = clean_accuracy(spec, 6, rounds)
    assert st["accuracy"] >= clean - 0.02, (st["accuracy"], clean)


@pytest.mark.timeout(300)
def test_a_copier_is_flagged_and_commit_then_reveal_keeps_it_out(tmp_path: Path) -> None:
    rounds = 6
    swarm = _swarm(tmp_path, 4, {4: {"training.attack": "copy"}})
    # IID shards: the copier's own shard goes untrained, which non-IID data would feel more.
    open_spec = _spec(rounds, 4, verify="commit_reveal = false", data='shards = "iid"')
    sealed_spec = _spec(rounds, 4, data='shards = "iid"').replace('name = "vw"', 'name = "sealed"')
    try:
        swarm.start()
        swarm.wait_connected(3)
        open_job = _create(swarm, 1, open_spec)
        sealed_job = _create(swarm, 2, sealed_spec)
        st = _wait(swarm, 1, open_job, timeout=240)
        sealed = _wait(swarm, 1, sealed_job, timeout=240)
        assert st["status"] == sealed["status"] == "completed"
        counters = _counters(swarm, [1, 2, 3])
        penalised = _penalties(swarm, 1, {_peer(swarm, 4)})
    finally:
        swarm.stop()
    copier = _peer(swarm, 4)
    assert penalised == {copier: {"copy"}}
    honest = {_peer(swarm, i) for i in (1, 2, 3)}
    # Without commit then reveal, the copy gets in the update set but is flagged and left out.
    flags = _flags(st)
    assert any(p == copier and kind == "copy" for _, p, kind, _ in flags), flags
    assert all(p == copier for _, p, _, _ in flags), flags
    for r, p, _, detail in flags:
        assert bytes.fromhex(detail) and p not in st["history"][r - 1]["contributors"]
    # With it, the copier could only commit once the others revealed: too late, every round.
    let_in = [(h["round"], h["sources"]) for h in sealed["history"] if copier in dict(h["sources"])]
    assert not let_in, (let_in, counters)
    assert all(set(h["contributors"]) <= honest for h in sealed["history"])
    assert counters.get("commitment_late", 0) + counters.get("reveal_without_commitment", 0) > 0
    clean = clean_accuracy(open_spec, 4, rounds)
    assert st["accuracy"] >= clean - 0.02, (st["accuracy"], clean)
    assert sealed["accuracy"] >= clean - 0.02, (sealed["accuracy"], clean)


@pytest.mark.timeout(300)
def test_a_censoring_proposer_is_refused_and_the_next_includes_the_updates(
    tmp_path: Path,
) -> None:
    rounds = 6
    swarm = _swarm(tmp_path, 5, {2: {"training.censor": "true"}})
    spec = _spec(rounds, 5)
    try:
        swarm.start()
        swarm.wait_connected(4)
        job = _create(swarm, 1, spec)
        st = _wait(swarm, 1, job, timeout=240)
        assert st["status"] == "completed"
        counters = _counters(swarm, [1, 3, 4])
        penalised = _penalties(swarm, 3, {_peer(swarm, 2)})
    finally:
        swarm.stop()
    censor = _peer(swarm, 2)
    assert penalised == {censor: {"censorship"}}
    # (The censor may still commit a round where no f+1 validators held the update it left out
    # in time, relayed and fetched before their close, as on a loaded machine: without that
    # evidence nobody may refuse it. Where they did, it is refused, flagged and penalised.)
    assert counters.get("proposal_censoring", 0) >= 1, counters
    flags = _flags(st)
    flagged = [r for r, p, kind, _ in flags if p == censor and kind == "censorship"]
    assert flagged, flags
    assert all(kind == "censorship" for _, _, kind, _ in flags), flags
    for r in flagged:  # the round the censor tried to trim went in whole
        h = st["history"][r - 1]
        assert h["updates"] == 5, h
    clean = clean_accuracy(spec, 5, rounds)
    assert st["accuracy"] >= clean - 0.02, (st["accuracy"], clean)


@pytest.mark.timeout(300)
def test_a_node_not_admitted_and_a_flood_of_notices_are_dropped(tmp_path: Path) -> None:
    rounds = 6
    ids = genesis_validators(tmp_path, 6)
    # Admission asks for 1 token of stake: node-6 has 100, node-5 (the outsider) none.
    swarm = LocalSwarm(
        tmp_path,
        6,
        {
            "consensus.validators": ids[:4],
            "training.result_timeout": 2.0,
            "training.max_notices_per_minute": 40,
            "trust.params": ["min_stake=1000000"],
            "trust.genesis": [f"{ids[5]}=100"],
        },
    )
    outsider = swarm.node(5).peer_id
    set_config_value(swarm.node(5).data_dir, "training.unsolicited", ["true"])
    set_config_value(swarm.node(6).data_dir, "training.flood", ["60"])
    # Five trainers for five IID shards: the flooder's own updates are cut at the limit too,
    # and its shard goes untrained then (which non-IID data would feel more).
    spec = _spec(rounds, 5, data='shards = "iid"')
    try:
        swarm.start()
        swarm.wait_connected(5)
        job = _create(swarm, 1, spec)
        st = _wait(swarm, 1, job, timeout=240)
        assert st["status"] == "completed"
        counters = _counters(swarm, [1, 2, 3, 4])

        def accused() -> list[dict[str, Any]]:
            with swarm.client(2) as c:
                return c.call("evidence.list", {"peer": outsider})["evidence"]  # type: ignore[no-any-return]

        deadline = time.monotonic() + 30
        while not (records := accused()) and time.monotonic() < deadline:
            time.sleep(0.3)
        with swarm.client(3) as c:
            outsider_account = c.call("ledger.account", {"peer": outsider})
    finally:
        swarm.stop()
    # What it signed for rounds without a task is evidence every node checked: it is penalised
    # (it holds nothing to slash, so its reliability pays) and not admitted by reputation later.
    assert records and {r["kind"] for r in records} == {"unsolicited"}, records
    assert outsider_account["flagged"] >= 1 and outsider_account["reliability"] < 0.5
    # The node not admitted is never given a task, and what it sends anyway is dropped.
    assert outsider not in st["nodes"]
    assert all(outsider not in [s for s, _ in h["sources"]] for h in st["history"])
    assert counters.get("notice_not_admitted", 0) >= 1, counters
    # The flood is cut at the limit (each validator counts its own drops).
    assert counters.get("rate_limited", 0) >= 60, counters
    clean = clean_accuracy(spec, 5, rounds)
    assert st["accuracy"] >= clean - 0.02, (st["accuracy"], clean)
