"""PPO with the CNN learns MinAtar Breakout: seeded, a return threshold within a step budget,
against a random policy's return measured here."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("minatar")

import rldataflow  # noqa: E402
from rldataflow.envs import make_vector_env  # noqa: E402
from rldataflow.policies.models import CNN  # noqa: E402

ENV = "MinAtar/Breakout-v1"
STEP_BUDGET = 120_000
MARGIN = 1.5  # points above the random policy's mean return (which is about 0.4)


def _random_return(episodes: int = 300, seed: int = 123) -> float:
    venv = make_vector_env(ENV, num_envs=8, seed=seed)
    venv.reset()
    rng = np.random.default_rng(seed)
    returns: list[float] = []
    while len(returns) < episodes:
        venv.step(rng.integers(venv.single_action_space.n, size=8))
        returns += venv.pop_completed_episodes()[0]
    return float(np.mean(returns[:episodes]))


@pytest.mark.learning
def test_ppo_cnn_beats_random_on_minatar_breakout():
    random_return = _random_return()
    target = random_return + MARGIN
    # ~30 s on a free 2-core machine (the return passes the target near 50k steps)
    with rldataflow.build("ppo", env=ENV, num_workers=2, num_envs_per_worker=8,
                          rollout_fragment_length=64, train_batch_size=1024, minibatch_size=256,
                          num_epochs=4, lr=1e-3, gamma=0.99, lambda_=0.95, entropy_coeff=0.01,
                          vf_share_layers=True, seed=0) as algo:
        model = algo.workers.local_worker().get_policy().model
        assert any(isinstance(m, CNN) for m in model.modules())
        best = -np.inf
        while True:
            result = algo.train()
            if result["episode_return_mean"] is not None:
                best = max(best, result["episode_return_mean"])
            if best >= target or result["env_steps_sampled"] >= STEP_BUDGET:
                break
    assert best >= target, (
        f"PPO reached {best:.2f} in {result['env_steps_sampled']} steps; random policy "
        f"{random_return:.2f}, target {target:.2f}")
