"""Continuous-action pieces: the Box map, the squashed Gaussian log-prob against a hand
computation, the actors and critics (flat and image observations), Polyak targets, the
multi-loss learner and exploration noise."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
import torch

from rldataflow.policies import TargetNetwork
from rldataflow.policies.continuous import (
    DeterministicActor,
    QNetwork,
    SquashedGaussianActor,
    TwinQ,
    box_bounds,
    from_box,
    squashed_gaussian_logp,
    tanh_log_det,
    to_box,
)
from rldataflow.policies.exploration_noise import GaussianNoise, OrnsteinUhlenbeckNoise

LOW, HIGH = np.array([0.0, -3.0], np.float32), np.array([2.0, 5.0], np.float32)


def test_to_box_maps_the_corners_and_round_trips_asymmetric_bounds():
    np.testing.assert_allclose(to_box(np.array([-1.0, -1.0]), LOW, HIGH), LOW)
    np.testing.assert_allclose(to_box(np.array([1.0, 1.0]), LOW, HIGH), HIGH)
    np.testing.assert_allclose(to_box(np.array([0.0, 0.0]), LOW, HIGH), [1.0, 1.0])
    np.testing.assert_allclose(to_box(np.array([0.5, -0.5]), LOW, HIGH), [1.5, -1.0])
    a = np.random.default_rng(0).uniform(-1, 1, (100, 2))
    np.testing.assert_allclose(from_box(to_box(a, LOW, HIGH), LOW, HIGH), a, atol=1e-6)
    t = torch.from_numpy(a)
    back = from_box(to_box(t, torch.from_numpy(LOW), torch.from_numpy(HIGH)),
                    torch.from_numpy(LOW), torch.from_numpy(HIGH))
    assert torch.allclose(back, t, atol=1e-6)


def test_box_bounds_reject_infinite_or_non_box():
    low, high = box_bounds(gymnasium.spaces.Box(LOW, HIGH))
    np.testing.assert_array_equal(low, LOW) and np.testing.assert_array_equal(high, HIGH)
    with pytest.raises(ValueError, match="finite bounds"):
        box_bounds(gymnasium.spaces.Box(-np.inf, np.inf, (2,)))
    with pytest.raises(ValueError, match="Discrete"):
        box_bounds(gymnasium.spaces.Discrete(3))


def test_squashed_logp_matches_a_hand_computation():
    # u = 0.5, mean = 0.2, std = 0.5: z = 0.6
    # log N(u) = -z^2/2 - log std - log(2 pi)/2 ; minus log(1 - tanh(u)^2)
    u, mean, std = 0.5, 0.2, 0.5
    z = (u - mean) / std
    expected = (-0.5 * z * z - math.log(std) - 0.5 * math.log(2 * math.pi)
                - math.log(1 - math.tanh(u) ** 2))
    assert expected == pytest.approx(-0.165562, abs=1e-6)  # -0.405792 + 0.240230
    got = squashed_gaussian_logp(torch.tensor([[u]]), torch.tensor([[mean]]),
                                 torch.tensor([[math.log(std)]]))
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # two dimensions sum; a different second dimension u = -1.2, mean 0, std 1
    expected2 = expected + (-0.5 * 1.44 - 0.5 * math.log(2 * math.pi)
                            - math.log(1 - math.tanh(-1.2) ** 2))
    got2 = squashed_gaussian_logp(torch.tensor([[u, -1.2]]), torch.tensor([[mean, 0.0]]),
                                  torch.tensor([[math.log(std), 0.0]]))
    assert got2.item() == pytest.approx(expected2, abs=1e-5)


def test_tanh_log_det_is_stable_where_the_naive_form_is_not():
    u = torch.tensor([[20.0], [-30.0]])
    naive = torch.log(1 - torch.tanh(u) ** 2).squeeze(-1)
    assert torch.isinf(naive).all()  # float32 saturates: the naive form breaks
    stable = tanh_log_det(u)
    # log(1 - tanh(u)^2) = log(4) - 2|u| - 2 log(1 + exp(-2|u|)) ~ log 4 - 2|u|
    np.testing.assert_allclose(stable.numpy(), [math.log(4) - 40, math.log(4) - 60], rtol=1e-6)


def test_actor_samples_are_squashed_and_logp_is_consistent():
    actor = SquashedGaussianActor((3,), np.float32, action_dim=2, hiddens=(16,))
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(64, 3)
    a, logp = actor.sample(obs, g)
    assert a.shape == (64, 2) and logp.shape == (64,) and (a.abs() < 1).all()
    # the same noise by hand: logp = log N(u) - sum log(1 - tanh(u)^2)
    mean, log_std = actor(obs)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    u = mean + log_std.exp() * eps
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1) \
        - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    assert torch.allclose(logp, ref, atol=1e-4)
    assert torch.allclose(a, torch.tanh(u))
    assert torch.equal(actor.deterministic(obs), torch.tanh(mean))
    logp.sum().backward()  # reparameterized: gradients reach the actor
    assert actor.head.weight.grad is not None


def test_deterministic_actor_and_critics_shapes_flat_and_image():
    det = DeterministicActor((3,), np.float32, 2, hiddens=(8,))
    assert det(torch.zeros(5, 3)).shape == (5, 2)
    q = QNetwork((3,), np.float32, 2, hiddens=(8, 8), activation="tanh")
    assert q(torch.zeros(5, 3), torch.zeros(5, 2)).shape == (5,)
    twin = TwinQ((3,), np.float32, 2, hiddens=(8,))
    q1, q2 = twin(torch.randn(5, 3), torch.zeros(5, 2))
    assert not torch.equal(q1, q2)  # independent networks
    assert torch.equal(twin.min(torch.ones(5, 3), torch.zeros(5, 2)),
                       torch.minimum(*twin(torch.ones(5, 3), torch.zeros(5, 2))))
    # images: the CNN encoder, the action appended to its features
    img = torch.zeros(2, 10, 10, 3, dtype=torch.uint8)
    qi = QNetwork((10, 10, 3), np.uint8, 2, hiddens=(8,))
    assert qi(img, torch.zeros(2, 2)).shape == (2,)
    ai = SquashedGaussianActor((10, 10, 3), np.uint8, 2, hiddens=(8,))
    assert ai.sample(img)[0].shape == (2, 2)


def test_polyak_update_by_hand():
    online = torch.nn.Linear(2, 1)
    target = TargetNetwork(online)
    with torch.no_grad():
        online.weight.fill_(1.0)
        target.module.weight.fill_(0.0)
    target.update(tau=0.005)
    assert torch.allclose(target.module.weight, torch.full((1, 2), 0.005))
    target.update(tau=0.005)  # 0.005 + 0.995 * 0.005
    assert torch.allclose(target.module.weight, torch.full((1, 2), 0.009975))


def test_noise():
    rng = np.random.default_rng(0)
    a = np.zeros((10_000, 1))
    g = GaussianNoise(0.1)(a, rng)
    assert abs(g.std() - 0.1) < 0.005
    per_row = GaussianNoise(np.array([0.0, 1.0]))(np.zeros((2, 3)), rng)
    assert np.all(per_row[0] == 0) and np.all(per_row[1] != 0)
    ou = OrnsteinUhlenbeckNoise(theta=0.15, sigma=0.2)
    xs = np.array([ou(np.zeros((1, 1)), rng)[0, 0] for _ in range(20_000)])
    # stationary std of the discretized process: sigma / sqrt(1 - (1 - theta)^2)
    assert abs(xs[1000:].std() - 0.2 / math.sqrt(1 - 0.85 ** 2)) < 0.03
    lag1 = np.corrcoef(xs[1000:-1], xs[1001:])[0, 1]
    assert abs(lag1 - 0.85) < 0.03  # correlated in time: 1 - theta
