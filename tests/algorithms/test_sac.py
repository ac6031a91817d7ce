"""SAC: the three losses against hand-computed numbers, gradients reaching only their own
networks, acting within asymmetric bounds, the plan (inline, process, prioritized, n-step),
determinism, checkpoints, the command line, a worker restart, a bad action space, learning."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import gymnasium
import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.algorithms.sac import SACPolicy, sac_loss
from rldataflow.data import SampleBatch as SB
from rldataflow.policies.continuous import to_box
from rldataflow.trainer import Algorithm
from rldataflow.utils.config import ConfigError

OBS1 = gymnasium.spaces.Box(-10, 10, (1,), np.float32)
QUICK = dict(learning_starts=64, train_batch_size=32, min_steps_per_iteration=100,
             hiddens=(16, 16))


# -- the losses -----------------------------------------------------------------------------------
def tiny_policy() -> SACPolicy:
    """Actions in [0, 2] (normalized a = x - 1). Critics Q1 = relu(s + a), Q2 = 2 relu(s + a);
    targets Q1' = 0.5 relu(s + a), Q2' = relu(s + a); alpha = 0.5; the actor is replaced by a
    stub sampling a~ = tanh(w s) with log pi = -w s (w = 1, a parameter)."""
    policy = SACPolicy(OBS1, gymnasium.spaces.Box(0.0, 2.0, (1,), np.float32),
                       {"hiddens": (1,), "initial_alpha": 0.5, "gamma": 0.9}, seed=0)
    critic = policy.model.critic
    with torch.no_grad():
        for q, head in ((critic.q1, 1.0), (critic.q2, 2.0)):
            q.mlp.layers[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
            q.mlp.layers[0].bias.zero_()
            q.head.weight.fill_(head)
            q.head.bias.zero_()
        target = policy.learner.targets["critic"].module  # made now: a copy of the critic
        target.q1.head.weight.fill_(0.5)
        target.q2.head.weight.fill_(1.0)
    w = torch.nn.Parameter(torch.tensor(1.0))
    policy.model.actor.sample = lambda obs, generator=None: (torch.tanh(w * obs),
                                                             -(w * obs).sum(-1))
    policy._stub_w = w
    return policy


def tiny_batch() -> SB:
    return SB({SB.OBS: np.array([[1.0], [0.5]], np.float32),
               SB.ACTIONS: np.array([[1.5], [0.0]], np.float32),   # normalized 0.5, -1
               SB.REWARDS: np.array([1.0, 0.0], np.float32),
               SB.NEXT_OBS: np.array([[2.0], [1.0]], np.float32),
               SB.TERMINATEDS: np.array([False, True]),
               SB.DISCOUNTS: np.array([0.9, 0.9], np.float32)})


def relu(x: float) -> float:
    return max(x, 0.0)


def test_losses_match_hand_computed_numbers():
    policy = tiny_policy()
    losses, stats = sac_loss(policy, policy.batch_to_tensors(tiny_batch()))
    alpha, target_entropy = 0.5, -1.0  # -|A|
    # row 0: s=1, a=0.5 -> Q1=1.5, Q2=3; s'=2: a'=tanh 2, log pi' = -2
    #        y = 1 + 0.9 * (min(0.5, 1) * relu(2 + tanh 2) - alpha * -2)
    y0 = 1 + 0.9 * (0.5 * relu(2 + math.tanh(2)) + alpha * 2)
    assert y0 == pytest.approx(3.233813, abs=1e-6)
    # row 1: s=0.5, a=-1 -> Q1=Q2=relu(-0.5)=0; terminated: y = r = 0
    critic = (0.5 * ((1.5 - y0) ** 2 + (3 - y0) ** 2) + 0.0) / 2
    assert losses["critic"].item() == pytest.approx(critic, rel=1e-6)
    np.testing.assert_allclose(stats["td_error"].numpy(),
                               [0.5 * (abs(1.5 - y0) + abs(3 - y0)), 0.0], rtol=1e-6)
    # actor: a~ = tanh(s), log pi = -s; min(Q1, Q2)(s, a~) = relu(s + tanh s)
    actor = ((alpha * -1 - relu(1 + math.tanh(1)))
             + (alpha * -0.5 - relu(0.5 + math.tanh(0.5)))) / 2
    assert losses["actor"].item() == pytest.approx(actor, rel=1e-6)
    # temperature: -mean(log alpha * (log pi + H)) = -log(0.5) * mean(-2, -1.5)
    temperature = -(math.log(alpha) * ((-1 + target_entropy) + (-0.5 + target_entropy))) / 2
    assert temperature == pytest.approx(-1.213008, abs=1e-6)
    assert losses["alpha"].item() == pytest.approx(temperature, rel=1e-6)
    assert stats["alpha"].item() == pytest.approx(alpha)


def test_each_loss_trains_only_its_own_network():
    """One backward pass of the summed losses gives each group its own loss's gradient: the
    actor's loss, which goes through the critic, leaves nothing on the critic."""
    policy = SACPolicy(OBS1, gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32),
                       {"hiddens": (8,)}, seed=1)
    batch = policy.batch_to_tensors(dict(tiny_batch()))
    critic_params = list(policy.model.critic.parameters())
    actor_params = list(policy.model.actor.parameters())
    gen_state = policy.generator.get_state()
    losses, _ = sac_loss(policy, batch)
    ref_critic = torch.autograd.grad(losses["critic"], critic_params, retain_graph=True)
    ref_actor = torch.autograd.grad(losses["actor"], actor_params, retain_graph=True)
    ref_alpha = torch.autograd.grad(losses["alpha"], [policy.model.log_alpha],
                                    retain_graph=True)
    sum(losses.values()).backward()
    for p, g in zip(critic_params, ref_critic, strict=True):
        assert torch.allclose(p.grad, g)
    for p, g in zip(actor_params, ref_actor, strict=True):
        assert torch.allclose(p.grad, g)
    assert torch.allclose(policy.model.log_alpha.grad, ref_alpha[0])
    # and the learner's update steps every optimizer once, moving the target by tau
    policy.generator.set_state(gen_state)
    target_before = {k: v.clone() for k, v in policy.learner.targets["critic"].state_dict().items()}
    critic_before = {k: v.clone() for k, v in policy.model.critic.state_dict().items()}
    learned = tiny_batch()
    stats = policy.learn_on_batch(learned)
    assert set(policy.learner.optimizers) == {"actor", "critic", "alpha"}
    assert stats["num_grad_updates"] == 1 and "td_error" in learned
    for k, v in policy.learner.targets["critic"].state_dict().items():
        new = policy.model.critic.state_dict()[k]
        expected = target_before[k] + 0.005 * (new - target_before[k])
        assert torch.allclose(v, expected, atol=1e-7)
        assert not torch.equal(new, critic_before[k])


def test_temperature_falls_while_entropy_is_above_target():
    policy = tiny_policy()  # log pi = -2, -1.5: entropy above the target -1
    before = policy.alpha
    for _ in range(5):
        policy.learn_on_batch(tiny_batch())
    assert policy.alpha < before


def test_actions_within_asymmetric_bounds_and_deterministic_eval():
    space = gymnasium.spaces.Box(np.array([0.0, -3.0], np.float32),
                                 np.array([2.0, 5.0], np.float32))
    obs_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
    policy = SACPolicy(obs_space, space, {"hiddens": (8,)}, seed=0)
    obs = np.random.default_rng(0).standard_normal((500, 3)).astype(np.float32)
    actions, extras = policy.compute_actions(obs)
    assert actions.shape == (500, 2) and extras == {}
    assert np.all(actions >= space.low) and np.all(actions <= space.high)
    assert actions[:, 1].std() > 1.0  # stochastic: spread over [-3, 5]
    det, _ = policy.compute_actions(obs, explore=False)
    with torch.no_grad():
        mean, _ = policy.model.actor(torch.from_numpy(obs))
    np.testing.assert_allclose(det, to_box(np.tanh(mean.numpy()), space.low, space.high),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(det, policy.compute_actions(obs, explore=False)[0])
    assert policy.target_entropy == -2.0
    assert set(policy.get_weights()) == set(policy.model.actor.state_dict())


# -- config and errors ----------------------------------------------------------------------------
def test_discrete_action_space_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as info:
        rldataflow.build("sac", env="CartPole-v1", runtime="inline")
    message = str(info.value)
    assert "\n" not in message
    assert "CartPole-v1" in message and "Discrete(2)" in message and "sac" in message
    proc = subprocess.run([sys.executable, "-m", "rldataflow", "train", "sac", "--env",
                           "CartPole-v1", "--runtime", "inline", "--stop-iters", "1"],
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Discrete(2)" in lines[0], proc.stderr


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="tau"):
        rldataflow.build("sac", tau=0.0, runtime="inline")
    with pytest.raises(ConfigError, match="initial_alpha"):
        rldataflow.build("sac", initial_alpha=0.0, runtime="inline")
    with pytest.raises(ConfigError, match="did you mean 'target_entropy'"):
        rldataflow.build("sac", target_entropie=-1.0, runtime="inline")


def test_plan_prints_without_starting_anything():
    proc = subprocess.run([sys.executable, "-m", "rldataflow", "plan", "sac"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("StoreToReplayBuffer(local)", "TrainOneStep", "BroadcastWeights", "sac.py:"):
        assert name in proc.stdout
    with rldataflow.build("sac", runtime="inline", start=False, **QUICK) as algo:
        assert "Concurrently" in algo.plan.describe()
        assert algo.metrics.counters["env_steps_sampled"] == 0  # nothing sampled


# -- running the plan -----------------------------------------------------------------------------
def run_iterations(n: int, **overrides):
    with rldataflow.build("sac", runtime="inline", seed=3, **{**QUICK, **overrides}) as algo:
        results = [algo.train() for _ in range(n)]
        state = algo.workers.local_worker().policy.get_state()
    return results, state


def test_inline_runs_are_identical_and_train_at_the_set_intensity():
    (r1, s1), (r2, s2) = run_iterations(3), run_iterations(3)
    keys = ("env_steps_sampled", "env_steps_trained", "episode_return_mean")
    assert [[r[k] for k in keys] for r in r1] == [[r[k] for k in keys] for r in r2]
    for k in s1["weights"]:
        assert torch.equal(s1["weights"][k], s2["weights"][k])
    # one gradient step (train_batch_size rows) per env step once learning started
    trained = r1[2]["env_steps_trained"] - r1[1]["env_steps_trained"]
    sampled = r1[2]["env_steps_sampled"] - r1[1]["env_steps_sampled"]
    assert trained == 32 * sampled
    assert r1[2]["learner"]["alpha"] < 1.0


def test_prioritized_nstep_on_the_process_runtime():
    with rldataflow.build("sac", runtime="process", num_workers=2, seed=0, n_step=3,
                          prioritized_replay=True, **QUICK) as algo:
        algo.train()
        r = algo.train()
        assert r["counters"]["num_priority_updates"] == r["counters"]["num_grad_updates"] > 0
        local = algo.workers.local_worker().policy
        versions = algo.workers.foreach_worker(lambda w: w.policy.weights_version, local=False)
        assert all(0 < v <= local.weights_version for v in versions)


def test_save_and_restore_gives_identical_state(tmp_path, assert_same_state):
    with rldataflow.build("sac", runtime="inline", seed=0, **QUICK) as algo:
        algo.train()
        algo.train()
        algo.save(tmp_path / "ckpt")
        state = algo.workers.local_worker().policy.get_state()
    restored = Algorithm.restore(tmp_path / "ckpt", runtime=None)
    try:
        got = restored.workers.local_worker().policy.get_state()
        assert set(got) >= {"weights", "optimizers", "targets", "learner_num_updates"}
        assert set(got["optimizers"]) == {"actor", "critic", "alpha"}

        assert_same_state(state, got)
        assert "log_alpha" in got["weights"] and "critic" in got["targets"]
        assert restored.metrics.counters["replay_rows_added"] == 0  # the buffer starts empty
        assert restored.train()["iteration"] == 3
    finally:
        restored.stop()


def test_dead_worker_is_replaced_and_training_goes_on():
    with rldataflow.build("sac", runtime="process", num_workers=2, seed=0, **QUICK) as algo:
        algo.train()
        victim = algo.workers.remote_workers()[0]
        os.kill(algo.runtime.pid(victim), signal.SIGKILL)
        restarts = 0
        deadline = time.monotonic() + 60
        while not restarts and time.monotonic() < deadline:
            r = algo.train()
            restarts = r["worker_restarts"]
        assert restarts == 1
        before = r["env_steps_trained"]
        assert algo.train()["env_steps_trained"] > before
        new = algo.workers.remote_workers()[0]
        assert new is not victim


# -- learning -------------------------------------------------------------------------------------
#: The defaults are MuJoCo's (256x256, lr 3e-4, 10k learning_starts of uniform actions);
#: Pendulum-v1 learns several times faster on a small network with lr 1e-3 (RL Baselines3
#: Zoo's Pendulum SAC lr) and the policy acting from step 0.
PENDULUM = dict(hiddens=(64, 64), actor_lr=1e-3, critic_lr=1e-3, learning_starts=1000,
                initial_random_steps=0)


def train_until_pendulum(name: str, threshold: float = -250.0, budget: int = 20_000,
                         record_property=None, **overrides) -> tuple[int, float]:
    """Inline runtime, seed 0, the algorithm's defaults with :data:`PENDULUM`: train until the
    mean return of the last 10 finished episodes (the ``episode_return`` window that
    ``episode_return_mean`` averages over 100 episodes; 100 Pendulum episodes are the whole
    20k-step budget) reaches ``threshold``. Returns ``(env steps, wall seconds)``."""
    start = time.perf_counter()
    overrides = {**PENDULUM, **({"alpha_lr": 1e-3} if name == "sac" else {}), **overrides}
    with rldataflow.build(name, env="Pendulum-v1", runtime="inline", seed=0,
                          min_steps_per_iteration=500, **overrides) as algo:
        while True:
            r = algo.train()
            last10 = algo.metrics.window("episode_return")[-10:]
            mean10 = float(np.mean(last10)) if len(last10) == 10 else -math.inf
            if mean10 >= threshold or r["env_steps_sampled"] >= budget:
                break
        evaluation = algo.evaluate(5)["evaluation/episode_return_mean"]
    wall = time.perf_counter() - start
    steps = r["env_steps_sampled"]
    print(f"\n{name} Pendulum-v1: last-10 mean return {mean10:.1f} (100-episode mean "
          f"{r['episode_return_mean']:.1f}, deterministic eval {evaluation:.1f}) after {steps} "
          f"env steps, {wall:.1f} s")
    if record_property is not None:
        record_property("env_steps", steps)
        record_property("wall_time_s", round(wall, 1))
    assert mean10 >= threshold, f"{name}: last-10 mean {mean10:.1f} after {steps} steps"
    return steps, wall


@pytest.mark.learning
@pytest.mark.timeout(180)
def test_sac_learns_pendulum(record_property):
    train_until_pendulum("sac", record_property=record_property)


class CheetahShaped(gymnasium.Env):
    """HalfCheetah-v5's spaces (17-D observations, 6 actions in [-1, 1]) without MuJoCo, which
    CI does not install: reward -|a - 0.5|^2, 50-step episodes."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (17,), np.float64)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (6,), np.float32)

    def __init__(self, env_config=None):
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.standard_normal(17), {}

    def step(self, action):
        self.t += 1
        reward = -float(np.sum((np.asarray(action) - 0.5) ** 2))
        return self.np_random.standard_normal(17), reward, False, self.t >= 50, {}


def test_multi_dimensional_box_like_halfcheetah():
    with rldataflow.build("sac", env=CheetahShaped, runtime="inline", seed=0,
                          actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4,
                          **{**QUICK, "hiddens": (256, 256)}) as algo:
        r = algo.train()
        policy = algo.workers.local_worker().policy
        assert policy.action_dim == 6 and policy.target_entropy == -6.0
        assert r["env_steps_trained"] > 0 and np.isfinite(r["learner"]["critic_loss"])
        assert algo.evaluate(1)["evaluation/num_episodes"] == 1
