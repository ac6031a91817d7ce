"""Returns and advantages vs hand-computed numbers.

The fragment used throughout (5 steps of one env, time order):
  steps 0-1: episode A, TERMINATED at step 1        -> next value after step 1 is 0
  steps 2-3: episode B, TRUNCATED at step 3         -> bootstrap V(final_obs) = 10
  step  4  : episode C, cut by the fragment end     -> bootstrap V(next obs) = 4
"""

import numpy as np
import pytest

from rldataflow.data import SampleBatch
from rldataflow.policies import (
    compute_advantages,
    compute_discounted_returns,
    compute_gae,
    compute_nstep,
)

REWARDS = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
VF = np.array([0.5, 1.0, 1.5, 2.0, 2.5], np.float32)
TERM = np.array([False, True, False, False, False])
TRUNC = np.array([False, False, False, True, False])
# Entries of steps that don't end a segment (and of the terminated step) must be ignored.
BOOT = np.array([99.0, 99.0, 99.0, 10.0, 4.0], np.float32)


def test_gae_hand_numbers():
    # gamma = 0.9, lambda = 0.5 -> gamma * lambda = 0.45
    # deltas: 1 + .9*1.0 - .5 = 1.4 | 2 + 0 - 1 = 1.0 | 3 + .9*2 - 1.5 = 3.3
    #         4 + .9*10 - 2 = 11.0  | 5 + .9*4 - 2.5 = 6.1
    # A: A4 = 6.1, A3 = 11.0, A2 = 3.3 + .45*11 = 8.25, A1 = 1.0, A0 = 1.4 + .45*1 = 1.85
    adv, targets = compute_gae(REWARDS, VF, TERM, TRUNC, BOOT, gamma=0.9, lambda_=0.5)
    np.testing.assert_allclose(adv, [1.85, 1.0, 8.25, 11.0, 6.1], rtol=1e-6)
    np.testing.assert_allclose(targets, [2.35, 2.0, 9.75, 13.0, 8.6], rtol=1e-6)
    assert adv.dtype == np.float32 and targets.dtype == np.float32


def test_gae_lambda_one_is_returns_minus_values():
    adv, _ = compute_gae(REWARDS, VF, TERM, TRUNC, BOOT, gamma=0.9, lambda_=1.0)
    returns = compute_discounted_returns(REWARDS, TERM, TRUNC, BOOT, gamma=0.9)
    np.testing.assert_allclose(adv, returns - VF, rtol=1e-6)


def test_truncation_bootstraps_termination_does_not():
    # Same single step, terminated vs truncated: only the truncated one sees V(final_obs).
    args = dict(rewards=[1.0], vf_preds=[0.0], bootstrap_values=[10.0], gamma=0.5, lambda_=0.9)
    adv_term, _ = compute_gae(terminateds=[True], truncateds=[False], **args)
    adv_trunc, _ = compute_gae(terminateds=[False], truncateds=[True], **args)
    assert adv_term.tolist() == [1.0] and adv_trunc.tolist() == [6.0]


def test_discounted_returns_hand_numbers():
    # G1 = 2 (terminated); G0 = 1 + .9*2 = 2.8; G3 = 4 + .9*10 = 13; G2 = 3 + .9*13 = 14.7;
    # G4 = 5 + .9*4 = 8.6
    g = compute_discounted_returns(REWARDS, TERM, TRUNC, BOOT, gamma=0.9)
    np.testing.assert_allclose(g, [2.8, 2.0, 14.7, 13.0, 8.6], rtol=1e-6)
    # Without bootstrap values, cut fragments count only observed rewards.
    g0 = compute_discounted_returns(REWARDS, TERM, TRUNC, None, gamma=0.9)
    np.testing.assert_allclose(g0, [2.8, 2.0, 6.6, 4.0, 5.0], rtol=1e-6)


def test_segment_ends_split_envs():
    # Two envs' fragments back to back must not leak into each other.
    seg = np.array([False, False, True, False, False])  # step 2 is env 0's last step
    r = np.ones(5, np.float32)
    boot = np.array([0, 0, 3.0, 0, 7.0], np.float32)
    none = np.zeros(5, bool)
    g = compute_discounted_returns(r, none, none, boot, gamma=0.5, segment_ends=seg)
    # env 0: G2 = 1 + .5*3 = 2.5, G1 = 2.25, G0 = 2.125; env 1: G4 = 4.5, G3 = 3.25
    np.testing.assert_allclose(g, [2.125, 2.25, 2.5, 3.25, 4.5])


def test_compute_advantages_on_env_major_batch():
    # Env 0 = the 5-step fragment above, env 1 = the same again: results repeat.
    n = len(REWARDS)
    batch = SampleBatch(
        {
            SampleBatch.REWARDS: np.tile(REWARDS, 2),
            SampleBatch.VF_PREDS: np.tile(VF, 2),
            SampleBatch.TERMINATEDS: np.tile(TERM, 2),
            SampleBatch.TRUNCATEDS: np.tile(TRUNC, 2),
            SampleBatch.BOOTSTRAP_VALUE: np.tile(BOOT, 2),
            SampleBatch.ENV_ID: np.repeat([0, 1], n),
            SampleBatch.EPS_ID: np.array([0, 0, 1, 1, 2, 3, 3, 4, 4, 5]),
        }
    )
    compute_advantages(batch, gamma=0.9, lambda_=0.5)
    np.testing.assert_allclose(
        batch[SampleBatch.ADVANTAGES], [1.85, 1.0, 8.25, 11.0, 6.1] * 2, rtol=1e-6
    )
    b2 = batch.copy()
    compute_advantages(b2, gamma=0.9, use_gae=False, use_critic=True)
    g = np.array([2.8, 2.0, 14.7, 13.0, 8.6] * 2)
    np.testing.assert_allclose(b2[SampleBatch.VALUE_TARGETS], g, rtol=1e-6)
    np.testing.assert_allclose(b2[SampleBatch.ADVANTAGES], g - np.tile(VF, 2), rtol=1e-6)
    compute_advantages(b2, gamma=0.9, use_gae=False, use_critic=False)
    np.testing.assert_allclose(b2[SampleBatch.ADVANTAGES], g, rtol=1e-6)
    with pytest.raises(KeyError, match="vf_preds"):
        del b2[SampleBatch.VF_PREDS]
        compute_advantages(b2)


def test_nstep_hand_numbers():
    # Segments: steps 0-3 (truncated at 3), 4-5 (terminated at 5), 6 (fragment end).
    batch = SampleBatch(
        {
            SampleBatch.OBS: np.arange(7, dtype=np.float32)[:, None],
            SampleBatch.NEXT_OBS: np.arange(10, 17, dtype=np.float32)[:, None],
            SampleBatch.REWARDS: np.arange(1, 8, dtype=np.float32),
            SampleBatch.TERMINATEDS: np.array([0, 0, 0, 0, 0, 1, 0], bool),
            SampleBatch.TRUNCATEDS: np.array([0, 0, 0, 1, 0, 0, 0], bool),
        },
        stats={"episode_returns": [1.0]},
    )
    out = compute_nstep(batch, n=3, gamma=0.5)
    # t0: 1 + .5*2 + .25*3 = 2.75 | t1: 2 + 1.5 + 1 = 4.5 | t2: 3 + 2 = 5 | t3: 4
    # t4: 5 + 3 = 8 | t5: 6 | t6: 7
    np.testing.assert_allclose(out[SampleBatch.REWARDS], [2.75, 4.5, 5, 4, 8, 6, 7])
    np.testing.assert_array_equal(out[SampleBatch.NEXT_OBS][:, 0], [12, 13, 13, 13, 15, 15, 16])
    assert out[SampleBatch.TERMINATEDS].tolist() == [0, 0, 0, 0, 1, 1, 0]
    assert out[SampleBatch.TRUNCATEDS].tolist() == [0, 1, 1, 1, 0, 0, 0]
    np.testing.assert_allclose(
        out[SampleBatch.DISCOUNTS], [0.125, 0.125, 0.25, 0.5, 0.25, 0.5, 0.5]
    )
    np.testing.assert_array_equal(out[SampleBatch.OBS], batch[SampleBatch.OBS])
    assert out.stats == batch.stats
    # n = 1 is the identity on rewards, with discount gamma.
    one = compute_nstep(batch, n=1, gamma=0.5)
    np.testing.assert_array_equal(one[SampleBatch.REWARDS], batch[SampleBatch.REWARDS])
    np.testing.assert_allclose(one[SampleBatch.DISCOUNTS], 0.5)
    with pytest.raises(ValueError):
        compute_nstep(batch, n=0, gamma=0.5)


def test_long_fragment_is_stable():
    n = 50_000
    r = np.ones(n, np.float32)
    none = np.zeros(n, bool)
    g = compute_discounted_returns(r, none, none, np.full(n, 100.0, np.float32), gamma=0.99)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[-1], 1 + 0.99 * 100, rtol=1e-6)
    np.testing.assert_allclose(g[0], 100.0, rtol=1e-4)  # 1/(1-.99) in the limit
