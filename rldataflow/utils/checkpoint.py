"""Safe, atomic checkpoints: a directory with ``state.pt`` (tensors) and ``metadata.json``.

Two properties matter and are tested:

* **Loading never executes code.** ``state.pt`` is read with ``torch.load(weights_only=True)``,
  whose unpickler only rebuilds tensors and plain containers; a file carrying any other object
  (say one whose ``__reduce__`` calls ``os.system``) is refused with :class:`CheckpointError`.
  Numpy arrays, which that unpickler does not accept, are stored as tensors and turned back into
  arrays (same dtype and shape) on load.
* **A crash mid-save never corrupts an existing checkpoint.** Files are written and fsynced in a
  temporary sibling directory, which is then renamed into place. Replacing an existing checkpoint
  renames the old one aside first and deletes it only once the new one is in place.

Layout::

    run_dir/
      checkpoint_000010/
        state.pt        # torch.save of {"state": ..., "numpy": [...]} (tensors and containers only)
        metadata.json   # {"format_version": 1, "created": "...", ...caller's metadata}

Example::

    from rldataflow.utils.checkpoint import (checkpoint_path, latest_checkpoint,
                                             load_checkpoint, save_checkpoint)

    save_checkpoint(checkpoint_path("runs/ppo", 10), {"policy": model.state_dict()},
                    {"iteration": 10, "algorithm": "PPO"})
    state, meta = load_checkpoint(latest_checkpoint("runs/ppo"))
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import pickle
import re
import shutil
import tempfile
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rldataflow.utils.config_sources import to_jsonable

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "STATE_FILE",
    "BEST_CHECKPOINT",
    "CheckpointError",
    "best_checkpoint",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
]

FORMAT_VERSION = 1
STATE_FILE = "state.pt"
METADATA_FILE = "metadata.json"
#: the directory (under a run directory) of the checkpoint with the best return so far; its
#: metadata has ``best = {"metric", "value", "iteration"}``. Not a ``checkpoint_<n>``, so
#: :func:`latest_checkpoint` never picks it.
BEST_CHECKPOINT = "best_checkpoint"
_RESERVED_METADATA = ("format_version", "created")
_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")
_INTERRUPTED_SWAP = re.compile(r"^\.(checkpoint_\d+)\.old-[0-9a-f]+$")
_PAYLOAD_MARK = "rldataflow_state"
# numpy dtypes torch.from_numpy maps one-to-one; anything else is stored as raw bytes
_TORCH_NATIVE_KINDS = {"b", "i", "u", "f", "c"}
_TORCH_NATIVE_DTYPES = {np.dtype(t) for t in ("bool", "int8", "int16", "int32", "int64", "uint8",
                                               "float16", "float32", "float64", "complex64",
                                               "complex128")}


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message names the path.

    Example::

        try:
            load_checkpoint("runs/ppo/checkpoint_000099")
        except CheckpointError as e:
            print(e)   # checkpoint not found: runs/ppo/checkpoint_000099
    """


def checkpoint_path(run_dir: str | os.PathLike[str], iteration: int) -> Path:
    """The conventional checkpoint directory for ``iteration`` under ``run_dir``.

    Example::

        checkpoint_path("runs/ppo", 10)   # PosixPath('runs/ppo/checkpoint_000010')
    """
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return Path(run_dir) / f"checkpoint_{iteration:06d}"


# --------------------------------------------------------------------------------------------
# save


def save_checkpoint(directory: str | os.PathLike[str], state: Mapping[str, Any],
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``state`` and ``metadata`` to ``directory`` atomically; return the directory.

    ``state`` may nest dicts, lists and tuples of tensors, numpy arrays and scalars, Python
    scalars, str and bytes (tuple subclasses are saved as plain tuples); anything else is refused
    here, at save time, naming where it sits in ``state``. ``metadata`` must be JSON-like (numpy
    scalars and tuples are converted); ``format_version`` and ``created`` are added.
    An existing checkpoint at ``directory`` is replaced only after the new one is complete; a
    non-checkpoint file or directory there is never overwritten.

    Example::

        save_checkpoint("runs/ppo/checkpoint_000010",
                        {"policy": model.state_dict(), "obs_mean": np.zeros(4)},
                        {"iteration": 10})
    """
    import torch

    target = Path(directory)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"cannot save checkpoint {target}: state must be a dict, "
                              f"got {type(state).__name__}")
    meta = dict(metadata or {})
    reserved = [k for k in _RESERVED_METADATA if k in meta]
    if reserved:
        raise CheckpointError(f"cannot save checkpoint {target}: metadata key {reserved[0]!r} "
                              "is reserved")
    full_meta = {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **to_jsonable(meta),
    }
    # Encode and serialize metadata before touching the disk: a bad value fails with nothing
    # written.
    numpy_entries: list[dict[str, Any]] = []
    encoded = _encode(state, (), numpy_entries, torch, target)
    payload = {_PAYLOAD_MARK: FORMAT_VERSION, "state": encoded, "numpy": numpy_entries}
    meta_text = json.dumps(full_meta, indent=2, sort_keys=False, allow_nan=True)

    # An empty directory (tempfile.mkdtemp(), say) is taken over; anything else that is not a
    # checkpoint is someone's data and is never replaced.
    if target.exists() and not _is_checkpoint_dir(target) and not _is_empty_dir(target):
        raise CheckpointError(f"refusing to overwrite {target}: it exists and is not a checkpoint")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        state_file = tmp / STATE_FILE
        with open(state_file, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        with open(tmp / METADATA_FILE, "w", encoding="utf-8") as fh:
            fh.write(meta_text)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if target.exists():
            aside = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, aside)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(aside, target)  # put the previous checkpoint back
                raise
            _fsync_dir(parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, target)
            _fsync_dir(parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot save checkpoint {target}: {e}") from e
        raise
    _remove_leftovers(target)
    return target


def _encode(obj: Any, path: tuple, numpy_entries: list[dict[str, Any]], torch: Any,
            target: Path) -> Any:
    # numpy first: np.float64 is a float subclass but pickles as a numpy global, which the
    # weights-only loader rejects.
    if isinstance(obj, (np.ndarray, np.generic)):
        return _encode_numpy(obj, path, numpy_entries, torch, target)
    if obj is None or type(obj) in (bool, int, float, complex, str, bytes):
        return obj
    if isinstance(obj, (bool, int, float, complex, str, bytes)):
        # subclasses (IntEnum, str enums, ...) would pickle as their class: store the plain value
        for base in (bool, int, float, complex, str, bytes):
            if isinstance(obj, base):
                return base(obj)
    if isinstance(obj, torch.Tensor):
        obj = obj.detach()
        if obj.untyped_storage().nbytes() > obj.numel() * obj.element_size():
            # torch.save writes a view's whole storage: copy so a slice of a big buffer does not
            # bloat the checkpoint
            obj = obj.clone()
        return obj
    if isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        return obj
    if isinstance(obj, Mapping):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise CheckpointError(f"cannot save checkpoint {target}: {_where(path)} has a "
                                      f"key of unsupported type {type(k).__name__}")
            out[k] = _encode(v, (*path, k), numpy_entries, torch, target)
        return out
    if isinstance(obj, list):
        return [_encode(v, (*path, i), numpy_entries, torch, target) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_encode(v, (*path, i), numpy_entries, torch, target)
                     for i, v in enumerate(obj))
    if isinstance(obj, (set, frozenset)):
        bad = [v for v in obj if not (v is None or isinstance(v, (bool, int, float, str)))]
        if bad:
            raise CheckpointError(f"cannot save checkpoint {target}: {_where(path)} is a set "
                                  f"holding a {type(bad[0]).__name__}")
        return set(obj)
    raise CheckpointError(f"cannot save checkpoint {target}: {_where(path)} has unsupported type "
                          f"{type(obj).__module__}.{type(obj).__qualname__} (allowed: tensors, "
                          "numpy arrays, python scalars, str, bytes, dict/list/tuple)")


def _encode_numpy(obj: Any, path: tuple, numpy_entries: list[dict[str, Any]], torch: Any,
                  target: Path) -> Any:
    arr = np.asarray(obj)
    if arr.dtype.hasobject or arr.dtype.fields is not None:
        raise CheckpointError(f"cannot save checkpoint {target}: {_where(path)} is a numpy array "
                              f"of dtype {arr.dtype} (object and structured dtypes are not "
                              "supported)")
    shape = tuple(int(d) for d in arr.shape)  # before ascontiguousarray, which makes 0-d 1-d
    arr = np.ascontiguousarray(arr)
    raw = not (arr.dtype in _TORCH_NATIVE_DTYPES and arr.dtype.isnative
               and arr.dtype.kind in _TORCH_NATIVE_KINDS)
    if raw:
        tensor = torch.from_numpy(np.frombuffer(arr.tobytes(), dtype=np.uint8).copy())
    else:
        # copy: the saved tensor must not alias (and torch must not warn about) the caller's array
        tensor = torch.from_numpy(arr.copy())
    numpy_entries.append({
        "path": path,
        "dtype": arr.dtype.str,
        "shape": shape,
        "raw": raw,
        "scalar": isinstance(obj, np.generic),
    })
    return tensor


def _where(path: tuple) -> str:
    return "state" + "".join(f"[{p!r}]" for p in path)


def _fsync_dir(path: Path) -> None:
    # Makes the renames durable on POSIX; directories cannot be opened this way on Windows.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _leftovers(target: Path) -> list[Path]:
    parent = target.parent
    if not parent.is_dir():
        return []
    return sorted(p for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*")
                  for p in parent.glob(pattern))


def _remove_leftovers(target: Path) -> None:
    # Temp / aside directories of a save that crashed earlier; safe to drop once a complete
    # checkpoint is in place. (One writer per checkpoint path is assumed.)
    for p in _leftovers(target):
        shutil.rmtree(p, ignore_errors=True)


def _recover_interrupted_swap(target: Path) -> None:
    # A save killed between moving the old checkpoint aside and moving the new one in leaves
    # only the aside copy, which is complete: put it back, so "the previous checkpoint" is
    # still found where it was. Another reader may have done so first (hence the re-check).
    if target.exists():
        return
    aside = [p for p in _leftovers(target) if ".old-" in p.name and _is_checkpoint_dir(p)]
    if not aside:
        return
    newest = max(aside, key=lambda p: (p / METADATA_FILE).stat().st_mtime)
    with contextlib.suppress(OSError):
        os.replace(newest, target)
        _fsync_dir(target.parent)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and (path / METADATA_FILE).is_file()


# --------------------------------------------------------------------------------------------
# load


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``metadata.json`` of a checkpoint, without loading the state.

    Example::

        read_metadata("runs/ppo/checkpoint_000010")["iteration"]   # 10
    """
    path = Path(directory)
    _recover_interrupted_swap(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"not a checkpoint directory: {path}")
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"not a checkpoint (no {METADATA_FILE}): {path}")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"corrupt {METADATA_FILE} in {path}: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"corrupt {METADATA_FILE} in {path}: not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"unsupported checkpoint format_version {version!r} in {path} "
                              f"(this rldataflow reads version {FORMAT_VERSION})")
    return meta


def load_checkpoint(directory: str | os.PathLike[str],
                    map_location: Any = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``(state, metadata)`` from a checkpoint directory written by :func:`save_checkpoint`.

    Uses ``torch.load(weights_only=True)``: a file containing anything but tensors and plain
    containers is refused, so loading a checkpoint from an untrusted source never runs its code.
    Numpy arrays come back as numpy arrays with their dtype and shape.

    Example::

        state, meta = load_checkpoint("runs/ppo/checkpoint_000010")
        model.load_state_dict(state["policy"])
    """
    import torch

    path = Path(directory)
    meta = read_metadata(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"not a checkpoint (no {STATE_FILE}): {path}")
    if not zipfile.is_zipfile(state_file):
        # torch.save writes a zip archive; anything else is truncated, foreign or corrupt (and
        # would otherwise reach the legacy pickle path)
        raise CheckpointError(f"corrupt {STATE_FILE} in {path}: not a torch zip archive")
    try:
        payload = torch.load(state_file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to load {state_file}: it contains objects other than "
                              f"tensors and plain containers ({_unpickler_reason(e)})") from e
    except Exception as e:
        raise CheckpointError(f"corrupt {STATE_FILE} in {path}: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    if not (isinstance(payload, dict) and payload.get(_PAYLOAD_MARK) == FORMAT_VERSION
            and isinstance(payload.get("state"), dict)):
        raise CheckpointError(f"not an rldataflow state file: {state_file}")
    try:
        entries = {tuple(e["path"]): e for e in payload.get("numpy", [])}
        state = _decode(payload["state"], (), entries) if entries else payload["state"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"corrupt {STATE_FILE} in {path}: bad numpy record ({e})") from e
    return state, meta


def _unpickler_reason(e: Exception) -> str:
    # torch's message is a long paragraph; keep the line that says what was rejected
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _decode(obj: Any, path: tuple, entries: dict[tuple, dict[str, Any]]) -> Any:
    entry = entries.get(path)
    if entry is not None:
        return _decode_numpy(obj, entry)
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _decode(v, (*path, k), entries)
        return out
    if isinstance(obj, list):
        return [_decode(v, (*path, i), entries) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_decode(v, (*path, i), entries) for i, v in enumerate(obj))
    return obj


def _decode_numpy(tensor: Any, entry: dict[str, Any]) -> Any:
    dtype = np.dtype(entry["dtype"])
    shape = tuple(entry["shape"])
    data = tensor.detach().cpu().numpy()
    if entry["raw"]:
        arr = np.frombuffer(data.tobytes(), dtype=dtype).reshape(shape).copy()
    else:
        arr = data.astype(dtype, copy=False).reshape(shape)
    return arr[()] if entry["scalar"] else arr


# --------------------------------------------------------------------------------------------
# discovery


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint directories ``checkpoint_<n>`` under ``run_dir``, oldest iteration first.

    Only complete checkpoints count (those with ``metadata.json``); temporary directories of a
    save in progress are hidden (dot-prefixed) and never listed.

    Example::

        [p.name for p in list_checkpoints("runs/ppo")]   # ['checkpoint_000005', ...]
    """
    root = Path(run_dir)
    if not root.is_dir():
        return []
    for child in list(root.iterdir()):
        interrupted = _INTERRUPTED_SWAP.match(child.name)
        if interrupted:
            _recover_interrupted_swap(root / interrupted.group(1))
    found = []
    for child in root.iterdir():
        m = _CHECKPOINT_NAME.match(child.name)
        if m and _is_checkpoint_dir(child):
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest iteration number under ``run_dir``, or ``None``.

    Example::

        path = latest_checkpoint("runs/ppo")   # runs/ppo/checkpoint_000010, or None
    """
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def best_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The run's best checkpoint (``run_dir/best_checkpoint``, see :data:`BEST_CHECKPOINT`),
    or ``None`` if the run has none.

    Example::

        path = best_checkpoint("runs/ppo")
        read_metadata(path)["best"]   # {'metric': 'evaluation/episode_return_mean', ...}
    """
    target = Path(run_dir) / BEST_CHECKPOINT
    _recover_interrupted_swap(target)  # a save killed mid-swap left the previous best aside
    return target if _is_checkpoint_dir(target) else None
