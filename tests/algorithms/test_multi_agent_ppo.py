"""Multi-agent PPO: shared and independent policies, per-policy config, checkpoints,
a PettingZoo env end to end, and the seeded two-agent CartPole learning test."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's import banner

import rldataflow  # noqa: E402
from rldataflow.policies.policy_spec import UnknownPolicyError, policy_config  # noqa: E402
from rldataflow.trainer import Algorithm, make_config  # noqa: E402
from rldataflow.utils.config import ConfigError, parse_set_args  # noqa: E402
from rldataflow.workers import MultiAgentRolloutWorker  # noqa: E402

MA = dict(env="rldataflow/MultiAgentCartPole-v0", env_config={"num_agents": 2})
SMALL = dict(runtime="inline", num_workers=0, num_envs_per_worker=2, rollout_fragment_length=32,
             train_batch_size=128, minibatch_size=64, num_epochs=1, seed=0)


def trained_until_both(algo: Algorithm, pids: list[str]) -> dict:
    """Train until every policy took a step; the last result."""
    seen: set[str] = set()
    result: dict = {}
    for _ in range(20):
        result = algo.train()
        seen |= set(result["learner"])
        if seen >= set(pids):
            return result
    raise AssertionError(f"not all policies trained: {seen}")


def test_parameter_sharing_one_policy_for_all_agents():
    with rldataflow.build("ppo", **MA, **SMALL, policies={"shared": {}},
                          policy_mapping_fn="shared") as algo:
        local = algo.workers.local_worker()
        assert isinstance(local, MultiAgentRolloutWorker)
        assert local.policy_ids() == ["shared"] and list(local.get_weights()) == ["shared"]
        result = trained_until_both(algo, ["shared"])
        assert set(result["learner"]) == {"shared"}
        assert set(result["policy_return_mean"]) == {"shared"}
        # both agents' steps train the one policy: 2 agent steps per env step (while alive)
        assert result["env_steps_trained"] > result["env_steps_sampled"]


def test_independent_policies_with_overrides():
    pols = {"p0": {}, "p1": {"lr": 1e-4, "hiddens": [32]}}
    with rldataflow.build("ppo", **MA, **SMALL, policies=pols,
                          policy_mapping_fn="by_agent") as algo:
        local = algo.workers.local_worker()
        assert local.policy_ids() == ["p0", "p1"]
        p0, p1 = local.get_policy("p0"), local.get_policy("p1")
        assert p0.optimizer is not p1.optimizer
        assert p0.optimizer.param_groups[0]["lr"] == algo.config.lr
        assert p1.optimizer.param_groups[0]["lr"] == 1e-4
        n0 = sum(x.numel() for x in p0.model.parameters())
        n1 = sum(x.numel() for x in p1.model.parameters())
        assert n1 < n0  # p1's override of hiddens took effect
        result = trained_until_both(algo, ["p0", "p1"])
        assert set(result["policy_return_mean"]) == {"p0", "p1"}
        assert all(np.isfinite(v) for v in result["policy_return_mean"].values())
        assert local.weights_version["p0"] > 0 and local.weights_version["p1"] > 0
        assert "Concurrently" in algo.plan.describe()
        assert algo.plan.describe().count("TrainOneStep") == 2


def test_config_errors():
    with pytest.raises(ConfigError, match="'shared'.*exactly one policy"):
        make_config("ppo", policies={"a": {}, "b": {}})
    with pytest.raises(ConfigError, match="policies.a.*did you mean 'lr'"):
        make_config("ppo", policies={"a": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match="policy_mapping_fn.*needs `policies`"):
        make_config("ppo", policy_mapping_fn="by_agent")
    cfg = make_config("ppo", policies={"a": {}, "b": {"lr": "1e-4"}}, policy_mapping_fn="by_agent",
                      from_cli=True)  # YAML / --set values
    assert policy_config(cfg, "b").lr == 1e-4 and policy_config(cfg, "a").lr == cfg.lr
    assert policy_config(cfg, "a").seed != policy_config(cfg, "b").seed
    with pytest.raises(UnknownPolicyError, match="agent 'agent_0' to unknown policy id 'x'"):
        rldataflow.build("ppo", **MA, **SMALL, policies={"p0": {}},
                         policy_mapping_fn=lambda agent: "x")


def test_checkpoint_saves_and_restores_all_policies(tmp_path):
    pols = {"p0": {}, "p1": {}}
    with rldataflow.build("ppo", **MA, **SMALL, policies=pols, policy_mapping_fn="by_agent",
                          kl_coeff=0.2) as algo:
        trained_until_both(algo, ["p0", "p1"])
        local = algo.workers.local_worker()
        local.get_policy("p1").kl_coeff = 0.7
        returns = algo.train()["policy_return_mean"]
        weights, versions = local.get_weights(), local.weights_version
        kl, kl0 = local.get_policy("p1").kl_coeff, local.get_policy("p0").kl_coeff
        assert kl != kl0
        algo.save(tmp_path / "ckpt")
    restored = Algorithm.restore(tmp_path / "ckpt")
    try:
        local = restored.workers.local_worker()
        assert local.weights_version == versions
        for pid in ("p0", "p1"):
            for k, v in weights[pid].items():
                np.testing.assert_array_equal(local.get_weights()[pid][k], v)
        assert local.get_policy("p1").kl_coeff == pytest.approx(kl)
        assert local.get_policy("p0").kl_coeff == pytest.approx(kl0)
        assert restored.metrics.window("policy_episode_return/p0")
        result = restored.train()
        assert set(result["policy_return_mean"]) == set(returns)
    finally:
        restored.stop()


def test_mapping_callable_must_be_given_again_on_restore(tmp_path):
    def mapping(agent):
        return "p0" if agent == "agent_0" else "p1"

    with rldataflow.build("ppo", **MA, **SMALL, policies={"p0": {}, "p1": {}},
                          policy_mapping_fn=mapping) as algo:
        algo.train()
        algo.save(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="pass policy_mapping_fn= again"):
        Algorithm.restore(tmp_path / "ckpt")
    Algorithm.restore(tmp_path / "ckpt", policy_mapping_fn=mapping).stop()


def test_pettingzoo_rps_trains_on_the_process_runtime():
    pytest.importorskip("pygame")  # PettingZoo's classic envs import it for rendering
    config = dict(env="classic/rps-v2", env_config={"max_cycles": 20}, runtime="process",
                  num_workers=2, num_envs_per_worker=4, rollout_fragment_length=20,
                  train_batch_size=160, minibatch_size=80, num_epochs=2, seed=0,
                  policies={"player_0": {}, "player_1": {}}, policy_mapping_fn="by_agent")
    with rldataflow.build("ppo", **config) as algo:
        results = [algo.train() for _ in range(4)]
        assert results[-1]["env_steps_sampled"] >= 2 * 4 * 20 * 2
        assert {"player_0", "player_1"} <= set().union(*(r["learner"] for r in results))
        means = results[-1]["policy_return_mean"]
        assert set(means) == {"player_0", "player_1"}
        # rock-paper-scissors is zero-sum: the players' returns cancel
        assert means["player_0"] == pytest.approx(-means["player_1"])
        assert results[-1]["episode_return_mean"] == pytest.approx(0.0)
        assert results[-1]["episode_len_mean"] == 20
        ev = algo.evaluate(2)
        assert ev["evaluation/num_episodes"] == 2


def test_aec_env_through_the_converter():
    pytest.importorskip("pygame")
    from pettingzoo.classic.rps import rps

    with rldataflow.build("ppo", env=lambda cfg: rps.env(max_cycles=10), **SMALL,
                          policies={"shared": {}}) as algo:
        result = algo.train()
        assert result["episode_len_mean"] == 10 and "shared" in result["learner"]


@pytest.mark.learning
def test_two_agent_cartpole_independent_ppo_learns():
    """Both independent PPO policies reach a mean return >= 300 within 400k env steps."""
    start = time.perf_counter()
    with rldataflow.build("ppo", **MA, runtime="inline", num_workers=0, seed=0,
                          policies={"p0": {}, "p1": {}}, policy_mapping_fn="by_agent") as algo:
        result: dict = {}
        while True:
            result = algo.train()
            means = result.get("policy_return_mean", {})
            if len(means) == 2 and min(means.values()) >= 300:
                break
            assert result["env_steps_sampled"] < 400_000, (
                f"not solved in 400k env steps: {means}")
    print(f"\nsolved: {result['env_steps_sampled']} env steps, "
          f"{time.perf_counter() - start:.1f} s, policy returns {means}")


def test_every_result_of_concurrent_policy_branches_reports_sampling():
    """The async branches each emit a train step; a result is reported only once new env
    steps were sampled, so throughput is never 0 (it alternated with 0 before)."""
    with rldataflow.build("ppo", **MA, **SMALL, policies=["p0", "p1"],
                          policy_mapping_fn="by_agent") as algo:
        results = [algo.train() for _ in range(6)]
    assert all(r["env_steps_this_iter"] > 0 and r["throughput"] > 0 for r in results), [
        (r["env_steps_this_iter"], r["throughput"]) for r in results]
    assert sum(r["train_steps_this_iter"] for r in results) > len(results)


def test_policies_list_is_short_for_empty_overrides():
    cfg = make_config("ppo", policies=["p0", "p1"], policy_mapping_fn="by_agent")
    assert cfg.policies == {"p0": {}, "p1": {}}
    cfg = make_config("ppo", parse_set_args(["policies=[a, b]", "policy_mapping_fn=by_agent"]),
                      from_cli=True)
    assert cfg.policies == {"a": {}, "b": {}}
    with pytest.raises(ConfigError, match="'policies' names policy 'a' twice"):
        make_config("ppo", policies=["a", "a"], policy_mapping_fn="by_agent")
    with pytest.raises(ConfigError, match="'policies'.*must hold strings"):
        make_config("ppo", policies=["a", 1], policy_mapping_fn="by_agent")
