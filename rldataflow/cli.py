"""The ``rldataflow`` command line: train, evaluate, inspect configs and plans.

    rldataflow train ppo --env CartPole-v1 --stop-return 475
    rldataflow train dqn --env CartPole-v1 --set lr=5e-4 --set hiddens=[128,128]
    rldataflow train ppo --resume runs/ppo_CartPole-v1_20261122-101500
    rldataflow evaluate runs/ppo_CartPole-v1_20261122-101500 --episodes 10
    rldataflow evaluate runs/ppo_CartPole-v1_20261122-101500 --video   # best checkpoint, mp4
    rldataflow record runs/ppo_CartPole-v1_20261122-101500 --episodes 100 --out data/cartpole
    rldataflow train bc --set input=data/cartpole --stop-return 450
    rldataflow config ppo          # every config key, its type, default and meaning
    rldataflow plan ppo            # the algorithm's dataflow, as a tree
    rldataflow train --config examples/ppo_and_dqn.yaml   # PPO + DQN in one plan (composite)
    rldataflow plot runs/a runs/b --out curves.png
    rldataflow tuned                                   # tuned example configs and their results
    rldataflow train --config ppo-lunarlander          # run one (rldataflow/tuned/*.yaml)
    rldataflow tune ppo --env CartPole-v1 --grid lr=[1e-3,3e-4] --grid num_epochs=[5,10] \
        --stop-iters 10                          # a sweep (docs/tune.md)
    rldataflow train ppo --runtime ray --address auto   # on a Ray cluster (docs/cluster.md)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    from rldataflow import __version__

    parser = argparse.ArgumentParser(
        prog="rldataflow",
        description="Distributed reinforcement learning as dataflow plans.")
    parser.add_argument("--version", action="version", version=f"rldataflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    train = sub.add_parser("train", help="train an agent (writes a run directory)",
                           description="Train ALGO on ENV until a stop condition is met.")
    train.add_argument("algo", nargs="?", help="algorithm name (see `rldataflow list`)")
    train.add_argument("--env", help="Gymnasium env id or a name registered in rldataflow.envs")
    train.add_argument("--runtime", choices=["inline", "process", "ray"],
                       help="where actors run (default: process)")
    train.add_argument("--num-workers", type=int, help="remote rollout workers")
    train.add_argument("--config", metavar="FILE.yaml", help="YAML file of config keys")
    train.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       help="override one config key (repeatable); values are YAML")
    train.add_argument("--stop-return", type=float, metavar="R",
                       help="stop once episode_return_mean >= R")
    train.add_argument("--stop-steps", type=int, metavar="N",
                       help="stop once N env steps were sampled")
    train.add_argument("--stop-time", type=float, metavar="S", help="stop after S seconds")
    train.add_argument("--stop-iters", type=int, metavar="N", help="stop after N iterations")
    train.add_argument("--seed", type=int, help="base seed")
    train.add_argument("--out", metavar="DIR",
                       help="run directory (default: runs/ALGO_ENV_TIMESTAMP)")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run in DIR from its latest checkpoint")
    train.add_argument("--checkpoint-every", type=int, metavar="N",
                       help="save a checkpoint every N iterations (default: config value)")
    train.add_argument("--quiet", action="store_true", help="no progress display")
    _add_cluster_and_wandb_flags(train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint or a run directory")
    evaluate.add_argument("path", help="checkpoint directory, or a run directory (latest)")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--video", action="store_true",
                          help="also write an mp4 of the run's best checkpoint (RUN/videos/; "
                               'needs pip install "rldataflow[video]")')
    evaluate.add_argument("--video-episodes", type=int, default=1, metavar="N",
                          help="episodes in the video (default 1)")

    record = sub.add_parser("record", help="roll out a checkpoint into an offline dataset",
                            description="Run episodes with a trained policy and write their "
                                        "steps to a dataset directory (docs/offline.md).")
    record.add_argument("path", help="checkpoint directory, or a run directory (latest)")
    record.add_argument("--episodes", type=int, default=100, help="episodes to record")
    record.add_argument("--out", required=True, metavar="DIR", help="dataset directory")
    record.add_argument("--format", choices=["parquet", "json"], default="parquet")
    record.add_argument("--max-rows-per-file", type=int, default=10_000, metavar="N")
    record.add_argument("--num-workers", type=int, default=0,
                        help="record on N worker processes in parallel (default: in this one)")
    record.add_argument("--no-explore", action="store_true",
                        help="take the policy's most likely action instead of sampling")

    config = sub.add_parser("config", help="show an algorithm's config keys and defaults")
    config.add_argument("algo")

    plan = sub.add_parser("plan", help="print an algorithm's dataflow plan")
    plan.add_argument("algo", nargs="?", help="algorithm name (or `algorithm:` in --config)")
    plan.add_argument("--env", default=None)
    plan.add_argument("--config", metavar="FILE.yaml", help="YAML file of config keys")
    plan.add_argument("--format", choices=["text", "dot", "mermaid"], default="text")
    plan.add_argument("--set", metavar="KEY=VALUE", action="append", default=[])

    plot = sub.add_parser("plot", help="plot learning curves of run directories to an image")
    plot.add_argument("runs", nargs="+", help="run directories")
    plot.add_argument("--out", default="learning_curves.png", help="image file (png/svg/pdf)")
    plot.add_argument("--x", default="env_steps_sampled", help="x column of progress.csv")
    plot.add_argument("--y", default="episode_return_mean", help="y column of progress.csv")
    plot.add_argument("--no-evaluation", action="store_true",
                      help="leave out the evaluation curves (evaluation/episode_return_mean)")

    tune = sub.add_parser("tune", help="a hyperparameter sweep (writes a sweep directory)",
                          description="Train ALGO once per trial of a grid and/or search space; "
                                      "embedded with Optuna, or on Ray Tune with --runtime ray "
                                      "(docs/tune.md).")
    tune.add_argument("algo", nargs="?", help="algorithm name (or `algorithm:` in --config)")
    tune.add_argument("--env", help="Gymnasium env id or a name registered in rldataflow.envs")
    tune.add_argument("--runtime", choices=["inline", "process", "ray"],
                      help="where trials run: inline/process embedded (Optuna, one trial "
                           "after another), ray: Ray Tune trials in parallel on the cluster")
    tune.add_argument("--num-workers", type=int, help="remote rollout workers per trial")
    tune.add_argument("--config", metavar="FILE.yaml",
                      help="YAML file of config keys with `grid:`/`search:`/`sweep:` sections")
    tune.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                      help="fix one config key for all trials (repeatable)")
    tune.add_argument("--grid", metavar="KEY=[V1,V2]", action="append", default=[],
                      help="sweep KEY over the values (repeatable; every combination runs)")
    tune.add_argument("--samples", type=int, metavar="N",
                      help="trials per grid combination drawn from `search:` (default 10), or "
                           "seeded repeats of each combination when there is only a grid")
    tune.add_argument("--metric", help="result key that ranks trials "
                                       "(default episode_return_mean)")
    tune.add_argument("--mode", choices=["max", "min"], help="maximize (default) or minimize")
    tune.add_argument("--no-prune", action="store_true",
                      help="never stop a trial early (default: median pruning)")
    for flag, kind, meta, text in _STOP_FLAGS:
        tune.add_argument(flag, type=kind, metavar=meta, help=text + " (per trial)")
    tune.add_argument("--seed", type=int, help="base seed (also seeds the sampler)")
    tune.add_argument("--out", metavar="DIR",
                      help="sweep directory (default: sweeps/ALGO_ENV_TIMESTAMP)")
    tune.add_argument("--checkpoint-every", type=int, metavar="N",
                      help="save a checkpoint every N iterations (default: config value)")
    _add_cluster_and_wandb_flags(tune)

    sub.add_parser("list", help="list the algorithms")
    sub.add_parser("tuned", help="list the tuned example configs and what each reached")
    return parser


_STOP_FLAGS = [("--stop-return", float, "R", "stop once episode_return_mean >= R"),
               ("--stop-steps", int, "N", "stop once N env steps were sampled"),
               ("--stop-time", float, "S", "stop after S seconds"),
               ("--stop-iters", int, "N", "stop after N iterations")]


def _add_cluster_and_wandb_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", metavar="auto|HOST:PORT",
                        help="with --runtime ray: join this Ray cluster (actors are spread "
                             "over its nodes; docs/cluster.md); default: a local Ray instance")
    parser.add_argument("--wandb", action="store_true",
                        help="also log results to Weights & Biases (offline when no API key "
                             "is configured; pip install \"rldataflow[wandb]\")")
    parser.add_argument("--wandb-project", metavar="NAME",
                        help="W&B project (default: rldataflow); implies --wandb")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"train": _train, "evaluate": _evaluate, "record": _record, "config": _config,
                "plan": _plan, "tune": _tune,
                "plot": _plot, "list": _list, "tuned": _tuned}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `rldataflow plan ppo | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # one clear line, not a wall of frames
        return _report_error(exc)


def _report_error(exc: BaseException) -> int:
    from rldataflow.data.dataset import DatasetError
    from rldataflow.envs import EnvError
    from rldataflow.flow import FlowError, OperatorError
    from rldataflow.runtime import ActorDiedError
    from rldataflow.utils.checkpoint import CheckpointError
    from rldataflow.utils.config import ConfigError

    if isinstance(exc, (ConfigError, EnvError, CheckpointError, DatasetError)):
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, (OperatorError, FlowError, ActorDiedError)):
        print(f"error: {exc}", file=sys.stderr)
        cause = exc.__cause__
        if cause is not None:
            print(f"  caused by: {type(cause).__name__}: {str(cause).strip()[-2000:]}",
                  file=sys.stderr)
        if os.environ.get("RLDATAFLOW_DEBUG"):
            raise exc
        print("  (set RLDATAFLOW_DEBUG=1 for the full traceback; use --runtime inline to "
              "debug with breakpoint())", file=sys.stderr)
        return EXIT_ERROR
    if os.environ.get("RLDATAFLOW_DEBUG"):
        raise exc
    print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
    print("  (set RLDATAFLOW_DEBUG=1 for the full traceback)", file=sys.stderr)
    return EXIT_ERROR


def _overrides(args: argparse.Namespace,
               from_file: dict[str, Any] | None = None) -> dict[str, Any]:
    from rldataflow.utils.config import (
        ConfigError,
        load_yaml_config,
        merge_overrides,
        parse_set_args,
    )

    if from_file is None:
        config_file = getattr(args, "config", None)
        if config_file and not Path(config_file).exists():
            from rldataflow.tuned import tuned_path

            packaged = tuned_path(config_file)  # `--config ppo-lunarlander`: a tuned example
            if packaged is not None:
                config_file = args.config = str(packaged)
        from_file = load_yaml_config(config_file) if config_file else {}
    args.file_stop = _file_stop(getattr(args, "config", None), from_file.pop("stop", None))
    from_file.pop("expected", None)  # what a tuned config reached: documentation only
    file_algo = from_file.pop("algorithm", None)
    if file_algo is not None:  # a config file may name its algorithm (`algorithm: composite`)
        given = getattr(args, "algo", None)
        if given and given.lower() != str(file_algo).lower():
            raise ConfigError(f"{args.config} is a config for {file_algo!r}, but the command "
                              f"names {given!r}")
        args.algo = str(file_algo)
    from_set = parse_set_args(args.set)
    from_flags: dict[str, Any] = {}
    for flag, key in (("env", "env"), ("runtime", "runtime"), ("num_workers", "num_workers"),
                      ("seed", "seed")):
        value = getattr(args, flag, None)
        if value is not None:
            from_flags[key] = value
    merged = merge_overrides(from_file, from_set, from_flags)
    address = getattr(args, "address", None)
    if address is not None:
        if merged.get("runtime", "process") != "ray":
            raise ConfigError(f"--address {address} joins a Ray cluster: it needs --runtime ray")
        options = dict(merged.get("runtime_options") or {})
        options["address"] = address
        # Ray packs actors that reserve no CPU onto one node; on a cluster, use them all.
        options.setdefault("placement", "spread")
        merged["runtime_options"] = options
    return merged


def _wandb_options(args: argparse.Namespace) -> dict[str, Any] | None:
    if not (args.wandb or args.wandb_project):
        return None
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        from rldataflow.utils.config import ConfigError

        raise ConfigError('--wandb needs the W&B SDK: pip install "rldataflow[wandb]"')
    return {"project": args.wandb_project}


#: ``stop:`` keys of a config file and the StopConditions field each sets
_FILE_STOP_KEYS = {"return": "stop_return", "steps": "stop_steps", "time": "stop_time",
                   "iters": "stop_iters"}


def _file_stop(path: str | None, stop: Any) -> dict[str, Any]:
    """The ``stop:`` section of a config file as StopConditions fields (flags override it)."""
    from rldataflow.utils.config import ConfigError

    if stop is None:
        return {}
    if not isinstance(stop, dict):
        raise ConfigError(f"{path}: `stop` must be a mapping such as {{return: 200, steps: "
                          f"1000000}}, got {stop!r}")
    out = {}
    for key, value in stop.items():
        if key not in _FILE_STOP_KEYS:
            raise ConfigError(f"{path}: unknown stop condition {key!r}; use "
                              f"{', '.join(_FILE_STOP_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: stop condition {key!r} must be a number, got {value!r}")
        out[_FILE_STOP_KEYS[key]] = int(value) if key in ("steps", "iters") else float(value)
    return out


def _train(args: argparse.Namespace) -> int:
    overrides = _overrides(args)
    runtime = None
    if not args.resume and overrides.get("runtime", "process") == "process":
        # Start the worker processes' forkserver now: its torch import overlaps ours.
        from rldataflow.startup import make_runtime

        runtime = make_runtime("process", overrides.get("runtime_options"))
    try:
        return _train_with(args, overrides, runtime)
    finally:
        if runtime is not None:
            runtime.shutdown()


def _train_with(args: argparse.Namespace, overrides: dict[str, Any], runtime: Any) -> int:
    from rldataflow.trainer import Algorithm, make_config
    from rldataflow.training import StopConditions, run
    from rldataflow.utils.checkpoint import latest_checkpoint, read_metadata

    if args.resume:
        run_dir = Path(args.resume)
        latest = latest_checkpoint(run_dir)
        if latest is None:
            print(f"error: no checkpoint to resume from in {run_dir}", file=sys.stderr)
            return EXIT_USAGE
        meta = read_metadata(latest)
        if args.algo and args.algo.lower() != meta["algorithm"]:
            print(f"error: {run_dir} is a {meta['algorithm']} run, not {args.algo}",
                  file=sys.stderr)
            return EXIT_USAGE
        algo_name = meta["algorithm"]
        make_config(algo_name, {**{k: v for k, v in meta["config"].items()
                                   if k != "env" or isinstance(v, str)}, **overrides},
                    from_cli=True)  # validate overrides before starting anything
        algo = Algorithm.restore(latest, **overrides)
        print(f"resumed {algo_name} from {latest} (iteration {algo.iteration})")
    else:
        if not args.algo:
            print("error: train needs ALGO (or --resume DIR, or a --config file with an "
                  "`algorithm:` key)", file=sys.stderr)
            return EXIT_USAGE
        config = make_config(args.algo, overrides, from_cli=True)
        env_name = config.env if isinstance(config.env, str) else "custom"
        run_dir = Path(args.out or Path("runs") / (
            f"{args.algo.lower()}_{env_name.replace('/', '-')}_"
            f"{time.strftime('%Y%m%d-%H%M%S')}"))
        algo = Algorithm(args.algo, config, runtime=runtime, owns_runtime=runtime is not None)
        algo_name = args.algo.lower()

    from_flags = {f: getattr(args, f) for f in _FILE_STOP_KEYS.values()
                  if getattr(args, f) is not None}
    stop = StopConditions(**{**getattr(args, "file_stop", {}), **from_flags})
    if stop.empty:
        print("note: no stop condition given; training until Ctrl-C", file=sys.stderr)
    _print_placement(algo)
    loggers = []
    wandb = _wandb_options(args)
    if wandb is not None:
        from rldataflow.utils.wandb_logger import WandbLogger

        try:
            loggers.append(WandbLogger(run_dir, algo.config.to_dict(), **wandb))
        except BaseException:
            algo.stop()
            raise
    outcome = run(algo, run_dir, stop, checkpoint_every=args.checkpoint_every,
                  resume=bool(args.resume), progress=not args.quiet, stream=sys.stdout,
                  stop_algorithm=True, loggers=loggers)
    return EXIT_INTERRUPTED if outcome.interrupted else EXIT_OK


def _print_placement(algo: Any) -> None:
    """On Ray, one line saying how many nodes the actors landed on."""
    placement = getattr(algo.runtime, "placement", None)
    if not callable(placement):
        return
    nodes = placement()
    counts: dict[str, int] = {}
    for node in nodes.values():
        counts[node] = counts.get(node, 0) + 1
    detail = ", ".join(f"{node[:8]}: {n}" for node, n in sorted(counts.items()))
    print(f"ray: {len(nodes)} actors on {len(counts)} nodes ({detail})", flush=True)


def _tune(args: argparse.Namespace) -> int:
    from rldataflow.sweeps import Sweep, parse_sweep, split_sweep_file
    from rldataflow.training import StopConditions
    from rldataflow.utils.config import ConfigError

    base_file, sections = split_sweep_file(args.config) if args.config else ({}, {})
    overrides = _overrides(args, from_file=base_file)
    if not args.algo:
        raise ConfigError("tune needs ALGO (or a --config file with an `algorithm:` key)")
    spec = parse_sweep(args.grid, sections, samples=args.samples, metric=args.metric,
                       mode=args.mode)
    stop = StopConditions(stop_return=args.stop_return, stop_steps=args.stop_steps,
                          stop_time=args.stop_time, stop_iters=args.stop_iters)
    if stop.empty:
        raise ConfigError("tune needs a stop condition for its trials: --stop-iters, "
                          "--stop-steps, --stop-time or --stop-return")
    env = overrides.get("env", "CartPole-v1")
    env_name = env.replace("/", "-") if isinstance(env, str) else "custom"
    sweep_dir = Path(args.out or Path("sweeps") / (
        f"{args.algo.lower()}_{env_name}_{time.strftime('%Y%m%d-%H%M%S')}"))
    address = (overrides.get("runtime_options") or {}).get("address")
    sweep = Sweep(args.algo, overrides, spec, stop, sweep_dir,
                  checkpoint_every=args.checkpoint_every, prune=not args.no_prune,
                  wandb=_wandb_options(args), address=address, stream=sys.stdout)
    sweep.validate()  # every trial's config, before anything starts
    print(f"sweep of {args.algo.lower()}: {spec.num_trials(int(overrides.get('seed', 0)))} "
          f"trials on {sweep.backend} ({', '.join(spec.keys)}), ranked by {spec.metric} "
          f"({spec.mode}) -> {sweep_dir}", flush=True)
    sweep.run()
    return EXIT_OK


def _checkpoint_of(path: Path) -> Path | None:
    """``path`` if it is a checkpoint, else the latest checkpoint in the run directory."""
    from rldataflow.utils.checkpoint import latest_checkpoint

    if (path / "metadata.json").exists():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        print(f"error: no checkpoint in {path}", file=sys.stderr)
    return latest


def _record(args: argparse.Namespace) -> int:
    from rldataflow.trainer import Algorithm

    path = _checkpoint_of(Path(args.path))
    if path is None:
        return EXIT_USAGE
    if args.episodes < 1 or args.num_workers < 0:
        print("error: --episodes must be >= 1 and --num-workers >= 0", file=sys.stderr)
        return EXIT_USAGE
    from rldataflow.startup import make_runtime

    start = time.perf_counter()
    runtime = make_runtime("inline" if args.num_workers == 0 else "process")
    try:
        with Algorithm.restore(path, runtime=runtime, num_workers=args.num_workers,
                               output=None) as algo:
            info = algo.record(args.episodes, args.out, format=args.format,
                               max_rows_per_file=args.max_rows_per_file,
                               explore=not args.no_explore)
    finally:
        runtime.shutdown()
    print(f"recorded {info['episodes']} episodes ({info['rows']:,} steps, mean return "
          f"{info['episode_return_mean']:.1f}) from {path} into {args.out} "
          f"({len(info['files'])} files, {time.perf_counter() - start:.1f}s)")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from rldataflow.trainer import Algorithm
    from rldataflow.utils.checkpoint import best_checkpoint

    given = Path(args.path)
    if args.video:
        from rldataflow.utils.video import check_video_extra

        try:
            check_video_extra()  # a missing extra: one line, before a checkpoint is loaded
        except ImportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    # a run directory: its best checkpoint for a video, else (and without one) its latest
    best = best_checkpoint(given) if args.video else None
    path = best or _checkpoint_of(given)
    if path is None:
        return EXIT_USAGE
    run_dir = path.parent
    from rldataflow.startup import make_runtime

    # the run's own worker count (Ape-X and IMPALA with aggregators need workers), as plain
    # objects in this process: no worker processes are started to evaluate
    runtime = make_runtime("inline")
    try:
        with Algorithm.restore(path, runtime=runtime, output=None,
                               evaluation_num_workers=0) as algo:
            result = algo.evaluate(args.episodes)
            if args.video:
                from rldataflow.utils.video import record_video

                video = record_video(algo, run_dir / "videos" / f"{path.name}.mp4",
                                     num_episodes=args.video_episodes,
                                     explore=algo.config.evaluation_explore)
    finally:
        runtime.shutdown()
    print(f"checkpoint: {path}")
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    if args.video:
        print(f"video: {video['path']} ({video['frames']} frames, returns "
              f"{', '.join(f'{r:.1f}' for r in video['episode_returns'])})")
    return EXIT_OK


def _tuned(args: argparse.Namespace) -> int:
    import yaml

    from rldataflow.tuned import tuned_configs

    print(f"{'config':24} {'algorithm':10} {'env':22} {'budget':>12} {'reached':>22}")
    for name, path in tuned_configs().items():
        data = yaml.safe_load(path.read_text()) or {}
        stop, expected = data.get("stop") or {}, data.get("expected") or {}
        budget = f"{stop['steps']:,} steps" if "steps" in stop else "-"
        reached = (f"{expected['return']:g} at {expected['env_steps']:,}"
                   if "return" in expected and "env_steps" in expected else "not measured")
        print(f"{name:24} {data.get('algorithm', '?'):10} {data.get('env', '?'):22} "
              f"{budget:>12} {reached:>22}")
    print("run one: rldataflow train --config NAME")
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    from rldataflow.trainer import algorithm_module
    from rldataflow.utils.config import config_help

    print(config_help(algorithm_module(args.algo).Config))
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    from rldataflow.runtime import runtime_options_problem
    from rldataflow.trainer import Algorithm, make_config
    from rldataflow.utils.config import ConfigError

    overrides = _overrides(args)
    overrides.setdefault("num_workers", 2)
    if not args.algo:
        print("error: plan needs ALGO (or a --config file with an `algorithm:` key)",
              file=sys.stderr)
        return EXIT_USAGE
    # The declared runtime and its options are validated (the way `train` would use them)
    # and printed; the plan itself is built on inline actors, since printing needs only its
    # structure: no worker processes, no Ray, and (start=False) none of its threads.
    config = make_config(args.algo, overrides, from_cli=True)
    problem = runtime_options_problem(config.runtime, dict(config.runtime_options))
    if problem is not None:
        raise ConfigError(f"config key 'runtime_options': {problem}")
    options = ", ".join(f"{k}={v!r}" for k, v in config.runtime_options.items())
    header = f"runtime: {config.runtime}" + (f" ({options})" if options else "")
    with Algorithm(args.algo, config.replace(runtime="inline", runtime_options={}),
                   start=False) as algo:
        fmt = {"text": algo.plan.describe, "dot": algo.plan.to_dot,
               "mermaid": algo.plan.to_mermaid}[args.format]
        text = fmt()
        if args.format == "text":
            print(header)
            print(text)
        else:  # a comment line inside the graph, after its opening line
            first, _, rest = text.partition("\n")
            comment = "//" if args.format == "dot" else "%%"
            print(f"{first}\n  {comment} {header}\n{rest}")
    return EXIT_OK


def _plot(args: argparse.Namespace) -> int:
    from rldataflow.utils.plotting import plot_runs

    try:
        out = plot_runs(args.runs, args.out, args.x, args.y,
                        evaluation=not args.no_evaluation)
    except (FileNotFoundError, KeyError, ImportError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {out}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from rldataflow.trainer import ALGORITHMS, algorithm_module

    for name in sorted(ALGORITHMS):
        try:
            doc = (algorithm_module(name).__doc__ or "").strip().splitlines()[0]
        except Exception as exc:  # a broken plugin should not hide the others
            doc = f"(cannot import: {exc})"
        print(f"{name:8s} {doc}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
