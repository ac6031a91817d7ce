"""DQN: the loss against hand-computed numbers, n-step transitions, exploration, the plan on the
inline and process runtimes, determinism, checkpoints, the command line, and learning."""

from __future__ import annotations

import subprocess
import sys
import time

import gymnasium
import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.algorithms import dqn
from rldataflow.algorithms.dqn import DQNPolicy, dqn_loss, nstep_postprocess
from rldataflow.data import SampleBatch as SB
from rldataflow.trainer import Algorithm
from rldataflow.utils.config import ConfigError

OBS_SPACE = gymnasium.spaces.Box(-10, 10, (2,), np.float32)
QUICK = dict(learning_starts=100, min_steps_per_iteration=200, num_envs_per_worker=4,
             training_intensity=8.0)


# -- the loss --------------------------------------------------------------------------------
def tiny_policy(double_q: bool) -> DQNPolicy:
    """Online Q(s) = [relu(s0), 2 relu(s1)]; target Q'(s) = [0.5 relu(s0), 0.5 relu(s1)]."""
    policy = DQNPolicy(OBS_SPACE, gymnasium.spaces.Discrete(2),
                       {"hiddens": (2,), "activation": "relu", "dueling": False,
                        "double_q": double_q, "huber_delta": 1.0}, seed=0)
    eye, zero2 = torch.eye(2), torch.zeros(2)
    online = {"encoder.layers.0.weight": eye, "encoder.layers.0.bias": zero2,
              "advantage_head.weight": torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
              "advantage_head.bias": zero2}
    target = dict(online, **{"advantage_head.weight": torch.tensor([[0.5, 0.0], [0.0, 0.5]])})
    policy.model.load_state_dict(online)
    policy.target_model.load_state_dict(target)
    return policy


def tiny_batch() -> SB:
    return SB({
        SB.OBS: np.array([[1, 1], [0, 2], [2, 0]], np.float32),
        SB.ACTIONS: np.array([0, 1, 0]),
        SB.REWARDS: np.array([1.0, 0.5, 0.0], np.float32),   # n-step sums
        SB.NEXT_OBS: np.array([[3, 1], [3, 2], [3, 2]], np.float32),
        SB.TERMINATEDS: np.array([False, True, False]),
        SB.DISCOUNTS: np.array([0.9, 0.9, 0.81], np.float32),  # gamma ** m
        "weights": np.array([1.0, 0.5, 0.25], np.float32),    # importance weights
    })


# Worked by hand: Q(s,a); a* = argmax online Q(next); target = r + disc*(1-term)*Q'(next,a*)
#   row 0: Q=[1,2] -> 1;  next [3,1]: online [3,2] -> a*=0, Q'=1.5;  target 1 + 0.9*1.5 = 2.35
#          td = -1.35, huber = 1.35 - 0.5 = 0.85
#   row 1: Q=[0,4] -> 4;  terminated: target = 0.5;  td = 3.5, huber = 3.0
#   row 2: Q=[2,0] -> 2;  next [3,2]: online [3,4] -> a*=1, Q'(.,1) = 1.0 (double Q);
#          target 0.81 * 1.0 = 0.81, td = 1.19, huber = 0.69
#          (max over Q' instead: Q' = [1.5, 1.0] -> 1.215, td = 0.785, huber = 0.5*0.785^2)
#   loss = mean(w * huber) with w = [1, 0.5, 0.25]
@pytest.mark.parametrize("double_q, td, loss", [
    (True, [-1.35, 3.5, 1.19], (0.85 + 0.5 * 3.0 + 0.25 * 0.69) / 3),
    (False, [-1.35, 3.5, 0.785], (0.85 + 0.5 * 3.0 + 0.25 * 0.5 * 0.785 ** 2) / 3),
])
def test_loss_matches_hand_computed_numbers(double_q, td, loss):
    policy = tiny_policy(double_q)
    got, stats = dqn_loss(policy, policy.batch_to_tensors(tiny_batch()))
    assert got.item() == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(stats["td_error"].numpy(), td, rtol=1e-6)
    assert stats["mean_abs_td_error"].item() == pytest.approx(np.mean(np.abs(td)), rel=1e-6)


def test_learn_on_batch_writes_td_errors_and_steps_the_online_net_only():
    policy = tiny_policy(True)
    batch = tiny_batch()
    target_before = {k: v.clone() for k, v in policy.target_model.state_dict().items()}
    online_before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    stats = policy.learn_on_batch(batch)
    np.testing.assert_allclose(batch["td_error"], [-1.35, 3.5, 1.19], rtol=1e-6)
    assert stats["num_grad_updates"] == 1 and policy.num_grad_updates == 1
    for k, v in policy.target_model.state_dict().items():
        assert torch.equal(v, target_before[k])
    assert any(not torch.equal(v, online_before[k]) for k, v in policy.model.state_dict().items())
    policy.update_target()
    for k, v in policy.target_model.state_dict().items():
        assert torch.equal(v, policy.model.state_dict()[k])


def test_loss_without_weights_or_discounts_uses_ones_and_gamma():
    policy = tiny_policy(True)
    batch = tiny_batch()
    del batch["weights"], batch[SB.DISCOUNTS]
    policy.config["gamma"] = 0.9
    got, _ = dqn_loss(policy, policy.batch_to_tensors(batch))
    # row 2 now discounts by 0.9: target 0.9, td 1.1, huber 0.6
    assert got.item() == pytest.approx((0.85 + 3.0 + 0.6) / 3, rel=1e-6)


# -- n-step transitions ------------------------------------------------------------------------
def test_nstep_windows_stop_at_episode_and_env_boundaries():
    # env-major: env 0 (rows 0-3) terminates at row 1; env 1 (rows 4-7) is truncated at row 6
    batch = SB({
        SB.OBS: np.arange(8, dtype=np.float32)[:, None],
        SB.ACTIONS: np.zeros(8, np.int64),
        SB.REWARDS: np.array([1, 1, 1, 1, 1, 2, 3, 4], np.float32),
        SB.NEXT_OBS: 100 + np.arange(8, dtype=np.float32)[:, None],
        SB.TERMINATEDS: np.array([0, 1, 0, 0, 0, 0, 0, 0], bool),
        SB.TRUNCATEDS: np.array([0, 0, 0, 0, 0, 0, 1, 0], bool),
        SB.EPS_ID: np.array([10, 10, 11, 11, 20, 20, 20, 21]),
        SB.ENV_ID: np.array([0, 0, 0, 0, 1, 1, 1, 1]),
    }, stats={"episode_returns": [2.0]})
    policy = DQNPolicy(gymnasium.spaces.Box(-1e3, 1e3, (1,), np.float32),
                       gymnasium.spaces.Discrete(2), {"n_step": 3, "gamma": 0.5}, seed=0)
    out = nstep_postprocess(policy, batch)
    assert sorted(out) == sorted(dqn.TRANSITION_COLUMNS)  # only what the loss reads travels
    assert out.stats == {"episode_returns": [2.0]}
    np.testing.assert_allclose(out[SB.REWARDS], [1.5, 1, 1.5, 1, 2.75, 3.5, 3, 4])
    np.testing.assert_allclose(out[SB.NEXT_OBS][:, 0], [101, 101, 103, 103, 106, 106, 106, 107])
    assert out[SB.TERMINATEDS].tolist() == [True, True] + [False] * 6
    np.testing.assert_allclose(out[SB.DISCOUNTS], [.25, .5, .25, .5, .125, .25, .5, .5])


# -- exploration ---------------------------------------------------------------------------------
def test_epsilon_schedule_runs_on_global_env_steps():
    policy = DQNPolicy(OBS_SPACE, gymnasium.spaces.Discrete(3),
                       {"initial_epsilon": 1.0, "final_epsilon": 0.1, "epsilon_timesteps": 1000,
                        "epsilon_step_scale": 2}, seed=0)
    obs = np.zeros((50, 2), np.float32)
    greedy, _ = policy.compute_actions(obs, explore=False)
    assert policy.env_steps == 0 and len(set(greedy.tolist())) == 1
    actions, extras = policy.compute_actions(obs)
    assert extras == {} and policy.env_steps == 50
    assert len(set(actions.tolist())) == 3  # epsilon ~1: uniformly random
    assert policy.epsilon == pytest.approx(1.0 - 0.9 * 100 / 1000)  # 50 local steps x 2 workers
    policy.env_steps = 10_000
    assert policy.epsilon == pytest.approx(0.1)
    policy.fixed_epsilon = 0.0
    actions, _ = policy.compute_actions(obs)
    np.testing.assert_array_equal(actions, greedy)


def test_per_env_epsilons():
    policy = DQNPolicy(OBS_SPACE, gymnasium.spaces.Discrete(4), seed=0)
    policy.fixed_epsilon = np.array([0.0, 1.0])
    greedy, _ = policy.compute_actions(np.zeros((2, 2), np.float32), explore=False)
    firsts = {int(policy.compute_actions(np.zeros((2, 2), np.float32))[0][0])
              for _ in range(50)}
    seconds = {int(policy.compute_actions(np.zeros((2, 2), np.float32))[0][1])
               for _ in range(50)}
    assert firsts == {int(greedy[0])} and len(seconds) == 4


def test_policy_state_round_trip_includes_target_and_exploration_clock():
    a = DQNPolicy(OBS_SPACE, gymnasium.spaces.Discrete(2), seed=0)
    a.learn_on_batch(tiny_batch())
    a.env_steps = 1234
    b = DQNPolicy(OBS_SPACE, gymnasium.spaces.Discrete(2), seed=1)
    b.set_state(a.get_state())
    assert b.env_steps == 1234 and b.num_grad_updates == 1
    for k, v in a.target_model.state_dict().items():
        assert torch.equal(v, b.target_model.state_dict()[k])
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])


def test_dqn_needs_discrete_actions():
    with pytest.raises(ValueError, match="Discrete"):
        DQNPolicy(OBS_SPACE, gymnasium.spaces.Box(-1, 1, (1,), np.float32))


# -- config and plan shape -----------------------------------------------------------------------
def test_round_robin_weights_follow_training_intensity():
    cfg = dqn.Config(num_workers=0, num_envs_per_worker=8, rollout_fragment_length=4,
                     train_batch_size=64)
    # 32 rows per store round; 16 rows replayed per sampled row = 8 batches of 64
    assert dqn.round_robin_weights(cfg.replace(training_intensity=16.0)) == [1, 8]
    assert dqn.round_robin_weights(cfg.replace(training_intensity=None)) == [1, 1]
    assert dqn.round_robin_weights(cfg.replace(training_intensity=0.5)) == [4, 1]
    assert dqn.round_robin_weights(cfg.replace(num_workers=2, training_intensity=4.0)) == [1, 4]


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="n_step"):
        rldataflow.build("dqn", n_step=0, runtime="inline")
    with pytest.raises(ConfigError, match="learning_starts"):
        rldataflow.build("dqn", learning_starts=10**9, runtime="inline")
    with pytest.raises(ConfigError, match="did you mean 'learning_starts'"):
        rldataflow.build("dqn", learning_start=10, runtime="inline")


# -- running the plan ----------------------------------------------------------------------------
def run_iterations(n: int, **overrides):
    with rldataflow.build("dqn", env="CartPole-v1", runtime="inline", seed=3,
                          **{**QUICK, **overrides}) as algo:
        results = [algo.train() for _ in range(n)]
        weights = algo.workers.local_worker().policy.get_weights()
    return results, weights


def test_inline_runs_are_identical():
    (r1, w1), (r2, w2) = run_iterations(3), run_iterations(3)
    keys = ("env_steps_sampled", "env_steps_trained", "episodes_total", "episode_return_mean")
    assert [[r[k] for k in keys] for r in r1] == [[r[k] for k in keys] for r in r2]
    assert [r["learner"] for r in r1] == [r["learner"] for r in r2]
    assert r1[-1]["env_steps_trained"] > 0
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k])


def test_first_iteration_waits_for_learning_starts_and_counts():
    (first, second), _ = run_iterations(2, learning_starts=300)
    assert first["env_steps_sampled"] >= 300
    assert first["counters"]["replay_rows_added"] == first["env_steps_sampled"]
    # training_intensity 8: about 8 rows trained per row sampled once learning has started
    trained = second["env_steps_trained"] - first["env_steps_trained"]
    sampled = second["env_steps_sampled"] - first["env_steps_sampled"]
    assert 6 <= trained / sampled <= 10
    assert second["counters"]["num_target_updates"] >= 1
    assert second["counters"]["num_priority_updates"] == second["counters"]["num_grad_updates"]


def test_process_runtime_with_remote_workers():
    with rldataflow.build("dqn", env="CartPole-v1", runtime="process", num_workers=2, seed=0,
                          **QUICK) as algo:
        result = algo.train()
        result = algo.train()
        assert result["env_steps_trained"] > 0
        local = algo.workers.local_worker().policy
        versions = algo.workers.foreach_worker(lambda w: w.policy.weights_version, local=False)
        steps = algo.workers.foreach_worker(lambda w: w.policy.env_steps, local=False)
        # weights go out once per sample round; samplers count their own steps
        assert all(v > 0 for v in versions) and max(versions) <= local.weights_version
        assert sum(steps) == result["env_steps_sampled"]
        eps = algo.workers.foreach_worker(lambda w: w.policy.epsilon, local=False)
        expected = 1.0 - 0.96 * min(1.0, result["env_steps_sampled"] / 10_000)
        assert eps == pytest.approx([expected] * 2, abs=1e-6)


def test_save_and_restore(tmp_path):
    with rldataflow.build("dqn", env="CartPole-v1", runtime="inline", seed=0, **QUICK) as algo:
        for _ in range(2):
            algo.train()
        algo.save(tmp_path / "ckpt")
        policy = algo.workers.local_worker().policy
        target = {k: v.clone() for k, v in policy.target_model.state_dict().items()}
        env_steps = policy.env_steps
        sampled = algo.metrics.counters["env_steps_sampled"]
    restored = Algorithm.restore(tmp_path / "ckpt", runtime=None)
    try:
        policy = restored.workers.local_worker().policy
        assert policy.env_steps == env_steps > 0
        for k, v in policy.target_model.state_dict().items():
            assert torch.equal(v, target[k])
        assert restored.metrics.counters["replay_rows_added"] == 0  # the buffer starts empty
        result = restored.train()  # refills learning_starts rows, then trains on
        assert result["env_steps_sampled"] > sampled and result["iteration"] == 3
    finally:
        restored.stop()


def test_cli_trains_dqn(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rldataflow", "train", "dqn", "--env", "CartPole-v1",
         "--runtime", "inline", "--stop-iters", "2", "--out", str(tmp_path / "run"),
         "--set", "learning_starts=100", "--set", "min_steps_per_iteration=200"],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "checkpoint_000002").exists()


# -- learning -------------------------------------------------------------------------------------
@pytest.mark.learning
def test_dqn_learns_cartpole():
    """Defaults, inline runtime, seed 0: mean return >= 400 within 100k env steps."""
    start = time.perf_counter()
    with rldataflow.build("dqn", env="CartPole-v1", runtime="inline", seed=0) as algo:
        result = algo.train()
        while result["episode_return_mean"] < 400 and result["env_steps_sampled"] < 100_000:
            result = algo.train()
    wall = time.perf_counter() - start
    print(f"DQN CartPole: return {result['episode_return_mean']:.1f} after "
          f"{result['env_steps_sampled']} env steps, {wall:.0f}s")
    assert result["episode_return_mean"] >= 400, result["episode_return_mean"]
    assert result["env_steps_sampled"] <= 100_000 + 1000
