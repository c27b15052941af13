"""FrameBuffer answers every operation py-libp2p's yamux uses on a stream buffer exactly as
the bytearray it replaces, whatever the order of frames arriving and reads taking them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.network.bulkread import FrameBuffer

ops = st.lists(
    st.one_of(
        st.tuples(st.just("extend"), st.binary(max_size=40)),
        st.tuples(st.just("read"), st.integers(min_value=0, max_value=60)),  # bytes([:n]); del
        st.tuples(st.just("read_all"), st.none()),  # bytes(buf); clear()
        st.tuples(st.just("take_all"), st.none()),
    ),
    max_size=40,
)


@given(initial=st.binary(max_size=30), script=ops)
def test_behaves_as_the_bytearray_it_replaces(initial: bytes, script: list) -> None:  # type: ignore[type-arg]
    ours, theirs = FrameBuffer(bytearray(initial)), bytearray(initial)
    for op, arg in script:
        if op == "extend":
            ours.extend(arg)
            theirs.extend(arg)
        elif op == "read":
            assert bytes(ours[:arg]) == bytes(theirs[:arg])
            del ours[:arg]
            del theirs[:arg]
        elif op == "read_all":
            assert bytes(ours) == bytes(theirs)
            ours.clear()
            theirs.clear()
        else:
            assert b"".join(ours.take_all()) == bytes(theirs)
            theirs.clear()
        assert len(ours) == len(theirs)
        assert bool(ours) == bool(theirs)
    assert bytes(ours) == bytes(theirs)


def test_frames_are_kept_without_a_copy() -> None:
    frame = b"x" * 65_507
    buf = FrameBuffer()
    buf.extend(frame)
    assert buf.take_all()[0] is frame


def test_only_front_slices_are_supported() -> None:
    buf = FrameBuffer(b"abc")
    with pytest.raises(TypeError):
        buf[1:2]
    with pytest.raises(TypeError):
        del buf[::2]
