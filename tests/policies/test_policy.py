import io

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rldataflow.data import SampleBatch
from rldataflow.policies import TorchPolicy

OBS_SPACE = spaces.Box(-np.inf, np.inf, (4,), np.float32)


def random_batch(n: int = 64, seed: int = 0, action_space=None) -> SampleBatch:
    rng = np.random.default_rng(seed)
    if action_space is None or isinstance(action_space, spaces.Discrete):
        actions = rng.integers(0, 2, n)
    else:
        actions = rng.normal(size=(n, *action_space.shape)).astype(np.float32)
    return SampleBatch(
        {
            SampleBatch.OBS: rng.normal(size=(n, 4)).astype(np.float32),
            SampleBatch.ACTIONS: actions,
            SampleBatch.ADVANTAGES: rng.normal(size=n).astype(np.float32),
            SampleBatch.VALUE_TARGETS: rng.normal(size=n),  # float64 on purpose
        }
    )


def value_loss(policy, batch):
    _, values = policy.model(batch[SampleBatch.OBS])
    loss = ((values - 3.0) ** 2).mean()
    return loss, {"vf_loss": loss.item()}


@pytest.mark.parametrize(
    "action_space, action_shape, action_dtype",
    [
        (spaces.Discrete(3), (), np.int64),
        (spaces.Box(-1, 1, (2,), np.float32), (2,), np.float32),
        (spaces.MultiDiscrete([2, 3]), (2,), np.int64),
    ],
)
def test_compute_actions(action_space, action_shape, action_dtype):
    p = TorchPolicy(OBS_SPACE, action_space, seed=0)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    actions, extras = p.compute_actions(obs)
    assert actions.shape == (5, *action_shape) and actions.dtype == action_dtype
    assert extras[SampleBatch.ACTION_LOGP].shape == (5,)
    assert extras[SampleBatch.VF_PREDS].shape == (5,)
    assert extras[SampleBatch.ACTION_DIST_INPUTS].shape == (5, p.dist_input_dim)
    # Deterministic actions are repeatable; logp is of the returned actions.
    a1, e1 = p.compute_actions(obs, explore=False)
    a2, _ = p.compute_actions(obs, explore=False)
    np.testing.assert_array_equal(a1, a2)
    dist = p.action_dist(torch.from_numpy(e1[SampleBatch.ACTION_DIST_INPUTS]))
    np.testing.assert_allclose(
        dist.logp(torch.from_numpy(a1)).numpy(), e1[SampleBatch.ACTION_LOGP], rtol=1e-5
    )
    np.testing.assert_allclose(p.value(obs), extras[SampleBatch.VF_PREDS], rtol=1e-6)
    # float64 observations are accepted (cast to the space's dtype).
    assert p.compute_actions(obs.astype(np.float64))[0].shape == actions.shape


def test_seeded_policies_are_identical():
    a = TorchPolicy(OBS_SPACE, spaces.Discrete(2), seed=3)
    b = TorchPolicy(OBS_SPACE, spaces.Discrete(2), seed=3)
    obs = np.ones((8, 4), np.float32)
    for (ka, va), (kb, vb) in zip(a.get_weights().items(), b.get_weights().items(), strict=True):
        assert ka == kb
        np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(a.compute_actions(obs)[0], b.compute_actions(obs)[0])
    state = torch.random.get_rng_state()
    TorchPolicy(OBS_SPACE, spaces.Discrete(2), seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_weights_round_trip():
    a = TorchPolicy(OBS_SPACE, spaces.Discrete(2), seed=0)
    b = TorchPolicy(OBS_SPACE, spaces.Discrete(2), seed=1)
    obs = np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)
    assert not np.allclose(a.value(obs), b.value(obs))
    w = a.get_weights()
    assert all(isinstance(v, np.ndarray) for v in w.values())
    b.set_weights(w, version=7)
    np.testing.assert_array_equal(a.value(obs), b.value(obs))
    assert b.weights_version == 7
    b.set_weights(w)
    assert b.weights_version == 8
    w["vf_head.bias"][:] = 123.0  # a copy: mutating it doesn't touch the policy
    assert a.get_weights()["vf_head.bias"][0] != 123.0


def test_state_round_trip_with_optimizer_through_torch_save():
    a = TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"lr": 1e-2}, seed=0)
    batch = random_batch()
    a.learn_on_batch(batch, num_epochs=2, minibatch_size=16)
    buf = io.BytesIO()
    torch.save(a.get_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"lr": 1e-2}, seed=99)
    b.set_state(state)
    assert b.num_grad_updates == a.num_grad_updates == 8
    assert b.weights_version == a.weights_version == 8
    # Same weights, optimizer moments and shuffling RNG -> identical next updates.
    a.learn_on_batch(batch, num_epochs=1, minibatch_size=16)
    b.learn_on_batch(batch, num_epochs=1, minibatch_size=16)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])


def test_learn_on_batch_reduces_loss():
    p = TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"lr": 1e-2}, loss_fn=value_loss, seed=0)
    batch = random_batch(128)
    first = p.learn_on_batch(batch)["vf_loss"]
    stats = {}
    for _ in range(30):
        stats = p.learn_on_batch(batch, num_epochs=2, minibatch_size=32)
    assert stats["vf_loss"] < 0.2 * first
    assert stats["num_grad_updates"] == 8
    assert p.num_grad_updates == 1 + 30 * 8 == p.weights_version
    assert "grad_gnorm" in stats and stats["weights_version"] == p.weights_version


def test_default_loss_runs_on_box_actions():
    space = spaces.Box(-1, 1, (2,), np.float32)
    p = TorchPolicy(OBS_SPACE, space, {"entropy_coeff": 0.01}, seed=0)
    stats = p.learn_on_batch(random_batch(32, action_space=space))
    assert {"policy_loss", "vf_loss", "entropy", "total_loss"} <= set(stats)
    assert p.model.log_std.grad is not None


def test_compute_then_apply_gradients_equals_one_sgd_step():
    a = TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"lr": 1e-2}, seed=0)
    b = TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"lr": 1e-2}, seed=0)
    batch = random_batch()
    grads, stats = a.compute_gradients(batch)
    assert all(isinstance(g, np.ndarray) for g in grads) and stats["count"] == 64
    a.apply_gradients(grads)
    b.learn_on_batch(batch)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(v, b.get_weights()[k], rtol=1e-6, atol=1e-7)
    assert a.weights_version == b.weights_version == 1
    with pytest.raises(ValueError, match="gradient arrays"):
        a.apply_gradients(grads[:-1])


def test_grad_clip():
    p = TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"grad_clip": 0.01}, seed=0)
    grads, stats = p.compute_gradients(random_batch())
    total = np.sqrt(sum(float((g**2).sum()) for g in grads))
    assert stats["grad_gnorm"] > 0.01  # the reported norm is the one before clipping
    assert total <= 0.01 + 1e-6


def test_postprocess_default_and_override():
    p = TorchPolicy(OBS_SPACE, spaces.Discrete(2), seed=0)
    batch = SampleBatch(
        {
            SampleBatch.REWARDS: np.ones(3, np.float32),
            SampleBatch.VF_PREDS: np.zeros(3, np.float32),
            SampleBatch.TERMINATEDS: np.array([False, False, True]),
            SampleBatch.TRUNCATEDS: np.zeros(3, bool),
        }
    )
    out = p.postprocess_trajectory(batch)
    assert SampleBatch.ADVANTAGES in out and out[SampleBatch.ADVANTAGES][-1] == 1.0
    q = TorchPolicy(
        OBS_SPACE,
        spaces.Discrete(2),
        seed=0,
        postprocess_fn=lambda pol, b: SampleBatch(b, info={"seen": True}),
    )
    assert q.postprocess_trajectory(batch).info == {"seen": True}


def test_config_errors():
    with pytest.raises(ValueError, match="did you mean 'adam'"):
        TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"optimizer": "adma"})
    with pytest.raises(ValueError, match="preprocessed"):
        TorchPolicy(spaces.Discrete(3), spaces.Discrete(2))
    p = TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"clip_param": 0.2})
    assert p.config["clip_param"] == 0.2  # algorithm keys are kept for the loss


def test_config_typo_is_caught():
    with pytest.raises(ValueError, match="did you mean 'lambda_'"):
        TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"lambda": 0.9})
    with pytest.raises(ValueError, match="did you mean 'vf_share_layers'"):
        TorchPolicy(OBS_SPACE, spaces.Discrete(2), {"vf_share_layer": True})


def test_float64_obs_space_is_cast():
    space = spaces.Box(-1.0, 1.0, (4,), np.float64)
    p = TorchPolicy(space, spaces.Discrete(2), seed=0)
    assert p.compute_actions(np.zeros((2, 4)))[0].shape == (2,)
