"""What an algorithm is to the rest of the package: one class with typed methods.

An algorithm file (``rldataflow/algorithms/<name>.py``) defines its ``Config`` dataclass, its
loss, its plan function, and at the bottom one :class:`AlgorithmBuilder` subclass registered
under its name (:func:`~rldataflow.algorithms.registry.register_algorithm`). The trainer calls
only these methods; nothing is looked up by name on a module.

* :meth:`~AlgorithmBuilder.make_workers` -- the rollout workers (default: the common config
  fields, policies from :meth:`~AlgorithmBuilder.policy_factory`);
* :meth:`~AlgorithmBuilder.make_plan` -- the dataflow, a :class:`~rldataflow.flow.Plan` that owns
  its threads and actors; building it starts nothing;
* :meth:`~AlgorithmBuilder.training_flow` -- for algorithms that can be one branch of a larger
  plan (``composite``): experience in, ``(batch, learner stats)`` out;
* :meth:`~AlgorithmBuilder.extra_state` / :meth:`~AlgorithmBuilder.restore_extra_state` --
  state a checkpoint needs that lives outside the workers' policies.

Example (a whole algorithm; see ``docs/adding_an_algorithm.md``)::

    @register_algorithm("my_pg")
    class MyPG(AlgorithmBuilder):
        Config = Config

        def policy_factory(self, config):
            return lambda obs_space, action_space: TorchPolicy(
                obs_space, action_space, {"lr": config.lr}, loss_fn=my_loss)

        def make_plan(self, workers, config):
            train_op = (ParallelRollouts(workers).for_each(ConcatBatches(1000))
                        .for_each(TrainOneStep(workers)))
            return Plan(StandardMetricsReporting(train_op, workers))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rldataflow.data.dataset import DatasetOutput
from rldataflow.flow import LocalIterator, Plan
from rldataflow.policies.policy_spec import policy_factories
from rldataflow.runtime import Runtime
from rldataflow.utils.config import AlgorithmConfig
from rldataflow.workers import MultiAgentRolloutWorker, RolloutWorker, WorkerSet

PolicyFactory = Any  # (obs_space, action_space) -> Policy


def default_workers(config: AlgorithmConfig, runtime: Runtime, policy_factory: Any,
                    **worker_kwargs: Any) -> WorkerSet:
    """Rollout workers as most algorithms want them, built from the common config fields.

    With ``config.policies`` set they are :class:`MultiAgentRolloutWorker` s; ``policy_factory``
    is then ``{policy_id: factory}`` (see ``rldataflow.policies.policy_spec.policy_factories``)
    or one factory used for every policy. ``worker_kwargs`` are passed to every worker (e.g.
    ``include_next_obs=True``).
    """
    kwargs = dict(env=config.env, env_config=config.env_config,
                  num_envs=config.num_envs_per_worker,
                  rollout_fragment_length=config.rollout_fragment_length, seed=config.seed)
    worker_cls: type = RolloutWorker
    if config.policies:
        factories = (dict(policy_factory) if isinstance(policy_factory, Mapping)
                     else {pid: policy_factory for pid in config.policies})
        kwargs.update(policy_factories=factories, policy_mapping_fn=config.policy_mapping_fn)
        worker_cls = MultiAgentRolloutWorker
    else:
        kwargs["policy_factory"] = policy_factory
    kwargs.update(worker_kwargs)
    return WorkerSet(runtime, config.num_workers, kwargs,
                     restart_failed=config.restart_failed_workers, worker_cls=worker_cls,
                     output=dataset_output(config))


def dataset_output(config: AlgorithmConfig) -> DatasetOutput | None:
    """Where the workers write their sampled batches (the ``output*`` config keys), if set."""
    if config.output is None:
        return None
    return DatasetOutput(config.output, config.output_format, config.output_max_rows_per_file)


def as_plan(made: Any, where: str) -> Plan:
    """A plan function's result as a :class:`Plan` (a bare results iterator is wrapped)."""
    if isinstance(made, Plan):
        return made
    if isinstance(made, LocalIterator):
        return Plan(made)
    raise TypeError(f"the plan function {where} returned {type(made).__name__}, not a "
                    "LocalIterator of results (end it with StandardMetricsReporting)")


class AlgorithmBuilder:
    """Builds one algorithm's workers and plan from its config; stateless.

    Subclasses set :attr:`Config` and implement :meth:`make_plan`; most also implement
    :meth:`policy_factory` (used by the default :meth:`make_workers`).
    """

    #: the registered name (set by ``register_algorithm``)
    name: ClassVar[str] = ""
    #: the algorithm's config dataclass
    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    #: what this algorithm needs of every rollout worker that feeds it, also when it is one
    #: branch of a composite plan (e.g. DQN: ``{"include_next_obs": True}``)
    worker_options: ClassVar[Mapping[str, Any]] = {}

    # -- workers ------------------------------------------------------------------------------
    def policy_factory(self, config: AlgorithmConfig) -> PolicyFactory:
        """``(obs_space, action_space) -> Policy`` for the workers of this config."""
        raise NotImplementedError(f"{type(self).__name__} defines no policy_factory; override "
                                  "make_workers or policy_factory")

    def make_workers(self, config: AlgorithmConfig, runtime: Runtime) -> WorkerSet:
        """The local and remote rollout workers (multi-agent ones if ``config.policies``)."""
        factory = (policy_factories(config, self.policy_factory) if config.policies
                   else self.policy_factory(config))
        return default_workers(config, runtime, factory, **self.worker_options)

    # -- the plan -----------------------------------------------------------------------------
    def make_plan(self, workers: WorkerSet, config: AlgorithmConfig) -> Plan:
        """The algorithm's dataflow, ending in result dicts; must not start threads or
        sampling (the plan starts what it owns on its first ``next``)."""
        raise NotImplementedError

    @property
    def composable(self) -> bool:
        """Whether :meth:`training_flow` is implemented (the algorithm can be a branch)."""
        return type(self).training_flow is not AlgorithmBuilder.training_flow

    def training_flow(self, batches: LocalIterator[Any], workers: WorkerSet,
                      config: AlgorithmConfig, policy_id: str | None = None
                      ) -> LocalIterator[Any]:
        """Experience in, ``(batch, learner stats)`` out, training ``policy_id``."""
        raise NotImplementedError(f"{self.name or type(self).__name__} has no training "
                                  "sub-flow to compose")

    # -- checkpoints --------------------------------------------------------------------------
    def extra_state(self, plan: Plan, workers: WorkerSet, config: AlgorithmConfig
                    ) -> dict[str, Any]:
        """State a checkpoint must keep beyond the workers' policies (default: none)."""
        return {}

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: AlgorithmConfig,
                            state: Mapping[str, Any]) -> None:
        """Put back what :meth:`extra_state` returned (called after the policies are set)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
