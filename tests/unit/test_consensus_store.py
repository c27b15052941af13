"""The consensus store: a replica's durable state survives a reopen exactly, writes are diffed,
the log is idempotent per seq, and a replica restarted from disk agrees with its peers."""

from __future__ import annotations

from pathlib import Path

from p2pnode.consensus.store import ConsensusStore, LogRow
from p2pnode.network.signing import Ed25519Signer, Ed25519Verifier
from p2pnode.store import Store
from p2pnode_protocols.pbft import (
    Broadcast,
    ClientRequest,
    Commit,
    Committee,
    KvPut,
    MessageReceived,
    PbftConfig,
    Persist,
    Replica,
    Request,
    Restarted,
    Send,
    encode_tx,
    sign,
)
from p2pnode_protocols.pbft.messages import CertifiedEntry


def _cluster(n: int = 4):  # type: ignore[no-untyped-def]
    signers = [Ed25519Signer.from_seed(bytes([i + 1]) * 32) for i in range(n)]
    committee = Committee(epoch=0, validators=tuple(s.node_id for s in signers))
    cfg = PbftConfig(checkpoint_interval=4, window=8)

    def make(i: int) -> Replica:
        return Replica(
            committee=committee, config=cfg, signer=signers[i], verifier=Ed25519Verifier()
        )

    return committee, signers, make


def _run(replicas, stores, requests) -> list[Commit]:  # type: ignore[no-untyped-def]
    """Deliver everything (in order) among ``replicas``; persist through ``stores``."""
    ids = [r.me for r in replicas]
    commits: list[Commit] = []
    queue = [(0, ClientRequest(request=req)) for req in requests]
    while queue:
        i, event = queue.pop(0)
        effects = replicas[i].handle(event, 0.0)
        persist = next((e.state for e in effects if type(e) is Persist), None)
        rows = [
            LogRow(
                e.seq,
                e.entry.digest,
                CertifiedEntry(entry=e.entry, certificate=e.certificate),
                None,
            )
            for e in effects
            if type(e) is Commit
        ]
        stores[i].save(persist, rows)
        for e in effects:
            if type(e) is Broadcast:
                queue += [
                    (j, MessageReceived(sender=ids[i], msg=e.msg))
                    for j in range(len(ids))
                    if j != i
                ]
            elif type(e) is Send:
                queue.append((ids.index(e.to), MessageReceived(sender=ids[i], msg=e.msg)))
            elif type(e) is Commit and i == 0:
                commits.append(e)
    return commits


def test_durable_state_round_trip_and_idempotent_log(tmp_path: Path) -> None:
    make = _cluster()[2]
    stores = [ConsensusStore(Store(tmp_path / f"n{i}.db")) for i in range(4)]
    replicas = [make(i) for i in range(4)]
    for i, r in enumerate(replicas):
        assert stores[i].load() is None
        stores[i].save(
            next(e.state for e in r.handle(Restarted(durable=None), 0.0) if type(e) is Persist),
            [],
        )
    client = Ed25519Signer.from_seed(b"\x09" * 32)
    reqs = [
        sign(
            Request(
                client=client.node_id,
                request_id=k + 1,
                op=encode_tx(KvPut(key=f"k{k}", value=b"v")),
            ),
            client,
        )
        for k in range(6)
    ]
    commits = []
    for req in reqs:  # one outstanding request per client
        commits += _run(replicas, stores, [req])
    assert [c.seq for c in commits] == list(range(1, 7))
    assert replicas[0].stable.seq == 4

    # The state on disk is exactly the replica's durable state, after a reopen.
    for i in range(4):
        reopened = ConsensusStore(Store(tmp_path / f"n{i}.db"))
        assert reopened.load() == replicas[i].durable_state()
        assert reopened.contiguous_upto(0) == 6
        assert [r.seq for r in reopened.read_log(1, 100, 100)] == list(range(1, 7))

    # Commit rows repeat after a restart: the first write wins, nothing else changes.
    row = stores[0].read_log(3, 3, 1)[0]
    stores[0].save(None, [LogRow(3, b"\x00" * 32, row.entry, None)])
    assert stores[0].read_log(3, 3, 1)[0].digest == row.digest

    # A replica restarted from disk re-emits its certified suffix and keeps agreeing.
    again = make(0)
    effects = again.handle(Restarted(durable=ConsensusStore(Store(tmp_path / "n0.db")).load()), 1.0)
    assert again.executed_seq == 6 and again.stable.seq == 4
    assert [e.seq for e in effects if type(e) is Commit] == [5, 6]


def test_saves_are_diffed(tmp_path: Path) -> None:
    make = _cluster()[2]
    store = ConsensusStore(Store(tmp_path / "a.db"))
    r = make(0)
    state = next(e.state for e in r.handle(Restarted(durable=None), 0.0) if type(e) is Persist)
    store.save(state, [])
    db = store._db
    before = db.total_changes
    store.save(state, [])  # nothing changed: no row written
    assert db.total_changes == before
