"""Recurrent policies: sequence cutting, padding and masking, the LSTM state through sampling
(reset at episode ends), checkpoints, and (learning tier) PPO with and without an LSTM on
StatelessCartPole."""

from __future__ import annotations

import math
import time

import gymnasium
import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.algorithms.ppo import ppo_loss
from rldataflow.data import SampleBatch as SB
from rldataflow.envs import RECALL_CUE_ID, STATELESS_CARTPOLE_ID, make_env
from rldataflow.policies import TorchPolicy
from rldataflow.policies.kl_controller import AdaptiveKLCoeff
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.policies.recurrent import (
    SEQ_MASK,
    STATE_IN_C,
    STATE_IN_H,
    Sequences,
    masked_mean,
    sequence_starts,
)
from rldataflow.trainer import Algorithm
from rldataflow.workers import RolloutWorker

OBS2 = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _lstm_policy(seed=0, **config):
    return TorchPolicy(OBS2, gymnasium.spaces.Discrete(2),
                       {"use_lstm": True, "lstm_cell_size": 8, "hiddens": (16,), **config},
                       seed=seed)


def test_sequence_starts_cut_at_breaks_and_max_seq_len():
    cols = {"terminateds": np.array([0, 0, 0, 0, 1, 0, 0, 0, 0], bool),
            "truncateds": np.array([0, 0, 0, 0, 0, 0, 1, 0, 0], bool),
            "env_id": np.array([0, 0, 0, 0, 0, 0, 0, 0, 1]),
            "t": np.array([5, 6, 7, 8, 9, 0, 1, 0, 3])}
    # cuts: row 0; every 3rd row of a run (row 3); after the termination (5); after the
    # truncation (7); env change (8)
    assert np.flatnonzero(sequence_starts(cols, 3)).tolist() == [0, 3, 5, 7, 8]
    # t jumping (two fragments of an episode that are not consecutive) cuts too
    cols2 = {"terminateds": np.zeros(4, bool), "t": np.array([0, 1, 5, 6])}
    assert np.flatnonzero(sequence_starts(cols2, 10)).tolist() == [0, 2]
    with pytest.raises(ValueError, match="max_seq_len"):
        sequence_starts(cols, 0)


def test_padding_and_masks_by_hand():
    seqs = Sequences(np.array([True, False, False, True, True, False]))
    assert seqs.lens.tolist() == [3, 1, 2]
    assert seqs.index.tolist() == [[0, 1, 2], [3, 0, 0], [4, 5, 0]]
    assert seqs.mask.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    tensors = {"x": torch.arange(6.0) * 10, STATE_IN_H: torch.arange(6.0)[:, None]}
    mb = seqs.pad(tensors, np.array([2, 1]))
    assert mb["x"].tolist() == [40.0, 50.0, 0.0, 30.0, 0.0, 0.0]
    assert mb[SEQ_MASK].tolist() == [1, 1, 0, 1, 0, 0]
    assert mb[STATE_IN_H].tolist() == [[4.0], [3.0]]  # the state at each sequence's first row
    # masked mean: (40 + 50 + 30) / 3, padding ignored
    assert masked_mean(mb["x"], mb).item() == pytest.approx(40.0)


def _random_batch(policy, n=11, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    h = rng.normal(size=(n, 8)).astype(np.float32) * 0.3
    c = rng.normal(size=(n, 8)).astype(np.float32) * 0.3
    _, extras = policy.compute_actions(obs, state=(h, c))
    return SB({SB.OBS: obs, SB.ACTIONS: rng.integers(0, 2, n),
               SB.ADVANTAGES: rng.normal(size=n).astype(np.float32),
               SB.VALUE_TARGETS: rng.normal(size=n).astype(np.float32),
               SB.ACTION_LOGP: extras[SB.ACTION_LOGP] - 0.1,
               SB.ACTION_DIST_INPUTS: extras[SB.ACTION_DIST_INPUTS],
               STATE_IN_H: h, STATE_IN_C: c,
               SB.TERMINATEDS: np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool),
               SB.T: np.array([0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6])})


def test_padded_loss_equals_the_unpadded_computation():
    policy = _lstm_policy(max_seq_len=3, clip_param=0.2, vf_clip_param=None,
                          entropy_coeff=0.01)
    batch = _random_batch(policy)
    tensors = policy.batch_to_tensors(batch)
    seqs = policy.learner.sequences(batch)
    assert seqs.lens.tolist() == [3, 1, 3, 3, 1]
    loss, stats = actor_critic_loss(policy, seqs.pad(tensors), clip_param=0.2,
                                    kl_inputs_key=SB.ACTION_DIST_INPUTS, kl_coeff=0.3)
    # reference: each sequence unrolled on its own (no padding), terms summed over all rows
    logps, ents, vals, kls, surrs = [], [], [], [], []
    for start, length in zip(seqs.start_rows, seqs.lens, strict=True):
        rows = slice(start, start + length)
        h0 = tensors[STATE_IN_H][start][None]
        c0 = tensors[STATE_IN_C][start][None]
        di, v, _ = policy.model.forward_seq(tensors[SB.OBS][rows][None], h0, c0)
        dist = policy.action_dist(di[0])
        logp = dist.logp(tensors[SB.ACTIONS][rows])
        ratio = torch.exp(logp - tensors[SB.ACTION_LOGP][rows])
        adv = tensors[SB.ADVANTAGES][rows]
        surrs.append(torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv))
        ents.append(dist.entropy())
        vals.append((v[0] - tensors[SB.VALUE_TARGETS][rows]) ** 2)
        kls.append(policy.action_dist(tensors[SB.ACTION_DIST_INPUTS][rows]).kl(dist))
        logps.append(logp)
    surr, ent, vf, kl = (torch.cat(x).mean() for x in (surrs, ents, vals, kls))
    expected = -surr + 0.5 * 0.5 * vf - 0.01 * ent + 0.3 * kl
    assert stats["policy_loss"].item() == pytest.approx(-surr.item(), rel=1e-5)
    assert stats["vf_loss"].item() == pytest.approx(0.5 * vf.item(), rel=1e-5)
    assert stats["entropy"].item() == pytest.approx(ent.item(), rel=1e-5)
    assert stats["kl"].item() == pytest.approx(kl.item(), rel=1e-5, abs=1e-7)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_minibatches_are_whole_sequences():
    policy = TorchPolicy(OBS2, gymnasium.spaces.Discrete(2),
                         {"use_lstm": True, "lstm_cell_size": 8, "hiddens": (16,),
                          "max_seq_len": 3, "clip_param": 0.2, "vf_clip_param": None},
                         loss_fn=ppo_loss, seed=0,
                         learner_options={"kl": AdaptiveKLCoeff(0.0, 0.01)})
    batch = _random_batch(policy)
    seen = []
    inner = policy.learner.loss_fn

    def spy(pol, mb):
        seen.append((mb[STATE_IN_H].shape[0], mb[SEQ_MASK].sum().item()))
        return inner(pol, mb)

    policy.learner.loss_fn = spy
    stats = policy.learn_on_batch(batch, num_epochs=2, minibatch_size=6)  # 6 // 3 = 2 seqs
    assert stats["num_grad_updates"] == 6  # 5 sequences -> 3 minibatches, 2 epochs
    assert [s for s, _ in seen] == [2, 2, 1] * 2
    assert sum(v for _, v in seen[:3]) == 11  # every row once per epoch


def _worker(**kwargs):
    return RolloutWorker(RECALL_CUE_ID, {"length": 3}, num_envs=2, rollout_fragment_length=10,
                         policy_factory=lambda o, a: _lstm_policy(seed=3, max_seq_len=4),
                         seed=1, **kwargs)


def test_worker_stores_states_and_resets_them_at_episode_ends():
    worker = _worker()
    batch = worker.sample()
    batch2 = worker.sample()  # the state goes on across sample() calls
    policy = worker.policy
    for b in (batch, batch2):
        h = b[STATE_IN_H]
        first = b[SB.T] == 0
        assert first.any() and (~first).any()
        assert np.all(h[first] == 0.0)  # zero state at every episode start
        assert np.all(np.abs(h[~first]).sum(1) > 0)
    # a fragment cut mid-episode continues from the stored state, not from zero
    assert batch2[SB.T][0] != 0 and np.abs(batch2[STATE_IN_H][0]).sum() > 0
    # each episode re-unrolled from the zero state gives the sampling-time values and logp:
    # a state not reset at an episode end (or not carried within one) would change them
    eps = batch[SB.EPS_ID]
    checked = 0
    for e in np.unique(eps):
        rows = np.flatnonzero(eps == e)
        if batch[SB.T][rows[0]] != 0:
            continue
        h0, c0 = policy.model.initial_state(1)
        obs = torch.from_numpy(batch[SB.OBS][rows])[None]
        di, v, _ = policy.model.forward_seq(obs, h0, c0)
        np.testing.assert_allclose(v[0].detach().numpy(), batch[SB.VF_PREDS][rows], atol=1e-5)
        logp = policy.action_dist(di[0]).logp(torch.from_numpy(batch[SB.ACTIONS][rows]))
        np.testing.assert_allclose(logp.detach().numpy(), batch[SB.ACTION_LOGP][rows],
                                   atol=1e-5)
        checked += 1
    assert checked >= 4
    # the learner's cut sequences (max_seq_len=4, from stored states) reproduce them too
    seqs = policy.learner.sequences(batch)
    mb = seqs.pad(policy.batch_to_tensors(batch))
    di, v = policy.model_outputs(mb)
    valid = mb[SEQ_MASK] > 0
    np.testing.assert_allclose(v[valid].detach().numpy(),
                               batch[SB.VF_PREDS][mb["seq_row_index"][valid].numpy()], atol=1e-5)


def test_state_columns_missing_is_one_error():
    policy = _lstm_policy()
    batch = _random_batch(policy)
    del batch[STATE_IN_H]
    with pytest.raises(KeyError, match="state_in_h"):
        policy.learn_on_batch(batch)


def test_non_recurrent_batches_have_no_state_columns():
    worker = RolloutWorker("CartPole-v1", num_envs=2, rollout_fragment_length=5, seed=0)
    assert STATE_IN_H not in worker.sample()


def test_stateless_cartpole_masks_velocities():
    env = make_env(STATELESS_CARTPOLE_ID)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,) and env.observation_space.shape == (2,)
    full = make_env("CartPole-v1")
    full_obs, _ = full.reset(seed=0)
    np.testing.assert_allclose(obs, full_obs[[0, 2]])


def test_evaluate_runs_the_lstm_through_each_episode():
    worker = _worker()
    returns = worker.evaluate(4)
    assert len(returns) == 4 and all(r in (0.0, 1.0) for r in returns)


SMALL = dict(runtime="inline", num_workers=0, num_envs_per_worker=2,
             rollout_fragment_length=32, env=STATELESS_CARTPOLE_ID, use_lstm=True,
             lstm_cell_size=16, max_seq_len=8, train_batch_size=64, minibatch_size=32,
             num_epochs=2, seed=0)


def test_lstm_checkpoint_round_trip(tmp_path):
    obs = np.random.default_rng(0).uniform(-0.1, 0.1, (3, 2)).astype(np.float32)
    with rldataflow.build("ppo", **SMALL) as algo:
        algo.train()
        algo.save(tmp_path / "ckpt")
        policy = algo.workers.local_worker().policy
        state = tuple(x + 0.5 for x in policy.initial_state(3))
        expected = policy.compute_actions(obs, explore=False, state=state)[1]
    restored = Algorithm.restore(tmp_path / "ckpt")
    try:
        policy = restored.workers.local_worker().policy
        assert policy.is_recurrent and restored.config.use_lstm
        got = policy.compute_actions(obs, explore=False, state=state)[1]
        for key in (SB.VF_PREDS, SB.ACTION_DIST_INPUTS, "state_out_h", "state_out_c"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=key)
        assert restored.train()["env_steps_sampled"] == 128  # and it trains on
    finally:
        restored.stop()


# -- learning tier ---------------------------------------------------------------------------
#: the same PPO settings with and without the LSTM (tuned for the LSTM; see docs/recurrent.md)
#: (PPO's pre-2026-12-07 defaults for batch, fragment, discount, GAE and entropy, with which the
#: figures in docs/recurrent.md were measured)
MEMORY_PPO = dict(runtime="process", num_workers=2, seed=0, env=STATELESS_CARTPOLE_ID,
                  lstm_cell_size=128, lr=5e-4, num_epochs=8, gamma=0.98, lambda_=0.8,
                  train_batch_size=1024, rollout_fragment_length=64, minibatch_size=256,
                  entropy_coeff=0.0)
MEMORY_BUDGET = 400_000


def _train(use_lstm: bool, threshold: float) -> tuple[int, float, float]:
    start = time.perf_counter()
    best = -math.inf
    with rldataflow.build("ppo", use_lstm=use_lstm, **MEMORY_PPO) as algo:
        while True:
            result = algo.train()
            steps, ret = result["env_steps_sampled"], result["episode_return_mean"]
            best = max(best, ret) if not math.isnan(ret) else best
            if ret >= threshold or steps > MEMORY_BUDGET:
                break
    wall = time.perf_counter() - start
    print(f"\nppo use_lstm={use_lstm} on {STATELESS_CARTPOLE_ID}: mean return {ret:.1f} "
          f"(best {best:.1f}) after {steps} env steps, {wall:.1f} s")
    return steps, ret, best


@pytest.mark.learning
@pytest.mark.timeout(400)
def test_ppo_lstm_solves_stateless_cartpole(record_property):
    steps, ret, _ = _train(True, 400.0)
    record_property("env_steps", steps)
    assert ret >= 400.0, f"PPO+LSTM: mean return {ret:.1f} < 400 after {steps} steps"


@pytest.mark.learning
@pytest.mark.timeout(400)
def test_ppo_without_lstm_fails_stateless_cartpole(record_property):
    steps, ret, best = _train(False, 400.0)
    record_property("best_return", best)
    assert steps > MEMORY_BUDGET  # ran the whole budget
    assert best < 200.0, f"PPO without memory reached {best:.1f} on StatelessCartPole"


@pytest.mark.learning
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["impala", "appo"])
def test_vtrace_lstm_learns_to_recall_a_cue(name, record_property):
    """IMPALA/APPO with an LSTM: V-trace over sequences; the cue of t=0 must be recalled at
    t=3 (a memoryless policy averages 0.5)."""
    with rldataflow.build(name, runtime="inline", num_workers=0, seed=0, env=RECALL_CUE_ID,
                          env_config={"length": 4}, use_lstm=True, lstm_cell_size=32,
                          max_seq_len=8, learner_thread=False) as algo:
        while True:
            result = algo.train()
            steps, ret = result["env_steps_sampled"], result["episode_return_mean"]
            if ret >= 0.95 or steps > 30_000:
                break
    print(f"\n{name} use_lstm on {RECALL_CUE_ID}: mean return {ret:.3f} after {steps} steps")
    record_property("env_steps", steps)
    assert ret >= 0.95, f"{name}+LSTM: mean return {ret:.3f} < 0.95 after {steps} steps"


def test_multi_agent_lstm_is_one_error():
    with pytest.raises(Exception, match="recurrent policies"):
        rldataflow.build("ppo", runtime="inline", num_workers=0,
                         env="rldataflow/MultiAgentCartPole-v0", policies=["p0"], use_lstm=True)
