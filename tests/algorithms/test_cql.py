"""CQL: the penalties and the Lagrange loss against hand-computed numbers, the losses built on
SAC's and DQN's, configs and a short offline run of each variant (inline)."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.algorithms import dqn, sac
from rldataflow.algorithms.cql import (
    CQLDQNPolicy,
    CQLPolicy,
    continuous_cql_penalty,
    cql_dqn_loss,
    cql_sac_loss,
    discrete_cql_penalty,
    lagrange_terms,
)
from rldataflow.data import SampleBatch as SB
from rldataflow.data.dataset import DatasetError
from rldataflow.trainer import Algorithm
from rldataflow.utils.config import ConfigError

pytest.importorskip("pyarrow")

INLINE = dict(runtime="inline", num_workers=0, seed=0)


def test_discrete_penalty_matches_hand_computed_numbers():
    q = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    q_data = torch.tensor([1.0, 3.0])          # actions 0 and 1
    got = discrete_cql_penalty(q, q_data)
    # log(e^1 + e^2) - 1 = 1.31326..., log(1 + e^3) - 3 = 0.04859...
    assert got.tolist() == pytest.approx([1.3132617, 0.0485873], rel=1e-5)


def test_continuous_penalty_matches_hand_computed_numbers():
    # one state, one uniform action (Q 0, density 1/2 on [-1, 1]) and one policy action
    # (Q 1, log pi 0.5), Q(s, a_data) = 0.2:
    #   log(1/2 * (e^0 / (1/2) + e^1 / e^0.5)) - 0.2 = log((2 + e^0.5) / 2) - 0.2
    got = continuous_cql_penalty(torch.tensor([[0.0]]), torch.tensor([[1.0]]),
                                 torch.tensor([[0.5]]), torch.tensor([0.2]), action_dim=1)
    assert float(got[0]) == pytest.approx(math.log((2 + math.exp(0.5)) / 2) - 0.2, rel=1e-6)
    assert float(got[0]) == pytest.approx(0.40123, rel=1e-4)
    # 2-D actions: the uniform density is 1/4; two samples of each kind
    got = continuous_cql_penalty(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.0]]),
                                 torch.tensor([[0.0, 0.0]]), torch.tensor([0.0]), action_dim=2)
    expected = math.log((4 * (1 + math.e) + 1 + 1) / 4)
    assert float(got[0]) == pytest.approx(expected, rel=1e-6)


def test_lagrange_terms_match_hand_computed_numbers():
    gaps = [torch.tensor(0.5, requires_grad=True), torch.tensor(1.0, requires_grad=True)]
    log_ap = torch.tensor(math.log(2.0), requires_grad=True)
    critic, alpha_loss, ap = lagrange_terms(gaps, log_ap, min_q_weight=1.0,
                                            target_action_gap=0.3)
    # slacks 0.2 and 0.7; alpha' = 2
    assert float(critic.detach()) == pytest.approx(2 * (0.2 + 0.7))
    assert float(alpha_loss.detach()) == pytest.approx(-2 * 0.45)
    assert float(ap) == pytest.approx(2.0)
    (critic + alpha_loss).backward()
    assert float(gaps[0].grad) == pytest.approx(2.0)     # alpha' is held in the critic term
    assert float(log_ap.grad) == pytest.approx(-0.9)     # d(-e^x * 0.45)/dx, the gap held


def box_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {SB.OBS: torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32)),
            SB.NEXT_OBS: torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32)),
            SB.ACTIONS: torch.from_numpy(rng.uniform(-2, 2, (n, 1)).astype(np.float32)),
            SB.REWARDS: torch.from_numpy(rng.normal(size=n).astype(np.float32)),
            SB.TERMINATEDS: torch.zeros(n, dtype=torch.bool)}


def cql_policy(**config) -> CQLPolicy:
    obs_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
    return CQLPolicy(obs_space, gymnasium.spaces.Box(-2, 2, (1,), np.float32),
                     {"hiddens": (16, 16), **config}, seed=0)


def test_cql_sac_loss_is_sac_loss_plus_the_weighted_penalty():
    batch = box_batch()
    losses = {}
    for weight in (0.0, 2.0):
        policy = cql_policy(min_q_weight=weight)
        policy.generator.manual_seed(1)
        losses[weight], stats = cql_sac_loss(policy, batch)
        policy.generator.manual_seed(1)
        reference, _ = sac.sac_loss(policy, batch)
        assert float(losses[weight]["actor"]) == pytest.approx(float(reference["actor"]))
        # the penalty: twice the mean gap of the two critics, times the weight
        assert float(losses[weight]["critic"]) == pytest.approx(
            float(reference["critic"]) + weight * 2 * float(stats["cql_gap"]), rel=1e-5)
    assert "alpha_prime" not in losses[2.0]


def test_lagrangian_cql_learns_alpha_prime_towards_the_target_gap():
    batch = box_batch(64)
    # the gap of a fresh critic is ~log-sum-exp noise, far below a target of 100: alpha' falls
    policy = cql_policy(lagrangian=True, target_action_gap=100.0, alpha_prime_lr=0.1)
    before = float(policy.model.log_alpha_prime)
    stats = policy.learner.update(SB({k: v.numpy() for k, v in batch.items()}))
    assert "alpha_prime_loss" in stats and stats["alpha_prime"] == pytest.approx(1.0)
    assert float(policy.model.log_alpha_prime) < before
    # and rises when the target is far below the gap
    policy = cql_policy(lagrangian=True, target_action_gap=-100.0, alpha_prime_lr=0.1)
    policy.learner.update(SB({k: v.numpy() for k, v in batch.items()}))
    assert float(policy.model.log_alpha_prime) > before


def test_cql_dqn_loss_is_dqn_loss_plus_the_weighted_penalty():
    obs_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
    policy = CQLDQNPolicy(obs_space, gymnasium.spaces.Discrete(3),
                          {"hiddens": (16,), "min_q_weight": 0.5}, seed=0)
    rng = np.random.default_rng(0)
    batch = {SB.OBS: torch.from_numpy(rng.normal(size=(6, 3)).astype(np.float32)),
             SB.NEXT_OBS: torch.from_numpy(rng.normal(size=(6, 3)).astype(np.float32)),
             SB.ACTIONS: torch.tensor([0, 1, 2, 0, 1, 2]),
             SB.REWARDS: torch.ones(6), SB.TERMINATEDS: torch.zeros(6, dtype=torch.bool)}
    total, stats = cql_dqn_loss(policy, batch)
    reference, _ = dqn.dqn_loss(policy, batch)
    with torch.no_grad():
        q = policy.model(batch[SB.OBS]).numpy().astype(np.float64)
    a = batch[SB.ACTIONS].numpy()
    gap = np.mean(np.log(np.exp(q).sum(1)) - q[np.arange(6), a])
    assert float(stats["cql_gap"]) == pytest.approx(gap, rel=1e-5)
    assert float(total) == pytest.approx(float(reference) + 0.5 * gap, rel=1e-5)


# -- whole algorithms on tiny datasets ------------------------------------------------------------
@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cql")
    out = {}
    for name, env in (("sac", "Pendulum-v1"), ("dqn", "CartPole-v1")):
        with rldataflow.build(name, env=env, **INLINE) as algo:   # untrained: random-ish data
            algo.record(3, root / name)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name,data", [("cql", "sac"), ("cql_dqn", "dqn")])
def test_cql_trains_from_a_dataset_and_checkpoints(name, data, datasets, tmp_path):
    config = dict(input=str(datasets[data]), updates_per_iteration=3, train_batch_size=32,
                  evaluation_interval=1, evaluation_num_episodes=1, shuffle_buffer_size=100,
                  **INLINE)
    if name == "cql":
        config["lagrangian"] = True
    with rldataflow.build(name, **config) as algo:
        result = algo.train()
        assert result["env_steps_trained"] == 3 * 32
        assert result["env_steps_sampled"] == 0
        assert "cql_gap" in result["learner"]
        assert math.isfinite(result["evaluation/episode_return_mean"])
        path = algo.save(tmp_path / "ckpt")
        weights = algo.workers.local_worker().policy.model.state_dict()
    with Algorithm.restore(path) as restored:
        again = restored.workers.local_worker().policy.model.state_dict()
        for k, v in weights.items():
            assert torch.equal(v, again[k]), k
        restored.train()


def test_cql_bad_input_is_one_line(datasets, tmp_path):
    with pytest.raises(ConfigError, match="'input' is required"):
        rldataflow.build("cql", **INLINE)
    with pytest.raises(ConfigError, match="continuous"):
        rldataflow.build("cql", env="CartPole-v1", input=str(datasets["dqn"]), **INLINE)
    # a dataset without next_obs (e.g. written by `output` from PPO) names the missing column
    from rldataflow.data.dataset import DatasetReader, DatasetWriter
    rows = SB.concat_samples(list(DatasetReader(datasets["dqn"]).iter_batches()))
    rows = SB({k: v for k, v in rows.items() if k != SB.NEXT_OBS})
    writer = DatasetWriter(tmp_path / "no_next", "parquet", 1000, tag="t")
    writer.write(rows)
    writer.close()
    with pytest.raises(DatasetError, match="next_obs"):
        rldataflow.build("cql_dqn", input=str(tmp_path / "no_next"), **INLINE)


@pytest.mark.parametrize("fraction,weights", [(0.5, [1, 1]), (0.25, [3, 1])])
def test_mixed_input_trains_on_dataset_and_fresh_samples_in_proportion(datasets, fraction,
                                                                       weights):
    from rldataflow.ops.mixin_input import mixture_weights

    assert mixture_weights(fraction) == weights
    steps = 4 * sum(weights)
    with rldataflow.build("cql_dqn", input=str(datasets["dqn"]), updates_per_iteration=steps,
                          train_batch_size=64, rollout_fragment_length=32,
                          input_sampled_fraction=fraction, evaluation_interval=0,
                          shuffle_buffer_size=100, **INLINE) as algo:
        result = algo.train()
    # round robin: `weights` dataset batches, then fresh ones, of 64 rows each
    assert result["env_steps_trained"] == steps * 64
    assert result["env_steps_sampled"] == 4 * weights[1] * 64
    assert result["env_steps_sampled"] / result["env_steps_trained"] == fraction


def test_mixed_input_fraction_is_checked():
    from rldataflow.ops.mixin_input import mixture_weights

    with pytest.raises(ConfigError, match="input_sampled_fraction"):
        rldataflow.build("cql_dqn", input="x", input_sampled_fraction=1.0, **INLINE)
    with pytest.raises(ConfigError, match="rounds to 0"):
        mixture_weights(0.01)
