"""How the clients cut an upload into frames: at most PIECE bytes each, the caller's bytes in
order, and views of the caller's buffers rather than copies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.ipc import client
from p2pnode.ipc.client import _groups


@given(st.lists(st.binary(max_size=40), max_size=12), st.integers(1, 50))
def test_groups_are_bounded_and_keep_every_byte_in_order(pieces: list[bytes], piece: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(client, "PIECE", piece)
        groups = list(_groups(pieces))
    assert b"".join(b"".join(g) for g in groups) == b"".join(pieces)
    assert all(0 < sum(v.nbytes for v in g) <= piece for g in groups)
    assert all(sum(v.nbytes for v in g) == piece for g in groups[:-1])


def test_groups_are_views_of_the_callers_arrays() -> None:
    array = np.arange(1000, dtype=np.float32)
    (group,) = _groups([memoryview(array).cast("B")])
    array[0] = 7.0
    assert np.frombuffer(b"".join(group), np.float32)[0] == 7.0
