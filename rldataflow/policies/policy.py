"""``TorchPolicy``: a torch model, an action distribution, a loss and an optimizer.

The policy is the unit that moves between processes: workers call ``compute_actions`` and
``postprocess_trajectory``, learners call ``learn_on_batch`` or the ``compute_gradients`` /
``apply_gradients`` pair, and weights travel as ``dict[str, np.ndarray]`` (``get_weights``).
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rldataflow.data.sample_batch import SampleBatch
from rldataflow.policies.distributions import ActionDistribution, dist_class_for
from rldataflow.policies.learner import OPTIMIZERS, Learner
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.policies.models import ActorCriticModel
from rldataflow.policies.normalization import NormalizedModel, ObsNormalizer
from rldataflow.policies.postprocessing import compute_advantages
from rldataflow.policies.recurrent import (
    STATE_IN_C,
    STATE_IN_H,
    STATE_OUT_C,
    STATE_OUT_H,
    RecurrentActorCriticModel,
)

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
    # robustness aids (rldataflow.policies.normalization, rldataflow.policies.schedules)
    "obs_normalization": False,
    "obs_clip": 10.0,
    "reward_scaling": False,
    "lr_schedule": None,
    "entropy_coeff_schedule": None,
    # recurrent models (see rldataflow.policies.recurrent)
    "use_lstm": False,
    "lstm_cell_size": 64,
    "max_seq_len": 20,
    # used by the default actor_critic_loss only
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.0,
}

_OPTIMIZERS = OPTIMIZERS

LossFn = Callable[["TorchPolicy", dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
PostprocessFn = Callable[["TorchPolicy", SampleBatch], SampleBatch]
ModelFactory = Callable[[spaces.Box, gymnasium.Space, int, dict], nn.Module]


def default_model_factory(
    obs_space: spaces.Box, action_space: gymnasium.Space, dist_input_dim: int, config: dict
) -> nn.Module:
    """An :class:`ActorCriticModel` sized for the spaces (free ``log_std`` for Box actions), or
    a :class:`RecurrentActorCriticModel` with ``use_lstm``."""
    if config.get("use_lstm"):
        return RecurrentActorCriticModel(
            obs_space.shape, obs_space.dtype, dist_input_dim, hiddens=tuple(config["hiddens"]),
            activation=config["activation"], cell_size=int(config["lstm_cell_size"]),
            free_log_std=isinstance(action_space, spaces.Box),
            init_log_std=float(config["init_log_std"]))
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
        learner_options: keyword arguments of this policy's :class:`Learner` (``targets``,
            ``kl``, ``fused_adam``). The learner is made on first use: processes that only
            sample never build an optimizer or a target network.

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
        learner_options: Mapping[str, Any] | None = None,
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
        if self.config["obs_normalization"]:
            if len(observation_space.shape) != 1:
                raise ValueError(
                    f"obs_normalization needs flat observations, got shape "
                    f"{observation_space.shape} (images are scaled by 1/255 in the model)")
            self.model = NormalizedModel(
                self.model, ObsNormalizer(observation_space.shape, float(self.config["obs_clip"])))
        #: the model keeps an LSTM state across steps (see rldataflow.policies.recurrent)
        self.is_recurrent = bool(getattr(self.model, "is_recurrent", False))
        self.max_seq_len = int(self.config["max_seq_len"])
        if self.max_seq_len < 1:
            raise ValueError(f"policy config key 'max_seq_len' must be >= 1, got "
                             f"{self.max_seq_len}")
        self.generator = torch.Generator().manual_seed(self.seed + 1)
        self.np_rng = np.random.default_rng(self.seed + 2)
        self.learner_options = dict(learner_options or {})
        self._learner: Learner | None = None
        # Held by the learner while it updates, and by weight and state reads, so a reader on
        # another thread (a broadcast, save()) never sees half an update. Uncontended: ~50 ns.
        self.lock = threading.RLock()
        self.weights_version = 0
        self.num_grad_updates = 0
        # Env steps sampled so far by the whole run, set by the training operator before each
        # update: the clock of lr / entropy schedules.
        self.global_timestep = 0
        # Models take float32 vectors or uint8 images; anything else is cast on the way in.
        is_uint8 = np.dtype(observation_space.dtype) == np.uint8
        self._obs_dtype = np.dtype(np.uint8 if is_uint8 else np.float32)

    # -- the learning side ----------------------------------------------------------------
    @property
    def learner(self) -> Learner:
        """This policy's :class:`Learner` (optimizers, target networks, KL), made when first
        needed."""
        if self._learner is None:
            self._learner = self.make_learner()
        return self._learner

    def make_learner(self) -> Learner:
        return Learner(self, self.loss_fn, **self.learner_options)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The learner's (default) optimizer."""
        return self.learner.optimizer

    @property
    def target_model(self) -> nn.Module:
        """The learner's target network (policies whose learner keeps one: DQN, APPO)."""
        target = self.learner.targets.get("target")
        if target is None:
            raise AttributeError(f"{type(self).__name__} has no target network")
        return target.module

    def update_target(self) -> None:
        """Copy the model's weights into the target network(s)."""
        self.learner.update_targets()

    @property
    def kl_coeff(self) -> float:
        """The KL penalty weight (policies whose loss has one: PPO, APPO)."""
        kl = self.learner.kl
        if kl is None:
            raise AttributeError(f"{type(self).__name__} has no KL coefficient")
        return kl.value

    @kl_coeff.setter
    def kl_coeff(self, value: float) -> None:
        kl = self.learner.kl
        if kl is None:
            raise AttributeError(f"{type(self).__name__} has no KL coefficient")
        kl.value = float(value)

    def action_dist(self, dist_inputs: torch.Tensor) -> ActionDistribution:
        """The action distribution for model outputs (sampling uses the policy's generator)."""
        return self.dist_factory(dist_inputs, generator=self.generator)

    # -- acting -----------------------------------------------------------------------------
    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        arr = np.asarray(obs)
        if arr.dtype != self._obs_dtype:
            arr = arr.astype(self._obs_dtype)
        return torch.from_numpy(np.require(arr, requirements=["C", "W"]))

    def initial_state(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Zero LSTM state ``(h, c)`` for ``batch_size`` envs (recurrent models only)."""
        h, c = self.model.initial_state(batch_size)
        return h.numpy(), c.numpy()

    def compute_actions(
        self, obs: np.ndarray, explore: bool = True,
        state: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions for a batch of preprocessed observations.

        Returns ``(actions, extras)`` with ``extras`` holding ``action_logp``, ``vf_preds`` (when
        the model has a value head) and ``action_dist_inputs``, one row per observation. Without
        ``explore`` the actions are the distribution's mode. A recurrent policy takes the
        LSTM ``state`` ``(h, c)`` of every row (``None``: the zero state) and adds it to the
        extras as ``state_in_h``/``state_in_c``, and the next state as
        ``state_out_h``/``state_out_c``.
        """
        with torch.no_grad():
            obs_t = self._obs_tensor(obs)
            if self.is_recurrent:
                if state is None:
                    state = self.initial_state(obs_t.shape[0])
                h, c = torch.from_numpy(state[0]), torch.from_numpy(state[1])
                dist_inputs, values, (h_out, c_out) = self.model.forward_step(obs_t, h, c)
            else:
                out = self.model(obs_t)
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
            if self.is_recurrent:
                extras[STATE_IN_H], extras[STATE_IN_C] = state
                extras[STATE_OUT_H], extras[STATE_OUT_C] = h_out.numpy(), c_out.numpy()
            return actions.numpy(), extras

    def value(self, obs: np.ndarray,
              state: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """State values ``V(obs)`` as a float32 array of shape ``(B,)`` (a recurrent policy:
        from the LSTM ``state`` of each row, ``None``: the zero state)."""
        with torch.no_grad():
            obs_t = self._obs_tensor(obs)
            if self.is_recurrent:
                if state is None:
                    state = self.initial_state(obs_t.shape[0])
                _, values, _ = self.model.forward_step(
                    obs_t, torch.from_numpy(state[0]), torch.from_numpy(state[1]))
                return values.numpy()
            value_fn = getattr(self.model, "value", None)
            if value_fn is not None:
                return value_fn(obs_t).numpy()
            out = self.model(obs_t)
            if not isinstance(out, tuple) or out[1] is None:
                raise TypeError("this policy's model has no value function")
            return out[1].numpy()

    def model_outputs(self, batch: Mapping[str, torch.Tensor], model: nn.Module | None = None
                      ) -> Any:
        """The model's output on a training minibatch: ``model(obs)``, or for a recurrent
        model the padded-sequence forward (:meth:`RecurrentActorCriticModel.forward_padded`),
        flattened like the minibatch's columns. ``model``: another network of the same
        architecture (a target network); default: this policy's."""
        model = self.model if model is None else model
        if self.is_recurrent:
            return model.forward_padded(batch)
        return model(batch[SampleBatch.OBS])

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

    def learn_on_batch(
        self,
        batch: SampleBatch,
        num_epochs: int = 1,
        minibatch_size: int | None = None,
        shuffle: bool = True,
        grad_reducer: Any = None,
    ) -> dict[str, float]:
        """Minibatch SGD on ``batch`` by this policy's learner (see :meth:`Learner.update`)."""
        if grad_reducer is None:  # learners without the argument (MultiLossLearner) still work
            return self.learner.update(batch, num_epochs, minibatch_size, shuffle)
        return self.learner.update(batch, num_epochs, minibatch_size, shuffle,
                                   grad_reducer=grad_reducer)

    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        """Gradients of the loss on the whole batch (see :meth:`Learner.compute_gradients`)."""
        return self.learner.compute_gradients(batch)

    def apply_gradients(self, grads: Sequence[np.ndarray]) -> None:
        """One optimizer step with the given gradients (from :meth:`compute_gradients`)."""
        self.learner.apply_gradients(grads)

    # -- weights and state -------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Model state as numpy copies (what travels to workers)."""
        with self.lock:
            return {k: v.detach().cpu().numpy().copy()
                    for k, v in self.model.state_dict().items()}

    def set_weights(self, weights: Mapping[str, np.ndarray], version: int | None = None) -> None:
        """Load model weights; ``weights_version`` becomes ``version`` (or is incremented)."""
        state = {
            k: torch.from_numpy(np.require(np.asarray(v), requirements=["C", "W"]))
            for k, v in weights.items()
        }
        with self.lock:
            self.model.load_state_dict(state)
            self.weights_version = (int(version) if version is not None
                                    else self.weights_version + 1)

    def get_state(self) -> dict[str, Any]:
        """Everything to resume training: weights, optimizer, counters and RNG states.

        Made of tensors, ints, floats, strings, tuples, lists and dicts only, so it can be
        written with ``torch.save`` and read back with ``torch.load(..., weights_only=True)``.
        """
        with self.lock:
            return {
                "weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                **self.learner.state_dict(),  # optimizer(s), target weights, KL coefficient
                "weights_version": self.weights_version,
                "num_grad_updates": self.num_grad_updates,
                "generator_state": self.generator.get_state(),
                "np_rng_state": self.np_rng.bit_generator.state,
            }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        weights = {k: torch.as_tensor(v) for k, v in state["weights"].items()}
        with self.lock:
            self.model.load_state_dict(weights)
            self.learner.load_state_dict(state)
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
