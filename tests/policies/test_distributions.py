import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import distributions as td

from rldataflow.envs import UnsupportedSpaceError
from rldataflow.policies import (
    Categorical,
    DiagGaussian,
    MultiCategorical,
    dist_class_for,
)

torch.manual_seed(0)


def test_categorical_hand_values():
    d = Categorical(torch.log(torch.tensor([[0.25, 0.75]])))
    np.testing.assert_allclose(d.logp(torch.tensor([1])).item(), math.log(0.75), rtol=1e-6)
    ent = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(d.entropy().item(), ent, rtol=1e-6)
    assert d.deterministic_sample().tolist() == [1]


def test_categorical_matches_torch_reference():
    logits = torch.randn(6, 4)
    other = torch.randn(6, 4)
    actions = torch.randint(0, 4, (6,))
    ours, ref = Categorical(logits), td.Categorical(logits=logits)
    torch.testing.assert_close(ours.logp(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    torch.testing.assert_close(
        ours.kl(Categorical(other)), td.kl_divergence(ref, td.Categorical(logits=other))
    )


def test_categorical_sampling_frequencies_and_logp():
    g = torch.Generator().manual_seed(1)
    d = Categorical(torch.log(torch.tensor([[0.1, 0.6, 0.3]])).expand(20000, 3), generator=g)
    actions, logp = d.sample_and_logp()
    freq = torch.bincount(actions, minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.015, rtol=0)
    torch.testing.assert_close(logp, d.logp(actions))


def test_diag_gaussian_matches_torch_reference():
    mean, log_std = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    mean2, log_std2 = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    ours = DiagGaussian(torch.cat([mean, log_std], -1))
    ref = td.Independent(td.Normal(mean, log_std.exp()), 1)
    x = torch.randn(5, 3)
    torch.testing.assert_close(ours.logp(x), ref.log_prob(x))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    ref2 = td.Independent(td.Normal(mean2, log_std2.exp()), 1)
    torch.testing.assert_close(
        ours.kl(DiagGaussian(torch.cat([mean2, log_std2], -1))), td.kl_divergence(ref, ref2)
    )
    a, logp = ours.sample_and_logp()
    torch.testing.assert_close(logp, ours.logp(a))
    torch.testing.assert_close(ours.deterministic_sample(), mean)


def test_squashed_gaussian_logp_correction():
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)
    mean, log_std = torch.randn(7, 2), torch.randn(7, 2) * 0.3
    ours = DiagGaussian(torch.cat([mean, log_std], -1), squash=True, low=low, high=high)
    lo, hi = torch.from_numpy(low), torch.from_numpy(high)
    ref = td.TransformedDistribution(
        td.Independent(td.Normal(mean, log_std.exp()), 1),
        [td.TanhTransform(), td.AffineTransform(loc=(lo + hi) / 2, scale=(hi - lo) / 2)],
    )
    a, logp = ours.sample_and_logp()
    assert torch.all(a >= lo) and torch.all(a <= hi)
    torch.testing.assert_close(logp, ref.log_prob(a), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.logp(a), logp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        ours.deterministic_sample(), (torch.tanh(mean) + 1) * (hi - lo) / 2 + lo
    )
    # Hand value: mean 0, std 1, bounds [-1, 1], action 0 -> logp = -0.5 * log(2 pi).
    d = DiagGaussian(torch.zeros(1, 2), squash=True, low=np.array([-1.0]), high=np.array([1.0]))
    np.testing.assert_allclose(
        d.logp(torch.zeros(1, 1)).item(), -0.5 * math.log(2 * math.pi), rtol=1e-6
    )
    # Saturated actions stay finite.
    assert torch.isfinite(d.logp(torch.tensor([[1.0]]))).all()
    with pytest.raises(ValueError):
        DiagGaussian(torch.zeros(1, 2), squash=True)


def test_multi_categorical():
    logits = torch.randn(4, 5)
    d = MultiCategorical(logits, nvec=(2, 3))
    actions = torch.stack([torch.randint(0, 2, (4,)), torch.randint(0, 3, (4,))], -1)
    a, b = td.Categorical(logits=logits[:, :2]), td.Categorical(logits=logits[:, 2:])
    torch.testing.assert_close(
        d.logp(actions), a.log_prob(actions[:, 0]) + b.log_prob(actions[:, 1])
    )
    torch.testing.assert_close(d.entropy(), a.entropy() + b.entropy())
    s, logp = d.sample_and_logp()
    assert s.shape == (4, 2) and torch.all(s[:, 1] < 3)
    torch.testing.assert_close(logp, d.logp(s))
    assert d.kl(d).abs().max() < 1e-6
    assert d.deterministic_sample().shape == (4, 2)


def test_dist_class_for():
    f, dim = dist_class_for(spaces.Discrete(5))
    assert dim == 5 and isinstance(f(torch.zeros(1, 5)), Categorical)
    f, dim = dist_class_for(spaces.Box(-1, 1, (3,), np.float32))
    assert dim == 6 and not f(torch.zeros(1, 6)).squash
    f, dim = dist_class_for(spaces.Box(-1, 1, (3,), np.float32), mode="squash")
    assert dim == 6 and f(torch.zeros(1, 6)).squash
    f, dim = dist_class_for(spaces.MultiDiscrete([2, 4]))
    assert dim == 6 and isinstance(f(torch.zeros(1, 6)), MultiCategorical)
    with pytest.raises(UnsupportedSpaceError, match="Dict"):
        dist_class_for(spaces.Dict({"a": spaces.Discrete(2)}))
