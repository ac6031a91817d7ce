"""The inline runtime: actors are plain objects in the driver; calls run when a result is needed.

Deterministic (one thread, a fixed order) and debuggable: ``breakpoint()`` inside an actor method
stops in the driver's own terminal. Calls on one actor run in the order they were made, as they
would on a real actor, even when a later call's result is asked for first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from rldataflow.runtime.base import (
    ActorDiedError,
    ActorHandle,
    Future,
    MethodSpec,
    Runtime,
    invoke,
    method_name_of,
)


class _InlineActor:
    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.queue: deque[InlineFuture] = deque()
        self.alive = True


class InlineFuture(Future):
    """A call that has not run yet; asking for its result (or whether it is done) runs it."""

    def __init__(self, actor: ActorHandle, method: MethodSpec, args: tuple, kwargs: dict,
                 runtime: InlineRuntime) -> None:
        self.actor = actor
        self.method_name = method_name_of(method)
        self._call = (method, args, kwargs)
        self._runtime = runtime
        self._finished = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Future], Any]] = []

    def _force(self) -> None:
        if not self._finished:
            self._runtime._run_until(self)

    def _finish(self, value: Any = None, error: BaseException | None = None) -> None:
        self._finished = True
        self._value, self._error = value, error
        self._call = None
        for fn in self._callbacks:
            fn(self)
        self._callbacks.clear()

    def result(self, timeout: float | None = None) -> Any:
        self._force()
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._force()
        return self._error

    def done(self) -> bool:
        # An inline call can always complete now, so "is it ready?" is answered by running it.
        self._force()
        return True

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        if self._finished:
            fn(self)
        else:
            self._callbacks.append(fn)


class InlineRuntime(Runtime):
    """Actors as plain objects in the calling process (``get_runtime("inline")``)."""

    name = "inline"
    completes_on_demand = True

    def __init__(self) -> None:
        super().__init__()
        self._actors: dict[int, _InlineActor] = {}

    def create_actor(self, cls: type, *args: Any, name: str | None = None,
                     **kwargs: Any) -> ActorHandle:
        handle = ActorHandle(self, self._unique_name(cls, name), cls.__name__)
        self._actors[handle.actor_id] = _InlineActor(cls(*args, **kwargs))
        return handle

    def instance(self, actor: ActorHandle) -> Any:
        """The actor's object itself (inline only: handy for debugging and tests)."""
        return self._actors[actor.actor_id].instance

    def call(self, actor: ActorHandle, method: MethodSpec, *args: Any, **kwargs: Any) -> Future:
        fut = InlineFuture(actor, method, args, kwargs, self)
        state = self._actors.get(actor.actor_id)
        if state is None or not state.alive:
            fut._finish(error=ActorDiedError(actor.name, actor.class_name, "it was killed"))
        else:
            state.queue.append(fut)
        return fut

    def _run_until(self, target: InlineFuture) -> None:
        state = self._actors[target.actor.actor_id]
        while state.queue:
            fut = state.queue.popleft()
            method, args, kwargs = fut._call
            try:
                value = invoke(state.instance, method, args, kwargs)
            except Exception as exc:  # delivered through the future, as a remote runtime would
                fut._finish(error=exc)
            else:
                fut._finish(value=value)
            if fut is target:
                return

    def wait(self, futures, return_when="FIRST_COMPLETED", timeout=None):
        futures = list(futures)
        if not futures:
            return [], []
        if return_when == "FIRST_COMPLETED":
            futures[0].done()
            done = [f for f in futures if getattr(f, "_finished", True)]
            return done, [f for f in futures if f not in done]
        for f in futures:
            f.done()
        return futures, []

    def kill(self, actor: ActorHandle) -> None:
        state = self._actors.get(actor.actor_id)
        if state is None or not state.alive:
            return
        state.alive = False
        while state.queue:
            state.queue.popleft()._finish(
                error=ActorDiedError(actor.name, actor.class_name, "it was killed"))
        stop = getattr(state.instance, "stop", None)
        if callable(stop):
            try:
                stop()
            except Exception:  # best effort: the actor is going away anyway
                pass

    def is_alive(self, actor: ActorHandle) -> bool:
        state = self._actors.get(actor.actor_id)
        return bool(state and state.alive)

    def pid(self, actor: ActorHandle) -> None:
        """None: an inline actor has no process of its own (it is the driver)."""
        return None

    def call_many(self, actors: Sequence[ActorHandle], method: MethodSpec, *args: Any,
                  **kwargs: Any) -> list[Future]:
        return [self.call(a, method, *args, **kwargs) for a in actors]

    def shutdown(self) -> None:
        for state_id in list(self._actors):
            state = self._actors[state_id]
            if state.alive:
                state.alive = False
                state.queue.clear()
        self._actors.clear()
