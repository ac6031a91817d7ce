"""APPO: IMPALA's flow plus one step (the target network update), the clipped surrogate on
V-trace advantages against the target network, the KL penalty, checkpoints, learning."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.algorithms import appo, impala
from rldataflow.data import SampleBatch as SB
from rldataflow.utils.config import build_config
from rldataflow.workers import RolloutWorker

SMALL = dict(env="CartPole-v1", num_workers=2, num_envs_per_worker=2,
             rollout_fragment_length=16, train_batch_size=64, minibatch_size=32, seed=0)


def _params_equal(m1, m2):
    return all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(),
                                                   m2.state_dict().values(), strict=True))


def _learner(**cfg):
    config = build_config(appo.Config, dict(SMALL, runtime="inline", num_workers=0,
                                            learner_thread=False, **cfg))
    worker = RolloutWorker("CartPole-v1", num_envs=2, policy_factory=appo.policy_factory(config),
                           rollout_fragment_length=32, seed=0, include_next_obs=True)
    return worker, appo.AppoLearner(worker.policy, config)


def test_plan_is_impalas_flow_plus_one_step():
    with rldataflow.build("appo", runtime="inline", **SMALL) as algo:
        top = algo.plan.parents[0]
        assert top.name == "for_each(UpdateTargetNetwork)"
        assert top.site.startswith("rldataflow/algorithms/appo.py")
        below = top.parents[0]
        assert below.name.startswith("Concurrently(mode=async")
        assert below.site.startswith("rldataflow/algorithms/impala.py")  # reused, not copied
        r = algo.train()
        assert r["counters"]["num_target_updates"] >= 1
        assert "kl" in r["learner"] and "clip_fraction" in r["learner"]


def test_on_policy_first_step_ratio_is_one_and_target_is_used():
    worker, learner = _learner()
    batch = worker.sample()
    policy = worker.policy
    assert _params_equal(policy.model, policy.target_model)
    prepared = learner.prepare(SB(batch))
    np.testing.assert_allclose(prepared[appo.TARGET_LOGP], batch[SB.ACTION_LOGP], atol=1e-5)
    tensors = policy.batch_to_tensors(SB({k: prepared[k] for k in learner.train_columns()}))
    _, stats = appo.appo_loss(policy, tensors)
    assert stats["clip_fraction"].item() == 0.0 and stats["kl"].item() == pytest.approx(0, abs=1e-6)
    # after learning, V-trace's target policy is the target network, not the new weights
    learner.learn(SB(batch))
    assert not _params_equal(policy.model, policy.target_model)
    prepared = learner.prepare(SB(batch))
    np.testing.assert_allclose(prepared[appo.TARGET_LOGP], batch[SB.ACTION_LOGP], atol=1e-5)


def test_target_update_happens_on_the_learner_between_steps():
    worker, learner = _learner()
    policy = worker.policy
    batch = worker.sample()
    learner.learn(SB(batch))
    before_second = {k: v.clone() for k, v in policy.model.state_dict().items()}
    policy.request_target_update()  # the driver's UpdateTargetNetwork only raises a flag
    assert not _params_equal(policy.model, policy.target_model)
    learner.learn(SB(batch))        # the learner updates the target first, then learns
    assert not policy.target_update_pending
    target = policy.target_model.state_dict()
    assert all(torch.equal(target[k], before_second[k]) for k in target)


def test_kl_penalty_adapts_on_the_learner():
    worker, learner = _learner(use_kl_loss=True, kl_coeff=1.0, kl_target=1e-9)
    batch = worker.sample()
    for step in (1, 2):  # KL vs the target > 2 x a tiny target: x1.5 per update
        stats = learner.learn(SB(batch))["stats"]
        assert stats["kl"] > 0 and stats["kl_coeff"] == pytest.approx(1.5**step)
    worker, learner = _learner(use_kl_loss=True, kl_coeff=1.0, kl_target=10.0)
    stats = learner.learn(SB(worker.sample()))["stats"]  # far below half a huge target: x0.5
    assert worker.policy.kl_coeff == pytest.approx(0.5) == stats["kl_coeff"]


def test_checkpoint_keeps_target_network_and_kl_coeff(tmp_path):
    with rldataflow.build("appo", runtime="inline", use_kl_loss=True,
                          min_steps_per_iteration=256, **SMALL) as algo:
        algo.train()
        path = algo.save(tmp_path / "ckpt")
    with rldataflow.Algorithm.restore(path) as restored:
        policy = restored.workers.local_worker().policy
        state = policy.get_state()
        assert set(state["target_weights"]) == set(policy.model.state_dict())
        assert isinstance(impala.parts_of(restored).learner, appo.AppoLearner)
        assert restored.train()["env_steps_trained"] > 0


def _learn_until(algo_name: str, target: float, budget: int, **config) -> tuple[float, int]:
    start = time.perf_counter()
    with rldataflow.build(algo_name, runtime="process", num_workers=2, **config) as algo:
        best = -math.inf
        while True:
            r = algo.train()
            best = max(best, r["episode_return_mean"])
            if best >= target or r["env_steps_sampled"] >= budget:
                break
    print(f"{algo_name} {config.get('env')}: {best:.1f} after {r['env_steps_sampled']} steps, "
          f"{time.perf_counter() - start:.1f}s, policy lag {r['policy_lag_mean']:.2f} updates")
    return best, r["env_steps_sampled"]


@pytest.mark.learning
def test_appo_cartpole_learns():
    """Mean return >= 400 within 500k env steps (2 workers, process runtime)."""
    best, steps = _learn_until("appo", 400, 500_000, env="CartPole-v1", seed=0,
                               min_steps_per_iteration=10_000)
    assert best >= 400, f"best mean return {best:.1f} after {steps} steps"


# Pendulum settings: a shorter horizon, rewards scaled to ~[-1.6, 0], 4 passes of 128-row
# minibatches per 1024-row batch, and a short learner queue (one batch in flight per worker) to
# keep the policy lag to a few updates.
PENDULUM = dict(env="Pendulum-v1", seed=0, gamma=0.95, lr=5e-4, num_epochs=4,
                minibatch_size=128, train_batch_size=1024, entropy_coeff=0.0, reward_scale=0.1,
                vtrace_lambda=0.95, learner_queue_size=1, num_async=1,
                min_steps_per_iteration=20_000)


@pytest.mark.learning
def test_appo_pendulum_learns():
    """Continuous actions: mean return >= -600 within 1M env steps."""
    best, steps = _learn_until("appo", -600, 1_000_000, **PENDULUM)
    assert best >= -600, f"best mean return {best:.1f} after {steps} steps"
