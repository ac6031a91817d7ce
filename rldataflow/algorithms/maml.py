"""MAML: model-agnostic meta-learning for RL (Finn, Abbeel & Levine 2017, "Model-Agnostic
Meta-Learning for Fast Adaptation of Deep Networks", arXiv:1703.03400, Algorithm 3).

The meta-parameters ``theta`` are trained so that ``inner_adaptation_steps`` policy-gradient
steps on a new task's own episodes give a good policy for that task. Per task ``T_i``:

    D_i^0  = episodes of T_i with theta_i^0 = theta                    (pre-adaptation)
    theta_i^{k+1} = theta_i^k - alpha * grad L(theta_i^k; D_i^k)       (inner steps, alpha =
                                                                        inner_lr; D_i^k
                                                                        sampled with theta_i^k)
    D_i'   = episodes of T_i with theta_i' = theta_i^K                 (post-adaptation)
    theta <- Adam(theta, (1/n) sum_i grad_theta L(theta_i'(theta); D_i'))   (meta-update, lr)

``L`` is the REINFORCE surrogate ``-mean(log pi(a|s) * A)`` (eq. of section 3.2) with
``A = standardize(G_t - b(s_t, t))``, ``b`` the linear feature baseline of Duan et al. 2016
("Benchmarking Deep RL for Continuous Control", arXiv:1604.06778) fitted on each batch, the
baseline the paper used (section 5.3). The meta-gradient is the full second-order one: the
inner steps are differentiated (``torch.autograd.grad(create_graph=True)`` over
``torch.func.functional_call``), so ``grad_theta`` goes through ``theta_i'(theta)``.
``first_order=True`` drops the second-order terms (FOMAML, section 5.2: the post-adaptation
gradient at ``theta_i'`` is the meta-gradient). As in the paper, the dependence of the
sampling distribution of ``D_i^k`` on ``theta`` is not differentiated. The paper's meta-
optimizer was TRPO; here it is Adam on the exact meta-gradient of the surrogate.

Dataflow: each worker adapts to one task and returns only its meta-gradient and returns::

    SampleTasks(meta_batch_size) -> ScatterToWorkers(adapt_to_task: set_task, sample, inner
      steps, sample, meta-gradient) -> MetaUpdate (average, Adam) -> BroadcastWeights -> report
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
import torch
from torch.func import functional_call

from rldataflow.algorithms.base import AlgorithmBuilder, default_workers
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.envs import POINT_NAVIGATION_ID, make_env, task_env
from rldataflow.envs.tasks import Task
from rldataflow.flow import Operator, Plan, from_local_iterable
from rldataflow.ops import (
    AverageGradients,
    BroadcastWeights,
    ScatterToWorkers,
    StandardMetricsReporting,
)
from rldataflow.ops.rollouts import record_sampled
from rldataflow.policies import TorchPolicy
from rldataflow.policies.postprocessing import batch_segment_ends, compute_discounted_returns
from rldataflow.runtime import Runtime
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import RolloutWorker, WorkerSet

__all__ = ["Config", "MetaUpdate", "SampleTasks", "adapt_to_task", "adaptation_returns",
           "inner_step", "linear_baseline", "pg_surrogate", "plan"]

_h = describe_field  # help text and numeric bounds of a config field

#: counter of task batches drawn: batch ``i`` is drawn with seed ``(seed, i)``, so a restored
#: run goes on with the tasks it would have drawn (the counters are checkpointed)
TASK_BATCHES = "maml_task_batches"


@dataclass
class Config(AlgorithmConfig):
    """MAML settings; the defaults follow the paper's 2D navigation (section 5.3, appendix A.2:
    inner lr 0.1, one inner step, 20 trajectories per step, meta-batch 20 tasks, two hidden
    layers of 100 ReLU units), with an Adam meta-step instead of TRPO."""

    env: Union[str, Callable[..., Any]] = field(default=POINT_NAVIGATION_ID, metadata=_h(
        "an env with a task distribution (rldataflow.envs.TaskSettableEnv)"))
    lr: float = field(default=1e-2, metadata=_h("Adam step size of the meta-update", gt=0))
    inner_lr: float = field(default=0.1, metadata=_h("alpha, the inner policy-gradient step",
                                                     gt=0))
    inner_adaptation_steps: int = field(default=1, metadata=_h(
        "policy-gradient steps on a task's own episodes before the post-adaptation episodes",
        ge=1))
    meta_batch_size: int = field(default=20, metadata=_h("tasks per meta-update", ge=1))
    num_envs_per_worker: int = field(default=20, metadata=_h(
        "episodes per task per adaptation step (one per env)", ge=1))
    rollout_fragment_length: int = field(default=64, metadata=_h(
        "not used: a sample is one whole episode per env"))
    train_batch_size: int = field(default=1024, metadata=_h(
        "not used: a meta-update takes meta_batch_size tasks"))
    first_order: bool = field(default=False, metadata=_h(
        "FOMAML: leave out the second-order terms of the meta-gradient"))
    gamma: float = field(default=0.99, metadata=_h("discount factor of the returns"))
    hiddens: tuple[int, ...] = field(default=(100, 100), metadata=_h("hidden layer sizes"))
    activation: Literal["tanh", "relu", "elu"] = field(
        default="relu", metadata=_h("hidden activation"))
    init_log_std: float = field(default=0.0, metadata=_h(
        "initial log std of the Gaussian policy (Box actions)"))
    baseline_reg: float = field(default=1e-5, metadata=_h(
        "ridge term of the linear feature baseline's least squares", ge=0))

    def validate(self) -> None:
        super().validate()
        if self.inner_lr <= 0:
            raise ConfigError("config key 'inner_lr' must be > 0")
        if self.inner_adaptation_steps < 1:
            raise ConfigError("config key 'inner_adaptation_steps' must be >= 1")
        if self.meta_batch_size < 1:
            raise ConfigError("config key 'meta_batch_size' must be >= 1")
        if self.policies:
            raise ConfigError("config key 'policies': MAML trains one (single-agent) policy")
        if self.output is not None:
            raise ConfigError("config key 'output': MAML does not write its sampled batches "
                              "to a dataset")


# -- the inner loop: pieces that run on a worker -------------------------------------------------
def linear_baseline(obs: np.ndarray, t: np.ndarray, returns: np.ndarray,
                    reg: float = 1e-5) -> np.ndarray:
    """Fitted values of the linear feature baseline (Duan et al. 2016): least squares of the
    returns on ``[o, o^2, t, t^2, t^3, 1]`` (``t`` in hundreds of steps), ridge ``reg``."""
    o = np.clip(np.asarray(obs, np.float64).reshape(len(returns), -1), -10, 10)
    s = np.asarray(t, np.float64).reshape(-1, 1) / 100.0
    feats = np.concatenate([o, o * o, s, s ** 2, s ** 3, np.ones_like(s)], axis=1)
    a = feats.T @ feats + reg * np.eye(feats.shape[1])
    coef = np.linalg.solve(a, feats.T @ np.asarray(returns, np.float64))
    return feats @ coef


def pg_tensors(policy: TorchPolicy, batch: SB, reg: float) -> dict[str, torch.Tensor]:
    """``obs``, ``actions`` and standardized advantages ``G_t - b(s_t, t)`` of a batch whose
    ``value_targets`` are the discounted returns."""
    returns = np.asarray(batch[SB.VALUE_TARGETS], np.float64)
    adv = returns - linear_baseline(batch[SB.OBS], batch[SB.T], returns, reg)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    tensors = policy.batch_to_tensors({SB.OBS: batch[SB.OBS], SB.ACTIONS: batch[SB.ACTIONS]})
    tensors[SB.ADVANTAGES] = torch.as_tensor(adv, dtype=torch.float32)
    return tensors


def pg_surrogate(policy: TorchPolicy, params: dict[str, torch.Tensor],
                 tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """``-mean(log pi_params(a|s) * A)`` with the policy's model run on ``params``."""
    out = functional_call(policy.model, params, (tensors[SB.OBS],))
    dist_inputs = out[0] if isinstance(out, tuple) else out
    logp = policy.action_dist(dist_inputs).logp(tensors[SB.ACTIONS])
    return -(logp * tensors[SB.ADVANTAGES]).mean()


def inner_step(policy: TorchPolicy, params: dict[str, torch.Tensor],
               tensors: dict[str, torch.Tensor], inner_lr: float, create_graph: bool
               ) -> dict[str, torch.Tensor]:
    """One policy-gradient step ``params - inner_lr * grad L(params)`` (parameters the loss
    does not reach, the value head, stay); ``create_graph`` keeps it differentiable."""
    names = list(params)
    loss = pg_surrogate(policy, params, tensors)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph,
                                allow_unused=True)
    return {n: params[n] if g is None else params[n] - inner_lr * g
            for n, g in zip(names, grads, strict=True)}


def _sample_fresh(worker: RolloutWorker, params: dict[str, torch.Tensor] | None) -> SB:
    """One episode per env from a reset, acting with ``params`` (None: the worker's weights);
    the model's own weights are put back afterwards."""
    worker._obs, worker._carry = None, None  # no episode carries over from other weights/task
    model = worker.policy.model
    if params is None:
        return worker.sample()
    saved = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    try:
        return worker.sample()
    finally:
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(saved[k])


def set_worker_task(worker: RolloutWorker, task: Task) -> None:
    """``set_task(task)`` on every env of the worker (their next episodes are the task's)."""
    for env in worker.vector_env.envs:
        task_env(env).set_task(task)


def adapt_to_task(worker: RolloutWorker, task: Task, meta_gradient: bool = True
                  ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """MAML's per-task work on a worker: set the task, sample, take the inner steps, sample
    again and (``meta_gradient``) compute this task's meta-gradient. Returns ``(grads,
    info)``, grads in the order of the model's trainable parameters (zeros without
    ``meta_gradient``), info with ``count``, ``stats_pre``/``stats_post`` (episode returns and
    lengths of the first and the post-adaptation sample), ``inner_loss`` (the surrogate of the
    adapted parameters on each inner batch, averaged over the steps) and ``outer_loss``."""
    policy, cfg = worker.policy, worker.policy.config
    set_worker_task(worker, task)
    second_order = meta_gradient and not cfg["first_order"]
    theta = {k: v.detach().clone().requires_grad_(meta_gradient)
             for k, v in policy.model.named_parameters()}
    params, count, first_stats, inner_losses = theta, 0, None, []
    for step in range(int(cfg["inner_adaptation_steps"])):
        batch = _sample_fresh(worker, None if step == 0 else params)
        count += batch.count
        first_stats = batch.stats if first_stats is None else first_stats
        tensors = pg_tensors(policy, batch, cfg["baseline_reg"])
        if not params[next(iter(params))].requires_grad:  # no meta-gradient: plain PG steps
            params = {k: v.detach().requires_grad_() for k, v in params.items()}
        params = inner_step(policy, params, tensors, float(cfg["inner_lr"]), second_order)
        if not second_order:  # FOMAML / evaluation: theta' is a constant of the outer loss
            params = {k: v.detach().requires_grad_(meta_gradient) for k, v in params.items()}
        with torch.no_grad():
            inner_losses.append(float(pg_surrogate(policy, params, tensors)))
    post = _sample_fresh(worker, params)
    count += post.count
    info: dict[str, Any] = {"count": count, "stats_pre": first_stats, "stats_post": post.stats,
                            "task": task, "inner_loss": float(np.mean(inner_losses))}
    trainable = [k for k, p in policy.model.named_parameters() if p.requires_grad]
    if not meta_gradient:
        return [np.zeros(tuple(theta[k].shape), np.float32) for k in trainable], info
    outer = pg_surrogate(policy, params, pg_tensors(policy, post, cfg["baseline_reg"]))
    wrt = theta if second_order else params  # FOMAML: the gradient at theta'
    grads = torch.autograd.grad(outer, [wrt[k] for k in trainable], allow_unused=True)
    info["outer_loss"] = float(outer.detach())
    return [np.zeros(tuple(theta[k].shape), np.float32) if g is None else g.numpy()
            for k, g in zip(trainable, grads, strict=True)], info


def evaluate_adaptation(worker: RolloutWorker, task: Task) -> dict[str, Any]:
    """``adapt_to_task`` without the meta-gradient (for held-out tasks)."""
    return adapt_to_task(worker, task, meta_gradient=False)[1]


# -- the driver side ----------------------------------------------------------------------------
class SampleTasks(Operator):
    """The driver's task sampler: each item becomes ``n`` tasks drawn from the env's
    distribution with seed ``(seed, i)``, ``i`` the number of batches drawn so far (a plan
    counter, so a restored run draws the tasks it would have drawn)."""

    def __init__(self, env: Any, env_config: dict, n: int, seed: int) -> None:
        self.sampler = task_env(make_env(env, env_config))
        self.n, self.seed = int(n), int(seed)

    @property
    def op_name(self) -> str:
        return f"SampleTasks({self.n} per meta-batch)"

    def __call__(self, _: Any) -> list[Task]:
        i = int(self.metrics.counters[TASK_BATCHES])
        self.metrics.counters[TASK_BATCHES] += 1
        seed = int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
        return self.sampler.sample_tasks(self.n, seed=seed)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


class MetaUpdate(Operator):
    """Average the tasks' meta-gradients and take one Adam step on the local policy; record
    pre- and post-adaptation returns. Emits the averaged ``(grads, info)``'s info."""

    op_name = "MetaUpdate(average tasks, Adam)"

    def __init__(self, workers: WorkerSet) -> None:
        self.workers = workers

    def __call__(self, results: list[tuple[list[np.ndarray], dict[str, Any]]]) -> dict:
        metrics = self.metrics
        pre = [r for _, i in results for r in i["stats_pre"]["episode_returns"]]
        post = [r for _, i in results for r in i["stats_post"]["episode_returns"]]
        for _, info in results:
            record_sampled(metrics, info["count"], info["stats_post"])
        grads, info = AverageGradients()(results)
        with metrics.timers["meta_update"]:
            self.workers.local_worker().apply_gradients(grads)
        metrics.counters["env_steps_trained"] += info["count"]
        metrics.counters["num_grad_updates"] += 1
        metrics.info["episode_return_mean_pre_adaptation"] = _mean(pre)
        metrics.info["episode_return_mean_post_adaptation"] = _mean(post)
        metrics.info["adaptation_delta"] = _mean(post) - _mean(pre)
        metrics.info["learner"] = {
            "grad_gnorm": float(np.sqrt(sum(float(np.sum(g * g)) for g in grads))),
            "inner_loss": _mean([i["inner_loss"] for _, i in results]),
            "outer_loss": _mean([i["outer_loss"] for _, i in results]),
            "tasks": len(results)}
        return info


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    task_batches = (from_local_iterable(itertools.count, name="meta-batches")
                    .for_each(SampleTasks(config.env, config.env_config,
                                          config.meta_batch_size, config.seed)))
    train_op = (ScatterToWorkers(task_batches, workers, adapt_to_task)
                .for_each(MetaUpdate(workers))
                .for_each(BroadcastWeights(workers)))
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


def adaptation_returns(workers: WorkerSet, tasks: list[Task]) -> dict[str, float]:
    """Mean pre- and post-adaptation episode returns of the current meta-parameters on
    ``tasks`` (each adapted to on the local worker, the meta-parameters left unchanged)."""
    worker = workers.local_worker()
    infos = [evaluate_adaptation(worker, task) for task in tasks]
    pre = _mean([r for i in infos for r in i["stats_pre"]["episode_returns"]])
    post = _mean([r for i in infos for r in i["stats_post"]["episode_returns"]])
    return {"pre_adaptation": pre, "post_adaptation": post, "adaptation_delta": post - pre}


def finite_horizon_returns(policy: TorchPolicy, batch: SB) -> SB:
    """``value_targets`` = discounted returns with no bootstrap at the time limit (the tasks
    are finite-horizon, as in the paper; MAML's policy has no critic to bootstrap with)."""
    batch[SB.VALUE_TARGETS] = compute_discounted_returns(
        batch[SB.REWARDS], batch[SB.TERMINATEDS], batch[SB.TRUNCATEDS], None,
        float(policy.config["gamma"]), batch_segment_ends(batch))
    return batch


def policy_factory(config: Config):
    policy_config = dict(
        hiddens=config.hiddens, activation=config.activation, lr=config.lr, gamma=config.gamma,
        use_gae=False, use_critic=False, vf_share_layers=True, init_log_std=config.init_log_std,
        inner_lr=config.inner_lr, inner_adaptation_steps=config.inner_adaptation_steps,
        first_order=config.first_order, baseline_reg=config.baseline_reg)

    def make(obs_space, action_space) -> TorchPolicy:
        return TorchPolicy(obs_space, action_space, policy_config, seed=config.seed,
                           postprocess_fn=finite_horizon_returns)

    return make


@register_algorithm("maml")
class MAML(AlgorithmBuilder):
    """Model-agnostic meta-learning (second-order, or first-order with ``first_order``)."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_workers(self, config: Config, runtime: Runtime) -> WorkerSet:
        try:
            task_env(make_env(config.env, config.env_config))
        except TypeError:
            raise ConfigError(f"config key 'env': {config.env!r} has no task distribution "
                              "(MAML needs a rldataflow.envs.TaskSettableEnv, e.g. "
                              f"{POINT_NAVIGATION_ID!r})") from None
        # complete episodes from a reset: each sample is one whole episode per env
        return default_workers(config, runtime, policy_factory(config),
                               batch_mode="complete_episodes", rollout_fragment_length=1)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)
