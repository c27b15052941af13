"""The blocking client on the wire: how it cuts an upload into frames (at most PIECE bytes,
every byte in order, views of the caller's buffers rather than copies), and what it does when a
reply is cut off part-way."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.ipc import api as client
from p2pnode.ipc.api import groups as _groups


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


def test_a_reply_cut_off_part_way_leaves_the_client_closed_not_out_of_step(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A peer on the socket that answers a blob.read with the start of a data reply, then
    # stops: the client must not go on reading later frames from the middle of this one.
    import socket
    import threading

    import cbor2

    from p2pnode.ipc.client import Client
    from p2pnode.ipc.errors import DaemonNotRunning
    from p2pnode_protocols.framing import FrameDecoder

    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        decoder = FrameDecoder(1 << 20)
        while (frame := decoder.next_frame()) is None:
            decoder.receive_data(conn.recv(65536))
        body = cbor2.dumps({"id": frame["id"], "result": {"data": b"x" * 1000}}, canonical=True)
        conn.sendall(len(body).to_bytes(4, "big") + body[:500])
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with Client(socket_path=path, timeout=5) as c:
            with pytest.raises(DaemonNotRunning):
                c.read_into("k", 0, memoryview(bytearray(4096)))
            with pytest.raises(DaemonNotRunning):
                c.status()
    finally:
        thread.join(5)
        server.close()
