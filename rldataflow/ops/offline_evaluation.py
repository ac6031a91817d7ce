"""Off-policy evaluation of the learning policy on a dataset: importance sampling estimates.

Precup, Sutton and Singh 2000, "Eligibility Traces for Off-Policy Policy Evaluation" (ICML):
an episode ``(s_t, a_t, r_t)_{t<T}`` recorded by a behaviour policy ``mu`` (its ``action_logp``
column) estimates the discounted return of a target policy ``pi`` through the episode's
importance weight::

    w_i = prod_t pi(a_t|s_t) / mu(a_t|s_t),      G_i = sum_t gamma^t r_t
    IS  = 1/n sum_i w_i G_i                      (unbiased, high variance)
    WIS = sum_i w_i G_i / sum_i w_i              (weighted: biased, consistent, lower variance)

:func:`importance_sampling_estimates` computes both from a batch of whole episodes;
:class:`OffPolicyEstimation` reports them for the plan's policy every ``every`` items.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rldataflow.data import SampleBatch
from rldataflow.data.dataset import DatasetError, open_dataset
from rldataflow.flow import Operator
from rldataflow.policies import TorchPolicy
from rldataflow.policies.continuous import BoxActorPolicy
from rldataflow.workers import WorkerSet

__all__ = ["OffPolicyEstimation", "importance_sampling_estimates", "policy_action_logp"]

#: the result keys (prefix ``off_policy_estimation/``)
PREFIX = "off_policy_estimation/"


def importance_sampling_estimates(episodes: SampleBatch, target_logp: np.ndarray,
                                  gamma: float) -> dict[str, float]:
    """IS and WIS estimates (module docstring) of the target policy's discounted return.

    ``episodes`` holds whole episodes (rows in step order, ``eps_id`` per row, the
    behaviour policy's ``action_logp``); ``target_logp`` the target policy's log-probability
    of each row's action. Returns ``is_return``, ``wis_return``, ``behaviour_return`` (the
    mean discounted return in the data), ``mean_weight`` and ``num_episodes``. Example::

        est = importance_sampling_estimates(batch, policy_action_logp(policy, batch), 0.99)
        est["wis_return"]
    """
    if SampleBatch.ACTION_LOGP not in episodes:
        raise DatasetError("off-policy estimation needs the behaviour policy's 'action_logp' "
                           "column in the dataset (record it with `rldataflow record`)")
    eps = np.asarray(episodes[SampleBatch.EPS_ID])
    t = np.asarray(episodes[SampleBatch.T])
    rewards = np.asarray(episodes[SampleBatch.REWARDS], np.float64)
    log_ratio = (np.asarray(target_logp, np.float64)
                 - np.asarray(episodes[SampleBatch.ACTION_LOGP], np.float64))
    ids, inverse = np.unique(eps, return_inverse=True)
    log_w = np.bincount(inverse, weights=log_ratio, minlength=len(ids))
    returns = np.bincount(inverse, weights=rewards * gamma ** t.astype(np.float64),
                          minlength=len(ids))
    w = np.exp(log_w)
    total = w.sum()
    return {"is_return": float(np.mean(w * returns)),
            "wis_return": float((w * returns).sum() / total) if total > 0 else math.nan,
            "behaviour_return": float(returns.mean()), "mean_weight": float(w.mean()),
            "num_episodes": int(len(ids))}


def policy_action_logp(policy: Any, batch: SampleBatch) -> np.ndarray:
    """``log pi(a|s)`` of each row's action under ``policy``'s action distribution (the
    policies with one, e.g. PG/PPO/BC/MARWIL), or 0 / -inf for a greedy Q policy (DQN, CQL
    discrete: ``pi(a|s) = 1`` for the argmax action)."""
    obs = policy._obs_tensor(np.asarray(batch[SampleBatch.OBS]))
    actions = torch.as_tensor(np.asarray(batch[SampleBatch.ACTIONS]))
    with torch.no_grad(), policy.lock:
        if hasattr(policy, "num_actions"):  # a Q policy (DQN, CQL discrete): greedy
            greedy = policy.model(obs).argmax(dim=1).numpy()
            return np.where(greedy == actions.numpy(), 0.0, -np.inf)
        if isinstance(policy, TorchPolicy) and not isinstance(policy, BoxActorPolicy):
            dist_inputs = policy.model(obs)[0]
            return policy.action_dist(dist_inputs).logp(actions).numpy().astype(np.float64)
    raise TypeError(f"off-policy estimation: {type(policy).__name__} has no action "
                    "distribution to evaluate")


class OffPolicyEstimation(Operator):
    """Every ``every``-th item, estimate the local policy's discounted return on the first
    ``num_episodes`` episodes of the dataset at ``path`` by IS and WIS; pass items through.

    The episodes are read once (the first whole episodes of the dataset's files, in order) and
    held; the estimates go into the plan's metrics info as ``off_policy_estimation/is_return``,
    ``.../wis_return``, ``.../behaviour_return``, ``.../mean_weight`` (so into each result).
    Example::

        train_op = train_op.for_each(OffPolicyEstimation(workers, "data/cartpole", 0.99,
                                                         num_episodes=20, every=5))
    """

    def __init__(self, workers: WorkerSet, path: str, gamma: float, num_episodes: int = 20,
                 every: int = 1, logp_fn: Callable[[Any, SampleBatch], np.ndarray] | None = None
                 ) -> None:
        if num_episodes < 1 or every < 1:
            raise ValueError(f"OffPolicyEstimation: num_episodes ({num_episodes}) and every "
                             f"({every}) must be >= 1")
        self.workers = workers
        self.path = str(path)
        self.gamma = float(gamma)
        self.num_episodes = int(num_episodes)
        self.every = int(every)
        self.logp_fn = logp_fn or policy_action_logp
        self._episodes: SampleBatch | None = None
        self._items = 0

    @property
    def op_name(self) -> str:
        return f"OffPolicyEstimation({self.path!r}, episodes={self.num_episodes})"

    def episodes(self) -> SampleBatch:
        """The first ``num_episodes`` whole episodes of the dataset."""
        if self._episodes is None:
            parts, seen = [], 0
            for chunk in open_dataset(self.path).iter_batches():
                parts.append(chunk)
                seen = len(np.unique(np.concatenate([p[SampleBatch.EPS_ID] for p in parts])))
                if seen > self.num_episodes:
                    break
            rows = SampleBatch.concat_samples(parts)
            keep = np.unique(rows[SampleBatch.EPS_ID])[: self.num_episodes]
            self._episodes = rows.take(np.flatnonzero(np.isin(rows[SampleBatch.EPS_ID], keep)))
        return self._episodes

    def __call__(self, item: Any) -> Any:
        self._items += 1
        if self._items % self.every:
            return item
        episodes = self.episodes()
        policy = self.workers.local_worker().get_policy()
        with self.metrics.timers["off_policy_estimation"]:
            est = importance_sampling_estimates(episodes, self.logp_fn(policy, episodes),
                                                self.gamma)
        for k, v in est.items():
            self.metrics.info[PREFIX + k] = v
        return item
