"""Tensor codec, manifests and CIDs: round trips, determinism, and hostile bytes."""

from __future__ import annotations

import contextlib

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pnode.blobs import tensors
from p2pnode_protocols.blobs.cid import CidError, manifest_cid, multihash, parse_cid
from p2pnode_protocols.blobs.manifest import Manifest, ManifestError, decode_manifest

dtypes = st.sampled_from(
    ["bool", "int8", "uint8", "<i2", ">i2", "<i4", ">u4", "<i8", "<f2", ">f4", "<f8", "<c8", ">c16"]
)
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(
        np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
    )
)
state_dicts = st.dictionaries(st.text(min_size=1, max_size=8), arrays, max_size=5)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.tobytes() == b.astype(a.dtype).tobytes()


@given(state_dicts)
def test_round_trip_over_dtypes_and_shapes(sd: dict[str, np.ndarray]) -> None:
    out = tensors.decode(tensors.encode(sd))
    assert list(out) == list(sd)
    for name, array in sd.items():
        le = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        assert out[name].dtype == le
        assert out[name].shape == array.shape
        assert out[name].tobytes() == array.astype(le).tobytes()  # NaNs compared by bits


@given(state_dicts)
def test_encoding_is_canonical_cbor_and_deterministic(sd: dict[str, np.ndarray]) -> None:
    data = tensors.encode(sd)
    assert cbor2.dumps(cbor2.loads(data), canonical=True) == data
    copy = {k: np.array(v, copy=True) for k, v in sd.items()}
    assert tensors.encode(copy) == data


@given(arrays)
def test_byte_order_and_layout_do_not_change_the_bytes(array: np.ndarray) -> None:
    swapped = array.astype(array.dtype.newbyteorder("S")) if array.dtype.itemsize > 1 else array
    fortran = np.array(array, order="F")  # asfortranarray would make 0-d arrays 1-d
    assert tensors.encode({"x": swapped}) == tensors.encode({"x": array})
    assert tensors.encode({"x": fortran}) == tensors.encode({"x": array})


@given(state_dicts, state_dicts)
def test_keys_equal_iff_tensors_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    def key(sd: dict[str, np.ndarray]) -> str:
        data = tensors.encode(sd)
        chunks = ((multihash(data), len(data)),) if data else ()
        return Manifest(chunks=chunks, size=len(data), media_type=tensors.MEDIA_TYPE).key

    assert (key(a) == key(b)) == (tensors.encode(a) == tensors.encode(b))


def test_distinct_tensors_give_distinct_keys() -> None:
    base = {"w": np.zeros((2, 3), np.float32)}
    variants = [
        {"w": np.zeros((3, 2), np.float32)},
        {"w": np.zeros((2, 3), np.float64)},
        {"v": np.zeros((2, 3), np.float32)},
        {"w": np.array([[0, 0, 0], [0, 0, 1e-30]], np.float32)},
    ]
    encodings = {tensors.encode(v) for v in [base, *variants]}
    assert len(encodings) == 5


def test_zero_d_and_empty_arrays() -> None:
    sd = {"scalar": np.float64(2.5), "empty": np.zeros((0, 4), np.int16)}
    out = tensors.decode(tensors.encode(sd))
    assert out["scalar"].shape == () and float(out["scalar"]) == 2.5
    assert out["empty"].shape == (0, 4)


def test_non_numeric_dtypes_are_refused() -> None:
    with pytest.raises(tensors.TensorCodecError):
        tensors.encode({"s": np.array(["a"])})
    with pytest.raises(tensors.TensorCodecError):
        tensors.encode({"o": np.array([object()])})


@given(st.binary(max_size=200))
def test_decode_garbage_raises_only_codec_errors(blob: bytes) -> None:
    with contextlib.suppress(tensors.TensorCodecError):
        tensors.decode(blob)


def test_decode_refuses_inconsistent_entries() -> None:
    bad = cbor2.dumps([tensors.MAGIC, 1, [["x", "<f4", [3], b"\x00" * 8]]])
    with pytest.raises(tensors.TensorCodecError, match="bytes for shape"):
        tensors.decode(bad)


def test_manifest_round_trip_and_bounds() -> None:
    m = Manifest(chunks=((multihash(b"a"), 1), (multihash(b"bc"), 2)), size=3, meta={"k": 1})
    assert decode_manifest(m.encode()) == m
    assert m.key == manifest_cid(m.encode())
    with pytest.raises(ManifestError, match="add up"):
        Manifest(chunks=((multihash(b"a"), 1),), size=2)
    with pytest.raises(ManifestError, match="outside"):
        Manifest(chunks=((multihash(b"a"), 10**9),), size=10**9)


@given(st.binary(max_size=300))
def test_manifest_garbage_raises_only_manifest_errors(blob: bytes) -> None:
    with contextlib.suppress(ManifestError):
        decode_manifest(blob)


def test_cid_parse_round_trip_and_errors() -> None:
    m = Manifest(chunks=(), size=0)
    codec, digest = parse_cid(m.key)
    assert codec == 0x71 and len(digest) == 32
    assert m.key.startswith("bafyrei")
    for bad in ("", "Qm123", "bafy!!", "b" + "a" * 20):
        with pytest.raises(CidError):
            parse_cid(bad)


@settings(max_examples=60, deadline=None)
@given(state_dicts, st.data())
def test_every_truncation_or_trailing_byte_is_refused(
    sd: dict[str, np.ndarray], data: st.DataObject
) -> None:
    blob = tensors.encode(sd)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(tensors.TensorCodecError):
        tensors.decode(blob[:cut])
    with pytest.raises(tensors.TensorCodecError, match="after the envelope"):
        tensors.decode(blob + b"\x00")


def test_decoding_a_bytearray_gives_writable_views_not_copies() -> None:
    sd = {"a": np.arange(8, dtype=np.uint8), "w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    buf = bytearray(tensors.encode(sd))
    out = tensors.decode(buf)
    for name, array in out.items():
        assert np.array_equal(array, sd[name]) and array.flags.writeable
        assert np.shares_memory(array, np.frombuffer(buf, np.uint8)), "a view, not a copy"
    from_bytes = tensors.decode(bytes(buf))
    assert all(a.flags.writeable for a in from_bytes.values()), "read-only input is copied"


@given(state_dicts)
def test_every_array_starts_aligned_so_none_is_copied(sd: dict[str, np.ndarray]) -> None:
    buf = bytearray(tensors.encode(sd))
    base = np.frombuffer(buf, np.uint8)
    for array in tensors.decode(buf).values():
        if array.nbytes:
            offset = array.__array_interface__["data"][0] - base.ctypes.data
            assert offset % tensors.ALIGN == 0 and np.shares_memory(array, base)


def test_version_1_blobs_without_padding_still_decode() -> None:
    w = np.arange(6, dtype="<f4").reshape(2, 3)
    v1 = cbor2.dumps([tensors.MAGIC, 1, [["w", "<f4", [2, 3], w.tobytes()]]], canonical=True)
    out = tensors.decode(v1)
    assert list(out) == ["w"] and np.array_equal(out["w"], w)
    with pytest.raises(tensors.TensorCodecError, match="bad padding"):
        tensors.decode(
            cbor2.dumps([tensors.MAGIC, 2, [["w", "<f4", [2, 3], b"\x01", w.tobytes()]]])
        )
