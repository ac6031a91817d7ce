"""Reference tier: the losses of PG, A2C/A3C and PPO against hand-computed numbers.

Two kinds of reference:

* a tiny fixed model (``hiddens=()``: the policy and value heads are single linear layers whose
  weights we set), where every number below was worked out by hand from the formulas in the
  papers (Williams 1992; Mnih et al. 2016; Schulman et al. 2017);
* the default MLPs with random data, where the reference is recomputed with plain numpy from the
  model's raw outputs, independently of the loss and distribution code.
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.algorithms import a2c, a3c, pg, ppo
from rldataflow.data import SampleBatch as SB

LN2, LN3, LN4 = math.log(2.0), math.log(3.0), math.log(4.0)
OBS_SPACE = gymnasium.spaces.Box(-10.0, 10.0, (2,), np.float32)
DISCRETE = gymnasium.spaces.Discrete(2)
BOX = gymnasium.spaces.Box(-2.0, 2.0, (1,), np.float32)


def _policy(module, action_space=DISCRETE, **fields):
    config = module.Config(**fields)
    return module.policy_factory(config)(OBS_SPACE, action_space)


def _fix_discrete_model(policy):
    """logits = [0, ln 3] for every obs (p = [1/4, 3/4]); V(obs) = obs[0]."""
    model = policy.model
    with torch.no_grad():
        model.pi_head.weight.zero_()
        model.pi_head.bias.copy_(torch.tensor([0.0, LN3]))
        model.vf_head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        model.vf_head.bias.zero_()
    return policy


def _tensors(columns):
    return {k: torch.as_tensor(np.asarray(v)) for k, v in columns.items()}


# The hand-made batch: V = [1, 2], actions [0, 1], advantages [2, -1], targets [3, 0].
BATCH = {
    SB.OBS: np.array([[1.0, 0.0], [2.0, 0.0]], np.float32),
    SB.ACTIONS: np.array([0, 1]),
    SB.ADVANTAGES: np.array([2.0, -1.0], np.float32),
    SB.VALUE_TARGETS: np.array([3.0, 0.0], np.float32),
}
# log pi(0) = -ln 4, log pi(1) = ln(3/4)
# policy term: -mean(logp * A) = -((-ln4) * 2 + ln(3/4) * -1) / 2 = (2 ln4 + ln(3/4)) / 2
PG_POLICY_LOSS = (2 * LN4 + math.log(0.75)) / 2  # 1.2424533
# value term: 0.5 * mean((1 - 3)^2, (2 - 0)^2) = 0.5 * 4 = 2
VF_LOSS = 2.0
# entropy of [1/4, 3/4]: -(1/4 ln 1/4 + 3/4 ln 3/4)
ENTROPY = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.5623351


def test_pg_loss_on_hand_computed_batch():
    policy = _fix_discrete_model(_policy(pg, hiddens=(), vf_loss_coeff=0.5, entropy_coeff=0.0))
    loss, stats = pg.pg_loss(policy, _tensors(BATCH))
    assert stats["policy_loss"].item() == pytest.approx(PG_POLICY_LOSS, rel=1e-6)
    assert stats["vf_loss"].item() == pytest.approx(VF_LOSS, rel=1e-6)
    assert stats["entropy"].item() == pytest.approx(ENTROPY, rel=1e-6)
    assert loss.item() == pytest.approx(PG_POLICY_LOSS + 0.5 * VF_LOSS, rel=1e-6)  # 2.2424533


def test_pg_gradient_is_the_score_function_estimate():
    # d/dlogits of -mean(A * log softmax(logits)[a]) = -mean(A * (onehot(a) - p)):
    # row 0: 2 * ([1, 0] - [.25, .75]) = [1.5, -1.5]; row 1: -1 * ([0, 1] - [.25, .75]) =
    # [.25, -.25]; mean [0.875, -0.875], negated [-0.875, 0.875]. The value term does not touch
    # the policy head.
    policy = _fix_discrete_model(_policy(pg, hiddens=(), vf_loss_coeff=0.5))
    loss, _ = pg.pg_loss(policy, _tensors(BATCH))
    loss.backward()
    np.testing.assert_allclose(policy.model.pi_head.bias.grad.numpy(), [-0.875, 0.875],
                               rtol=1e-6)
    # value head: d/dV of 0.5 * 0.5 * mean((V - G)^2) = 0.5 * (V - G) / 2 = [-0.5, 0.5];
    # dV/dw0 = obs[0] = [1, 2] -> -0.5 * 1 + 0.5 * 2 = 0.5
    assert policy.model.vf_head.weight.grad[0, 0].item() == pytest.approx(0.5, rel=1e-6)


def test_pg_without_critic_has_no_value_term():
    policy = _fix_discrete_model(_policy(pg, hiddens=(), use_critic=False))
    loss, stats = pg.pg_loss(policy, _tensors(BATCH))
    assert "vf_loss" not in stats
    assert loss.item() == pytest.approx(PG_POLICY_LOSS, rel=1e-6)


@pytest.mark.parametrize("module", [a2c, a3c], ids=["a2c", "a3c"])
def test_a2c_a3c_loss_on_hand_computed_batch(module):
    policy = _fix_discrete_model(_policy(module, hiddens=(), vf_loss_coeff=0.5,
                                         entropy_coeff=0.01))
    loss, stats = policy.loss_fn(policy, _tensors(BATCH))
    assert policy.loss_fn is a2c.a2c_loss
    assert stats["policy_loss"].item() == pytest.approx(PG_POLICY_LOSS, rel=1e-6)
    assert stats["vf_loss"].item() == pytest.approx(VF_LOSS, rel=1e-6)
    assert stats["entropy"].item() == pytest.approx(ENTROPY, rel=1e-6)
    # 1.2424533 + 0.5 * 2 - 0.01 * 0.5623351 = 2.2368300
    assert loss.item() == pytest.approx(PG_POLICY_LOSS + 0.5 * VF_LOSS - 0.01 * ENTROPY,
                                        rel=1e-6)


# PPO: the old policy was uniform (logits [0, 0]: logp_old = -ln 2 for both actions).
PPO_BATCH = dict(BATCH, **{
    SB.ACTION_LOGP: np.array([-LN2, -LN2], np.float32),
    SB.ACTION_DIST_INPUTS: np.zeros((2, 2), np.float32),
    SB.VF_PREDS: np.array([0.0, 3.0], np.float32),
})
# ratios: (1/4) / (1/2) = 0.5 and (3/4) / (1/2) = 1.5; with clip 0.2 the clipped ones are
# 0.8 and 1.2. Surrogates: row 0 min(0.5 * 2, 0.8 * 2) = 1; row 1 min(1.5 * -1, 1.2 * -1) = -1.5
PPO_POLICY_LOSS = -(1.0 - 1.5) / 2  # 0.25
# KL(old || new) = 1/2 ln((1/2) / (1/4)) + 1/2 ln((1/2) / (3/4)) = 1/2 ln(4/3)
PPO_KL = 0.5 * math.log(4.0 / 3.0)  # 0.1438410


def test_ppo_loss_on_hand_computed_batch_without_value_clipping():
    policy = _fix_discrete_model(_policy(ppo, hiddens=(), clip_param=0.2, vf_loss_coeff=0.5,
                                         entropy_coeff=0.01, kl_coeff=0.2, vf_clip_param=None))
    loss, stats = ppo.ppo_loss(policy, _tensors(PPO_BATCH))
    assert stats["policy_loss"].item() == pytest.approx(PPO_POLICY_LOSS, rel=1e-6)
    assert stats["kl"].item() == pytest.approx(PPO_KL, rel=1e-6)
    assert stats["entropy"].item() == pytest.approx(ENTROPY, rel=1e-6)
    assert stats["vf_loss"].item() == pytest.approx(VF_LOSS, rel=1e-6)
    assert stats["clip_fraction"].item() == 1.0  # |0.5 - 1| and |1.5 - 1| both exceed 0.2
    expected = PPO_POLICY_LOSS + 0.5 * VF_LOSS - 0.01 * ENTROPY + 0.2 * PPO_KL
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ppo_value_clipping_on_hand_computed_batch():
    # old values [0, 3], new [1, 2]: moves of +1 / -1 clipped to +-0.5 give [0.5, 2.5];
    # clipped errors (0.5 - 3)^2 = (2.5 - 0)^2 = 6.25 beat the unclipped 4 and 4, so
    # vf_loss = 0.5 * 6.25
    policy = _fix_discrete_model(_policy(ppo, hiddens=(), vf_clip_param=0.5, kl_coeff=0.0,
                                         entropy_coeff=0.0, vf_loss_coeff=1.0))
    loss, stats = ppo.ppo_loss(policy, _tensors(PPO_BATCH))
    assert stats["vf_loss"].item() == pytest.approx(3.125, rel=1e-6)
    assert loss.item() == pytest.approx(PPO_POLICY_LOSS + 3.125, rel=1e-6)


def test_ppo_ratio_is_one_on_fresh_samples():
    # on data just sampled by the same weights the ratio is 1, so the surrogate is mean(A)
    policy = _policy(ppo, hiddens=(8,), kl_coeff=0.0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(16, 2)).astype(np.float32)
    actions, extras = policy.compute_actions(obs)
    adv = rng.normal(size=16).astype(np.float32)
    batch = {SB.OBS: obs, SB.ACTIONS: actions, SB.ADVANTAGES: adv,
             SB.VALUE_TARGETS: np.zeros(16, np.float32), **extras}
    _, stats = ppo.ppo_loss(policy, _tensors(batch))
    assert stats["policy_loss"].item() == pytest.approx(-adv.mean(), abs=1e-6)
    assert stats["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert stats["clip_fraction"].item() == 0.0


def test_ppo_gaussian_loss_on_hand_computed_numbers():
    # new policy N(0.5, 2^2) (mean from the head's bias, free log_std = ln 2); old N(0, 1)
    policy = _policy(ppo, action_space=BOX, hiddens=(), clip_param=0.2, vf_loss_coeff=0.0,
                     entropy_coeff=0.0, kl_coeff=1.0)
    with torch.no_grad():
        policy.model.pi_head.weight.zero_()
        policy.model.pi_head.bias.fill_(0.5)
        policy.model.log_std.fill_(LN2)
    actions = np.array([[0.5], [2.5]], np.float32)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    # log N(a; 0.5, 2): a = 0.5 -> -ln 2 - 0.5 ln 2pi; a = 2.5 -> -0.5 - ln 2 - 0.5 ln 2pi
    logp_new = np.array([-LN2 - half_log_2pi, -0.5 - LN2 - half_log_2pi])
    # log N(a; 0, 1): -a^2 / 2 - 0.5 ln 2pi
    logp_old = np.array([-0.125 - half_log_2pi, -3.125 - half_log_2pi])
    ratio = np.exp(logp_new - logp_old)  # [exp(0.125 - ln2), exp(2.625 - ln 2)] = [0.567, 6.9]
    adv = np.array([1.0, 1.0])
    surrogate = np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)  # [0.567, 1.2]
    # KL(N(0,1) || N(0.5,4)) = ln 2 + (1 + 0.25) / (2 * 4) - 1/2
    kl = LN2 + 1.25 / 8 - 0.5
    batch = {
        SB.OBS: np.zeros((2, 2), np.float32), SB.ACTIONS: actions,
        SB.ADVANTAGES: adv.astype(np.float32),
        SB.VALUE_TARGETS: np.zeros(2, np.float32),
        SB.ACTION_LOGP: logp_old.astype(np.float32),
        SB.ACTION_DIST_INPUTS: np.zeros((2, 2), np.float32),  # [mean 0, log_std 0]
    }
    loss, stats = ppo.ppo_loss(policy, _tensors(batch))
    assert stats["policy_loss"].item() == pytest.approx(-surrogate.mean(), rel=1e-5)
    assert stats["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert stats["entropy"].item() == pytest.approx(LN2 + 0.5 * math.log(2 * math.pi * math.e),
                                                    rel=1e-6)
    assert loss.item() == pytest.approx(-surrogate.mean() + kl, rel=1e-5)


# ------------------------------------------------------------------------------------------
# default MLPs, random data: reference recomputed with numpy from the raw model outputs


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _random_batch(policy, n=32, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    batch = {
        SB.OBS: obs,
        SB.ACTIONS: rng.integers(0, 2, size=n),
        SB.ADVANTAGES: rng.normal(size=n).astype(np.float32),
        SB.VALUE_TARGETS: rng.normal(size=n).astype(np.float32),
        SB.ACTION_DIST_INPUTS: rng.normal(size=(n, 2)).astype(np.float32),
        SB.VF_PREDS: rng.normal(size=n).astype(np.float32),
    }
    old_logp = _log_softmax(batch[SB.ACTION_DIST_INPUTS].astype(np.float64))
    batch[SB.ACTION_LOGP] = old_logp[np.arange(n), batch[SB.ACTIONS]].astype(np.float32)
    with torch.no_grad():
        logits, values = policy.model(torch.as_tensor(obs))
    return batch, logits.numpy().astype(np.float64), values.numpy().astype(np.float64)


def _reference_terms(batch, logits):
    logp_all = _log_softmax(logits)
    idx = np.arange(len(logits))
    logp = logp_all[idx, batch[SB.ACTIONS]]
    entropy = -(np.exp(logp_all) * logp_all).sum(-1).mean()
    return logp_all, logp, entropy


@pytest.mark.parametrize("module", [pg, a2c, a3c], ids=["pg", "a2c", "a3c"])
def test_actor_critic_losses_match_numpy_reference(module):
    policy = _policy(module, vf_loss_coeff=0.7, entropy_coeff=0.05)
    batch, logits, values = _random_batch(policy)
    _, logp, entropy = _reference_terms(batch, logits)
    adv, targets = batch[SB.ADVANTAGES], batch[SB.VALUE_TARGETS]
    expected = (-(logp * adv).mean() + 0.7 * 0.5 * ((values - targets) ** 2).mean()
                - 0.05 * entropy)
    loss, _ = policy.loss_fn(policy, _tensors(batch))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("vf_clip", [None, 0.3])
def test_ppo_loss_matches_numpy_reference(vf_clip):
    policy = _policy(ppo, clip_param=0.3, vf_clip_param=vf_clip, vf_loss_coeff=0.7,
                     entropy_coeff=0.05, kl_coeff=0.4)
    batch, logits, values = _random_batch(policy, seed=1)
    logp_all, logp, entropy = _reference_terms(batch, logits)
    adv, targets = batch[SB.ADVANTAGES], batch[SB.VALUE_TARGETS]
    ratio = np.exp(logp - batch[SB.ACTION_LOGP])
    surrogate = np.minimum(ratio * adv, np.clip(ratio, 0.7, 1.3) * adv).mean()
    old_logp_all = _log_softmax(batch[SB.ACTION_DIST_INPUTS].astype(np.float64))
    kl = (np.exp(old_logp_all) * (old_logp_all - logp_all)).sum(-1).mean()
    err = (values - targets) ** 2
    if vf_clip is not None:
        old = batch[SB.VF_PREDS]
        err = np.maximum(err, (old + np.clip(values - old, -vf_clip, vf_clip) - targets) ** 2)
    expected = -surrogate + 0.7 * 0.5 * err.mean() - 0.05 * entropy + 0.4 * kl
    loss, stats = ppo.ppo_loss(policy, _tensors(batch))
    assert stats["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------
# advantages: each algorithm's postprocessing, on a hand-made 3-step episode


def _episode(terminated_at_end=True):
    return SB({
        SB.OBS: np.zeros((3, 2), np.float32),
        SB.ACTIONS: np.zeros(3, np.int64),
        SB.REWARDS: np.array([1.0, 1.0, 1.0], np.float32),
        SB.TERMINATEDS: np.array([False, False, terminated_at_end]),
        SB.TRUNCATEDS: np.array([False, False, not terminated_at_end]),
        SB.VF_PREDS: np.array([0.5, 0.25, 0.5], np.float32),
        SB.BOOTSTRAP_VALUE: np.array([0.0, 0.0, 4.0], np.float32),
    })


def test_pg_advantages_are_returns_minus_baseline():
    policy = _policy(pg, gamma=0.5)
    out = policy.postprocess_trajectory(_episode())
    # returns with gamma 1/2: G2 = 1, G1 = 1 + 1/2 = 1.5, G0 = 1 + 0.75 = 1.75
    np.testing.assert_allclose(out[SB.VALUE_TARGETS], [1.75, 1.5, 1.0])
    np.testing.assert_allclose(out[SB.ADVANTAGES], [1.25, 1.25, 0.5])
    # truncated instead: the tail bootstraps with V(final obs) = 4: G2 = 1 + 2 = 3,
    # G1 = 2.5, G0 = 2.25
    out = policy.postprocess_trajectory(_episode(terminated_at_end=False))
    np.testing.assert_allclose(out[SB.VALUE_TARGETS], [2.25, 2.5, 3.0])


def test_pg_without_critic_uses_plain_returns():
    policy = _policy(pg, gamma=0.5, use_critic=False)
    out = policy.postprocess_trajectory(_episode())
    np.testing.assert_allclose(out[SB.ADVANTAGES], [1.75, 1.5, 1.0])


@pytest.mark.parametrize("module", [a2c, a3c], ids=["a2c", "a3c"])
def test_a2c_a3c_advantages_are_gae(module):
    policy = _policy(module, gamma=0.5, lambda_=0.5)
    out = policy.postprocess_trajectory(_episode())
    # deltas: d0 = 1 + 0.5 * 0.25 - 0.5 = 0.625, d1 = 1 + 0.5 * 0.5 - 0.25 = 1.0,
    # d2 = 1 - 0.5 = 0.5 (terminated); A2 = 0.5, A1 = 1 + 0.25 * 0.5 = 1.125,
    # A0 = 0.625 + 0.25 * 1.125 = 0.90625
    np.testing.assert_allclose(out[SB.ADVANTAGES], [0.90625, 1.125, 0.5])
    np.testing.assert_allclose(out[SB.VALUE_TARGETS], [1.40625, 1.375, 1.0])
    # lambda = 1 (the default): n-step returns minus V, as in Mnih et al.
    policy = _policy(module, gamma=0.5)
    out = policy.postprocess_trajectory(_episode())
    np.testing.assert_allclose(out[SB.ADVANTAGES], [1.25, 1.25, 0.5])


# ------------------------------------------------------------------------------------------
# A2C's microbatch path: the average of the microbatch gradients is the full-batch gradient


def test_a2c_microbatches_take_the_same_step_as_one_full_batch():
    common = dict(env="CartPole-v1", runtime="inline", num_workers=2, num_envs_per_worker=2,
                  rollout_fragment_length=16, seed=5, train_batch_size=128,
                  min_steps_per_iteration=0, grad_clip=None)
    weights = []
    for micro in (None, 64):
        with rldataflow.build("a2c", **common, microbatch_size=micro) as algo:
            result = algo.train()
            assert result["env_steps_trained"] == 128
            weights.append(algo.workers.local_worker().get_weights())
    full, accumulated = weights
    for key in full:
        np.testing.assert_allclose(accumulated[key], full[key], rtol=1e-5, atol=1e-6)
