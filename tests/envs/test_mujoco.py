"""MuJoCo (the ``mujoco`` extra, part of ``test``): SAC on HalfCheetah-v5 through the Python API
and the command line (smoke tests, a few hundred env steps), a missing MuJoCo as one line naming
the extra, and SAC driving an env with asymmetric action bounds ([0, 4])."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np

import rldataflow

SMOKE = dict(learning_starts=100, train_batch_size=64, min_steps_per_iteration=300)


def test_sac_on_halfcheetah_through_build():
    with rldataflow.build("sac", env="HalfCheetah-v5", runtime="inline", seed=0,
                          **SMOKE) as algo:
        r = algo.train()
        policy = algo.workers.local_worker().policy
        assert policy.action_dim == 6 and policy.observation_space.shape == (17,)
        assert policy.config["hiddens"] == (256, 256)  # the MuJoCo defaults
        assert r["env_steps_sampled"] >= 300 and r["env_steps_trained"] > 0
        assert np.isfinite(r["learner"]["critic_loss"])


def test_sac_on_halfcheetah_through_the_cli(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rldataflow", "train", "sac", "--env", "HalfCheetah-v5",
         "--runtime", "inline", "--stop-steps", "300", "--quiet", "--out", str(tmp_path / "run"),
         *[a for k, v in SMOKE.items() for a in ("--set", f"{k}={v}")]],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert any(p.name.startswith("checkpoint_") for p in (tmp_path / "run").iterdir())


def test_missing_mujoco_is_one_line_naming_the_extra():
    code = ("import sys; sys.modules['mujoco'] = None\n"  # as if MuJoCo were not installed
            "from rldataflow.cli import main\n"
            "sys.exit(main(['train', 'sac', '--env', 'HalfCheetah-v5', '--stop-iters', '1']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert 'pip install "rldataflow[mujoco]"' in lines[0] and "HalfCheetah-v5" in lines[0]


class ShiftedBandit(gymnasium.Env):
    """One-step episodes, actions in [0, 4], reward -(a - 3.5)^2: the best action is near the
    top of an asymmetric range; records every action the env receives."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Box(0.0, 4.0, (1,), np.float32)
    received: list[float] = []

    def __init__(self, env_config=None):
        pass

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        a = float(np.asarray(action).reshape(-1)[0])
        ShiftedBandit.received.append(a)
        return np.zeros(2, np.float32), -(a - 3.5) ** 2, True, False, {}


def test_sac_rescales_actions_to_asymmetric_bounds():
    ShiftedBandit.received = []
    with rldataflow.build("sac", env=ShiftedBandit, runtime="inline", seed=0,
                          hiddens=(32, 32), actor_lr=3e-3, critic_lr=3e-3, alpha_lr=3e-3,
                          learning_starts=200, train_batch_size=64, training_intensity=16,
                          min_steps_per_iteration=500) as algo:
        for _ in range(4):
            algo.train()
        greedy, _ = algo.workers.local_worker().policy.compute_actions(
            np.zeros((1, 2), np.float32), explore=False)
    received = np.asarray(ShiftedBandit.received)
    assert received.min() >= 0.0 and received.max() <= 4.0
    first = received[:200]  # the uniform start-up phase covers the whole Box
    assert first.min() < 0.5 and first.max() > 3.5
    assert abs(float(greedy[0, 0]) - 3.5) < 0.3, greedy
