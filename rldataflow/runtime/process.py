"""The process runtime: every actor is a local OS process (the default runtime).

Each actor is one child process (``forkserver`` where available, else ``spawn``) connected to the
driver by a socket pair. The actor's class and the calls are shipped with cloudpickle, so classes
and functions defined in a test module, a notebook or a closure work.

This module is the driver's side of it: starting actors, sending calls, killing and shutting
down. Its parts that do one job each live beside it: the frames on the socket
(:mod:`~rldataflow.runtime.wire`), the actor's main loop (:mod:`~rldataflow.runtime.child`), the
forkserver surgery behind fast, memory-sharing starts (:mod:`~rldataflow.runtime.forkserver`)
and the reading of replies by the threads that wait for them (:mod:`~rldataflow.runtime.replies`).

Calls are sent in the caller's thread. Future callbacks run in whichever thread reads: keep them
short (calls made from a callback are sent by a helper thread; a callback may wait on another
future, the reading then goes on nested in its thread).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import multiprocessing as mp
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as mp_wait
from typing import Any

import cloudpickle

from rldataflow.runtime.actor_side import THREAD_ENV
from rldataflow.runtime.base import (
    FIRST_COMPLETED,
    IO_DRIVERS,
    ActorDiedError,
    ActorHandle,
    DrivenFuture,
    Future,
    MethodSpec,
    RemoteError,
    RemoteTraceback,
    Runtime,
    method_name_of,
)
from rldataflow.runtime.child import child_main
from rldataflow.runtime.forkserver import (
    fork_forkserver,
    preload_in_forkserver,
    start_actor_process,
    start_forkserver_soon,
    stop_forked_forkserver,
)
from rldataflow.runtime.replies import ActorState, ReplyReader, describe_exit
from rldataflow.runtime.wire import (
    CALL,
    CTOR_ERR,
    HEADER,
    INIT,
    PICKLE_PROTOCOL,
    READY,
    STOP,
    ZERO_COPY_SIZE,
    FrameReader,
    call_frame,
    frame,
    loads,
)

__all__ = ["THREAD_ENV", "ProcessRuntime"]


class ProcessRuntime(Runtime):
    """One local OS process per actor (``get_runtime("process")``, the default).

    Args:
        start_method: ``"forkserver"`` (default where available: fast starts) or ``"spawn"``.
        stop_timeout: seconds :meth:`shutdown` gives actors to finish queued calls and run their
            ``stop()`` method before they are killed.
        start_timeout: seconds :meth:`create_actor` waits for a constructor (``None``: forever).
        preload: modules the forkserver imports once for all actors (e.g. the module of the
            actor class, with its heavy imports), so each actor starts in milliseconds.
        warm_up: start the forkserver now, in the background (its imports then overlap the
            driver's work until the first actor is created).
        share_imports: start the forkserver as a fork of this process (after importing
            ``preload`` here), so that the driver and all actors share one copy of their
            imported modules (torch's ~150 MB above all). Done only while this process runs a
            single Python thread and no forkserver runs yet; otherwise the regular forkserver
            (a fresh interpreter) starts. The fork happens when the first actor is created (the
            driver's own lazy initialisation done by then un-shares fewer pages afterwards),
            and the forkserver stops with this runtime. Python's ``gc.freeze()`` is applied to
            the driver at the fork (the recipe of the ``gc`` docs for fork without exec).
        driver_imports: with ``share_imports``, more modules to import in the driver before
            the fork: modules the driver will import anyway, whose later import would land
            among (and un-share) the shared pages.

    Sending a call blocks while the actor's socket buffer is full (a few hundred small calls, or
    a few large ones, not yet read by a busy actor): that is back-pressure, not a hang.
    """

    name = "process"

    def __init__(self, start_method: str | None = None, stop_timeout: float = 2.0,
                 start_timeout: float | None = None, preload: Sequence[str] = (),
                 warm_up: bool = False, share_imports: bool = False,
                 driver_imports: Sequence[str] = ()) -> None:
        super().__init__()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', not {start_method!r} "
                             "(a fork would copy the driver's threads, locks and sockets)")
        self.start_method = start_method
        self._forked_forkserver = self._fork_pending = False
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            preload_in_forkserver(self._ctx, (child_main.__module__, *preload))
            # the fork waits for the first actor: by then the driver has done its own lazy
            # initialisation (torch's above all), which would otherwise un-share pages
            self._fork_pending = share_imports and threading.active_count() == 1
            self._preload = (*preload, *driver_imports)
            if not self._fork_pending and warm_up:
                start_forkserver_soon()
        self._lock = threading.Lock()  # actors' alive flags and pending futures, the I/O token
        self._actors: dict[int, ActorState] = {}
        self._call_ids = itertools.count(1)
        self._closed = False
        # who reads the replies, and how (it shares the lock: see ReplyReader)
        self._replies = ReplyReader(self._lock)
        self._tls = self._replies.tls  # .dispatching: this thread is running future callbacks
        # a helper thread that sends calls made from the reader thread (future callbacks)
        self._sender: threading.Thread | None = None
        self._sender_q: Any = None
        atexit.register(self.shutdown)

    # -- actors ------------------------------------------------------------------------------
    def create_actor(self, cls: type, *args: Any, name: str | None = None,
                     **kwargs: Any) -> ActorHandle:
        """Start a process running ``cls(*args, **kwargs)``; returns when it is constructed.

        An exception raised by the constructor is raised here (its type kept, the actor-side
        traceback chained as a :class:`RemoteTraceback`).
        """
        if self._closed:
            raise RuntimeError("this ProcessRuntime has been shut down")
        if self._fork_pending:
            self._fork_pending = False
            self._forked_forkserver = fork_forkserver(self._preload)
        handle = ActorHandle(self, self._unique_name(cls, name),
                             getattr(cls, "__name__", type(cls).__name__))
        ctor = frame(0, INIT, (cls, args, kwargs))
        sock, child_sock = socket.socketpair()
        proc = self._ctx.Process(
            target=child_main, name=f"rldataflow:{handle.name}", daemon=False,
            args=(child_sock, handle.name))
        try:
            start_actor_process(proc)
        finally:
            child_sock.close()
        frames = FrameReader(sock)
        try:
            self._handshake(handle, proc, sock, frames, ctor)
        except BaseException:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.join(5)
            sock.close()
            raise
        st = ActorState(handle, proc, sock, frames)
        with self._lock:
            closed = self._closed
            if not closed:
                self._actors[handle.actor_id] = st
                self._replies.start()
                if self._replies not in IO_DRIVERS:
                    IO_DRIVERS.append(self._replies)
                self._replies.watch(st)
        if closed:
            proc.kill()
            proc.join(5)
            sock.close()
            raise RuntimeError("this ProcessRuntime was shut down while an actor was starting")
        self._replies.wake()
        return handle

    def _handshake(self, handle: ActorHandle, proc: Any, sock: socket.socket, frames: FrameReader,
                   ctor: memoryview) -> None:
        kind, body = -1, None
        try:
            sock.sendall(frame(0, INIT, list(sys.path)))
            sock.sendall(ctor)
            del ctor
            while kind < 0:
                ready = mp_wait([sock, proc.sentinel], timeout=self.start_timeout)
                if not ready:
                    raise TimeoutError(f"actor {handle.name!r} ({handle.class_name}) was not "
                                       f"constructed within {self.start_timeout}s")
                # a reply sent just before the process ended still counts
                if sock in ready or mp_wait([sock], 0):
                    if not frames.feed():
                        break
                    if frames.ready:
                        _, kind, body = frames.ready.popleft()
                else:
                    break
        except OSError:
            pass
        if kind == READY:
            return
        if kind == CTOR_ERR:
            try:
                exc, tb_text = loads(body)
            except Exception as err:
                exc, tb_text = RemoteError(f"the constructor failed: {err!r}"), ""
            proc.join(5)
            raise exc from RemoteTraceback(tb_text)
        proc.join(5)
        raise ActorDiedError(handle.name, handle.class_name,
                             f"{describe_exit(proc.exitcode)} while it was starting")

    def pid(self, actor: ActorHandle) -> int:
        """The OS process id of an actor (handy for fault-injection tests)."""
        return self._state(actor).pid

    def is_alive(self, actor: ActorHandle) -> bool:
        st = self._actors.get(actor.actor_id)
        return st is not None and st.alive

    def kill(self, actor: ActorHandle) -> None:
        """SIGKILL the actor's process; its pending futures fail with :class:`ActorDiedError`."""
        st = self._actors.get(actor.actor_id)
        if st is None:
            return
        with self._lock:
            if not st.alive:
                return
            st.alive = False
            st.reason = "it was killed (Runtime.kill)"
            pending, st.pending = st.pending, {}
            st.outbox.clear()
            proc = None if st.exited else st.proc
        if proc is not None:
            with contextlib.suppress(ValueError, OSError):  # the reader may have reaped it
                proc.kill()
        self._replies.fail(st, pending.values())

    # -- calls -------------------------------------------------------------------------------
    def call(self, actor: ActorHandle, method: MethodSpec, *args: Any, **kwargs: Any) -> Future:
        fut = DrivenFuture(actor, method if method.__class__ is str else method_name_of(method),
                           self._replies)
        st = self._actors.get(actor.actor_id)
        if st is None:
            fut._set_exception(self._unknown(actor))
            return fut
        call_id = next(self._call_ids)
        try:
            data = call_frame(call_id, method, args, kwargs)
        except Exception as exc:
            fut._set_exception(self._pickle_error(actor, method, exc))
            return fut
        self._submit(st, fut, call_id, (data,))
        return fut

    def call_many(self, actors: Sequence[ActorHandle], method: MethodSpec, *args: Any,
                  **kwargs: Any) -> list[Future]:
        """Call one method with the same arguments on many actors, pickling them only once."""
        name = method_name_of(method)
        futures: list[Future] = [DrivenFuture(a, name, self._replies) for a in actors]
        try:
            payload = cloudpickle.dumps((method, args, kwargs), protocol=PICKLE_PROTOCOL)
        except Exception as exc:
            for fut in futures:
                fut._set_exception(self._pickle_error(fut.actor, method, exc))
            return futures
        for actor, fut in zip(actors, futures, strict=True):
            st = self._actors.get(actor.actor_id)
            if st is None:
                fut._set_exception(self._unknown(actor))
                continue
            call_id = next(self._call_ids)
            header = HEADER.pack(len(payload), call_id, CALL)
            parts = (header, payload) if len(payload) > ZERO_COPY_SIZE else (header + payload,)
            self._submit(st, fut, call_id, parts)
        return futures

    def _submit(self, st: ActorState, fut: Future, call_id: int, parts: tuple) -> None:
        with self._lock:
            alive = st.alive
            if alive:
                st.pending[call_id] = fut
                st.outbox.append((call_id, parts))
        if not alive:
            fut._set_exception(st.died_error())
        elif getattr(self._tls, "dispatching", False):
            # A future callback: sending here could block the reader on a full socket while the
            # actor is itself blocked sending us a result. A helper thread sends it instead.
            self._kick_sender(st)
        else:
            self._flush(st)

    def _flush(self, st: ActorState) -> None:
        """Send the actor's queued calls, in order (whoever holds its send lock sends them all)."""
        with st.send_lock:
            while True:
                try:
                    call_id, parts = st.outbox.popleft()
                except IndexError:
                    return
                try:
                    for part in parts:
                        self._send(st.sock, part)
                except OSError:
                    # A broken pipe: the process is ending (an actor never closes its end and
                    # lives on). The future stays pending: the reader sees the process end and
                    # fails it with the real cause (its exit code or signal), which is what the
                    # user needs, not the broken pipe this thread happened to notice first.
                    with self._lock:
                        gone = st.exited
                        fut = st.pending.pop(call_id, None) if gone else None
                    if fut is not None:
                        fut._set_exception(st.died_error())
                        self._replies.wake_waiters()

    def _send(self, sock: socket.socket, data: Any) -> None:
        try:
            sent = sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            # The actor is not reading: it may be blocked sending us a reply. If this thread
            # holds the I/O token, nobody reads that reply while we block here: hand it back.
            self._replies.release_io()
            with memoryview(data) as view:
                sock.sendall(view[sent:])

    def _kick_sender(self, st: ActorState) -> None:
        with self._lock:
            if self._sender is None:
                import queue

                self._sender_q = queue.SimpleQueue()
                self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                                name="rldataflow-process-sender")
                self._sender.start()
        self._sender_q.put(st)

    def _send_loop(self) -> None:
        while True:
            st = self._sender_q.get()
            if st is None:
                return
            self._flush(st)

    # -- reading replies (see ReplyReader) ---------------------------------------------------
    def drive(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        """Read and dispatch replies in this thread until ``until()`` holds (True) or the timeout
        passes (False): :meth:`ReplyReader.drive <rldataflow.runtime.replies.ReplyReader.drive>`.
        """
        return self._replies.drive(until, timeout)

    def interrupt(self) -> None:
        """Wake the thread blocked reading replies, so that it checks its condition again."""
        self._replies.interrupt()

    def release_io(self) -> None:
        """If this thread holds the I/O token (parked), give it back to the reader thread."""
        self._replies.release_io()

    def wait(self, futures: Any, return_when: str = FIRST_COMPLETED,
             timeout: float | None = None) -> tuple[list[Future], list[Future]]:
        futures = list(futures)
        if futures:
            check = any if return_when == FIRST_COMPLETED else all
            self._replies.drive(lambda: check(f.done() for f in futures), timeout)
        return [f for f in futures if f.done()], [f for f in futures if not f.done()]

    # -- errors ------------------------------------------------------------------------------
    def _unknown(self, actor: ActorHandle) -> ActorDiedError:
        return ActorDiedError(actor.name, actor.class_name,
                              "it does not belong to this runtime")

    @staticmethod
    def _pickle_error(actor: ActorHandle, method: MethodSpec, exc: Exception) -> TypeError:
        err = TypeError(f"the arguments of {actor.name}.{method_name_of(method)}() could not be "
                        f"pickled: {exc!r}")
        err.__cause__ = exc
        return err

    def _state(self, actor: ActorHandle) -> ActorState:
        st = self._actors.get(actor.actor_id)
        if st is None:
            raise KeyError(f"{actor!r} does not belong to this runtime")
        return st

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop every actor: run queued calls and ``stop()``, then kill what is left. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states = [st for st in self._actors.values() if not st.exited]
            for st in states:
                if st.alive:
                    st.reason = "the runtime was shut down"
        for st in states:
            if st.alive:
                self._post_stop(st)
        if not self._replies.wait_exited(states, self.stop_timeout):
            for st in states:
                if not st.exited:
                    with contextlib.suppress(ValueError, OSError):
                        st.proc.kill()
            self._replies.wait_exited(states, 5.0)
        # stop the threads
        with contextlib.suppress(ValueError):
            IO_DRIVERS.remove(self._replies)
        self._replies.stop()
        if self._sender is not None:
            self._sender_q.put(None)
            if threading.current_thread() is not self._sender:
                self._sender.join(5)
        # whatever the reader did not see end (it should have seen them all)
        for st in states:
            if not st.exited:
                with self._lock:
                    st.alive, st.exited = False, True
                    pending, st.pending = st.pending, {}
                with contextlib.suppress(Exception):
                    st.proc.kill()
                    st.proc.join(5)
                with contextlib.suppress(Exception):
                    st.sock.close()
                self._replies.fail(st, pending.values())
        self._replies.close()
        if self._forked_forkserver:
            stop_forked_forkserver()
        atexit.unregister(self.shutdown)

    def _post_stop(self, st: ActorState) -> None:
        """Ask an actor to exit after its queued calls; never block (it is killed otherwise)."""
        if not st.send_lock.acquire(timeout=0.2):
            return
        try:
            if not st.outbox and not st.exited:
                # a tiny frame, sent only if it fits in the socket buffer now
                st.sock.send(HEADER.pack(0, 0, STOP), socket.MSG_DONTWAIT)
        except OSError:  # full (it will be killed) or gone
            pass
        finally:
            st.send_lock.release()

    def __repr__(self) -> str:
        alive = sum(st.alive for st in self._actors.values())
        return f"<ProcessRuntime {self.start_method}, {alive} live actors>"
