"""Observation normalization inside the model, and reward scaling on the sampling side.

**Observations.** :class:`ObsNormalizer` is a module whose *buffers* hold the running count,
mean and variance of the observations the learner has trained on, and whose forward pass maps
``obs -> clip((obs - mean) / sqrt(var + eps), -clip, clip)``. Because the statistics are
buffers of the model, they travel to rollout workers with the weights, are written into
checkpoints with them and are copied into target networks: no second synchronization channel.
Only the learner updates them (:meth:`ObsNormalizer.update`, called by the
:class:`~rldataflow.policies.learner.Learner` with every training batch, before its SGD pass),
the way Brax's PPO updates its normalizer from each batch of rollouts; workers only apply them.
Normalizing MuJoCo-style inputs this way is one of the "code-level optimizations" that
Engstrom et al. 2020 (arXiv:2005.12729) found to matter most for PPO.

**Rewards.** :class:`RewardScaler` divides each reward by the running standard deviation of
the per-env discounted return (``ret <- gamma * ret + r``, reset at episode ends), as in
OpenAI Baselines' ``VecNormalize``. It runs on the worker, before postprocessing, so value
targets and advantages see the scaled rewards while the reported episode returns stay raw.

Example::

    norm = ObsNormalizer((3,), clip=10.0)
    norm.update(torch.randn(256, 3) * 5 + 2)
    norm(torch.tensor([[2.0, 2.0, 2.0]]))          # ~0

    scaler = RewardScaler(num_envs=2, gamma=0.99)
    scaled = scaler(np.array([1.0, 0.0]), np.array([False, True]))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rldataflow.data.running_stats import RunningMeanStd

__all__ = ["NormalizedModel", "ObsNormalizer", "RewardScaler", "find_obs_normalizer"]


class ObsNormalizer(nn.Module):
    """Running mean/variance of flat observations as buffers; ``forward`` standardizes and clips.

    Args:
        shape: observation shape (flat vectors).
        clip: bound of the normalized values (observation clipping).
        eps: added to the variance before the square root.
    """

    def __init__(self, shape: Sequence[int], clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        self.clip = float(clip)
        self.eps = float(eps)
        # float64 accumulators so millions of pushes do not lose precision; float32 copies for
        # the forward pass are derived from them.
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(shape, dtype=torch.float32))
        self.register_buffer("scale", torch.ones(shape, dtype=torch.float32))

    @torch.no_grad()
    def update(self, obs: torch.Tensor | np.ndarray) -> None:
        """Fold a batch of observations into the statistics (Chan et al. pairwise update)."""
        rows = torch.as_tensor(np.asarray(obs), dtype=torch.float64).reshape(-1, *self.mean.shape)
        if len(rows) == 0:
            return
        stats = RunningMeanStd(tuple(self.mean.shape))
        stats.count = int(self.count.item())
        stats.mean = self.mean.numpy().copy()
        stats.m2 = self.m2.numpy().copy()
        batch = RunningMeanStd(tuple(self.mean.shape)).push(rows.numpy())
        stats.merge(batch)
        self.count.fill_(float(stats.count))
        self.mean.copy_(torch.from_numpy(stats.mean))
        self.m2.copy_(torch.from_numpy(stats.m2))
        var = stats.m2 / stats.count if stats.count >= 2 else np.ones_like(stats.m2)
        self.shift.copy_(torch.from_numpy(stats.mean.astype(np.float32)))
        self.scale.copy_(torch.from_numpy((1.0 / np.sqrt(var + self.eps)).astype(np.float32)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.clamp((obs - self.shift) * self.scale, -self.clip, self.clip)


class NormalizedModel(nn.Module):
    """Wrap a model so that every input goes through an :class:`ObsNormalizer` first.

    ``forward`` and (if the inner model has it) ``value`` take raw observations. Example::

        model = NormalizedModel(ActorCriticModel((8,), np.float32, 4), ObsNormalizer((8,)))
    """

    def __init__(self, model: nn.Module, normalizer: ObsNormalizer) -> None:
        super().__init__()
        self.inner = model
        self.obs_normalizer = normalizer

    def forward(self, obs: torch.Tensor, *args, **kwargs):
        return self.inner(self.obs_normalizer(obs), *args, **kwargs)

    def value(self, obs: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.inner.value(self.obs_normalizer(obs), *args, **kwargs)

    def __getattr__(self, name: str):
        # Losses reach into model parts (``model.log_std``, ``model.pi_head``): forward them.
        if name in ("inner", "obs_normalizer"):
            return super().__getattr__(name)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def find_obs_normalizer(model: nn.Module) -> ObsNormalizer | None:
    """The model's :class:`ObsNormalizer`, if it has one."""
    normalizer = getattr(model, "obs_normalizer", None)
    return normalizer if isinstance(normalizer, ObsNormalizer) else None


class RewardScaler:
    """Divide rewards by the running std of the per-env discounted return.

    Args:
        num_envs: sub-environments stepped together (one return accumulator each).
        gamma: the discount of the return whose spread is tracked.
        clip: bound of the scaled rewards (``None``: no clipping).
    """

    def __init__(self, num_envs: int, gamma: float, clip: float | None = 10.0) -> None:
        self.gamma = float(gamma)
        self.clip = clip
        self.returns = np.zeros(int(num_envs), dtype=np.float64)
        self.stats = RunningMeanStd(())

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Scale one step's rewards (shape ``(num_envs,)``); ``dones`` ends the accumulators."""
        rewards = np.asarray(rewards, dtype=np.float64)
        self.returns = self.returns * self.gamma + rewards
        self.stats.push(self.returns)
        self.returns[np.asarray(dones, dtype=bool)] = 0.0
        scaled = rewards / np.sqrt(self.stats.var + 1e-8)
        if self.clip is not None:
            scaled = np.clip(scaled, -self.clip, self.clip)
        return scaled.astype(np.float32)
