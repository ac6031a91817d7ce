"""The main loop of a process-runtime actor: the code that runs in the child process.

It is kept apart from the driver's side (:mod:`rldataflow.runtime.process`) so that what an
actor process imports and runs is just this: it receives its constructor and calls over the
socket (:mod:`rldataflow.runtime.wire`), runs them in order on the user's instance, and sends
each result or exception back. It also makes sure an actor never outlives its driver.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import pickle
import select
import signal
import socket
import sys
import threading

from rldataflow.runtime import base as _base
from rldataflow.runtime.actor_side import THREAD_ENV, format_remote_traceback, limit_torch_threads
from rldataflow.runtime.base import RemoteError, invoke, method_name_of
from rldataflow.runtime.wire import (
    CTOR_ERR,
    ERR,
    HEADER,
    READY,
    STOP,
    FrameReader,
    frame,
    loads,
    result_frame,
    send_frame,
)

logger = logging.getLogger(__name__)

# this loop's own frames (and invoke's) are left out of the tracebacks sent to the driver
_INTERNAL_FILES = frozenset({os.path.abspath(__file__), os.path.abspath(_base.__file__)})


def _error_frame(call_id: int, kind: int, exc: BaseException, where: str) -> bytes | memoryview:
    tb_text = format_remote_traceback(exc, where, _INTERNAL_FILES)
    try:
        out = frame(call_id, kind, (exc, tb_text))
        loads(out[HEADER.size:])  # can the driver rebuild it? (e.g. a custom __init__)
        return out
    except Exception:
        return frame(call_id, kind, (RemoteError(repr(exc)), tb_text))


def _exit_with_driver(sock: socket.socket) -> None:
    """Exit at once when the driver's end of the socket closes, even in the middle of a call.

    A daemon thread waits (no polling) for the hang-up alone, never reading, so it takes nothing
    from the main loop. The driver closes its end only after this process has ended, or when the
    driver itself dies (even by SIGKILL): then the actor must not outlive it, whatever it is doing.
    """
    hangup = getattr(select, "POLLRDHUP", 0) | select.POLLHUP

    def watch() -> None:
        poller = select.poll()
        poller.register(sock.fileno(), hangup)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries it already
                continue
            if any(ev & (hangup | select.POLLERR | select.POLLNVAL) for _, ev in events):
                os._exit(0)

    threading.Thread(target=watch, name="rldataflow-driver-watch", daemon=True).start()


def child_main(sock: socket.socket, name: str) -> None:
    """The entry point of an actor process (``sock``: its end of the socket pair)."""
    # Ctrl-C goes to the whole process group: the driver handles it and shuts the actors down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(THREAD_ENV)  # before anything heavy (numpy, torch) is imported
    _exit_with_driver(sock)
    # `kill -USR1 <pid>` prints every thread's stack to the actor's stderr: how to see where a
    # stuck actor waits (SIGUSR1 is not used otherwise; a user handler set later replaces it).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    where = f"actor {name!r} (pid {os.getpid()})"
    frames = FrameReader(sock)
    send = sock.sendall
    try:
        driver_path = pickle.loads(frames.next()[2])
        ctor = frames.next()[2]
    except (EOFError, OSError):
        return
    sys.path.extend(p for p in driver_path if p not in sys.path)
    try:
        cls, args, kwargs = pickle.loads(ctor)
        del ctor
        limit_torch_threads()
        instance = cls(*args, **kwargs)
    except Exception as exc:
        with contextlib.suppress(OSError):
            send(_error_frame(0, CTOR_ERR, exc, where))
        return
    torch_limited = limit_torch_threads()
    try:
        send(HEADER.pack(0, 0, READY))
        while True:
            try:
                call_id, kind, body = frames.next()
            except EOFError:  # the driver is gone
                return
            if kind == STOP:
                stop = getattr(instance, "stop", None)
                if callable(stop):
                    try:
                        stop()
                    except Exception:  # best effort: the actor is going away anyway
                        logger.exception("%s: stop() failed", where)
                return
            method = None
            try:
                method, args, kwargs = loads(body)
                del body
                value = invoke(instance, method, args, kwargs)
            except Exception as exc:
                out = _error_frame(call_id, ERR, exc, where)
            else:
                try:
                    out = result_frame(call_id, value)
                except Exception as exc:
                    err = TypeError(f"the result of {method_name_of(method)}() on {where} "
                                    f"could not be pickled: {exc!r}")
                    err.__cause__ = exc
                    out = _error_frame(call_id, ERR, err, where)
                del value
            if not torch_limited:
                torch_limited = limit_torch_threads()
            send_frame(sock, out)
            del out
    except OSError:  # the connection broke: the driver is gone
        return
