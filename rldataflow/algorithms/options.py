"""Config fields of the robustness aids that on-policy actor-critic algorithms share.

Each is off by default and documented; :func:`aid_policy_config` turns them into the policy
config keys that :class:`~rldataflow.policies.TorchPolicy` and its learner read:
observation normalization (:mod:`rldataflow.policies.normalization`), reward scaling, and
piecewise-linear schedules of the learning rate and the entropy bonus
(:mod:`rldataflow.policies.schedules`). Value-function clipping is PPO's ``vf_clip_param``.

Example::

    rldataflow train ppo --env HalfCheetah-v5 --set obs_normalization=true \\
        --set reward_scaling=true --set "lr_schedule=[[0, 3e-4], [1000000, 0]]"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rldataflow.policies.schedules import check_schedule
from rldataflow.utils.config import ConfigError, describe_field

__all__ = ["TrainingAids", "aid_policy_config"]

_h = describe_field


@dataclass
class TrainingAids:
    """Optional training aids (a mixin of algorithm configs)."""

    obs_normalization: bool = field(default=False, metadata=_h(
        "standardize observations by running mean/std (kept in the model: synced with the "
        "weights, saved in checkpoints)"))
    obs_clip: float = field(default=10.0, metadata=_h(
        "clip normalized observations to [-obs_clip, obs_clip]", gt=0))
    reward_scaling: bool = field(default=False, metadata=_h(
        "divide rewards by the running std of the discounted return (reported returns stay "
        "raw)"))
    lr_schedule: list[list[float]] | None = field(default=None, metadata=_h(
        "piecewise-linear learning rate over env steps, [[steps, lr], ...]; overrides lr"))
    entropy_coeff_schedule: list[list[float]] | None = field(default=None, metadata=_h(
        "piecewise-linear entropy bonus over env steps, [[steps, coeff], ...]"))

    def validate_aids(self) -> None:
        for key in ("lr_schedule", "entropy_coeff_schedule"):
            try:
                check_schedule(key, getattr(self, key))
            except ValueError as e:
                raise ConfigError(str(e)) from None


def aid_policy_config(config: Any) -> dict[str, Any]:
    """The policy config keys of ``config``'s training aids (defaults for a config without
    them, e.g. A3C's, which shares A2C's policy factory)."""
    defaults = TrainingAids()
    return {f: getattr(config, f, getattr(defaults, f)) for f in (
        "obs_normalization", "obs_clip", "reward_scaling", "lr_schedule",
        "entropy_coeff_schedule")}
