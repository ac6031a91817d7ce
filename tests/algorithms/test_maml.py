"""MAML: the inner policy-gradient step against a hand computation on a linear policy, the
second-order meta-gradient against finite differences, the linear baseline, the task envs,
the plan, checkpoints, bad input, and adaptation on held-out tasks (learning)."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium
import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.algorithms.maml import (
    TASK_BATCHES,
    Config,
    SampleTasks,
    adaptation_returns,
    inner_step,
    linear_baseline,
    pg_surrogate,
)
from rldataflow.data import SampleBatch as SB
from rldataflow.envs import PENDULUM_TASKS_ID, POINT_NAVIGATION_ID, make_env, task_env
from rldataflow.flow import Metrics
from rldataflow.policies import TorchPolicy
from rldataflow.trainer import Algorithm
from rldataflow.utils.config import ConfigError, config_help

BOX1 = gymnasium.spaces.Box(-10, 10, (1,), np.float32)
#: a small, fast configuration (the plan is the same as the default's)
QUICK = dict(runtime="inline", num_workers=0, meta_batch_size=2, num_envs_per_worker=4,
             hiddens=(16,), env_config={"horizon": 10}, seed=0)


def linear_policy(w: float = 0.5, b: float = 0.0) -> TorchPolicy:
    """mean(s) = w s + b, log_std 0 (sigma 1), no hidden layer."""
    policy = TorchPolicy(BOX1, BOX1, {"hiddens": (), "use_critic": False}, seed=0)
    with torch.no_grad():
        policy.model.pi_head.weight.fill_(w)
        policy.model.pi_head.bias.fill_(b)
        policy.model.log_std.zero_()
    return policy


def params_of(policy: TorchPolicy, dtype=torch.float32) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(dtype).clone().requires_grad_()
            for k, v in policy.model.named_parameters()}


def tensors(obs, actions, adv, dtype=torch.float32) -> dict[str, torch.Tensor]:
    return {SB.OBS: torch.tensor(obs, dtype=dtype).reshape(-1, 1),
            SB.ACTIONS: torch.tensor(actions, dtype=dtype).reshape(-1, 1),
            SB.ADVANTAGES: torch.tensor(adv, dtype=dtype)}


def test_one_inner_step_matches_the_hand_computed_policy_gradient_step():
    policy = linear_policy(w=0.5, b=0.0)
    batch = tensors([1.0, 2.0], [1.0, 0.0], [1.0, -1.0])
    # mu = [0.5, 1.0], a - mu = [0.5, -1], sigma = 1, L = -mean(A log N(a; mu, sigma)):
    #   dL/dw         = -mean(A (a - mu) s)              = -mean([0.5, 2])     = -1.25
    #   dL/db         = -mean(A (a - mu))                = -mean([0.5, 1])     = -0.75
    #   dL/dlog_sigma = -mean(A ((a - mu)^2 - 1))        = -mean([-0.75, 0])   =  0.375
    # theta' = theta - 0.1 * grad
    new = inner_step(policy, params_of(policy), batch, inner_lr=0.1, create_graph=False)
    assert new["pi_head.weight"].item() == pytest.approx(0.625, abs=1e-6)
    assert new["pi_head.bias"].item() == pytest.approx(0.075, abs=1e-6)
    assert new["log_std"].item() == pytest.approx(-0.0375, abs=1e-6)
    # the value head is not reached by the loss: unchanged
    assert torch.equal(new["vf_head.weight"], policy.model.vf_head.weight)


def test_the_second_order_meta_gradient_matches_finite_differences():
    policy = linear_policy(w=0.3, b=-0.2)
    policy.model.double()
    pre = tensors([1.0, -0.5, 2.0], [0.4, 0.1, -1.0], [1.0, -0.5, 0.7], torch.float64)
    post = tensors([0.5, 1.5, -1.0], [1.0, -0.3, 0.2], [-0.2, 1.0, 0.6], torch.float64)
    names = ["pi_head.weight", "pi_head.bias", "log_std"]

    def meta_loss(theta: dict[str, torch.Tensor], create_graph: bool) -> torch.Tensor:
        return pg_surrogate(policy, inner_step(policy, theta, pre, 0.5, create_graph), post)

    theta = params_of(policy, torch.float64)
    exact = torch.autograd.grad(meta_loss(theta, True), [theta[n] for n in names])
    eps = 1e-6
    for name, g in zip(names, exact, strict=True):
        plus, minus = params_of(policy, torch.float64), params_of(policy, torch.float64)
        with torch.no_grad():
            plus[name] += eps
            minus[name] -= eps
        numeric = (meta_loss(plus, False) - meta_loss(minus, False)).item() / (2 * eps)
        assert g.item() == pytest.approx(numeric, rel=1e-5, abs=1e-8), name
    # FOMAML's gradient (at theta', no second-order terms) is a different vector here
    adapted = {k: v.detach().requires_grad_() for k, v in
               inner_step(policy, params_of(policy, torch.float64), pre, 0.5, False).items()}
    first = torch.autograd.grad(pg_surrogate(policy, adapted, post),
                                [adapted[n] for n in names])
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(first, exact, strict=True))


def test_the_linear_baseline_fits_returns_that_are_linear_in_its_features():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(50, 2))
    t = np.arange(50) % 25
    s = t / 100.0
    returns = 1.0 + 2 * obs[:, 0] - obs[:, 1] ** 2 + 3 * s - 4 * s ** 3
    np.testing.assert_allclose(linear_baseline(obs, t, returns, reg=0.0), returns, atol=1e-8)
    noisy = returns + rng.normal(size=50)
    fitted = linear_baseline(obs, t, noisy)
    assert np.mean((noisy - fitted) ** 2) < np.mean((noisy - noisy.mean()) ** 2)


# -- the task interface -----------------------------------------------------------------------
def test_point_navigation_tasks_are_seeded_and_the_goal_sets_the_reward():
    env = make_env(POINT_NAVIGATION_ID, {"horizon": 3})
    tasks = env.sample_tasks(5, seed=1)
    assert tasks == env.sample_tasks(5, seed=1) != env.sample_tasks(5, seed=2)
    assert all(-0.5 <= g <= 0.5 for task in tasks for g in task["goal"])
    rewards = {}
    for goal in ((0.1, 0.0), (-0.3, 0.2)):
        env.set_task({"goal": list(goal)})
        assert env.get_task() == {"goal": list(goal)}
        env.reset(seed=0)
        obs, r, term, trunc, _ = env.step(np.array([0.5, 0.0]))  # clipped to speed 0.1
        np.testing.assert_allclose(obs, [0.1, 0.0])
        rewards[goal] = r
    assert rewards[(0.1, 0.0)] == pytest.approx(0.0)
    assert rewards[(-0.3, 0.2)] == pytest.approx(-(0.4 ** 2 + 0.2 ** 2))
    env.step([0, 0])
    assert env.step([0, 0])[3]  # truncated at the horizon


def test_pendulum_tasks_change_the_dynamics():
    env = make_env(PENDULUM_TASKS_ID)
    inner = task_env(env)  # through the TimeLimit wrapper
    nxt = []
    for task in ({"g": 5.0, "m": 1.0}, {"g": 15.0, "m": 0.5}):
        inner.set_task(task)
        assert inner.get_task() == task
        env.reset(seed=0)
        nxt.append(env.step(np.array([0.0], np.float32))[0])
    assert not np.allclose(nxt[0], nxt[1])
    assert inner.sample_tasks(3, seed=0) == inner.sample_tasks(3, seed=0)


def test_an_env_without_tasks_is_a_one_line_error():
    with pytest.raises(TypeError, match="has no task distribution"):
        task_env(make_env("CartPole-v1"))
    with pytest.raises(ConfigError, match="config key 'env': 'Pendulum-v1' has no task"):
        rldataflow.build("maml", runtime="inline", env="Pendulum-v1", num_workers=0)


def test_every_config_field_is_documented():
    text = config_help(Config)
    for f in dataclasses.fields(Config):
        line = next(row for row in text.splitlines() if row.split()[0] == f.name)
        assert len(line.split()) > 3, f"maml.Config.{f.name} has no help text"


def test_bad_config_values_name_the_key():
    for key, value in (("inner_lr", 0.0), ("inner_adaptation_steps", 0),
                       ("meta_batch_size", 0), ("output", "/tmp/x")):
        with pytest.raises(ConfigError, match=key):
            rldataflow.build("maml", start=False, **{**QUICK, key: value})


# -- plan, metrics, checkpoints ---------------------------------------------------------------
def test_the_plan_describes_the_per_task_scatter_and_the_meta_update():
    with rldataflow.build("maml", start=False, **QUICK) as algo:
        text = algo.plan.describe()
    for box in ("SampleTasks(2 per meta-batch)", "ScatterToWorkers(adapt_to_task",
                "MetaUpdate", "BroadcastWeights", "maml.py:"):
        assert box in text


def test_cli_plan_maml():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "rldataflow", "plan", "maml"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "ScatterToWorkers(adapt_to_task" in proc.stdout and "MetaUpdate" in proc.stdout


@pytest.mark.parametrize("first_order", [False, True])
def test_a_train_step_reports_pre_and_post_adaptation_returns(first_order):
    with rldataflow.build("maml", first_order=first_order, **QUICK) as algo:
        before = {k: v.clone() for k, v in algo.workers.local_worker().policy.model.state_dict()
                  .items()}
        result = algo.train()
        after = algo.workers.local_worker().policy.model.state_dict()
    # 2 tasks x 4 episodes x 10 steps, pre and post
    assert result["env_steps_sampled"] == 2 * 2 * 4 * 10
    pre, post = (result["episode_return_mean_pre_adaptation"],
                 result["episode_return_mean_post_adaptation"])
    assert np.isfinite(pre) and np.isfinite(post)
    assert result["adaptation_delta"] == pytest.approx(post - pre)
    assert result["learner"]["tasks"] == 2
    assert any(not torch.equal(before[k], after[k]) for k in before)  # one meta-step taken


@pytest.mark.parametrize("first_order", [False, True])
def test_two_inner_steps_sample_once_per_step_and_once_after(first_order):
    with rldataflow.build("maml", inner_adaptation_steps=2, first_order=first_order,
                          **QUICK) as algo:
        result = algo.train()
    assert result["env_steps_sampled"] == 2 * 3 * 4 * 10  # tasks x samples x episodes x steps
    assert np.isfinite(result["learner"]["grad_gnorm"]) and result["learner"]["grad_gnorm"] > 0


def test_the_inline_runtime_is_reproducible():
    runs = []
    for _ in range(2):
        with rldataflow.build("maml", **QUICK) as algo:
            results = [algo.train() for _ in range(2)]
            weights = algo.workers.local_worker().get_weights()
        runs.append(([r["episode_return_mean_pre_adaptation"] for r in results]
                     + [r["episode_return_mean_post_adaptation"] for r in results], weights))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        np.testing.assert_array_equal(v, runs[1][1][k])


def test_two_remote_workers_adapt_to_one_task_each(remote_runtime):
    with rldataflow.build("maml", **{**QUICK, "runtime": remote_runtime, "num_workers": 2}
                          ) as algo:
        result = algo.train()
    assert result["learner"]["tasks"] == 2 and result["env_steps_sampled"] == 160


def test_checkpoint_round_trip_keeps_weights_optimizer_and_the_task_stream(
        tmp_path, assert_same_state):
    with rldataflow.build("maml", **QUICK) as algo:
        algo.train()
        algo.save(tmp_path / "ckpt")
        state = copy.deepcopy(algo.workers.local_worker().get_state())
    restored = Algorithm.restore(tmp_path / "ckpt", runtime=None)
    try:
        assert_same_state(state, restored.workers.local_worker().get_state())
        assert restored.metrics.counters[TASK_BATCHES] == 1
        restored.train()  # and it goes on training
        assert restored.metrics.counters[TASK_BATCHES] == 2
    finally:
        restored.stop()


def test_task_batches_depend_on_the_seed_and_the_batch_counter_only():
    def draw(counter: int, seed: int = 0) -> list:
        op = SampleTasks(POINT_NAVIGATION_ID, {}, n=3, seed=seed)
        op.metrics = Metrics()
        op.metrics.counters[TASK_BATCHES] = counter  # as restored from a checkpoint
        tasks = op(None)
        assert op.metrics.counters[TASK_BATCHES] == counter + 1
        return tasks

    assert draw(1) == draw(1) != draw(2)
    assert draw(1) != draw(1, seed=1)


# -- learning ---------------------------------------------------------------------------------
#: the learning test's budget: 2-D navigation with horizon 20, 10 tasks of 20 episodes each
LEARN = dict(runtime="process", num_workers=2, meta_batch_size=10, num_envs_per_worker=20,
             hiddens=(64, 64), init_log_std=-2.0, env_config={"horizon": 20}, seed=0)
LEARN_ITERS = 20
#: what the test asks of the adapted policy on held-out tasks (returns are negative squared
#: distances summed over 20 steps; see docs/algorithms.md for the measured figures)
MIN_ADAPTATION_GAIN = 1.0


@pytest.mark.learning
@pytest.mark.timeout(600)
def test_adaptation_improves_returns_on_held_out_tasks():
    held_out = task_env(make_env(POINT_NAVIGATION_ID, LEARN["env_config"])).sample_tasks(
        10, seed=987_654)  # goals drawn apart from training's (seed, batch) stream
    with rldataflow.build("maml", **LEARN) as algo:
        initial = adaptation_returns(algo.workers, held_out)
        for _ in range(LEARN_ITERS):
            algo.train()
        final = adaptation_returns(algo.workers, held_out)
    print(f"held-out tasks, before meta-training: {initial}; after {LEARN_ITERS} "
          f"meta-updates: {final}")
    assert final["post_adaptation"] > final["pre_adaptation"] + MIN_ADAPTATION_GAIN
    assert final["adaptation_delta"] > initial["adaptation_delta"]
