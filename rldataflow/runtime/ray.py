"""The ray runtime: every actor is a Ray actor (``get_runtime("ray")``).

``RayRuntime()`` starts a local Ray instance when Ray is not initialized yet (and shuts it down in
:meth:`RayRuntime.shutdown`); ``RayRuntime(address="auto")`` or ``address="ray://..."`` joins a
cluster. When Ray is already initialized (by the user, or by another ``RayRuntime``) it is reused
and left running on shutdown: only this runtime's actors are killed.

Each actor is a generic Ray actor (:class:`_ActorShell`) holding an instance of the user's class,
shipped with cloudpickle. Exceptions raised by actor methods are caught in the actor and sent
back as values, so the driver raises the original exception type with the actor-side traceback
chained as a :class:`RemoteTraceback` (the same as the process runtime). Ray's futures resolve
through callbacks (``ObjectRef.future()``): nothing polls.

This is the only module of the package that imports ``ray``.
"""

from __future__ import annotations

import atexit
import os
import pickle
import sys
import threading
from collections.abc import Sequence
from typing import Any

try:
    import ray
    import ray.exceptions as ray_exceptions
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the ray runtime needs Ray: install it with `pip install rldataflow[ray]`") from None

import cloudpickle

from rldataflow.runtime.actor_side import THREAD_ENV, format_remote_traceback, limit_torch_threads
from rldataflow.runtime.base import (
    ActorDiedError,
    ActorHandle,
    Future,
    MethodSpec,
    RemoteError,
    RemoteTraceback,
    Runtime,
    invoke,
    method_name_of,
)
from rldataflow.runtime.wire import PICKLE_PROTOCOL, is_small_call

DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_task_retries": 0}


# ---------------------------------------------------------------------------------------------
# the actor side (runs in a Ray worker process)
# ---------------------------------------------------------------------------------------------
class _Failure:
    """An exception raised in an actor method, sent back as a value: ``(exception, traceback)``."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self):
        return (_Failure, (self.data,))

    def to_exception(self) -> BaseException:
        try:
            exc, tb_text = pickle.loads(self.data)
        except Exception as err:  # e.g. an exception class the driver cannot import
            return RemoteError(f"an actor raised an exception the driver cannot unpickle: {err!r}")
        exc.__cause__ = RemoteTraceback(tb_text)
        return exc


def _pack_error(exc: BaseException, where: str) -> bytes:
    tb_text = format_remote_traceback(exc, where)
    try:
        data = cloudpickle.dumps((exc, tb_text))
        pickle.loads(data)  # can the driver rebuild it? (e.g. a custom __init__)
        return data
    except Exception:
        return cloudpickle.dumps((RemoteError(repr(exc)), tb_text))


class _ActorShell:
    """The Ray actor class behind every actor: holds the user's instance and runs calls on it."""

    def __init__(self, driver_path: list[str], ctor: bytes, name: str) -> None:
        os.environ.update(THREAD_ENV)  # before the user's class (numpy, torch) is imported
        sys.path.extend(p for p in driver_path if p not in sys.path)
        self._where = f"actor {name!r} (pid {os.getpid()})"
        self._instance: Any = None
        self._ctor_error: bytes | None = None
        try:
            cls, args, kwargs = pickle.loads(ctor)
            limit_torch_threads()
            self._instance = cls(*args, **kwargs)
        except Exception as exc:  # reported by _ready(), raised by create_actor
            self._ctor_error = _pack_error(exc, self._where)
        self._torch_limited = limit_torch_threads()

    def _ready(self) -> bytes | None:
        return self._ctor_error

    def _node_id(self) -> str:  # where Ray placed this actor (RayRuntime.placement)
        return ray.get_runtime_context().get_node_id()

    def _pid(self) -> int:
        return os.getpid()

    def _invoke(self, method: MethodSpec, args: tuple, kwargs: dict) -> Any:
        try:
            return invoke(self._instance, method, args, kwargs)
        except Exception as exc:
            return _Failure(_pack_error(exc, self._where))
        finally:
            if not self._torch_limited:
                self._torch_limited = limit_torch_threads()

    def _invoke_packed(self, packed: tuple) -> Any:  # call_many: one ray.put for all actors
        return self._invoke(*packed)

    def _invoke_pickled(self, payload: bytes) -> Any:  # a small call, pickled by the driver
        return self._invoke(*pickle.loads(payload))

    def _stop(self) -> None:
        stop = getattr(self._instance, "stop", None)
        if callable(stop):
            stop()


_remote_shell_lock = threading.Lock()
_remote_shell: Any = None


def _shell_class() -> Any:
    global _remote_shell
    with _remote_shell_lock:
        if _remote_shell is None:
            _remote_shell = ray.remote(_ActorShell)
        return _remote_shell


# ---------------------------------------------------------------------------------------------
# the driver side
# ---------------------------------------------------------------------------------------------
class _RayActorState:
    def __init__(self, handle: ActorHandle, actor: Any) -> None:
        self.handle = handle
        self.actor = actor
        self.alive = True
        self.reason: str | None = None
        self.pending: set[Future] = set()
        self.pid: int | None = None


class RayRuntime(Runtime):
    """Actors as Ray actors.

    Args:
        address: ``None`` starts a local Ray instance (unless Ray is initialized already);
            ``"auto"`` or ``"ray://host:port"`` joins a running cluster.
        num_cpus: CPUs of a local instance started here.
        actor_options: default Ray options of every actor (defaults:
            :data:`DEFAULT_ACTOR_OPTIONS`, which reserve no CPU, so that many actors fit on a
            small machine; give e.g. ``{"num_cpus": 1}`` to have Ray place them by CPU).
        placement: ``"default"`` leaves placement to Ray (which packs actors that reserve no
            CPU onto one node); ``"spread"`` pins the actors round-robin to the cluster's nodes
            alive at each creation, in creation order, so rollout workers use every node of a
            cluster (a replacement of an actor lost with its node goes to a node still alive).
            Ray's own ``SPREAD`` strategy and soft node affinity both left actors that reserve
            no CPU on one node of a two-node cluster in our test, hence the hard affinity.
        stop_timeout: seconds :meth:`shutdown` waits for actors' ``stop()`` methods.
        start_timeout: seconds :meth:`create_actor` waits for an actor to be scheduled and
            constructed (``None``: forever; Ray waits for resources an actor asks for).
        **init_kwargs: more arguments of ``ray.init`` (when Ray is started here).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 actor_options: dict[str, Any] | None = None, stop_timeout: float = 2.0,
                 start_timeout: float | None = None, placement: str = "default",
                 **init_kwargs: Any) -> None:
        super().__init__()
        if placement not in ("default", "spread"):
            raise ValueError(f"ray runtime option 'placement' must be 'default' or 'spread', "
                             f"got {placement!r}")
        self.placement_mode = placement
        self._next_node = 0
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self.actor_options = {**DEFAULT_ACTOR_OPTIONS, **(actor_options or {})}
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address, "include_dashboard": False,
                                      "ignore_reinit_error": True, "log_to_driver": True}
            if num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
            kwargs.update(init_kwargs)
            ray.init(**kwargs)
            self._owns_ray = True
        self._lock = threading.Lock()
        self._actors: dict[int, _RayActorState] = {}
        self._closed = False
        atexit.register(self.shutdown)

    # -- actors ------------------------------------------------------------------------------
    def create_actor(self, cls: type, *args: Any, name: str | None = None,
                     **kwargs: Any) -> ActorHandle:
        """Create a Ray actor running ``cls(*args, **kwargs)``; returns when it is constructed.

        An exception raised by the constructor is raised here (its type kept, the actor-side
        traceback chained as a :class:`RemoteTraceback`).
        """
        if self._closed:
            raise RuntimeError("this RayRuntime has been shut down")
        handle = ActorHandle(self, self._unique_name(cls, name),
                             getattr(cls, "__name__", type(cls).__name__))
        ctor = cloudpickle.dumps((cls, args, kwargs))
        actor = _shell_class().options(**self._options_for_next_actor()).remote(
            list(sys.path), ctor, handle.name)
        try:
            error = ray.get(actor._ready.remote(), timeout=self.start_timeout)
        except ray_exceptions.GetTimeoutError:
            _kill_quietly(actor)
            raise TimeoutError(f"actor {handle.name!r} ({handle.class_name}) was not constructed "
                               f"within {self.start_timeout}s") from None
        except ray_exceptions.RayActorError as exc:
            raise ActorDiedError(handle.name, handle.class_name,
                                 f"it died while starting ({_condense(exc)})") from exc
        except BaseException:
            _kill_quietly(actor)
            raise
        if error is not None:
            _kill_quietly(actor)
            raise _Failure(error).to_exception()
        with self._lock:
            self._actors[handle.actor_id] = _RayActorState(handle, actor)
        return handle

    def _options_for_next_actor(self) -> dict[str, Any]:
        if self.placement_mode != "spread" or "scheduling_strategy" in self.actor_options:
            return self.actor_options
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
        with self._lock:
            node = nodes[self._next_node % len(nodes)]
            self._next_node += 1
        return {**self.actor_options,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}

    def placement(self) -> dict[str, str]:
        """Actor name -> id of the Ray node it runs on, for this runtime's live actors.

        Example::

            rt = RayRuntime(address="auto", placement="spread")
            ...
            len(set(rt.placement().values()))   # nodes in use
        """
        with self._lock:
            states = [st for st in self._actors.values() if st.alive]
        refs = [st.actor._node_id.remote() for st in states]
        return {st.handle.name: node
                for st, node in zip(states, ray.get(refs, timeout=30), strict=True)}

    def ray_actor(self, actor: ActorHandle) -> Any:
        """The underlying Ray actor handle (of the generic shell class)."""
        return self._state(actor).actor

    def is_alive(self, actor: ActorHandle) -> bool:
        """False once the actor was killed or a call found it dead (Ray is not asked)."""
        st = self._actors.get(actor.actor_id)
        return st is not None and st.alive

    def pid(self, actor: ActorHandle) -> int:
        """The process id of the Ray worker process the actor runs in (asked once, then
        remembered; on a multi-node cluster it is a pid on the actor's node)."""
        st = self._state(actor)
        if st.pid is None:
            try:
                st.pid = int(ray.get(st.actor._pid.remote(), timeout=self.start_timeout))
            except ray_exceptions.RayActorError as exc:
                raise ActorDiedError(actor.name, actor.class_name, _condense(exc)) from exc
        return st.pid

    def kill(self, actor: ActorHandle) -> None:
        st = self._actors.get(actor.actor_id)
        if st is None:
            return
        pending = self._mark_dead(st, "it was killed (Runtime.kill)")
        if pending is None:
            return
        _kill_quietly(st.actor)
        self._fail(st, pending)

    # -- calls -------------------------------------------------------------------------------
    def call(self, actor: ActorHandle, method: MethodSpec, *args: Any, **kwargs: Any) -> Future:
        fut = Future(actor, method_name_of(method))
        st = self._actors.get(actor.actor_id)
        if st is None or not st.alive:
            fut._set_exception(self._died(actor, st))
            return fut
        try:
            if is_small_call(method, args, kwargs):
                # one bytes argument costs Ray a fraction of three objects to serialize
                ref = st.actor._invoke_pickled.remote(
                    pickle.dumps((method, args, kwargs), protocol=PICKLE_PROTOCOL))
            else:
                ref = st.actor._invoke.remote(method, args, kwargs)
        except Exception as exc:  # arguments Ray cannot serialize
            fut._set_exception(_arg_error(actor, method, exc))
            return fut
        self._watch(st, fut, ref)
        return fut

    def call_many(self, actors: Sequence[ActorHandle], method: MethodSpec, *args: Any,
                  **kwargs: Any) -> list[Future]:
        """Call one method with the same arguments on many actors: one ``ray.put`` for all."""
        name = method_name_of(method)
        futures = [Future(a, name) for a in actors]
        try:
            packed = ray.put((method, args, kwargs))
        except Exception as exc:
            for fut in futures:
                fut._set_exception(_arg_error(fut.actor, method, exc))
            return futures
        for actor, fut in zip(actors, futures, strict=True):
            st = self._actors.get(actor.actor_id)
            if st is None or not st.alive:
                fut._set_exception(self._died(actor, st))
                continue
            self._watch(st, fut, st.actor._invoke_packed.remote(packed))
        return futures

    def _watch(self, st: _RayActorState, fut: Future, ref: Any) -> None:
        fut._ray_ref = ref  # the ObjectRef while the call is pending (e.g. for ray.cancel)
        with self._lock:
            st.pending.add(fut)

        def resolve(inner: Any) -> None:
            fut._ray_ref = None  # do not pin the result in the object store
            with self._lock:
                st.pending.discard(fut)
            try:
                value = inner.result()
            except BaseException as exc:  # translated and delivered through the future
                fut._set_exception(self._translate(st, exc))
                return
            if isinstance(value, _Failure):
                fut._set_exception(value.to_exception())
            else:
                fut._set_result(value)

        ref.future().add_done_callback(resolve)

    def _translate(self, st: _RayActorState, exc: BaseException) -> BaseException:
        if isinstance(exc, ray_exceptions.RayActorError):  # died, unavailable, init failed
            pending = self._mark_dead(st, f"Ray reports: {_condense(exc)}")
            if pending:
                self._fail(st, pending)
            err = ActorDiedError(st.handle.name, st.handle.class_name,
                                 st.reason or "the actor died")
            err.__cause__ = exc
            return err
        if isinstance(exc, ray_exceptions.RayTaskError):  # a failure outside the method itself
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception) and not isinstance(cause, ray_exceptions.RayError):
                cause.__cause__ = RemoteTraceback(getattr(exc, "traceback_str", str(exc)))
                return cause
            return RemoteError(str(exc))
        return exc

    # -- state -------------------------------------------------------------------------------
    def _mark_dead(self, st: _RayActorState, reason: str) -> list[Future] | None:
        """Mark an actor dead; its pending futures, or None if it was dead already."""
        with self._lock:
            if not st.alive:
                return None
            st.alive = False
            st.reason = reason
            pending = list(st.pending)
            st.pending.clear()
        return pending

    def _fail(self, st: _RayActorState, futures: list[Future]) -> None:
        for fut in futures:
            fut._set_exception(ActorDiedError(st.handle.name, st.handle.class_name,
                                              st.reason or "the actor died"))

    @staticmethod
    def _died(actor: ActorHandle, st: _RayActorState | None) -> ActorDiedError:
        reason = st.reason if st is not None else "it does not belong to this runtime"
        return ActorDiedError(actor.name, actor.class_name, reason or "the actor died")

    def _state(self, actor: ActorHandle) -> _RayActorState:
        st = self._actors.get(actor.actor_id)
        if st is None:
            raise KeyError(f"{actor!r} does not belong to this runtime")
        return st

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Kill this runtime's actors (after their ``stop()``); stop Ray if it was started here."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states = [st for st in self._actors.values() if st.alive]
        if ray.is_initialized():
            stops = []
            for st in states:
                try:
                    stops.append(st.actor._stop.remote())
                except Exception:
                    pass
            if stops:
                try:
                    ray.wait(stops, num_returns=len(stops), timeout=self.stop_timeout)
                except Exception:
                    pass
        for st in states:
            pending = self._mark_dead(st, "the runtime was shut down")
            if ray.is_initialized():
                _kill_quietly(st.actor)
            self._fail(st, pending or [])
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        atexit.unregister(self.shutdown)

    def __repr__(self) -> str:
        alive = sum(st.alive for st in self._actors.values())
        return f"<RayRuntime {alive} live actors{' (owns Ray)' if self._owns_ray else ''}>"


def _kill_quietly(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass


def _condense(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _arg_error(actor: ActorHandle, method: MethodSpec, exc: Exception) -> TypeError:
    err = TypeError(f"the arguments of {actor.name}.{method_name_of(method)}() could not be "
                    f"serialized: {exc!r}")
    err.__cause__ = exc
    return err
