"""Reading the actors' replies in the driver: who reads, when, and what a reply or a death does.

This is the part of the process runtime where its speed and its liveness meet, so it is kept
apart from starting actors and sending calls (:mod:`rldataflow.runtime.process`).

Replies are read by the thread that waits for them: ``Future.result()``, ``wait()`` and the
dataflow layer's waits (through :data:`~rldataflow.runtime.base.IO_DRIVERS`) select (no polling)
on every actor's connection and process sentinel at once, dispatch what arrived, and keep the
reader role (the *I/O token*) "parked" when their wait is over, so that a plan's loop reads its
own replies with no thread hand-off per item (that hand-off cost half of gather_async's
throughput). A daemon reader thread reads whenever no other thread does: the token is free, or
parked for more than :data:`PARK_S` (its holder is busy elsewhere), so callbacks still run and a
process that ends for any reason (SIGKILL included) still fails all its pending futures with
:class:`~rldataflow.runtime.base.ActorDiedError` at once. A thread about to block in a send hands
the token back first (:meth:`ReplyReader.release_io`: the actor may be blocked sending us a
reply).

Future callbacks run in whichever thread reads: keep them short (calls made from a callback are
sent by a helper thread of the runtime; a callback may wait on another future, the reading then
goes on nested in its thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait as mp_wait
from typing import Any

from rldataflow.runtime.base import (
    ActorDiedError,
    ActorHandle,
    Future,
    IODriver,
    RemoteError,
    RemoteTraceback,
)
from rldataflow.runtime.wire import OK, FrameReader, loads

logger = logging.getLogger(__name__)

_READER = -1   # the I/O token's owner when the reader thread holds it
PARK_S = 0.05  # a token parked this long goes back to the reader thread


def describe_exit(exitcode: int | None) -> str:
    """Why an actor's process ended, in words (for :class:`ActorDiedError`)."""
    if exitcode is None:
        return "its process ended (exit status unknown)"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        return f"its process was killed by {sig} (exit code {exitcode})"
    return f"its process exited with code {exitcode}"


class ActorState:
    """What the driver knows about one actor process (its sending and its reading side)."""

    def __init__(self, handle: ActorHandle, proc: Any, sock: socket.socket,
                 frames: FrameReader) -> None:
        self.handle = handle
        self.proc = proc
        self.sock = sock
        self.frames: FrameReader | None = frames
        self.pid: int = proc.pid
        self.sentinel: int = proc.sentinel
        self.pending: dict[int, Future] = {}     # guarded by the runtime's lock
        self.outbox: deque = deque()              # (call id, frame parts), in call order
        self.send_lock = threading.Lock()
        self.alive = True        # False once killed, shut down or seen dead
        self.reason: str | None = None  # why it ended, once it has
        self.sock_open = True    # the reader still watches the socket
        self.exited = False      # the reader saw the process end and reaped it

    def died_error(self) -> ActorDiedError:
        """The error its failed futures get."""
        return ActorDiedError(self.handle.name, self.handle.class_name,
                              self.reason or "the actor died")


class ReplyReader(IODriver):
    """Reads and dispatches the replies of a process runtime's actors (see the module doc).

    ``lock`` is the runtime's lock: it guards the actors' alive flags and pending futures as
    well as the I/O token, so that resolving a future and handing the token over are one step.
    Actors are read once :meth:`watch` has registered them (after :meth:`start`).
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        #: notified (under ``lock``) whenever the reader sees an actor's process end
        self.exited = threading.Condition(lock)
        # the reader thread and its wake-up pipe (created with the first actor)
        self._reader: threading.Thread | None = None
        self._reader_stop = False
        # Who reads the actors' replies (the I/O token, guarded by the lock): the thread whose
        # ident is _io_owner, or nobody. A thread waiting on a future takes the token and
        # reads itself; when it is done it keeps the token, "parked" (_io_parked_at), so that the
        # next wait of a busy loop starts at once. The reader thread takes a token that stays
        # parked longer than PARK_S (or is free), so replies of a thread gone elsewhere are read.
        self._io_cond = threading.Condition(lock)
        self._io_owner: int | None = None
        self._io_parked_at: float | None = None
        self._io_wanted = False       # a thread waits for the reader thread to hand it over
        self._io_in_select = False    # the owner is blocked in select(): a wake-up interrupts it
        self._io_waiters = 0          # threads waiting on _io_cond to take the token
        self._io_bystanders = 0       # callbacks waiting on _io_cond for a result
        self._reader_idle = False     # the reader thread waits untimed (a parking wakes it)
        #: ``.dispatching``: this thread is running future callbacks (it reads replies)
        self.tls = threading.local()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._to_watch: list[ActorState] = []

    # -- set-up and tear-down ----------------------------------------------------------------
    def start(self) -> None:  # with the lock held
        """Start the reader thread (once; later calls do nothing)."""
        if self._reader is not None:
            return
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name="rldataflow-process-reader")
        self._reader.start()

    def watch(self, st: ActorState) -> None:  # with the lock held
        """Read this actor from the next round on (:meth:`wake` starts one now)."""
        self._to_watch.append(st)

    def wake(self) -> None:
        """Interrupt the select of whichever thread reads."""
        with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is already pending
            os.write(self._wake_w, b"\0")

    def stop(self) -> None:
        """Stop the reader thread (every actor has been seen to end, or given up on)."""
        if self._reader is not None:
            with self._lock:
                self._reader_stop = True
                self._io_cond.notify_all()
            self.wake()
            if threading.current_thread() is not self._reader:
                self._reader.join(5)

    def close(self) -> None:
        """Release the selector and the wake-up pipe, once the reader thread has stopped."""
        if self._reader is not None and not self._reader.is_alive():
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    # -- the I/O token -----------------------------------------------------------------------
    def drive(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        """Read and dispatch replies in this thread until ``until()`` holds (True) or the timeout
        passes (False). If another thread reads, wait for it to hand over (the reader thread
        does at once) or to dispatch what ``until`` waits for."""
        me = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if until():
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            in_callback = self.tls.__dict__.get("dispatching", False)
            with self._lock:
                if self._reader_stop:  # shut down: every future has been resolved
                    return until()
                owner = self._io_owner
                if in_callback:
                    # A callback waiting on a future. If this thread reads (further up its
                    # stack), it reads on, nested; else it waits for the reader to dispatch.
                    reads = owner == me or (owner == _READER
                                            and threading.current_thread() is self._reader)
                    if not reads:
                        self._wait_for_io("_io_bystanders", remaining)
                        continue
                elif (owner is None or owner == me
                        or (self._io_parked_at is not None and owner != _READER)):
                    self._io_owner, self._io_parked_at = me, None
                else:
                    if owner == _READER:
                        self._io_wanted = True
                        self.wake()
                    self._wait_for_io("_io_waiters", remaining)
                    continue
            if in_callback:
                self._io_round(until, remaining)
                continue
            try:
                self._io_round(until, remaining)
            finally:
                with self._lock:
                    if self._io_owner == me:
                        self._io_parked_at = time.monotonic()
                        if self._reader_idle or self._io_waiters or self._io_bystanders:
                            self._io_cond.notify_all()

    def _wait_for_io(self, counter: str, timeout: float | None) -> None:  # the lock held
        setattr(self, counter, getattr(self, counter) + 1)
        try:
            self._io_cond.wait(timeout)
        finally:
            setattr(self, counter, getattr(self, counter) - 1)

    def interrupt(self) -> None:
        """Wake the thread blocked reading replies, so that it checks its condition again."""
        if self._io_in_select:
            self.wake()

    def release_io(self) -> None:
        """If this thread holds the I/O token (parked), give it back to the reader thread."""
        me = threading.get_ident()
        if self._io_owner != me:
            return
        with self._lock:
            if self._io_owner == me:
                self._io_owner = self._io_parked_at = None
                self._io_cond.notify_all()

    def wake_waiters(self) -> None:
        """After futures were resolved outside a read: wake the threads waiting for one."""
        with self._lock:
            if self._io_waiters or self._io_bystanders:
                self._io_cond.notify_all()

    def _read_loop(self) -> None:
        """The reader thread: reads whenever no other thread does (a free or long-parked token),
        so that callbacks run and deaths are seen while the driver is busy elsewhere."""
        while True:
            with self._lock:
                while True:
                    if self._reader_stop:
                        self._io_cond.notify_all()  # threads waiting for the token: read alone
                        return
                    owner, parked = self._io_owner, self._io_parked_at
                    if owner == _READER or (owner is None and not self._io_waiters):
                        break
                    if owner is None:  # handed over: let the waiting thread take it
                        self._io_cond.wait(PARK_S)
                        continue
                    if parked is None:  # a thread is reading: sleep until it parks
                        self._reader_idle = True
                        self._io_cond.wait()
                        self._reader_idle = False
                        continue
                    idle_for = time.monotonic() - parked
                    if idle_for >= PARK_S:
                        break
                    self._io_cond.wait(PARK_S - idle_for)
                self._io_owner, self._io_parked_at = _READER, None
            try:
                self._io_round(None, None)
            finally:
                with self._lock:
                    if self._io_wanted:
                        self._io_wanted = False
                        self._io_owner = None
                        self._io_cond.notify_all()
                    elif self._io_waiters or self._io_bystanders:
                        self._io_cond.notify_all()

    # -- one round of reading ----------------------------------------------------------------
    def _io_round(self, until: Callable[[], bool] | None, timeout: float | None) -> None:
        """One select over every actor's socket and process sentinel (by the token's holder)."""
        sel = self._selector
        with self._lock:
            new, self._to_watch = self._to_watch, []
        for st in new:
            sel.register(st.sock, selectors.EVENT_READ, (st, True))
            sel.register(st.sentinel, selectors.EVENT_READ, (st, False))
        self._io_in_select = True
        try:
            if until is not None and until():  # moved on while interrupt() saw no selector
                return
            events = sel.select(timeout)
        finally:
            self._io_in_select = False
        outer = self.tls.__dict__.get("dispatching", False)
        self.tls.dispatching = True
        try:
            # results first: a result sent just before the process ended must count
            for key, _ in events:
                if key.data is None:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                elif key.data[1] and key.data[0].sock_open:
                    self._on_readable(key.data[0])
            for key, _ in events:
                if key.data is not None and not key.data[1] and not key.data[0].exited:
                    self._on_exit(key.data[0])
        except Exception:  # never let a failure here stop the reading: every future needs it
            logger.exception("rldataflow process runtime: error reading actor replies")
        finally:
            self.tls.dispatching = outer

    def _on_readable(self, st: ActorState) -> None:
        frames = st.frames
        try:
            more = frames.feed()
        except OSError:
            more = False
        while frames.ready:
            self._dispatch(st, *frames.ready.popleft())
        if not more:  # the process is ending: its sentinel fires next and says how
            self._selector.unregister(st.sock)
            st.sock_open = False

    def _dispatch(self, st: ActorState, call_id: int, kind: int, body: Any) -> None:
        with self._lock:
            fut = st.pending.pop(call_id, None)
        if fut is None:  # killed meanwhile: its future has failed already
            return
        try:
            value = loads(body)
        except Exception as exc:
            err = RemoteError(f"the result of {st.handle.name}.{fut.method_name}() could not be "
                              f"unpickled in the driver: {exc!r}")
            err.__cause__ = exc
            fut._set_exception(err)
            return
        if kind == OK:
            fut._set_result(value)
        else:
            exc, tb_text = value
            exc.__cause__ = RemoteTraceback(tb_text)
            fut._set_exception(exc)

    def _on_exit(self, st: ActorState) -> None:
        sel = self._selector
        if st.sock_open:
            # what it sent before it ended still counts (read what is there, never wait)
            with contextlib.suppress(OSError):
                while mp_wait([st.sock], 0) and st.frames.feed():
                    while st.frames.ready:
                        self._dispatch(st, *st.frames.ready.popleft())
            sel.unregister(st.sock)
            st.sock_open = False
        sel.unregister(st.sentinel)
        st.proc.join(5)  # it has ended: this only reaps it
        exitcode = st.proc.exitcode
        with self._lock:
            st.alive = False
            if st.reason is None:
                st.reason = describe_exit(exitcode)
            pending, st.pending = st.pending, {}
            st.outbox.clear()
            st.exited = True
            self.exited.notify_all()
        with st.send_lock:  # never close a socket another thread is writing to
            st.sock.close()
        st.frames = None
        with contextlib.suppress(ValueError):
            st.proc.close()
        self.fail(st, pending.values())

    # -- deaths ------------------------------------------------------------------------------
    def fail(self, st: ActorState, futures: Iterable[Future]) -> None:
        """Fail ``futures`` (taken from ``st.pending``) with the actor's death."""
        for fut in list(futures):
            fut._set_exception(st.died_error())
        self.wake_waiters()

    def wait_exited(self, states: list[ActorState], timeout: float) -> bool:
        """Wait until the reader has seen every one of ``states`` end (True) or for ``timeout``."""
        if self._reader is not None and not getattr(self.tls, "dispatching", False):
            return self.drive(lambda: all(st.exited for st in states), timeout)
        deadline = time.monotonic() + timeout
        with self.exited:
            while not all(st.exited for st in states):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._reader is None or not self._reader.is_alive():
                    return False
                self.exited.wait(remaining)
        return True
