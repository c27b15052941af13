"""Length-prefixed CBOR frames: the one wire shape of p2pnode's IPC socket and RPC streams.

A frame is a 4-byte big-endian length followed by that many bytes of CBOR encoding one map. The
codec is sans-I/O in the h11 manner: :class:`FrameDecoder` only buffers bytes handed to it and
parses whole frames out of them; :func:`encode_frame` returns bytes for the caller to write.
Every length is checked against the decoder's ``max_frame`` *before* any buffer for the body is
grown, so a peer cannot make us allocate what it claims.
"""

from p2pnode_protocols.framing.codec import (
    HEADER_SIZE,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    cbor_head,
    decode_payload,
    encode_frame,
    encode_frame_parts,
    encode_frame_with_data,
)

__all__ = [
    "HEADER_SIZE",
    "FrameDecoder",
    "FrameError",
    "FrameTooLarge",
    "MalformedFrame",
    "cbor_head",
    "decode_payload",
    "encode_frame",
    "encode_frame_parts",
    "encode_frame_with_data",
]
