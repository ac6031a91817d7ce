"""Logging results to Weights & Biases (``rldataflow train ... --wandb``).

One W&B run per run directory; every numeric result value is logged (nested keys joined with
"/", as in ``progress.csv``) at the step ``iteration``. With no API key configured (no
``WANDB_API_KEY``, no ``wandb login``) and no ``WANDB_MODE`` set, the run is logged offline into
``RUN_DIR/wandb/`` and one line says so; ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it
later. The SDK is optional: ``pip install "rldataflow[wandb]"``.

Example::

    logger = WandbLogger("runs/ppo", {"lr": 3e-4}, project="cartpole", mode="offline")
    logger.log({"iteration": 1, "episode_return_mean": 21.5})
    logger.close()
"""

from __future__ import annotations

import math
import netrc
import numbers
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from rldataflow.utils.config_sources import to_jsonable
from rldataflow.utils.logger import flatten_dict

__all__ = ["WandbLogger", "has_api_key"]

DEFAULT_PROJECT = "rldataflow"


def has_api_key() -> bool:
    """Whether W&B can authenticate: ``WANDB_API_KEY`` or a ``wandb login`` netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC") or None).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = base.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return host in hosts


class WandbLogger:
    """Sends each result to one W&B run (see the module docstring).

    ``mode``: ``"online"``, ``"offline"`` or ``"disabled"``; None takes ``WANDB_MODE``, else
    online when an API key is configured and offline (said in one line on ``stream``) when not.
    """

    def __init__(self, run_dir: str | os.PathLike[str], config: Mapping[str, Any] | None = None,
                 *, project: str | None = None, name: str | None = None,
                 group: str | None = None, mode: str | None = None,
                 stream: TextIO | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError('--wandb needs the W&B SDK: pip install "rldataflow[wandb]"') \
                from None
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if mode is None and not os.environ.get("WANDB_MODE") and not has_api_key():
            mode = "offline"
            print(f"wandb: no API key configured (WANDB_API_KEY or `wandb login`); logging "
                  f"offline to {self.run_dir / 'wandb'} (upload later with `wandb sync`)",
                  file=stream if stream is not None else sys.stderr)
        self.mode = mode or os.environ.get("WANDB_MODE") or "online"
        self._run = wandb.init(
            project=project or DEFAULT_PROJECT, name=name or self.run_dir.name, group=group,
            dir=str(self.run_dir), config=to_jsonable(dict(config or {})), mode=self.mode,
            reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        self._closed = False

    @property
    def run(self) -> Any:
        """The ``wandb`` run object."""
        return self._run

    def log(self, result: Mapping[str, Any]) -> None:
        flat = flatten_dict(to_jsonable(dict(result)))
        data = {k: (int(v) if isinstance(v, bool) else v) for k, v in flat.items()
                if isinstance(v, numbers.Real) and math.isfinite(float(v))}
        step = result.get("iteration")
        self._run.log(data, step=int(step) if isinstance(step, numbers.Integral) else None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run.finish()
