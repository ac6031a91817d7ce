"""R2D2: recurrent Q-learning from replayed sequences with stored state and burn-in.

Kapturowski et al. 2019, "Recurrent Experience Replay in Distributed Reinforcement Learning"
(ICLR): an LSTM Q network (dueling head), trained by n-step double Q-learning on *sequences*
replayed with priorities:

* **stored state**: each sequence starts from the LSTM state the actor had at its first step
  (stored with it), not from zeros;
* **burn-in**: the first ``burn_in`` steps of a sequence only run the network to refresh that
  (stale) state, without a loss; consecutive sequences of an episode overlap by the burn-in, so
  every step is trained once (:class:`~rldataflow.data.SequenceBuilder`);
* **value rescaling** (Pohlen et al. 2018, "Observe and Look Further", arXiv:1805.11593)::

      h(x)  = sign(x) (sqrt(|x| + 1) - 1) + eps x
      y_t   = h( sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - done) h^-1( Q'(s_{t+m}, a*) ) )
      a*    = argmax_a Q(s_{t+m}, a)                                   (double Q)

  with ``m = min(n, steps left in the sequence)``;
* **sequence priorities**: ``p = eta max_t |delta_t| + (1 - eta) mean_t |delta_t|``, eta = 0.9.

The replay buffer's rows are whole sequences: ``buffer_size``, ``learning_starts`` and
``train_batch_size`` count sequences, and so do ``env_steps_trained`` and the replay
counters; ``training_intensity`` is trained steps per sampled step (one sequence holds about
``max_seq_len`` new steps).

Dataflow (``rldataflow plan r2d2``)::

    Concurrently(round_robin, output [1]):
      [0] rollouts (LSTM state per env) -> SequenceBuilder -> StoreToReplayBuffer
          -> BroadcastWeights
      [1] Replay(learning_starts) -> TrainOneStep -> UpdatePriorities -> UpdateTargetNetwork
    -> report

The defaults are sized for small memory tasks (``StatelessCartPole-v1``: 64-unit encoder, 64
LSTM cells, sequences of 20 steps after a 10-step burn-in); the paper's Atari settings are
sequences of 80 with burn-in 40, n = 5, gamma 0.997, Adam 1e-4, 512 LSTM cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from rldataflow.algorithms import dqn
from rldataflow.algorithms.base import dataset_output
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import ReplayBuffer, SequenceBuilder
from rldataflow.data import SampleBatch as SB
from rldataflow.data.sequence_builder import NUM_BURN_IN, NUM_STEPS
from rldataflow.flow import Concurrently, LocalIterator, Plan
from rldataflow.ops import (
    BroadcastWeights,
    ParallelRollouts,
    StandardMetricsReporting,
    StoreToReplayBuffer,
)
from rldataflow.ops.replay import TD_ERROR, make_replay_buffer
from rldataflow.policies.recurrent import (
    STATE_IN_C,
    STATE_IN_H,
    STATE_OUT_C,
    STATE_OUT_H,
    RecurrentQModel,
)
from rldataflow.utils.config import ConfigError, describe_field
from rldataflow.workers import WorkerSet

_h = describe_field

#: what a rollout row keeps for the SequenceBuilder (the rest is not shipped)
ROW_COLUMNS = (SB.OBS, SB.NEXT_OBS, SB.ACTIONS, SB.REWARDS, SB.TERMINATEDS, SB.TRUNCATEDS,
               SB.EPS_ID, SB.T, STATE_IN_H, STATE_IN_C)


@dataclass
class Config(dqn.Config):
    """R2D2 settings (the DQN fields, with replay counted in sequences); see the module docs."""

    hiddens: tuple[int, ...] = field(default=(64,), metadata=_h("encoder layer sizes"))
    lr: float = field(default=1e-3, metadata=_h("Adam learning rate"))
    lstm_cell_size: int = field(default=64, metadata=_h("LSTM cell size", ge=1))
    max_seq_len: int = field(
        default=20, metadata=_h("trained steps per replayed sequence", ge=1))
    burn_in: int = field(
        default=10, metadata=_h("steps before each sequence that only refresh its stored LSTM "
                                "state (no loss)", ge=0))
    n_step: int = field(default=5, metadata=_h("steps summed before bootstrapping (R2D2: 5)"))
    value_rescaling: bool = field(
        default=True, metadata=_h("learn h(Q) with h(x) = sign(x)(sqrt(|x|+1)-1) + 1e-3 x "
                                  "(Pohlen 2018), as R2D2 does"))
    priority_eta: float = field(
        default=0.9, metadata=_h("sequence priority: eta max|td| + (1 - eta) mean|td|",
                                 ge=0, le=1))
    train_batch_size: int = field(default=32, metadata=_h("replayed sequences per SGD step"))
    buffer_size: int = field(default=5_000, metadata=_h("replay capacity in sequences"))
    learning_starts: int = field(
        default=50, metadata=_h("sequences in replay before the first SGD step", ge=0))
    training_intensity: float | None = field(
        default=40.0, metadata=_h("trained steps per sampled step (None: one train batch per "
                                 "sample round)"))
    rollout_fragment_length: int = field(default=10, metadata=_h("steps per env per sample"))
    target_network_update_freq: int = field(
        default=2_500, metadata=_h("copy the online net to the target net every this many env "
                                   "steps sampled"))
    replay_frame_dedup: Literal["auto", "on", "off"] = field(
        default="off", metadata=_h("R2D2 stores whole sequences: frames are not deduplicated"))

    def validate(self) -> None:
        super().validate()
        if self.replay_frame_dedup != "off":
            raise ConfigError("config key 'replay_frame_dedup' must be 'off' for r2d2 (its "
                              "replay rows are sequences)")


# -- the loss -----------------------------------------------------------------------------------
RESCALE_EPS = 1e-3


def rescale(x: torch.Tensor) -> torch.Tensor:
    """``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x`` (Pohlen et al. 2018)."""
    return torch.sign(x) * (torch.sqrt(x.abs() + 1.0) - 1.0) + RESCALE_EPS * x


def unrescale(x: torch.Tensor) -> torch.Tensor:
    """``h^-1``, the inverse of :func:`rescale`."""
    root = (torch.sqrt(1.0 + 4.0 * RESCALE_EPS * (x.abs() + 1.0 + RESCALE_EPS)) - 1.0) \
        / (2.0 * RESCALE_EPS)
    return torch.sign(x) * (root * root - 1.0)


def _burn_in(net: RecurrentQModel, obs: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
             burn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The LSTM state after each sequence's ``burn[s]`` burn-in slots (no gradient)."""
    longest = int(burn.max()) if len(burn) else 0
    if longest == 0:
        return h0, c0
    with torch.no_grad():
        s = obs.shape[0]
        x = net.encoder(obs[:, :longest].reshape(s * longest, *obs.shape[2:])).reshape(
            s, longest, -1)
        out_h, out_c = h0.clone(), c0.clone()
        has = burn > 0
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x[has], burn[has].cpu(), batch_first=True, enforce_sorted=False)
        _, (hn, cn) = net.lstm(packed, (h0[has].unsqueeze(0).contiguous(),
                                        c0[has].unsqueeze(0).contiguous()))
        out_h[has], out_c[has] = hn[0], cn[0]
    return out_h, out_c


def r2d2_loss(policy: R2D2Policy, batch: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, dict[str, Any]]:
    """n-step double-Q loss over replayed sequences after burn-in (see the module docs).

    The per-sequence priority (``eta max + (1 - eta) mean`` of the absolute TD errors of its
    trained steps) is the ``td_error`` stat, one per sequence.
    """
    cfg = policy.config
    gamma, n_step = float(cfg["gamma"]), int(cfg["n_step"])
    obs = batch[SB.OBS]                                  # (S, L + 1, ...)
    burn, valid = batch[NUM_BURN_IN].long(), batch[NUM_STEPS].long()
    steps = valid - burn                                 # trained steps per sequence
    s, horizon = obs.shape[0], int(steps.max())
    rows = torch.arange(s).unsqueeze(1)
    slots = burn.unsqueeze(1) + torch.arange(horizon + 1).unsqueeze(0)   # (S, T + 1)
    slots = slots.clamp(max=obs.shape[1] - 1)
    train_obs = obs[rows, slots]                         # obs of the trained steps + next
    step_slots = slots[:, :horizon].clamp(max=obs.shape[1] - 2)
    actions = batch[SB.ACTIONS][rows, step_slots].long()
    rewards = batch[SB.REWARDS][rows, step_slots].float()
    terms = batch[SB.TERMINATEDS][rows, step_slots].float()
    t_index = torch.arange(horizon).unsqueeze(0)
    mask = (t_index < steps.unsqueeze(1)).float()        # (S, T)
    rewards = rewards * mask

    model, target_model = policy.model, policy.target_model
    h0, c0 = batch[STATE_IN_H], batch[STATE_IN_C]
    q_all, _ = model.forward_seq(train_obs, *_burn_in(model, obs, h0, c0, burn))
    q_taken = q_all[:, :horizon].gather(2, actions.unsqueeze(2)).squeeze(2)
    with torch.no_grad():
        q_target_all, _ = target_model.forward_seq(
            train_obs, *_burn_in(target_model, obs, h0, c0, burn))
        chooser = q_all.detach() if cfg["double_q"] else q_target_all
        best = chooser[:, 1:].argmax(dim=2, keepdim=True)
        q_next = q_target_all[:, 1:].gather(2, best).squeeze(2)  # Q'(s_{t+1}, a*), (S, T)
        # m = min(n, steps left): sum m rewards, bootstrap from the state m steps on
        m = torch.minimum(torch.full_like(t_index, n_step), steps.unsqueeze(1) - t_index)
        m = m.clamp(min=1)
        padded = F.pad(rewards, (0, n_step))
        returns = torch.zeros_like(rewards)
        for k in range(n_step):
            returns = returns + (gamma ** k) * padded[:, k: k + horizon] * (k < m).float()
        boot_index = (t_index + m - 1).clamp(max=horizon - 1).expand(s, -1)
        q_boot = q_next.gather(1, boot_index)
        done = terms.gather(1, boot_index)
        if cfg["value_rescaling"]:
            q_boot = unrescale(q_boot)
        target = returns + (gamma ** m.float()) * (1.0 - done) * q_boot
        if cfg["value_rescaling"]:
            target = rescale(target)
    td = (q_taken - target) * mask
    per_step = F.huber_loss(q_taken, target, reduction="none", delta=float(cfg["huber_delta"]))
    count = mask.sum(1).clamp(min=1.0)
    per_sequence = (per_step * mask).sum(1) / count
    weights = batch.get("weights")
    loss = (per_sequence * weights).mean() if weights is not None else per_sequence.mean()
    abs_td = td.detach().abs()
    eta = float(cfg["priority_eta"])
    priority = eta * abs_td.max(1).values + (1.0 - eta) * abs_td.sum(1) / count
    valid_q = (q_taken * mask).sum() / mask.sum()
    return loss, {"loss": loss, "mean_q": valid_q,
                  "mean_abs_td_error": (abs_td.sum() / mask.sum()), TD_ERROR: priority}


def keep_row_columns(policy: R2D2Policy, batch: SB) -> SB:
    """Rows as sampled (the SequenceBuilder on the driver cuts them), with only the columns it
    reads."""
    return SB({k: batch[k] for k in ROW_COLUMNS}, stats=batch.stats, info=batch.info)


def recurrent_q_model_factory(obs_space: spaces.Box, action_space: spaces.Discrete,
                              num_outputs: int, config: Mapping[str, Any]) -> RecurrentQModel:
    return RecurrentQModel(obs_space.shape, obs_space.dtype, num_outputs,
                           hiddens=tuple(config["hiddens"]), activation=config["activation"],
                           cell_size=int(config["lstm_cell_size"]),
                           dueling=bool(config["dueling"]))


class R2D2Policy(dqn.DQNPolicy):
    """A recurrent Q network: epsilon-greedy acting with an LSTM state per env, learning from
    replayed sequences (one per batch row) with :func:`r2d2_loss`.

    Example::

        policy = R2D2Policy(obs_space, gymnasium.spaces.Discrete(2), {"lstm_cell_size": 32})
        h, c = policy.initial_state(num_envs)
        actions, extras = policy.compute_actions(obs, state=(h, c))
        h, c = extras["state_out_h"], extras["state_out_c"]
    """

    LOSS_FN = staticmethod(r2d2_loss)
    POSTPROCESS_FN = staticmethod(keep_row_columns)
    MODEL_FACTORY = staticmethod(recurrent_q_model_factory)
    DEFAULTS: dict[str, Any] = {**dqn.DQNPolicy.DEFAULTS, "hiddens": (64,), "n_step": 5,
                                "lstm_cell_size": 64, "value_rescaling": True,
                                "priority_eta": 0.9}
    #: learning batches hold one whole sequence per row: the learner does not cut them
    rows_are_sequences = True

    def compute_actions(self, obs: np.ndarray, explore: bool = True,
                        state: tuple[np.ndarray, np.ndarray] | None = None
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Greedy actions of the LSTM Q network from ``state`` (``None``: zeros), epsilon-greedy
        when exploring; the extras hold the state before and after the step."""
        with torch.no_grad():
            obs_t = self._obs_tensor(obs)
            if state is None:
                state = self.initial_state(obs_t.shape[0])
            q, _, (h, c) = self.model.forward_step(obs_t, torch.from_numpy(state[0]),
                                                   torch.from_numpy(state[1]))
            actions = q.argmax(dim=1).numpy()
        if explore:
            actions = self.explore(actions)
        return actions, {STATE_IN_H: state[0], STATE_IN_C: state[1],
                         STATE_OUT_H: h.numpy(), STATE_OUT_C: c.numpy()}


def policy_factory(config: Config):
    cfg = dqn.policy_config(config, initial_epsilon=config.initial_epsilon,
                            final_epsilon=config.final_epsilon,
                            epsilon_timesteps=config.epsilon_timesteps,
                            epsilon_step_scale=max(1, config.num_workers),
                            lstm_cell_size=config.lstm_cell_size,
                            value_rescaling=config.value_rescaling,
                            priority_eta=config.priority_eta)

    def make(obs_space, action_space) -> R2D2Policy:
        return R2D2Policy(obs_space, action_space, cfg)

    return make


def make_workers(config: Config, runtime: Any) -> WorkerSet:
    return WorkerSet(runtime, config.num_workers,
                     dqn.worker_kwargs(config, policy_factory(config)),
                     restart_failed=config.restart_failed_workers,
                     output=dataset_output(config))


def has_sequences(batch: SB) -> bool:
    """Whether the SequenceBuilder emitted anything for this batch."""
    return batch.count > 0


# -- the plan -----------------------------------------------------------------------------------
def training_flow(rollouts: LocalIterator[SB], workers: WorkerSet, config: Config
                  ) -> LocalIterator[tuple[SB, dict[str, float]]]:
    buffer: ReplayBuffer = make_replay_buffer(config.buffer_size, config.prioritized_replay,
                                              config.prioritized_replay_alpha, config.seed,
                                              "off")
    store = (rollouts
             .for_each(SequenceBuilder(config.max_seq_len, config.burn_in))
             .filter(has_sequences)
             .for_each(StoreToReplayBuffer(local_buffer=buffer))
             .for_each(BroadcastWeights(workers)))
    replay = dqn.replay_flow(workers, config, buffer)  # DQN's, on rows that are sequences
    return Concurrently([store, replay], mode="round_robin", output_indexes=[1],
                        round_robin_weights=dqn.round_robin_weights(config,
                                                                    config.max_seq_len))


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    train_op = training_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


@register_algorithm("r2d2")
class R2D2(dqn.DQN):
    """Recurrent replay distributed DQN (LSTM Q network, stored state, burn-in)."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_workers(self, config: Config, runtime: Any) -> WorkerSet:
        return make_workers(config, runtime)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    @property
    def composable(self) -> bool:
        return False  # its sequences are cut from one single-agent stream

    def training_flow(self, batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                      policy_id: str | None = None) -> LocalIterator[Any]:
        raise NotImplementedError("r2d2 has no training sub-flow to compose (its replay "
                                  "sequences are cut from one single-agent stream)")
