"""The switch's forwarding and control logic, on pipes instead of TAP devices (no root needed).

A :class:`Switch` is given ports whose file descriptors are the write ends of pipes, so what
it forwards can be read back from the read ends: MAC learning, flooding, shaping by pair,
partitions, counters, and the control requests' errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_simulations.testbed.switch import ControlError, Port, Switch

pytestmark = pytest.mark.timeout(30)

BCAST = b"\xff" * 6
COUNTS = ("sent", "delivered", "dropped_loss", "dropped_queue", "dropped_partition", "dropped_down")


def mac(i: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, i])


def frame(dst: bytes, src: bytes, body: bytes = b"x" * 50) -> bytes:
    return dst + src + b"\x08\x00" + body


@pytest.fixture
def sw() -> Iterator[tuple[Switch, dict[str, int]]]:
    """A switch with ports a, b, c; returns it and each port's read end."""
    s = Switch(seed=1, now=0.0)
    reads: dict[str, int] = {}
    fds = []
    for name in "abc":
        r, w = os.pipe()
        os.set_blocking(r, False)
        fds += [r, w]
        port = Port(name, f"ns-{name}", f"tbp-{name}", w)
        s.ports[name] = port
        s.by_fd[w] = port
        reads[name] = r
    yield s, reads
    for fd in fds:
        os.close(fd)


def drain(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def test_broadcast_floods_then_learned_unicast_goes_to_one_port(
    sw: tuple[Switch, dict[str, int]],
) -> None:
    s, reads = sw
    f = frame(BCAST, mac(1))
    s.receive(s.ports["a"], f, 0.0)
    s.release_due(0.0)
    assert drain(reads["b"]) == f and drain(reads["c"]) == f and drain(reads["a"]) == b""
    # b answers a: a's MAC was learned on port a, so only a gets it; b's MAC is learned too.
    g = frame(mac(1), mac(2))
    s.receive(s.ports["b"], g, 0.0)
    s.release_due(0.0)
    assert drain(reads["a"]) == g and drain(reads["c"]) == b""
    h = frame(mac(2), mac(1))
    s.receive(s.ports["a"], h, 0.0)
    s.release_due(0.0)
    assert drain(reads["b"]) == h and drain(reads["c"]) == b""


def test_a_delayed_pair_holds_its_frames_until_their_release(
    sw: tuple[Switch, dict[str, int]],
) -> None:
    s, reads = sw
    s.handle({"op": "set_link", "a": "a", "b": "b", "spec": {"delay": 0.05}})
    f = frame(BCAST, mac(1))
    s.receive(s.ports["a"], f, 1.0)
    s.release_due(1.0)
    assert drain(reads["c"]) == f  # a>c is not delayed
    assert drain(reads["b"]) == b""
    assert s.next_timeout(1.0) == pytest.approx(0.05)
    s.release_due(1.049)
    assert drain(reads["b"]) == b""
    s.release_due(1.05)
    assert drain(reads["b"]) == f


def test_set_default_changes_only_pairs_without_their_own_setting(
    sw: tuple[Switch, dict[str, int]],
) -> None:
    s, _ = sw
    s.handle({"op": "set_link", "a": "a", "b": "b", "spec": {"delay": 0.01}, "both": False})
    s.handle({"op": "set_default", "spec": {"delay": 0.2}})
    assert s.pairs[("a", "b")].shaper.spec.delay == 0.01
    assert ("b", "a") not in s.pairs  # one direction only
    s.receive(s.ports["c"], frame(BCAST, mac(3)), 0.0)
    assert s.pairs[("c", "a")].shaper.spec.delay == 0.2


def test_partition_drops_between_groups_and_counts_it(sw: tuple[Switch, dict[str, int]]) -> None:
    s, reads = sw
    s.handle({"op": "partition", "groups": [["a"]]})  # b and c: the rest, together
    s.receive(s.ports["a"], frame(BCAST, mac(1)), 0.0)
    s.receive(s.ports["b"], frame(BCAST, mac(2)), 0.0)
    s.release_due(0.0)
    assert drain(reads["b"]) == b"" and drain(reads["a"]) == b""
    assert drain(reads["c"]) == frame(BCAST, mac(2))
    st = s.handle({"op": "stats"})
    assert st["pairs"]["a>b"]["dropped_partition"] == 1
    assert st["pairs"]["b>c"]["delivered"] == 1
    assert st["partitioned"] is True
    s.handle({"op": "heal"})
    s.receive(s.ports["a"], frame(BCAST, mac(1)), 0.0)
    s.release_due(0.0)
    assert drain(reads["b"]) and drain(reads["c"])


def test_loss_counts(sw: tuple[Switch, dict[str, int]]) -> None:
    s, reads = sw
    s.handle({"op": "set_link", "a": "a", "b": "b", "spec": {"loss": 0.5}})
    s.receive(s.ports["b"], frame(BCAST, mac(2)), 0.0)  # b is learned
    for _ in range(400):
        s.receive(s.ports["a"], frame(mac(2), mac(1), b"y" * 10), 0.0)
        s.release_due(0.0)
        drain(reads["b"])
    c = s.handle({"op": "stats"})["pairs"]["a>b"]
    assert c["sent"] == 400 and c["delivered"] + c["dropped_loss"] == 400
    assert 150 < c["dropped_loss"] < 250
    ports = s.handle({"op": "stats"})["ports"]
    assert ports["a"]["rx_frames"] == 400 and ports["b"]["tx_frames"] == c["delivered"]


@pytest.mark.parametrize(
    ("req", "word"),
    [
        ("not an object", "op"),
        ({"op": "fly"}, "unknown op"),
        ({"op": "set_link", "a": "a", "b": "zz", "spec": {}}, "no port"),
        ({"op": "set_link", "a": "a", "b": "b", "spec": {"delay": -1}}, "delay"),
        ({"op": "set_link", "a": "a", "b": "b", "spec": {}, "both": "yes"}, "both"),
        ({"op": "set_default", "spec": {"loss": 2}}, "loss"),
        ({"op": "partition", "groups": "a,b"}, "groups"),
        ({"op": "partition", "groups": [["a"], ["a", "b"]]}, "two groups"),
        ({"op": "add_port", "host": "a", "netns": "x"}, "exists"),
        ({"op": "add_port", "host": "../x", "netns": "x"}, "bad host"),
        ({"op": "add_port", "host": "d", "netns": "x y"}, "bad namespace"),
        ({"op": "add_port", "host": "d", "netns": "x", "mac": "zz"}, "bad MAC"),
    ],
)
def test_bad_control_requests_are_refused_and_change_nothing(
    sw: tuple[Switch, dict[str, int]], req: object, word: str
) -> None:
    s, _ = sw
    before = (dict(s.pairs), s.default, s.group_of, dict(s.ports))
    with pytest.raises(ControlError, match=word):
        s.handle(req)
    assert (dict(s.pairs), s.default, s.group_of, dict(s.ports)) == before


def test_runt_frames_are_counted_and_dropped(sw: tuple[Switch, dict[str, int]]) -> None:
    s, reads = sw
    s.receive(s.ports["a"], b"short", 0.0)
    s.release_due(0.0)
    assert s.ports["a"].rx_frames == 1 and not s.heap
    assert drain(reads["b"]) == b""


def test_reset_link_returns_a_pair_to_the_default(sw: tuple[Switch, dict[str, int]]) -> None:
    s, _ = sw
    s.handle({"op": "set_default", "spec": {"delay": 0.02}})
    s.handle({"op": "set_link", "a": "a", "b": "b", "spec": {"delay": 0.3}})
    pairs = s.handle({"op": "stats"})["pairs"]
    assert pairs["a>b"]["spec"]["delay"] == 0.3 and pairs["b>a"]["explicit"] is True
    s.handle({"op": "reset_link", "a": "b", "b": "a"})
    pairs = s.handle({"op": "stats"})["pairs"]
    assert pairs["a>b"]["spec"]["delay"] == 0.02 and pairs["a>b"]["explicit"] is False
    s.handle({"op": "set_default", "spec": {"delay": 0.05}})
    assert s.pairs[("b", "a")].shaper.spec.delay == 0.05


@given(
    steps=st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from("abc"), st.floats(0, 0.02)),
        min_size=1,
        max_size=80,
    ),
    specs=st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.sampled_from("abc"),
            st.floats(0, 0.05),
            st.floats(0, 1),
            st.sampled_from([0.0, 0.2]),
            st.sampled_from([None, 20_000]),
        ),
        max_size=4,
    ),
    seed=st.integers(0, 1000),
)
@settings(max_examples=40)
def test_every_frame_is_delivered_once_in_order_or_counted_as_dropped(
    steps: list[tuple[str, str, float]],
    specs: list[tuple[str, str, float, float, float, int | None]],
    seed: int,
) -> None:
    s = Switch(seed=seed, now=0.0)
    reads: dict[str, int] = {}
    fds = []
    try:
        for name in "abc":
            r, w = os.pipe()
            os.set_blocking(r, False)
            fds += [r, w]
            s.ports[name] = Port(name, name, name, w)
            reads[name] = r
        for name, i in zip("abc", (1, 2, 3), strict=True):  # every MAC learned
            s.receive(s.ports[name], frame(b"\x01" + bytes(5), mac(i)), 0.0)
        s.release_due(10.0)
        for r in reads.values():
            drain(r)
        base = s.handle({"op": "stats"})["pairs"]
        for a, b, delay, frac, loss, rate in specs:
            if a != b:
                spec = {"delay": delay, "jitter": delay * frac, "loss": loss, "rate": rate}
                s.handle({"op": "set_link", "a": a, "b": b, "spec": spec, "both": False})
        now = 0.0
        sent: dict[tuple[str, str], list[int]] = {}
        for k, (a, b, gap) in enumerate(steps):
            now += gap
            if a == b:
                continue
            body = k.to_bytes(4, "big") + bytes(46)
            s.receive(s.ports[a], frame(mac(" abc".index(b)), mac(" abc".index(a)), body), now)
            sent.setdefault((a, b), []).append(k)
            s.release_due(now)
        s.release_due(now + 100)
        assert not s.heap
        got: dict[tuple[str, str], list[int]] = {}
        for b, r in reads.items():
            data = drain(r)
            for off in range(0, len(data), 64):
                f = data[off : off + 64]
                a = " abc"[f[11]]
                got.setdefault((a, b), []).append(int.from_bytes(f[14:18], "big"))
        stats = s.handle({"op": "stats"})["pairs"]
        for (a, b), ks in sent.items():
            delivered = got.get((a, b), [])
            assert delivered == [k for k in ks if k in set(delivered)]  # a subsequence: FIFO
            c = {k: v - base[f"{a}>{b}"][k] for k, v in stats[f"{a}>{b}"].items() if k in COUNTS}
            dropped = sum(c[k] for k in COUNTS if k.startswith("dropped_"))
            assert c["delivered"] == len(delivered) and c["sent"] == c["delivered"] + dropped
    finally:
        for fd in fds:
            os.close(fd)
