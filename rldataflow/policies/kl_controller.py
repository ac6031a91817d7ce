"""``AdaptiveKLCoeff``: the KL-penalty weight that PPO and APPO adapt between updates.

The rule of Schulman et al. 2017 (PPO paper, section 4, with the constants RLlib uses): after an
update whose mean KL divergence from the sampling policy is ``kl``, the weight is multiplied by
1.5 when ``kl > 2 * target`` and by 0.5 when ``kl < target / 2``. A weight of 0 means the
penalty is off, and it stays off.
"""

from __future__ import annotations

__all__ = ["AdaptiveKLCoeff"]


class AdaptiveKLCoeff:
    """The adaptive KL coefficient; ``value`` is what a loss multiplies the KL term by.

    Example::

        >>> kl = AdaptiveKLCoeff(0.2, target=0.01)
        >>> kl.update(0.05)       # far above 2 x target: the penalty grows
        0.30000000000000004
        >>> kl.update(0.001)      # far below target / 2: it shrinks
        0.15000000000000002
    """

    def __init__(self, initial: float, target: float | None = None, increase: float = 1.5,
                 decrease: float = 0.5) -> None:
        if initial < 0:
            raise ValueError(f"the initial KL coefficient must be >= 0, got {initial}")
        self.value = float(initial)
        self.target = None if target is None else float(target)
        self.increase = increase
        self.decrease = decrease

    def update(self, kl: float) -> float:
        """Adapt to the KL measured in the last update; returns the new value."""
        if self.target is not None and self.value > 0:
            if kl > 2.0 * self.target:
                self.value *= self.increase
            elif kl < 0.5 * self.target:
                self.value *= self.decrease
        return self.value

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"AdaptiveKLCoeff(value={self.value:g}, target={self.target})"
