"""Action distributions written with plain torch ops.

``torch.distributions`` objects validate arguments and build several tensors on construction;
at batch 1 that costs more than the policy's MLP forward. These classes keep only the tensors
they need and sample with Gumbel-max (categorical) or one ``randn`` (Gaussian).

Every distribution is built from the model's flat output ``inputs`` (its ``action_dist_inputs``)
and offers ``sample()``, ``sample_and_logp()``, ``deterministic_sample()``, ``logp(actions)``,
``entropy()`` and ``kl(other)``. :func:`dist_class_for` picks the class for an action space.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from rldataflow.envs.spaces import check_action_space

__all__ = [
    "ActionDistribution",
    "Categorical",
    "DiagGaussian",
    "MultiCategorical",
    "dist_class_for",
]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


class ActionDistribution:
    """Base class: a batch of distributions parametrized by ``inputs`` of shape ``(B, dim)``."""

    def __init__(self, inputs: torch.Tensor, generator: torch.Generator | None = None) -> None:
        self.inputs = inputs
        self.generator = generator

    def sample(self) -> torch.Tensor:
        return self.sample_and_logp()[0]

    def sample_and_logp(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def deterministic_sample(self) -> torch.Tensor:
        raise NotImplementedError

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        raise NotImplementedError


def _gumbel_argmax(logp: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Gumbel-max: argmax(logp + G) with G = -log(E), E ~ Exp(1), is an exact categorical sample
    # and cheaper than torch.multinomial or a torch.distributions object.
    e = torch.empty_like(logp).exponential_(generator=generator)
    return torch.argmax(logp - torch.log(e), dim=-1)


class Categorical(ActionDistribution):
    """Categorical over the last axis of ``inputs`` (logits).

    Example::

        >>> d = Categorical(torch.tensor([[0.0, 0.0]]))
        >>> d.logp(torch.tensor([1])).exp().item()
        0.5
        >>> round(d.entropy().item(), 4)
        0.6931
    """

    def __init__(self, inputs: torch.Tensor, generator: torch.Generator | None = None) -> None:
        super().__init__(inputs, generator)
        self.log_probs = torch.log_softmax(inputs, dim=-1)

    @staticmethod
    def required_input_dim(space: spaces.Discrete) -> int:
        return int(space.n)

    def sample_and_logp(self) -> tuple[torch.Tensor, torch.Tensor]:
        actions = _gumbel_argmax(self.log_probs, self.generator)
        return actions, self.logp(actions)

    def deterministic_sample(self) -> torch.Tensor:
        return torch.argmax(self.log_probs, dim=-1)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        assert isinstance(other, Categorical)
        return (self.log_probs.exp() * (self.log_probs - other.log_probs)).sum(-1)


class MultiCategorical(ActionDistribution):
    """Independent categoricals, one per entry of ``nvec``; ``inputs`` concatenates their logits.

    Actions are ``int64`` of shape ``(B, len(nvec))``; log-probs and entropies are summed.

    Example::

        >>> d = MultiCategorical(torch.zeros(1, 5), nvec=(2, 3))
        >>> d.sample().shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        nvec: tuple[int, ...],
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(inputs, generator)
        self.nvec = tuple(int(n) for n in nvec)
        self.cats = [
            Categorical(chunk, generator) for chunk in torch.split(inputs, self.nvec, dim=-1)
        ]

    @staticmethod
    def required_input_dim(space: spaces.MultiDiscrete) -> int:
        return int(np.sum(space.nvec))

    def sample_and_logp(self) -> tuple[torch.Tensor, torch.Tensor]:
        acts, logps = zip(*(c.sample_and_logp() for c in self.cats), strict=True)
        return torch.stack(acts, dim=-1), torch.stack(logps, dim=-1).sum(-1)

    def deterministic_sample(self) -> torch.Tensor:
        return torch.stack([c.deterministic_sample() for c in self.cats], dim=-1)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.stack([c.logp(actions[..., i]) for i, c in enumerate(self.cats)], dim=-1).sum(
            -1
        )

    def entropy(self) -> torch.Tensor:
        return torch.stack([c.entropy() for c in self.cats], dim=-1).sum(-1)

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        assert isinstance(other, MultiCategorical)
        return torch.stack(
            [a.kl(b) for a, b in zip(self.cats, other.cats, strict=True)], dim=-1
        ).sum(-1)


class DiagGaussian(ActionDistribution):
    """Diagonal Gaussian; ``inputs`` is ``[mean, log_std]`` concatenated (``2 * dim`` wide).

    The policy model produces ``mean`` and appends a state-independent learnable ``log_std``
    parameter, so stored ``action_dist_inputs`` fully describe the distribution (PPO's KL term
    needs the old one).

    With ``squash`` (needs ``low``/``high``) samples are ``low + (tanh(u) + 1) / 2 * (high - low)``
    for ``u ~ N(mean, std)``, and ``logp`` includes the change-of-variables correction
    ``- sum log(1 - tanh(u)^2) - sum log((high - low) / 2)``. The squashed ``entropy()`` is the
    Gaussian's (no closed form exists); ``kl`` is exact since KL is invariant under the bijection.

    Example::

        >>> d = DiagGaussian(torch.zeros(1, 2))          # mean 0, log_std 0, one action dim
        >>> round(d.logp(torch.zeros(1, 1)).item(), 4)    # -0.5 * log(2 pi)
        -0.9189
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        squash: bool = False,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(inputs, generator)
        self.mean, self.log_std = torch.chunk(inputs, 2, dim=-1)
        self.squash = squash
        if squash:
            if low is None or high is None:
                raise ValueError("a squashed DiagGaussian needs low and high bounds")
            low_t = torch.as_tensor(np.asarray(low, np.float32).reshape(-1), dtype=inputs.dtype)
            high_t = torch.as_tensor(np.asarray(high, np.float32).reshape(-1), dtype=inputs.dtype)
            self.low = low_t
            self.half_range = (high_t - low_t) / 2.0

    @staticmethod
    def required_input_dim(space: spaces.Box) -> int:
        return 2 * int(np.prod(space.shape))

    def _gauss_logp(self, u: torch.Tensor) -> torch.Tensor:
        z = (u - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z * z - self.log_std - 0.5 * _LOG_2PI).sum(-1)

    def _squash(self, u: torch.Tensor) -> torch.Tensor:
        return self.low + (torch.tanh(u) + 1.0) * self.half_range

    def _log_det(self, u: torch.Tensor) -> torch.Tensor:
        # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)): stable for large |u|.
        log_dtanh = 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))
        return (log_dtanh + torch.log(self.half_range)).sum(-1)

    def sample_and_logp(self) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(self.mean.shape, generator=self.generator, dtype=self.mean.dtype)
        u = self.mean + torch.exp(self.log_std) * noise
        if not self.squash:
            return u, (-0.5 * noise * noise - self.log_std - 0.5 * _LOG_2PI).sum(-1)
        # Log-prob from the stored (squashed) action, exactly as logp() will recompute it at
        # learning time: for |u| large tanh saturates in float32, and a log-prob taken from u
        # would differ from the recomputed one, so PPO's first ratio would not be 1.
        actions = self._squash(u)
        return actions, self.logp(actions)

    def deterministic_sample(self) -> torch.Tensor:
        return self._squash(self.mean) if self.squash else self.mean

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        if not self.squash:
            return self._gauss_logp(actions)
        # Invert the squash; clamp away from +-1 where atanh is infinite (float32 saturation).
        y = ((actions - self.low) / self.half_range - 1.0).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        u = torch.atanh(y)
        return self._gauss_logp(u) - self._log_det(u)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * (_LOG_2PI + 1.0)).sum(-1)

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        assert isinstance(other, DiagGaussian)
        var_ratio_term = (torch.exp(2.0 * self.log_std) + (self.mean - other.mean) ** 2) / (
            2.0 * torch.exp(2.0 * other.log_std)
        )
        return (other.log_std - self.log_std + var_ratio_term - 0.5).sum(-1)


DistFactory = Callable[..., ActionDistribution]


def dist_class_for(action_space: gymnasium.Space, mode: str = "clip") -> tuple[DistFactory, int]:
    """Return ``(factory, input_dim)`` for ``action_space``.

    ``factory(inputs, generator=None)`` builds the distribution; ``input_dim`` is the width of
    ``inputs`` the model must produce (for Box: ``2 * action_dim``, mean and log_std).
    ``mode`` ("clip" or "squash") selects the Box variant.

    Example::

        >>> factory, dim = dist_class_for(gymnasium.spaces.Discrete(3))
        >>> dim, type(factory(torch.zeros(1, 3))).__name__
        (3, 'Categorical')
    """
    check_action_space(action_space, mode)
    if isinstance(action_space, spaces.Discrete):
        return Categorical, Categorical.required_input_dim(action_space)
    if isinstance(action_space, spaces.MultiDiscrete):
        nvec = tuple(int(n) for n in np.asarray(action_space.nvec).reshape(-1))
        return (
            functools.partial(MultiCategorical, nvec=nvec),
            MultiCategorical.required_input_dim(action_space),
        )
    assert isinstance(action_space, spaces.Box)
    dim = DiagGaussian.required_input_dim(action_space)
    if mode == "squash":
        return (
            functools.partial(
                DiagGaussian,
                squash=True,
                low=action_space.low.copy(),
                high=action_space.high.copy(),
            ),
            dim,
        )
    return DiagGaussian, dim
