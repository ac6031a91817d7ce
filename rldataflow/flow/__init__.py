"""The dataflow core: lazy streams over actors, joined by a small vocabulary of operators.

Example::

    from rldataflow.flow import from_range
    from rldataflow.runtime import get_runtime

    with get_runtime("process") as rt:
        squares = from_range(100, num_shards=2, runtime=rt).for_each(lambda x: x * x)
        it = squares.gather_async(num_async=2).batch(10)
        print(it.describe())
        print(next(it))

Nothing here knows about RL, torch or gymnasium; the RL operators live in ``rldataflow.ops``.
"""

from rldataflow.flow.concurrency import Concurrently
from rldataflow.flow.errors import FlowError, OperatorError
from rldataflow.flow.local_iterator import LocalIterator, from_local_iterable
from rldataflow.flow.metrics import Metrics, Timer
from rldataflow.flow.operator import Operator, StreamOperator
from rldataflow.flow.parallel_iterator import FailurePolicy, ParallelIterator
from rldataflow.flow.plan import Plan, Resource
from rldataflow.flow.queues import Dequeue, Enqueue
from rldataflow.flow.scatter import ScatterCalls
from rldataflow.flow.signals import NOT_READY
from rldataflow.flow.sources import from_actors, from_items, from_iterators, from_range

__all__ = [
    "Concurrently", "Dequeue", "Enqueue", "FailurePolicy", "FlowError", "LocalIterator",
    "Metrics", "NOT_READY", "Operator", "OperatorError", "ParallelIterator", "Plan", "Resource",
    "ScatterCalls", "StreamOperator",
    "Timer", "from_actors", "from_items", "from_iterators", "from_local_iterable", "from_range",
]
