import numpy as np
import pytest
from gymnasium import spaces

from rldataflow.envs import (
    UnsupportedSpaceError,
    action_to_env_fn,
    check_action_space,
    obs_preprocessor,
)


def test_box_float_is_flattened_float32():
    space = spaces.Box(-1.0, 1.0, (2, 3), np.float64)
    pre = obs_preprocessor(space)
    fn, shape, dtype = pre
    out = fn([np.ones((2, 3)), np.zeros((2, 3))])
    assert out.shape == (2, 6) and out.dtype == np.float32 and shape == (6,)
    assert dtype == np.float32
    assert pre.space.shape == (6,) and pre.space.dtype == np.float32
    np.testing.assert_array_equal(pre.space.low, -np.ones(6))


def test_uint8_image_kept():
    space = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    fn, shape, dtype = obs_preprocessor(space)
    raw = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    out = fn(raw)
    assert shape == (8, 8, 3) and dtype == np.uint8 and out.dtype == np.uint8
    np.testing.assert_array_equal(out, raw)
    gray = obs_preprocessor(spaces.Box(0, 255, (8, 8), np.uint8))
    assert gray.shape == (8, 8, 1)
    assert gray.fn(raw[:, :, :, 0]).shape == (2, 8, 8, 1)


def test_discrete_one_hot():
    fn, shape, dtype = obs_preprocessor(spaces.Discrete(4, start=1))
    out = fn(np.array([1, 4]))
    np.testing.assert_array_equal(out, [[1, 0, 0, 0], [0, 0, 0, 1]])
    assert shape == (4,) and out.dtype == np.float32


def test_multi_discrete_one_hots():
    fn, shape, _ = obs_preprocessor(spaces.MultiDiscrete([2, 3]))
    out = fn([np.array([1, 0]), np.array([0, 2])])
    np.testing.assert_array_equal(out, [[0, 1, 1, 0, 0], [1, 0, 0, 0, 1]])
    assert shape == (5,)


def test_dict_and_tuple_flattened():
    space = spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32), "mode": spaces.Discrete(3)})
    fn, shape, dtype = obs_preprocessor(space)
    obs = {"mode": 2, "pos": np.array([0.5, -0.5], np.float32)}
    out = fn([obs, obs])
    assert shape == (5,) and dtype == np.float32 and out.shape == (2, 5)
    # Dict keys are sorted: "mode" (one-hot) then "pos".
    np.testing.assert_allclose(out[0], [0, 0, 1, 0.5, -0.5])
    tup = spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (1,), np.float32)))
    fn, shape, _ = obs_preprocessor(tup)
    np.testing.assert_allclose(fn([(1, np.array([0.25]))]), [[0, 1, 0.25]])


def test_unsupported_spaces_named():
    with pytest.raises(UnsupportedSpaceError, match="Text"):
        obs_preprocessor(spaces.Text(5))
    with pytest.raises(UnsupportedSpaceError, match="MultiBinary"):
        check_action_space(spaces.MultiBinary(3))
    with pytest.raises(UnsupportedSpaceError, match="unbounded"):
        check_action_space(spaces.Box(-np.inf, np.inf, (2,)), mode="squash")
    with pytest.raises(ValueError, match="action_mode"):
        check_action_space(spaces.Box(-1, 1, (2,)), mode="tanh")


def test_action_conversion():
    to_env = action_to_env_fn(spaces.Box(-2.0, 2.0, (2,), np.float32))
    out = to_env(np.array([[3.0, -1.0], [-5.0, 0.5]], np.float32))
    np.testing.assert_array_equal(np.stack(out), [[2.0, -1.0], [-2.0, 0.5]])
    disc = action_to_env_fn(spaces.Discrete(3, start=-1))
    assert disc(np.array([0, 2])) == [-1, 1]
    assert all(type(a) is int for a in disc(np.array([0, 2])))
    md = action_to_env_fn(spaces.MultiDiscrete([2, 3], start=[1, 1]))
    np.testing.assert_array_equal(np.stack(md(np.array([[0, 2]]))), [[1, 3]])
