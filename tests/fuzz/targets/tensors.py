"""An encoded state dict (``p2pnode.blobs.tensors.decode``): a model blob fetched from any
provider (after its hash check, but anyone may publish a blob). Allowed: ``TensorCodecError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode.blobs.tensors"):
    from p2pnode.blobs.tensors import TensorCodecError, decode


def seeds() -> list[bytes]:
    import numpy as np

    from p2pnode.blobs.tensors import encode

    return [
        encode({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(3, np.float64)}),
        encode({"step": np.array(5, dtype=np.int64), "mask": np.array([True, False])}),
        encode({}),
    ]


TARGET = Target(
    name="tensors",
    decode=decode,
    allowed=(TensorCodecError,),
    seeds=seeds,
    doc="`p2pnode.blobs.tensors.decode`: a model blob's state dict",
)
