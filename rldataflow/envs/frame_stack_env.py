"""``FrameStackDummyEnv``: a cheap Atari-shaped env of stacked ``uint8`` frames, for tests and
benchmarks of the pixel path (dtype, replay memory, transfers) without an emulator.

Each step draws a new ``(H, W)`` ``uint8`` frame; the observation is the last ``stack`` frames,
channel-last ``(H, W, stack)``, newest last, like the usual Atari preprocessing (Mnih et al.
2015: 84x84 grey frames, 4 stacked). At reset the missing older frames are either copies of
the first frame (``padding="repeat"``, what Gymnasium's ``FrameStackObservation`` does with
its default ``padding_type="reset"``) or zeros (``padding="zero"``). Episodes last a random
number of steps in ``[min_len, max_len]``; the last step of an episode terminates with
probability ``terminate_prob`` and is truncated otherwise. The reward is ``action == frame
parity`` so a learner has something to fit, but the env is meant for plumbing, not learning.

Example::

    >>> env = FrameStackDummyEnv(size=8, stack=4)
    >>> obs, _ = env.reset(seed=0)
    >>> obs.shape, obs.dtype, bool((obs[..., 0] == obs[..., 3]).all())
    ((8, 8, 4), dtype('uint8'), True)
    >>> nxt, *_ = env.step(0)
    >>> bool((nxt[..., :3] == obs[..., 1:]).all())
    True
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["FrameStackDummyEnv", "make_frame_stack_dummy"]


class FrameStackDummyEnv(gymnasium.Env):
    """See the module docs. ``size``: frame height and width; ``num_actions``: Discrete size."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, size: int = 84, stack: int = 4, min_len: int = 5, max_len: int = 50,
                 padding: str = "repeat", terminate_prob: float = 0.5,
                 num_actions: int = 2) -> None:
        if padding not in ("repeat", "zero"):
            raise ValueError(f"padding must be 'repeat' or 'zero', got {padding!r}")
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
        self.size, self.stack, self.padding = int(size), int(stack), padding
        self.min_len, self.max_len = int(min_len), int(max_len)
        self.terminate_prob = float(terminate_prob)
        self.observation_space = spaces.Box(0, 255, (self.size, self.size, self.stack), np.uint8)
        self.action_space = spaces.Discrete(int(num_actions))
        self._frames = np.zeros((self.size, self.size, self.stack), np.uint8)
        self._t = 0
        self._len = 1

    def _new_frame(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (self.size, self.size), dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        first = self._new_frame()
        self._frames[:] = first[..., None] if self.padding == "repeat" else 0
        self._frames[..., -1] = first
        self._t = 0
        self._len = int(self.np_random.integers(self.min_len, self.max_len + 1))
        return self._frames.copy(), {}

    def step(self, action: Any) -> tuple:
        reward = float(int(action) == int(self._frames[0, 0, -1]) % 2)
        # slide: oldest frame out, a new one in (channel-last, newest last)
        self._frames[..., :-1] = self._frames[..., 1:]
        self._frames[..., -1] = self._new_frame()
        self._t += 1
        ended = self._t >= self._len
        terminated = ended and bool(self.np_random.random() < self.terminate_prob)
        return self._frames.copy(), reward, terminated, ended and not terminated, {}


def make_frame_stack_dummy(env_config: dict | None = None) -> FrameStackDummyEnv:
    """Env creator (``env_config`` keys: the constructor's arguments)."""
    return FrameStackDummyEnv(**dict(env_config or {}))
