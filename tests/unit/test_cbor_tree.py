"""``fits``: a bounded walk that refuses cycles and shared-reference trees before any encode."""

from __future__ import annotations

import cbor2
import pytest

from p2pnode_protocols.blobs.manifest import FORMAT, ManifestError, decode_manifest
from p2pnode_protocols.cbor_tree import fits


@pytest.mark.timeout(10)
def test_plain_values_fit_in_their_own_encoding() -> None:
    for value in ({"a": [1, b"xy", "z"]}, [], 7, [[[]]], {"k": {"k": [None, 1.5]}}):
        data = cbor2.dumps(value, canonical=True)
        assert fits(cbor2.loads(data), len(data))


@pytest.mark.timeout(10)
def test_a_cycle_and_an_exponential_tree_do_not_fit() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    data = cbor2.dumps(cyclic, value_sharing=True)
    assert not fits(cbor2.loads(data), 10_000)
    tree: list[object] = [1]
    for _ in range(60):  # 2**60 leaves in a few hundred bytes
        tree = [tree, tree]
    data = cbor2.dumps(tree, value_sharing=True)
    assert len(data) < 1000
    assert not fits(cbor2.loads(data), 1 << 20)


@pytest.mark.timeout(10)
def test_a_manifest_that_holds_itself_is_refused_as_not_canonical() -> None:
    meta: dict[str, object] = {}
    meta["me"] = meta
    raw = {"format": FORMAT, "chunks": [], "size": 0, "meta": meta}
    with pytest.raises(ManifestError, match="canonical"):
        decode_manifest(cbor2.dumps(raw, value_sharing=True))
