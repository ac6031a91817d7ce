"""Fault benchmark: SIGKILL random actors of a running Ape-X / IMPALA plan 20 times.

For each algorithm, on the chosen runtime (``--runtime process|ray``), in one invocation:

1. an undisturbed run to ``--steps`` env steps sampled: its wall time is the baseline;
2. the same run again while a killer thread SIGKILLs a random live actor at ``--kills``
   random moments (seeded RNG) spread over the first 85% of the baseline's wall time:
   Ape-X: a rollout worker or a replay shard; IMPALA (2 aggregators x 2 workers): an
   aggregator or one of the workers it owns. Actor pids come from ``Runtime.pid`` (and
   ``AggregationWorker.worker_pids``), snapshotted by the driver after every result.

Reported per run: kills survived (the run reached its step count with every kill having
landed, and the actor pools restarted as many actors as were killed); whether every counter
of every result stayed monotone; whether ``algo.plan`` is the same object throughout (never
rebuilt); what was lost with the dead actors (``requests_lost``: requests in flight to a dead
actor, whose results never arrived; for Ape-X also ``replay_rows_lost``, rows held by or sent
to a dead shard; with their sizes in env steps); and the wall-time ratio to the baseline.

Usage::

    nice -n 10 python benchmarks/faults.py --runtime process
    nice -n 10 python benchmarks/faults.py --runtime ray
    python benchmarks/faults.py --algo apex --kills 5 --steps 60000   # quick check
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import threading
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import psutil  # noqa: E402

import rldataflow  # noqa: E402
from rldataflow.algorithms.registry import get_algorithm  # noqa: E402
from rldataflow.runtime import ActorDiedError  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "apex": dict(env="CartPole-v1", num_workers=2, num_replay_shards=2, buffer_size=50_000,
                 learning_starts=5_000, min_time_s_per_iteration=0.5,
                 min_steps_per_iteration=1000),
    "impala": dict(env="CartPole-v1", num_workers=4, num_aggregation_workers=2,
                   num_envs_per_worker=4, min_time_s_per_iteration=0.5),
}
STEPS = {"apex": 60_000, "impala": 100_000}


def rows_per_request(algo_name: str, config: dict[str, Any]) -> int:
    """Env steps in one request's result: a worker's sample batch (Ape-X) or an aggregator's
    train batch (IMPALA, at least ``train_batch_size`` rows)."""
    cfg = get_algorithm(algo_name).Config(**{k: v for k, v in config.items()
                                             if k not in ("env", "runtime", "seed")})
    if algo_name == "apex":
        return cfg.num_envs_per_worker * cfg.rollout_fragment_length
    return cfg.train_batch_size


def live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def victims(algo_name: str, algo: Any) -> list[tuple[str, int]]:
    """(kind, pid) of every actor a kill may hit, as the plan holds them now."""
    rt = algo.workers.runtime
    out: list[tuple[str, int]] = []
    if algo_name == "apex":
        for kind, actors in (("rollout worker", algo.workers.remote_workers()),
                             ("replay shard", algo.plan.replay_shards)):
            for actor in actors:
                try:
                    out.append((kind, rt.pid(actor)))
                except ActorDiedError:  # (Ray asks the actor)
                    continue
    else:
        for agg in list(algo.plan.aggregators.actors):
            try:
                pids = agg.call("worker_pids").result(30)
                out.append(("aggregator", rt.pid(agg)))
            except ActorDiedError:
                continue  # killed, and the plan has not noticed yet: no target until it has
            out += [("aggregator's worker", p) for p in pids]
    return out


class Killer(threading.Thread):
    """SIGKILLs a random live victim at each of ``times`` (seconds after ``start()``)."""

    def __init__(self, times: list[float], seed: int) -> None:
        super().__init__(daemon=True, name="killer")
        self.times = sorted(times)
        self.rng = random.Random(seed)
        self.targets: list[tuple[str, int]] = []  # replaced by the driver after each result
        self.killed: list[tuple[float, str, int]] = []
        self.killed_pids: set[int] = set()
        self.stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        for at in self.times:
            if self.stop_event.wait(max(0.0, at - (time.perf_counter() - t0))):
                return
            while not self.stop_event.is_set():
                # only actors alive now, never one this thread killed already (a pid the
                # driver's snapshot still lists until the plan notices the death)
                alive = [(k, p) for k, p in self.targets
                         if p not in self.killed_pids and live(p)]
                if alive:
                    kind, pid = self.rng.choice(alive)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.killed_pids.add(pid)
                    self.killed.append((time.perf_counter() - t0, kind, pid))
                    break
                self.stop_event.wait(0.05)


def restarts(algo_name: str, algo: Any) -> int:
    """Actors the plan's pools replaced (the aggregators report their own workers')."""
    if algo_name == "apex":
        return algo.workers.num_restarts + algo.plan.shards.num_restarts
    return algo.plan.aggregators.num_restarts


def driver_kills(killed: list[tuple[float, str, int]]) -> int:
    """Kills the driver's pools answer (an aggregator restarts its own dead workers)."""
    return sum(kind != "aggregator's worker" for _, kind, _ in killed)


def run(algo_name: str, runtime: str, steps: int, seed: int, kill_times: list[float] | None,
        timeout_s: float) -> dict[str, Any]:
    config = dict(CONFIGS[algo_name], runtime=runtime, seed=seed)
    out: dict[str, Any] = {"error": None, "monotone": True, "same_plan": True}
    killer = Killer(kill_times, seed) if kill_times else None
    agg_worker_restarts = 0
    try:
        with rldataflow.build(algo_name, **config) as algo:
            plan = algo.plan
            prev: dict[str, float] = {}
            result = algo.train()
            start = time.perf_counter()
            steps0 = result["env_steps_sampled"]
            if killer is not None:
                killer.targets = victims(algo_name, algo)
                killer.start()
            while True:
                counters = dict(result["counters"])
                for key, value in counters.items():
                    if value < prev.get(key, value):
                        out["monotone"] = False
                        print(f"  counter {key} went down: {prev[key]} -> {value}")
                prev = counters
                out["same_plan"] &= algo.plan is plan
                agg_worker_restarts = max(agg_worker_restarts,
                                          int(result.get("info", {}).get(
                                              "aggregator_worker_restarts", 0) or 0))
                done = result["env_steps_sampled"] - steps0 >= steps
                if done and (killer is None or (
                        len(killer.killed) == len(killer.times)
                        # ... and the plan has noticed (and answered) the last kill
                        and restarts(algo_name, algo) >= driver_kills(killer.killed))):
                    break
                if time.perf_counter() - start > timeout_s:
                    out["error"] = f"timed out after {timeout_s:.0f} s"
                    break
                result = algo.train()
                if killer is not None:
                    killer.targets = victims(algo_name, algo)
            out["wall_s"] = time.perf_counter() - start
            out["steps"] = result["env_steps_sampled"] - steps0
            out["counters"] = dict(result["counters"])
            out["restarts"] = restarts(algo_name, algo)
            out["return"] = result["episode_return_mean"]
    except Exception as exc:  # the run did not survive: report it, go on with the next
        out["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    finally:
        if killer is not None:
            killer.stop_event.set()
            killer.join(5)
    if killer is not None:
        out["kills"] = killer.killed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["process", "ray"], default="process")
    parser.add_argument("--algo", choices=["apex", "impala", "both"], default="both")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None,
                        help="env steps per run (default: 60k Ape-X, 100k IMPALA)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    algos = ["apex", "impala"] if args.algo == "both" else [args.algo]
    for name in algos:
        steps = args.steps or STEPS[name]
        print(f"== {name} on {args.runtime}: {steps} env steps, {args.kills} SIGKILLs "
              f"(seed {args.seed}); config {CONFIGS[name]}", flush=True)
        base = run(name, args.runtime, steps, args.seed, None, timeout_s=1800)
        if base["error"]:
            print(f"undisturbed run failed: {base['error']}")
            continue
        print(f"undisturbed: {base['wall_s']:.1f} s for {base['steps']} env steps", flush=True)
        rng = random.Random(args.seed)
        times = [rng.uniform(0.0, 0.85 * base["wall_s"]) for _ in range(args.kills)]
        hit = run(name, args.runtime, steps, args.seed, times,
                  timeout_s=10 * base["wall_s"] + 120)
        kills = hit.get("kills", [])
        kinds: dict[str, int] = {}
        for _, kind, _ in kills:
            kinds[kind] = kinds.get(kind, 0) + 1
        if hit["error"]:
            print(f"disturbed run FAILED after {len(kills)} kills: {hit['error']}")
            continue
        c = hit["counters"]
        survived = len(kills) if hit["restarts"] >= driver_kills(kills) else 0
        per_req = rows_per_request(name, CONFIGS[name])
        lost_req = int(c.get("requests_lost", 0))
        print(f"disturbed: {hit['wall_s']:.1f} s for {hit['steps']} env steps; kills: "
              + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        print(f"  survived {survived}/{args.kills}; pools restarted {hit['restarts']} actors; "
              f"counters monotone: {hit['monotone']}; same Plan object: {hit['same_plan']}")
        lost = f"  lost with dead actors: {lost_req} requests in flight (~{lost_req * per_req} " \
               f"env steps at {per_req} rows each, incl. replay requests for Ape-X)"
        if name == "apex":
            lost += f"; {int(c.get('replay_rows_lost', 0))} replay rows"
        print(lost + f"; {c['env_steps_sampled']} sampled, {c['env_steps_trained']} trained")
        print(f"  wall time vs undisturbed: {hit['wall_s'] / base['wall_s']:.2f}x "
              f"(env steps/s {hit['steps'] / hit['wall_s']:.0f} vs "
              f"{base['steps'] / base['wall_s']:.0f})", flush=True)


if __name__ == "__main__":
    main()
