"""Evaluation during training (``evaluation_*`` config keys), evaluation workers that survive
death, the best checkpoint, and the CLI around them: evaluate --video and plot."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.wrappers import TimeLimit

import rldataflow
from rldataflow.runtime import ActorDiedError
from rldataflow.training import StopConditions, _BestCheckpoint, run
from rldataflow.utils.checkpoint import best_checkpoint, latest_checkpoint, read_metadata
from rldataflow.utils.config import ConfigError

SMALL = dict(env="CartPole-v1", num_envs_per_worker=2, rollout_fragment_length=32,
             train_batch_size=128, seed=0)
INLINE = dict(SMALL, runtime="inline", num_workers=0)
EVAL_KEYS = ("evaluation/episode_return_mean", "evaluation/episode_return_min",
             "evaluation/episode_return_max", "evaluation/episode_len_mean",
             "evaluation/num_episodes")


def _evaluation(result: dict) -> dict:
    return {k: v for k, v in result.items() if k in EVAL_KEYS}


def test_evaluation_keys_appear_every_interval_iterations():
    with rldataflow.build("pg", evaluation_interval=2, evaluation_num_episodes=3,
                          **INLINE) as algo:
        results = [algo.train() for _ in range(4)]
        direct = algo.evaluate(2)
    for i, result in enumerate(results, start=1):
        assert ("evaluation/episode_return_mean" in result) == (i % 2 == 0), i
    for result in results[1::2]:
        assert result["evaluation/num_episodes"] == 3
        # CartPole pays 1 per step: the mean length is the mean return
        assert result["evaluation/episode_len_mean"] == result["evaluation/episode_return_mean"]
        assert (result["evaluation/episode_return_min"] <= result["evaluation/episode_return_mean"]
                <= result["evaluation/episode_return_max"])
    assert results[3]["counters"]["evaluation_episodes"] == 6
    assert set(direct) == set(EVAL_KEYS) and direct["evaluation/num_episodes"] == 2


def test_evaluation_is_off_by_default():
    with rldataflow.build("pg", **INLINE) as algo:
        result = algo.train()
        assert algo._evaluator is None  # no evaluation workers were made
    with rldataflow.build("pg", evaluation_interval=0, **INLINE) as algo:
        assert not any(k.startswith("evaluation/") for k in algo.train())
    assert not any(k.startswith("evaluation/") for k in result)


def test_deterministic_evaluation_is_reproducible_inline():
    def evaluations(**extra):
        with rldataflow.build("pg", evaluation_interval=1, evaluation_num_episodes=4,
                              **INLINE, **extra) as algo:
            return [_evaluation(algo.train()) for _ in range(3)]

    first, second = evaluations(), evaluations()
    assert first == second
    assert first[0] != first[1]  # each evaluation plays new episodes (and new weights)
    # sampling actions changes what is played (same seeds, same weights)
    assert evaluations(evaluation_explore=True) != first


@pytest.mark.parametrize("runtime", ["inline", "process",
                                     pytest.param("ray", marks=pytest.mark.ray)])
def test_evaluation_workers_on_every_runtime(runtime):
    with rldataflow.build("pg", **dict(SMALL, runtime=runtime, num_workers=1),
                          evaluation_interval=1, evaluation_num_workers=2,
                          evaluation_num_episodes=5) as algo:
        algo.train()
        result = algo.train()
        evaluator = algo.evaluator
        # evaluated after this iteration's update: with the learning policy's current weights
        versions = [a.call("apply", lambda w: w.weights_version).result()
                    for a in evaluator.workers.remote_workers()]
        assert versions == [algo.workers.local_worker().weights_version] * 2
    assert result["evaluation/num_episodes"] == 5  # 3 + 2, split over the two workers
    assert result["evaluation/episode_return_mean"] >= 8  # CartPole lasts >= 8 steps


def test_es_evaluates_on_perturbation_workers():
    # ES/ARS workers are not rollout workers; the evaluation set copies whatever the
    # algorithm made (here PerturbationWorkers sharing the noise table)
    with rldataflow.build("es", env="CartPole-v1", runtime="inline", num_workers=1,
                          noise_size=100_000, evaluation_interval=1, evaluation_num_workers=1,
                          evaluation_num_episodes=2) as algo:
        result = algo.train()
        kind = type(algo.evaluator.workers.local_worker()).__name__
    assert kind == "PerturbationWorker"
    assert result["evaluation/num_episodes"] == 2
    assert result["evaluation/episode_len_mean"] == result["evaluation/episode_return_mean"]


def test_evaluation_config_overrides_the_env_config():
    with rldataflow.build("pg", evaluation_interval=1, evaluation_num_episodes=3,
                          evaluation_config={"env_config": {"max_episode_steps": 5}},
                          **INLINE) as algo:
        result = algo.train()
        train_env = algo.workers.local_worker().env_config
    assert result["evaluation/episode_len_mean"] == 5.0  # capped, for the evaluation only
    assert train_env == {}


def test_multi_agent_evaluation():
    with rldataflow.build("ppo", env="rldataflow/MultiAgentCartPole-v0",
                          env_config={"num_agents": 2}, policies=["p0", "p1"],
                          policy_mapping_fn="by_agent", runtime="inline", num_workers=0,
                          num_envs_per_worker=2, rollout_fragment_length=32,
                          train_batch_size=128, minibatch_size=64, num_epochs=1,
                          evaluation_interval=1, evaluation_num_episodes=2) as algo:
        result = algo.train()
    assert result["evaluation/num_episodes"] == 2
    assert result["evaluation/episode_len_mean"] >= 8


def test_evaluation_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="evaluation_parallel_to_training"):
        rldataflow.trainer.make_config("pg", evaluation_interval=1,
                                       evaluation_parallel_to_training=True)
    with pytest.raises(ConfigError, match="evaluation_config.lr"):
        rldataflow.trainer.make_config("pg", evaluation_config={"lr": 0.1})
    with pytest.raises(ConfigError, match="evaluation_config"):
        rldataflow.trainer.make_config("pg", evaluation_config={"seed": "abc"})
    with pytest.raises(ConfigError, match="evaluation_interval"):
        rldataflow.trainer.make_config("pg", evaluation_interval=-1)


# -- evaluation workers die ------------------------------------------------------------------

def _kill(actor) -> None:
    pid = actor.call("apply", lambda worker: os.getpid()).result()
    os.kill(pid, signal.SIGKILL)


def test_a_killed_evaluation_worker_is_restarted_with_current_weights():
    with rldataflow.build("pg", **dict(SMALL, runtime="process", num_workers=1),
                          evaluation_interval=1, evaluation_num_workers=2,
                          evaluation_num_episodes=4) as algo:
        assert algo.train()["evaluation/worker_restarts"] == 0
        victim = algo.evaluator.workers.remote_workers()[1]
        _kill(victim)
        result = algo.train()
        replacement = algo.evaluator.workers.remote_workers()[1]
        version = replacement.call("apply", lambda w: w.weights_version).result()
        expected = algo.evaluator.workers.local_worker().weights_version
    assert result["evaluation/worker_restarts"] == 1
    assert result["evaluation/num_episodes"] == 4  # the lost episodes were played again
    assert replacement.actor_id != victim.actor_id and version == expected


def test_a_killed_evaluation_worker_fails_the_run_naming_it_when_restarts_are_off():
    with rldataflow.build("pg", **dict(SMALL, runtime="process", num_workers=1),
                          evaluation_interval=1, evaluation_num_workers=1,
                          evaluation_num_episodes=2, restart_failed_workers=False) as algo:
        algo.train()
        _kill(algo.evaluator.workers.remote_workers()[0])
        with pytest.raises(ActorDiedError, match="evaluation-RolloutWorker-1"):
            algo.train()


# -- parallel evaluation -----------------------------------------------------------------------

def stamped_cartpole(config: dict) -> TimeLimit:
    """CartPole whose steps sleep 2 ms and append ``<tag> <time>`` lines to ``config["log"]``."""

    class Stamped(CartPoleEnv):
        def step(self, action):
            time.sleep(0.002)
            with open(config["log"], "a") as fh:
                fh.write(f"{config['tag']} {time.time():.6f}\n")
            return super().step(action)

    return TimeLimit(Stamped(), max_episode_steps=500)


def _stamps(path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"train": [], "eval": []}
    for line in path.read_text().splitlines():
        tag, t = line.split()
        out[tag].append(float(t))
    return out


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_evaluation_runs_while_training_samples(tmp_path, parallel):
    """Ordering, not wall time: with parallel evaluation, the evaluation worker's env steps
    interleave with the rollout worker's steps of the same iteration; without, none do."""
    log = tmp_path / "steps.log"
    with rldataflow.build("pg", env=stamped_cartpole, env_config={"log": str(log),
                                                                  "tag": "train"},
                          runtime="process", num_workers=1, num_envs_per_worker=1,
                          rollout_fragment_length=200, train_batch_size=200,
                          evaluation_interval=1, evaluation_num_workers=1,
                          evaluation_num_episodes=3, evaluation_parallel_to_training=parallel,
                          evaluation_config={"env_config": {"log": str(log), "tag": "eval"}},
                          ) as algo:
        result = algo.train()
    stamps = _stamps(log)
    first, last = min(stamps["eval"]), max(stamps["eval"])
    during = [t for t in stamps["train"] if first < t < last]
    assert result["evaluation/num_episodes"] == 3
    if parallel:
        assert len(during) > 0, "no training step happened while the evaluation ran"
    else:
        assert during == [], f"{len(during)} training steps ran during a blocking evaluation"


# -- the best checkpoint -----------------------------------------------------------------------

def test_best_checkpoint_follows_the_evaluation_return(tmp_path):
    with rldataflow.build("pg", evaluation_interval=1, evaluation_num_episodes=2,
                          **INLINE) as algo:
        results = []
        for _ in range(5):
            outcome = run(algo, tmp_path, StopConditions(stop_iters=1), progress=False,
                          summary=False, resume=bool(results))
            results.append(outcome.result)
    returns = [r["evaluation/episode_return_mean"] for r in results]
    best = best_checkpoint(tmp_path)
    meta = read_metadata(best)["best"]
    assert meta["metric"] == "evaluation/episode_return_mean"
    assert meta["value"] == max(returns)
    assert meta["iteration"] == int(np.argmax(returns)) + 1
    assert read_metadata(best)["iteration"] == meta["iteration"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_000005"  # best is not "latest"
    # the best checkpoint restores like any other and plays the policy it saved
    with rldataflow.Algorithm.restore(best, runtime="inline") as restored:
        assert restored.iteration == meta["iteration"]


def test_best_checkpoint_uses_the_training_return_without_evaluation(tmp_path, monkeypatch):
    # Saves not spaced out: every improvement is saved, so the best is the maximum.
    monkeypatch.setattr(_BestCheckpoint, "MAX_SAVE_SHARE", math.inf)
    with rldataflow.build("pg", **INLINE) as algo:
        outcome = run(algo, tmp_path, StopConditions(stop_iters=4), progress=False,
                      summary=False)
    meta = read_metadata(outcome.best_checkpoint)["best"]
    assert meta["metric"] == "episode_return_mean"
    logged = [json.loads(line) for line in (tmp_path / "result.jsonl").read_text().splitlines()]
    values = [r["episode_return_mean"] for r in logged
              if r["episode_return_mean"] is not None and not math.isnan(
                  r["episode_return_mean"])]
    assert meta["value"] == max(values)


def test_best_checkpoint_saves_are_spaced_but_a_final_best_is_kept(tmp_path, monkeypatch):
    saves = []
    monkeypatch.setattr(_BestCheckpoint, "MAX_SAVE_SHARE", 1e-9)  # one save, then a long gap
    with rldataflow.build("pg", **INLINE) as algo:
        original = algo.save

        def counting_save(path, *args, **kwargs):
            saves.append(Path(path).name)
            return original(path, *args, **kwargs)

        monkeypatch.setattr(algo, "save", counting_save)
        outcome = run(algo, tmp_path, StopConditions(stop_iters=6), progress=False,
                      summary=False)
    logged = [json.loads(line) for line in (tmp_path / "result.jsonl").read_text().splitlines()]
    values = [r["episode_return_mean"] for r in logged if r["episode_return_mean"] is not None]
    best = read_metadata(outcome.best_checkpoint)["best"]["value"]
    assert saves.count("best_checkpoint") <= 2  # the first best, and the last if it is the best
    if values[-1] == max(values) and values[-1] > values[0]:
        assert best == values[-1]
    assert best in values


# -- the command line: train, evaluate --video, plot -------------------------------------------

CLI = [sys.executable, "-m", "rldataflow"]


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = _cli("train", "ppo", "--env", "CartPole-v1", "--runtime", "inline",
                "--num-workers", "0", "--stop-iters", "4", "--out", str(out), "--quiet",
                "--set", "evaluation_interval=2", "--set", "evaluation_num_episodes=2",
                "--set", "train_batch_size=256", "--set", "minibatch_size=128",
                "--set", "num_envs_per_worker=2")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_cli_train_logs_evaluation_columns(evaluated_run):
    import csv

    out, proc = evaluated_run
    with open(out / "progress.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    filled = [bool(r["evaluation/episode_return_mean"]) for r in rows]
    assert filled == [False, True, False, True]
    assert "best checkpoint:" in proc.stdout
    assert best_checkpoint(out) is not None


def test_cli_evaluate_video_writes_an_mp4_of_the_best_checkpoint(evaluated_run):
    import imageio.v2 as imageio

    out, _ = evaluated_run
    proc = _cli("evaluate", str(out), "--episodes", "1", "--video")
    assert proc.returncode == 0, proc.stderr
    video = out / "videos" / "best_checkpoint.mp4"
    assert f"video: {video}" in proc.stdout
    with imageio.get_reader(video, format="FFMPEG") as reader:
        frames = [frame for frame in reader]  # not list(): the reader's len() is inf
    assert len(frames) > 0
    assert frames[0].shape == (400, 600, 3)  # CartPole's rgb_array frame
    assert f"({len(frames)} frames" in proc.stdout


def test_cli_evaluate_video_without_the_extra_says_how_to_install(evaluated_run):
    out, _ = evaluated_run
    code = ("import sys; sys.modules['imageio'] = None; from rldataflow.cli import main; "
            f"sys.exit(main(['evaluate', {str(out)!r}, '--video']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'error: writing video needs imageio and imageio-ffmpeg: pip install "rldataflow[video]"']


def test_plot_draws_training_and_evaluation_curves(evaluated_run, tmp_path):
    from rldataflow.utils.plotting import build_figure

    out, _ = evaluated_run
    fig = build_figure([out])
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert set(lines) == {"run", "run (evaluation)"}
    assert len(lines["run"].get_xdata()) == 4 and len(lines["run (evaluation)"].get_xdata()) == 2
    proc = _cli("plot", str(out), "--out", str(tmp_path / "curves.png"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "curves.png").stat().st_size > 0
