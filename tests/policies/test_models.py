import numpy as np
import pytest
import torch

from rldataflow.policies import CNN, MLP, ActorCriticModel, QModel, make_encoder


def test_mlp_shapes_and_activation_check():
    assert MLP(3, (8, 5))(torch.zeros(2, 3)).shape == (2, 5)
    assert MLP(3, ()).out_dim == 3
    with pytest.raises(ValueError, match="unknown activation 'tahn'"):
        MLP(3, (4,), activation="tahn")


def test_actor_critic_init_scales():
    torch.manual_seed(0)
    m = ActorCriticModel((4,), np.float32, action_dist_dim=2)
    w = m.pi_head.weight.detach()
    # Orthogonal rows scaled by 0.01 (policy) and 1.0 (value).
    torch.testing.assert_close(w @ w.T, 1e-4 * torch.eye(2), atol=1e-7, rtol=0)
    v = m.vf_head.weight.detach()
    torch.testing.assert_close(v @ v.T, torch.ones(1, 1), atol=1e-5, rtol=0)
    assert torch.all(m.pi_head.bias == 0)
    logits, values = m(torch.randn(3, 4))
    assert logits.abs().max() < 0.1  # near-uniform initial policy
    torch.testing.assert_close(m.value(torch.ones(3, 4)), m(torch.ones(3, 4))[1])


def test_actor_critic_separate_and_shared():
    sep = ActorCriticModel((4,), np.float32, 2)
    shared = ActorCriticModel((4,), np.float32, 2, vf_share_layers=True)
    n_sep = sum(p.numel() for p in sep.parameters())
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_sep > n_shared and shared.vf_encoder is None
    torch.testing.assert_close(shared.value(torch.ones(2, 4)), shared(torch.ones(2, 4))[1])


def test_free_log_std():
    m = ActorCriticModel((4,), np.float32, action_dist_dim=4, free_log_std=True, init_log_std=-0.5)
    out, _ = m(torch.zeros(3, 4))
    assert out.shape == (3, 4)
    torch.testing.assert_close(out[:, 2:], torch.full((3, 2), -0.5))
    out.sum().backward()
    assert m.log_std.grad is not None


def test_cnn_for_uint8_images():
    enc = make_encoder((84, 84, 4), np.uint8)
    assert isinstance(enc, CNN)
    assert enc(torch.full((2, 84, 84, 4), 255, dtype=torch.uint8)).shape == (2, 512)
    small = ActorCriticModel((10, 10, 3), np.uint8, 3)
    logits, values = small(torch.zeros(2, 10, 10, 3, dtype=torch.uint8))
    assert logits.shape == (2, 3) and values.shape == (2,)
    with pytest.raises(ValueError, match="neither flat"):
        make_encoder((3, 4), np.float32)


def test_q_model_dueling():
    q = QModel((4,), np.float32, num_actions=3, hiddens=(16,), dueling=True)
    x = torch.randn(5, 4)
    out = q(x)
    assert out.shape == (5, 3)
    feats = q.encoder(x)
    adv = q.advantage_head(feats)
    torch.testing.assert_close(
        out.mean(-1), q.value_head(feats).squeeze(-1) + adv.mean(-1) - adv.mean(-1)
    )
    assert QModel((4,), np.float32, 2)(x).shape == (5, 2)


def test_cnn_takes_float_images_unscaled():
    enc = make_encoder((42, 42, 3), np.float32)
    assert isinstance(enc, CNN) and enc.scale == 1.0
    img = torch.rand(2, 42, 42, 3)
    as_uint8 = CNN((42, 42, 3), obs_dtype=np.uint8)
    as_uint8.load_state_dict(enc.state_dict())
    # the same weights see a uint8 frame of v * 255 as the float frame v
    torch.testing.assert_close(as_uint8((img * 255).round().to(torch.uint8)),
                               enc((img * 255).round() / 255), rtol=1e-5, atol=1e-5)
