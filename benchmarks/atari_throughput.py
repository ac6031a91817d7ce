"""Atari throughput: env steps/s of rldataflow's PPO and IMPALA on ALE/Pong-v5 against
Stable-Baselines3's PPO on the same preprocessed game, all measured in this run.

Same game preprocessing on both sides (noop 30, frame skip 4 with max-pool, 84x84 grayscale,
episodic life, sign-clipped rewards, 4 stacked frames; SB3's ``make_atari_env`` / ``AtariWrapper``
adds FIRE at reset, which Pong does not need), the same number of envs (8) and the same PPO work:
128 steps per env per iteration (1024-row train batches), 4 epochs of 256-row minibatches, one
Nature CNN shared by policy and value (SB3's ``CnnPolicy``). rldataflow samples on 2 worker
processes x 4 envs (process runtime) while SB3 steps its 8 envs in the training process
(``DummyVecEnv``, what ``make_atari_env`` gives by default). IMPALA runs the same SGD work with its
learner thread overlapping sampling. The figure is env steps/s over a measured window after a
warm-up, training included. SB3 runs before and after ours and the ratios use its mean (a shared
machine's load drifts).

With 4 epochs of Nature-CNN SGD per row, SGD dominates both sides (a 256-row CNN gradient step
costs the same in both libraries), so the training figure mostly compares learners. A second
figure isolates sampling: rldataflow's 2 workers sampling 128-step fragments in parallel vs
SB3's rollout loop (policy forward + ``VecEnv.step``, as in ``collect_rollouts``) on its 8 envs.

Needs ``pip install "rldataflow[atari]" stable-baselines3`` (SB3 is not an rldataflow extra).

Usage: ``python benchmarks/atari_throughput.py [--quick] [--sampling-only]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import rldataflow  # noqa: E402

ENV = "ALE/Pong-v5"
NUM_ENVS = 8
N_STEPS = 128
PPO_WORK = dict(train_batch_size=NUM_ENVS * N_STEPS, minibatch_size=256, num_epochs=4)


def measure_rldataflow(name: str, warmup_s: float, measure_s: float) -> float:
    """Env steps sampled per second by ``name`` (ppo | impala) after a warm-up."""
    config = dict(env=ENV, runtime="process", num_workers=2, num_envs_per_worker=NUM_ENVS // 2,
                  rollout_fragment_length=N_STEPS, vf_share_layers=True, lr=2.5e-4,
                  seed=0, **PPO_WORK)
    if name == "impala":  # fragments of 32 feed the learner thread sooner; same rows per batch
        config["rollout_fragment_length"] = 32
    with rldataflow.build(name, **config) as algo:
        start = time.perf_counter()
        while time.perf_counter() - start < warmup_s:
            algo.train()
        s0 = algo.metrics.counters["env_steps_sampled"]
        begin = time.perf_counter()
        while time.perf_counter() - begin < measure_s:
            algo.train()
        return (algo.metrics.counters["env_steps_sampled"] - s0) / (time.perf_counter() - begin)


def measure_rldataflow_sampling(rounds: int) -> float:
    """Env steps/s of the 2 PPO workers sampling in parallel (no learning)."""
    with rldataflow.build("ppo", env=ENV, runtime="process", num_workers=2,
                          num_envs_per_worker=NUM_ENVS // 2, rollout_fragment_length=N_STEPS,
                          vf_share_layers=True, seed=0, **PPO_WORK) as algo:
        actors = algo.workers.pool.actors
        for f in [a.call("sample") for a in actors]:  # warm-up
            f.result()
        begin = time.perf_counter()
        steps = 0
        for _ in range(rounds):
            steps += sum(f.result().count for f in [a.call("sample") for a in actors])
        return steps / (time.perf_counter() - begin)


def _sb3_env_and_model():
    import ale_py
    import gymnasium
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gymnasium.register_envs(ale_py)
    # frameskip=1: AtariWrapper does the skip of 4 itself (like our AtariPreprocessing)
    venv = VecFrameStack(make_atari_env(ENV, n_envs=NUM_ENVS, seed=0,
                                        env_kwargs={"frameskip": 1}), n_stack=4)
    model = PPO("CnnPolicy", venv, n_steps=N_STEPS, batch_size=PPO_WORK["minibatch_size"],
                n_epochs=PPO_WORK["num_epochs"], learning_rate=2.5e-4, seed=0, verbose=0,
                device="cpu")
    return venv, model


def measure_sb3_sampling(rounds: int) -> float:
    """Env steps/s of SB3's rollout loop: policy forward on the batch of obs, then step."""
    import torch

    venv, model = _sb3_env_and_model()
    obs = venv.reset()

    def one_round(obs):
        for _ in range(N_STEPS):
            with torch.no_grad():
                actions, _, _ = model.policy(model.policy.obs_to_tensor(obs)[0])
            obs, _, _, _ = venv.step(actions.cpu().numpy())
        return obs

    obs = one_round(obs)  # warm-up
    begin = time.perf_counter()
    for _ in range(rounds):
        obs = one_round(obs)
    wall = time.perf_counter() - begin
    venv.close()
    return rounds * N_STEPS * NUM_ENVS / wall


def measure_sb3(warmup_steps: int, measure_steps: int) -> float:
    """Env steps per second of SB3's PPO (``learn`` after a warm-up ``learn``)."""
    venv, model = _sb3_env_and_model()
    model.learn(warmup_steps)
    begin = time.perf_counter()
    model.learn(measure_steps, reset_num_timesteps=False)
    wall = time.perf_counter() - begin
    venv.close()
    return measure_steps / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows (noisier)")
    parser.add_argument("--sampling-only", action="store_true", help="only the sampling figure")
    args = parser.parse_args()
    rounds = 3 if args.quick else 10
    samp_sb3_before = measure_sb3_sampling(rounds)
    samp_ours = measure_rldataflow_sampling(rounds)
    samp_sb3_after = measure_sb3_sampling(rounds)
    samp_sb3 = (samp_sb3_before + samp_sb3_after) / 2
    print(f"sampling only: SB3 rollout loop {samp_sb3_before:.0f} / {samp_sb3_after:.0f} env "
          f"steps/s (before / after), rldataflow 2 workers x 4 envs {samp_ours:.0f}: "
          f"{samp_ours / samp_sb3:.2f}x")
    if args.sampling_only:
        return
    warmup_s, measure_s = (5.0, 20.0) if args.quick else (15.0, 60.0)
    sb3_steps = NUM_ENVS * N_STEPS * (4 if args.quick else 12)
    sb3_warmup = NUM_ENVS * N_STEPS
    print(f"{ENV}, {NUM_ENVS} envs, {N_STEPS} steps/env/iteration, "
          f"{PPO_WORK['num_epochs']} epochs x {PPO_WORK['minibatch_size']}-row minibatches")
    sb3_before = measure_sb3(sb3_warmup, sb3_steps)
    print(f"SB3 PPO (before):      {sb3_before:8.0f} env steps/s")
    ours = {}
    for name in ("ppo", "impala"):
        ours[name] = measure_rldataflow(name, warmup_s, measure_s)
        print(f"rldataflow {name:<6} 2x4:  {ours[name]:8.0f} env steps/s")
    sb3_after = measure_sb3(sb3_warmup, sb3_steps)
    print(f"SB3 PPO (after):       {sb3_after:8.0f} env steps/s")
    sb3 = (sb3_before + sb3_after) / 2
    for name, value in ours.items():
        print(f"{name} / SB3 PPO: {value / sb3:.2f}x (goal >= 1.5x)")


if __name__ == "__main__":
    main()
