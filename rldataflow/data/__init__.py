"""Experience data: columnar :class:`SampleBatch` and :class:`MultiAgentBatch`.

Example::

    import numpy as np
    from rldataflow.data import SampleBatch

    batch = SampleBatch({SampleBatch.OBS: np.zeros((8, 4)), SampleBatch.REWARDS: np.ones(8)})
    for mb in batch.minibatches(4, rng=0):
        print(mb.count)   # 4, 4
"""

from rldataflow.data.dataset import DatasetError, DatasetOutput, DatasetReader, DatasetWriter
from rldataflow.data.episode_replay_buffer import EpisodeReplayBuffer
from rldataflow.data.frame_stack_buffer import (
    FrameStackReplayBuffer,
    PrioritizedFrameStackReplayBuffer,
)
from rldataflow.data.replay_buffer import LinearSchedule, PrioritizedReplayBuffer, ReplayBuffer
from rldataflow.data.sample_batch import MultiAgentBatch, SampleBatch, concat_samples
from rldataflow.data.segment_tree import MinSegmentTree, SumSegmentTree
from rldataflow.data.sequence_builder import SequenceBuilder

__all__ = [
    "DatasetError",
    "DatasetOutput",
    "DatasetReader",
    "DatasetWriter",
    "EpisodeReplayBuffer",
    "FrameStackReplayBuffer",
    "LinearSchedule",
    "MinSegmentTree",
    "MultiAgentBatch",
    "PrioritizedFrameStackReplayBuffer",
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "SampleBatch",
    "SequenceBuilder",
    "SumSegmentTree",
    "concat_samples",
]
