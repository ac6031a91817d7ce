"""Tuned example configs: one YAML file per (algorithm, env), with the budget it is run for
(``stop:``) and what it reached when measured (``expected:``), the way RLlib's tuned examples
and the RL Baselines3 Zoo publish theirs.

``rldataflow train --config rldataflow/tuned/ppo-lunarlander.yaml`` runs one (a bare name such
as ``--config ppo-lunarlander`` finds the packaged file too); ``rldataflow tuned`` lists them;
``benchmarks/regression.py`` runs a chosen subset and compares each with its ``expected``.

Example::

    from rldataflow.tuned import tuned_configs, tuned_path
    sorted(tuned_configs())[:2]          # ['a2c-cartpole', 'dqn-cartpole']
    tuned_path("ppo-cartpole")           # .../rldataflow/tuned/ppo-cartpole.yaml
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TUNED_DIR", "tuned_configs", "tuned_path"]

TUNED_DIR = Path(__file__).resolve().parent


def tuned_configs() -> dict[str, Path]:
    """``{name: path}`` of every packaged tuned config."""
    return {p.stem: p for p in sorted(TUNED_DIR.glob("*.yaml"))}


def tuned_path(name: str) -> Path | None:
    """The packaged tuned config called ``name`` (with or without ``.yaml``), or None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    path = TUNED_DIR / f"{stem}.yaml"
    return path if "/" not in stem and path.exists() else None
