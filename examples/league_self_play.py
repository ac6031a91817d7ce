"""Self-play against a league of frozen past copies, composed from PPO's training sub-flow.

Rock-paper-scissors from PettingZoo (``classic/rps-v2``, parallel API, 20 throws an episode).
``player_0`` is always the learning policy ``main``; ``player_1`` is, for each episode, one of
the frozen league slots ``past_0 .. past_{k-1}``, chosen at random. The plan is PPO's own
training sub-flow for ``main`` plus one step of league bookkeeping: every ``snapshot_every``
training steps the current ``main`` is copied into the next league slot (oldest first), so
``main`` keeps meeting its own past selves and cannot win by beating only the latest one::

    rollouts -> SelectExperiences([main]) -> ppo.training_flow(main) -> SnapshotToLeague -> report

The frozen slots are never trained (no branch of the plan trains them). Run it::

    python examples/league_self_play.py --iterations 30
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import rldataflow
from rldataflow.algorithms import ppo
from rldataflow.algorithms.composite import branch_configs
from rldataflow.flow import LocalIterator, Operator
from rldataflow.ops import ParallelRollouts, SelectExperiences, StandardMetricsReporting
from rldataflow.workers import WorkerSet

LEARNER = "main"
LEAGUE = ["past_0", "past_1", "past_2"]


class SnapshotToLeague(Operator):
    """Every ``every`` items, copy policy ``learner``'s weights into the next of ``slots``
    (round-robin, so the oldest snapshot is replaced) and send them to the workers.
    Counts ``league_snapshots``. Passes items through. Example::

        train_op.for_each(SnapshotToLeague(workers, "main", ["past_0", "past_1"], every=5))
    """

    def __init__(self, workers: WorkerSet, learner: str, slots: list[str], every: int) -> None:
        if every < 1 or not slots:
            raise ValueError("SnapshotToLeague needs every >= 1 and at least one slot")
        self.workers = workers
        self.learner = learner
        self.slots = list(slots)
        self.every = every
        self.steps = 0

    @property
    def op_name(self) -> str:
        return f"SnapshotToLeague({self.learner} -> {self.slots}, every={self.every})"

    def __call__(self, item: Any) -> Any:
        self.steps += 1
        if self.steps % self.every == 0:
            snapshots = self.metrics.counters["league_snapshots"]
            slot = self.slots[int(snapshots) % len(self.slots)]
            local = self.workers.local_worker()
            local.get_policy(slot).set_weights(local.get_policy(self.learner).get_weights())
            self.metrics.counters["league_snapshots"] += 1
            self.metrics.info["league_last_slot"] = slot
            self.workers.sync_weights()
        return item


def league_plan(workers: WorkerSet, config: Any) -> LocalIterator[dict[str, Any]]:
    main_config = branch_configs(config)[LEARNER][1]
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    train_op = ppo.training_flow(rollouts.for_each(SelectExperiences([LEARNER])), workers,
                                 main_config, policy_id=LEARNER)
    league_op = train_op.for_each(SnapshotToLeague(workers, LEARNER, LEAGUE,
                                                   every=SNAPSHOT_EVERY))
    return StandardMetricsReporting(league_op, workers, min_steps=config.min_steps_per_iteration)


SNAPSHOT_EVERY = 3


def make_mapping(seed: int):
    """``player_0`` -> main; ``player_1`` -> a league slot drawn per episode (seeded)."""
    rng = random.Random(seed)

    def mapping(agent_id: str) -> str:
        return LEARNER if agent_id == "player_0" else rng.choice(LEAGUE)

    return mapping


def build(seed: int = 0, **overrides: Any) -> rldataflow.Algorithm:
    policy = {"algorithm": "ppo", "train_batch_size": 640, "minibatch_size": 160,
              "num_epochs": 4, "entropy_coeff": 0.01}
    settings: dict[str, Any] = dict(
        env="classic/rps-v2", env_config={"max_cycles": 20}, num_envs_per_worker=4,
        rollout_fragment_length=40, min_steps_per_iteration=320, seed=seed,
        policies={pid: dict(policy) for pid in [LEARNER, *LEAGUE]},
        policy_mapping_fn=make_mapping(seed))
    settings.update(overrides)
    return rldataflow.build("composite", plan=league_plan, **settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="process", choices=["inline", "process", "ray"])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with build(seed=args.seed, runtime=args.runtime, num_workers=args.num_workers) as algo:
        print(algo.plan.describe())
        for _ in range(args.iterations):
            result = algo.train()
            main_return = result["policy_return_mean"].get(LEARNER, 0.0)
            print(f"{result['env_steps_sampled']:>7} env steps  main {main_return:+6.2f}"
                  f"  league snapshots {int(algo.metrics.counters['league_snapshots'])}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
