"""Composition: PPO and DQN sub-flows in one plan (the built-in ``composite`` algorithm and the
hand-written plan of ``examples/ppo_and_dqn.py``), config errors, checkpoints, the CLI, and the
seeded two-agent CartPole learning test."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import rldataflow  # noqa: E402
from rldataflow.algorithms.dqn import DQNPolicy  # noqa: E402
from rldataflow.cli import main as cli_main  # noqa: E402
from rldataflow.data import SampleBatch as SB  # noqa: E402
from rldataflow.trainer import Algorithm, make_config  # noqa: E402
from rldataflow.utils.config import ConfigError  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMALL = dict(runtime="inline", num_workers=0, num_envs_per_worker=2, rollout_fragment_length=16,
             min_steps_per_iteration=32, seed=0)
SMALL_POLICIES = {
    "ppo_policy": {"algorithm": "ppo", "train_batch_size": 64, "minibatch_size": 32,
                   "num_epochs": 1},
    "dqn_policy": {"algorithm": "dqn", "learning_starts": 32, "train_batch_size": 16},
}


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def train_until_both_trained(algo: Algorithm, limit: int = 40) -> dict:
    seen: set[str] = set()
    result: dict = {}
    for _ in range(limit):
        result = algo.train()
        seen |= set(result.get("learner", {}))
        if seen >= {"ppo_policy", "dqn_policy"}:
            return result
    raise AssertionError(f"not both policies trained in {limit} iterations: {seen}")


@pytest.mark.parametrize("policies, message", [
    ({}, "'policies' is empty"),
    ({"a": {"lr": 0.1}}, "'policies.a' needs an 'algorithm'"),
    ({"a": {"algorithm": "ppoo"}}, "did you mean 'ppo'"),
    ({"a": {"algorithm": "impala"}}, "no training sub-flow"),
    ({"a": {"algorithm": "ppo", "lrr": 0.1}}, "'lrr'.*did you mean 'lr'"),
    ({"a": {"algorithm": "ppo", "rollout_fragment_length": 8}}, "rollouts are shared"),
    ({"a": {"algorithm": "dqn", "n_step": 0}}, "'n_step' must be >= 1"),
])
def test_config_errors_name_the_policy_and_key(policies, message):
    with pytest.raises(ConfigError, match=message):
        make_config("composite", policies=policies, policy_mapping_fn="by_agent")


def test_each_policy_gets_its_own_algorithms_defaults_and_seed():
    from rldataflow.algorithms.composite import branch_configs

    config = make_config("composite", seed=3, policies={
        "p": {"algorithm": "ppo"}, "q": {"algorithm": "dqn", "lr": 5e-4}})
    branches = branch_configs(config)
    (ppo_module, ppo_cfg), (dqn_module, dqn_cfg) = branches["p"], branches["q"]
    assert ppo_module.__name__.endswith(".ppo") and dqn_module.__name__.endswith(".dqn")
    assert ppo_cfg.lr == make_config("ppo").lr
    assert ppo_cfg.num_epochs == make_config("ppo").num_epochs
    assert dqn_cfg.lr == 5e-4 and dqn_cfg.n_step == make_config("dqn").n_step
    # shared rollout settings come from the top level, seeds differ per policy
    assert ppo_cfg.rollout_fragment_length == dqn_cfg.rollout_fragment_length == 32
    assert ppo_cfg.seed == 3 and dqn_cfg.seed != 3


def test_builtin_composite_trains_ppo_and_dqn_policies():
    with rldataflow.build("composite", policies=SMALL_POLICIES, **SMALL) as algo:
        local = algo.workers.local_worker()
        assert isinstance(local.get_policy("dqn_policy"), DQNPolicy)
        assert not isinstance(local.get_policy("ppo_policy"), DQNPolicy)
        batch = local.sample()
        assert SB.NEXT_OBS in batch.policy_batches["dqn_policy"]  # DQN's worker option
        assert SB.ADVANTAGES in batch.policy_batches["ppo_policy"]  # PPO's postprocessing
        before = {pid: local.get_policy(pid).get_weights() for pid in local.policy_ids()}
        result = train_until_both_trained(algo)
        assert set(result["policy_return_mean"]) == {"ppo_policy", "dqn_policy"}
        for pid, old in before.items():
            new = local.get_policy(pid).get_weights()
            assert any(not np.array_equal(old[k], new[k]) for k in old), f"{pid} did not learn"


def test_example_plan_is_the_two_sub_flows_and_trains(tmp_path):
    example = load_example("ppo_and_dqn")
    with example.build(policies=SMALL_POLICIES, **SMALL) as algo:
        text = algo.plan.describe()
        # the plan's branches are PPO's and DQN's own sub-flows, not copies
        assert "ppo.py" in text and "dqn.py" in text and "duplicate(2)" in text
        assert "SelectExperiences(['ppo_policy'])" in text
        assert "SelectExperiences(['dqn_policy'])" in text
        train_until_both_trained(algo)
        weights = algo.workers.local_worker().get_policy("dqn_policy").get_weights()
        algo.save(tmp_path / "ckpt")
    restored = Algorithm.restore(tmp_path / "ckpt", plan=example.ppo_and_dqn_plan)
    with restored:
        again = restored.workers.local_worker().get_policy("dqn_policy").get_weights()
        assert all(np.array_equal(weights[k], again[k]) for k in weights)
        restored.train()


def test_cli_trains_from_the_example_yaml(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(["train", "--config", str(EXAMPLES / "ppo_and_dqn.yaml"), "--runtime",
                     "inline", "--num-workers", "0", "--stop-iters", "1", "--quiet",
                     "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "progress.csv").exists()
    code = cli_main(["train", "ppo", "--config", str(EXAMPLES / "ppo_and_dqn.yaml")])
    assert code == 2
    assert "config for 'composite'" in capsys.readouterr().err


@pytest.mark.learning
def test_ppo_and_dqn_policies_both_learn_two_agent_cartpole():
    """Both policies reach a mean return >= 300 within 400k env steps (counted per env).

    On process actors, where the plan's async Concurrently interleaves the branches by timing.
    The plan's ``duplicate`` lets a branch run at most ``MAX_LEAD_ROUNDS`` rounds ahead: with
    the default 16 the PPO branch ran 16 rounds ahead, DQN learned from 16-round-old data and
    in some interleavings its Q values diverged (return ~10-19 at 400k steps, PPO at 500).
    """
    start = time.perf_counter()
    example = load_example("ppo_and_dqn")
    with example.build(runtime="process", num_workers=2, seed=0) as algo:
        while True:
            result = algo.train()
            means = result["policy_return_mean"]
            if len(means) == 2 and min(means.values()) >= 300:
                break
            assert result["env_steps_sampled"] < 400_000, f"not solved in 400k steps: {means}"
    print(f"\nsolved: {result['env_steps_sampled']} env steps, "
          f"{time.perf_counter() - start:.1f} s, policy returns {means}")


def test_league_example_snapshots_main_into_frozen_slots():
    pytest.importorskip("pygame")  # PettingZoo's classic envs import it for rendering
    example = load_example("league_self_play")
    with example.build(runtime="inline", num_workers=0) as algo:
        local = algo.workers.local_worker()
        initial = {pid: local.get_policy(pid).get_weights() for pid in example.LEAGUE}
        trained: set[str] = set()
        while algo.metrics.counters["league_snapshots"] < 2:
            trained |= set(algo.train().get("learner", {}))
        assert trained == {example.LEARNER}  # the league slots are frozen
        # two snapshots went to past_0 and past_1 (oldest slot first); past_2 is untouched
        for pid in ("past_0", "past_1"):
            now = local.get_policy(pid).get_weights()
            assert not all(np.array_equal(now[k], initial[pid][k]) for k in now), pid
        untouched = local.get_policy("past_2").get_weights()
        assert all(np.array_equal(untouched[k], initial["past_2"][k]) for k in untouched)
        assert algo.metrics.info["league_last_slot"] == "past_1"


def test_snapshot_copies_the_learners_current_weights():
    example = load_example("league_self_play")
    pytest.importorskip("pygame")
    with example.build(runtime="inline", num_workers=0) as algo:
        from rldataflow.flow import from_local_iterable

        snap = example.SnapshotToLeague(algo.workers, "main", ["past_2"], every=2)
        list(from_local_iterable([1, 2, 3]).for_each(snap))  # the 2nd item takes a snapshot
        local = algo.workers.local_worker()
        main, past = (local.get_policy(p).get_weights() for p in ("main", "past_2"))
        assert all(np.array_equal(main[k], past[k]) for k in main)
