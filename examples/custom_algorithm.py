"""A whole algorithm in one file, on the package's roles (walked through in
``docs/adding_an_algorithm.md``): advantage actor-critic with several SGD passes per batch.

Run it::

    python examples/custom_algorithm.py          # trains CartPole-v1 on 2 worker processes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import rldataflow
from rldataflow.algorithms import AlgorithmBuilder, register_algorithm
from rldataflow.flow import Plan
from rldataflow.ops import ConcatBatches, ParallelRollouts, StandardMetricsReporting, TrainOneStep
from rldataflow.policies import TorchPolicy
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.utils.config import AlgorithmConfig, ConfigError


# 1. The config: typed fields with help text; unknown keys and wrong types are rejected.
@dataclass
class Config(AlgorithmConfig):
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    train_batch_size: int = field(default=1024, metadata={"help": "env steps per train batch"})
    num_epochs: int = field(default=4, metadata={"help": "SGD passes over each batch"})
    minibatch_size: int = field(default=256, metadata={"help": "rows per SGD step"})
    entropy_coeff: float = field(default=0.01, metadata={"help": "entropy bonus weight"})

    def validate(self) -> None:
        super().validate()
        if self.minibatch_size > self.train_batch_size:
            raise ConfigError("config key 'minibatch_size' must be <= train_batch_size")


# 2. The loss: the shared actor-critic loss (policy gradient + value regression - entropy).
def loss(policy: TorchPolicy, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    return actor_critic_loss(policy, batch)


# 3. The builder: the policy workers run, and the plan (it starts nothing when built).
@register_algorithm("multi_epoch_ac")
class MultiEpochAC(AlgorithmBuilder):
    """Advantage actor-critic, several epochs of minibatch SGD per batch."""

    Config = Config

    def policy_factory(self, config: Config):
        policy_config = dict(lr=config.lr, gamma=config.gamma,
                             entropy_coeff=config.entropy_coeff, vf_loss_coeff=0.5)
        return lambda obs_space, action_space: TorchPolicy(
            obs_space, action_space, policy_config, loss_fn=loss, seed=config.seed)

    def make_plan(self, workers, config: Config) -> Plan:
        train_op = (ParallelRollouts(workers, mode="bulk_sync")
                    .for_each(ConcatBatches(min_batch_size=config.train_batch_size))
                    .for_each(TrainOneStep(workers, num_epochs=config.num_epochs,
                                           minibatch_size=config.minibatch_size)))
        return Plan(StandardMetricsReporting(train_op, workers))


if __name__ == "__main__":
    with rldataflow.build("multi_epoch_ac", env="CartPole-v1", num_workers=2, seed=0) as algo:
        print(algo.plan.describe())
        for _ in range(100):
            result = algo.train()
            print(f"iteration {algo.iteration}: {result['env_steps_sampled']} env steps, "
                  f"return {result['episode_return_mean']:.1f}")
            if result["episode_return_mean"] >= 450:
                break
