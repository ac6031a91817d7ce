"""``FlatPolicy``: a deterministic numpy policy whose parameters are one flat vector.

Black-box methods (ES, ARS) perturb and update the parameter vector as a whole, and evaluate
many episodes with it, so the policy is a plain numpy forward pass (a few microseconds per
step at CartPole sizes, against ~60 us for a batch-1 torch call): linear (``hiddens=()``,
the policy of ARS) or an MLP. Actions are deterministic: the argmax of the outputs for
Discrete spaces, the outputs themselves (clipped to the bounds by the env adapter) for Box.

With ``obs_normalization`` the input is ``clip((obs - mean) / std, -obs_clip, obs_clip)``, with
``mean`` / ``std`` frozen between weight updates (Mania et al. 2018, ARS V2; Salimans et al.
2017 normalize MuJoCo inputs likewise). The running statistics (:attr:`obs_stats`) belong to
the driver's policy; workers get the frozen ``mean`` / ``std`` with the weights.

The learning side is :class:`Adam` (ES) or a plain step (ARS), on the driver.

Example::

    policy = FlatPolicy(obs_space, gymnasium.spaces.Discrete(2), hiddens=(16,), seed=0)
    action = policy.act(obs)                        # with policy.theta
    action = policy.act(obs, policy.theta + 0.02 * eps)   # a perturbed copy
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from rldataflow.data.running_stats import RunningMeanStd

__all__ = ["Adam", "FlatPolicy"]

_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0),
                "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))}


class FlatPolicy:
    """Deterministic linear or MLP policy over a flat float32 parameter vector ``theta``.

    Args:
        observation_space: the preprocessed (flat ``Box``) observation space.
        action_space: ``Discrete`` or ``Box``.
        hiddens: hidden layer sizes; ``()`` is a linear policy (initialized to zero, as in
            ARS). MLP weights start as ``N(0, 1/fan_in)`` with the output layer scaled by 0.1.
        activation: ``"tanh"``, ``"relu"`` or ``"elu"``.
        obs_normalization: normalize observations by running statistics.
        obs_clip: bound of the normalized observations.
        seed: seeds the initial weights.
    """

    def __init__(self, observation_space: gymnasium.Space, action_space: gymnasium.Space,
                 hiddens: Sequence[int] = (), activation: str = "tanh",
                 obs_normalization: bool = False, obs_clip: float = 5.0, seed: int = 0) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"FlatPolicy needs a flat Box observation space, got "
                             f"{observation_space}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{sorted(_ACTIVATIONS)}")
        if isinstance(action_space, spaces.Discrete):
            out_dim = int(action_space.n)
        elif isinstance(action_space, spaces.Box):
            out_dim = int(np.prod(action_space.shape))
        else:
            raise ValueError(f"FlatPolicy supports Discrete and Box actions, not {action_space}")
        self.observation_space = observation_space
        self.action_space = action_space
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.obs_dim = int(observation_space.shape[0])
        self.dims = [self.obs_dim, *(int(h) for h in hiddens), out_dim]
        self.activation = activation
        self._act = _ACTIVATIONS[activation]
        self.obs_normalization = bool(obs_normalization)
        self.obs_clip = float(obs_clip)
        self.shapes = [(b, a) for a, b in zip(self.dims[:-1], self.dims[1:], strict=True)]
        self.num_params = sum(o * i + o for o, i in self.shapes)
        self.theta = self._initial_theta(np.random.default_rng(seed))
        self.obs_stats = RunningMeanStd(self.obs_dim)
        self.obs_mean = np.zeros(self.obs_dim, dtype=np.float32)
        self.obs_std = np.ones(self.obs_dim, dtype=np.float32)
        self.weights_version = 0
        self._optimizer: Adam | None = None

    def _initial_theta(self, rng: np.random.Generator) -> np.ndarray:
        theta = np.zeros(self.num_params, dtype=np.float32)
        if len(self.shapes) == 1:
            return theta  # linear: M_0 = 0 (Mania et al., Algorithm 2)
        for k, (w, _b) in enumerate(self.layers(theta)):
            scale = 1.0 / np.sqrt(w.shape[1]) * (0.1 if k == len(self.shapes) - 1 else 1.0)
            w[...] = rng.standard_normal(w.shape).astype(np.float32) * scale
        return theta

    # -- the forward pass ---------------------------------------------------------------------
    def layers(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, b), ...]`` as views into ``theta`` (``W`` is ``(out, in)``)."""
        if theta.shape != (self.num_params,):
            raise ValueError(f"theta has shape {theta.shape}, the policy {self.num_params} "
                             "parameters")
        out, pos = [], 0
        for o, i in self.shapes:
            w = theta[pos:pos + o * i].reshape(o, i)
            pos += o * i
            out.append((w, theta[pos:pos + o]))
            pos += o
        return out

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        if not self.obs_normalization:
            return obs
        return np.clip((obs - self.obs_mean) / self.obs_std, -self.obs_clip, self.obs_clip)

    def act(self, obs: np.ndarray, theta: np.ndarray | None = None,
            layers: list[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
        """Deterministic actions for observations ``(B, obs_dim)`` (or one ``(obs_dim,)``).

        ``layers`` (from :meth:`layers`) saves re-slicing ``theta`` on every step of an episode.
        """
        x = self.normalize(np.asarray(obs, dtype=np.float32))
        layers = layers if layers is not None else self.layers(
            self.theta if theta is None else theta)
        last = len(layers) - 1
        for k, (w, b) in enumerate(layers):
            x = x @ w.T + b
            if k < last:
                x = self._act(x)
        if self.discrete:
            return np.argmax(x, axis=-1)
        return x

    # -- weights (what workers get) -------------------------------------------------------------
    def set_obs_filter(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.obs_mean = np.asarray(mean, dtype=np.float32).copy()
        self.obs_std = np.asarray(std, dtype=np.float32).copy()

    def freeze_obs_stats(self) -> None:
        """Use the running statistics as the normalizer from now on (driver side)."""
        self.set_obs_filter(self.obs_stats.mean, self.obs_stats.std())

    def get_weights(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta.copy(), "obs_mean": self.obs_mean.copy(),
                "obs_std": self.obs_std.copy()}

    def set_weights(self, weights: Mapping[str, np.ndarray], version: int | None = None) -> None:
        theta = np.asarray(weights["theta"], dtype=np.float32)
        if theta.shape != (self.num_params,):
            raise ValueError(f"weights have {theta.size} parameters, the policy "
                             f"{self.num_params}")
        self.theta = theta.copy()
        self.set_obs_filter(weights["obs_mean"], weights["obs_std"])
        self.weights_version = int(version) if version is not None else self.weights_version + 1

    # -- the learning side (driver) -------------------------------------------------------------
    def optimizer(self, lr: float) -> Adam:
        """The driver's Adam on ``theta`` (made on first use; ``lr`` is kept current)."""
        if self._optimizer is None:
            self._optimizer = Adam(self.num_params, lr)
        self._optimizer.lr = float(lr)
        return self._optimizer

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {**self.get_weights(), "weights_version": self.weights_version,
                                 "obs_stats": self.obs_stats.state_dict()}
        if self._optimizer is not None:
            state["optimizer"] = self._optimizer.state_dict()
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.set_weights(state, version=int(state["weights_version"]))
        self.obs_stats.load_state_dict(state["obs_stats"])
        if "optimizer" in state:
            opt = state["optimizer"]
            self.optimizer(float(opt["lr"])).load_state_dict(opt)

    def __repr__(self) -> str:
        return (f"FlatPolicy(dims={self.dims}, params={self.num_params}, "
                f"version={self.weights_version})")


class Adam:
    """Adam (Kingma & Ba 2015, arXiv:1412.6980) on a flat numpy vector; ``step`` minimizes.

    Example::

        opt = Adam(3, lr=0.01)
        theta = opt.step(theta, grad)    # theta - lr * m_hat / (sqrt(v_hat) + eps)
    """

    def __init__(self, dim: int, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.lr, self.beta1, self.beta2, self.eps = float(lr), beta1, beta2, eps
        self.m = np.zeros(dim, dtype=np.float64)
        self.v = np.zeros(dim, dtype=np.float64)
        self.t = 0

    def step(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """The new parameters after one step along ``-grad``."""
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        lr_t = self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        return (theta - lr_t * self.m / (np.sqrt(self.v) + self.eps)).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "m": self.m.copy(), "v": self.v.copy(), "t": self.t}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.m = np.asarray(state["m"], dtype=np.float64).copy()
        self.v = np.asarray(state["v"], dtype=np.float64).copy()
        self.t = int(state["t"])
