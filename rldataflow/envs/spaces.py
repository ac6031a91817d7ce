"""Observation preprocessing and action conversion between policies and Gymnasium spaces.

Observations become one array per batch:

* ``Box`` (float or int): flattened ``float32`` vector;
* ``Box`` of ``uint8`` with shape ``(H, W, C)`` (or ``(H, W)``, given a channel axis): kept as a
  ``uint8`` image; the CNN scales it by 1/255 (4x less memory in batches and replay buffers);
* ``Discrete``: one-hot ``float32``; ``MultiDiscrete``: concatenated one-hots; ``MultiBinary``:
  ``float32``;
* ``Dict`` / ``Tuple``: ``gymnasium.spaces.flatten`` to ``float32`` (nested Discretes one-hot).

Actions come out of a policy as arrays (``int64`` indices, or ``float32`` for ``Box``) and are
converted per env here: ``Box`` actions are clipped to the bounds when stepping the env (the
"clip" mode; the batch keeps the raw sample whose log-prob the policy computed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from rldataflow.envs.registry import EnvError

__all__ = [
    "ObsPreprocessor",
    "UnsupportedSpaceError",
    "action_to_env_fn",
    "check_action_space",
    "is_image_space",
    "obs_preprocessor",
]


class UnsupportedSpaceError(EnvError):
    """A space rldataflow (or an algorithm) cannot handle (the message names it)."""


def is_image_space(space: gymnasium.Space) -> bool:
    """A ``uint8`` Box of shape ``(H, W, C)`` or ``(H, W)``: kept as an image, not flattened."""
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) in (2, 3)
        and min(space.shape[:2]) > 1
    )


class ObsPreprocessor:
    """``(fn, shape, dtype)``: ``fn(batch of raw obs) -> np.ndarray`` of shape ``(B, *shape)``.

    Unpacks like a 3-tuple, is callable like ``fn``; ``.space`` is the matching Gymnasium ``Box``
    (what policies see).

    Example::

        >>> from gymnasium import spaces
        >>> fn, shape, dtype = obs_preprocessor(spaces.Discrete(3))
        >>> fn([0, 2]).tolist(), shape, dtype
        ([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], (3,), dtype('float32'))
    """

    __slots__ = ("dtype", "fn", "high", "low", "shape")

    def __init__(
        self,
        fn: Callable[[Any], np.ndarray],
        shape: tuple[int, ...],
        dtype: np.dtype,
        low: Any = -np.inf,
        high: Any = np.inf,
    ) -> None:
        self.fn = fn
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.low = low
        self.high = high

    def __iter__(self) -> Iterator[Any]:
        return iter((self.fn, self.shape, self.dtype))

    def __call__(self, raw_batch: Any) -> np.ndarray:
        return self.fn(raw_batch)

    @property
    def space(self) -> spaces.Box:
        """The preprocessed observation space (what policies see)."""
        return spaces.Box(low=self.low, high=self.high, shape=self.shape, dtype=self.dtype)


def _box_preprocessor(space: spaces.Box) -> ObsPreprocessor:
    if is_image_space(space):
        shape = tuple(space.shape) if len(space.shape) == 3 else (*space.shape, 1)

        def image(raw: Any) -> np.ndarray:
            arr = np.asarray(raw, dtype=np.uint8)
            return arr.reshape(len(arr), *shape)

        return ObsPreprocessor(image, shape, np.dtype(np.uint8), 0, 255)
    size = int(np.prod(space.shape, dtype=np.int64))

    def flat(raw: Any) -> np.ndarray:
        arr = np.asarray(raw, dtype=np.float32)
        return arr.reshape(len(arr), size)

    low = np.asarray(space.low, dtype=np.float32).reshape(-1)
    high = np.asarray(space.high, dtype=np.float32).reshape(-1)
    return ObsPreprocessor(flat, (size,), np.dtype(np.float32), low, high)


def _discrete_preprocessor(space: spaces.Discrete) -> ObsPreprocessor:
    n, start = int(space.n), int(space.start)

    def one_hot(raw: Any) -> np.ndarray:
        idx = np.asarray(raw, dtype=np.int64).reshape(-1) - start
        out = np.zeros((len(idx), n), dtype=np.float32)
        out[np.arange(len(idx)), idx] = 1.0
        return out

    return ObsPreprocessor(one_hot, (n,), np.dtype(np.float32), 0.0, 1.0)


def _multi_discrete_preprocessor(space: spaces.MultiDiscrete) -> ObsPreprocessor:
    nvec = np.asarray(space.nvec, dtype=np.int64).reshape(-1)
    start = np.asarray(space.start, dtype=np.int64).reshape(-1)
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    total = int(nvec.sum())

    def one_hots(raw: Any) -> np.ndarray:
        idx = np.asarray(raw, dtype=np.int64).reshape(-1, len(nvec)) - start + offsets
        out = np.zeros((len(idx), total), dtype=np.float32)
        out[np.arange(len(idx))[:, None], idx] = 1.0
        return out

    return ObsPreprocessor(one_hots, (total,), np.dtype(np.float32), 0.0, 1.0)


def _flatten_preprocessor(space: gymnasium.Space) -> ObsPreprocessor:
    try:
        flat_space = spaces.flatten_space(space)
    except NotImplementedError as err:
        raise UnsupportedSpaceError(
            f"observation space {space} cannot be flattened: {err}"
        ) from err
    size = int(np.prod(flat_space.shape))

    def flatten(raw: Sequence[Any]) -> np.ndarray:
        # Dict/Tuple observations are per-env Python structures: one flatten per env.
        out = np.empty((len(raw), size), dtype=np.float32)
        for i, obs in enumerate(raw):
            out[i] = spaces.flatten(space, obs)
        return out

    return ObsPreprocessor(flatten, (size,), np.dtype(np.float32))


def obs_preprocessor(space: gymnasium.Space) -> ObsPreprocessor:
    """Return ``(fn, out_shape, dtype)`` turning a batch of raw observations into one array.

    ``fn`` takes a sequence (list or stacked array) of raw observations from ``space``.
    Unsupported spaces raise :class:`UnsupportedSpaceError` naming the space.
    """
    if isinstance(space, spaces.Box):
        return _box_preprocessor(space)
    if isinstance(space, spaces.Discrete):
        return _discrete_preprocessor(space)
    if isinstance(space, spaces.MultiDiscrete):
        return _multi_discrete_preprocessor(space)
    if isinstance(space, spaces.MultiBinary):
        size = int(np.prod(space.shape))
        fn = lambda raw: np.asarray(raw, dtype=np.float32).reshape(-1, size)
        return ObsPreprocessor(fn, (size,), np.dtype(np.float32), 0.0, 1.0)
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        return _flatten_preprocessor(space)
    raise UnsupportedSpaceError(
        f"unsupported observation space {space} ({type(space).__name__}); supported: Box, "
        "Discrete, MultiDiscrete, MultiBinary, Dict, Tuple"
    )


def check_action_space(space: gymnasium.Space, mode: str = "clip") -> None:
    """Raise :class:`UnsupportedSpaceError` unless policies can act in ``space`` under ``mode``.

    ``mode`` applies to ``Box`` spaces: ``"clip"`` (Gaussian sample clipped to the bounds when
    stepping) or ``"squash"`` (tanh-squashed Gaussian; needs finite bounds).
    """
    if isinstance(space, spaces.Discrete):
        return
    if isinstance(space, spaces.MultiDiscrete):
        return
    if isinstance(space, spaces.Box):
        if mode not in ("clip", "squash"):
            raise ValueError(f"action_mode must be 'clip' or 'squash', got {mode!r}")
        if not np.issubdtype(space.dtype, np.floating):
            raise UnsupportedSpaceError(
                f"unsupported action space {space}: Box actions must be floating point"
            )
        if mode == "squash" and not (
            np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
        ):
            raise UnsupportedSpaceError(
                f"action_mode='squash' needs finite bounds, but action space {space} is unbounded"
            )
        return
    raise UnsupportedSpaceError(
        f"unsupported action space {space} ({type(space).__name__}); supported: Discrete, "
        "Box, MultiDiscrete"
    )


def action_to_env_fn(space: gymnasium.Space) -> Callable[[np.ndarray], list]:
    """Return ``fn(policy_actions) -> list of per-env actions`` for ``space``.

    Discrete indices get the space's ``start`` added and become Python ints (cheapest for envs);
    Box actions are reshaped to the space's shape and clipped to its bounds; MultiDiscrete
    actions get ``start`` added.
    """
    check_action_space(space)
    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        if start == 0:
            return lambda a: np.asarray(a).reshape(-1).tolist()
        return lambda a: (np.asarray(a).reshape(-1) + start).tolist()
    if isinstance(space, spaces.MultiDiscrete):
        start = np.asarray(space.start, dtype=np.int64)
        shape = space.shape

        def multi(a: np.ndarray) -> list:
            arr = np.asarray(a, dtype=np.int64).reshape(-1, *shape) + start
            return list(arr)

        return multi
    assert isinstance(space, spaces.Box)
    low = space.low.astype(space.dtype)
    high = space.high.astype(space.dtype)
    shape = space.shape
    dtype = space.dtype

    def clip(a: np.ndarray) -> list:
        arr = np.asarray(a, dtype=dtype).reshape(-1, *shape)
        return list(np.clip(arr, low, high))

    return clip
