"""``Learner``: the learning side of a policy.

A :class:`~rldataflow.policies.TorchPolicy` is what travels to rollout workers: a model, an
action distribution and weights. What only the learning process needs lives here: the loss,
the named optimizers (created on first use, so sampling processes never build one), the
target networks, the adaptive KL coefficient, and the lock under which an update runs, so that
a weights read from another thread (a broadcast, ``save()``) never sees half a step.

Per-row outputs of a loss (a 1-D tensor with one entry per row among its stats, e.g. DQN's
``td_error``) are written into the batch as a column of that name: they travel with the item
(to :class:`~rldataflow.ops.UpdatePriorities`), not through an attribute of the policy.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rldataflow.data.sample_batch import SampleBatch
from rldataflow.policies.kl_controller import AdaptiveKLCoeff
from rldataflow.policies.normalization import find_obs_normalizer
from rldataflow.policies.recurrent import (
    ROW_INDEX,
    SEQ_STARTS,
    STATE_IN_C,
    STATE_IN_H,
    Sequences,
    sequence_starts,
)
from rldataflow.policies.schedules import PiecewiseSchedule
from rldataflow.policies.target_network import TargetNetwork

if TYPE_CHECKING:
    from rldataflow.policies.policy import TorchPolicy

__all__ = ["OPTIMIZERS", "Learner", "MultiLossLearner", "frozen", "make_optimizer"]

#: ``reducer(grads)``: replace a minibatch's gradients in place (e.g. by a group mean)
GradReducer = Callable[[list[torch.Tensor]], None]

#: optimizer names a policy config may choose (``optimizer`` key)
OPTIMIZERS = ("adam", "sgd", "rmsprop")


def make_optimizer(params: Iterable[torch.nn.Parameter], config: Mapping[str, Any],
                   fused_adam: bool = False) -> torch.optim.Optimizer:
    """The optimizer a policy config names (``optimizer``, ``lr``, ``adam_eps``).

    ``fused_adam``: the fused CPU Adam, about twice as fast per step on small MLPs (0.55 vs
    1.2 ms on a 64x64 net), which matters to learners that take one step per small batch (DQN).
    """
    name, lr = config["optimizer"], float(config["lr"])
    params = list(params)
    if name == "adam":
        eps = float(config["adam_eps"])
        if fused_adam:
            try:
                return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
            except (RuntimeError, TypeError, ValueError):
                pass
        return torch.optim.Adam(params, lr=lr, eps=eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


class Learner:
    """Loss, optimizers, target networks, KL coefficient and lock of one policy.

    Args:
        policy: the policy whose model this learner trains (and whose lock it holds).
        loss_fn: ``loss_fn(policy, batch_tensors) -> (loss, stats)``.
        targets: names of target networks to keep (frozen copies of the model), e.g.
            ``("target",)`` for DQN; reached as ``learner.targets[name]``.
        kl: the adaptive KL coefficient of losses with a KL penalty (PPO, APPO).
        fused_adam: see :func:`make_optimizer`.

    Example::

        learner = Learner(policy, dqn_loss, targets=("target",))
        stats = learner.update(batch)          # one SGD step; batch["td_error"] now set
        learner.update_targets()               # target <- online
        state = learner.state_dict()           # optimizer, target weights, KL coefficient
    """

    def __init__(self, policy: TorchPolicy, loss_fn: Callable[..., Any], *,
                 targets: Sequence[str] = (), kl: AdaptiveKLCoeff | None = None,
                 fused_adam: bool = False) -> None:
        self.policy = policy
        self.loss_fn = loss_fn
        self.lock = policy.lock
        self.targets: dict[str, TargetNetwork] = {n: TargetNetwork(policy.model) for n in targets}
        self.kl = kl
        self.fused_adam = fused_adam
        self._params = [p for p in policy.model.parameters() if p.requires_grad]
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None
        cfg = policy.config
        self._lr_schedule = (PiecewiseSchedule(cfg["lr_schedule"])
                             if cfg.get("lr_schedule") else None)
        self._entropy_schedule = (PiecewiseSchedule(cfg["entropy_coeff_schedule"])
                                  if cfg.get("entropy_coeff_schedule") else None)

    # -- before an update: schedules and normalizer statistics ----------------------------
    def prepare(self, batch: SampleBatch) -> dict[str, float]:
        """Set scheduled hyperparameters for ``policy.global_timestep`` and fold the batch's
        observations into the model's normalizer (if it has one); returns the values set."""
        policy, out = self.policy, {}
        t = policy.global_timestep
        if self._lr_schedule is not None:
            lr = self._lr_schedule(t)
            for optimizer in self.optimizers.values():
                for group in optimizer.param_groups:
                    group["lr"] = lr
            out["cur_lr"] = lr
        if self._entropy_schedule is not None:
            policy.config["entropy_coeff"] = out["entropy_coeff"] = self._entropy_schedule(t)
        normalizer = find_obs_normalizer(policy.model)
        if normalizer is not None and SampleBatch.OBS in batch:
            normalizer.update(batch[SampleBatch.OBS])
        return out

    # -- optimizers -------------------------------------------------------------------------
    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers, created when first needed. Creating the first torch optimizer in
        a process imports torch._dynamo (1.3 s, ~90 MB), so processes that only sample never
        do it."""
        if self._optimizers is None:
            self._optimizers = self.make_optimizers()
        return self._optimizers

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimizer over the whole model (subclasses with actor and critic return two)."""
        return {"default": make_optimizer(self.policy.model.parameters(), self.policy.config,
                                          fused_adam=self.fused_adam)}

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers["default"]

    # -- one update ---------------------------------------------------------------------------
    def _clip_grads(self) -> float:
        clip = self.policy.config["grad_clip"]
        max_norm = float(clip) if clip is not None else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(self._params, max_norm))

    def _loss_and_backward(self, tensors: dict[str, torch.Tensor],
                           grad_reducer: GradReducer | None = None
                           ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        loss, stats = self.loss_fn(self.policy, tensors)
        for param in self._params:  # as optimizer.zero_grad(set_to_none=True), without one
            param.grad = None
        loss.backward()
        if grad_reducer is not None:
            # before clipping: the clip then sees the group's gradient, as one big batch would
            grads = []
            for p in self._params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
            grad_reducer(grads)
        out: dict[str, float] = {}
        rows: dict[str, torch.Tensor] = {}
        for k, v in stats.items():
            if isinstance(v, torch.Tensor) and v.ndim == 1:
                rows[k] = v.detach()
            else:
                out[k] = v.item() if isinstance(v, torch.Tensor) else float(v)
        out["grad_gnorm"] = self._clip_grads()
        return out, rows

    def _step(self) -> None:
        self.optimizer.step()
        self.policy.num_grad_updates += 1
        self.policy.weights_version += 1

    def update(self, batch: SampleBatch, num_epochs: int = 1, minibatch_size: int | None = None,
               shuffle: bool = True, grad_reducer: GradReducer | None = None
               ) -> dict[str, float]:
        """``num_epochs`` passes of minibatch SGD over ``batch``; returns averaged stats.

        Every pass shuffles the rows (unless ``shuffle`` is false) and takes one optimizer step
        per minibatch of ``minibatch_size`` rows (the whole batch when ``None``; a smaller last
        minibatch is kept). Gradients are clipped by global norm when ``grad_clip`` is set.
        The stats include ``num_grad_updates`` (steps taken here) and ``weights_version``;
        per-row outputs of the loss become columns of ``batch`` (from the last pass).
        ``grad_reducer(grads)`` replaces each minibatch's gradients in place before clipping
        and the step (e.g. a gradient group's ``allreduce_mean``: decentralized training; all
        members must then take the same number of steps).
        """
        policy = self.policy
        n = batch.count
        if n == 0:
            return {"num_grad_updates": 0, "weights_version": policy.weights_version}
        tensors = policy.batch_to_tensors(batch)
        seqs = self.sequences(batch)
        if seqs is None:
            units = n
            size = n if minibatch_size is None else max(1, min(int(minibatch_size), n))
        else:  # recurrent: minibatches of whole sequences, ~minibatch_size rows each
            units = seqs.count
            size = units if minibatch_size is None else max(
                1, min(int(minibatch_size) // policy.max_seq_len, units))
        sums: dict[str, float] = defaultdict(float)
        rows_out: dict[str, np.ndarray] = {}
        steps = 0
        with self.lock:
            prepared = self.prepare(batch)
            policy.model.train()
            for _ in range(num_epochs):
                perm = (torch.from_numpy(policy.np_rng.permutation(units))
                        if shuffle and size < units else None)
                for start in range(0, units, size):
                    idx: Any = (slice(start, start + size) if perm is None
                                else perm[start: start + size])
                    if seqs is not None:
                        chosen = np.arange(units)[idx] if perm is None else idx.numpy()
                        mb = seqs.pad(tensors, chosen)
                    else:
                        mb = {k: v[idx] for k, v in tensors.items()}
                    stats, rows = self._loss_and_backward(mb, grad_reducer)
                    self._step()
                    steps += 1
                    for k, v in stats.items():
                        sums[k] += v
                    for k, v in rows.items():
                        if seqs is not None:  # padded slots -> their rows
                            where = mb[ROW_INDEX].numpy()
                            valid = where >= 0
                            rows_out.setdefault(k, np.zeros(n, np.float32))[where[valid]] = \
                                v.numpy()[valid]
                        elif size == n:
                            rows_out[k] = v.numpy()
                        else:
                            rows_out.setdefault(k, np.zeros(n, np.float32))[
                                idx.numpy() if perm is not None else idx] = v.numpy()
            version = policy.weights_version
        for k, v in rows_out.items():
            batch[k] = v
        out = {k: v / steps for k, v in sums.items()}
        out.update(prepared)
        out["num_grad_updates"] = steps
        out["weights_version"] = version
        return out

    def sequences(self, batch: SampleBatch) -> Sequences | None:
        """The batch cut into sequences for a recurrent policy (``None`` for others): at
        trajectory breaks and every ``max_seq_len`` rows (see
        :func:`~rldataflow.policies.recurrent.sequence_starts`); a ``seq_starts`` column, if
        present, gives the cuts instead. A policy whose batches already hold one sequence per
        row (``rows_are_sequences``: R2D2's replayed sequences) is not cut either."""
        policy = self.policy
        if not getattr(policy, "is_recurrent", False) or getattr(policy, "rows_are_sequences",
                                                                  False):
            return None
        if SEQ_STARTS in batch:
            return Sequences(batch[SEQ_STARTS])
        missing = [k for k in (STATE_IN_H, STATE_IN_C) if k not in batch]
        if missing:
            raise KeyError(f"a recurrent policy learns from batches with the LSTM state "
                           f"columns; {missing} missing (sampled by a rollout worker?)")
        return Sequences(sequence_starts(batch, policy.max_seq_len))

    def _tensors(self, batch: SampleBatch) -> dict[str, torch.Tensor]:
        """The whole batch as loss input: its tensors, or all its sequences padded."""
        tensors = self.policy.batch_to_tensors(batch)
        seqs = self.sequences(batch)
        return tensors if seqs is None else seqs.pad(tensors)

    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        """Gradients of the loss on the whole batch (clipped like in training), as numpy arrays
        in the order of the model's trainable parameters, and the loss stats."""
        with self.lock:
            self.policy.model.train()
            stats, _ = self._loss_and_backward(self._tensors(batch))
            grads = [p.grad.detach().numpy().copy() if p.grad is not None
                     else np.zeros(p.shape, np.float32) for p in self._params]
        stats["count"] = float(batch.count)
        return grads, stats

    def apply_gradients(self, grads: Sequence[np.ndarray]) -> None:
        """One optimizer step with the given gradients (from :meth:`compute_gradients`)."""
        if len(grads) != len(self._params):
            raise ValueError(f"expected {len(self._params)} gradient arrays, got {len(grads)}")
        with self.lock:
            for p, g in zip(self._params, grads, strict=True):
                p.grad = torch.tensor(np.asarray(g, dtype=np.float32)).reshape(p.shape)  # copies
            self._step()

    def update_targets(self, tau: float = 1.0) -> None:
        """Move every target network towards the model (``tau=1``: copy it)."""
        with self.lock:
            for target in self.targets.values():
                target.update(tau)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Optimizer state, target weights and the KL coefficient (torch.load-safe types)."""
        with self.lock:
            optimizers = self.optimizers
            state: dict[str, Any] = {}
            if "default" in optimizers:
                state["optimizer"] = optimizers["default"].state_dict()
            if len(optimizers) > 1 or "default" not in optimizers:
                state["optimizers"] = {k: o.state_dict() for k, o in optimizers.items()}
            if "target" in self.targets:
                state["target_weights"] = self.targets["target"].state_dict()
            others = {k: t.state_dict() for k, t in self.targets.items() if k != "target"}
            if others:
                state["targets"] = others
            if self.kl is not None:
                state["kl_coeff"] = float(self.kl.value)
            return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with self.lock:
            if "optimizers" in state:
                for k, s in state["optimizers"].items():
                    self.optimizers[k].load_state_dict(s)
            elif "optimizer" in state:
                self.optimizer.load_state_dict(state["optimizer"])
            if "target_weights" in state and "target" in self.targets:
                self.targets["target"].load_state_dict(state["target_weights"])
            for k, s in state.get("targets", {}).items():
                self.targets[k].load_state_dict(s)
            if "kl_coeff" in state and self.kl is not None:
                self.kl.value = float(state["kl_coeff"])


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block, ``module``'s parameters record no gradient (inputs still do). Example::

        with frozen(model.critic):
            actor_loss = -model.critic(obs, model.actor(obs)).mean()  # reaches the actor only
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


class MultiLossLearner(Learner):
    """A learner with one loss per named optimizer (e.g. ``actor``, ``critic``, ``alpha``) and
    Polyak-averaged target copies of some of the model's submodules: the learning side of the
    off-policy actor-critics (SAC, DDPG, TD3).

    The loss is ``loss_fn(policy, batch_tensors, step) -> (losses, stats)`` with ``losses`` a
    dict ``{optimizer name: scalar loss}`` and ``step`` the index of this update (0, 1, ...).
    All losses are taken from the same weights and back-propagated together (one backward
    pass of their sum), then each named optimizer steps. So each loss must reach only its own
    group's parameters: where the actor's loss goes through the critic, the loss computes that
    critic pass inside :func:`frozen` (the critic's weights then get no gradient from it, the
    actions still do). A name left out of ``losses`` is not stepped in that update (TD3's
    delayed actor). After every
    ``target_update_every`` updates each target moves ``target <- tau * online + (1 - tau) *
    target``. Per-row stats (1-D tensors, e.g. ``td_error``) become batch columns.

    Args:
        policy: the policy whose ``model`` has the attributes named in ``groups``/``targets``.
        loss_fn: see above.
        groups: optimizer name -> names of model attributes (submodules or parameters) that
            optimizer trains, e.g. ``{"actor": ("actor",), "alpha": ("log_alpha",)}``.
        lrs: optimizer name -> learning rate (missing: the policy config's ``lr``).
        targets: names of model submodules with a target copy (``learner.targets[name]``).
        tau: the Polyak coefficient (1: copy).
        target_update_every: update the targets after every this many updates.

    Example::

        learner = MultiLossLearner(policy, sac_loss, groups={"actor": ("actor",),
                                   "critic": ("critic",), "alpha": ("log_alpha",)},
                                   targets=("critic",), tau=0.005)
        stats = learner.update(replayed)     # one step of each optimizer; td_error column set
    """

    def __init__(self, policy: TorchPolicy, loss_fn: Callable[..., Any], *,
                 groups: Mapping[str, Sequence[str]], lrs: Mapping[str, float] | None = None,
                 targets: Sequence[str] = (), tau: float = 1.0, target_update_every: int = 1,
                 fused_adam: bool = True) -> None:
        super().__init__(policy, loss_fn, fused_adam=fused_adam)
        model = policy.model
        self.groups: dict[str, list[torch.nn.Parameter]] = {}
        for name, attrs in groups.items():
            params: list[torch.nn.Parameter] = []
            for attr in attrs:
                part = getattr(model, attr, None)
                if isinstance(part, torch.nn.Parameter):
                    params.append(part)
                elif isinstance(part, torch.nn.Module):
                    params.extend(p for p in part.parameters() if p.requires_grad)
                else:
                    raise ValueError(f"optimizer {name!r}: the model {type(model).__name__} has "
                                     f"no submodule or parameter {attr!r}")
            self.groups[name] = params
        self.lrs = dict(lrs or {})
        unknown = set(self.lrs) - set(self.groups)
        if unknown:
            raise ValueError(f"learning rates for unknown optimizers {sorted(unknown)}; the "
                             f"optimizers are {sorted(self.groups)}")
        for name in targets:
            part = getattr(model, name, None)
            if not isinstance(part, torch.nn.Module):
                raise ValueError(f"target {name!r}: the model {type(model).__name__} has no "
                                 "such submodule")
            self.targets[name] = TargetNetwork(part)
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        if target_update_every < 1:
            raise ValueError(f"target_update_every must be >= 1, got {target_update_every}")
        self.tau = float(tau)
        self.target_update_every = int(target_update_every)
        self.num_updates = 0

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.policy.config
        return {name: make_optimizer(params, {**cfg, "lr": self.lrs.get(name, cfg["lr"])},
                                     fused_adam=self.fused_adam)
                for name, params in self.groups.items()}

    def update(self, batch: SampleBatch, num_epochs: int = 1, minibatch_size: int | None = None,
               shuffle: bool = True) -> dict[str, float]:
        """One update on the whole batch: each loss's optimizer steps once (the epoch and
        minibatch arguments exist for TrainOneStep and must keep their defaults)."""
        if num_epochs != 1 or (minibatch_size is not None and minibatch_size < batch.count):
            raise ValueError(f"{type(self).__name__}.update takes one step on the whole batch")
        policy = self.policy
        if batch.count == 0:
            return {"num_grad_updates": 0, "weights_version": policy.weights_version}
        tensors = policy.batch_to_tensors(batch)
        clip = policy.config["grad_clip"]
        max_norm = float(clip) if clip is not None else float("inf")
        out: dict[str, float] = {}
        rows: dict[str, torch.Tensor] = {}
        with self.lock:
            optimizers = self.optimizers
            losses, stats = self.loss_fn(policy, tensors, self.num_updates)
            names = [n for n in self.groups if n in losses]
            extra = set(losses) - set(self.groups)
            if extra:
                raise ValueError(f"the loss returned losses {sorted(extra)} for no optimizer; "
                                 f"the optimizers are {sorted(self.groups)}")
            for params in self.groups.values():
                for p in params:
                    p.grad = None
            if names:
                sum(losses[n] for n in names).backward()
            for name in names:
                params = self.groups[name]
                if clip is not None:
                    out[f"{name}_grad_gnorm"] = float(
                        torch.nn.utils.clip_grad_norm_(params, max_norm))
                optimizers[name].step()
                out[f"{name}_loss"] = float(losses[name].detach())
            self.num_updates += 1
            policy.num_grad_updates += 1
            policy.weights_version += 1
            if self.targets and self.num_updates % self.target_update_every == 0:
                for target in self.targets.values():
                    target.update(self.tau)
            version = policy.weights_version
        for k, v in stats.items():
            if isinstance(v, torch.Tensor) and v.ndim == 1:
                rows[k] = v.detach()
            else:
                out[k] = v.item() if isinstance(v, torch.Tensor) else float(v)
        for k, v in rows.items():
            batch[k] = v.numpy()
        out["num_grad_updates"] = 1
        out["weights_version"] = version
        return out

    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        raise NotImplementedError(f"{type(self).__name__} steps several optimizers per update; "
                                  "it has no single gradient to ship (use update())")

    def apply_gradients(self, grads: Sequence[np.ndarray]) -> None:
        raise NotImplementedError(f"{type(self).__name__} steps several optimizers per update; "
                                  "it has no single gradient to apply (use update())")

    def state_dict(self) -> dict[str, Any]:
        """The optimizers, target weights and the update count (TD3's delay phase)."""
        state = super().state_dict()
        state["learner_num_updates"] = self.num_updates
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.num_updates = int(state.get("learner_num_updates", self.num_updates))
