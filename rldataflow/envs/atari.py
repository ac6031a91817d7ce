"""Atari (ALE) envs with the standard DeepMind preprocessing, and true episode returns.

``make_env("ALE/Pong-v5")`` (and so every algorithm, the CLI and every runtime) builds the env
below unless ``env_config`` says ``{"atari_preprocessing": False}``. The stack follows Mnih et al.
2015 ("Human-level control through deep RL", Nature) and Machado et al. 2018 ("Revisiting the
ALE") as used by most baselines:

1. ``gymnasium.make(id, frameskip=1)``: the skip is done by the next wrapper (v5's own default
   ``repeat_action_probability=0.25`` sticky actions are kept; override it in ``env_config``);
2. Gymnasium's ``AtariPreprocessing``: up to ``noop_max=30`` random no-ops at reset,
   ``frame_skip=4`` with a max-pool over the last 2 frames, grayscale, ``screen_size=84``;
3. :class:`TrueEpisodeInfo`: sums the *unclipped* rewards of the whole game (all lives) and puts
   ``info["episode_true"] = {"r": return, "l": length}`` at a real game end;
4. :class:`EpisodicLife` (``episodic_life``): a lost life ends the training episode
   (``terminated``, ``info["episode_true"] = None``) but ``reset()`` then does not reset the game
   while lives remain. Gymnasium's ``terminal_on_life_loss`` cannot be used for this: its
   ``reset()`` always resets the whole game, so the agent would never see a game past its first
   life;
5. :class:`ClipReward` (``clip_rewards``): rewards become their sign, for training;
6. ``FrameStackObservation(frame_stack=4)`` then :class:`ChannelLast`: observations are
   ``(84, 84, 4)`` ``uint8``, which :func:`rldataflow.policies.models.make_encoder` gives to the
   Nature CNN.

:class:`~rldataflow.envs.vector_env.VectorEnv` reads ``info["episode_true"]`` (see
:data:`~rldataflow.envs.vector_env.TRUE_EPISODE_KEY`), so the episode returns and lengths that
workers report, and ``episode_return_mean`` in results, are the real game's.

Example::

    >>> env = make_atari_env("ALE/Pong-v5", {"frame_stack": 2})
    >>> env.observation_space.shape, env.observation_space.dtype
    ((84, 84, 2), dtype('uint8'))
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gymnasium
import numpy as np

from rldataflow.envs.registry import EnvError
from rldataflow.envs.vector_env import TRUE_EPISODE_KEY

__all__ = [
    "ATARI_PREFIX",
    "AtariOptions",
    "ChannelLast",
    "ClipReward",
    "EpisodicLife",
    "TrueEpisodeInfo",
    "ensure_ale_registered",
    "make_atari_env",
]

ATARI_PREFIX = "ALE/"
_INSTALL_HINT = 'pip install "rldataflow[atari]"'


def ensure_ale_registered(env_id: str) -> None:
    """Register ale-py's ``ALE/...`` ids with Gymnasium in this process (workers are separate
    processes, so each one does it on its first Atari env); one-line error if a package is missing.
    """
    if env_id in gymnasium.envs.registry:
        return
    try:
        import ale_py
    except ImportError as err:
        raise EnvError(f"env {env_id!r} needs ale-py: {_INSTALL_HINT}") from err
    gymnasium.register_envs(ale_py)


@dataclass
class AtariOptions:
    """The ``env_config`` keys read by :func:`make_atari_env` (all others go to ``gymnasium.make``).

    Attributes:
        atari_preprocessing: apply the whole stack below; ``False`` gives the raw ALE env.
        noop_max: at most this many random no-op steps after a game reset.
        frame_skip: agent steps repeat the action this many frames (max-pooled over the last 2).
        screen_size: observations are ``screen_size x screen_size`` grayscale.
        episodic_life: a lost life ends the training episode (not the game).
        clip_rewards: training rewards are ``sign(reward)`` (returns reported stay unclipped).
        frame_stack: number of last frames stacked as channels.
    """

    atari_preprocessing: bool = True
    noop_max: int = 30
    frame_skip: int = 4
    screen_size: int = 84
    episodic_life: bool = True
    clip_rewards: bool = True
    frame_stack: int = 4

    @classmethod
    def split(cls, env_config: dict) -> tuple[AtariOptions, dict]:
        """``(options, the remaining gymnasium.make kwargs)``, checking types and bounds."""
        names = {f.name for f in fields(cls)}
        ours = {k: v for k, v in env_config.items() if k in names}
        rest = {k: v for k, v in env_config.items() if k not in names}
        opts = cls(**ours)
        for name in ("atari_preprocessing", "episodic_life", "clip_rewards"):
            if not isinstance(getattr(opts, name), bool):
                raise EnvError(f"env_config[{name!r}] must be true or false, "
                               f"got {getattr(opts, name)!r}")
        for name, low in (("noop_max", 0), ("frame_skip", 1), ("screen_size", 8),
                          ("frame_stack", 1)):
            value = getattr(opts, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise EnvError(f"env_config[{name!r}] must be an integer >= {low}, got {value!r}")
        return opts, rest


class TrueEpisodeInfo(gymnasium.Wrapper):
    """Puts ``info["episode_true"] = {"r": return, "l": length}`` when the wrapped env ends.

    Place it where rewards are still unclipped and ends are real game ends (below
    :class:`EpisodicLife` and :class:`ClipReward`); the length counts agent steps.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self._ret = 0.0
        self._len = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self._ret, self._len = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, term, trunc, info = self.env.step(action)
        self._ret += float(reward)
        self._len += 1
        if term or trunc:
            info = {**info, TRUE_EPISODE_KEY: {"r": self._ret, "l": self._len}}
        return obs, reward, term, trunc, info


class EpisodicLife(gymnasium.Wrapper):
    """A lost life ends the episode for training; the game goes on at the next ``reset()``.

    At a life loss ``step`` returns ``terminated=True`` and ``info["episode_true"] = None`` (not a
    real episode end: :class:`~rldataflow.envs.vector_env.VectorEnv` does not report it).
    ``reset()`` after a life loss takes one no-op step instead of resetting the game; only a real
    game end (or the first reset) resets it. Mnih et al. 2015 used this for training.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def _ale_lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, term, trunc, info = self.env.step(action)
        self._game_over = bool(term or trunc)
        lives = self._ale_lives()
        if 0 < lives < self._lives and not self._game_over:
            term = True
            info = {**info, TRUE_EPISODE_KEY: None}
        self._lives = lives
        return obs, reward, term, trunc, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        if self._game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            # Step past the life-loss frame with a no-op; the game's state carries on.
            obs, _, term, trunc, info = self.env.step(0)
            if term or trunc:  # the no-op ended the game: a true end nobody will report
                obs, info = self.env.reset(**kwargs)
        self._game_over = False
        self._lives = self._ale_lives()
        return obs, info


class ClipReward(gymnasium.RewardWrapper):
    """Rewards become ``sign(reward)`` in {-1, 0, 1} (Mnih et al. 2015)."""

    def reward(self, reward: float) -> float:
        return float(np.sign(reward))


class ChannelLast(gymnasium.ObservationWrapper):
    """``(C, H, W)`` stacked frames -> contiguous ``(H, W, C)`` (what the CNN takes)."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gymnasium.spaces.Box) and len(space.shape) == 3
        c, h, w = space.shape
        self.observation_space = gymnasium.spaces.Box(0, 255, (h, w, c), dtype=np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(np.asarray(observation), 0, -1))

    def close(self) -> None:
        super().close()
        # Drop the references to the native ALE interface (the base env and AtariPreprocessing
        # both hold one): an ALEInterface still alive when a worker process exits makes
        # nanobind print a "leaked instance" report to stderr.
        env: Any = self
        while env is not None:
            if "ale" in vars(env):
                del env.ale
            env = getattr(env, "env", None)


def make_atari_env(env_id: str, env_config: dict | None = None) -> gymnasium.Env:
    """An ``ALE/...`` env preprocessed as in this module's docs (knobs: :class:`AtariOptions`).

    Example::

        >>> env = make_atari_env("ALE/Breakout-v5", {"clip_rewards": False})
        >>> obs, _ = env.reset(seed=0)
        >>> obs.shape, obs.dtype
        ((84, 84, 4), dtype('uint8'))
    """
    opts, kwargs = AtariOptions.split(dict(env_config or {}))
    ensure_ale_registered(env_id)
    kwargs.setdefault("disable_env_checker", True)
    if not opts.atari_preprocessing:
        return gymnasium.make(env_id, **kwargs)
    if "frameskip" in kwargs:
        raise EnvError("env_config['frameskip'] conflicts with the Atari preprocessing's "
                       "frame_skip; set env_config['frame_skip'] instead")
    try:
        import cv2  # noqa: F401  (AtariPreprocessing resizes with OpenCV)
    except ImportError as err:
        raise EnvError(f"the Atari preprocessing of {env_id!r} needs OpenCV: {_INSTALL_HINT}"
                       ) from err
    env = gymnasium.make(env_id, frameskip=1, **kwargs)
    env = gymnasium.wrappers.AtariPreprocessing(
        env, noop_max=opts.noop_max, frame_skip=opts.frame_skip, screen_size=opts.screen_size,
        terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    env = TrueEpisodeInfo(env)
    if opts.episodic_life:
        env = EpisodicLife(env)
    if opts.clip_rewards:
        env = ClipReward(env)
    env = gymnasium.wrappers.FrameStackObservation(env, opts.frame_stack)
    return ChannelLast(env)
