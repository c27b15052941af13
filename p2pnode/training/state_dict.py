"""State dicts: the parameter format every training module speaks.

A state dict is an ordered mapping from a parameter name to a numpy array (the format of the blob
issue: it is what gets encoded, chunked and content-addressed). Aggregation, compression and
transport work on one flat float vector, so this module converts between the two with a
:class:`ParamSpec` that records names, shapes and dtypes in order. Order is the mapping's insertion
order, never sorted: a model defines it once and every node sees the same layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

#: names -> arrays, in the model's own order. ``dict`` keeps insertion order.
StateDict = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class ParamEntry:
    """One named tensor of a :class:`ParamSpec`."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """The layout of a state dict: what :func:`unflatten` needs to rebuild it from a vector."""

    entries: tuple[ParamEntry, ...]

    @classmethod
    def of(cls, state: Mapping[str, np.ndarray]) -> ParamSpec:
        return cls(
            tuple(
                ParamEntry(name, tuple(int(s) for s in np.shape(a)), np.asarray(a).dtype)
                for name, a in state.items()
            )
        )

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def slices(self) -> Iterator[tuple[ParamEntry, slice]]:
        """Each entry with the slice of the flat vector that holds it."""
        offset = 0
        for e in self.entries:
            yield e, slice(offset, offset + e.size)
            offset += e.size


def validate(state: Mapping[str, np.ndarray]) -> None:
    """Reject what cannot be a state dict: non-str names, non-numeric or non-finite arrays."""
    if not isinstance(state, Mapping):
        raise TypeError(f"a state dict is a mapping of str to arrays, not {type(state).__name__}")
    for name, a in state.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"parameter names must be non-empty str, got {name!r}")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"parameter {name!r} is {type(a).__name__}, not a numpy array")
        if a.dtype.kind != "f":
            raise TypeError(f"parameter {name!r} has dtype {a.dtype}, expected a float dtype")
        if not np.isfinite(a).all():
            raise ValueError(f"parameter {name!r} holds NaN or inf")


def flatten(state: Mapping[str, np.ndarray], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Concatenate the arrays of ``state`` in order into one contiguous 1-D vector."""
    if not state:
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in state.values()])


def unflatten(vector: np.ndarray, spec: ParamSpec) -> StateDict:
    """Rebuild a state dict (copies, in each entry's own dtype) from a flat vector."""
    vector = np.asarray(vector)
    if vector.ndim != 1 or vector.shape[0] != spec.size:
        raise ValueError(f"vector of shape {vector.shape} does not fit a spec of {spec.size}")
    return {e.name: vector[s].astype(e.dtype).reshape(e.shape) for e, s in spec.slices()}


def copy(state: Mapping[str, np.ndarray]) -> StateDict:
    """A deep copy, so a caller's arrays are never aliased by a model or optimizer."""
    return {k: np.array(v, copy=True) for k, v in state.items()}


def same_layout(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """True when ``a`` and ``b`` have the same names in the same order with the same shapes."""
    return [(k, np.shape(v)) for k, v in a.items()] == [(k, np.shape(v)) for k, v in b.items()]
