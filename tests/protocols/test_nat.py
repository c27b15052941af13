"""The sans-I/O parts of NAT traversal: the dial-back codec and targets, and the reachability
tracker's verdict rules."""

from __future__ import annotations

from contextlib import suppress

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.nat.dialback import (
    MAX_MESSAGE_BYTES,
    DialbackInvalid,
    DialbackRequest,
    DialbackResponse,
    decode_request,
    decode_response,
    dialback_targets,
    encode_request,
    encode_response,
    tcp_port,
)
from p2pnode_protocols.nat.reachability import Reachability, ReachabilityTracker

ports = st.lists(st.integers(1, 65535), min_size=1, max_size=8, unique=True).map(tuple)
addrs = st.text(alphabet="/abcdef0123456789.:", min_size=1, max_size=64)


@given(ports)
@settings(max_examples=50)
def test_request_round_trips(p: tuple[int, ...]) -> None:
    req = DialbackRequest(ports=p)
    assert decode_request(encode_request(req)) == req


@given(st.text(max_size=40), st.lists(addrs, max_size=8).map(tuple), st.text(max_size=40))
@settings(max_examples=50)
def test_response_round_trips(observed: str, reached: tuple[str, ...], refused: str) -> None:
    resp = DialbackResponse(observed=observed, reached=reached, refused=refused)
    assert decode_response(encode_response(resp)) == resp


@given(st.binary(max_size=200))
@settings(max_examples=100)
def test_decoders_raise_only_their_own_error(data: bytes) -> None:
    # Any other exception fails the test: a peer's bytes must not get past the decoder.
    for decode in (decode_request, decode_response):
        with suppress(DialbackInvalid):
            decode(data)


@pytest.mark.parametrize(
    "body",
    [
        {"ports": []},
        {"ports": [0]},
        {"ports": [65536]},
        {"ports": [True]},
        {"ports": [1, 1]},
        {"ports": list(range(1, 10))},
        {"ports": [1], "extra": 1},
        [1, 2],
    ],
)
def test_bad_requests_are_refused(body: object) -> None:
    with pytest.raises(DialbackInvalid):
        decode_request(cbor2.dumps(body))


def test_oversized_messages_are_refused_before_decoding() -> None:
    with pytest.raises(DialbackInvalid, match="at most"):
        decode_request(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(DialbackInvalid):
        decode_response(cbor2.dumps({"reached": ["/ip4/1.2.3.4/tcp/1"] * 9}))


def test_targets_are_the_observed_ip_only() -> None:
    assert dialback_targets("203.0.113.7", (4001, 4002)) == [
        "/ip4/203.0.113.7/tcp/4001",
        "/ip4/203.0.113.7/tcp/4002",
    ]
    assert dialback_targets("2001:db8::1", (4001,)) == ["/ip6/2001:db8::1/tcp/4001"]
    for nothing in (None, "", "0.0.0.0", "224.0.0.251", "not-an-ip"):
        assert dialback_targets(nothing, (4001,)) == []


@pytest.mark.parametrize(
    ("addr", "port"),
    [
        ("/ip4/10.0.0.2/tcp/4001", 4001),
        ("/ip4/10.0.0.2/tcp/4001/p2p/12D3KooW", 4001),
        ("/ip6/::1/tcp/7", 7),
        ("/ip4/1.2.3.4/udp/4001/quic-v1", None),
        ("/ip4/1.2.3.4/tcp/4001/p2p/R/p2p-circuit", None),
        ("/ip4/1.2.3.4/tcp/x", None),
    ],
)
def test_tcp_port(addr: str, port: int | None) -> None:
    assert tcp_port(addr) == port


def test_tracker_needs_confirmations_then_holds() -> None:
    t = ReachabilityTracker(confirmations=2, ttl=100)
    assert t.record("a", False, 0) is Reachability.UNKNOWN
    assert t.record("b", False, 1) is Reachability.PRIVATE
    # One server that now reaches us does not flip two that did not.
    assert t.record("c", True, 2) is Reachability.PRIVATE
    assert t.record("d", True, 3) is Reachability.PRIVATE  # 2 against 2: stays
    assert t.record("e", True, 4) is Reachability.PUBLIC


def test_tracker_counts_a_server_once_and_forgets_old_verdicts() -> None:
    t = ReachabilityTracker(confirmations=2, ttl=10)
    t.record("a", True, 0)
    assert t.record("a", True, 1) is Reachability.UNKNOWN  # the same server twice
    assert t.due(["a", "b"], 2) == ["b"]
    assert t.due(["a", "b"], 5, older_than=4) == ["a", "b"]  # a's answer is old enough
    assert t.due(["a", "b"], 12) == ["a", "b"]  # a's verdict expired
    assert t.conclude(12) is Reachability.UNKNOWN  # nothing left to go on


def test_tracker_concludes_from_fewer_servers_when_none_is_left() -> None:
    t = ReachabilityTracker(confirmations=3, ttl=100)
    t.record("relay", False, 0)
    assert t.status is Reachability.UNKNOWN
    assert t.conclude(1) is Reachability.PRIVATE
    t2 = ReachabilityTracker(confirmations=3, ttl=100)
    t2.record("a", True, 0)
    t2.record("b", False, 0)
    assert t2.conclude(1) is Reachability.PRIVATE  # a tie: the safe guess


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.booleans()), max_size=40))
@settings(max_examples=100)
def test_tracker_verdict_rules_hold(events: list[tuple[str, bool]]) -> None:
    t = ReachabilityTracker(confirmations=2, ttl=1000, max_servers=4)
    for i, (server, reached) in enumerate(events):
        status = t.record(server, reached, float(i))
        vs = t.verdicts(float(i))
        assert len(vs) <= 4 and len({v.server for v in vs}) == len(vs)
        yes = sum(v.reached for v in vs)
        no = len(vs) - yes
        if yes >= 2 and yes > no:
            assert status is Reachability.PUBLIC
        if no >= 2 and no >= yes:
            assert status is Reachability.PRIVATE
