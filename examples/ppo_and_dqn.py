"""Two algorithms in one dataflow: a PPO policy and a DQN policy share one rollout stream.

Two-agent CartPole (each agent balances its own pole); agent 0 is driven by ``ppo_policy``,
agent 1 by ``dqn_policy``. The plan below is the whole composition: one rollout stream is
duplicated, each copy keeps one policy's experiences and goes into that algorithm's *existing*
training sub-flow (``ppo.training_flow``, ``dqn.training_flow``), and the two run concurrently.
No PPO or DQN logic is copied here.

Run it::

    python examples/ppo_and_dqn.py                 # until both policies average >= 300
    python examples/ppo_and_dqn.py --plan-only     # print the plan and exit

The same run from a config file, without this script (the built-in ``composite`` algorithm
builds this plan for any policies/algorithms listed)::

    rldataflow train --config examples/ppo_and_dqn.yaml --stop-steps 400000
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import rldataflow
from rldataflow.algorithms import dqn, ppo
from rldataflow.algorithms.composite import MAX_LEAD_ROUNDS, branch_configs
from rldataflow.flow import Concurrently, LocalIterator
from rldataflow.ops import ParallelRollouts, SelectExperiences, StandardMetricsReporting
from rldataflow.workers import WorkerSet

#: PPO at CartPole-sized settings (its library defaults are LunarLander/MuJoCo-sized: a 4096-row
#: batch per step slows the PPO branch so much that the async DQN branch, which shares its
#: rollouts, fell behind: DQN 164 at 400k steps in one CI run)
CARTPOLE_PPO = {"lr": 1e-3, "gamma": 0.98, "lambda_": 0.8, "train_batch_size": 1024,
                "minibatch_size": 256, "num_epochs": 6, "entropy_coeff": 0.0}

POLICIES = {
    "ppo_policy": {"algorithm": "ppo", **CARTPOLE_PPO},
    "dqn_policy": {"algorithm": "dqn"},
}


def ppo_and_dqn_plan(workers: WorkerSet, config: Any) -> LocalIterator[dict[str, Any]]:
    """rollouts -> duplicate -> [PPO sub-flow | DQN sub-flow] -> Concurrently -> report."""
    configs = {pid: sub for pid, (_, sub) in branch_configs(config).items()}
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    # neither branch runs more than MAX_LEAD_ROUNDS rollout rounds ahead of the other
    ppo_stream, dqn_stream = rollouts.duplicate(2, max_buffered=MAX_LEAD_ROUNDS)
    ppo_op = ppo.training_flow(ppo_stream.for_each(SelectExperiences(["ppo_policy"])),
                               workers, configs["ppo_policy"], policy_id="ppo_policy")
    dqn_op = dqn.training_flow(dqn_stream.for_each(SelectExperiences(["dqn_policy"])),
                               workers, configs["dqn_policy"], policy_id="dqn_policy")
    train_op = Concurrently([ppo_op, dqn_op], mode="async")
    return StandardMetricsReporting(train_op, workers, min_steps=config.min_steps_per_iteration)


def build(**overrides: Any) -> rldataflow.Algorithm:
    """The example's Algorithm: the composite config (shared rollouts, one entry per policy)
    with :func:`ppo_and_dqn_plan` as its plan."""
    settings = dict(env="rldataflow/MultiAgentCartPole-v0", env_config={"num_agents": 2},
                    policies=POLICIES, policy_mapping_fn="by_agent")
    settings.update(overrides)
    return rldataflow.build("composite", plan=ppo_and_dqn_plan, **settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="process", choices=["inline", "process", "ray"])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=300.0,
                        help="stop when both policies' mean returns reach this")
    parser.add_argument("--max-steps", type=int, default=400_000)
    parser.add_argument("--plan-only", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    with build(runtime=args.runtime, num_workers=args.num_workers, seed=args.seed) as algo:
        print(algo.plan.describe())
        if args.plan_only:
            return 0
        start = time.perf_counter()
        while True:
            result = algo.train()
            returns = result["policy_return_mean"]
            print(f"{result['env_steps_sampled']:>8} env steps  "
                  + "  ".join(f"{pid} {value:6.1f}" for pid, value in returns.items())
                  + f"  {time.perf_counter() - start:6.1f} s", flush=True)
            if min(returns.values()) >= args.target:
                print("both policies reached the target")
                return 0
            if result["env_steps_sampled"] >= args.max_steps:
                print("step budget used up before both policies reached the target")
                return 1


if __name__ == "__main__":
    raise SystemExit(main())
