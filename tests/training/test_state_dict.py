"""State dicts: flatten/unflatten round trips and validation."""

import numpy as np
import pytest

from p2pnode.training.state_dict import ParamSpec, copy, flatten, same_layout, unflatten, validate


def _state() -> dict[str, np.ndarray]:
    return {
        "b": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a": np.array([1.5, -2.0], dtype=np.float64),
        "scalar": np.array(3.0, dtype=np.float32),
    }


def test_round_trip_keeps_order_shapes_dtypes() -> None:
    state = _state()
    spec = ParamSpec.of(state)
    vec = flatten(state)
    assert vec.dtype == np.float32 and vec.shape == (9,)
    assert spec.names == ("b", "a", "scalar")  # insertion order, not sorted
    back = unflatten(vec, spec)
    assert list(back) == list(state)
    for k in state:
        assert back[k].dtype == state[k].dtype
        np.testing.assert_array_equal(back[k], state[k])


def test_unflatten_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        unflatten(np.zeros(8, np.float32), ParamSpec.of(_state()))


def test_validate_rejects_bad_entries() -> None:
    validate(_state())
    with pytest.raises(TypeError):
        validate({"x": [1.0]})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        validate({"x": np.array([1], dtype=np.int32)})
    with pytest.raises(ValueError, match="NaN"):
        validate({"x": np.array([np.nan], dtype=np.float32)})
    with pytest.raises(TypeError):
        validate({"": np.zeros(1, np.float32)})


def test_copy_does_not_alias() -> None:
    state = _state()
    c = copy(state)
    c["a"][0] = 99.0
    assert state["a"][0] == 1.5
    assert same_layout(state, c)
    assert not same_layout(state, {"a": state["a"], "b": state["b"], "scalar": state["scalar"]})
