"""An encoded (compressed) model update (``p2pnode.training.compression.decode``): what
validators decode from every trainer's update blob. Allowed: ``DecodeError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode.training.compression"):
    from p2pnode.training.compression import DecodeError
    from p2pnode.training.compression import decode as _decode

MAX_SIZE = 1 << 16  # the model's size, which the caller passes as the bound


def decode(data: bytes) -> object:
    return _decode(data, max_size=MAX_SIZE)


def seeds() -> list[bytes]:
    import numpy as np

    from p2pnode.training.compression import Compressor

    rng = np.random.default_rng(0)
    vec = rng.standard_normal(300).astype(np.float32)
    out = []
    for kind in ("none", "fp16", "int8", "int4", "topk", "randk"):
        for values in ("float16", "float32"):
            c = Compressor(kind, ratio=0.05, block=64, values=values)
            out.append(c.encode(vec, np.random.default_rng(1)))
    return out


TARGET = Target(
    name="compression",
    decode=decode,
    allowed=(DecodeError,),
    seeds=seeds,
    doc="`p2pnode.training.compression.decode`: every trainer's update",
)
