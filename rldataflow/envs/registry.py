"""Env registry: names -> env creators, and :func:`make_env` with helpful errors."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any, Union

import gymnasium

__all__ = ["EnvCreator", "EnvError", "EnvSpec", "make_env", "register", "registered_envs"]

EnvCreator = Callable[[dict], gymnasium.Env]
#: What :func:`make_env` accepts: a registered name, a Gymnasium id, or a creator callable.
EnvSpec = Union[str, EnvCreator]

_REGISTRY: dict[str, EnvCreator] = {}


class EnvError(ValueError):
    """An env could not be found or created. The message is one line naming the env."""


def register(name: str, creator: EnvCreator) -> None:
    """Register ``creator(env_config) -> gymnasium.Env`` under ``name``.

    Registered names take precedence over Gymnasium ids of the same name.

    Example::

        >>> import gymnasium
        >>> register("my/CartPole", lambda cfg: gymnasium.make("CartPole-v1", **cfg))
        >>> make_env("my/CartPole").action_space
        Discrete(2)
    """
    if not callable(creator):
        raise TypeError(f"env creator for {name!r} must be callable, got {type(creator).__name__}")
    _REGISTRY[name] = creator


def registered_envs() -> list[str]:
    """Names registered with :func:`register` (Gymnasium ids are not listed)."""
    return sorted(_REGISTRY)


def _describe(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    return getattr(spec, "__qualname__", None) or getattr(spec, "__name__", None) or repr(spec)


def _suggest(name: str) -> str | None:
    candidates = list(_REGISTRY) + list(gymnasium.envs.registry.keys())
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _unknown_env_error(name: str) -> EnvError:
    hint = _suggest(name)
    where = "not registered with rldataflow.envs.register and not a Gymnasium id"
    if hint is not None:
        return EnvError(f"unknown env {name!r} ({where}); did you mean {hint!r}?")
    return EnvError(f"unknown env {name!r} ({where})")


#: Gymnasium env families that need an optional extra: entry-point module prefix ->
#: (rldataflow extra, what it installs)
_ENV_EXTRAS = {"gymnasium.envs.mujoco": ("mujoco", "MuJoCo"),
               "gymnasium.envs.box2d": ("box2d", "Box2D")}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


_mujoco_warnings_routed = False


def _route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to ``logging`` (each distinct one once, at DEBUG) instead of its
    default handler, which prints every one to stderr and appends it to ``MUJOCO_LOG.TXT`` in
    the working directory: Gymnasium's MuJoCo models trip a deprecation warning per env made."""
    global _mujoco_warnings_routed
    if _mujoco_warnings_routed:
        return
    try:
        import mujoco
    except ImportError:
        return  # make_env reports the missing extra
    seen: set[str] = set()

    def handler(message: str) -> None:
        if message not in seen:
            seen.add(message)
            logging.getLogger("rldataflow.envs.mujoco").debug("MuJoCo: %s", message.strip())

    mujoco.set_mju_user_warning(handler)
    _mujoco_warnings_routed = True


def _extra_for(spec: Any) -> tuple[str, str] | None:
    """The (extra, package) a Gymnasium id's family needs, if it is one of :data:`_ENV_EXTRAS`."""
    if not isinstance(spec, str) or spec not in gymnasium.envs.registry:
        return None
    entry = gymnasium.envs.registry[spec].entry_point
    module = entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
    for prefix, extra in _ENV_EXTRAS.items():
        if module.startswith(prefix):
            return extra
    return None


def make_env(spec: EnvSpec, env_config: dict | None = None) -> gymnasium.Env:
    """Create one env from a registered name, a Gymnasium id, or a callable.

    * callable: ``spec(env_config)``;
    * registered name: ``creator(env_config)``;
    * ``ALE/...`` id: :func:`rldataflow.envs.atari.make_atari_env` (DeepMind preprocessing, true
      episode returns; ``{"atari_preprocessing": False}`` for the raw env);
    * Gymnasium id (or ``"module:Id"``): ``gymnasium.make(id, **env_config)``, with the passive
      env checker disabled unless ``env_config`` says otherwise (it costs a wrapper call per step).

    Raises :class:`EnvError` for an unknown id (with a did-you-mean suggestion) and when the
    constructor fails (the original exception is chained).

    Example::

        >>> env = make_env("CartPole-v1")
        >>> env.observation_space.shape
        (4,)
    """
    config = dict(env_config or {})
    if callable(spec) and not isinstance(spec, str):
        creator: Callable[[], Any] = lambda: spec(config)
    elif isinstance(spec, str):
        if spec in _REGISTRY:
            registered = _REGISTRY[spec]
            creator = lambda: registered(config)
        elif spec.startswith("ALE/"):
            # Atari: ale-py registered lazily (in each worker process), DeepMind preprocessing
            from rldataflow.envs import atari

            atari.ensure_ale_registered(spec)
            if spec not in gymnasium.envs.registry:
                raise _unknown_env_error(spec)
            creator = lambda: atari.make_atari_env(spec, config)
        elif spec in gymnasium.envs.registry or ":" in spec:
            kwargs = {"disable_env_checker": True, **config}
            creator = lambda: gymnasium.make(spec, **kwargs)
        else:
            raise _unknown_env_error(spec)
    else:
        raise EnvError(
            f"env spec must be a registered name, a Gymnasium id or a callable, got "
            f"{type(spec).__name__}"
        )
    if (_extra_for(spec) or ("",))[0] == "mujoco":
        _route_mujoco_warnings()
    try:
        env = creator()
    except (ImportError, gymnasium.error.DependencyNotInstalled) as err:
        extra = _extra_for(spec)
        if extra is None:
            raise EnvError(f"could not create env {_describe(spec)!r}: "
                           f"{type(err).__name__}: {_first_line(err)}") from err
        raise EnvError(f"env {_describe(spec)!r} needs {extra[1]}, which is not installed: "
                       f'pip install "rldataflow[{extra[0]}]"') from err
    except Exception as err:  # re-raised with the env's name, the original chained
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        detail = f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__
        raise EnvError(f"could not create env {_describe(spec)!r}: {detail}") from err
    if not isinstance(env, gymnasium.Env):
        raise EnvError(
            f"env creator for {_describe(spec)!r} returned {type(env).__name__}, "
            "not a gymnasium.Env"
        )
    return env
