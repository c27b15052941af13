"""Codecs of the rounds protocol: transactions and messages round-trip, and malformed or
oversized input is a ``RemoteProtocolError`` (never another exception)."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode_protocols.machine import RemoteProtocolError
from p2pnode_protocols.rounds import (
    Attestation,
    CancelJob,
    CommitRound,
    CreateJob,
    JobSpec,
    Proposal,
    StartRound,
    Task,
    UpdateNotice,
    decode_message,
    decode_result,
    decode_tx,
    encode_message,
    encode_result,
    encode_tx,
)
from p2pnode_protocols.rounds.messages import MAX_MESSAGE_BYTES, MAX_RESULT_BYTES, result_digest
from tests.protocols.rounds_helpers import (
    INIT_KEY,
    TRAINERS,
    VALIDATORS,
    VERIFIER,
    attest,
    commit,
    result,
    update,
)

pytestmark = pytest.mark.timeout(60)

JOB = "0123456789abcdef"


def _txs() -> list[Any]:
    r = result(JOB, 1, INIT_KEY, [update(t, JOB, 1) for t in TRAINERS[:2]])
    body = encode_result(r)
    return [
        CreateJob(spec=JobSpec(learning={"rule": "median"}), init_key=INIT_KEY, nonce=b"x" * 32),
        CancelJob(job=JOB, reason="enough"),
        CancelJob(job=JOB),
        StartRound(
            job=JOB,
            round=3,
            base_key="m-2",
            tasks=(Task(node=TRAINERS[0], shard=0), Task(node=TRAINERS[1], shard=5)),
        ),
        CommitRound(result=body, attestations=attest(body, VALIDATORS[:3])),
        CommitRound(result=body, attestations=()),
    ]


@pytest.mark.parametrize("tx", _txs(), ids=lambda t: type(t).__name__)
def test_transactions_round_trip(tx: Any) -> None:
    data = encode_tx(tx)
    assert decode_tx(data) == tx
    assert encode_tx(decode_tx(data)) == data


def test_encode_tx_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        encode_tx("not a tx")  # type: ignore[arg-type]


def _bad_txs() -> list[bytes]:
    d = cbor2.dumps
    spec = encode_tx(_txs()[0])
    good_result = encode_result(result(JOB, 1, INIT_KEY, [update(TRAINERS[0], JOB, 1)]))
    return [
        b"",
        b"\xff",
        d([]),
        d({"tag": 1}),
        d([9, JOB]),
        d([2, JOB]),  # CancelJob without a reason
        d([2, "", ""]),  # empty job id
        d([2, "j" * 33, ""]),
        d([2, JOB, "r" * 201]),
        d([1, b"not a spec", INIT_KEY, b"n"]),
        d([1, cbor2.loads(spec)[1], INIT_KEY, b""]),  # empty nonce
        d([1, cbor2.loads(spec)[1], INIT_KEY, b"n" * 33]),
        d([1, cbor2.loads(spec)[1], "", b"n"]),  # empty init key
        d([3, JOB, 1, "m", []]),  # no tasks
        d([3, JOB, 0, "m", [[b"a", 0]]]),  # round 0
        d([3, JOB, 1, "m", [[b"a", "0"]]]),
        d([3, JOB, 1, "m", [[b"", 0]]]),
        d([3, JOB, 1, "m", [[b"a" * 65, 0]]]),
        d([3, JOB, 1, "m", [[b"a", 0]] * 65]),
        d([3, JOB, 1, "", [[b"a", 0]]]),
        d([4, b"not a result", []]),
        d([4, good_result, [[VALIDATORS[0]]]]),
        d([4, good_result, [[VALIDATORS[0], b"s" * 129]]]),
        d([4, good_result, [[VALIDATORS[0], b"s"]] * 65]),
        d([4, good_result, "atts"]),
        d([[[[[[1]]]]]]),  # too deep
        cbor2.dumps([2, JOB, ""], canonical=False).replace(b"\x83\x02", b"\x9f\x02") + b"\xff",
    ]


@pytest.mark.parametrize("data", _bad_txs())
def test_malformed_transactions_are_remote_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_tx(data)


def test_non_canonical_transaction_is_refused() -> None:
    # An indefinite-length array: the same value, not its canonical bytes.
    data = b"\x9f\x02" + cbor2.dumps(JOB) + cbor2.dumps("") + b"\xff"
    assert cbor2.loads(data) == [2, JOB, ""]
    with pytest.raises(RemoteProtocolError, match="canonical"):
        decode_tx(data)


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_remote_error(data: bytes) -> None:
    for decode in (decode_tx, decode_message, decode_result):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


@given(
    st.recursive(
        st.one_of(
            st.integers(-5, 70),
            st.binary(max_size=70),
            st.text(max_size=40),
            st.booleans(),
            st.none(),
            st.floats(),
        ),
        lambda inner: st.lists(inner, max_size=6),
        max_leaves=30,
    )
)
def test_any_cbor_value_decodes_or_raises_remote_error(value: object) -> None:
    data = cbor2.dumps(value, canonical=True)
    for decode in (decode_tx, decode_message, decode_result):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


# -- messages --------------------------------------------------------------------------------


def _messages() -> list[Any]:
    r = encode_result(result(JOB, 2, "m-1", [update(t, JOB, 2) for t in TRAINERS]))
    return [
        UpdateNotice(job=JOB, update=update(TRAINERS[0], JOB, 1)),
        Proposal(result=r, sig=b"s" * 32),
        Attestation(job=JOB, round=2, digest=result_digest(r), validator=VALIDATORS[1], sig=b"a"),
    ]


@pytest.mark.parametrize("msg", _messages(), ids=lambda m: type(m).__name__)
def test_messages_round_trip(msg: Any) -> None:
    assert decode_message(encode_message(msg)) == msg


def test_results_round_trip_and_stay_signed() -> None:
    ups = [update(t, JOB, 1) for t in TRAINERS]
    r = result(JOB, 1, INIT_KEY, ups)
    assert decode_result(encode_result(r)) == r
    assert all(u.verify(JOB, VERIFIER) for u in decode_result(encode_result(r)).updates)
    # The signature binds the job: the same update does not verify for another job.
    assert not ups[0].verify("fedcba9876543210", VERIFIER)


def _bad_messages() -> list[bytes]:
    d = cbor2.dumps
    u = update(TRAINERS[0], JOB, 1).as_list()
    return [
        b"",
        d([]),
        d([7]),
        d([1, JOB]),
        d([1, JOB, u[:5]]),
        d([1, JOB, [u[0], 0, *u[2:]]]),  # round 0
        d([1, JOB, [u[0], 1, "", *u[3:]]]),  # empty key
        d([1, JOB, [u[0], 1, "k" * 129, *u[3:]]]),
        d([1, JOB, [*u[:3], 0, *u[4:]]]),  # size 0
        d([1, JOB, [*u[:5], b""]]),  # unsigned
        d([1, JOB, [*u[:5], b"s" * 129]]),
        d([1, "j" * 33, u]),
        d([2, b"", b"sig"]),
        d([2, b"r", b""]),
        d([2, b"r" * (MAX_RESULT_BYTES + 1), b"sig"]),
        d([3, JOB, 1, b"short", VALIDATORS[0], b"s"]),
        d([3, JOB, 0, b"d" * 32, VALIDATORS[0], b"s"]),
        d([3, JOB, 1, b"d" * 32, b"", b"s"]),
        b"\x00" * (MAX_MESSAGE_BYTES + 1),
    ]


@pytest.mark.parametrize("data", _bad_messages())
def test_malformed_messages_are_remote_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(data)


def test_result_rules() -> None:
    ups = [update(t, JOB, 1) for t in TRAINERS[:2]]
    r = result(JOB, 1, INIT_KEY, ups)
    d = cbor2.loads(encode_result(r))

    def bad(i: int, v: object) -> bytes:
        body = list(d)
        body[i] = v
        return cbor2.dumps(body, canonical=True)

    for data in [
        bad(4, []),  # no updates
        bad(4, list(reversed(d[4]))),  # unsorted
        bad(4, [d[4][0], d[4][0]]),  # repeated
        bad(5, [b"stranger"]),  # contributor not in the update set
        bad(5, list(reversed(d[5]))),
        bad(6, [d[6 - 1][0], d[6 - 1][0]]),
        bad(7, [[b"stranger", 1.0]]),
        bad(7, [[TRAINERS[0], 1]]),  # an int score
        bad(8, 1),  # an int accuracy
        bad(10, b""),
        cbor2.dumps(d[:10], canonical=True),
        b"\x00" * (MAX_RESULT_BYTES + 1),
    ]:
        with pytest.raises(RemoteProtocolError):
            decode_result(data)
    # Same value, not canonical (a float that fits a half encoded as a double).
    loose = cbor2.dumps(d, canonical=False)
    assert cbor2.loads(loose) == d
    if loose != encode_result(r):
        with pytest.raises(RemoteProtocolError, match="canonical"):
            decode_result(loose)


def test_largest_result_fits_its_bound() -> None:
    """A result with MAX_PARTICIPANTS nodes over a few stale rounds, with full-size keys and
    signatures, must still encode below MAX_RESULT_BYTES (or a legal round could not commit)."""
    nodes = [bytes([i]) * 38 for i in range(64)]  # libp2p Ed25519 peer ids are 38 bytes
    ups = []
    for n in nodes:
        for rnd in (1, 2):
            ups.append(
                update(n, JOB, rnd).__class__(
                    node=n, round=rnd, key="k" * 64, size=1 << 30, samples=1 << 20, sig=b"s" * 64
                )
            )
    r = result(JOB, 2, "m" * 64, ups, model_key="m" * 64)
    assert len(encode_result(r)) <= MAX_RESULT_BYTES
    assert len(commit(r)) <= MAX_MESSAGE_BYTES
