"""Videos of a policy: render episodes with ``render_mode="rgb_array"`` and write an mp4.

Writing needs the ``video`` extra (``imageio`` and ``imageio-ffmpeg``, which ships its own
ffmpeg binary in its wheel); nothing here imports them until a video is written. Gymnasium's
``RecordVideo`` wrapper would pull in moviepy for the same job; the frames are already at hand
in the worker's evaluation loop, so two small packages do.

Example::

    with Algorithm.restore("runs/ppo/best_checkpoint", num_workers=0, runtime="inline") as algo:
        record_video(algo, "runs/ppo/videos/best.mp4")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rldataflow.trainer import Algorithm

__all__ = ["VIDEO_EXTRA_HINT", "check_video_extra", "record_video", "write_video"]

VIDEO_EXTRA_HINT = 'writing video needs imageio and imageio-ffmpeg: pip install "rldataflow[video]"'


def check_video_extra() -> Any:
    """The ``imageio`` module, or ImportError naming ``pip install "rldataflow[video]"``."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the mp4 writer's backend; fail here, not later)
    except ImportError:
        raise ImportError(VIDEO_EXTRA_HINT) from None
    return imageio


def write_video(frames: Sequence[np.ndarray], path: str | os.PathLike[str], fps: int = 30
                ) -> Path:
    """Write ``frames`` (``H x W x 3`` uint8 arrays) to an mp4 at ``path``; returns the path.

    Example: ``write_video([env.render() for _ in range(50)], "out.mp4", fps=50)``
    """
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    imageio = check_video_extra()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # macro_block_size=1: keep the env's frame size (CartPole's 600x400 is not a multiple of 16)
    with imageio.get_writer(out, fps=fps, codec="libx264", macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.asarray(frame, dtype=np.uint8))
    return out


def record_video(algo: Algorithm, path: str | os.PathLike[str], num_episodes: int = 1,
                 explore: bool = False, fps: int | None = None) -> dict[str, Any]:
    """Play ``num_episodes`` episodes of ``algo``'s current policy on its local worker (the
    evaluation seeds, deterministic actions unless ``explore``), rendered into one mp4 at
    ``path``. ``fps``: the env's ``render_fps`` metadata by default (else 30). Returns
    ``{"path", "frames", "episode_returns"}``.
    """
    check_video_extra()  # a missing extra fails before any episode is played
    # rgb_array rendering needs no display; without this, pygame's SDL complains on a
    # headless machine (XDG_RUNTIME_DIR) while rendering fine
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    worker = algo.workers.local_worker()
    # workers that cannot render (multi-agent, ES/ARS) say so with a ValueError
    episodes = worker.evaluate_episodes(num_episodes, explore, render=True)
    frames = [f for _, _, ep_frames in episodes for f in ep_frames if f is not None]
    if not frames:
        raise ValueError(f"env {worker.env_spec!r} rendered no frames (does it support "
                         "render_mode='rgb_array'?)")
    if fps is None:
        fps = int(_render_fps(worker) or 30)
    out = write_video(frames, path, fps)
    return {"path": out, "frames": len(frames), "episode_returns": [r for r, _, _ in episodes]}


def _render_fps(worker: Any) -> Any:
    try:
        return worker.vector_env.envs[0].metadata.get("render_fps")
    except (AttributeError, IndexError):
        return None
