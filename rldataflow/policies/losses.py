"""One actor-critic loss, configured per algorithm.

PG, A2C/A3C, IMPALA, PPO and APPO all minimise

    L = L_pi + vf_loss_coeff * L_V - entropy_coeff * H + kl_coeff * KL

and differ only in the policy term and in options of the others:

- ``L_pi``: ``-mean(logp * A)`` (policy gradient; PG, A2C, IMPALA with V-trace advantages), or
  with ``clip_param`` the clipped surrogate ``-mean(min(r A, clip(r, 1 - e, 1 + e) A))`` of PPO
  (Schulman et al. 2017, eq. 7), where ``r = pi / pi_old``; APPO multiplies ``r`` by a
  truncated importance ratio between the behaviour and the target policy (``importance_key``).
- ``L_V = 0.5 * mean((V - value_targets)^2)``, optionally with PPO's value clipping around the
  sampling-time predictions (``vf_clip_param``), or left out (``use_critic=False``, plain PG).
- ``KL(pi_ref || pi)`` against the distribution inputs in ``kl_inputs_key`` (PPO: the sampling
  policy's; APPO: the target network's), reported as a statistic and added with ``kl_coeff``.
"""

from __future__ import annotations

from typing import Any

import torch

from rldataflow.data.sample_batch import SampleBatch as SB
from rldataflow.policies.recurrent import masked_mean

__all__ = ["actor_critic_loss"]


def actor_critic_loss(
    policy: Any,
    batch: dict[str, torch.Tensor],
    *,
    clip_param: float | None = None,
    importance_key: str | None = None,
    vf_clip_param: float | None = None,
    use_critic: bool = True,
    kl_inputs_key: str | None = None,
    kl_coeff: float = 0.0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The actor-critic loss of the module docstring for ``policy``'s model and config
    (``vf_loss_coeff``, ``entropy_coeff``); returns ``(loss, stats)``.

    Example::

        loss, stats = actor_critic_loss(policy, tensors)                     # A2C
        loss, stats = actor_critic_loss(policy, tensors, clip_param=0.2,     # PPO
                                        kl_inputs_key=SB.ACTION_DIST_INPUTS, kl_coeff=0.2)
    """
    cfg = policy.config
    # padded sequence minibatches (recurrent policies) average over their valid steps only
    dist_inputs, values = policy.model_outputs(batch)
    dist = policy.action_dist(dist_inputs)
    logp = dist.logp(batch[SB.ACTIONS])
    adv = batch[SB.ADVANTAGES]
    stats: dict[str, Any] = {}
    if clip_param is None:
        policy_loss = -masked_mean(logp * adv, batch)
    else:
        behaviour_logp = batch[SB.ACTION_LOGP]
        ratio = torch.exp(logp - behaviour_logp)
        if importance_key is not None:  # APPO: pi_target / mu, truncated (Luo et al. 2020)
            ratio = torch.clamp(torch.exp(behaviour_logp - batch[importance_key]), 0.0, 2.0) \
                * ratio
        surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_param, 1 + clip_param) * adv)
        policy_loss = -masked_mean(surrogate, batch)
        stats["clip_fraction"] = masked_mean(((ratio - 1).abs() > clip_param).float(), batch)
    entropy = masked_mean(dist.entropy(), batch)
    total = policy_loss
    stats["policy_loss"] = policy_loss
    if use_critic:
        targets = batch[SB.VALUE_TARGETS]
        vf_err = (values - targets) ** 2
        if vf_clip_param is not None:
            old = batch[SB.VF_PREDS]
            clipped = old + torch.clamp(values - old, -vf_clip_param, vf_clip_param)
            vf_err = torch.max(vf_err, (clipped - targets) ** 2)
        vf_loss = 0.5 * masked_mean(vf_err, batch)
        total = total + cfg["vf_loss_coeff"] * vf_loss
        stats["vf_loss"] = vf_loss
    total = total - cfg["entropy_coeff"] * entropy
    stats["entropy"] = entropy
    if kl_inputs_key is not None:
        kl = masked_mean(policy.action_dist(batch[kl_inputs_key]).kl(dist), batch)
        if kl_coeff:
            total = total + kl_coeff * kl
        stats["kl"] = kl
    stats["total_loss"] = total
    return total, stats
