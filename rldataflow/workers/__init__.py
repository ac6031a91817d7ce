"""Workers: the ``Worker`` protocol and ``WorkerBase``; ``RolloutWorker`` (a vector env plus a
policy; runtimes make it an actor) and ``MultiAgentRolloutWorker`` (PettingZoo parallel envs
plus several policies); ``WorkerSet`` (a local worker and an ActorPool of remote ones).

Example::

    from rldataflow.workers import RolloutWorker

    worker = RolloutWorker("CartPole-v1", num_envs=8, rollout_fragment_length=64, seed=0)
    batch = worker.sample()        # 512 rows with advantages and value targets
"""

from rldataflow.workers.base import Worker, WorkerBase
from rldataflow.workers.multi_agent_worker import MultiAgentRolloutWorker
from rldataflow.workers.rollout_worker import RolloutWorker
from rldataflow.workers.worker_set import WorkerSet

__all__ = ["MultiAgentRolloutWorker", "RolloutWorker", "Worker", "WorkerBase", "WorkerSet"]
