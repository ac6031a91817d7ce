"""RL operators built on the flow core: rollouts, batching, training, replay, reporting.

Example (PPO's plan)::

    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    train_op = (rollouts
                .for_each(ConcatBatches(min_batch_size=4000))
                .for_each(StandardizeFields(["advantages"]))
                .for_each(TrainOneStep(workers, num_epochs=10, minibatch_size=256)))
    return StandardMetricsReporting(train_op, workers)
"""

from rldataflow.ops.aggregation import AggregationWorker, AggregatorSet
from rldataflow.ops.batching import ConcatBatches, SelectExperiences, StandardizeFields
from rldataflow.ops.dataset import ShuffleBuffer, WriteToDataset, from_dataset
from rldataflow.ops.learner_thread import LearnerThread
from rldataflow.ops.mixin_input import MixWithSamples
from rldataflow.ops.mixin_replay import MixInReplay
from rldataflow.ops.replay import (
    Replay,
    ReplayActor,
    StoreToReplayBuffer,
    ThrottleSampling,
    UpdatePriorities,
)
from rldataflow.ops.reporting import CollectMetrics, StandardMetricsReporting
from rldataflow.ops.rollouts import (
    AsyncGradients,
    ParallelRollouts,
    RecordSampled,
    ScatterToWorkers,
)
from rldataflow.ops.train import (
    ApplyGradients,
    AverageGradients,
    ComputeGradients,
    TrainOneStep,
    UpdateTargetNetwork,
)
from rldataflow.ops.weights import BroadcastWeights, SyncWeights

__all__ = [
    "AggregationWorker", "AggregatorSet", "MixInReplay", "MixWithSamples",
    "ApplyGradients", "AsyncGradients", "AverageGradients", "BroadcastWeights", "SyncWeights",
    "CollectMetrics", "ComputeGradients", "ConcatBatches", "LearnerThread", "ParallelRollouts",
    "RecordSampled", "Replay", "ReplayActor", "StoreToReplayBuffer", "ThrottleSampling",
    "ScatterToWorkers",
    "UpdatePriorities",
    "SelectExperiences", "StandardMetricsReporting", "StandardizeFields", "TrainOneStep",
    "UpdateTargetNetwork", "ShuffleBuffer", "WriteToDataset", "from_dataset",
]
