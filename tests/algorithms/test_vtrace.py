"""V-trace (Espeholt et al. 2018, eqs. 1-2): hand-computed reference values, the on-policy
special case (n-step returns), episode boundaries, and the learner's use of current values."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
import torch

from rldataflow.algorithms import impala
from rldataflow.algorithms.vtrace import next_values_from, trajectory_ends, vtrace
from rldataflow.data import SampleBatch as SB
from rldataflow.policies import compute_discounted_returns
from rldataflow.utils.config import build_config
from rldataflow.workers import RolloutWorker


def naive_vtrace(log_rhos, discounts, rewards, values, next_values, ends, rho_bar, c_bar,
                 pg_rho_bar):
    """Eq. 1 and the advantage of section 4.2 written literally, as sums of products."""
    n = len(rewards)
    rho = np.exp(log_rhos)
    crho, c, pg = np.minimum(rho_bar, rho), np.minimum(c_bar, rho), np.minimum(pg_rho_bar, rho)
    seg_end = [next(t for t in range(s, n) if ends[t]) for s in range(n)]

    def v_next(t):  # V(x_{t+1}): the next row inside a segment, else the bootstrap value
        return next_values[t] if ends[t] else values[t + 1]

    delta = [crho[t] * (rewards[t] + discounts[t] * v_next(t) - values[t]) for t in range(n)]
    vs = []
    for s in range(n):
        total, weight = values[s], 1.0
        for t in range(s, seg_end[s] + 1):
            total += weight * delta[t]
            weight *= discounts[t] * c[t]
        vs.append(total)
    adv = [pg[s] * (rewards[s] + discounts[s] * (next_values[s] if ends[s] else vs[s + 1])
                    - values[s]) for s in range(n)]
    return np.array(vs), np.array(adv)


# A 6-step fragment of one env: an episode that terminates (rows 0-1), one truncated by a time
# limit (rows 2-3, V(final obs) = 4), and one cut by the fragment end (rows 4-5, V(next) = 2).
GAMMA = 0.5
REWARDS = np.array([1.0, 3.0, 1.0, 0.0, 2.0, 1.0])
VALUES = np.array([1.0, 2.0, 0.0, 1.0, 2.0, 1.0])          # V(x_s), the learner's
TERMINATEDS = np.array([False, True, False, False, False, False])
TRUNCATEDS = np.array([False, False, False, True, False, False])
RHOS = np.array([2.0, 0.5, 1.0, 0.5, 1.5, 0.25])           # pi(a|x) / mu(a|x)
V_FINAL_OBS_ROW3 = 4.0
V_NEXT_OBS_ROW5 = 2.0
RHO_BAR, C_BAR = 1.0, 0.5
# By hand (rho = min(1, RHOS) = [1, .5, 1, .5, 1, .25], c = min(.5, RHOS) = [.5]*5 + [.25]):
#  row 1 (terminated, no bootstrap): delta1 = .5 * (3 - 2) = .5          v1 = 2 + .5 = 2.5
#  row 0: delta0 = 1 * (1 + .5*2 - 1) = 1;  v0 = 1 + 1 + .5*.5*(v1 - V1) = 2.125
#  row 3 (truncated, bootstrap V(final obs) = 4): delta3 = .5 * (0 + .5*4 - 1) = .5  v3 = 1.5
#  row 2: delta2 = 1 * (1 + .5*1 - 0) = 1.5;  v2 = 0 + 1.5 + .5*.5*(1.5 - 1) = 1.625
#  row 5 (fragment cut, bootstrap V(next obs) = 2): delta5 = .25 * (1 + .5*2 - 1) = .25  v5 = 1.25
#  row 4: delta4 = 1 * (2 + .5*1 - 2) = .5;  v4 = 2 + .5 + .5*.5*(1.25 - 1) = 2.5625
# advantages A_s = min(1, rho_s) * (r_s + gamma_s * v_{s+1} - V(x_s)), v_{s+1} = V at seg ends:
#  A0 = 1*(1 + .5*2.5 - 1) = 1.25   A1 = .5*(3 + 0 - 2) = .5
#  A2 = 1*(1 + .5*1.5 - 0) = 1.75   A3 = .5*(0 + .5*4 - 1) = .5
#  A4 = 1*(2 + .5*1.25 - 2) = .625  A5 = .25*(1 + .5*2 - 1) = .25
EXPECTED_VS = [2.125, 2.5, 1.625, 1.5, 2.5625, 1.25]
EXPECTED_ADV = [1.25, 0.5, 1.75, 0.5, 0.625, 0.25]


def _reference_inputs():
    ends = trajectory_ends({SB.TERMINATEDS: TERMINATEDS, SB.TRUNCATEDS: TRUNCATEDS})
    next_values = next_values_from(VALUES, ends, TERMINATEDS, np.array([3, 5]),
                                   np.array([V_FINAL_OBS_ROW3, V_NEXT_OBS_ROW5]))
    discounts = np.where(TERMINATEDS, 0.0, GAMMA)
    return np.log(RHOS), discounts, ends, next_values


def test_hand_computed_reference_with_termination_truncation_and_cut():
    log_rhos, discounts, ends, next_values = _reference_inputs()
    assert ends.tolist() == [False, True, False, True, False, True]
    assert next_values.tolist() == [2.0, 0.0, 1.0, 4.0, 1.0, 2.0]
    out = vtrace(log_rhos, discounts, REWARDS, VALUES, next_values, ends,
                 clip_rho_threshold=RHO_BAR, clip_c_threshold=C_BAR, clip_pg_rho_threshold=1.0)
    np.testing.assert_allclose(out.vs, EXPECTED_VS, rtol=1e-6)
    np.testing.assert_allclose(out.pg_advantages, EXPECTED_ADV, rtol=1e-6)
    np.testing.assert_allclose(out.clipped_rhos, [1, 0.5, 1, 0.5, 1, 0.25])
    # and the literal sums-of-products form agrees
    vs, adv = naive_vtrace(log_rhos, discounts, REWARDS, VALUES, next_values, ends,
                           RHO_BAR, C_BAR, 1.0)
    np.testing.assert_allclose(vs, EXPECTED_VS)
    np.testing.assert_allclose(adv, EXPECTED_ADV)


def test_truncation_is_not_termination():
    """Treating row 3's time limit as a termination would give v3 = 0.5, not 1.5."""
    log_rhos, discounts, ends, next_values = _reference_inputs()
    wrong = vtrace(log_rhos, discounts, REWARDS, VALUES, np.where(TRUNCATEDS, 0.0, next_values),
                   ends, clip_rho_threshold=RHO_BAR, clip_c_threshold=C_BAR)
    assert wrong.vs[3] == pytest.approx(0.5)
    right = vtrace(log_rhos, discounts, REWARDS, VALUES, next_values, ends,
                   clip_rho_threshold=RHO_BAR, clip_c_threshold=C_BAR)
    assert right.vs[3] == pytest.approx(1.5)


def test_no_clipping_and_lambda():
    log_rhos, discounts, ends, next_values = _reference_inputs()
    out = vtrace(log_rhos, discounts, REWARDS, VALUES, next_values, ends,
                 clip_rho_threshold=None, clip_c_threshold=None, clip_pg_rho_threshold=None)
    vs, adv = naive_vtrace(log_rhos, discounts, REWARDS, VALUES, next_values, ends,
                           math.inf, math.inf, math.inf)
    np.testing.assert_allclose(out.vs, vs, rtol=1e-6)
    np.testing.assert_allclose(out.pg_advantages, adv, rtol=1e-6)
    # lambda = 0 cuts every trace: one-step TD targets v_s = V + rho * delta
    zero = vtrace(log_rhos, discounts, REWARDS, VALUES, next_values, ends, trace_lambda=0.0)
    one_step = VALUES + np.minimum(1, RHOS) * (REWARDS + discounts * next_values - VALUES)
    np.testing.assert_allclose(zero.vs, one_step, rtol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_on_policy_equals_discounted_returns_bootstrapped_at_segment_ends(seed):
    """rho = c = 1 (pi = mu): v_s is the n-step return up to the segment end, bootstrapped
    there with V (lambda = 1 returns), and A_s = r_s + gamma v_{s+1} - V(x_s)."""
    rng = np.random.default_rng(seed)
    n = 40
    rewards = rng.normal(size=n)
    values = rng.normal(size=n)
    term = rng.random(n) < 0.1
    trunc = ~term & (rng.random(n) < 0.1)
    ends = trajectory_ends({SB.TERMINATEDS: term, SB.TRUNCATEDS: trunc})
    boot_rows = np.flatnonzero(ends & ~term)
    boot_vals = rng.normal(size=len(boot_rows))
    next_values = next_values_from(values, ends, term, boot_rows, boot_vals)
    gamma = 0.9
    out = vtrace(np.zeros(n), np.where(term, 0.0, gamma), rewards, values, next_values, ends)
    bootstrap = np.zeros(n)
    bootstrap[boot_rows] = boot_vals
    returns = compute_discounted_returns(rewards, term, trunc, bootstrap, gamma)
    np.testing.assert_allclose(out.vs, returns, rtol=1e-5, atol=1e-5)
    vs_next = np.where(ends, next_values, np.append(out.vs[1:], 0.0))
    np.testing.assert_allclose(out.pg_advantages,
                               rewards + np.where(term, 0, gamma) * vs_next - values,
                               rtol=1e-5, atol=1e-5)


def test_trajectory_ends_of_concatenated_fragments():
    # two fragments of env 0 of one episode, the second not following the first (t jumps),
    # then env 1, then a new episode id
    cols = {
        SB.TERMINATEDS: np.zeros(7, bool), SB.TRUNCATEDS: np.zeros(7, bool),
        SB.ENV_ID: np.array([0, 0, 0, 0, 1, 1, 1]),
        SB.EPS_ID: np.array([5, 5, 5, 5, 9, 9, 12]),
        SB.T: np.array([10, 11, 30, 31, 0, 1, 0]),
    }
    assert trajectory_ends(cols).tolist() == [False, True, False, True, False, True, True]


# ---------------------------------------------------------------------------------------------
# the learner: current values, V(final obs) at truncations, discrete and continuous log-rhos
# ---------------------------------------------------------------------------------------------
def _learner_and_batch(env: str, env_config: dict, **cfg):
    config = build_config(impala.Config, dict(env=env, env_config=env_config, num_workers=0,
                                              runtime="inline", learner_thread=False, seed=1,
                                              **cfg))
    worker = RolloutWorker(env, env_config, num_envs=3,
                           policy_factory=impala.policy_factory(config),
                           rollout_fragment_length=20, seed=1, include_next_obs=True)
    learner = impala.VTraceLearner(worker.policy, config)
    return worker, learner, worker.sample()


@pytest.mark.parametrize("env,env_config", [
    ("CartPole-v1", {"max_episode_steps": 7}),
    ("Pendulum-v1", {"max_episode_steps": 9}),
])
def test_learner_on_policy_targets_use_current_values_and_final_obs(env, env_config):
    """Same weights for sampling and learning: log rho = 0 for discrete and continuous actions,
    and v_s equals discounted returns bootstrapped with the learner's V(final obs) at
    truncations and V(next obs) at the fragment end."""
    worker, learner, batch = _learner_and_batch(env, env_config, gamma=0.9)
    assert batch[SB.TRUNCATEDS].any(), "the time limit should truncate some episodes"
    policy = worker.policy
    with torch.no_grad():
        dist_inputs, _ = policy.model(policy._obs_tensor(batch[SB.OBS]))
        logp = policy.action_dist(dist_inputs).logp(torch.from_numpy(batch[SB.ACTIONS]))
    np.testing.assert_allclose(logp.numpy(), batch[SB.ACTION_LOGP], atol=1e-5)
    prepared = learner.prepare(SB(batch))
    ends = trajectory_ends(batch)
    term = batch[SB.TERMINATEDS]
    bootstrap = np.where(ends & ~term, policy.value(batch[SB.NEXT_OBS]), 0.0)
    returns = compute_discounted_returns(batch[SB.REWARDS], term, batch[SB.TRUNCATEDS],
                                         bootstrap, 0.9, segment_ends=ends)
    np.testing.assert_allclose(prepared[SB.VALUE_TARGETS], returns, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(prepared[impala.CLIPPED_RHOS], 1.0, atol=1e-4)


def test_learner_recomputes_values_and_log_rhos_after_an_update():
    """After the learner has changed, its targets use its new values and off-policy weights
    (not the behaviour policy's vf_preds / bootstrap values)."""
    worker, learner, batch = _learner_and_batch("CartPole-v1", {"max_episode_steps": 7})
    learner.learn(SB(batch))
    policy = worker.policy
    assert policy.weights_version == learner.config.num_epochs  # one minibatch per pass
    prepared = learner.prepare(SB(batch))
    ends, term = trajectory_ends(batch), batch[SB.TERMINATEDS]
    with torch.no_grad():
        dist_inputs, values = policy.model(policy._obs_tensor(batch[SB.OBS]))
        logp = policy.action_dist(dist_inputs).logp(torch.from_numpy(batch[SB.ACTIONS]))
    boot_rows = np.flatnonzero(ends & ~term)
    next_values = next_values_from(values.numpy(), ends, term, boot_rows,
                                   policy.value(batch[SB.NEXT_OBS][boot_rows]))
    log_rhos = logp.numpy() - batch[SB.ACTION_LOGP]
    assert np.abs(log_rhos).max() > 1e-4  # really off-policy now
    expected = vtrace(log_rhos, np.where(term, 0.0, learner.config.gamma), batch[SB.REWARDS],
                      values.numpy(), next_values, ends)
    np.testing.assert_allclose(prepared[SB.VALUE_TARGETS], expected.vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prepared[SB.ADVANTAGES], expected.pg_advantages, rtol=1e-5,
                               atol=1e-5)



def test_box_log_rhos_for_a_gaussian_policy():
    """Continuous actions: log rho is the Gaussian log-density ratio of the stored action."""
    space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    config = build_config(impala.Config, dict(env="Pendulum-v1", num_workers=0,
                                              learner_thread=False))
    make = impala.policy_factory(config)
    policy = make(gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32), space)
    obs = np.zeros((1, 3), np.float32)
    actions, extras = policy.compute_actions(obs)
    with torch.no_grad():
        policy.model.log_std.add_(0.5)  # the learner's std grew by e^0.5
        dist_inputs, _ = policy.model(policy._obs_tensor(obs))
    mean = dist_inputs[0, :2].numpy()
    new_logp = sum(-0.5 * ((a - m) / math.exp(0.5)) ** 2 - 0.5 - 0.5 * math.log(2 * math.pi)
                   for a, m in zip(actions[0], mean, strict=True))
    with torch.no_grad():
        got = policy.action_dist(dist_inputs).logp(torch.from_numpy(actions))
    assert got.item() == pytest.approx(new_logp, rel=1e-5)
    assert got.item() - extras[SB.ACTION_LOGP][0] != pytest.approx(0.0)
