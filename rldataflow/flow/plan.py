"""Plan: an algorithm's stream of results together with the resources that stream needs.

A plan is more than its iterator: Ape-X's needs a learner thread and replay shards, IMPALA's a
learner thread and maybe aggregators. RLlib hung those on the iterator object as ad-hoc
attributes and nobody stopped them reliably. Here the plan *owns* them: they are declared when
the plan is made, started when the first result is pulled (so ``describe()`` starts nothing)
and stopped, in reverse order, by :meth:`Plan.stop`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from rldataflow.flow.local_iterator import LocalIterator
from rldataflow.flow.metrics import Metrics

T = TypeVar("T")
logger = logging.getLogger(__name__)


@runtime_checkable
class Resource(Protocol):
    """Something a plan owns: stopped with the plan (``start`` is optional, and so is an
    ``error`` attribute: the exception that ended it, e.g. :class:`LearnerThread`'s)."""

    def stop(self) -> None: ...


class Plan(Generic[T]):
    """``results`` (a :class:`LocalIterator`) plus the ``resources`` it owns.

    Iterating the plan pulls ``results``; the first pull starts every resource that has a
    ``start()`` method and is not yet running. Subclasses name their parts as typed attributes
    (e.g. ``ApexPlan.learner``) for inspection and checkpoints. Example::

        thread = LearnerThread(learn_fn)
        results = StandardMetricsReporting(train_op, workers)
        plan = Plan(results, resources=[thread])   # nothing started yet
        print(plan.describe())
        result = next(plan)                          # starts the thread, then pulls
        plan.stop()                                  # stops the thread
    """

    def __init__(self, results: LocalIterator[T], resources: Iterable[Resource] = ()) -> None:
        if not isinstance(results, LocalIterator):
            raise TypeError(f"a Plan's results must be a LocalIterator, got "
                            f"{type(results).__name__} (end the plan with "
                            "StandardMetricsReporting)")
        self.results = results
        self.resources: list[Resource] = list(resources)
        self._started = False
        self._stopped = False

    # -- running --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the resources (idempotent; the first ``next`` calls it)."""
        if self._started:
            return
        self._started = True
        for resource in self.resources:
            if isinstance(resource, threading.Thread):
                if resource.ident is None:  # a thread starts once; its owner may have already
                    resource.start()
                continue
            start = getattr(resource, "start", None)
            if start is not None:
                start()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._stopped:
            raise RuntimeError("this plan was stopped")
        if not self._started:
            self.start()
        return next(self.results)

    def stop(self) -> None:
        """Stop every resource, last-made first; one failing does not keep the rest running."""
        if self._stopped:
            return
        self._stopped = True
        first_error: BaseException | None = None
        for resource in reversed(self.resources):
            try:
                resource.stop()
            except BaseException as exc:  # noqa: BLE001 - stop the others, then report
                logger.warning("stopping %r failed: %s", resource, exc)
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    @property
    def started(self) -> bool:
        return self._started

    def failure(self) -> tuple[str, BaseException] | None:
        """``(which resource, its exception)`` for the first owned resource that failed, else
        ``None``. A failed plan's state may be half-updated: checkpoints refuse it. Example::

            failed = plan.failure()   # ("thread 'impala-learner'", FloatingPointError(...))
        """
        for resource in self.resources:
            error = getattr(resource, "error", None)
            if isinstance(error, BaseException):
                name = getattr(resource, "name", None)
                label = f"thread {name!r}" if isinstance(resource, threading.Thread) else (
                    f"{type(resource).__name__} {name!r}" if name else type(resource).__name__)
                return label, error
        return None

    # -- inspection -----------------------------------------------------------------------
    @property
    def metrics(self) -> Metrics:
        return self.results.metrics

    @property
    def parents(self) -> list[Any]:
        return self.results.parents

    def describe(self) -> str:
        """The plan as an indented tree (see :meth:`LocalIterator.describe`)."""
        return self.results.describe()

    def to_dot(self) -> str:
        return self.results.to_dot()

    def to_mermaid(self) -> str:
        return self.results.to_mermaid()

    def __repr__(self) -> str:
        owned = ", ".join(type(r).__name__ for r in self.resources) or "nothing"
        return f"{type(self).__name__}({self.results.name}; owns {owned})"
