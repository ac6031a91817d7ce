"""The actor-runtime protocol shared by the inline, process and ray runtimes.

A runtime creates actors (objects living somewhere: in the driver, in a child process, in a Ray
worker), calls their methods and hands back :class:`Future` objects. Everything above this package
talks to actors only through this protocol, which is what lets one plan run unchanged in one
process (debugging), on local processes (the default) and on a Ray cluster.

A method is named by a string, or given as a callable ``fn(instance, *args, **kwargs)`` that runs
inside the actor with the actor's instance as first argument (this is how the dataflow layer ships
its per-shard operator chains to actors).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

MethodSpec = str | Callable[..., Any]

FIRST_COMPLETED = "FIRST_COMPLETED"
ALL_COMPLETED = "ALL_COMPLETED"


class ActorDiedError(RuntimeError):
    """Raised on the future of an actor whose process (or Ray actor) is gone.

    It names the actor and its class, so a user can tell *which* rollout worker or replay shard
    died; the dataflow layer uses it to apply a gather operator's failure policy.
    """

    def __init__(self, actor_name: str, class_name: str, reason: str = "the actor died") -> None:
        self.actor_name = actor_name
        self.class_name = class_name
        self.reason = reason
        super().__init__(f"actor {actor_name!r} (class {class_name}) died: {reason}")

    def __reduce__(self):
        return (ActorDiedError, (self.actor_name, self.class_name, self.reason))


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised inside an actor (chained as ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text.rstrip()


class RemoteError(RuntimeError):
    """Stands in for an exception raised in an actor that could not be sent back as itself."""

    def __reduce__(self):
        return (RemoteError, self.args)


_actor_counter = itertools.count()


class ActorHandle:
    """A reference to an actor created by a runtime. Cheap to copy; safe to hold after death."""

    def __init__(self, runtime: Runtime, name: str, class_name: str) -> None:
        self.runtime = runtime
        self.name = name
        self.class_name = class_name
        self.actor_id = next(_actor_counter)

    def call(self, method: MethodSpec, *args: Any, **kwargs: Any) -> Future:
        """Call ``method`` on the actor; returns a :class:`Future` of its result."""
        return self.runtime.call(self, method, *args, **kwargs)

    def is_alive(self) -> bool:
        return self.runtime.is_alive(self)

    def __repr__(self) -> str:
        return f"<actor {self.name} ({self.class_name}) on {self.runtime.name}>"


class Future:
    """The result of one actor call. ``result()`` blocks; ``add_done_callback`` never polls.

    The base implementation wraps a :class:`concurrent.futures.Future`; the inline runtime
    overrides it to compute lazily.
    """

    def __init__(self, actor: ActorHandle, method_name: str,
                 inner: cf.Future | None = None) -> None:
        self.actor = actor
        self.method_name = method_name
        self._inner = inner if inner is not None else cf.Future()

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._inner.result(timeout)
        except cf.TimeoutError as exc:
            if self._inner.done() and self._inner.exception() is exc:
                raise  # the method itself raised TimeoutError (cf.TimeoutError is TimeoutError)
            raise TimeoutError(
                f"{self.actor.name}.{self.method_name}() did not finish in {timeout}s") from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._inner.exception(timeout)

    def done(self) -> bool:
        return self._inner.done()

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(self)`` once the future is resolved (at once if it already is)."""
        self._inner.add_done_callback(lambda _inner: fn(self))

    # used by the runtimes that resolve futures from a background thread
    def _set_result(self, value: Any) -> None:
        if not self._inner.done():
            self._inner.set_result(value)

    def _set_exception(self, exc: BaseException) -> None:
        if not self._inner.done():
            self._inner.set_exception(exc)

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<Future {self.actor.name}.{self.method_name}() {state}>"


class IODriver:
    """A runtime whose replies are read by the threads that wait for them (the process runtime).

    ``drive(until, timeout)`` reads and dispatches replies in the calling thread until
    ``until()`` holds (True) or the timeout passes (False); ``interrupt()`` wakes a thread
    blocked in ``drive`` so that it checks its condition again. The dataflow layer's waits use
    the drivers registered in :data:`IO_DRIVERS`, so a plan's main loop reads its own replies
    and no reader thread has to hand each one over.
    """

    def drive(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        raise NotImplementedError

    def interrupt(self) -> None:
        raise NotImplementedError

    def release_io(self) -> None:
        """Let the runtime's own reader thread read again, if this thread was the reader."""


#: the live runtimes that are I/O drivers (registered while they have actors)
IO_DRIVERS: list[IODriver] = []


_RESOLVE_LOCK = threading.Lock()  # a future's resolution vs a callback being added
_PENDING, _VALUE, _ERROR = 0, 1, 2


class DrivenFuture(Future):
    """A future whose waiter reads the runtime's replies itself (see :class:`IODriver`).

    Lighter than a :class:`concurrent.futures.Future` (no condition variable per call): a
    thread waiting on it runs ``driver.drive`` until it is done, and the driver wakes the
    threads waiting for it to read.
    """

    def __init__(self, actor: ActorHandle, method_name: str, driver: IODriver) -> None:
        self.actor = actor
        self.method_name = method_name
        self._driver = driver
        self._state = _PENDING
        self._value: Any = None
        self._callbacks: list[Callable[[Future], Any]] | None = None

    def done(self) -> bool:
        return self._state != _PENDING

    def _wait(self, timeout: float | None) -> None:
        if self._state == _PENDING and not self._driver.drive(self.done, timeout):
            raise TimeoutError(
                f"{self.actor.name}.{self.method_name}() did not finish in {timeout}s")

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._state == _ERROR:
            raise self._value
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._value if self._state == _ERROR else None

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        with _RESOLVE_LOCK:
            if self._state == _PENDING:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        self._run_callback(fn)

    def _set_result(self, value: Any) -> None:
        self._resolve(_VALUE, value)

    def _set_exception(self, exc: BaseException) -> None:
        self._resolve(_ERROR, exc)

    def _resolve(self, state: int, value: Any) -> None:
        with _RESOLVE_LOCK:
            if self._state != _PENDING:
                return
            self._value, self._state = value, state
            callbacks, self._callbacks = self._callbacks, None
        if callbacks:
            for fn in callbacks:
                self._run_callback(fn)

    def _run_callback(self, fn: Callable[[Future], Any]) -> None:
        try:
            fn(self)
        except Exception:  # as concurrent.futures does: a failing callback must not stop I/O
            logging.getLogger(__name__).exception("exception calling callback for %r", self)


def method_name_of(method: MethodSpec) -> str:
    if isinstance(method, str):
        return method
    return getattr(method, "__name__", type(method).__name__)


def invoke(instance: Any, method: MethodSpec, args: Sequence[Any], kwargs: dict) -> Any:
    """Run a method spec on an actor instance (used by every runtime's actor side)."""
    if isinstance(method, str):
        return getattr(instance, method)(*args, **kwargs)
    return method(instance, *args, **kwargs)


class Runtime:
    """The protocol: create actors, call methods, wait on futures, kill, shut down.

    Use as a context manager so that every actor is shut down on exit::

        with get_runtime("process") as rt:
            counter = rt.create_actor(Counter, start=1)
            print(counter.call("incr").result())
    """

    name = "abstract"
    #: True when a call only runs once its result is asked for (the inline runtime): an async
    #: gather then asks for the oldest pending call instead of waiting to be notified.
    completes_on_demand = False

    def __init__(self) -> None:
        self._names: dict[str, int] = {}
        self._name_lock = threading.Lock()

    # -- naming ------------------------------------------------------------------------------
    def _unique_name(self, cls: type, name: str | None) -> str:
        base = name or cls.__name__
        with self._name_lock:
            n = self._names.get(base, 0)
            self._names[base] = n + 1
        return base if (name and n == 0) else f"{base}-{n}"

    # -- the protocol ------------------------------------------------------------------------
    def create_actor(self, cls: type, *args: Any, name: str | None = None,
                     **kwargs: Any) -> ActorHandle:
        raise NotImplementedError

    def call(self, actor: ActorHandle, method: MethodSpec, *args: Any, **kwargs: Any) -> Future:
        raise NotImplementedError

    def call_many(self, actors: Sequence[ActorHandle], method: MethodSpec, *args: Any,
                  **kwargs: Any) -> list[Future]:
        """Call the same method with the same arguments on many actors.

        The arguments are serialized once, not once per actor (this is how weights are
        broadcast to workers).
        """
        return [self.call(a, method, *args, **kwargs) for a in actors]

    def wait(self, futures: Iterable[Future], return_when: str = FIRST_COMPLETED,
             timeout: float | None = None) -> tuple[list[Future], list[Future]]:
        """Block until one (``FIRST_COMPLETED``) or all (``ALL_COMPLETED``) futures are done.

        Returns ``(done, pending)`` keeping the input order within each list. Never polls.
        """
        futures = list(futures)
        if not futures:
            return [], []
        inner = {f._inner: f for f in futures}
        cf.wait(list(inner), timeout=timeout,
                return_when=cf.FIRST_COMPLETED if return_when == FIRST_COMPLETED
                else cf.ALL_COMPLETED)
        done = [f for f in futures if f.done()]
        pending = [f for f in futures if not f.done()]
        return done, pending

    def get(self, futures: Future | Sequence[Future], timeout: float | None = None) -> Any:
        """The result of a future, or the list of results of a list of futures."""
        if isinstance(futures, Future):
            return futures.result(timeout)
        return [f.result(timeout) for f in futures]

    def kill(self, actor: ActorHandle) -> None:
        raise NotImplementedError

    def is_alive(self, actor: ActorHandle) -> bool:
        raise NotImplementedError

    def pid(self, actor: ActorHandle) -> int | None:
        """The OS process id the actor runs in, or None when it has no process of its own
        (inline: it lives in the driver). For fault injection and monitoring, e.g.
        ``os.kill(rt.pid(actor), signal.SIGKILL)``. (Ray asks the actor once, so there an
        actor already dead raises :class:`ActorDiedError`.)"""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Kill every actor this runtime created. Idempotent."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
