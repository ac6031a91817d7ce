"""Torch models: MLP and CNN encoders, an actor-critic model and a Q model.

Initialization follows the CleanRL PPO recipe: orthogonal weights with gain sqrt(2) in hidden
layers, 0.01 on the policy output (near-uniform initial policy, which speeds PPO up markedly) and
1.0 on the value output; zero biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CNN",
    "MLP",
    "ActorCriticModel",
    "QModel",
    "init_layer",
    "make_encoder",
]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "leaky_relu": F.leaky_relu,
}


def _check_activation(name: str) -> str:
    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return key


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # Reading the parameter dict directly skips nn.Module.__call__/__getattr__ overhead, which
    # at batch 1 costs as much as the matmul itself.
    params = layer._parameters
    return F.linear(x, params["weight"], params["bias"])


def init_layer(layer: nn.Module, std: float = math.sqrt(2.0), bias: float = 0.0) -> nn.Module:
    """Orthogonal weight init with gain ``std`` and constant bias (returns the layer)."""
    nn.init.orthogonal_(layer.weight, std)  # type: ignore[arg-type]
    nn.init.constant_(layer.bias, bias)  # type: ignore[arg-type]
    return layer


class MLP(nn.Module):
    """Fully connected encoder: ``Linear -> activation`` per hidden size.

    ``out_dim`` is the last hidden size (``in_dim`` when ``hiddens`` is empty).

    Example::

        >>> mlp = MLP(4, hiddens=(64, 64))
        >>> mlp(torch.zeros(2, 4)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self, in_dim: int, hiddens: Sequence[int] = (64, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        self.activation = _check_activation(activation)
        dims = [int(in_dim), *(int(h) for h in hiddens)]
        self.layers = nn.ModuleList(
            init_layer(nn.Linear(a, b)) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = _ACTIVATIONS[self.activation]
        for layer in self.layers:
            x = act(_linear(layer, x))  # type: ignore[arg-type]
        return x


class CNN(nn.Module):
    """Nature-DQN style CNN (Mnih et al. 2015, "Human-level control through deep reinforcement
    learning", Nature 518) for ``(H, W, C)`` images: ``uint8`` frames are scaled by 1/255
    inside the model (so replay batches can stay ``uint8``, a quarter of float32's memory),
    float images are taken as they are (``scale=1``).

    Uses the Nature stack (32x8s4, 64x4s2, 64x3s1, dense 512) for images of at least 36 pixels a
    side and a compact stack (16x3s1, 32x3s2) for smaller ones (grid worlds, MinAtar).

    Example::

        >>> cnn = CNN((84, 84, 4))
        >>> cnn(torch.zeros(1, 84, 84, 4, dtype=torch.uint8)).shape
        torch.Size([1, 512])
    """

    def __init__(self, obs_shape: Sequence[int], out_dim: int = 512,
                 obs_dtype: np.dtype | str | type = np.uint8) -> None:
        super().__init__()
        h, w, c = (int(s) for s in obs_shape)
        self.scale = 1.0 / 255.0 if np.dtype(obs_dtype) == np.uint8 else 1.0
        if min(h, w) >= 36:
            convs = [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
        else:
            convs = [(16, 3, 1), (32, 3, 2)]
        layers: list[nn.Module] = []
        prev = c
        for ch, k, s in convs:
            layers += [init_layer(nn.Conv2d(prev, ch, k, stride=s)), nn.ReLU()]
            prev = ch
        layers.append(nn.Flatten())
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat = int(self.convs(torch.zeros(1, c, h, w)).shape[1])
        self.fc = nn.Sequential(init_layer(nn.Linear(flat, out_dim)), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NHWC uint8 -> NCHW float in [0, 1]; keeping uint8 until here saves memory in batches.
        x = x.permute(0, 3, 1, 2).float()
        if self.scale != 1.0:
            x = x * self.scale
        return self.fc(self.convs(x))


def make_encoder(
    obs_shape: Sequence[int],
    obs_dtype: np.dtype | str | type = np.float32,
    hiddens: Sequence[int] = (64, 64),
    activation: str = "tanh",
) -> nn.Module:
    """An :class:`MLP` for flat observations, a :class:`CNN` for ``(H, W, C)`` images (``uint8``
    frames, scaled by 1/255 inside, or float ones taken as they are)."""
    shape = tuple(int(s) for s in obs_shape)
    dtype = np.dtype(obs_dtype)
    if len(shape) == 3 and (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        return CNN(shape, obs_dtype=dtype)
    if len(shape) != 1:
        raise ValueError(
            f"observations of shape {shape} and dtype {dtype} are neither flat vectors nor "
            "(H, W, C) images (uint8 or float); preprocess them with "
            "rldataflow.envs.obs_preprocessor"
        )
    return MLP(shape[0], hiddens, activation)


class ActorCriticModel(nn.Module):
    """Policy and value function: ``forward(obs) -> (dist_inputs, values)``.

    Separate policy and value encoders by default (``vf_share_layers=False``): sharing makes the
    value loss scale fight the policy gradient. With ``free_log_std`` (Gaussian actions) the
    policy head outputs only the mean and a learnable state-independent ``log_std`` is appended,
    so ``dist_inputs`` is ``[mean, log_std]`` of width ``action_dist_dim``.

    Example::

        >>> m = ActorCriticModel((4,), np.float32, action_dist_dim=2)
        >>> logits, values = m(torch.zeros(3, 4))
        >>> logits.shape, values.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        obs_dtype: np.dtype | str | type,
        action_dist_dim: int,
        hiddens: Sequence[int] = (64, 64),
        activation: str = "tanh",
        vf_share_layers: bool = False,
        free_log_std: bool = False,
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        self.free_log_std = free_log_std
        self.vf_share_layers = vf_share_layers
        self.pi_encoder = make_encoder(obs_shape, obs_dtype, hiddens, activation)
        self.vf_encoder = (
            None if vf_share_layers else make_encoder(obs_shape, obs_dtype, hiddens, activation)
        )
        feat = self.pi_encoder.out_dim
        if free_log_std:
            if action_dist_dim % 2:
                raise ValueError("free_log_std needs an even action_dist_dim ([mean, log_std])")
            n_out = action_dist_dim // 2
            self.log_std = nn.Parameter(torch.full((n_out,), float(init_log_std)))
        else:
            n_out = action_dist_dim
        self.pi_head = init_layer(nn.Linear(feat, n_out), std=0.01)
        self.vf_head = init_layer(nn.Linear(feat, 1), std=1.0)

    def _dist_inputs(self, features: torch.Tensor) -> torch.Tensor:
        out = _linear(self.pi_head, features)
        if self.free_log_std:
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.pi_encoder(obs)
        vf_features = features if self.vf_encoder is None else self.vf_encoder(obs)
        return self._dist_inputs(features), _linear(self.vf_head, vf_features).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """Values only (skips the policy head when layers are not shared)."""
        enc = self.pi_encoder if self.vf_encoder is None else self.vf_encoder
        return _linear(self.vf_head, enc(obs)).squeeze(-1)


class QModel(nn.Module):
    """Q network for discrete actions: ``forward(obs) -> q_values`` of shape ``(B, num_actions)``.

    With ``dueling`` the output is ``V(s) + A(s, a) - mean_a A(s, a)``.

    Example::

        >>> q = QModel((4,), np.float32, num_actions=2, dueling=True)
        >>> q(torch.zeros(5, 4)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        obs_dtype: np.dtype | str | type,
        num_actions: int,
        hiddens: Sequence[int] = (256, 256),
        activation: str = "relu",
        dueling: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = make_encoder(obs_shape, obs_dtype, hiddens, activation)
        feat = self.encoder.out_dim
        self.dueling = dueling
        self.advantage_head = init_layer(nn.Linear(feat, int(num_actions)), std=1.0)
        self.value_head = init_layer(nn.Linear(feat, 1), std=1.0) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.encoder(obs)
        adv = self.advantage_head(features)
        if self.value_head is None:
            return adv
        return self.value_head(features) + adv - adv.mean(dim=-1, keepdim=True)
