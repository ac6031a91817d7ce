"""SAC on Pendulum-v1: wall time and env steps to a mean return of -200 (mean of the last 10
finished episodes), rldataflow against Stable-Baselines3's SAC, measured side by side.

SB3 runs at its RL Baselines3 Zoo setting for Pendulum-v1 (``hyperparams/sac.yml`` of
DLR-RM/rl-baselines3-zoo: ``learning_rate: 1e-3``, ``n_timesteps: 20000``, everything else
SB3's SAC defaults: 256x256 MLPs, batch 256, buffer 1e6, ``learning_starts`` 100 uniform-random
steps, tau 0.005, gamma 0.99, one gradient step per env step, ``ent_coef="auto"``).
rldataflow runs twice: ``same`` -- the same hyperparameters as SB3 (256x256, lr 1e-3 for all
three optimizers, batch 256, 100 uniform start-up steps that are also learning_starts), and
``tuned`` -- the settings of its Pendulum learning test (64x64, lr 1e-3, learning_starts 1000,
no uniform phase). Both are single-process (rldataflow's inline runtime, ``num_workers=0``),
torch with 1 thread, the same seeds; each run stops at -200 or at the step budget.

Usage (SB3 is not a dependency of rldataflow; ``pip install stable-baselines3`` first)::

    nice -n 10 python benchmarks/sac_pendulum.py --seeds 0 1 --budget 20000
    python benchmarks/sac_pendulum.py --profile      # cProfile of one rldataflow run
    python benchmarks/sac_pendulum.py --updates 100  # the learner alone: ms per SAC update
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import statistics
import time

import numpy as np
import torch

import rldataflow

THRESHOLD = -200.0
SAME = dict(hiddens=(256, 256), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
            train_batch_size=256, learning_starts=100, initial_random_steps=100)
TUNED = dict(hiddens=(64, 64), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
             learning_starts=1000, initial_random_steps=0)


def run_ours(seed: int, budget: int, overrides: dict) -> tuple[float, int, float]:
    """(wall seconds, env steps, last-10 mean) until the threshold or the budget."""
    start = time.perf_counter()
    mean10 = -math.inf
    with rldataflow.build("sac", env="Pendulum-v1", runtime="inline", seed=seed,
                          min_steps_per_iteration=200, min_time_s_per_iteration=0.0,
                          **overrides) as algo:
        while True:
            r = algo.train()
            last10 = algo.metrics.window("episode_return")[-10:]
            mean10 = float(np.mean(last10)) if len(last10) == 10 else -math.inf
            if mean10 >= THRESHOLD or r["env_steps_sampled"] >= budget:
                break
    return time.perf_counter() - start, int(r["env_steps_sampled"]), mean10


def run_sb3(seed: int, budget: int) -> tuple[float, int, float]:
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAtThreshold(BaseCallback):
        mean10 = -math.inf

        def _on_step(self) -> bool:
            episodes = list(self.model.ep_info_buffer)[-10:]
            if len(episodes) == 10:
                self.mean10 = float(np.mean([e["r"] for e in episodes]))
            return self.mean10 < THRESHOLD

    start = time.perf_counter()
    model = SAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=seed, device="cpu")
    callback = StopAtThreshold()
    model.learn(total_timesteps=budget, callback=callback)
    return time.perf_counter() - start, int(model.num_timesteps), callback.mean10


def time_updates(n: int, rounds: int = 3) -> None:
    """ms per gradient update of both learners at the SAME settings (256x256, batch 256),
    interleaved so both see the same machine load: rldataflow's ``learn_on_batch`` on one
    fixed batch, SB3's ``SAC.train(gradient_steps=n)`` (its replay sampling included)."""
    import gymnasium
    from stable_baselines3 import SAC

    from rldataflow.algorithms.sac import SACPolicy
    from rldataflow.data import SampleBatch as SB

    env = gymnasium.make("Pendulum-v1")
    policy = SACPolicy(env.observation_space, env.action_space,
                       {"hiddens": (256, 256), "actor_lr": 1e-3, "critic_lr": 1e-3,
                        "alpha_lr": 1e-3}, seed=0)
    rng = np.random.default_rng(0)
    b = 256
    batch = SB({SB.OBS: rng.standard_normal((b, 3)).astype(np.float32),
                SB.ACTIONS: rng.uniform(-2, 2, (b, 1)).astype(np.float32),
                SB.REWARDS: rng.standard_normal(b).astype(np.float32),
                SB.NEXT_OBS: rng.standard_normal((b, 3)).astype(np.float32),
                SB.TERMINATEDS: np.zeros(b, bool), SB.DISCOUNTS: np.full(b, 0.99, np.float32)})
    model = SAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=0, device="cpu",
                learning_starts=0)
    model.learn(300)  # something in its replay buffer
    for r in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            policy.learn_on_batch(batch)
        ours = (time.perf_counter() - start) / n
        start = time.perf_counter()
        model.train(gradient_steps=n, batch_size=b)
        sb3 = (time.perf_counter() - start) / n
        print(f"round {r}: rldataflow {ours * 1e3:.1f} ms/update, SB3 {sb3 * 1e3:.1f} ms/update, "
              f"ratio {ours / sb3:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--budget", type=int, default=20_000, help="env steps per run (zoo)")
    parser.add_argument("--profile", action="store_true",
                        help="profile one rldataflow run (same settings) instead")
    parser.add_argument("--updates", type=int, default=0,
                        help="only time N learner updates of each (3 interleaved rounds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.updates or not args.profile:
        try:
            import stable_baselines3  # noqa: F401
        except ImportError:
            print('stable-baselines3 is not installed: pip install stable-baselines3 '
                  '(only this benchmark needs it)')
            return
    if args.updates:
        time_updates(args.updates)
        return
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        wall, steps, mean10 = run_ours(args.seeds[0], args.budget, SAME)
        profiler.disable()
        print(f"rldataflow same: {wall:.1f} s, {steps} steps, last-10 mean {mean10:.1f}")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    results: dict[str, list[tuple[float, int, float]]] = {"sb3": [], "same": [], "tuned": []}
    for seed in args.seeds:
        for name in results:
            out = (run_sb3(seed, args.budget) if name == "sb3"
                   else run_ours(seed, args.budget, SAME if name == "same" else TUNED))
            results[name].append(out)
            print(f"seed {seed} {name:5s}: {out[0]:6.1f} s wall, {out[1]:6d} env steps, "
                  f"last-10 mean {out[2]:7.1f}{'' if out[2] >= THRESHOLD else ' (not reached)'}",
                  flush=True)
    sb3_wall = statistics.mean(w for w, _, _ in results["sb3"])
    sb3_steps = statistics.mean(s for _, s, _ in results["sb3"])
    for name in ("same", "tuned"):
        wall = statistics.mean(w for w, _, _ in results[name])
        steps = statistics.mean(s for _, s, _ in results[name])
        reached = sum(m >= THRESHOLD for _, _, m in results[name])
        print(f"rldataflow {name}/SB3: wall {wall:.1f}/{sb3_wall:.1f} s = {wall / sb3_wall:.2f}, "
              f"env steps {steps:.0f}/{sb3_steps:.0f} = {steps / sb3_steps:.2f} "
              f"(reached {reached}/{len(args.seeds)}, SB3 reached "
              f"{sum(m >= THRESHOLD for _, _, m in results['sb3'])}/{len(args.seeds)})")


if __name__ == "__main__":
    main()
