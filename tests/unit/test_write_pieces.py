"""write_pieces: the bytes of the buffers, in order, in pieces that fill one Noise message."""

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.network.host import WRITE_PIECE, PieceCutter, write_pieces

buffers = st.lists(st.binary(max_size=300), max_size=12)


@given(bufs=buffers, size=st.integers(min_value=1, max_value=64))
def test_pieces_are_the_bytes_in_order_and_full_but_the_last(bufs: list[bytes], size: int) -> None:
    pieces = [bytes(p) for p in write_pieces(bufs, size)]
    assert b"".join(pieces) == b"".join(bufs)
    assert all(pieces), "no empty piece is written"
    assert all(len(p) == size for p in pieces[:-1])
    assert not pieces or 0 < len(pieces[-1]) <= size


@given(
    writes=st.lists(st.tuples(buffers, st.booleans()), max_size=8),
    size=st.integers(min_value=1, max_value=64),
)
def test_cutter_carries_remainders_across_writes(
    writes: list[tuple[list[bytes], bool]], size: int
) -> None:
    # Each write is cut, then flushed or not; what comes out is the bytes in order, and the
    # only short pieces are the ones a flush produced.
    cutter = PieceCutter(size)
    out: list[tuple[bytes, bool]] = []
    for bufs, flush in writes:
        out += [(bytes(p), False) for p in cutter.cut(bufs)]
        if flush and (last := cutter.flush()) is not None:
            out.append((bytes(last), True))
    held = cutter.flush()
    tail = [] if held is None else [bytes(held)]
    assert b"".join([p for p, _ in out] + tail) == b"".join(b"".join(b) for b, _ in writes)
    assert all(len(p) == size for p, flushed in out if not flushed)
    assert all(0 < len(p) <= size for p, _ in out)
    assert cutter.pending == 0


def test_chunks_written_back_to_back_fill_every_frame() -> None:
    header, data = b"h" * 40, bytes(range(256)) * 4096
    cutter = PieceCutter()
    pieces = [p for _ in range(3) for p in cutter.cut([header, data])]
    assert all(len(p) == WRITE_PIECE for p in pieces)
    assert 0 < cutter.pending < WRITE_PIECE
    assert len(pieces) + 1 == -(-3 * (len(header) + len(data)) // WRITE_PIECE)


def test_a_chunk_after_its_header_shares_the_first_frame() -> None:
    header, data = b"h" * 40, bytes(range(256)) * 4096  # 1 MiB
    pieces = list(write_pieces([header, data]))
    assert [len(p) for p in pieces[:-1]] == [WRITE_PIECE] * (len(pieces) - 1)
    assert len(pieces) == -(-(len(header) + len(data)) // WRITE_PIECE)
    assert bytes(pieces[0][:40]) == header
    assert isinstance(pieces[1], memoryview), "whole pieces of a large buffer are not copied"


def test_yamux_frame_of_one_piece_fits_one_noise_message() -> None:
    # The numbers py-libp2p 0.8.1 uses: a 12-byte yamux header, 65,519 plaintext bytes per
    # Noise message. If either changes in an upgrade, this is where it shows.
    from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
    from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE, MAX_MESSAGE_SIZE

    assert WRITE_PIECE + HEADER_SIZE == MAX_PLAINTEXT_LENGTH
    assert WRITE_PIECE <= MAX_MESSAGE_SIZE - HEADER_SIZE
