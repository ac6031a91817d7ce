"""``TorchPolicy``: a torch model, an action distribution, a loss and an optimizer.

The policy is the unit that moves between processes: workers call ``compute_actions`` and
``postprocess_trajectory``, learners call ``learn_on_batch`` or the ``compute_gradients`` /
``apply_gradients`` pair, and weights travel as ``dict[str, np.ndarray]`` (``get_weights``).
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rldataflow.data.sample_batch import SampleBatch
from rldataflow.policies.distributions import ActionDistribution, dist_class_for
from rldataflow.policies.models import ActorCriticModel
from rldataflow.policies.postprocessing import compute_advantages

__all__ = [
    "DEFAULT_POLICY_CONFIG",
    "LossFn",
    "ModelFactory",
    "PostprocessFn",
    "TorchPolicy",
    "actor_critic_loss",
    "default_model_factory",
]

#: Keys TorchPolicy itself reads, with defaults. Other keys are kept in ``policy.config`` for the
#: algorithm's loss (e.g. ``clip_param``), so they are not rejected.
DEFAULT_POLICY_CONFIG: dict[str, Any] = {
    "hiddens": (64, 64),
    "activation": "tanh",
    "vf_share_layers": False,
    "lr": 3e-4,
    "grad_clip": None,
    "gamma": 0.99,
    "lambda_": 0.95,
    "use_gae": True,
    "use_critic": True,
    "action_mode": "clip",
    "optimizer": "adam",
    "adam_eps": 1e-5,
    "init_log_std": 0.0,
    # used by the default actor_critic_loss only
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.0,
}

_OPTIMIZERS = ("adam", "sgd", "rmsprop")

LossFn = Callable[["TorchPolicy", dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
PostprocessFn = Callable[["TorchPolicy", SampleBatch], SampleBatch]
ModelFactory = Callable[[spaces.Box, gymnasium.Space, int, dict], nn.Module]


def default_model_factory(
    obs_space: spaces.Box, action_space: gymnasium.Space, dist_input_dim: int, config: dict
) -> nn.Module:
    """An :class:`ActorCriticModel` sized for the spaces (free ``log_std`` for Box actions)."""
    return ActorCriticModel(
        obs_space.shape,
        obs_space.dtype,
        dist_input_dim,
        hiddens=tuple(config["hiddens"]),
        activation=config["activation"],
        vf_share_layers=bool(config["vf_share_layers"]),
        free_log_std=isinstance(action_space, spaces.Box),
        init_log_std=float(config["init_log_std"]),
    )


def actor_critic_loss(
    policy: TorchPolicy, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain advantage actor-critic loss (the default when no ``loss_fn`` is given).

    ``-mean(logp * advantages) + vf_loss_coeff * 0.5 * mean((V - value_targets)^2)
    - entropy_coeff * mean(entropy)``.
    """
    dist_inputs, values = policy.model(batch[SampleBatch.OBS])
    dist = policy.action_dist(dist_inputs)
    logp = dist.logp(batch[SampleBatch.ACTIONS])
    pi_loss = -(logp * batch[SampleBatch.ADVANTAGES]).mean()
    vf_loss = 0.5 * ((values - batch[SampleBatch.VALUE_TARGETS]) ** 2).mean()
    entropy = dist.entropy().mean()
    cfg = policy.config
    total = pi_loss + cfg["vf_loss_coeff"] * vf_loss - cfg["entropy_coeff"] * entropy
    return total, {
        "policy_loss": pi_loss.item(),
        "vf_loss": vf_loss.item(),
        "entropy": entropy.item(),
        "total_loss": total.item(),
    }


def _to_tensor(value: np.ndarray) -> torch.Tensor | None:
    arr = np.asarray(value)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)  # losses run in float32; float64 columns would upcast
    elif arr.dtype.kind not in "biuf":
        return None  # object/string columns don't go to torch
    return torch.from_numpy(np.require(arr, requirements=["C", "W"]))


class TorchPolicy:
    """A policy: model + action distribution + loss + optimizer, with numpy in and out.

    Args:
        observation_space: the *preprocessed* observation space (a ``Box``: flat ``float32`` or
            ``uint8`` image), e.g. ``rldataflow.envs.obs_preprocessor(space).space``.
        action_space: Discrete, Box or MultiDiscrete.
        config: overrides of :data:`DEFAULT_POLICY_CONFIG`; extra keys are kept for the loss.
        loss_fn: ``loss_fn(policy, batch_tensors) -> (loss, stats)``; default
            :func:`actor_critic_loss`.
        postprocess_fn: ``postprocess_fn(policy, batch) -> batch`` replacing the default GAE /
            discounted-return postprocessing.
        model_factory: ``model_factory(obs_space, action_space, dist_input_dim, config)``
            returning a module whose ``forward(obs)`` gives ``(dist_inputs, values)`` (or only
            ``dist_inputs`` for critic-free models); an optional ``value(obs)`` method is used by
            :meth:`value`.
        seed: seeds weight init (without touching the global torch RNG), action sampling
            (a private ``torch.Generator``) and minibatch shuffling. ``None`` draws one from the
            global torch RNG, so a globally seeded process stays reproducible.

    Example::

        >>> import gymnasium, numpy as np
        >>> obs_space = gymnasium.spaces.Box(-1, 1, (4,), np.float32)
        >>> policy = TorchPolicy(obs_space, gymnasium.spaces.Discrete(2), seed=0)
        >>> actions, extras = policy.compute_actions(np.zeros((3, 4), np.float32))
        >>> actions.shape, sorted(extras)
        ((3,), ['action_dist_inputs', 'action_logp', 'vf_preds'])
    """

    def __init__(
        self,
        observation_space: gymnasium.Space,
        action_space: gymnasium.Space,
        config: Mapping[str, Any] | None = None,
        loss_fn: LossFn | None = None,
        postprocess_fn: PostprocessFn | None = None,
        model_factory: ModelFactory | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(observation_space, spaces.Box):
            raise ValueError(
                f"TorchPolicy expects the preprocessed (Box) observation space, got "
                f"{observation_space}; use rldataflow.envs.obs_preprocessor(space).space"
            )
        self.observation_space = observation_space
        self.action_space = action_space
        user_config = dict(config or {})
        for key in user_config:
            if key in DEFAULT_POLICY_CONFIG:
                continue
            # Unknown keys are allowed (losses read their own), but a near-miss of a known key
            # is almost surely a typo that would silently leave the default in place.
            hint = difflib.get_close_matches(key, list(DEFAULT_POLICY_CONFIG), n=1, cutoff=0.85)
            if hint:
                raise ValueError(f"unknown policy config key {key!r}; did you mean {hint[0]!r}?")
        self.config: dict[str, Any] = {**DEFAULT_POLICY_CONFIG, **user_config}
        if self.config["optimizer"] not in _OPTIMIZERS:
            hint = difflib.get_close_matches(str(self.config["optimizer"]), _OPTIMIZERS, n=1)
            raise ValueError(
                f"unknown optimizer {self.config['optimizer']!r}; choose one of {_OPTIMIZERS}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        self.loss_fn: LossFn = loss_fn or actor_critic_loss
        self.postprocess_fn = postprocess_fn
        self.dist_factory, self.dist_input_dim = dist_class_for(
            action_space, self.config["action_mode"]
        )
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self.seed = int(seed)
        factory = model_factory or default_model_factory
        # Weight init from our own seed without disturbing the process-wide torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model: nn.Module = factory(
                observation_space, action_space, self.dist_input_dim, self.config
            )
        self.generator = torch.Generator().manual_seed(self.seed + 1)
        self.np_rng = np.random.default_rng(self.seed + 2)
        self._optimizer: torch.optim.Optimizer | None = None  # made on first use (see optimizer)
        self.weights_version = 0
        self.num_grad_updates = 0
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        # Models take float32 vectors or uint8 images; anything else is cast on the way in.
        is_uint8 = np.dtype(observation_space.dtype) == np.uint8
        self._obs_dtype = np.dtype(np.uint8 if is_uint8 else np.float32)

    # -- construction -------------------------------------------------------------------
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, created when first needed. Rollout workers never step one, and
        creating the first torch optimizer in a process imports torch._dynamo: 1.3 s and ~90 MB
        of private memory per worker process, for nothing."""
        if self._optimizer is None:
            self._optimizer = self._make_optimizer()
        return self._optimizer

    def _make_optimizer(self) -> torch.optim.Optimizer:
        name, lr = self.config["optimizer"], float(self.config["lr"])
        params = self.model.parameters()
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, eps=float(self.config["adam_eps"]))
        if name == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr)
        return torch.optim.SGD(params, lr=lr)

    def action_dist(self, dist_inputs: torch.Tensor) -> ActionDistribution:
        """The action distribution for model outputs (sampling uses the policy's generator)."""
        return self.dist_factory(dist_inputs, generator=self.generator)

    # -- acting -----------------------------------------------------------------------------
    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        arr = np.asarray(obs)
        if arr.dtype != self._obs_dtype:
            arr = arr.astype(self._obs_dtype)
        return torch.from_numpy(np.require(arr, requirements=["C", "W"]))

    def compute_actions(
        self, obs: np.ndarray, explore: bool = True
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions for a batch of preprocessed observations.

        Returns ``(actions, extras)`` with ``extras`` holding ``action_logp``, ``vf_preds`` (when
        the model has a value head) and ``action_dist_inputs``, one row per observation. Without
        ``explore`` the actions are the distribution's mode.
        """
        with torch.no_grad():
            out = self.model(self._obs_tensor(obs))
            dist_inputs, values = out if isinstance(out, tuple) else (out, None)
            dist = self.action_dist(dist_inputs)
            if explore:
                actions, logp = dist.sample_and_logp()
            else:
                actions = dist.deterministic_sample()
                logp = dist.logp(actions)
            extras = {
                SampleBatch.ACTION_LOGP: logp.numpy(),
                SampleBatch.ACTION_DIST_INPUTS: dist_inputs.numpy(),
            }
            if values is not None:
                extras[SampleBatch.VF_PREDS] = values.numpy()
            return actions.numpy(), extras

    def value(self, obs: np.ndarray) -> np.ndarray:
        """State values ``V(obs)`` as a float32 array of shape ``(B,)``."""
        with torch.no_grad():
            obs_t = self._obs_tensor(obs)
            value_fn = getattr(self.model, "value", None)
            if value_fn is not None:
                return value_fn(obs_t).numpy()
            out = self.model(obs_t)
            if not isinstance(out, tuple) or out[1] is None:
                raise TypeError("this policy's model has no value function")
            return out[1].numpy()

    @property
    def is_squashed(self) -> bool:
        """Whether Box actions are tanh-squashed (already within bounds)."""
        return isinstance(self.action_space, spaces.Box) and self.config["action_mode"] == "squash"

    # -- postprocessing ---------------------------------------------------------------------
    def postprocess_trajectory(self, batch: SampleBatch) -> SampleBatch:
        """Add training targets to a rollout batch.

        ``postprocess_fn`` if given; otherwise ``advantages`` and ``value_targets`` by GAE
        (``use_gae``) or discounted returns, with terminated / truncated / fragment-cut
        boundaries handled as in :mod:`rldataflow.policies.postprocessing`.
        """
        if self.postprocess_fn is not None:
            return self.postprocess_fn(self, batch)
        cfg = self.config
        return compute_advantages(
            batch,
            gamma=float(cfg["gamma"]),
            lambda_=float(cfg["lambda_"]),
            use_gae=bool(cfg["use_gae"]),
            use_critic=bool(cfg["use_critic"]),
        )

    # -- learning -------------------------------------------------------------------------
    @staticmethod
    def batch_to_tensors(batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Numeric columns as torch tensors (zero-copy where possible, float64 -> float32)."""
        out = {}
        for key, value in batch.items():
            t = _to_tensor(value)
            if t is not None:
                out[key] = t
        return out

    def _clip_grads(self) -> float:
        clip = self.config["grad_clip"]
        max_norm = float(clip) if clip is not None else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(self._params, max_norm))

    def _loss_and_backward(self, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        loss, stats = self.loss_fn(self, tensors)
        for param in self._params:  # as optimizer.zero_grad(set_to_none=True), without one
            param.grad = None
        loss.backward()
        out = {k: v.item() if isinstance(v, torch.Tensor) else float(v) for k, v in stats.items()}
        out["grad_gnorm"] = self._clip_grads()
        return out

    def _step_done(self) -> None:
        self.num_grad_updates += 1
        self.weights_version += 1

    def learn_on_batch(
        self,
        batch: SampleBatch,
        num_epochs: int = 1,
        minibatch_size: int | None = None,
        shuffle: bool = True,
    ) -> dict[str, float]:
        """Run ``num_epochs`` passes of minibatch SGD over ``batch``; returns averaged stats.

        Every pass shuffles the rows (unless ``shuffle`` is false) and takes one optimizer step
        per minibatch of ``minibatch_size`` rows (the whole batch when ``None``; a smaller last
        minibatch is kept). Gradients are clipped by global norm when ``grad_clip`` is set.
        The stats include ``num_grad_updates`` (steps taken in this call) and
        ``weights_version``.
        """
        tensors = self.batch_to_tensors(batch)
        n = batch.count
        if n == 0:
            return {"num_grad_updates": 0, "weights_version": self.weights_version}
        size = n if minibatch_size is None else max(1, min(int(minibatch_size), n))
        sums: dict[str, float] = defaultdict(float)
        steps = 0
        self.model.train()
        for _ in range(num_epochs):
            perm = torch.from_numpy(self.np_rng.permutation(n)) if shuffle and size < n else None
            for start in range(0, n, size):
                if perm is None:
                    mb = {k: v[start : start + size] for k, v in tensors.items()}
                else:
                    idx = perm[start : start + size]
                    mb = {k: v[idx] for k, v in tensors.items()}
                stats = self._loss_and_backward(mb)
                self.optimizer.step()
                self._step_done()
                steps += 1
                for k, v in stats.items():
                    sums[k] += v
        out = {k: v / steps for k, v in sums.items()}
        out["num_grad_updates"] = steps
        out["weights_version"] = self.weights_version
        return out

    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        """Gradients of the loss on the whole batch (clipped like in training), as numpy arrays
        in the order of the model's trainable parameters, and the loss stats."""
        self.model.train()
        stats = self._loss_and_backward(self.batch_to_tensors(batch))
        grads = [
            p.grad.detach().numpy().copy() if p.grad is not None else np.zeros(p.shape, np.float32)
            for p in self._params
        ]
        stats["count"] = float(batch.count)
        return grads, stats

    def apply_gradients(self, grads: Sequence[np.ndarray]) -> None:
        """Take one optimizer step with the given gradients (from :meth:`compute_gradients`)."""
        if len(grads) != len(self._params):
            raise ValueError(f"expected {len(self._params)} gradient arrays, got {len(grads)}")
        for p, g in zip(self._params, grads, strict=True):
            p.grad = torch.tensor(np.asarray(g, dtype=np.float32)).reshape(p.shape)  # copies
        self.optimizer.step()
        self._step_done()

    # -- weights and state -------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Model state as numpy copies (what travels to workers)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def set_weights(self, weights: Mapping[str, np.ndarray], version: int | None = None) -> None:
        """Load model weights; ``weights_version`` becomes ``version`` (or is incremented)."""
        state = {
            k: torch.from_numpy(np.require(np.asarray(v), requirements=["C", "W"]))
            for k, v in weights.items()
        }
        self.model.load_state_dict(state)
        self.weights_version = int(version) if version is not None else self.weights_version + 1

    def get_state(self) -> dict[str, Any]:
        """Everything to resume training: weights, optimizer, counters and RNG states.

        Made of tensors, ints, floats, strings, tuples, lists and dicts only, so it can be
        written with ``torch.save`` and read back with ``torch.load(..., weights_only=True)``.
        """
        return {
            "weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "weights_version": self.weights_version,
            "num_grad_updates": self.num_grad_updates,
            "generator_state": self.generator.get_state(),
            "np_rng_state": self.np_rng.bit_generator.state,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        weights = {k: torch.as_tensor(v) for k, v in state["weights"].items()}
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.weights_version = int(state["weights_version"])
        self.num_grad_updates = int(state["num_grad_updates"])
        if "generator_state" in state:
            self.generator.set_state(state["generator_state"])
        if "np_rng_state" in state:
            self.np_rng.bit_generator.state = state["np_rng_state"]

    def __repr__(self) -> str:
        return (
            f"TorchPolicy(obs={self.observation_space}, act={self.action_space}, "
            f"version={self.weights_version})"
        )
