"""Ape-X DDPG: the Ape-X architecture (Horgan et al. 2018, "Distributed Prioritized Experience
Replay", ICLR, arXiv:1803.00933) with the DDPG learner of :mod:`rldataflow.algorithms.ddpg`
(the paper's "Ape-X DPG", section 4.2).

The plan is Ape-X DQN's (:func:`rldataflow.algorithms.apex.apex_plan`, ``rldataflow plan
apex_ddpg``): rollout workers sample asynchronously into sharded prioritized replay actors, a
learner thread trains on prioritized batches and the new priorities (``|Q - y|``) go back to
the shard each batch came from, and a worker receives the actor's weights every
``max_weight_sync_delay`` env steps::

    [0] async rollouts -> ThrottleSampling -> StoreToReplayBuffer(shards) -> SyncWeightsToSource
    [1] Replay(shards, num_async) -> zip_with_source_actor -> Enqueue(learner.inqueue)
    [2] Dequeue(learner.outqueue) -> RecordLearnerStep -> UpdatePriorities

DDPG's targets follow by Polyak averaging inside the learner (``tau``), so there is no periodic
target copy in flow [2].

Per-actor exploration: Ape-X DQN gives actor ``i`` of ``N`` a fixed ``eps_i = eps ** (1 + alpha
* i / (N - 1))`` (section 4.1). The continuous analogue used here gives actor ``i`` a fixed
Gaussian (or Ornstein-Uhlenbeck) noise scale of the same form::

    sigma_i = sigma ** (1 + alpha * i / (N - 1))     (sigma = 0.4, alpha = 3: 0.4 ... 0.026)

in ``[-1, 1]`` action units, so some actors explore widely and some act almost greedily. This
is our choice, not the paper's setting (its DPG actors' noise is not given per actor in that
form); ``exploration_per`` says whether an actor is an env copy or a worker, as in Ape-X DQN.

Defaults (tuned for Pendulum-v1 on a 2-core machine, not the paper's): 2 workers x 1 env,
2 replay shards, 64x64 networks, batch 256, lr 1e-3, ``training_intensity`` 64 (one gradient
step per 4 env steps), prioritized replay with alpha 0.6, beta 0.4 (Ape-X's). Checkpoints hold
the actor, the critic, both targets and both optimizers; the replay shards restart empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from rldataflow.algorithms import ddpg
from rldataflow.algorithms.apex import ApexFields, ApexPlan, apex_plan, worker_epsilon
from rldataflow.algorithms.base import AlgorithmBuilder, dataset_output
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.flow import Plan
from rldataflow.ops.replay import ROWS_ADDED
from rldataflow.utils.config import ConfigError, describe_field
from rldataflow.workers import RolloutWorker, WorkerSet

_h = describe_field


@dataclass
class Config(ApexFields, ddpg.Config):
    """Ape-X DDPG settings; the defaults reach a Pendulum-v1 mean return (last 10 episodes) of
    -300 within 150k env steps with 2 workers and 2 replay shards."""

    hiddens: tuple[int, ...] = field(
        default=(64, 64), metadata=_h("hidden sizes of the actor and of the critic"))
    actor_lr: float = field(default=1e-3, metadata=_h("Adam learning rate of the actor"))
    critic_lr: float = field(default=1e-3, metadata=_h("Adam learning rate of the critic"))
    initial_random_steps: int | None = field(
        default=0, metadata=_h("each rollout worker acts uniformly at random for its first "
                               "this many env steps (0: the per-actor noise from the start)"))
    num_workers: int = field(default=2, metadata=_h("rollout workers (the paper's actors)"))
    num_envs_per_worker: int = field(default=1, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(
        default=50, metadata=_h("steps per env per sample (one batch to a replay shard)"))
    buffer_size: int = field(
        default=100_000, metadata=_h("replay capacity in rows, split evenly over the shards"))
    learning_starts: int = field(
        default=2_000, metadata=_h("rows stored (over all shards) before replay starts", ge=0))
    prioritized_replay: bool = field(
        default=True, metadata=_h("proportional prioritized replay (Ape-X: yes); else uniform"))
    training_intensity: float | None = field(
        default=64.0, metadata=_h("rows trained per row sampled: sampling pauses while the "
                                  "learner is behind (None: actors run free, as in the paper)"))
    exploration_scale: float = field(
        default=0.4, metadata=_h("sigma of sigma_i = sigma ** (1 + alpha * i / (N - 1)), the "
                                 "noise std (gaussian) or OU sigma of actor i, [-1, 1] units"))
    exploration_alpha: float = field(default=3.0, metadata=_h("alpha of that formula", ge=0))
    exploration_per: Literal["env", "worker"] = field(
        default="env", metadata=_h("who is an actor i of that formula: each env copy, or each "
                                   "worker (all its envs share sigma_i)"))
    min_steps_per_iteration: int = field(
        default=2000, metadata=_h("report a result only after at least this many env steps"))

    algorithm_name = "apex_ddpg"

    def validate(self) -> None:
        super().validate()
        if not 0 < self.exploration_scale < 1:
            # sigma ** (1 + ...) only shrinks with i for 0 < sigma < 1
            raise ConfigError(f"config key 'exploration_scale' must be in (0, 1) for Ape-X "
                              f"DDPG (got {self.exploration_scale!r})")


def worker_noise_scales(worker: int, num_workers: int, num_envs: int, sigma: float,
                        alpha: float, per: str = "env") -> float | np.ndarray:
    """The fixed noise scale(s) of 0-based remote worker ``worker``: one per env copy
    (``per="env"``, ``N = num_workers * num_envs`` actors) or one for the worker.

    Example::

        >>> worker_noise_scales(1, 2, 1, 0.4, 3.0)
        array([0.0256])
    """
    if per == "env":
        n = num_workers * num_envs
        return np.asarray([worker_epsilon(worker * num_envs + j, n, sigma, alpha)
                           for j in range(num_envs)])
    return worker_epsilon(worker, num_workers, sigma, alpha)


class ApexDDPGWorker(RolloutWorker):
    """A rollout worker whose DDPG policy explores with fixed Ape-X noise scales set from its
    index (:func:`worker_noise_scales`): a restarted worker explores as its predecessor."""

    def __init__(self, *, num_workers: int, exploration_scale: float, exploration_alpha: float,
                 exploration_per: str = "env", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.worker_index > 0:
            self.policy.noise_scale = worker_noise_scales(
                self.worker_index - 1, num_workers, self.num_envs, exploration_scale,
                exploration_alpha, exploration_per)

    def noise_scale(self) -> float | list[float]:
        scale = self.policy.noise_scale
        return scale.tolist() if isinstance(scale, np.ndarray) else float(scale)


def plan(workers: WorkerSet, config: Config) -> ApexPlan:
    """Ape-X's dataflow with no step after the priority update (see the module docstring)."""
    return apex_plan(workers, config)


@register_algorithm("apex_ddpg")
class ApexDDPG(AlgorithmBuilder):
    """Distributed prioritized experience replay with a DDPG learner (Ape-X DDPG)."""

    Config = Config
    worker_options = {"include_next_obs": True}

    def make_workers(self, config: Config, runtime: Any) -> WorkerSet:
        cfg = ddpg.policy_config(config)

        def factory(obs_space: spaces.Box, action_space: spaces.Box) -> ddpg.DDPGPolicy:
            return ddpg.DDPGPolicy(obs_space, action_space, cfg)

        kwargs = dict(env=config.env, env_config=config.env_config,
                      num_envs=config.num_envs_per_worker, policy_factory=factory,
                      rollout_fragment_length=config.rollout_fragment_length, seed=config.seed,
                      num_workers=config.num_workers, exploration_scale=config.exploration_scale,
                      exploration_alpha=config.exploration_alpha,
                      exploration_per=config.exploration_per, **self.worker_options)
        return WorkerSet(runtime, config.num_workers, kwargs,
                         restart_failed=config.restart_failed_workers,
                         worker_cls=ApexDDPGWorker, output=dataset_output(config))

    def make_plan(self, workers: WorkerSet, config: Config) -> ApexPlan:
        return plan(workers, config)

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: Config,
                            state: Mapping[str, Any]) -> None:
        """The replay shards restart empty, so the count that gates replay restarts at 0."""
        plan.metrics.counters[ROWS_ADDED] = 0
