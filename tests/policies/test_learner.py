"""The learner role: target networks, the adaptive KL coefficient, per-row loss outputs and
the state a checkpoint keeps."""

from __future__ import annotations

import doctest
import threading

import gymnasium
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rldataflow.data import SampleBatch as SB
from rldataflow.policies import (
    AdaptiveKLCoeff,
    Learner,
    TargetNetwork,
    TorchPolicy,
    kl_controller,
    target_network,
)

OBS_SPACE = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)


def test_docstring_examples_run():
    for module in (kl_controller, target_network):
        assert doctest.testmod(module).failed == 0


def test_polyak_update_matches_the_formula():
    online = torch.nn.Linear(3, 2)
    target = TargetNetwork(online)
    before = {k: v.clone() for k, v in target.module.state_dict().items()}
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    target.update(tau=0.1)
    for k, v in target.module.state_dict().items():
        expected = 0.1 * online.state_dict()[k] + 0.9 * before[k]
        assert torch.allclose(v, expected, atol=1e-6)
    assert not any(p.requires_grad for p in target.module.parameters())
    with pytest.raises(ValueError, match="tau"):
        target.update(tau=0.0)


@settings(max_examples=50, deadline=None)
@given(initial=st.floats(0.0, 10.0), target=st.floats(1e-4, 1.0),
       kls=st.lists(st.floats(0.0, 5.0), max_size=20))
def test_kl_coefficient_follows_the_ppo_rule(initial, target, kls):
    coeff = AdaptiveKLCoeff(initial, target)
    expected = initial
    for kl in kls:
        if expected > 0 and kl > 2 * target:
            expected *= 1.5
        elif expected > 0 and kl < 0.5 * target:
            expected *= 0.5
        assert coeff.update(kl) == pytest.approx(expected)
    assert coeff.value >= 0


def _row_loss(policy, batch):
    """A loss whose per-row output is each row's squared distance of the first logit to 0."""
    out = policy.model(batch[SB.OBS])[0][:, 0]
    return (out**2).mean(), {"sq": (out**2).mean(), "row_sq": (out**2).detach()}


@pytest.mark.parametrize("minibatch_size", [None, 3])
def test_per_row_outputs_become_columns_in_row_order(minibatch_size):
    policy = TorchPolicy(OBS_SPACE, gymnasium.spaces.Discrete(2), {"lr": 0.0},
                         loss_fn=_row_loss, seed=0)
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    batch = SB({SB.OBS: obs})
    stats = policy.learn_on_batch(batch, minibatch_size=minibatch_size)
    assert "row_sq" not in stats and stats["num_grad_updates"] == (1 if minibatch_size is None
                                                                   else 3)
    with torch.no_grad():  # lr 0: the weights did not move, so the rows can be recomputed
        expected = (policy.model(torch.from_numpy(obs))[0][:, 0] ** 2).numpy()
    np.testing.assert_allclose(batch["row_sq"], expected, rtol=1e-4)  # matmul sizes differ


def test_learner_is_made_on_first_use_and_holds_the_policy_lock():
    policy = TorchPolicy(OBS_SPACE, gymnasium.spaces.Discrete(2), seed=0)
    assert policy._learner is None  # sampling alone never builds optimizers or targets
    policy.compute_actions(np.zeros((2, 3), np.float32))
    assert policy._learner is None
    assert isinstance(policy.learner, Learner) and policy.learner.lock is policy.lock
    with pytest.raises(AttributeError):
        policy.kl_coeff  # noqa: B018 - a policy without a KL penalty has no coefficient
    assert not hasattr(policy, "target_model")


def test_weights_read_waits_for_an_update_in_progress():
    policy = TorchPolicy(OBS_SPACE, gymnasium.spaces.Discrete(2), seed=0)
    got: list[int] = []
    with policy.lock:  # as the learner thread holds it during a step
        reader = threading.Thread(target=lambda: got.append(len(policy.get_weights())))
        reader.start()
        reader.join(0.2)
        assert reader.is_alive() and not got
    reader.join(5)
    assert got and got[0] > 0


def test_state_round_trip_keeps_optimizer_targets_and_kl():
    def make():
        return TorchPolicy(OBS_SPACE, gymnasium.spaces.Discrete(2), seed=0,
                           learner_options=dict(targets=("target",),
                                                kl=AdaptiveKLCoeff(0.2, 0.01)))

    a = make()
    batch = SB({SB.OBS: np.ones((4, 3), np.float32), SB.ACTIONS: np.array([0, 1, 0, 1]),
                SB.ADVANTAGES: np.ones(4, np.float32), SB.VALUE_TARGETS: np.ones(4, np.float32)})
    a.learn_on_batch(batch)
    a.kl_coeff = 0.7
    state = a.get_state()
    b = make()
    b.set_state(state)
    assert b.kl_coeff == 0.7
    for k, v in a.target_model.state_dict().items():
        assert torch.equal(v, b.target_model.state_dict()[k])
    opt_a, opt_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    for pid, s in opt_a["state"].items():
        assert torch.equal(s["exp_avg"], opt_b["state"][pid]["exp_avg"])
