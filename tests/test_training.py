"""The training loop from Python: stop conditions, checkpoints, run logs, non-main threads."""

from __future__ import annotations

import json
import signal
import threading

import pytest
import torch

import rldataflow
from rldataflow.training import StopConditions, Trainer, TrainingOutcome, run
from rldataflow.utils.checkpoint import list_checkpoints

SMALL = dict(env="CartPole-v1", runtime="inline", num_workers=0, num_envs_per_worker=2,
             rollout_fragment_length=32, train_batch_size=64, hiddens=(16,))


def build_pg():
    return rldataflow.build("pg", **SMALL)


def test_run_stops_after_iters_and_leaves_a_restorable_checkpoint(tmp_path, capsys):
    handler = signal.getsignal(signal.SIGINT)
    with build_pg() as algo:
        outcome = run(algo, tmp_path, StopConditions(stop_iters=2), progress=False)
        assert algo.iteration == 2
    assert signal.getsignal(signal.SIGINT) is handler
    assert isinstance(outcome, TrainingOutcome)
    assert outcome.reason == "reached 2 iterations" and not outcome.interrupted
    assert outcome.iterations == 2 and outcome.result["iteration"] == 2
    assert outcome.run_dir == tmp_path
    assert outcome.checkpoint is not None and outcome.checkpoint.is_dir()
    assert list_checkpoints(tmp_path) == [outcome.checkpoint]
    with rldataflow.Algorithm.restore(outcome.checkpoint) as restored:
        assert restored.iteration == 2
    lines = (tmp_path / "result.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]
    assert "reached 2 iterations: iteration 2" in capsys.readouterr().out


def test_stop_steps_and_checkpoint_every(tmp_path):
    with build_pg() as algo:
        outcome = Trainer(algo, tmp_path, StopConditions(stop_steps=200), checkpoint_every=1,
                          progress=False, summary=False).run()
    assert outcome.reason == "reached 200 env steps"
    assert outcome.result["env_steps_sampled"] >= 200
    # 64 steps per iteration: the 4th reaches 200, the 3rd did not
    assert outcome.iterations == 4
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        f"checkpoint_{i:06d}" for i in range(1, 5)]


def test_run_from_a_non_main_thread(tmp_path):
    outcomes: list[TrainingOutcome] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            with build_pg() as algo:
                outcomes.append(run(algo, tmp_path, StopConditions(stop_iters=1),
                                    progress=False, summary=False))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert not errors, errors
    assert outcomes[0].iterations == 1 and outcomes[0].checkpoint is not None


def test_request_stop_ends_the_run_after_the_current_iteration(tmp_path):
    with build_pg() as algo:
        trainer = Trainer(algo, tmp_path, progress=False, summary=False)
        original_train = algo.train

        def train_then_stop():
            result = original_train()
            trainer.request_stop()
            return result

        algo.train = train_then_stop
        outcome = trainer.run()
    assert outcome.interrupted and outcome.reason == "stop requested"
    assert outcome.iterations == 1 and outcome.checkpoint is not None


def test_stop_algorithm_stops_it_even_when_training_fails(tmp_path):
    with build_pg() as algo:
        def broken():
            raise RuntimeError("boom")

        algo.train = broken
        with pytest.raises(RuntimeError, match="boom"):
            run(algo, tmp_path, StopConditions(stop_iters=1), progress=False,
                stop_algorithm=True)
        assert algo._stopped
    assert list_checkpoints(tmp_path) == []


# the learner thread of each algorithm that has one, and its config for a quick inline run
LEARNER_THREADS = {
    "impala": (dict(SMALL, learner_thread=True), "impala-learner",
               lambda plan: (plan.learner.thread, plan.learner.policy)),
    "appo": (dict(SMALL, learner_thread=True), "impala-learner",
             lambda plan: (plan.learner.thread, plan.learner.policy)),
    "apex": (dict(env="CartPole-v1", runtime="inline", num_workers=1, num_envs_per_worker=2,
                  rollout_fragment_length=10, learning_starts=100, buffer_size=1000,
                  num_replay_shards=1, train_batch_size=32, hiddens=(16,),
                  min_steps_per_iteration=50, min_time_s_per_iteration=0.0,
                  training_intensity=1.0), "apex-learner",
             lambda plan: (plan.learner, None)),
}


@pytest.mark.parametrize("algo_name", sorted(LEARNER_THREADS))
def test_learner_thread_death_is_one_error_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                              algo_name):
    from rldataflow.flow import OperatorError
    from rldataflow.trainer import Algorithm
    from rldataflow.utils.checkpoint import CheckpointError

    config, thread_name, parts = LEARNER_THREADS[algo_name]
    with rldataflow.build(algo_name, **config, checkpoint_every=1) as algo:
        thread, policy = parts(algo.plan)
        policy = policy or algo.workers.local_worker().policy
        assert thread.name == thread_name
        real_learn = thread.learn_fn
        calls = []

        def learn_then_fail(batch):
            calls.append(1)
            if len(calls) > 6:
                with torch.no_grad():  # the failed update leaves bad weights behind
                    for p in policy.model.parameters():
                        p.fill_(float("nan"))
                raise FloatingPointError("loss is nan")
            return real_learn(batch)

        thread.learn_fn = learn_then_fail
        with pytest.raises((OperatorError, CheckpointError)) as err:
            run(algo, tmp_path, StopConditions(stop_iters=1000), progress=False)
    # either the plan saw the dead thread first, or a checkpoint refused the failed plan
    message = str(err.value)
    assert "\n" not in message
    assert thread_name in message and "FloatingPointError: loss is nan" in message
    assert isinstance(err.value.__cause__, FloatingPointError)

    saved = list_checkpoints(tmp_path)
    assert saved, "no checkpoint was written before the failure"
    restored = Algorithm.restore(saved[-1])
    try:
        for p in restored.workers.local_worker().policy.model.parameters():
            assert torch.isfinite(p).all()
    finally:
        restored.stop()


def test_extra_loggers_get_every_result_and_on_result_can_stop_the_run(tmp_path):
    class Recorder:
        def __init__(self):
            self.results, self.closed = [], False

        def log(self, result):
            self.results.append(result["iteration"])

        def close(self):
            self.closed = True

    recorder = Recorder()
    seen = []

    def on_result(trainer, result):
        seen.append(result["iteration"])
        if result["iteration"] == 2:
            trainer.request_stop("enough")

    with build_pg() as algo:
        outcome = Trainer(algo, tmp_path, StopConditions(stop_iters=5), progress=False,
                          summary=False, loggers=[recorder], on_result=on_result).run()
    assert recorder.results == seen == [1, 2] and recorder.closed
    assert outcome.reason == "enough" and outcome.iterations == 2
