"""Continuous-action pieces for off-policy actor-critic learners (SAC, DDPG, TD3).

* :class:`QNetwork` ``Q(s, a)`` and :class:`TwinQ` (two independent ones: the clipped double-Q
  trick of Fujimoto et al. 2018, arXiv:1802.09477, used by TD3 and SAC);
* :class:`SquashedGaussianActor`: ``a = tanh(u)``, ``u ~ N(mu(s), sigma(s))``, with the
  change-of-variables log-prob of Haarnoja et al. 2018 (arXiv:1812.05905, appendix C, eq. 26)
  ``log pi(a|s) = log N(u) - sum_i log(1 - tanh(u_i)^2)``;
* :class:`DeterministicActor`: ``a = tanh(mu(s))`` (DDPG, Lillicrap et al. 2015; TD3);
* :func:`to_box` / :func:`from_box`: the affine map between ``[-1, 1]`` and a Box's bounds.

All networks take the same model options as the other algorithms (``hiddens``, ``activation``)
and encode observations with :func:`~rldataflow.policies.models.make_encoder`: an MLP for flat
observations, the CNN for ``uint8`` images (the critic then appends the action to the image
features and runs an MLP of ``hiddens`` on them). Actions inside these networks are always in
``[-1, 1]``; :func:`to_box` maps them to the env's bounds.

Example::

    >>> actor = SquashedGaussianActor((3,), np.float32, action_dim=1, hiddens=(32, 32))
    >>> a, logp = actor.sample(torch.zeros(4, 3))
    >>> a.shape, logp.shape, bool((a.abs() < 1).all())
    (torch.Size([4, 1]), torch.Size([4]), True)
    >>> q = TwinQ((3,), np.float32, action_dim=1, hiddens=(32, 32))
    >>> [t.shape for t in q(torch.zeros(4, 3), a)]
    [torch.Size([4]), torch.Size([4])]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from rldataflow.data.sample_batch import SampleBatch
from rldataflow.policies.models import MLP, _linear, init_layer, make_encoder
from rldataflow.policies.policy import TorchPolicy
from rldataflow.policies.postprocessing import compute_nstep

__all__ = [
    "TRANSITION_COLUMNS",
    "BoxActorPolicy",
    "DeterministicActor",
    "QNetwork",
    "SquashedGaussianActor",
    "TwinQ",
    "box_bounds",
    "from_box",
    "nstep_transitions",
    "squashed_gaussian_logp",
    "tanh_log_det",
    "to_box",
]

_LOG_2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)

#: log sigma is clamped to this range (as in Haarnoja et al.'s softlearning code): a sigma of
#: e^-20 is a point mass, e^2 wider than the squashing can use.
LOG_STD_BOUNDS = (-20.0, 2.0)


# -- the Box map ----------------------------------------------------------------------------------
def box_bounds(space: spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of a Box as flat float32 arrays; a ValueError naming the space if it is
    not a Box with finite bounds (a squashed action cannot reach an infinite bound)."""
    if not isinstance(space, spaces.Box):
        raise ValueError(f"expected a Box action space, got {space}")
    low = np.asarray(space.low, np.float64).reshape(-1)
    high = np.asarray(space.high, np.float64).reshape(-1)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
        raise ValueError(f"the action space {space} needs finite bounds with high > low")
    return low.astype(np.float32), high.astype(np.float32)


def to_box(a: Any, low: Any, high: Any) -> Any:
    """``[-1, 1] -> [low, high]``: ``low + (a + 1) / 2 * (high - low)`` (numpy or torch)."""
    return low + (a + 1.0) * 0.5 * (high - low)


def from_box(x: Any, low: Any, high: Any) -> Any:
    """``[low, high] -> [-1, 1]``: the inverse of :func:`to_box` (numpy or torch)."""
    return 2.0 * (x - low) / (high - low) - 1.0


# -- the squashed Gaussian ------------------------------------------------------------------------
def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """``sum_i log(1 - tanh(u_i)^2)`` in the stable form ``2 (log 2 - u - softplus(-2u))``
    (exact; finite where ``1 - tanh(u)^2`` underflows to 0 in float32)."""
    return (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)


def squashed_gaussian_logp(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
                           ) -> torch.Tensor:
    """``log pi(tanh(u))`` for ``u ~ N(mean, exp(log_std))`` (diagonal), summed over the action
    dimensions: ``log N(u; mean, std) - sum log(1 - tanh(u)^2)`` (Haarnoja et al. 2018, eq. 26)."""
    z = (u - mean) * torch.exp(-log_std)
    gauss = (-0.5 * z * z - log_std - 0.5 * _LOG_2PI).sum(-1)
    return gauss - tanh_log_det(u)


class SquashedGaussianActor(nn.Module):
    """The SAC policy: ``mu(s), log sigma(s)`` heads on an encoder; actions ``tanh(u)``.

    ``forward(obs) -> (mean, log_std)`` (``log_std`` clamped to :data:`LOG_STD_BOUNDS`);
    :meth:`sample` draws reparameterized actions in ``[-1, 1]`` with their log-probs;
    :meth:`deterministic` is ``tanh(mean)`` (evaluation).
    """

    def __init__(self, obs_shape: Sequence[int], obs_dtype: Any, action_dim: int,
                 hiddens: Sequence[int] = (256, 256), activation: str = "relu") -> None:
        super().__init__()
        self.encoder = make_encoder(obs_shape, obs_dtype, hiddens, activation)
        self.action_dim = int(action_dim)
        self.head = init_layer(nn.Linear(self.encoder.out_dim, 2 * self.action_dim), std=0.01)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = _linear(self.head, self.encoder(obs))
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std.clamp(*LOG_STD_BOUNDS)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tanh(u), log pi)`` with ``u = mean + std * eps`` (differentiable in the actor's
        weights: the reparameterization of Haarnoja et al. 2018, eq. 11)."""
        mean, log_std = self(obs)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        u = mean + torch.exp(log_std) * eps
        return torch.tanh(u), squashed_gaussian_logp(u, mean, log_std)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


class DeterministicActor(nn.Module):
    """``mu(s) = tanh(Linear(encoder(s)))`` in ``[-1, 1]`` (DDPG, TD3)."""

    def __init__(self, obs_shape: Sequence[int], obs_dtype: Any, action_dim: int,
                 hiddens: Sequence[int] = (256, 256), activation: str = "relu") -> None:
        super().__init__()
        self.encoder = make_encoder(obs_shape, obs_dtype, hiddens, activation)
        self.action_dim = int(action_dim)
        self.head = init_layer(nn.Linear(self.encoder.out_dim, self.action_dim), std=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(_linear(self.head, self.encoder(obs)))

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)


# -- critics --------------------------------------------------------------------------------------
class QNetwork(nn.Module):
    """``Q(s, a) -> (B,)`` for actions in ``[-1, 1]``.

    Flat observations: an MLP on ``concat(s, a)``. Images: the CNN encodes ``s`` and an MLP of
    ``hiddens`` runs on ``concat(features, a)``.
    """

    def __init__(self, obs_shape: Sequence[int], obs_dtype: Any, action_dim: int,
                 hiddens: Sequence[int] = (256, 256), activation: str = "relu") -> None:
        super().__init__()
        shape = tuple(int(s) for s in obs_shape)
        if len(shape) == 1:
            self.obs_encoder: nn.Module | None = None
            self.mlp = make_encoder((shape[0] + int(action_dim),), np.float32, hiddens,
                                    activation)
        else:  # an image (make_encoder raises for anything else)
            self.obs_encoder = make_encoder(shape, obs_dtype, hiddens, activation)
            self.mlp = MLP(self.obs_encoder.out_dim + int(action_dim), hiddens, activation)
        self.head = init_layer(nn.Linear(self.mlp.out_dim, 1), std=1.0)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        features = obs if self.obs_encoder is None else self.obs_encoder(obs)
        x = torch.cat([features.float(), actions], dim=-1)
        return _linear(self.head, self.mlp(x)).squeeze(-1)


class TwinQ(nn.Module):
    """Two independent :class:`QNetwork` s: ``forward(s, a) -> (q1, q2)``; :meth:`min` is the
    clipped double-Q estimate ``min(q1, q2)`` (Fujimoto et al. 2018, eq. 10)."""

    def __init__(self, obs_shape: Sequence[int], obs_dtype: Any, action_dim: int,
                 hiddens: Sequence[int] = (256, 256), activation: str = "relu") -> None:
        super().__init__()
        self.q1 = QNetwork(obs_shape, obs_dtype, action_dim, hiddens, activation)
        self.q2 = QNetwork(obs_shape, obs_dtype, action_dim, hiddens, activation)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q1(obs, actions), self.q2(obs, actions)

    def min(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        q1, q2 = self(obs, actions)
        return torch.minimum(q1, q2)


# -- the policy shell -----------------------------------------------------------------------------
#: The columns an off-policy continuous transition keeps after n-step postprocessing.
TRANSITION_COLUMNS = ("obs", "actions", "rewards", "next_obs", "terminateds", "discounts")


def nstep_transitions(policy: TorchPolicy, batch: SampleBatch) -> SampleBatch:
    """``postprocess_fn`` of the continuous off-policy learners: n-step transitions
    (:func:`~rldataflow.policies.compute_nstep` with the policy's ``n_step`` and ``gamma``; per
    fragment, never across envs or episodes), keeping only :data:`TRANSITION_COLUMNS`."""
    out = compute_nstep(batch, int(policy.config["n_step"]), float(policy.config["gamma"]))
    return SampleBatch({k: out[k] for k in TRANSITION_COLUMNS}, stats=batch.stats,
                       info=batch.info)


class BoxActorPolicy(TorchPolicy):
    """A :class:`TorchPolicy` whose model has an ``actor`` acting in ``[-1, 1]``, mapped to the
    env's Box bounds (:func:`to_box`); the base of the SAC and DDPG/TD3 policies.

    Subclasses implement :meth:`actor_actions` (``[-1, 1]`` actions for an observation
    tensor). ``actions`` in sampled batches are in the env's bounds; losses map them back with
    :meth:`normalize`. Only the actor's weights travel to workers (:meth:`get_weights`): the
    critics, targets and temperature stay with the learner and in checkpoints.
    """

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box,
                 config: Mapping[str, Any], *, loss_fn: Any, model_factory: Any,
                 seed: int | None = None, algorithm: str = "this algorithm") -> None:
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"{algorithm} needs a Box action space, but the env's is "
                             f"{action_space}")
        self.low, self.high = box_bounds(action_space)
        self.action_dim = int(self.low.size)
        super().__init__(observation_space, action_space, config, loss_fn=loss_fn,
                         postprocess_fn=nstep_transitions, model_factory=model_factory,
                         seed=seed)
        self.low_t, self.high_t = torch.from_numpy(self.low), torch.from_numpy(self.high)
        #: exploring rows still to act uniformly at random (``initial_random_steps``)
        self.random_steps_left = int(config.get("initial_random_steps") or 0)

    def actor_actions(self, obs: torch.Tensor, explore: bool) -> np.ndarray:
        """Actions in ``[-1, 1]``, shape ``(B, action_dim)``."""
        raise NotImplementedError

    def compute_actions(self, obs: np.ndarray, explore: bool = True
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions within the env's bounds (``explore=False``: the deterministic action).
        The first ``initial_random_steps`` exploring rows are uniform on the Box (Fujimoto
        et al. 2018's start-up phase), drawn from the policy's seeded generator."""
        if explore and self.random_steps_left > 0:
            n = len(obs)
            self.random_steps_left = max(0, self.random_steps_left - n)
            a = self.np_rng.uniform(-1.0, 1.0, (n, self.action_dim))
            return to_box(a, self.low, self.high).astype(np.float32), {}
        with torch.no_grad():
            a = self.actor_actions(self._obs_tensor(obs), explore)
        return to_box(np.clip(a, -1.0, 1.0), self.low, self.high).astype(np.float32), {}

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Batch actions (env bounds) as ``[-1, 1]`` actions, shape ``(B, action_dim)``."""
        a = from_box(actions.reshape(len(actions), -1).float(), self.low_t, self.high_t)
        return a.clamp(-1.0, 1.0)

    def get_weights(self) -> dict[str, np.ndarray]:
        """The actor's weights (what sampling needs)."""
        with self.lock:
            return {k: v.detach().cpu().numpy().copy()
                    for k, v in self.model.actor.state_dict().items()}

    def set_weights(self, weights: Mapping[str, np.ndarray], version: int | None = None) -> None:
        state = {k: torch.from_numpy(np.require(np.asarray(v), requirements=["C", "W"]))
                 for k, v in weights.items()}
        with self.lock:
            self.model.actor.load_state_dict(state)
            self.weights_version = (int(version) if version is not None
                                    else self.weights_version + 1)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "random_steps_left": self.random_steps_left}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.random_steps_left = int(state.get("random_steps_left", 0))

    def value(self, obs: np.ndarray) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} has no state-value function")
