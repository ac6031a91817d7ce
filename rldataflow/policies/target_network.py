"""``TargetNetwork``: a frozen copy of a network that follows it by copying or Polyak averaging.

DQN and Ape-X copy the online network every ``target_network_update_freq`` steps, APPO computes
V-trace against a periodically copied policy, and the continuous-control learners (SAC, TD3)
average ``target <- tau * online + (1 - tau) * target`` after every step. One class serves all.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["TargetNetwork"]


class TargetNetwork:
    """A frozen copy of ``source`` (no gradients), updated only by :meth:`update`.

    Example::

        >>> import torch
        >>> online = torch.nn.Linear(2, 1)
        >>> target = TargetNetwork(online)
        >>> _ = online.weight.data.add_(1.0)
        >>> bool(torch.equal(target.module.weight, online.weight))
        False
        >>> target.update(tau=1.0)            # hard copy (DQN); tau < 1: Polyak averaging (SAC)
        >>> bool(torch.equal(target.module.weight, online.weight))
        True
    """

    def __init__(self, source: nn.Module) -> None:
        self.source = source
        self.module: nn.Module = copy.deepcopy(source)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.num_updates = 0
        self._pairs: tuple[list[torch.Tensor], ...] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def update(self, tau: float = 1.0) -> None:
        """``target <- tau * source + (1 - tau) * target`` (``tau=1``: an exact copy)."""
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"TargetNetwork.update: tau must be in (0, 1], got {tau}")
        if tau == 1.0:
            self.module.load_state_dict(self.source.state_dict())
        else:
            if self._pairs is None:  # (walking the module tree costs more than the update)
                self._pairs = (list(self.module.parameters()), list(self.source.parameters()),
                               list(self.module.buffers()), list(self.source.buffers()))
            t_params, s_params, t_bufs, s_bufs = self._pairs
            with torch.no_grad():
                torch._foreach_lerp_(t_params, s_params, tau)  # t + tau * (s - t)
                for t, s in zip(t_bufs, s_bufs, strict=True):
                    t.copy_(s)  # running statistics are not averaged
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The target weights (detached copies, safe to save while training goes on)."""
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
